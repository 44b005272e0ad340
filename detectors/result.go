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
	// Combined is a copy of Per[Driver], except that its Score is raised
	// to 1 while a run beyond the level band is held; see Set.Update for
	// the rule.
	Combined Result
	// Per holds each detector's Result; disabled detectors have a zero Result.
	Per [NumKinds]Result
	// Driver is the detector whose Result became Combined (KindEWMA..KindEntropy).
	Driver Kind
	// Record is 1 + e when the sample lies beyond every value the series
	// took before it, e the excess as a multiple of that range's width (0
	// when the range had no width), and 0 within it; set while the regime
	// detector (Entropy) is enabled and Ready.
	Record float64
	// Age is the number of samples the series had before this one
	// (saturating).
	Age uint32
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

// driver is the detector whose Result becomes out.Combined, chosen from
// the scores and Ready flags of out.Per:
//
//   - among the Ready level detectors {EWMA, ZScore, HoltWinters} take the
//     one with the lowest score: a level alarm needs all of them to agree;
//   - if Slope is Ready, slopeOut (its raw score, before calibration, is
//     above 1) and it scores strictly higher, Slope drives instead, so
//     Combined.Score = max(lowest level score, slope score): a drift must
//     be both beyond the slope's own band and unusual for the series;
//   - if Entropy is Ready and scores strictly higher than that, it drives:
//     a window unlike every regime the series has shown is an alarm on its
//     own, whatever the level detectors say;
//   - if nothing is Ready, the first enabled detector (in Kind order)
//     drives and Combined is its not-Ready Result with Score 0.
//
// Ties keep the lower Kind. Disabled detectors are never Ready.
func driver(out *Output, p *Params, slopeOut bool) Kind {
	drv, lvl := levelVote(out)
	if lvl && slopeOut && out.Per[KindSlope].Ready && out.Per[KindSlope].Score > out.Per[drv].Score {
		drv = KindSlope
	}
	any := lvl || out.Per[KindSlope].Ready
	if e := &out.Per[KindEntropy]; e.Ready && (!any || e.Score > out.Per[drv].Score) {
		drv, any = KindEntropy, true
	}
	if !any {
		drv = firstEnabled(p)
	}
	return drv
}

// levelVote returns the Ready level detector {EWMA, ZScore, HoltWinters}
// with the lowest score (ties keep the lower Kind) and true, or KindSlope
// and false if none is Ready.
func levelVote(out *Output) (Kind, bool) {
	drv, ok := KindSlope, false
	for k := KindEWMA; k <= KindHoltWinters; k++ {
		// Strictly lower: equal scores keep Kind order.
		if out.Per[k].Ready && (!ok || out.Per[k].Score < out.Per[drv].Score) {
			drv, ok = k, true
		}
	}
	return drv, ok
}

// HoldMax is the most samples after its first that a run beyond the level
// band holds Combined.Score at 1 (see Set.Update): about 1/ewma.alpha, the
// samples the EWMA and Holt-Winters take to learn a new level, so a
// lasting shift is held no longer than the detectors take to learn it,
// and a slow ramp that stays ahead of a lagging mean is not held for
// hours (the slope detector is there for drifts).
const HoldMax = 10

// holdRun keeps Combined.Score at 1 or more while a run beyond the level
// band lasts (see Set.Update), v being the sample. run is the band's
// half-width at the run's start, positive for a run above it, negative
// below, 0 outside a run, and k how many samples it has held; holdRun
// returns their new values.
//
// A run starts at a sample that every Ready level detector puts beyond its
// band (the level vote scores ≥ 1) and goes on, for at most HoldMax more
// samples, while each next sample lies on the same side, farther from the
// level vote's Expected than |run|.
//
// The detectors learn the run's samples as they learn any other: a lasting
// shift must become their new normal, and their spread takes the first
// sample of a run in at once (the EWMA's variance grows by α(1−α)·error²),
// so after one sample of a plateau far outside the band every band has
// widened to cover it and the lowest-score vote alone would call the
// second sample normal. The run's samples are still outside the band they
// left, and the score says so: at least 1, the band edge, not an alarm
// level (the first sample has raised the alarm), so a rule on score ≥ 1
// sees the whole plateau while an alert at 2 fires once. The run ends when
// the level vote's Expected has come within |run| of the samples (a
// lasting shift, once the detectors have learnt it), when a sample returns
// to the band's side (a spike is a run of one) or after HoldMax samples.
func holdRun(out *Output, run float32, k uint8, v float64) (float32, uint8) {
	drv, ok := levelVote(out)
	if !ok {
		return 0, 0
	}
	r := &out.Per[drv]
	d := v - r.Expected
	if run != 0 && k < HoldMax && d*float64(run) > 0 && math.Abs(d) > math.Abs(float64(run)) {
		if c := &out.Combined; c.Score < 1 {
			// The band shown is the one the run is beyond: as wide as
			// when it began, around the level vote's expected value, so
			// the value lies outside the band its score puts it outside.
			h := math.Abs(float64(run))
			c.Score, c.Expected, c.Lower, c.Upper = 1, r.Expected, clampFinite(r.Expected-h), clampFinite(r.Expected+h)
		}
		return run, k + 1
	}
	if r.Score >= 1 {
		return f32(math.Copysign((r.Upper-r.Lower)/2, d)), 0
	}
	return 0, 0
}

// firstEnabled returns the first enabled detector in Kind order (KindEWMA
// if none is, which Validate forbids).
func firstEnabled(p *Params) Kind {
	for k := range NumKinds {
		if p.Enabled(k) {
			return k
		}
	}
	return KindEWMA
}

