package detectors

import (
	"math"
	"testing"
)

func TestEWMAHandComputed(t *testing.T) {
	p := smallParams() // alpha 0.5, K 2, Warmup 2
	var d EWMA
	d.Init(&p)
	f := func(i int, v float64, want Result) {
		t.Helper()
		checkResult(t, i, d.Update(int64(i)*1000, v), want)
	}
	// 1: no estimate yet. w = max(0.5, 1/1) = 1: mean = 2, var = 0·(…) = 0.
	f(1, 2, Result{})
	// σ is floored at the slow mean absolute error mae (weight
	// max(SlowAlpha, 1/k) for the k-th error, winsorised at the band once
	// Ready); the calibration needs CalibWarmup samples, so it is not used.
	// 2: expected 2, σ = mae = 0 → σ_eff = max(0, 1e-9·2, 1e-12) = 2e-9, band 2 ± 4e-9;
	// one sample seen < Warmup 2: not ready.
	// w = max(0.5, 1/2) = 0.5: diff = 2, incr = 1, mean = 3, var = 0.5·(0 + 2·1) = 1;
	// mae = 2 (first error, not winsorised before Ready).
	f(2, 4, band(2, 4e-9, 0, false))
	// 3: expected 3, σ = max(1, mae 2) = 2, band 3 ± 4, score |6−3|/4 = 0.75.
	// diff = 3, incr = 1.5, mean = 4.5, var = 0.5·(1 + 3·1.5) = 2.75; mae = 2 + ½(3 − 2) = 2.5.
	f(3, 6, band(3, 4, 0.75, true))
	// 4: v = expected: score 0, σ = max(√2.75, 2.5) = 2.5. diff = 0: mean 4.5,
	// var = 0.5·2.75 = 1.375, mae = 2.5 + ⅓(0 − 2.5) = 5/3.
	f(4, 4.5, band(4.5, 5, 0, true))
	// 5: σ = max(√1.375, 5/3) = 5/3, score |2 − 4.5| / (2·5/3) = 0.75.
	f(5, 2, band(4.5, 10.0/3, 0.75, true))

	// Reset starts over: the first sample has no estimate again.
	d.Reset()
	f(1, 7, Result{})
	f(2, 7, band(7, 7e-9*2, 0, false))
}

// The 1/k start: with alpha 0.1 the first ten samples give the plain mean
// and population variance.
func TestEWMAStartIsCumulative(t *testing.T) {
	p := DefaultParams() // alpha 0.1
	var d EWMA
	d.Init(&p)
	vs := []float64{3, 1, 4, 1, 5, 9, 2, 6, 5, 3}
	for i, v := range vs {
		d.Update(int64(i), v)
	}
	var sum, sq float64
	for _, v := range vs {
		sum += v
	}
	mean := sum / 10
	for _, v := range vs {
		sq += (v - mean) * (v - mean)
	}
	if !closeTo(d.s.mean, mean, 1e-14) || !closeTo(d.s.variance, sq/10, 1e-14) {
		t.Fatalf("got mean %g var %g, want %g %g", d.s.mean, d.s.variance, mean, sq/10)
	}
	// From k = 11 on the weight is alpha: mean moves by 0.1·diff.
	d.Update(10, mean+10)
	if !closeTo(d.s.mean, mean+1, 1e-14) {
		t.Fatalf("got mean %g after an alpha step, want %g", d.s.mean, mean+1)
	}
}

// A value near math.MaxFloat64 after its negative overflows the variance;
// the state restarts from the sample instead of staying Inf or NaN.
func TestEWMAOverflowRestarts(t *testing.T) {
	p := smallParams()
	var d EWMA
	d.Init(&p)
	for i, v := range []float64{-math.MaxFloat64, math.MaxFloat64, math.MaxFloat64, 1, 2} {
		r := d.Update(int64(i), v)
		if !(r.Score >= 0 && r.Score <= MaxScore) {
			t.Fatalf("sample %d: score %g", i, r.Score)
		}
		if !isFinite(d.s.mean) || !isFinite(d.s.variance) {
			t.Fatalf("sample %d: state mean %g var %g", i, d.s.mean, d.s.variance)
		}
	}
}
