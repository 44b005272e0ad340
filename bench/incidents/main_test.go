package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFixture makes a data set of two services at 5-minute steps, 300
// scored rows each after 12 of warm-up, and their backtest output with
// incidents open as given.
//
//	s/a: incidents at rows 100-119 (event e1) and 200-209 (e2)
//	s/b: a censored incident at rows 0-9 (e3)
func writeFixture(t *testing.T, open map[string][][2]int) (dataset, results string) {
	t.Helper()
	dir := t.TempDir()
	dataset, results = filepath.Join(dir, "ds"), filepath.Join(dir, "out")
	first := time.Date(2021, 6, 7, 0, 0, 0, 0, time.UTC)
	ts := func(row int) string {
		return first.Add(time.Duration(row) * 5 * time.Minute).Format("2006-01-02 15:04:05")
	}
	os.MkdirAll(filepath.Join(dataset, "labels"), 0o755)
	os.WriteFile(filepath.Join(dataset, "meta.json"), []byte(`{"build": {"first_scored": "`+ts(0)+`", "step_s": 300}}`), 0o644)
	lbl := fmt.Sprintf(`{
 "s/a": {"incidents": [{"start": "%s.000000", "end": "%s.000000", "event": "e1", "censored": false},
                       {"start": "%s.000000", "end": "%s.000000", "event": "e2", "censored": false}]},
 "s/b": {"incidents": [{"start": "%s.000000", "end": "%s.000000", "event": "e3", "censored": true}]}
}`, ts(100), ts(119), ts(200), ts(209), ts(0), ts(9))
	os.WriteFile(filepath.Join(dataset, "labels", "incidents_detail.json"), []byte(lbl), 0o644)
	for _, svc := range []string{"s/a", "s/b"} {
		var b strings.Builder
		b.WriteString("timestamp,incident_score,open,series\n")
		for row := -12; row < 300; row++ {
			o := 0
			for _, r := range open[svc] {
				if row >= r[0] && row <= r[1] {
					o = 1
				}
			}
			fmt.Fprintf(&b, "%s,%d,%d,%d\n", ts(row), o, o, o)
		}
		os.MkdirAll(filepath.Join(results, svc), 0o755)
		os.WriteFile(filepath.Join(results, svc, "incidents.csv"), []byte(b.String()), 0o644)
	}
	return dataset, results
}

func TestScore(t *testing.T) {
	ds, out := writeFixture(t, map[string][][2]int{
		// a: the first incident 3 rows late; an open run that starts
		// outside the second window and goes into it: a false onset, and
		// the second incident detected at once; one more false onset, and
		// one in the warm-up, which does not count.
		"s/a": {{-5, -1}, {103, 110}, {150, 152}, {195, 202}},
		// b: open in its censored incident: detected, not false.
		"s/b": {{2, 4}},
	})
	res, err := score(ds, out)
	if err != nil {
		t.Fatal(err)
	}
	r := res[0]
	days := float64(600-20-10-10) * 300 / 86400
	if r.Name != "all" || r.Services != 2 || r.Incidents != 2 || r.Detected != 2 || r.MedianDelay != 1.5 ||
		r.Events != 2 || r.EventsDetected != 2 || r.FalseIncidents != 2 || r.Censored != 1 || r.CensoredDetected != 1 ||
		fmt.Sprintf("%.4f", r.DaysOutside) != fmt.Sprintf("%.4f", days) {
		t.Errorf("got %+v; want 2 of 2 detected (delays 3 and 0), 2 false onsets over %.3f days, the censored one detected", r, days)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-dataset", ds, "-results", out}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "2/2 (100%)") {
		t.Errorf("run: %d %q %q", code, stdout.String(), stderr.String())
	}
}
