package window

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// Incidents is the incident stage of the server: the shards send it the
// evidence of their series (a combined score at or above
// incidents.min_score) and the series joining and leaving each group; one
// goroutine owns every group (window/incident) and publishes, once a
// second, each group's state and the open and recent incidents, which
// /metrics reads and the IncidentAppender (the sink's remote writers) is
// handed. The shards never wait for it: an event that finds its queue full
// is dropped and counted (anomalyd_incidents_events_dropped_total), since
// blocking a shard would stall ingestion for every series.
type Incidents struct {
	p         incident.Params
	maxGroups int
	in        chan incidentEvent
	dropped   atomic.Uint64
	quit      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	started   atomic.Bool
	ctl       chan func() // run calls each on its goroutine (State)
	direct    sync.Mutex  // State's, when no goroutine runs the stage

	// Owned by the run goroutine.
	groups map[string]*groupState
	dirty  []*groupState // groups with pending evidence
	nextID uint64
	recent []incident.Incident // closed, newest last, at most maxRecent
	// restoring: restored groups wait for their series to join again
	// (Restore until RestoreDone) and are kept meanwhile with none.
	restoring bool

	// out takes each publication (nil: none). sent and sentT are what it
	// was handed last: the groups, to find those that ended, and the time,
	// which must grow.
	out   IncidentAppender
	sent  []incident.GroupStatus
	sentT int64

	status atomic.Pointer[IncidentStatus]
	// opened counts the incidents this process opened
	// (anomalyd_incidents_opened_total): a process counter, it starts at 0
	// after a restart even when Restore brings incidents back, whereas
	// their IDs and each group's count (Group.Opened) go on.
	opened atomic.Uint64
	limit  atomic.Uint64 // series of groups beyond max_groups
}

// IncidentAppender takes the incident series each time the stage
// publishes: the sink sends them to the remote_write stores, as Appender
// takes the shards' records.
type IncidentAppender interface {
	// AppendIncidents takes every group's state at t (ms, the wall clock
	// when the stage published; it grows from call to call), sorted by
	// group, and the groups of the previous call that are gone, whose
	// series end at t. It is called by the stage's goroutine and must not
	// block. groups and ended are immutable and may be kept.
	AppendIncidents(t int64, groups []incident.GroupStatus, ended []string)
}

// maxRecent bounds the closed incidents kept for /api/v1/incidents.
const maxRecent = 100

// IncidentStatus is what the stage published last: every group's state and
// the open and recently closed incidents. It is immutable.
type IncidentStatus struct {
	Groups    []incident.GroupStatus
	Incidents []incident.Incident // open ones first, then closed, newest first
}

type incidentEvent struct {
	kind   uint8 // eventEvidence, eventJoin, eventLeave, eventRestored
	group  string
	t, dt  int64
	detail incident.Detail
}

const (
	eventEvidence = iota
	eventJoin
	eventLeave
	eventRestored // RestoreDone: the restored series have joined
)

type groupState struct {
	key    string // canonical labels of the group
	g      *incident.Group
	n      int   // series in the group
	lastT  int64 // latest data time seen
	peak   float64
	series int
	open   *incident.Incident
	top    []incident.Contributor
	// pending: evidence at pendingT is not evaluated yet (flush).
	pending  bool
	pendingT int64
}

