package ui

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Point is one sample of a kept series: its analysed value and the
// combined verdict on it.
type Point struct {
	T                             int64 // ms
	Value, Expected, Lower, Upper float64
	Score                         float32
	Driver                        detectors.Kind
	// NoVerdict: only T and Value mean anything: the detectors were
	// warming up, or the point is from before the store kept the series
	// (WithRecent).
	NoVerdict bool
	// Rate: the values are per-second rates (series.Record.Rate).
	Rate bool
}

// track is the recent past of one kept series.
type track struct {
	labels string // canonical key, as series.Info.Labels

	mu   sync.Mutex // guards what follows: one shard writes, readers copy
	info *series.Info
	pts  []Point // a ring of at most Options.Points, oldest at head once full
	head int
	// kept is the wall time (ms) of the last reason to keep the series:
	// a score of 1 or more, or (for a watched series) being shown.
	kept int64
	// alarmed: the series scored 1 or more while kept; a watched series
	// that never did gives way to one that does.
	alarmed bool
}

// add appends p, overwriting the oldest point once the ring is full.
func (tr *track) add(p Point, capacity int) {
	if len(tr.pts) < capacity {
		tr.pts = append(tr.pts, p)
		return
	}
	tr.pts[tr.head] = p
	tr.head = (tr.head + 1) % len(tr.pts)
}

// points appends the kept points to dst, oldest first.
func (tr *track) points(dst []Point) []Point {
	dst = append(dst, tr.pts[tr.head:]...)
	return append(dst, tr.pts[:tr.head]...)
}

// Options bound a Store.
type Options struct {
	// MaxSeries is how many series the store keeps at most.
	MaxSeries int
	// Points is how many recent samples it keeps of each.
	Points int
	// Retention is how long a series is kept after its last score of 1
	// or more (or, if it never had one, after it was last shown).
	Retention time.Duration
}

// DefaultOptions keep a few large incidents' series, each for half an hour
// at a 15 s scrape interval; the bound is MaxSeries × Points points
// whatever the number of series (docs/operations.md gives its size).
var DefaultOptions = Options{MaxSeries: 1000, Points: 120, Retention: time.Hour}

// pointSize is the memory of one kept Point.
const pointSize = 48

// evictAfter is how long after its last alarm a kept series is safe from
// eviction by another's alarm: the plots of an incident in progress stay.
const evictAfter = time.Minute

// sweepEvery is how often Append drops expired series.
const sweepEvery = 10 * time.Second

// Store keeps the recent samples of the series that matter now: those whose
// combined score reached 1 (the band edge) within Options.Retention, which
// includes every series that explains an incident, and those the UI showed
// as the most anomalous (Watch). It is what the UI plots, so that the page
// costs memory for the series an operator looks at, not for every series:
// at most MaxSeries × Points points.
//
// A series enters at its first score of 1 or more, so its plot starts
// there: the store keeps nothing of series before they matter.
//
// Store is a window.Appender (through sink.Outputs). Append runs on every
// shard for every batch; it reads an immutable index of the kept series
// with one atomic load and takes a lock only to add a kept series' point or
// to admit one.
type Store struct {
	opts Options
	now  func() time.Time

	// index finds the track of a kept series: rebuilt under mu on every
	// admission and removal, read without a lock.
	index atomic.Pointer[index]
	// nextSweep is the wall time (ms) after which Append sweeps.
	nextSweep atomic.Int64

	mu     sync.Mutex
	tracks map[string]*track // by canonical labels
	// noVictimBefore (wall ms): the store is full of series alarmed
	// within evictAfter until then; an alarm is refused without a scan.
	noVictimBefore int64

	kept    prometheus.GaugeFunc
	refused prometheus.Counter
	evicted prometheus.Counter
}

// NewStore returns an empty store that registers its metrics in reg (nil:
// none). Options must be positive.
func NewStore(opts Options, reg prometheus.Registerer) *Store {
	s := &Store{opts: opts, now: time.Now, tracks: map[string]*track{}}
	s.index.Store(&index{m: map[*series.Info]*track{}})
	s.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "anomalyd_ui_series_refused_total",
		Help: "Series that scored 1 or more but were not kept for the page: it kept as many as it may, all of them anomalous within the last minute.",
	})
	s.evicted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "anomalyd_ui_series_evicted_total",
		Help: "Series the page kept that were dropped to keep another before their time was up.",
	})
	s.kept = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "anomalyd_ui_series",
		Help: "Series whose recent samples the page keeps to plot them.",
	}, func() float64 { return float64(len(s.index.Load().m)) })
	if reg != nil {
		reg.MustRegister(s.refused, s.evicted, s.kept)
	}
	return s
}

