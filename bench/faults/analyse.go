package main

import (
	"cmp"
	"slices"
	"time"
)

// series is one output series of anomalyd (anomaly_score with
// detector="combined") as read back from Prometheus.
type series struct {
	metric string            // the input metric name (the output's "metric" label)
	lset   map[string]string // the output's labels
	labels string            // the output's label set, formatted, for the report
	times  []float64         // sample timestamps, Unix seconds, ascending
	alarms []float64         // timestamps of samples scoring ≥ the alarm level
}

// fault is one injected fault, from Start to End: a stress-ng command, or
// for the service's faults "shop" and what the fault does.
type fault struct {
	Name    string    `json:"name"`
	Command []string  `json:"command"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	// Signals are the series the fault must move: its detection is an
	// alert on one of them.
	Signals []selector `json:"signals"`
	// Target is the target whose incident it must open: node_exporter's
	// for stress-ng, shop's for the service's faults.
	Target target `json:"target"`
}

// selector selects input series by metric name and, optionally, one label.
type selector struct {
	Metric string `json:"metric"`
	Label  string `json:"label,omitempty"`
	Value  string `json:"value,omitempty"`
}

func (g selector) matches(s *series) bool {
	return s.metric == g.Metric && (g.Label == "" || s.lset[g.Label] == g.Value)
}

// span is a half-open interval [from, to) of Unix seconds.
type span struct{ from, to float64 }

func (s span) has(t float64) bool { return t >= s.from && t < s.to }

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// alerts returns when the AnomalyDetected rule,
// max_over_time(anomaly_score[hold]) >= 2, starts firing, given the times
// of the samples that scored ≥ 2: at the first alarm, and again at an
// alarm more than hold after the previous one (until then the rule is
// still firing). alarms must be ascending.
func alerts(alarms []float64, hold time.Duration) []float64 {
	var starts []float64
	last := 0.0
	for i, t := range alarms {
		if i == 0 || t-last > hold.Seconds() {
			starts = append(starts, t)
		}
		last = t
	}
	return starts
}

// quietSpans are the parts of the run where nothing was injected and the
// machine had recovered from the previous fault: from the end of the
// settling period to the first fault, between faults from recovery after
// one to the start of the next, and from recovery after the last to end.
func quietSpans(settled, end time.Time, faults []fault, recovery time.Duration) []span {
	var out []span
	from := unix(settled)
	for _, f := range faults {
		if to := unix(f.Start); to > from {
			out = append(out, span{from, to})
		}
		from = max(from, unix(f.End.Add(recovery)))
	}
	if to := unix(end); to > from {
		out = append(out, span{from, to})
	}
	return out
}

// metricCount is how many series of one input metric alerted.
type metricCount struct {
	Metric string `json:"metric"`
	Series int    `json:"series"`
}

// quietResult is what the rule did while nothing happened.
type quietResult struct {
	Spans       int     `json:"spans"`
	Minutes     float64 `json:"minutes"`
	SeriesHours float64 `json:"series_hours"`
	// Alerts counts rule firings that started in a quiet span: false alarms.
	Alerts                   int           `json:"alerts"`
	AlertsPer1000SeriesHours float64       `json:"alerts_per_1000_series_hours"`
	SeriesAlerting           int           `json:"series_alerting"`
	ByMetric                 []metricCount `json:"by_metric"`
	Examples                 []string      `json:"examples"`
	// BySpan splits Alerts by quiet span: the detectors are young in the
	// first span and have seen more samples in each later one.
	BySpan []spanResult `json:"by_span"`
}

// spanResult is one quiet span's share of the false alarms.
type spanResult struct {
	From        float64 `json:"from"` // Unix seconds
	To          float64 `json:"to"`
	SeriesHours float64 `json:"series_hours"`
	Alerts      int     `json:"alerts"`
}

// faultResult is what the rule did during one fault and its recovery.
type faultResult struct {
	fault
	// SeriesAlerting counts series whose rule started firing between the
	// fault's start and recovery after its end.
	SeriesAlerting int `json:"series_alerting"`
	// ExpectedByChance is how many would have at the quiet spans' rate.
	ExpectedByChance float64 `json:"expected_by_chance"`
	// FirstAlertSeconds is the first such start after the fault's start,
	// -1 if none.
	FirstAlertSeconds float64       `json:"first_alert_seconds"`
	ByMetric          []metricCount `json:"by_metric"`
	// SignalSeries counts the series its Signals select, SignalAlarming
	// those with an alarm (a sample scoring ≥ 2) in the window, whether or
	// not the rule was already firing (the fault is detected if any had),
	// FirstSignalSeconds the first such alarm after the start (-1: none).
	SignalSeries       int     `json:"signal_series"`
	SignalAlarming     int     `json:"signal_alarming"`
	FirstSignalSeconds float64 `json:"first_signal_seconds"`
}

// analyse applies the rule to every series and splits its firings into
// false alarms (in quiet spans) and alerts during each fault.
func analyse(all []*series, quiet []span, faults []fault, hold, recovery time.Duration, interval time.Duration) (quietResult, []faultResult) {
	var q quietResult
	q.Spans = len(quiet)
	q.BySpan = make([]spanResult, len(quiet))
	for i, s := range quiet {
		q.Minutes += (s.to - s.from) / 60
		q.BySpan[i] = spanResult{From: s.from, To: s.to}
	}
	fr := make([]faultResult, len(faults))
	fw := make([]span, len(faults))
	for i, f := range faults {
		fr[i] = faultResult{fault: f, FirstAlertSeconds: -1, FirstSignalSeconds: -1}
		fw[i] = span{unix(f.Start), unix(f.End.Add(recovery))}
	}
	qm := map[string]int{}
	fm := make([]map[string]int, len(faults))
	for i := range fm {
		fm[i] = map[string]int{}
	}
	for _, s := range all {
		for _, t := range s.times {
			if i := spanOf(quiet, t); i >= 0 {
				q.BySpan[i].SeriesHours += interval.Hours()
			}
		}
		starts := alerts(s.alarms, hold)
		quietHit := false
		faultHit := make([]bool, len(faults))
		for _, t := range starts {
			if i := spanOf(quiet, t); i >= 0 {
				q.Alerts++
				q.BySpan[i].Alerts++
				if !quietHit && len(q.Examples) < 20 {
					q.Examples = append(q.Examples, s.labels)
				}
				quietHit = true
			}
			for i, w := range fw {
				if !w.has(t) {
					continue
				}
				d := t - w.from
				faultHit[i] = true
				if fr[i].FirstAlertSeconds < 0 || d < fr[i].FirstAlertSeconds {
					fr[i].FirstAlertSeconds = d
				}
			}
		}
		for i, f := range faults {
			if !isSignal(f, s) {
				continue
			}
			fr[i].SignalSeries++
			// Any alarm counts, not only a new firing: a series whose
			// rule was already firing (noise a little earlier) and
			// alarms again in the window has seen the fault.
			for _, t := range s.alarms {
				if fw[i].has(t) {
					fr[i].SignalAlarming++
					if d := t - fw[i].from; fr[i].FirstSignalSeconds < 0 || d < fr[i].FirstSignalSeconds {
						fr[i].FirstSignalSeconds = d
					}
					break
				}
			}
		}
		if quietHit {
			q.SeriesAlerting++
			qm[s.metric]++
		}
		for i, hit := range faultHit {
			if hit {
				fr[i].SeriesAlerting++
				fm[i][s.metric]++
			}
		}
	}
	for _, sp := range q.BySpan {
		q.SeriesHours += sp.SeriesHours
	}
	if q.SeriesHours > 0 {
		q.AlertsPer1000SeriesHours = 1000 * float64(q.Alerts) / q.SeriesHours
	}
	q.ByMetric = byMetric(qm)
	for i := range fr {
		fr[i].ByMetric = byMetric(fm[i])
		if q.SeriesHours > 0 {
			// Series in the fault window times the quiet alert rate: the
			// alerts the window would have had if nothing had happened.
			seriesHours := float64(len(all)) * (fw[i].to - fw[i].from) / 3600
			fr[i].ExpectedByChance = float64(q.Alerts) / q.SeriesHours * seriesHours
		}
	}
	return q, fr
}

func isSignal(f fault, s *series) bool {
	for _, g := range f.Signals {
		if g.matches(s) {
			return true
		}
	}
	return false
}

// spanOf is the index of the span that holds t, -1 if none.
func spanOf(spans []span, t float64) int {
	for i, s := range spans {
		if s.has(t) {
			return i
		}
	}
	return -1
}

// byMetric orders metrics by alerting series, most first, then by name.
func byMetric(m map[string]int) []metricCount {
	out := make([]metricCount, 0, len(m))
	for k, v := range m {
		out = append(out, metricCount{k, v})
	}
	slices.SortFunc(out, func(a, b metricCount) int {
		if c := cmp.Compare(b.Series, a.Series); c != 0 {
			return c
		}
		return cmp.Compare(a.Metric, b.Metric)
	})
	return out
}
