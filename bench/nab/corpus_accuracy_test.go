//go:build accuracy

// Tests over the real NAB corpus, which lives outside the repository
// (shared/datasets/nab beside it, or $NAB_DIR): `make test-accuracy` runs
// them with -tags accuracy; `make test` runs only what a fresh clone has.

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/anomalyd/anomalyd/window/backtest"
)

// nabDir is the NAB v1.1 corpus: shared/ beside the repository (where
// development machines and CI have it), or $NAB_DIR.
var nabDir = func() string {
	if d := os.Getenv("NAB_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "..", "shared", "datasets", "nab")
}()

// needNAB fails (never skips) when the corpus is missing: it is part of the
// checkout's surroundings, not an optional extra.
func needNAB(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nabDir, "labels", "combined_windows.json")); err != nil {
		t.Fatalf("NAB corpus not found at %s (shared/datasets/nab beside the repository, or set NAB_DIR): %v", nabDir, err)
	}
}

// TestRealLabels checks NAB's combined_windows.json against the counts of
// the dataset README: 58 files, 116 windows, and per category:
func TestRealLabels(t *testing.T) {
	needNAB(t)
	labels, err := loadLabels(filepath.Join(nabDir, "labels", "combined_windows.json"))
	if err != nil {
		t.Fatal(err)
	}
	// | category | files | windows | (README.md, "Layout and size")
	want := map[string][2]int{
		"artificialNoAnomaly":   {5, 0},
		"artificialWithAnomaly": {6, 6},
		"realAWSCloudwatch":     {17, 30},
		"realAdExchange":        {6, 14},
		"realKnownCause":        {7, 19},
		"realTraffic":           {7, 14},
		"realTweets":            {10, 33},
	}
	got := map[string][2]int{}
	windows, empty := 0, 0
	for file, ws := range labels {
		cat, _, _ := strings.Cut(file, "/")
		got[cat] = [2]int{got[cat][0] + 1, got[cat][1] + len(ws)}
		windows += len(ws)
		if len(ws) == 0 {
			empty++
		}
	}
	if len(labels) != 58 || windows != 116 || empty != 6 {
		t.Errorf("got %d files, %d windows, %d files without windows; want 58, 116, 6", len(labels), windows, empty)
	}
	for cat, w := range want {
		if got[cat] != w {
			t.Errorf("%s: got %d files %d windows, want %d %d", cat, got[cat][0], got[cat][1], w[0], w[1])
		}
	}
	if len(got) != len(want) {
		t.Errorf("categories: got %v", got)
	}
}

// TestRealCorpusBaselines scores NAB's null and random detectors on the
// real corpus. With seed 42 the random detector's scores are those of
// numenta/NAB results/random, which the dataset README quotes re-scored
// with the exhaustive sweep as 17.66 / 7.48 / 27.57.
func TestRealCorpusBaselines(t *testing.T) {
	needNAB(t)
	rep, err := score(filepath.Join(nabDir, "data"), filepath.Join(nabDir, "labels", "combined_windows.json"),
		[]detectorSpec{{name: "null", baseline: "null"}, {name: "random", baseline: "random"}}, nil, 42)
	if err != nil {
		t.Fatal(err)
	}
	ci := rep.Corpus
	if ci.Files != 58 || ci.Rows != 365558 || ci.Windows != 116 || ci.ScorableWindows != 116 || ci.ProbationRows != 32716 {
		t.Errorf("corpus: got %+v", ci)
	}
	want := map[string][3]string{
		"null":   {"0.00", "0.00", "0.00"},
		"random": {"17.66", "7.48", "27.57"},
	}
	for _, d := range rep.Detectors {
		for k, p := range d.Profiles {
			if got := fmt.Sprintf("%.2f", p.Normalised); got != want[d.Name][k] {
				t.Errorf("%s %s: got %s (raw %v, threshold %v), want %s", d.Name, p.Profile, got, p.Raw, p.Threshold, want[d.Name][k])
			}
			if p.Null != -116*Profiles[k].FN || p.Perfect != 116 {
				t.Errorf("%s %s: null %v perfect %v", d.Name, p.Profile, p.Null, p.Perfect)
			}
		}
	}
}

// TestScoreboardMatchesREADME checks publishedScoreboard against the table
// of the dataset README.
func TestScoreboardMatchesREADME(t *testing.T) {
	needNAB(t)
	fh, err := os.Open(filepath.Join(nabDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var got []Published
	in := false
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Published scoreboard"
		case in && strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| detector") && !strings.HasPrefix(line, "| ---"):
			cells := strings.Split(strings.Trim(line, "| "), " | ")
			if len(cells) != 4 {
				t.Fatalf("README row %q: want 4 cells", line)
			}
			p := Published{Detector: cells[0]}
			for k := range 3 {
				if p.Scores[k], err = strconv.ParseFloat(cells[k+1], 64); err != nil {
					t.Fatalf("README row %q: %v", line, err)
				}
			}
			got = append(got, p)
		}
	}
	if len(got) != len(publishedScoreboard) {
		t.Fatalf("README has %d rows, publishedScoreboard %d", len(got), len(publishedScoreboard))
	}
	for k, p := range got {
		if q := publishedScoreboard[k]; p.Detector != q.Detector || p.Scores != q.Scores {
			t.Errorf("row %d: README %v %v, publishedScoreboard %v %v", k, p.Detector, p.Scores, q.Detector, q.Scores)
		}
	}
}

// TestAccuracyNABCombined backtests the default detectors (combined) over
// the NAB corpus with the server's own code and scores the result: a
// change that costs NAB points on any profile fails here. The floors are
// the figures `make bench-nab` gives for this tree (docs/accuracy.md);
// raise them when the score rises.
func TestAccuracyNABCombined(t *testing.T) {
	needNAB(t)
	data, labels := filepath.Join(nabDir, "data"), filepath.Join(nabDir, "labels", "combined_windows.json")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := backtest.Main([]string{"--input", data, "--output", out, "--detector", "combined"}, &stdout, &stderr); code != 0 {
		t.Fatalf("backtest: exit %d: %s", code, stderr.String())
	}
	rep, err := score(data, labels, []detectorSpec{{name: "combined", dir: out}}, nil, 42)
	if err != nil {
		t.Fatal(err)
	}
	floors := [3]float64{65.68, 59.54, 69.65} // standard, reward_low_FP_rate, reward_low_FN_rate
	for k, p := range rep.Detectors[0].Profiles {
		got := math.Round(p.Normalised*100) / 100
		t.Logf("%s: %.2f (%d/%d windows, %d FP rows)", p.Profile, p.Normalised, p.Totals.WindowsDetected, p.Totals.Windows, p.Totals.FPRows)
		if got < floors[k] {
			t.Errorf("%s: NAB %.2f, below %.2f", p.Profile, got, floors[k])
		}
	}
}
