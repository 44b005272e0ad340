package detectors

import "math"

// Floors and the clamp that keep every score finite. A detector's spread σ
// (standard deviation, mean absolute deviation or residual deviation) is
// replaced by
//
//	σ_eff = max(σ, RelFloor·|expected|, AbsFloor)
//
// before it is divided into |v − expected|, so a series that has been
// exactly constant (σ = 0) scores high but finite when it moves, and
// floating-point noise in the last bits of a constant value scores ~0.
const (
	// RelFloor is the smallest spread relative to the expected value:
	// 1e-9 is ~5·10⁶ float64 ulps, far above rounding noise, far below
	// any change an operator would care about.
	RelFloor = 1e-9
	// AbsFloor is the smallest spread of a series whose expected value is
	// 0 (where RelFloor gives 0).
	AbsFloor = 1e-12
	// MaxScore caps every score; NaN and ±Inf intermediate results also
	// become MaxScore.
	MaxScore = 1e6
)

// Result is one detector's verdict on one sample.
type Result struct {
	// Expected is the value the detector predicted for the sample, and
	// [Lower, Upper] its band: Expected ± K·σ_eff. During warm-up they
	// hold the detector's current estimate if it has one, else 0. Always
	// finite (clamped to ±math.MaxFloat64).
	Expected, Lower, Upper float64
	// Score is normalised: 0 = as expected, 1 = on the band edge, > 1
	// anomalous. Always finite, in [0, MaxScore].
	Score float64
	// Ready is false during warm-up: then Score is 0 and the band is not
	// meaningful.
	Ready bool
}

// Output is the verdict of every detector for one sample.
type Output struct {
	// Combined is a copy of Per[Driver]; see Set.Update for the rule.
	Combined Result
	// Per holds each detector's Result; disabled detectors have a zero Result.
	Per [NumKinds]Result
	// Driver is the detector whose Result became Combined (KindEWMA..KindSlope).
	Driver Kind
}

// sigmaFloor returns σ_eff = max(sd, RelFloor·|expected|, AbsFloor). A NaN
// sd or expected yields a floor, never NaN.
func sigmaFloor(sd, expected float64) float64 {
	if f := RelFloor * math.Abs(expected); !(sd > f) {
		sd = f
	}
	if !(sd > AbsFloor) {
		sd = AbsFloor
	}
	return sd
}

// clampScore maps s into [0, MaxScore]; NaN and +Inf become MaxScore.
// Callers pass s ≥ 0 or NaN.
func clampScore(s float64) float64 {
	if !(s <= MaxScore) {
		return MaxScore
	}
	return s
}

// verdict is the Result of a level detector that expected `expected` with
// spread sd and saw v: band expected ± k·σ_eff, score |v − expected| / (k·σ_eff).
func verdict(v, expected, sd, k float64, ready bool) Result {
	r, h := bandOf(expected, k*sigmaFloor(sd, expected), ready)
	if ready {
		r.Score = clampScore(math.Abs(v-r.Expected) / h)
	}
	return r
}

// bandOf returns a Result with band expected ± h (h > 0) and Score 0, and
// h capped at math.MaxFloat64. The fields are clamped to ±math.MaxFloat64:
// sums of values near the float64 limit overflow to ±Inf, and Inf − Inf
// would make the band NaN.
func bandOf(expected, h float64, ready bool) (Result, float64) {
	e := clampFinite(expected)
	h = min(h, math.MaxFloat64)
	return Result{Expected: e, Lower: clampFinite(e - h), Upper: clampFinite(e + h), Ready: ready}, h
}

// clampFinite clamps x to [−math.MaxFloat64, math.MaxFloat64].
func clampFinite(x float64) float64 {
	switch {
	case x > math.MaxFloat64:
		return math.MaxFloat64
	case x < -math.MaxFloat64:
		return -math.MaxFloat64
	}
	return x
}

// isFinite reports whether x is neither NaN nor ±Inf.
func isFinite(x float64) bool {
	return x-x == 0
}

// f32 converts x to float32, saturating at ±math.MaxFloat32 instead of
// overflowing to ±Inf.
func f32(x float64) float32 {
	switch {
	case x > math.MaxFloat32:
		return math.MaxFloat32
	case x < -math.MaxFloat32:
		return -math.MaxFloat32
	}
	return float32(x)
}

// ready reports whether a detector that has seen n samples before the
// current one is past the warm-up of p.
func ready(n uint32, warmup int) bool {
	return int64(n) >= int64(warmup)
}

// combine fills out.Combined and out.Driver from out.Per:
//
//   - among the Ready level detectors {EWMA, ZScore, HoltWinters} take the
//     one with the median score (of two, the lower; of one, that one);
//   - if Slope is Ready and scores strictly higher, Slope drives instead,
//     so Combined.Score = max(median level score, slope score);
//   - if nothing is Ready, the first enabled detector (in Kind order)
//     drives and Combined is its not-Ready Result with Score 0.
//
// Ties keep the lower Kind. Disabled detectors are never Ready.
func combine(out *Output, p *Params) {
	var ks [3]Kind
	m := 0
	for k := KindEWMA; k <= KindHoltWinters; k++ {
		if !out.Per[k].Ready {
			continue
		}
		// Insertion into ks[:m] sorted by score; equal scores keep Kind order.
		j := m
		for ; j > 0 && out.Per[ks[j-1]].Score > out.Per[k].Score; j-- {
			ks[j] = ks[j-1]
		}
		ks[j] = k
		m++
	}
	drv := KindSlope
	switch m {
	case 1, 2:
		drv = ks[0]
	case 3:
		drv = ks[1]
	}
	if m > 0 && out.Per[KindSlope].Ready && out.Per[KindSlope].Score > out.Per[drv].Score {
		drv = KindSlope
	}
	if m == 0 && !out.Per[KindSlope].Ready {
		drv = firstEnabled(p)
	}
	out.Driver = drv
	out.Combined = out.Per[drv]
}

// firstEnabled returns the first enabled detector in Kind order (KindEWMA
// if none is, which Validate forbids).
func firstEnabled(p *Params) Kind {
	switch {
	case p.EWMA.Enabled:
		return KindEWMA
	case p.ZScore.Enabled:
		return KindZScore
	case p.HoltWinters.Enabled:
		return KindHoltWinters
	case p.Slope.Enabled:
		return KindSlope
	}
	return KindEWMA
}
