package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	data, labels := synthCorpus(t, dir)
	c, err := loadCorpus(data, labels)
	if err != nil {
		t.Fatal(err)
	}
	// perfect fires on each window's first row; late fires on each window's
	// last row and once in c.csv (no window there: −FP).
	perfect, late := filepath.Join(dir, "out", "perfect"), filepath.Join(dir, "out", "late")
	writeResults(t, perfect, c, func(f *File, i int) float64 {
		for _, w := range f.Windows {
			if i == w.Start {
				return 1
			}
		}
		return 0
	})
	writeResults(t, late, c, func(f *File, i int) float64 {
		for _, w := range f.Windows {
			if i == w.End {
				return 0.9
			}
		}
		if f.Name == "other/c.csv" && i == 20 {
			return 0.95
		}
		return 0.1
	})
	jsonOut := filepath.Join(dir, "nab.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-data", data, "-results", perfect, "-results", "slow=" + late, "-baseline", "null", "-json", jsonOut}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"NAB v1.1 scoring: 3 files, 170 rows (25 of them probationary, not scored), 3 windows",
		"== perfect (results " + perfect + ")",
		"standard            1          3.000  -3.000  3.000    100.00      3/3               0",
		"== slow (results " + late + ")",
		// At threshold 0.9 each window is detected on its last row:
		// S(−1/5)/S(−1) = 0.4683868 in a.csv, S(−1/10)/S(−1) = 0.2482415 twice
		// in b.csv, total 0.9648699; the 0.95 in c.csv (no window) costs the
		// FP weight. Standard: 0.8548699, normalised 100·(0.855 + 3)/(3 + 3);
		// low FP: 0.9648699 − 0.22 = 0.7448699, 100·3.745/6;
		// low FN: 100·(0.855 + 6)/(3 + 6).
		"standard            0.9        0.855  -3.000  3.000    64.25       3/3               1",
		"reward_low_FP_rate  0.9        0.745  -3.000  3.000    62.41       3/3               1",
		"reward_low_FN_rate  0.9        0.855  -6.000  3.000    76.17       3/3               1",
		"cat       2      3/3               0        0.965",
		"other     1      0/0               1        -0.110",
		"all       3      3/3               1        0.855",
		"* perfect                     100.00    100.00              100.00",
		"* null                        0.00      0.00                0.00                built-in baseline",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if slow := rep.Detectors[1].Profiles[0]; slow.Threshold != 0.9 || math.Abs(slow.Raw-0.854869943453138) > eps {
		t.Errorf("JSON: slow standard threshold %v raw %v, want 0.9 and 0.854869943453138", slow.Threshold, slow.Raw)
	}
	if len(rep.Detectors) != 3 || rep.Detectors[1].Name != "slow" || len(rep.Detectors[1].Files) != 3 ||
		rep.Detectors[0].Profiles[2].Normalised != 100 || len(rep.Scoreboard.Rows) != len(publishedScoreboard) {
		t.Errorf("JSON: got %s", b)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	data, _ := synthCorpus(t, dir)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no data", []string{"-baseline", "null"}, 2, "nab: -data is required\n"},
		{"nothing to score", []string{"-data", data}, 2, "nab: nothing to score: give -results DIR or -baseline null,random\n"},
		{"bad baseline", []string{"-data", data, "-baseline", "oracle"}, 2, "nab: -baseline \"oracle\": want null or random\n"},
		{"name with two results", []string{"-data", data, "-name", "x", "-results", "a", "-results", "b"}, 2,
			"nab: -name names the detector of a single -results, got 2 -results\n"},
		{"same name twice", []string{"-data", data, "-results", "x/ewma", "-results", "y/ewma"}, 2,
			"nab: two detectors named \"ewma\": use -results NAME=DIR\n"},
		{"argument", []string{"-data", data, "extra"}, 2, "nab: unexpected argument \"extra\"\n"},
		{"missing results directory", []string{"-data", data, "-results", filepath.Join(dir, "none")}, 1,
			"nab: detector none: invalid results: results directory: stat " + filepath.Join(dir, "none") + ": no such file or directory\n"},
		{"missing results files", []string{"-data", data, "-results", "empty=" + dir}, 1,
			"nab: detector empty: invalid results: missing results file " + filepath.Join(dir, "cat", "a.csv") + " for data file cat/a.csv\n" +
				"invalid results: missing results file " + filepath.Join(dir, "cat", "b.csv") + " for data file cat/b.csv\n" +
				"invalid results: missing results file " + filepath.Join(dir, "other", "c.csv") + " for data file other/c.csv\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || stderr.String() != tc.want {
				t.Errorf("got exit %d, stderr\n%s\nwant exit %d, stderr\n%s", code, stderr.String(), tc.code, tc.want)
			}
		})
	}
}