// NewIncidents returns the incident stage, tracking at most maxGroups
// groups and handing each publication to out (nil: none); Start runs it.
// The shards decide each series' group, by the incidents.group_by of its
// rule (Rules).
func NewIncidents(p incident.Params, maxGroups int, out IncidentAppender, reg *prometheus.Registry) *Incidents {
	s := &Incidents{p: p, maxGroups: maxGroups, in: make(chan incidentEvent, 1<<16),
		quit: make(chan struct{}), done: make(chan struct{}), ctl: make(chan func()), groups: map[string]*groupState{}, out: out}
	s.status.Store(&IncidentStatus{})
	promreg.CounterFunc(reg, "anomalyd_incidents_opened_total",
		"Incidents opened, all groups.", nil, func() float64 { return float64(s.opened.Load()) })
	promreg.CounterFunc(reg, "anomalyd_incidents_events_dropped_total",
		"Evidence and membership events the incident stage's queue had no room for.", nil,
		func() float64 { return float64(s.dropped.Load()) })
	promreg.CounterFunc(reg, "anomalyd_incidents_group_limit_total",
		"Series not grouped because incidents.max_groups was reached.", nil,
		func() float64 { return float64(s.limit.Load()) })
	promreg.GaugeFunc(reg, "anomalyd_incidents_groups",
		"Groups the incident stage tracks.", nil, func() float64 { return float64(len(s.status.Load().Groups)) })
	return s
}

// MinScore is the combined score from which a sample is evidence.
func (s *Incidents) MinScore() float64 { return s.p.MinScore }

func (s *Incidents) send(e incidentEvent) {
	select {
	case s.in <- e:
	default:
		s.dropped.Add(1)
	}
}

// sendWait is send for a caller that may wait (a restore, RestoreDone),
// until the stage takes e or stops.
func (s *Incidents) sendWait(e incidentEvent) {
	select {
	case s.in <- e:
	case <-s.quit:
	}
}

// Status returns what the stage published last.
func (s *Incidents) Status() *IncidentStatus { return s.status.Load() }

// IncidentGroups returns every group's state as published last.
func (s *Incidents) IncidentGroups() []incident.GroupStatus { return s.status.Load().Groups }

// IncidentList returns the open incidents, then the recently closed ones,
// newest first, as published last.
func (s *Incidents) IncidentList() []incident.Incident { return s.status.Load().Incidents }

// Start runs the stage's goroutine; only the first call does.
func (s *Incidents) Start() {
	if s.started.CompareAndSwap(false, true) {
		go s.run()
	}
}

// Stop ends it, if it was started; events sent after Stop are dropped.
func (s *Incidents) Stop() {
	s.stopOnce.Do(func() { close(s.quit) })
	if s.started.Load() {
		<-s.done
	}
}

func (s *Incidents) run() {
	defer close(s.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case e := <-s.in:
			s.handle(e)
			if len(s.in) == 0 {
				s.flush()
			}
		case f := <-s.ctl:
			f()
		case now := <-tick.C:
			s.flush()
			s.publish(now.UnixMilli())
		case <-s.quit:
			return
		}
	}
}

func (s *Incidents) handle(e incidentEvent) {
	if e.kind == eventRestored {
		s.restored()
		return
	}
	gs := s.groups[e.group]
	if gs == nil {
		if e.kind != eventJoin {
			return // a group dropped at the limit, or gone
		}
		if len(s.groups) >= s.maxGroups {
			s.limit.Add(1)
			return
		}
		gs = &groupState{key: e.group, g: incident.NewGroup(&s.p)}
		s.groups[e.group] = gs
	}
	gs.lastT = max(gs.lastT, e.t)
	switch e.kind {
	case eventJoin:
		gs.n++
		gs.g.Watch(e.t)
	case eventLeave:
		gs.n--
		if gs.n <= 0 && gs.open == nil && !s.restoring {
			delete(s.groups, e.group)
		}
	case eventEvidence:
		// A group is evaluated once per timestamp of its evidence, not
		// once per evidence sample: a scrape that moves many series of a
		// target sends them all at one time.
		if gs.pending && gs.pendingT != e.t {
			s.evaluate(gs, gs.pendingT)
		}
		gs.g.ObserveDetail(e.detail.Series, e.t, e.dt, e.detail.Score, e.detail)
		if !gs.pending {
			s.dirty = append(s.dirty, gs)
		}
		gs.pending, gs.pendingT = true, e.t
	}
}