// Append keeps the combined records of kept series and admits the series
// of those that score 1 or more. The index is rebuilt once per batch that
// admits, not per admission: an alarm storm admits many series at once.
func (s *Store) Append(recs []series.Record) {
	idx := s.index.Load()
	var nowMs int64
	var fresh map[*series.Info]*track // admitted by this batch, not yet indexed
	for i := range recs {
		r := &recs[i]
		if r.Detector != detectors.KindCombined {
			continue
		}
		alarm := !r.Stale && !r.Warmup && r.Score >= 1
		if !alarm && fresh == nil && !idx.mayHold(r.Series) {
			continue
		}
		if alarm && nowMs == 0 {
			nowMs = s.now().UnixMilli()
		}
		tr := idx.m[r.Series]
		if tr == nil && fresh != nil {
			tr = fresh[r.Series]
		}
		if tr == nil {
			if alarm {
				if tr = s.admit(r, nowMs); tr != nil {
					if fresh == nil {
						fresh = map[*series.Info]*track{}
					}
					fresh[r.Series] = tr
				}
			}
			continue
		}
		if r.Stale {
			continue
		}
		tr.mu.Lock()
		tr.add(pointOf(r), s.opts.Points)
		if alarm {
			tr.kept, tr.alarmed = nowMs, true
		}
		tr.mu.Unlock()
	}
	if fresh != nil {
		s.mu.Lock()
		s.reindex()
		s.mu.Unlock()
	}
	if t := s.now().UnixMilli(); t >= s.nextSweep.Load() {
		s.sweep(t)
	}
}

func pointOf(r *series.Record) Point {
	return Point{T: r.T, Value: r.Analysed, Expected: r.Expected, Lower: r.Lower, Upper: r.Upper,
		Score: float32(min(r.Score, math.MaxFloat32)), Driver: r.Driver, NoVerdict: r.Warmup, Rate: r.Rate}
}

// admit keeps the series of r, which scored 1 or more at wall time nowMs,
// with r as its first point, and returns its track; nil when the store is
// full of series that may not go. The caller reindexes.
func (s *Store) admit(r *series.Record, nowMs int64) *track {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := s.tracks[r.Series.Labels]
	if tr == nil {
		if tr = s.make(r.Series.Labels, nowMs, true); tr == nil {
			s.refused.Inc()
			return nil
		}
	}
	tr.mu.Lock()
	tr.info = r.Series // new, or a new life of the series
	tr.add(pointOf(r), s.opts.Points)
	tr.kept, tr.alarmed = nowMs, true
	tr.mu.Unlock()
	return tr
}

// Watch keeps the series of infos from now on, where there is room, as the
// UI shows them: a series listed as among the most anomalous gets a plot
// from then on even if it never reaches 1. Only series that never alarmed
// give way to them.
func (s *Store) Watch(infos []*series.Info) {
	nowMs := s.now().UnixMilli()
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, info := range infos {
		tr := s.tracks[info.Labels]
		if tr == nil {
			if tr = s.make(info.Labels, nowMs, false); tr == nil {
				continue
			}
		}
		tr.mu.Lock()
		if tr.info != info {
			tr.info, changed = info, true
		}
		if !tr.alarmed {
			tr.kept = nowMs
		}
		tr.mu.Unlock()
	}
	if changed {
		s.reindex()
	}
}

