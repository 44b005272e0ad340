package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

func TestExportFileNames(t *testing.T) {
	ls := func(kv ...string) labels.Labels { return labels.FromStrings(kv...) }
	lsets := []labels.Labels{
		ls("__name__", "node_cpu_seconds_total", "job", "node", "cpu", "0", "mode", "user"),
		ls("__name__", "node_cpu_seconds_total", "job", "node", "cpu", "1", "mode", "user"),
		ls("__name__", "node_load1", "job", "node"),
		ls("__name__", "go_gc_duration_seconds_count", "job", "node"),
		ls("__name__", "go_gc_duration_seconds", "job", "node", "quantile", "0.5"),
		ls("__name__", "go_gc_duration_seconds", "job", "node", "quantile", "1"),
		ls("__name__", "incidents", "job", "node"),      // the backtest's output name
		ls("__name__", "odd.name_total", "job", "node"), // not a valid metric name
	}
	names := exportFileNames(lsets)
	want := map[int]string{2: "node_load1.csv", 3: "go_gc_duration_seconds_count.csv", 7: "odd_name_total.csv"}
	prefixed := regexp.MustCompile(`^x[0-9a-f]{8}_(.*)\.csv$`)
	valid := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	seen := map[string]bool{}
	for i, n := range names {
		if seen[n] {
			t.Errorf("%s named twice", n)
		}
		seen[n] = true
		if !valid.MatchString(strings.TrimSuffix(n, ".csv")) || !strings.HasSuffix(n, ".csv") {
			t.Errorf("%s: not <a metric name>.csv", n)
		}
		if w, ok := want[i]; ok {
			if n != w {
				t.Errorf("%s: named %s, want %s", lsets[i], n, w)
			}
			continue
		}
		// Not unique in the job: prefixed, the metric name (and so its
		// suffix) kept at the end.
		m := prefixed.FindStringSubmatch(n)
		if m == nil || m[1] != lsets[i].Get("__name__") {
			t.Errorf("%s: named %s, want x<8 hex>_%s.csv", lsets[i], n, lsets[i].Get("__name__"))
		}
	}
	// A series' name depends on its labels, not on the order of the list.
	rev := slices.Clone(lsets)
	slices.Reverse(rev)
	again := exportFileNames(rev)
	slices.Reverse(again)
	if !slices.Equal(again, names) {
		t.Errorf("reversed input named %v, want %v", again, names)
	}
}

func TestAppendRow(t *testing.T) {
	for _, c := range []struct {
		p    point
		want string
	}{
		{point{1796552133.931, 0.5}, "1796552133.931,0.5\n"},
		{point{1796552134, 3}, "1796552134.000,3\n"},
		{point{1796552134.007, 1e21}, "1796552134.007,1e+21\n"},
		{point{1796552134.05, -2.25}, "1796552134.050,-2.25\n"},
	} {
		if got := string(appendRow(nil, c.p)); got != c.want {
			t.Errorf("appendRow(%v) = %q, want %q", c.p, got, c.want)
		}
	}
}

func TestScoreKey(t *testing.T) {
	// anomalyd renames an input's quantile (and metric, detector, le)
	// label in its output series.
	in := map[string]string{"__name__": "go_gc_duration_seconds", "job": "node", "instance": "n:1", "quantile": "0.5", "metric": "m"}
	want := formatLabels(map[string]string{"__name__": "anomaly_score", "metric": "go_gc_duration_seconds", "detector": "combined",
		"job": "node", "instance": "n:1", "exported_quantile": "0.5", "exported_metric": "m"})
	if got := scoreKey(in); got != want {
		t.Errorf("scoreKey = %s, want %s", got, want)
	}
}

func TestWriteExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "export")
	rep := &report{Begin: at(1000), Settings: struct {
		ScrapeInterval, Quiet, Settle, FaultDuration, Gap, Recovery, Hold string
		Rule                                                              string
		RulesFile                                                         string
		IncidentWithin                                                    int
	}{ScrapeInterval: "1s"}}
	ss := []*exportedSeries{
		{labels.FromStrings("__name__", "up", "job", "node", "instance", "n:1"), []point{{1000.5, 1}, {1001.5, 1}}},
		{labels.FromStrings("__name__", "x_total", "job", "node", "instance", "n:1", "a", "1"), []point{{1000.5, 7}}},
		{labels.FromStrings("__name__", "x_total", "job", "node", "instance", "n:1", "a", "2"), []point{{1000.5, 8}}},
		{labels.FromStrings("__name__", "up", "job", "shop", "instance", "s:1"), []point{{1000.25, 0}}},
	}
	if err := writeExport(dir, rep, ss); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "node", "up.csv"))
	if err != nil || string(b) != "timestamp,value\n1000.500,1\n1001.500,1\n" {
		t.Errorf("node/up.csv: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "shop", "up.csv")); err != nil {
		t.Error(err)
	}
	idx, err := os.ReadFile(filepath.Join(dir, "node", "series.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(idx)), "\n")
	if len(lines) != 3 || lines[0] != `up.csv	{__name__="up", instance="n:1", job="node"}` || !strings.Contains(lines[1]+lines[2], `a="1"`) {
		t.Errorf("node/series.txt:\n%s", idx)
	}
	for _, l := range lines[1:] {
		f, _, _ := strings.Cut(l, "\t")
		if _, err := os.Stat(filepath.Join(dir, "node", f)); err != nil || !strings.HasSuffix(f, "_x_total.csv") {
			t.Errorf("series.txt names %s: %v", f, err)
		}
	}
	var back report
	if b, err := os.ReadFile(filepath.Join(dir, "faults.json")); err != nil || json.Unmarshal(b, &back) != nil || !back.Begin.Equal(at(1000)) {
		t.Errorf("faults.json: %s, %v", b, err)
	}
	// An export never mixes with an earlier one.
	if err := writeExport(dir, rep, ss); err == nil {
		t.Error("a second export into the same folder: want an error")
	}
	// A folder is one target.
	two := append(ss, &exportedSeries{labels.FromStrings("__name__", "up", "job", "node", "instance", "n:2"), []point{{1000, 1}}})
	if err := writeExport(filepath.Join(t.TempDir(), "two"), rep, two); err == nil || !strings.Contains(err.Error(), "two instances") {
		t.Errorf("two instances of a job: got %v", err)
	}
}