// SlowAlpha is the weight of the newest absolute error in the slow mean
// absolute error that floors the EWMA's and the ZScore's σ: a memory of
// ~100 samples, ten times the EWMA's, so a quiet (or constant, or
// quantised) stretch of a few samples cannot shrink a band below the noise
// the series usually has, while a lasting change of the noise is learnt
// within a few hundred samples.
const SlowAlpha = 0.01

// slowMAD returns the slow mean absolute error m updated with the
// absolute error ae, winsorised at lim (the band half-width once Ready,
// +Inf before) so that one spike cannot hold the floor up for hours; k ≥ 1
// is the number of errors seen including this one, so the first ~100 give
// a plain mean (the 1/k start of the EWMA).
func slowMAD(m, ae, lim float64, k uint32) float64 {
	return m + max(SlowAlpha, 1/float64(k))*(min(ae, lim)-m)
}

// Calibration: an anomaly likelihood in the spirit of Ahmad et al. (2017,
// "Unsupervised real-time anomaly detection for streaming data", §3.3,
// HTM's anomaly likelihood), O(1) in 12 bytes a detector. Each detector's
// raw score z (distance / band half-width) is judged against the recent
// distribution of that detector's own raw scores on this series. With
// g = ln(1 + z), and m, s² the exponentially weighted mean and variance of
// g over the last ~1/CalibAlpha Ready samples,
//
//	score = max(0, (g − m) / (K·max(s, CalibMinSpread)))
//
// so a series whose errors are routinely large for its model (bursty,
// quantised, heavy-tailed) needs a larger error to score 1 than one whose
// errors are always small, and scores become comparable across series.
// The band is rescaled to match: score 1 lies at g = m + K·s, i.e. at
// expm1(m + K·s) raw half-widths from Expected. The logarithm keeps one
// huge raw score (e.g. a constant series that moves: z up to MaxScore)
// from dominating m and s² for good. Every raw score, anomalous or not, is
// learnt: a burst that recurs becomes normal, and an incident alarms once,
// not on every one of its samples as it would if its scores were
// winsorised before they are learnt. Until CalibWarmup raw scores have
// been seen the Result is not Ready (score 0, the raw band), and m and s²
// are their plain mean and variance; from then on each new raw score
// weighs CalibAlpha.
const (
	// CalibAlpha is the weight of the newest raw score in m and s²: a
	// memory of ~1000 samples (4 h at 15 s, 3.5 days at 5 min), long
	// enough to hold many ordinary bursts.
	CalibAlpha = 0.001
	// CalibMinSpread floors s: ln(1 + z) is taken to spread by at least
	// 0.05, so a series whose raw scores have all been 0 (a constant)
	// scores 1 at z = expm1(K·0.05) ≈ 0.28 (K = 5), not at rounding noise.
	CalibMinSpread = 0.05
	// CalibWarmup is how many Ready raw scores the calibration needs
	// before it is used: the spread of ln(1 + z) from 100 samples is
	// within ~7% (1/√(2n)); before that the detector is not Ready. They
	// seed m and s² as a plain mean and variance.
	CalibWarmup = 100
)

// numCalibrated is the number of detectors whose scores are calibrated:
// every Kind before KindEntropy (whose χ² score is already comparable
// across series).
const numCalibrated = KindEntropy

// calib is one detector's calibration state: the weighted mean and
// variance of ln(1 + raw score), float32 (they are O(1) numbers), and how
// many Ready raw scores they cover (saturating).
type calib struct {
	m, q float32
	n    uint32
}

// apply replaces r's raw score by the calibrated one (once CalibWarmup
// raw scores have been seen), then includes the raw score in c. It
// returns x for calibrateBand, which widens the band to the calibrated
// one, or NaN if the band stays as it is. A Result that is not Ready, or
// a disabled calibration, passes unchanged.
func (c *calib) apply(r *Result, p *CalibrationParams) (x float64) {
	x = math.NaN()
	if !p.Enabled || !r.Ready {
		return x
	}
	g := math.Log1p(r.Score)
	m, q := float64(c.m), float64(c.q)
	if c.n >= CalibWarmup {
		sd := max(math.Sqrt(q), CalibMinSpread)
		x = m + p.K*sd
		r.Score = clampScore(max(0, (g-m)/(p.K*sd)))
	}
	// Exponentially weighted mean and variance (Finch 2009): a plain mean
	// and variance over the first CalibWarmup raw scores, then weight
	// CalibAlpha (not max(CalibAlpha, 1/k): a weight of ~1/n right after
	// warm-up would learn an incident as normal within a few samples).
	a := CalibAlpha
	if c.n < CalibWarmup {
		a = 1 / (float64(c.n) + 1)
	}
	d := g - m
	m += a * d
	q = (1 - a) * (q + a*d*d)
	warm := c.n < CalibWarmup
	c.m, c.q, c.n = f32(m), f32(q), inc(c.n)
	if warm {
		// A raw score means nothing on a series whose scores are not
		// known yet (on a bursty one z > 1 every hour): the detector is
		// not Ready until its calibration is.
		r.Score, r.Ready = 0, false
	}
	return x
}

// calibrateBand widens r's raw band to the calibrated one: the raw score
// z at which the calibrated score is 1 is expm1(x), x from apply, so the
// half-width h of the band where the raw score is 1 becomes h·expm1(x).
// A NaN x leaves the band.
func calibrateBand(r *Result, x float64) {
	if x != x { // NaN
		return
	}
	h := (r.Upper - r.Lower) / 2 * math.Expm1(x)
	r.Lower, r.Upper = clampFinite(r.Expected-h), clampFinite(r.Expected+h)
}
