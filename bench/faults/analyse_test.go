package main

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAlerts(t *testing.T) {
	hold := 2 * time.Minute
	for _, c := range []struct {
		alarms, want []float64
	}{
		{nil, nil},
		{[]float64{10}, []float64{10}},
		// Within hold of the previous alarm the rule is still firing.
		{[]float64{10, 50, 130, 250}, []float64{10}},
		// More than hold after the previous alarm it fires again.
		{[]float64{10, 131, 252}, []float64{10, 131, 252}},
		{[]float64{10, 20, 200, 210, 400}, []float64{10, 200, 400}},
	} {
		if got := alerts(c.alarms, hold); !reflect.DeepEqual(got, c.want) {
			t.Errorf("alerts(%v) = %v, want %v", c.alarms, got, c.want)
		}
	}
}

func at(s float64) time.Time { return time.Unix(0, int64(s*1e9)) }

func TestQuietSpans(t *testing.T) {
	faults := []fault{
		{Name: "a", Start: at(1000), End: at(1060)},
		{Name: "b", Start: at(1240), End: at(1300)},
	}
	got := quietSpans(at(300), at(1600), faults, 120*time.Second)
	want := []span{{300, 1000}, {1180, 1240}, {1420, 1600}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// A recovery that reaches past the next fault's start leaves no span
	// between them.
	got = quietSpans(at(300), at(1600), faults, 200*time.Second)
	want = []span{{300, 1000}, {1500, 1600}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("long recovery: got %v, want %v", got, want)
	}
}

func TestAnalyse(t *testing.T) {
	faults := []fault{{Name: "cpu", Start: at(1000), End: at(1060), Signals: []selector{{Metric: "m2", Label: "x", Value: "1"}, {Metric: "m3"}}}}
	quiet := quietSpans(at(100), at(1500), faults, 60*time.Second) // [100,1000) [1120,1500)
	every := func(from, to float64) []float64 {
		var ts []float64
		for x := from; x < to; x++ {
			ts = append(ts, x)
		}
		return ts
	}
	all := []*series{
		// Alarms once while quiet, and again during the fault.
		{metric: "m1", labels: `{metric="m1"}`, times: every(0, 1500), alarms: []float64{500, 1010, 1020}},
		// Alarms during the settling period (not counted) and in the
		// fault's recovery (counted for the fault, not as a false alarm).
		{metric: "m2", labels: `{metric="m2"}`, times: every(0, 1500), alarms: []float64{50, 1100}},
		// An alarm 100 s before the fault is still firing when it starts:
		// no new alert in the fault; the one alarm is quiet.
		{metric: "m2", lset: map[string]string{"x": "1"}, labels: `{metric="m2", x="1"}`, times: every(0, 1500), alarms: []float64{900, 1005}},
		{metric: "m3", labels: `{metric="m3"}`, times: every(0, 1500)},
	}
	q, fr := analyse(all, quiet, faults, 2*time.Minute, 60*time.Second, time.Second)
	if q.Alerts != 2 || q.SeriesAlerting != 2 {
		t.Errorf("quiet: %d alerts on %d series, want 2 on 2", q.Alerts, q.SeriesAlerting)
	}
	if want := 4 * (900 + 380) / 3600.0; math.Abs(q.SeriesHours-want) > 1e-9 {
		t.Errorf("series-hours %v, want %v", q.SeriesHours, want)
	}
	if want := 1000 * 2 / q.SeriesHours; math.Abs(q.AlertsPer1000SeriesHours-want) > 1e-9 {
		t.Errorf("rate %v, want %v", q.AlertsPer1000SeriesHours, want)
	}
	if want := []metricCount{{"m1", 1}, {"m2", 1}}; !reflect.DeepEqual(q.ByMetric, want) {
		t.Errorf("quiet by metric %v, want %v", q.ByMetric, want)
	}
	wantSpans := []spanResult{{100, 1000, 4 * 900 / 3600.0, 2}, {1120, 1500, 4 * 380 / 3600.0, 0}}
	if len(q.BySpan) != 2 {
		t.Fatalf("by span %+v, want %+v", q.BySpan, wantSpans)
	}
	for i, w := range wantSpans {
		g := q.BySpan[i]
		if g.From != w.From || g.To != w.To || g.Alerts != w.Alerts || math.Abs(g.SeriesHours-w.SeriesHours) > 1e-9 {
			t.Errorf("span %d: %+v, want %+v", i, g, w)
		}
	}
	if len(fr) != 1 {
		t.Fatalf("%d fault results, want 1", len(fr))
	}
	f := fr[0]
	if f.SeriesAlerting != 2 || f.FirstAlertSeconds != 10 {
		t.Errorf("fault: %d series, first after %v s; want 2, 10", f.SeriesAlerting, f.FirstAlertSeconds)
	}
	// Signals select m2{x="1"}, whose rule was still firing from an alarm
	// before the fault when it alarmed 5 s into it (detected, though no
	// new alert started), and m3, which never alarmed.
	if f.SignalSeries != 2 || f.SignalAlarming != 1 || f.FirstSignalSeconds != 5 {
		t.Errorf("signals: %d series, %d alerting, first %v; want 2, 1, 5", f.SignalSeries, f.SignalAlarming, f.FirstSignalSeconds)
	}
	faults[0].Signals = []selector{{Metric: "m3"}}
	_, fr = analyse(all, quiet, faults, 2*time.Minute, 60*time.Second, time.Second)
	if f := fr[0]; f.SignalSeries != 1 || f.SignalAlarming != 0 || f.FirstSignalSeconds != -1 {
		t.Errorf("signal m3: %d series, %d alerting, first %v; want 1, 0, -1", f.SignalSeries, f.SignalAlarming, f.FirstSignalSeconds)
	}
	if want := []metricCount{{"m1", 1}, {"m2", 1}}; !reflect.DeepEqual(f.ByMetric, want) {
		t.Errorf("fault by metric %v, want %v", f.ByMetric, want)
	}
	// 2 alerts in q.SeriesHours; the window is 4 series × 120 s.
	if want := 2 / q.SeriesHours * 4 * 120 / 3600; math.Abs(f.ExpectedByChance-want) > 1e-9 {
		t.Errorf("expected by chance %v, want %v", f.ExpectedByChance, want)
	}

	// No alarm in a fault: first alert -1.
	_, fr = analyse(all[3:], quiet, faults, 2*time.Minute, 60*time.Second, time.Second)
	if fr[0].SeriesAlerting != 0 || fr[0].FirstAlertSeconds != -1 {
		t.Errorf("no alarms: %+v", fr[0])
	}

	// Both m2 series alarm in the window (at 1100 and 1005).
	faults[0].Signals = []selector{{Metric: "m2"}}
	_, fr = analyse(all, quiet, faults, 2*time.Minute, 60*time.Second, time.Second)
	if f := fr[0]; f.SignalSeries != 2 || f.SignalAlarming != 2 || f.FirstSignalSeconds != 5 {
		t.Errorf("signal m2: %d series, %d alerting, first %v; want 2, 2, 5", f.SignalSeries, f.SignalAlarming, f.FirstSignalSeconds)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	withFor, noScores := filepath.Join(dir, "for.yml"), filepath.Join(dir, "none.yml")
	noIncidents := filepath.Join(dir, "scores.yml")
	for p, body := range map[string]string{
		withFor:     "groups:\n  - name: anomalyd-scores\n    rules:\n      - alert: Slow\n        expr: anomaly_score > 1\n        for: 5m\n",
		noScores:    "groups:\n  - name: other\n    rules:\n      - alert: X\n        expr: up == 0\n",
		noIncidents: "groups:\n  - name: anomalyd-scores\n    rules:\n      - alert: A\n        expr: anomaly_score > 1\n",
	} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ok := options{scrape: time.Second, quiet: 15 * time.Minute, settle: 5 * time.Minute, faultDur: time.Minute, gap: 4 * time.Minute, faults: "cpu,disk",
		rules: filepath.Join("..", "..", "deploy", "prometheus", "anomalyd-alerts.yml"), within: 3}
	if err := ok.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		set  func(*options)
		want string
	}{
		{func(o *options) { o.scrape = 10 * time.Millisecond }, "-scrape-interval must be at least 100ms, got 10ms"},
		{func(o *options) { o.settle = o.quiet }, "-settle (15m0s) must be shorter than -quiet (15m0s)"},
		{func(o *options) { o.gap = 30 * time.Second }, "-gap (30s) must be at least -fault-duration (1m0s), which must be positive"},
		{func(o *options) { o.faults = "cpu,gpu" }, `unknown fault "gpu" in -faults (known: cpu, disk, errors, fork, latency, memory, network, traffic)`},
		{func(o *options) { o.rules = "nonexistent.yml" }, "-rules: open nonexistent.yml: no such file or directory"},
		{func(o *options) { o.rules = withFor }, "-rules " + withFor + ": alert Slow has for: 5m, which this harness cannot apply"},
		{func(o *options) { o.rules = noScores }, "-rules " + noScores + `: no alert in group "anomalyd-scores"`},
		{func(o *options) { o.rules = noIncidents }, "-rules " + noIncidents + `: no alert in group "anomalyd-incidents"`},
		{func(o *options) { o.within = 0 }, "-incident-within must be at least 1 sample, got 0"},
	} {
		o := ok
		c.set(&o)
		err := o.validate()
		if err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
}

func TestFormatLabels(t *testing.T) {
	got := formatLabels(map[string]string{"__name__": "anomaly_score", "job": "node", "cpu": "0", "q": `a"b`})
	if want := `{cpu="0", job="node", q="a\"b"}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if got := formatLabels(map[string]string{"__name__": "x"}); got != "{}" {
		t.Fatalf("only a name: got %s, want {}", got)
	}
}

// The shipped rules file: both score alerts, in order, with their
// expressions; the health alerts (another group) are left out.
func TestLoadScoreAlerts(t *testing.T) {
	rs, err := loadScoreAlerts(filepath.Join("..", "..", "deploy", "prometheus", "anomalyd-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Alert)
		if !strings.Contains(r.Expr, `anomaly_score{detector="combined"}`) {
			t.Errorf("%s: expr %q does not read the combined score", r.Alert, r.Expr)
		}
	}
	if got, want := strings.Join(names, ","), "AnomalyDetected,AnomalySustained"; got != want {
		t.Errorf("alerts %s, want %s", got, want)
	}
}

// A rule's result becomes each series' alarms: a firing starts where the
// expression holds after a step where it did not.
func TestRuleSeries(t *testing.T) {
	faults := []fault{{Name: "cpu", Start: at(1000), End: at(1060), Signals: []selector{{Metric: "m2"}}}}
	quiet := quietSpans(at(100), at(1500), faults, 60*time.Second)
	all := []*series{
		{metric: "m1", labels: `{metric="m1"}`, alarms: []float64{500}},
		{metric: "m2", labels: `{metric="m2"}`},
	}
	holds := map[string][]float64{
		// Two firings in quiet time: 200-202, then 210 (a gap of 8 steps).
		`{metric="m1"}`: {200, 201, 202, 210},
		// Holds from 1030 on: the fault is detected 30 s after its start.
		`{metric="m2"}`:   {1030, 1031, 1032},
		`{metric="gone"}`: {300},
	}
	rs := ruleSeries(all, holds)
	if len(all[0].alarms) != 1 || all[0].alarms[0] != 500 {
		t.Fatalf("ruleSeries changed its input: %v", all[0].alarms)
	}
	q, fr := analyse(rs, quiet, faults, 1500*time.Millisecond, 60*time.Second, time.Second)
	if q.Alerts != 2 || q.SeriesAlerting != 1 {
		t.Errorf("quiet: %d alerts on %d series, want 2 on 1", q.Alerts, q.SeriesAlerting)
	}
	if f := fr[0]; f.SignalAlarming != 1 || f.FirstSignalSeconds != 30 || f.SeriesAlerting != 1 {
		t.Errorf("fault: %d signal series alarming, first after %v s, %d alerting; want 1, 30, 1", f.SignalAlarming, f.FirstSignalSeconds, f.SeriesAlerting)
	}
}
