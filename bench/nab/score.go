package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Profile is a NAB application profile: what a detected window, a false
// positive and a missed window weigh (config/profiles.json in numenta/NAB).
type Profile struct {
	Name string  `json:"name"`
	TP   float64 `json:"tp_weight"`
	FP   float64 `json:"fp_weight"`
	FN   float64 `json:"fn_weight"`
}

// Profiles are NAB v1.1's three profiles; the first, standard, is the one
// the per-category figures use.
var Profiles = []Profile{
	{Name: "standard", TP: 1, FP: 0.11, FN: 1},
	{Name: "reward_low_FP_rate", TP: 1, FP: 0.22, FN: 1},
	{Name: "reward_low_FN_rate", TP: 1, FP: 0.11, FN: 2},
}

// neverFires is the threshold NAB's sweep starts from (sweeper.py
// calcScoreByThreshold, curThreshold = 1.1): above every valid anomaly
// score, so nothing is detected and every window is missed.
const neverFires = 1.1

// scaledSigmoid is NAB's scoring function of a relative position x
// (Lavin & Ahmad 2015, eq. 1; sweeper.py scaledSigmoid):
//
//	S(x) = 2·sigmoid(−5x) − 1 = tanh(−5x/2)   for x ≤ 3,   −1 for x > 3.
//
// x = −1 is a window's first row (S = 0.98661), x = 0 just past its last
// row (S = 0), x = 0.5 half a window width after it (S = −0.84828).
// The expression is written in the reference's order of operations.
func scaledSigmoid(x float64) float64 {
	if x > 3 {
		return -1
	}
	return 2*(1/(1+math.Exp(5*x))) - 1
}

// maxTP = S(−1): NAB divides in-window values by it so that a detection on
// a window's first row is worth exactly the TP weight.
var maxTP = scaledSigmoid(-1)

// probationRows is how many leading rows of an n-row file NAB does not
// score: min(floor(0.15·n), 0.15·5000) (sweeper.py _getProbationaryLength).
// The float product is the reference's (0.15·20 = 3.0000000000000004 → 3).
func probationRows(n int) int {
	return min(int(math.Floor(0.15*float64(n))), 750)
}

// FileScore is one file scored at one threshold with one profile.
type FileScore struct {
	Score float64 `json:"raw_score"`
	// Row counts over the scored rows, as NAB's *_scores.csv: detections in
	// a window (tp) or outside (fp), rows left undetected in a window (fn)
	// or outside (tn).
	TPRows int `json:"tp_rows"`
	FPRows int `json:"fp_rows"`
	FNRows int `json:"fn_rows"`
	TNRows int `json:"tn_rows"`
	// Windows with at least one scored row, and those detected.
	Windows         int `json:"windows"`
	WindowsDetected int `json:"windows_detected"`
}

// scoreFile scores one file's anomaly scores at threshold: a row is a
// detection if its score is ≥ threshold; a window is worth its earliest
// detection (the largest in-window value) or −FN; each detection outside
// a window adds its false-positive value. Rows in the probationary period
// are ignored, and so is a window that lies wholly inside it.
func scoreFile(f *File, scores []float64, p Profile, threshold float64) FileScore {
	if len(scores) != len(f.Times) {
		panic(fmt.Sprintf("BUG: %s: %d scores for %d rows", f.Name, len(scores), len(f.Times)))
	}
	best := make([]float64, len(f.Windows))
	detected := make([]bool, len(f.Windows))
	scorable := make([]bool, len(f.Windows))
	var fs FileScore
	var fp float64
	for i := f.Probation; i < len(scores); i++ {
		w := f.windowOf[i]
		hit := scores[i] >= threshold
		switch {
		case w >= 0 && hit:
			fs.TPRows++
			v := f.value[i] * p.TP
			if !detected[w] || v > best[w] {
				best[w] = v
			}
			detected[w] = true
		case w >= 0:
			fs.FNRows++
		case hit:
			fs.FPRows++
			fp += f.value[i] * p.FP
		default:
			fs.TNRows++
		}
		if w >= 0 {
			scorable[w] = true
		}
	}
	fs.Score = fp
	for w := range f.Windows {
		if !scorable[w] {
			continue
		}
		fs.Windows++
		if detected[w] {
			fs.WindowsDetected++
			fs.Score += best[w]
		} else {
			fs.Score -= p.FN
		}
	}
	return fs
}

// point is one scorable row of the corpus in the threshold sweep.
type point struct {
	score  float64 // the detector's anomaly score
	value  float64 // File.value: the detection's worth before the profile's weight
	window int32   // corpus-wide window index, or −1 outside windows
}

// sweep holds every scorable row of a corpus, sorted by decreasing anomaly
// score, to find the best threshold in one pass per profile.
type sweep struct {
	points  []point
	windows int32 // corpus-wide window indices are [0, windows)
	// scorable[w]: window w has at least one scored row. NAB only counts
	// (as a miss or a detection) the windows that do.
	scorable []bool
}

func newSweep(c *Corpus, scores [][]float64) *sweep {
	s := &sweep{}
	for k, f := range c.Files {
		base := s.windows
		s.windows += int32(len(f.Windows))
		for i := f.Probation; i < len(f.Times); i++ {
			w := int32(-1)
			if f.windowOf[i] >= 0 {
				w = base + f.windowOf[i]
			}
			s.points = append(s.points, point{score: scores[k][i], value: f.value[i], window: w})
		}
	}
	s.scorable = make([]bool, s.windows)
	for _, pt := range s.points {
		if pt.window >= 0 {
			s.scorable[pt.window] = true
		}
	}
	// Stable, so that the per-profile passes see equal scores in file order
	// (the order does not change any threshold's total).
	slices.SortStableFunc(s.points, func(a, b point) int { return cmp.Compare(b.score, a.score) })
	return s
}

// best returns the threshold with the highest corpus total for profile p and
// that total. It walks NAB's sweep (sweeper.py calcScoreByThreshold): the
// total at the start threshold 1.1 is −FN per scorable window; lowering the
// threshold to each distinct anomaly score in turn makes that score's rows
// detections: a row outside windows adds its FP value, a row in a window
// lifts the window's part to the row's TP value if larger (an earlier
// detection). Ties keep the higher threshold, as NAB's stable sort does.
func (s *sweep) best(p Profile) (threshold, total float64) {
	parts := make([]float64, s.windows)
	var windowSum float64
	for w := range parts {
		if s.scorable[w] {
			parts[w] = -p.FN
			windowSum += parts[w]
		}
	}
	var fp float64
	threshold, total = neverFires, windowSum
	for i := 0; i < len(s.points); {
		cur := s.points[i].score
		changed := false
		for ; i < len(s.points) && s.points[i].score == cur; i++ {
			pt := s.points[i]
			if pt.window < 0 {
				fp += pt.value * p.FP
				continue
			}
			if v := pt.value * p.TP; v > parts[pt.window] {
				parts[pt.window] = v
				changed = true
			}
		}
		if changed {
			// Re-add the parts rather than accumulate differences: no drift
			// over the ~300k thresholds of a continuous detector.
			windowSum = 0
			for _, v := range parts {
				windowSum += v
			}
		}
		if t := fp + windowSum; t > total {
			threshold, total = cur, t
		}
	}
	return threshold, total
}
