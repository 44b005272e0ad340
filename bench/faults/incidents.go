package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// The incident stage (issue 21): anomalyd groups the series of a target
// (job and instance by default) and opens one incident when they move
// together. The run measures it two ways, each against the schedule:
//
//   - the incidents themselves, as GET /api/v1/incidents on anomalyd
//     reports them (start, end, peak score, top series), polled during the
//     run since the API keeps only the last 100 closed ones;
//   - the page, the AnomalyIncident alert of the rules file's group
//     incidentGroup (anomaly_incident_open == 1), evaluated by Prometheus at
//     every scrape interval over anomaly_incident_open, which Prometheus
//     scrapes from anomalyd's /metrics.
//
// A fault is caught when an incident opens on its own target at most
// -incident-within samples after its start; an incident that opens on any
// target in a quiet span is a false one, counted per target-hour.

// incidentGroup is the group of the alert rules file whose alerts page per
// target.
const incidentGroup = "anomalyd-incidents"

// maxFalsePerTargetHour is issue 21's target for false incidents while
// nothing is injected.
const maxFalsePerTargetHour = 0.2

// target is one scrape target: the group the incident stage forms by
// default (incidents.group_by: job, instance).
type target struct {
	Job      string `json:"job"`
	Instance string `json:"instance"`
}

func (t target) String() string { return t.Job + " " + t.Instance }

func compareTargets(a, b target) int {
	return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.Instance, b.Instance))
}

