package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

const eps = 1e-12

func TestScaledSigmoid(t *testing.T) {
	f := func(x, want float64) {
		t.Helper()
		if got := scaledSigmoid(x); math.Abs(got-want) > eps {
			t.Errorf("scaledSigmoid(%v): got %v, want %v", x, got, want)
		}
	}
	// S(x) = tanh(−5x/2), −1 beyond x = 3 (sweeper.py's docstring values).
	f(-1, 0.9866142981514305)   // a window's first row: tanh(2.5)
	f(-0.5, 0.8482836399575129) // half-way: tanh(1.25)
	f(0, 0)                     // just past a window's last row
	f(0.25, -0.5545997223493824)
	f(0.5, -0.8482836399575129)
	f(1, -0.9866142981514305)
	f(3, -0.9999993881955461) // x = 3 is still on the curve (NAB: x > 3 → −1)
	f(3.0000001, -1)
	f(100, -1)
	if maxTP != scaledSigmoid(-1) {
		t.Errorf("maxTP: got %v", maxTP)
	}
}

func TestProbationRows(t *testing.T) {
	f := func(n, want int) {
		t.Helper()
		if got := probationRows(n); got != want {
			t.Errorf("probationRows(%d): got %d, want %d", n, got, want)
		}
	}
	f(6, 0)      // floor(0.9)
	f(20, 3)     // 0.15·20 = 3.0000000000000004
	f(40, 6)     // 0.15·40 = 6
	f(100, 15)   // 15.000000000000002
	f(1243, 186) // iio_us-east-1_i-a2eb1cd9_NetworkIn.csv
	f(4032, 604) // most NAB files
	f(4999, 749)
	f(5000, 750)
	f(22695, 750) // machine_temperature_system_failure.csv: capped at 0.15 × 5000
}

// oneWindowFile is a 40-row file with a window on rows 20..24 (width 5).
// The first floor(0.15·40) = 6 rows are probationary.
func oneWindowFile(t *testing.T) *File {
	t.Helper()
	return synthFile(t, "cat/one.csv", 40, [][2]int{{20, 24}})
}

// synthFile builds an n-row file, one row a minute from 2020-01-01, with
// windows given as row ranges.
func synthFile(t *testing.T, name string, n int, windows [][2]int) *File {
	t.Helper()
	f := &File{Name: name, Category: "cat"}
	for i := range n {
		f.Times = append(f.Times, 1577836800+60*int64(i))
		f.Stamps = append(f.Stamps, stamp(i))
		f.Values = append(f.Values, float64(i))
	}
	var ws [][2]string
	for _, w := range windows {
		ws = append(ws, [2]string{stamp(w[0]) + ".000000", stamp(w[1]) + ".000000"})
	}
	if err := f.resolveWindows(ws); err != nil {
		t.Fatal(err)
	}
	f.prepare()
	return f
}

func stamp(i int) string {
	return fmt.Sprintf("2020-01-01 %02d:%02d:00", i/60, i%60)
}

// detections returns n anomaly scores, 1 on the given rows and 0 elsewhere.
func detections(n int, rows ...int) []float64 {
	s := make([]float64, n)
	for _, i := range rows {
		s[i] = 1
	}
	return s
}

func TestScoreFileOneWindow(t *testing.T) {
	file := oneWindowFile(t)
	std := Profiles[0]
	f := func(name string, rows []int, want float64) {
		t.Helper()
		got := scoreFile(file, detections(40, rows...), std, 0.5)
		if math.Abs(got.Score-want) > eps {
			t.Errorf("%s, detections on rows %v: got raw %v, want %v", name, rows, got.Score, want)
		}
	}
	// Window rows 20..24: width 5, so a detection on row i is at position
	// −(24 − i + 1)/5 and worth S(position)/S(−1) × TP.
	f("nothing", nil, -1)                             // the missed window: −FN
	f("window start", []int{20}, 1)                   // S(−1)/S(−1) = 1 exactly
	f("window middle", []int{22}, 0.9174286804284079) // S(−0.6)/S(−1) = tanh(1.5)/tanh(2.5)
	f("window end", []int{24}, 0.46838684390227814)   // S(−0.2)/S(−1) = tanh(0.5)/tanh(2.5)
	// Only the first detection in a window counts: 1, not 1 + 0.468.
	f("start and end", []int{20, 24}, 1)
	f("middle, then start", []int{22, 23, 20}, 1)
	// After the window, a false positive costs FP × S(|i − 24|/(5 − 1)), and
	// the window is missed (−1):
	f("1 row after", []int{25}, -1.061005969458432)   // −1 + 0.11·S(0.25) = −1 − 0.11·0.5545997
	f("2 rows after", []int{26}, -1.0933112003953265) // −1 + 0.11·S(0.5) = −1 − 0.11·0.8482836
	f("12 rows after", []int{36}, -1.10999993270151)  // position 3: −1 + 0.11·S(3) = −1 − 0.11·0.99999939
	f("13 rows after", []int{37}, -1.11)              // position 3.25 > 3: −1 − 0.11
	// Before the file's first window, a false positive costs the whole FP weight.
	f("before the window", []int{10}, -1.11)
	f("first scored row", []int{6}, -1.11)
	// The probationary rows 0..5 are not scored.
	f("probationary", []int{3}, -1)
	f("last probationary row", []int{5}, -1)
	// Detected window plus a false positive after it: 1 − 0.11·0.8482836.
	f("start and 2 rows after", []int{20, 26}, 0.9066887996046735)
}