// flush evaluates the groups with evidence not yet evaluated.
func (s *Incidents) flush() {
	for _, gs := range s.dirty {
		if gs.pending {
			gs.pending = false
			s.evaluate(gs, gs.pendingT)
		}
	}
	s.dirty = s.dirty[:0]
}

// evaluate brings gs to time t and opens or closes its incident.
func (s *Incidents) evaluate(gs *groupState, t int64) {
	st := gs.g.Evaluate(t, gs.n, &gs.top)
	gs.peak = max(gs.peak, st.Score)
	gs.series = st.Series
	switch {
	case st.Opened:
		s.nextID++
		s.opened.Add(1)
		gs.open = &incident.Incident{ID: s.nextID, Group: gs.key, Start: t, Open: true}
		fallthrough
	case st.Open && gs.open != nil:
		inc := gs.open
		inc.Start, inc.End = min(inc.Start, t), max(inc.End, t)
		if st.Score >= inc.Peak {
			inc.Peak = st.Score
			inc.Top = append(inc.Top[:0], gs.top[:min(len(gs.top), incident.MaxTop)]...)
		}
		inc.Series = max(inc.Series, st.Series)
	case !st.Open && gs.open != nil:
		gs.open.Open = false
		s.recent = append(s.recent, *gs.open)
		if len(s.recent) > maxRecent {
			s.recent = slices.Delete(s.recent, 0, len(s.recent)-maxRecent)
		}
		gs.open = nil
		if gs.n <= 0 && !s.restoring {
			delete(s.groups, gs.key)
		}
	}
}

// publish evaluates every group at the later of its data time and now, so
// incidents close while nothing arrives, and stores the new status.
func (s *Incidents) publish(nowMs int64) {
	st := &IncidentStatus{Groups: make([]incident.GroupStatus, 0, len(s.groups))}
	for _, gs := range s.groups {
		s.evaluate(gs, max(gs.lastT, nowMs))
		st.Groups = append(st.Groups, incident.GroupStatus{Group: gs.key, Score: gs.peak, Open: gs.open != nil,
			Series: gs.series, Opened: gs.g.Opened()})
		gs.peak = 0
		if gs.open != nil {
			inc := *gs.open
			inc.Top = slices.Clone(inc.Top)
			st.Incidents = append(st.Incidents, inc)
		}
	}
	slices.SortFunc(st.Groups, func(a, b incident.GroupStatus) int { return strings.Compare(a.Group, b.Group) })
	slices.SortFunc(st.Incidents, func(a, b incident.Incident) int { return int(b.ID) - int(a.ID) })
	for i := len(s.recent) - 1; i >= 0; i-- {
		st.Incidents = append(st.Incidents, s.recent[i])
	}
	s.status.Store(st)
	s.appendOut(nowMs, st.Groups)
}

// appendOut hands groups, published at t, to the appender, with the groups
// of the previous hand-over that are gone. A store takes a series' samples
// only in time order and one per timestamp, so a t not after the previous
// one (the wall clock stepped back) is skipped until the clock has passed
// it; the groups that end meanwhile are found by the next hand-over.
func (s *Incidents) appendOut(t int64, groups []incident.GroupStatus) {
	if s.out == nil || t <= s.sentT {
		return
	}
	var ended []string
	i := 0
	for _, g := range s.sent { // both sorted by group
		for i < len(groups) && groups[i].Group < g.Group {
			i++
		}
		if i == len(groups) || groups[i].Group != g.Group {
			ended = append(ended, g.Group)
		}
	}
	s.out.AppendIncidents(t, groups, ended)
	s.sent, s.sentT = groups, t
}

// evidenceDetail is what a shard sends of an analysed sample at or above
// min_score: x is the value the detectors analysed, a per-second rate if
// rate.
func evidenceDetail(info *series.Info, x float64, rate bool, o *detectors.Output) incident.Detail {
	d := incident.DetailOf(info.Labels, x, o)
	d.Rate = rate
	return d
}