// targetsOf returns the targets of the analysed series, sorted.
func targetsOf(all []*series) []target {
	var ts []target
	for _, s := range all {
		t := target{s.lset["job"], s.lset["instance"]}
		if !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	slices.SortFunc(ts, compareTargets)
	return ts
}

// apiIncident is one incident as GET /api/v1/incidents returns it.
type apiIncident struct {
	ID     string            `json:"id"`
	Group  map[string]string `json:"group"`
	Start  time.Time         `json:"start"`
	End    time.Time         `json:"end"`
	Open   bool              `json:"open"`
	Peak   float64           `json:"peak_score"`
	Series int               `json:"series"`
	Top    []struct {
		Labels map[string]string `json:"labels"`
		Score  float64           `json:"score"`
		Reason string            `json:"reason"`
	} `json:"top_series"`
}

// fetchIncidents reads the open and recently closed incidents of the
// anomalyd at base.
func fetchIncidents(ctx context.Context, base string) ([]apiIncident, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/incidents", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot read incidents: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("cannot read incidents: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot read incidents: %s: %s", resp.Status, tail(body, 200))
	}
	var env struct {
		Status string `json:"status"`
		Data   struct {
			Incidents []apiIncident `json:"incidents"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("cannot decode incidents: %w", err)
	}
	if env.Status != "success" {
		return nil, fmt.Errorf("cannot read incidents: status %q", env.Status)
	}
	return env.Data.Incidents, nil
}

// apiClosedKept is how many closed incidents GET /api/v1/incidents keeps
// (window.maxRecent).
const apiClosedKept = 100

// incidentLog keeps every incident anomalyd reported during the run,
// merged by id from successive polls: a later copy replaces an earlier one
// (an open incident's end, peak and top series change). Safe for one
// poller and one reader at a time.
type incidentLog struct {
	mu   sync.Mutex
	byID map[string]apiIncident
	// Gaps counts polls whose closed incidents filled the API's list
	// without reaching one seen before: some may have been missed.
	gaps   int
	errors int // polls that failed
}

func newIncidentLog() *incidentLog { return &incidentLog{byID: map[string]apiIncident{}} }

// add merges one poll's list.
func (l *incidentLog) add(list []apiIncident) {
	l.mu.Lock()
	defer l.mu.Unlock()
	closed, known := 0, false
	for _, in := range list {
		if !in.Open {
			closed++
			_, ok := l.byID[in.ID]
			known = known || ok
		}
	}
	if closed >= apiClosedKept && !known && len(l.byID) > 0 {
		l.gaps++
	}
	for _, in := range list {
		l.byID[in.ID] = in
	}
}

// all returns the incidents by start, then id.
func (l *incidentLog) all() []apiIncident {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]apiIncident, 0, len(l.byID))
	for _, in := range l.byID {
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b apiIncident) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(len(a.ID), len(b.ID)), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// poll adds the incidents of base to l every interval until ctx is done.
func (l *incidentLog) poll(ctx context.Context, base string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		list, err := fetchIncidents(ctx, base)
		if err != nil {
			if ctx.Err() == nil {
				l.mu.Lock()
				l.errors++
				l.mu.Unlock()
			}
			continue
		}
		l.add(list)
	}
}

// opening is when an incident opened on a target, or when the alert that
// pages for one started firing, and until when it lasted.
type opening struct {
	ID     string    `json:"id,omitempty"` // the incident's id; empty for an alert firing
	Target target    `json:"target"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"` // the incident's end (now, while open); the firing's last step
	Open   bool      `json:"open,omitempty"`
	Peak   float64   `json:"peak_score,omitempty"`
	Series int       `json:"series,omitempty"`
	// Top are the incident's most surprising series, most first, as
	// metric{labels other than the target's} score (reason).
	Top []string `json:"top_series,omitempty"`
}

// openingsOf turns the API's incidents into openings.
func openingsOf(list []apiIncident) []opening {
	out := make([]opening, 0, len(list))
	for _, in := range list {
		o := opening{ID: in.ID, Target: target{in.Group["job"], in.Group["instance"]}, Start: in.Start, End: in.End,
			Open: in.Open, Peak: in.Peak, Series: in.Series}
		for _, c := range in.Top {
			lb := labels.NewBuilder(labels.FromMap(c.Labels)).Del("job", "instance").Labels()
			name := lb.Get(labels.MetricName)
			o.Top = append(o.Top, fmt.Sprintf("%s%s %.1f (%s)", name, strings.TrimPrefix(lb.DropMetricName().String(), "{}"), c.Score, c.Reason))
		}
		out = append(out, o)
	}
	return out
}

// firings turns the steps at which an alert held on each of its label sets
// into openings: a firing starts where the expression holds after not
// holding at the previous step (a gap of more than 1.5 steps, for float
// times) and lasts to its last step.
func firings(holds map[string]heldSeries, step time.Duration) []opening {
	var out []opening
	gap := 1.5 * step.Seconds()
	for _, h := range holds {
		t := target{h.lset["job"], h.lset["instance"]}
		for i, ts := range h.times {
			if i == 0 || ts-h.times[i-1] > gap {
				out = append(out, opening{Target: t, Start: fromUnix(ts)})
			}
			out[len(out)-1].End = fromUnix(ts)
		}
	}
	slices.SortFunc(out, func(a, b opening) int {
		return cmp.Or(a.Start.Compare(b.Start), compareTargets(a.Target, b.Target))
	})
	return out
}

func fromUnix(s float64) time.Time { return time.Unix(0, int64(s*1e9)).UTC() }

// stageResult is what the incidents (or the paging alert) did over the run.
type stageResult struct {
	// Source says where the openings come from: the API, or an alert.
	Source   string `json:"source"`
	Openings int    `json:"openings"` // in the whole run, settling included
	// Caught counts the faults with an opening on their own target at
	// most within samples after their start.
	Caught int            `json:"caught"`
	Faults []faultOpening `json:"faults"`
	Quiet  quietOpenings  `json:"quiet"`
}

// faultOpening is what the stage did about one fault.
type faultOpening struct {
	Name   string `json:"name"`
	Target target `json:"target"`
	// Opened is the first opening on Target from the fault's start to
	// recovery after its end; nil if none.
	Opened *opening `json:"opened"`
	// DelaySeconds is from the fault's start to Opened's start (-1: none),
	// DelaySamples the same in scrape intervals.
	DelaySeconds float64 `json:"delay_seconds"`
	DelaySamples float64 `json:"delay_samples"`
	// Caught: Opened within the allowed samples of the start.
	Caught bool `json:"caught"`
	// OpenAtStart is an opening on Target before the fault that was still
	// open when it started (no new incident can open then); nil if none.
	OpenAtStart *opening `json:"open_at_start,omitempty"`
	// Elsewhere are the other targets with an opening in the window.
	Elsewhere []target `json:"elsewhere,omitempty"`
}

// quietOpenings are the openings in quiet spans: false incidents.
type quietOpenings struct {
	Minutes       float64          `json:"minutes"`
	Targets       int              `json:"targets"`
	TargetHours   float64          `json:"target_hours"`
	Openings      int              `json:"openings"`
	PerTargetHour float64          `json:"per_target_hour"`
	ByTarget      []targetOpenings `json:"by_target"`
	List          []opening        `json:"list"`
}

type targetOpenings struct {
	Target   target  `json:"target"`
	Openings int     `json:"openings"`
	PerHour  float64 `json:"per_hour"`
}

// analyseOpenings scores openings against the schedule. targets are the
// targets present the whole run (an opening on another is added to them);
// a fault's window runs from its start to recovery after its end; it is
// caught by an opening on its target at most within intervals after its
// start. ops must be sorted by start.
func analyseOpenings(source string, ops []opening, targets []target, quiet []span, faults []fault, recovery, interval time.Duration, within int) stageResult {
	r := stageResult{Source: source, Openings: len(ops)}
	targets = slices.Clone(targets)
	for _, o := range ops {
		if !slices.Contains(targets, o.Target) {
			targets = append(targets, o.Target)
		}
	}
	slices.SortFunc(targets, compareTargets)
	for _, f := range faults {
		fo := faultOpening{Name: f.Name, Target: f.Target, DelaySeconds: -1, DelaySamples: -1}
		w := span{unix(f.Start), unix(f.End.Add(recovery))}
		for i := range ops {
			o := &ops[i]
			t := unix(o.Start)
			if o.Target != f.Target {
				if w.has(t) && !slices.Contains(fo.Elsewhere, o.Target) {
					fo.Elsewhere = append(fo.Elsewhere, o.Target)
				}
				continue
			}
			switch {
			case w.has(t) && fo.Opened == nil:
				fo.Opened = o
				fo.DelaySeconds = t - w.from
				fo.DelaySamples = fo.DelaySeconds / interval.Seconds()
				// A tolerance of a microsecond for times parsed from text.
				fo.Caught = fo.DelaySeconds <= float64(within)*interval.Seconds()+1e-6
			case t < w.from && unix(o.End) >= w.from:
				fo.OpenAtStart = o
			}
		}
		if fo.Caught {
			r.Caught++
		}
		r.Faults = append(r.Faults, fo)
	}

	q := &r.Quiet
	for _, s := range quiet {
		q.Minutes += (s.to - s.from) / 60
	}
	q.Targets = len(targets)
	q.TargetHours = float64(len(targets)) * q.Minutes / 60
	byTarget := map[target]int{}
	for _, o := range ops {
		if spanOf(quiet, unix(o.Start)) >= 0 {
			q.Openings++
			byTarget[o.Target]++
			q.List = append(q.List, o)
		}
	}
	if q.TargetHours > 0 {
		q.PerTargetHour = float64(q.Openings) / q.TargetHours
	}
	for _, t := range targets {
		to := targetOpenings{Target: t, Openings: byTarget[t]}
		if q.Minutes > 0 {
			to.PerHour = float64(to.Openings) / (q.Minutes / 60)
		}
		q.ByTarget = append(q.ByTarget, to)
	}
	return r
}

// point is one sample.
type point struct{ t, v float64 }

// readTargetSeries reads every sample of query (an instant vector selector
// of one series per target) from from to to, by target, chunk by chunk as
// readScores does.
func readTargetSeries(base, query string, from, to time.Time, chunk time.Duration) (map[target][]point, error) {
	out := map[target][]point{}
	err := readRaw(base, query, from, to, chunk, func(m map[string]string, ts, x float64) {
		k := target{m["job"], m["instance"]}
		out[k] = append(out[k], point{ts, x})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// incidentScores is what the incident score (anomaly_incident_score, 1 or
// more opens an incident) did: on each fault's target during the fault,
// and on each target while quiet.
type incidentScores struct {
	Faults []faultScore  `json:"faults"`
	Quiet  []targetScore `json:"quiet"`
}

type faultScore struct {
	Name   string `json:"name"`
	Target target `json:"target"`
	// PeakWithin is the highest score on Target in the allowed samples
	// after the start, Peak in the whole window (to recovery after the
	// end); -1 when Target has no sample there.
	PeakWithin float64 `json:"peak_within"`
	Peak       float64 `json:"peak"`
}

type targetScore struct {
	Target  target  `json:"target"`
	Samples int     `json:"samples"`
	Peak    float64 `json:"peak"`
	// P99 is the 99th percentile of the target's quiet scores, AtLeastHalf
	// the samples scoring 0.5 or more (half way to an incident).
	P99         float64 `json:"p99"`
	AtLeastHalf int     `json:"at_least_half"`
}

// analyseScores summarises the incident scores by target against the
// schedule, with the windows of analyseOpenings.
func analyseScores(scores map[target][]point, targets []target, quiet []span, faults []fault, recovery, interval time.Duration, within int) incidentScores {
	var r incidentScores
	peak := func(ps []point, s span) float64 {
		m := -1.0
		for _, p := range ps {
			if s.has(p.t) {
				m = max(m, p.v)
			}
		}
		return m
	}
	for _, f := range faults {
		ps := scores[f.Target]
		from := unix(f.Start)
		r.Faults = append(r.Faults, faultScore{Name: f.Name, Target: f.Target,
			PeakWithin: peak(ps, span{from, from + float64(within)*interval.Seconds() + 1e-6}),
			Peak:       peak(ps, span{from, unix(f.End.Add(recovery))})})
	}
	for _, t := range targets {
		ts := targetScore{Target: t, Peak: -1, P99: -1}
		var vs []float64
		for _, p := range scores[t] {
			if spanOf(quiet, p.t) < 0 {
				continue
			}
			vs = append(vs, p.v)
			ts.Peak = max(ts.Peak, p.v)
			if p.v >= 0.5 {
				ts.AtLeastHalf++
			}
		}
		ts.Samples = len(vs)
		if len(vs) > 0 {
			slices.Sort(vs)
			ts.P99 = vs[(len(vs)-1)*99/100]
		}
		r.Quiet = append(r.Quiet, ts)
	}
	return r
}

// incidentReport is the incident stage's part of the report.
type incidentReport struct {
	// WithinSamples: a fault is caught by an opening on its target at most
	// this many scrape intervals after its start (-incident-within).
	WithinSamples int `json:"within_samples"`
	// Target figures of issue 21: every fault caught, and at most
	// MaxFalsePerTargetHour false incidents while quiet.
	MaxFalsePerTargetHour float64  `json:"max_false_per_target_hour"`
	Targets               []target `json:"targets"`
	// Stage: the incidents of GET /api/v1/incidents.
	Stage stageResult `json:"stage"`
	// Alerts: each alert of the rules file's incidentGroup, evaluated by
	// Prometheus at every scrape interval over the run.
	Alerts []stageResult  `json:"alerts"`
	Scores incidentScores `json:"scores"`
	// Incidents lists every incident of the run; PollGaps counts polls
	// after which some may be missing, PollErrors failed polls.
	Incidents  []opening `json:"incidents"`
	PollGaps   int       `json:"poll_gaps"`
	PollErrors int       `json:"poll_errors"`
}

// print writes the report; begin is the run's start, from which times are
// given in minutes.
func (ir *incidentReport) print(w io.Writer, begin time.Time, quietLen, interval string) {
	fmt.Fprintf(w, "incidents: %d targets (", len(ir.Targets))
	for i, t := range ir.Targets {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprint(w, t)
	}
	fmt.Fprintf(w, "); -quiet %s before the first fault; a fault is caught by an incident on its target within %d samples (%s each) of its start\n",
		quietLen, ir.WithinSamples, interval)
	if ir.PollGaps > 0 || ir.PollErrors > 0 {
		fmt.Fprintf(w, "  warning: %d polls of /api/v1/incidents failed, %d may have missed closed incidents\n", ir.PollErrors, ir.PollGaps)
	}
	for _, r := range append([]stageResult{ir.Stage}, ir.Alerts...) {
		q := r.Quiet
		verdict := func(ok bool) string {
			if ok {
				return "met"
			}
			return "NOT met"
		}
		fmt.Fprintf(w, "%s: %d in the run\n", r.Source, r.Openings)
		fmt.Fprintf(w, "  quiet: %.1f min × %d targets = %.2f target-hours: %d false (%.2f per target-hour; target ≤ %.1f: %s)",
			q.Minutes, q.Targets, q.TargetHours, q.Openings, q.PerTargetHour, ir.MaxFalsePerTargetHour, verdict(q.PerTargetHour <= ir.MaxFalsePerTargetHour))
		for _, bt := range q.ByTarget {
			fmt.Fprintf(w, "; %s %d", bt.Target.Job, bt.Openings)
		}
		fmt.Fprintln(w)
		for _, o := range q.List {
			peak := ""
			if o.ID != "" {
				peak = fmt.Sprintf(" (peak %.2f, %d series)", o.Peak, o.Series)
			}
			fmt.Fprintf(w, "    minute %5.1f: %s on %s%s%s\n", o.Start.Sub(begin).Minutes(), idOrFiring(o), o.Target, peak, topOf(o, 3))
		}
		fmt.Fprintf(w, "  faults caught: %d of %d (target: all: %s)\n", r.Caught, len(r.Faults), verdict(r.Caught == len(r.Faults)))
		for i, f := range r.Faults {
			line := "none"
			if o := f.Opened; o != nil {
				line = fmt.Sprintf("%s after %.1f samples (%.1f s)", idOrFiring(*o), f.DelaySamples, f.DelaySeconds)
				if !f.Caught {
					line += ", too late"
				}
				if o.ID != "" {
					line += fmt.Sprintf(", peak %.2f, %d series%s", o.Peak, o.Series, topOf(*o, 3))
				}
			}
			if o := f.OpenAtStart; o != nil {
				line += fmt.Sprintf("; %s already open at the start (from minute %.1f)", idOrFiring(*o), o.Start.Sub(begin).Minutes())
			}
			if len(f.Elsewhere) > 0 {
				var ts []string
				for _, t := range f.Elsewhere {
					ts = append(ts, t.Job)
				}
				line += "; also on " + strings.Join(ts, ", ")
			}
			if i < len(ir.Scores.Faults) && r.Source == ir.Stage.Source {
				s := ir.Scores.Faults[i]
				line += fmt.Sprintf("; score peak %.2f within, %.2f in the window", s.PeakWithin, s.Peak)
			}
			fmt.Fprintf(w, "    %-8s on %s: %s\n", f.Name, f.Target, line)
		}
		if r.Source != ir.Stage.Source {
			continue
		}
		for _, s := range ir.Scores.Quiet {
			fmt.Fprintf(w, "  quiet incident score of %s: peak %.2f, p99 %.2f, %d of %d samples ≥ 0.5\n", s.Target, s.Peak, s.P99, s.AtLeastHalf, s.Samples)
		}
	}
}

func idOrFiring(o opening) string {
	if o.ID == "" {
		return "firing"
	}
	return "incident " + o.ID
}

func topOf(o opening, n int) string {
	if len(o.Top) == 0 {
		return ""
	}
	return ": " + strings.Join(o.Top[:min(n, len(o.Top))], ", ")
}