// make adds an empty track for labels, evicting the kept series that
// matters least when the store is full; nil when none may go. An alarm may
// evict a series that is only watched, or the one whose last alarm is
// oldest if that is over a minute ago; a watch only a watched series.
// s.mu is held.
func (s *Store) make(labels string, nowMs int64, alarm bool) *track {
	if len(s.tracks) >= s.opts.MaxSeries {
		// Under an alarm storm a full store refuses in O(1) until its
		// oldest alarm is a minute old, instead of scanning per alarm.
		if nowMs < s.noVictimBefore {
			return nil
		}
		var victim *track
		oldest := int64(math.MaxInt64)
		for _, tr := range s.tracks {
			tr.mu.Lock()
			kept, alarmed := tr.kept, tr.alarmed
			tr.mu.Unlock()
			if alarmed {
				oldest = min(oldest, kept)
				if !alarm || nowMs-kept < evictAfter.Milliseconds() {
					continue
				}
			}
			if victim == nil || victimBefore(alarmed, kept, victim) {
				victim = tr
			}
		}
		if victim == nil {
			if oldest != math.MaxInt64 {
				s.noVictimBefore = oldest + evictAfter.Milliseconds()
			}
			return nil
		}
		delete(s.tracks, victim.labels)
		s.evicted.Inc()
	}
	if !alarm {
		s.noVictimBefore = 0 // a watched series may go for an alarm at once
	}
	tr := &track{labels: labels, pts: make([]Point, 0, min(s.opts.Points, 16))}
	s.tracks[labels] = tr
	return tr
}

// victimBefore reports whether a track (alarmed, kept) should go before v:
// watched series first, then the longest unneeded.
func victimBefore(alarmed bool, kept int64, v *track) bool {
	v.mu.Lock()
	vAlarmed, vKept := v.alarmed, v.kept
	v.mu.Unlock()
	if alarmed != vAlarmed {
		return !alarmed
	}
	return kept < vKept
}

// filterBits is the size of index's filter: 1,000 series kept set about
// 1.5 % of its bits.
const filterBits = 1 << 16

// index finds a kept series' track. Most records are of series not kept
// and score below 1: a bit of the filter, picked by the series' hash,
// answers for them without the map lookup.
type index struct {
	m      map[*series.Info]*track
	filter [filterBits / 64]uint64
}

// mayHold is false when info's series is certainly not kept.
func (x *index) mayHold(info *series.Info) bool {
	b := info.Hash >> (64 - 16)
	return x.filter[b/64]&(1<<(b%64)) != 0
}

// reindex publishes the index of s.tracks. s.mu is held.
func (s *Store) reindex() {
	idx := &index{m: make(map[*series.Info]*track, len(s.tracks))}
	for _, tr := range s.tracks {
		tr.mu.Lock()
		if info := tr.info; info != nil {
			idx.m[info] = tr
			b := info.Hash >> (64 - 16)
			idx.filter[b/64] |= 1 << (b % 64)
		}
		tr.mu.Unlock()
	}
	s.index.Store(idx)
}

// sweep drops the series kept for longer than the retention without a
// reason.
func (s *Store) sweep(nowMs int64) {
	s.nextSweep.Store(nowMs + sweepEvery.Milliseconds())
	cutoff := nowMs - s.opts.Retention.Milliseconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.tracks)
	for k, tr := range s.tracks {
		tr.mu.Lock()
		old := tr.kept < cutoff
		tr.mu.Unlock()
		if old {
			delete(s.tracks, k)
		}
	}
	if len(s.tracks) != n {
		s.reindex()
	}
}

// Kept is the recent past of one kept series.
type Kept struct {
	Info   *series.Info
	Points []Point // oldest first
}

// Series returns the kept series that keep accepts (nil: all), each with its
// points, in label order.
func (s *Store) Series(keep func(*series.Info) bool) []Kept {
	s.mu.Lock()
	trs := make([]*track, 0, len(s.tracks))
	for _, tr := range s.tracks {
		trs = append(trs, tr)
	}
	s.mu.Unlock()
	var out []Kept
	for _, tr := range trs {
		tr.mu.Lock()
		info := tr.info
		if info != nil && (keep == nil || keep(info)) && len(tr.pts) > 0 {
			out = append(out, Kept{Info: info, Points: tr.points(nil)})
		}
		tr.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Kept) int {
		switch {
		case a.Info.Labels < b.Info.Labels:
			return -1
		case a.Info.Labels > b.Info.Labels:
			return 1
		}
		return 0
	})
	return out
}

// Lookup returns the points of the kept series with canonical labels key.
func (s *Store) Lookup(key string) ([]Point, bool) {
	s.mu.Lock()
	tr := s.tracks[key]
	s.mu.Unlock()
	if tr == nil {
		return nil, false
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.points(nil), true
}
