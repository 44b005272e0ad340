package detectors

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// smallParams returns valid Params for hand-computed tests: Window 3,
// Warmup 2, every K 2, alpha 0.5 and no season.
func smallParams() Params {
	return Params{
		Window: 3,
		Warmup: 2,
		EWMA:   EWMAParams{Enabled: true, Alpha: 0.5, K: 2},
		ZScore: ZScoreParams{Enabled: true, K: 2},
		HoltWinters: HoltWintersParams{
			Enabled: true, Alpha: 0.5, Beta: 0.5, Gamma: 0.5, SeasonBuckets: 1, K: 2,
		},
		Slope: SlopeParams{Enabled: true, K: 2},
	}
}

// closeTo reports whether got is within tol of want, relative to
// max(1, |want|).
func closeTo(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// checkResult compares r with want: Ready exactly, the floats to 1e-12.
func checkResult(t *testing.T, i int, r, want Result) {
	t.Helper()
	if r.Ready != want.Ready ||
		!closeTo(r.Expected, want.Expected, 1e-12) || !closeTo(r.Lower, want.Lower, 1e-12) ||
		!closeTo(r.Upper, want.Upper, 1e-12) || !closeTo(r.Score, want.Score, 1e-12) {
		t.Fatalf("sample %d: got %+v, want %+v", i, r, want)
	}
}

// band returns the Result for expected e, half-width h, score s.
func band(e, h, s float64, ready bool) Result {
	return Result{Expected: e, Lower: e - h, Upper: e + h, Score: s, Ready: ready}
}

// series is a test input: timestamps in ms and values.
type series struct {
	t []int64
	v []float64
}

// regular returns n samples every step starting at t0, with values f(i).
func regular(n int, t0 int64, step time.Duration, f func(i int) float64) series {
	s := series{t: make([]int64, n), v: make([]float64, n)}
	for i := range n {
		s.t[i] = t0 + int64(i)*step.Milliseconds()
		s.v[i] = f(i)
	}
	return s
}

// noise returns a deterministic generator of uniform noise in [-a, a].
func noise(seed uint64, a float64) func() float64 {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 { return a * (2*r.Float64() - 1) }
}

// runSet feeds s to a fresh Set with p and returns every Output.
func runSet(p *Params, s series) []Output {
	var set Set
	set.Init(p)
	out := make([]Output, len(s.t))
	for i := range s.t {
		out[i] = set.Update(p, s.t[i], s.v[i])
	}
	return out
}

// day is one day in ms.
const day = int64(24 * time.Hour / time.Millisecond)