func TestScoreFileCounts(t *testing.T) {
	file := oneWindowFile(t)
	got := scoreFile(file, detections(40, 3, 10, 21, 22, 26), Profiles[0], 0.5)
	// Row 3 is probationary. Row 21 is the window's first detection
	// (position −0.8: S(−0.8)/S(−1) = tanh(2)/tanh(2.5) = 0.9771068), row 22
	// a later one; row 10 an FP before the window (−0.11), row 26 one 2 rows
	// after it (0.11·S(0.5) = −0.0933112). 34 rows are scored, 5 of them in
	// the window.
	want := FileScore{
		Score:  0.7737956405272781, // 0.9771068 − 0.11 − 0.0933112
		TPRows: 2, FPRows: 2, FNRows: 3, TNRows: 34 - 5 - 2,
		Windows: 1, WindowsDetected: 1,
	}
	if math.Abs(got.Score-want.Score) > eps {
		t.Errorf("score: got %v, want %v", got.Score, want.Score)
	}
	got.Score = want.Score
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestMissedWindowCostsFN(t *testing.T) {
	file := oneWindowFile(t)
	for _, p := range Profiles {
		got := scoreFile(file, detections(40), p, 0.5)
		if got.Score != -p.FN || got.Windows != 1 || got.WindowsDetected != 0 {
			t.Errorf("%s: got %+v, want raw −%v and 0/1 windows", p.Name, got, p.FN)
		}
	}
}

func TestProfilesDiffer(t *testing.T) {
	file := oneWindowFile(t)
	f := func(rows []int, want []float64) {
		t.Helper()
		for k, p := range Profiles {
			got := scoreFile(file, detections(40, rows...), p, 0.5).Score
			if math.Abs(got-want[k]) > eps {
				t.Errorf("rows %v, %s: got %v, want %v", rows, p.Name, got, want[k])
			}
		}
	}
	// Window middle (0.9174287) and a false positive 2 rows after (S(0.5) = −0.8482836):
	// the FP costs twice as much with reward_low_FP_rate.
	f([]int{22, 26}, []float64{
		0.8241174800330815, // 0.9174287 − 0.11·0.8482836
		0.730806279637755,  // 0.9174287 − 0.22·0.8482836
		0.8241174800330815, // as standard: nothing was missed
	})
	// Window missed and the same false positive: the miss costs twice as
	// much with reward_low_FN_rate.
	f([]int{26}, []float64{-1.0933112003953265, -1.186622400790653, -2.0933112003953265})
}

// corpusOf wraps files in a corpus.
func corpusOf(files ...*File) *Corpus {
	c := &Corpus{Files: files}
	for _, f := range files {
		c.Windows += len(f.Windows)
	}
	return c
}

func TestSweepPicksBestThreshold(t *testing.T) {
	file := oneWindowFile(t)
	scores := make([]float64, 40)
	scores[10] = 0.9 // before the window: an FP at any threshold ≤ 0.9
	scores[20] = 0.7 // the window's first row
	scores[30] = 0.5 // after the window
	for i := range scores {
		if scores[i] == 0 {
			scores[i] = 0.1
		}
	}
	// Thresholds and totals (standard):
	//   1.1: −1 (window missed)
	//   0.9: −1 − 0.11 = −1.11
	//   0.7: +1 − 0.11 = 0.89          ← best
	//   0.5: 0.89 + 0.11·S(6/4) = 0.89 − 0.11·0.9988944 = 0.7801216
	//   0.1: every row fires, 28 more FPs
	threshold, raw := newSweep(corpusOf(file), [][]float64{scores}).best(Profiles[0])
	if threshold != 0.7 || math.Abs(raw-0.89) > eps {
		t.Errorf("got threshold %v raw %v, want 0.7 and 0.89", threshold, raw)
	}
	if got := scoreFile(file, scores, Profiles[0], 0.5).Score; math.Abs(got-0.7801216113001233) > eps {
		t.Errorf("at 0.5: got %v", got)
	}
}

func TestSweepTieKeepsHigherThreshold(t *testing.T) {
	file := oneWindowFile(t)
	scores := make([]float64, 40)
	scores[20] = 0.8 // window start: +1
	scores[21] = 0.6 // later in the window: changes nothing
	// 0.8 and 0.6 both give 1; NAB's stable sort by score keeps the first
	// (higher) threshold.
	threshold, raw := newSweep(corpusOf(file), [][]float64{scores}).best(Profiles[0])
	if threshold != 0.8 || raw != 1 {
		t.Errorf("got threshold %v raw %v, want 0.8 and 1", threshold, raw)
	}
}

func TestSweepNeverFires(t *testing.T) {
	file := oneWindowFile(t)
	scores := make([]float64, 40)
	scores[10] = 1 // only a false positive: best not to fire at all
	threshold, raw := newSweep(corpusOf(file), [][]float64{scores}).best(Profiles[0])
	if threshold != neverFires || raw != -1 {
		t.Errorf("got threshold %v raw %v, want 1.1 and −1", threshold, raw)
	}
}

func TestSweepIsCorpusWide(t *testing.T) {
	a := synthFile(t, "cat/a.csv", 40, [][2]int{{20, 24}})
	b := synthFile(t, "cat/b.csv", 40, [][2]int{{20, 24}})
	sa, sb := make([]float64, 40), make([]float64, 40)
	sa[20], sa[10] = 0.8, 0.6 // a: window start at 0.8, an FP at 0.6
	sb[20] = 0.6              // b: window start at 0.6
	// Alone, a is best at 0.8 (+1) and b at 0.6 (+1). Together:
	//   0.8: a +1, b −1 = 0
	//   0.6: a +1 − 0.11, b +1 = 1.89   ← one threshold for both files
	threshold, raw := newSweep(corpusOf(a, b), [][]float64{sa, sb}).best(Profiles[0])
	if threshold != 0.6 || math.Abs(raw-1.89) > eps {
		t.Errorf("got threshold %v raw %v, want 0.6 and 1.89", threshold, raw)
	}
}

// TestSweepMatchesBruteForce checks the one-pass sweep against scoring every
// file at every candidate threshold.
func TestSweepMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		var files []*File
		var scores [][]float64
		for k := range 3 {
			n := 60 + r.IntN(60)
			var ws [][2]int
			for start := 10 + r.IntN(10); start+6 < n; start += 12 + r.IntN(20) {
				ws = append(ws, [2]int{start, start + 2 + r.IntN(5)})
			}
			files = append(files, synthFile(t, fmt.Sprintf("cat/%d.csv", k), n, ws))
			s := make([]float64, n)
			for i := range s {
				s[i] = float64(r.IntN(20)) / 19 // ties on purpose
			}
			scores = append(scores, s)
		}
		c := corpusOf(files...)
		sw := newSweep(c, scores)
		for _, p := range Profiles {
			candidates := []float64{neverFires}
			for _, s := range scores {
				candidates = append(candidates, s...)
			}
			slices.Sort(candidates)
			candidates = slices.Compact(candidates)
			slices.Reverse(candidates)
			bestT, bestRaw := 0.0, math.Inf(-1)
			for _, th := range candidates {
				var total float64
				for k, f := range files {
					total += scoreFile(f, scores[k], p, th).Score
				}
				if total > bestRaw+1e-9 {
					bestT, bestRaw = th, total
				}
			}
			th, raw := sw.best(p)
			if th != bestT || math.Abs(raw-bestRaw) > 1e-9 {
				t.Errorf("trial %d %s: sweep got threshold %v raw %v, brute force %v and %v", trial, p.Name, th, raw, bestT, bestRaw)
			}
		}
	}
}

