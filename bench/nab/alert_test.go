package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseAlertRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want alertRule
	}{
		{"combined:>1 for 5m", alertRule{detector: "combined", text: ">1 for 5m", threshold: 1, hold: 300}},
		{" combined : >= 2 ", alertRule{detector: "combined", text: ">= 2", orEqual: true, threshold: 2}},
		{"ewma:>0.5 for 90s", alertRule{detector: "ewma", text: ">0.5 for 90s", threshold: 0.5, hold: 90}},
	} {
		got, err := parseAlertRule(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseAlertRule(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{">1", `-alert ">1": want DETECTOR:RULE, e.g. combined:'>1 for 5m'`},
		{"combined:", `-alert "combined:": want DETECTOR:RULE, e.g. combined:'>1 for 5m'`},
		{"combined:<1", `-alert "combined:<1": the rule must start with > or >=`},
		{"combined:>x", `-alert "combined:>x": threshold "x": want a finite number ≥ 0`},
		{"combined:>-1", `-alert "combined:>-1": threshold "-1": want a finite number ≥ 0`},
		{"combined:>1 for soon", `-alert "combined:>1 for soon": for "soon": want a duration ≥ 0 such as 5m`},
	} {
		if _, err := parseAlertRule(tc.in); err == nil || err.Error() != tc.want {
			t.Errorf("parseAlertRule(%q) error %v, want %s", tc.in, err, tc.want)
		}
	}
}

// TestAlertFiring checks the rule's Prometheus semantics row by row on a
// file of one row a minute.
func TestAlertFiring(t *testing.T) {
	native := []float64{0, 1.5, 1.5, 1.5, 0.5, 3, 0, 2, 2, 1.5}
	f := synthFile(t, "cat/a.csv", len(native), nil)
	scores := make([]float64, len(native))
	for i, s := range native {
		scores[i] = s / (1 + s) // as a results file holds them
	}
	for _, tc := range []struct {
		rule string
		want []float64
	}{
		// The run of rows above 1 from row 1 lasts 2m at row 3; the run
		// from row 7 lasts 2m at row 9.
		{"x:>1 for 2m", []float64{0, 0, 0, 1, 0, 0, 0, 0, 0, 1}},
		{"x:>1", []float64{0, 1, 1, 1, 0, 1, 0, 1, 1, 1}},
		{"x:>=2", []float64{0, 0, 0, 0, 0, 1, 0, 1, 1, 0}},
		{"x:>2", []float64{0, 0, 0, 0, 0, 1, 0, 0, 0, 0}},
	} {
		r, err := parseAlertRule(tc.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.firing(f, scores); !slices.Equal(got, tc.want) {
			t.Errorf("%s: fires %v, want %v", tc.rule, got, tc.want)
		}
	}
}

func TestRunAlert(t *testing.T) {
	dir := t.TempDir()
	data, labels := synthCorpus(t, dir)
	c, err := loadCorpus(data, labels)
	if err != nil {
		t.Fatal(err)
	}
	// Native score 3 on each window's first row, 1.5 on the two after it:
	// a rule at 2 fires on the first row only (100); at 1 for 1m it fires
	// on the second row, later in every window (less than 100, no FP).
	out := filepath.Join(dir, "out", "d")
	writeResults(t, out, c, func(f *File, i int) float64 {
		for _, w := range f.Windows {
			switch i {
			case w.Start:
				return 3.0 / 4
			case w.Start + 1, w.Start + 2:
				return 1.5 / 2.5
			}
		}
		return 0
	})
	var stdout, stderr bytes.Buffer
	jsonOut := filepath.Join(dir, "nab.json")
	code := run([]string{"-data", data, "-results", out, "-alert", "d:>=2", "-alert", "d:>1 for 1m", "-json", jsonOut}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{
		"== d [>=2] (alert rule over d's native score)",
		"* d [>=2]                     100.00",
		"== d [>1 for 1m] (alert rule over d's native score)",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	var rep Report
	if b, err := os.ReadFile(jsonOut); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string]ProfileResult{}
	for _, d := range rep.Detectors {
		got[d.Name] = d.Profiles[0]
	}
	if p := got["d [>=2]"]; p.Normalised != 100 || p.Totals.FPRows != 0 {
		t.Errorf("d [>=2]: %.2f with %d FP rows, want 100 with none", p.Normalised, p.Totals.FPRows)
	}
	if p := got["d [>1 for 1m]"]; !(p.Normalised > 50 && p.Normalised < 100) || p.Totals.WindowsDetected != 3 || p.Totals.FPRows != 0 {
		t.Errorf("d [>1 for 1m]: %.2f, %d windows, %d FP rows; want 3 windows detected one row late (50–100), no FP",
			p.Normalised, p.Totals.WindowsDetected, p.Totals.FPRows)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-data", data, "-results", out, "-alert", "e:>=2"}, "nab: -alert \">=2\": no -results detector named \"e\"\n"},
		{[]string{"-data", data, "-results", out, "-alert", "d:>=2", "-alert", "d:>=2"}, "nab: -alert \">=2\" for d given twice\n"},
		{[]string{"-data", data, "-baseline", "null", "-alert", "null:>=2"}, "nab: -alert \">=2\": no -results detector named \"null\"\n"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := run(tc.args, &stdout, &stderr); code != 2 || stderr.String() != tc.want {
			t.Errorf("%q: exit %d, stderr %q; want 2, %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