func TestNormalisation(t *testing.T) {
	a := synthFile(t, "cat/a.csv", 40, [][2]int{{20, 24}})
	b := synthFile(t, "cat/b.csv", 100, [][2]int{{30, 39}, {70, 79}})
	none := synthFile(t, "cat/none.csv", 30, nil)
	c := corpusOf(a, b, none)
	null := nullRaw(c)
	for k, p := range Profiles {
		if want := -3 * p.FN; null[k] != want {
			t.Errorf("%s: null raw %v, want %v", p.Name, null[k], want)
		}
	}
	f := func(name string, scores [][]float64, want float64) {
		t.Helper()
		d := evaluate(c, name, "test", scores, null)
		for _, pr := range d.Profiles {
			if math.Abs(pr.Normalised-want) > 1e-9 {
				t.Errorf("%s %s: normalised %v, want %v (raw %v, null %v, perfect %v)", name, pr.Profile, pr.Normalised, want, pr.Raw, pr.Null, pr.Perfect)
			}
		}
	}
	nullScores, _ := baselineScores("null", c, 0)
	f("null", nullScores, 0)
	// Perfect: fires on the first row of every window and nowhere else.
	f("perfect", [][]float64{detections(40, 20), detections(100, 30, 70), detections(30)}, 100)
	// Zero everywhere is another never-firing detector.
	f("zeros", [][]float64{detections(40), detections(100), detections(30)}, 0)
	// Two of the three windows at their start, no FP: raw 1 + 1 − FN;
	// standard and low FP: 100·(1 − (−3))/(3 − (−3)) = 66.67;
	// low FN: 100·(0 − (−6))/(3 − (−6)) = 66.67.
	f("two of three", [][]float64{detections(40, 20), detections(100, 30), detections(30)}, 200.0/3)
}
