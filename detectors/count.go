package detectors

import (
	"fmt"
	"math"

	"github.com/anomalyd/anomalyd/detectors/statecodec"
)

// CountShift tests the increments of a series that counts events (a
// counter whose increments are whole numbers: requests, errors, forks) for
// a sustained change of their rate, with a two-sided Poisson CUSUM (Page
// 1954; Lucas 1985, "Counted data CUSUM's"). A count of a few events a
// scrape carries little evidence in one sample: a request rate falling
// from 15 to 4 a second is under 3 standard deviations in each sample and
// scored as noise, but beyond doubt after three. The CUSUM sums each
// increment's log-likelihood ratio of a shifted rate against the baseline,
// so the evidence of consecutive samples adds up while noise drifts back to
// 0.
//
// The baseline is the series' own rate, a decayed mean over about
// 1/countAlpha increments. The test is quasi-Poisson: each ratio is divided
// by the series' dispersion (variance over mean of its increments, at
// least 1, learnt from the increments that are not evidence of a shift),
// and a series whose increments vary more than countMaxDispersion times as
// much as independent events do (batches, bursts) is not tested, since its
// counts are not the evidence a Poisson model says. Nor is one that has not
// counted countDispersionPrior events in its memory: a counter of batches
// whose first batch comes after the warm-up shows what it is only then.
//
// The zero CountShift is ready to use. It is pure state, updated by one
// goroutine.
type CountShift struct {
	// events and exposure are the decayed sums (weight 1−countAlpha an
	// increment) of increments and of their seconds: the baseline rate is
	// (events+1)/exposure, one event per memory as a prior, so that a
	// series that has counted nothing is not certain it never will.
	events, exposure float64
	// dev2 and expect are the decayed sums of (d−λ)² and of λ: the
	// dispersion is their ratio (see dispersion).
	dev2, expect float64
	fast         float64 // rate's fast mean: the new baseline once a shift has held
	up, down     float64 // the CUSUM statistics (nats) for a rise and for a fall
	n            uint32  // increments learnt, saturating
	held         uint32  // consecutive increments at or above countDecision
}

const (
	// countAlpha weighs the newest increment in the baseline and the
	// dispersion: a memory of ~512 increments, so that a fault of a minute
	// at a 1 s scrape moves the baseline by about a tenth of its size.
	countAlpha = 1.0 / 512
	// countFastAlpha weighs it in the fast mean, a memory of ~8 increments.
	countFastAlpha = 1.0 / 8
	// countWarmup is how many increments the test learns before it
	// judges: the dispersion needs about 30 to be estimated.
	countWarmup = 30
	// countSigmas sets the shift the test is tuned to: the rate moving by
	// three standard deviations of one increment (λ ± 3√(φλ)), down to at
	// most an eighth of it.
	countSigmas = 3
	// countMaxDispersion: a count varying more than twice as much as
	// independent events do is not tested.
	countMaxDispersion = 2
	// countDispersionPrior is the weight, in expected events, of the prior
	// that a count varies as independent events do (dispersion 1), and the
	// events a series must have counted in its memory to be judged: a
	// series cannot show its dispersion before it has counted some ten
	// events.
	countDispersionPrior = 10
	// countDecision is the CUSUM level (nats) at which a shift is called:
	// a Poisson count crosses it by chance about once in e¹⁶/2 ≈ 4·10⁶
	// increments (Wald's bound), some 50 days at a 1 s scrape.
	countDecision = 16
)

// InitConstant puts c in the state that n increments at the constant rate
// (events per second) leave it in, at n evenly spaced times from t0 to t1,
// the first increment measured from one interval before t0: the count test
// of a counter that counted at one rate since its detectors started, rebuilt
// with them (Set.InitConstant, whose samples it replays, the last
// p.WarmUp() of them). Each increment is the rate times its interval,
// rounded to a whole number, as the increments it stands for were. The
// interval is the run's: n < 2 (no interval) leaves c zero.
func (c *CountShift) InitConstant(p *Params, rate float64, n uint32, t0, t1 int64) {
	*c = CountShift{}
	if n < 2 || t1 <= t0 {
		return
	}
	constantRun(p, n, t0, t1, func(t, prev int64) {
		secs := float64(t-prev) / 1000
		c.Update(math.Round(rate*secs), secs, p.Window)
	})
}

// Update judges d events counted over secs seconds against the series'
// baseline, then learns from them. window is the number of increments a
// shift must hold to become the new baseline (Params.Window, the detectors'
// notion of a lasting change). It returns the score, the baseline rate
// (events per second) it was judged against, and whether the test judged at
// all (warmed up, dispersion low enough). d must be a whole number ≥ 0 and
// secs > 0.
//
// The score is 2·e^((S−countDecision)/2) for the larger CUSUM statistic S:
// 2, an alarm, at the decision level, and from there as much higher as
// the square root of how much rarer a higher S is (about e^−S), the scale
// on which the detectors' scores are read (a score twice as high is four
// times rarer; incident.Params.Tail). It is 1, the edge of the band, about
// 1.4 nats below the decision level.
func (c *CountShift) Update(d, secs float64, window int) (score, rate float64, judged bool) {
	x := d / secs
	if c.n == 0 {
		c.fast = x
	} else {
		c.fast += countFastAlpha * (x - c.fast)
	}
	var lambda float64
	if c.n > 0 {
		rate = (c.events + 1) / c.exposure
		lambda = rate * secs
	}
	if phi := c.dispersion(); c.n >= countWarmup && c.events >= countDispersionPrior && phi <= countMaxDispersion {
		phi = max(phi, 1)
		sd := math.Sqrt(phi * lambda)
		hi := lambda + countSigmas*sd
		lo := max(lambda-countSigmas*sd, lambda/8)
		c.up = max(0, c.up+(d*math.Log(hi/lambda)-(hi-lambda))/phi)
		c.down = max(0, c.down+(d*math.Log(lo/lambda)-(lo-lambda))/phi)
		judged = true
	} else {
		c.up, c.down = 0, 0
	}
	s := max(c.up, c.down)
	score = min(2*math.Exp((s-countDecision)/2), MaxScore)
	if s >= countDecision {
		c.held++
	} else {
		c.held = 0
	}
	if c.held >= uint32(window) {
		// The shift held: it is the series' new level, as the detectors
		// learn a level shift.
		c.events = max(c.fast*c.exposure-1, 0)
		c.up, c.down, c.held = 0, 0, 0
	}
	if c.n > 0 && score < 1 {
		// The dispersion is learnt from the increments that are not
		// evidence of a shift: those of a shift, measured against the
		// rate before it, are not the count's noise, and learning them
		// would switch the test off while it calls the shift.
		dev := d - lambda
		c.dev2 = c.dev2*(1-countAlpha) + dev*dev
		c.expect = c.expect*(1-countAlpha) + lambda
	}
	c.events = c.events*(1-countAlpha) + d
	c.exposure = c.exposure*(1-countAlpha) + secs
	if c.n < math.MaxUint32 {
		c.n++
	}
	return score, rate, judged
}

// dispersion is the variance of the increments over their mean, as the
// ratio of the decayed sums of squared deviations and of expected counts,
// with countDispersionPrior expected events of a Poisson count's 1.
func (c *CountShift) dispersion() float64 {
	return (c.dev2 + countDispersionPrior) / (c.expect + countDispersionPrior)
}

// CountShiftStateSize is the size of a CountShift's encoding (StateFields):
// seven f64 and two u32.
const CountShiftStateSize = 7*8 + 2*4

// StateFields walks every field of c in the order of its encoding,
// appending (k.Encoding()) or decoding each; after decoding, CheckState
// says whether the state is one Update can have made.
func (c *CountShift) StateFields(k *statecodec.Codec) {
	k.F64(&c.events)
	k.F64(&c.exposure)
	k.F64(&c.dev2)
	k.F64(&c.expect)
	k.F64(&c.fast)
	k.F64(&c.up)
	k.F64(&c.down)
	k.U32(&c.n)
	k.U32(&c.held)
}

// CheckState reports what in a decoded c Update cannot have made: a value
// that is not finite, negative sums or statistics, or a learnt state
// without exposure. It keeps a restored CountShift from dividing by zero or
// scoring NaN.
func (c *CountShift) CheckState() error {
	for _, f := range [...]struct {
		name string
		v    float64
	}{
		{"events", c.events}, {"exposure", c.exposure}, {"squared deviations", c.dev2}, {"expected events", c.expect},
		{"fast rate", c.fast}, {"rise statistic", c.up}, {"fall statistic", c.down},
	} {
		if !isFinite(f.v) {
			return fmt.Errorf("count shift: %s is %g", f.name, f.v)
		}
	}
	switch {
	case c.events < 0 || c.exposure < 0 || c.dev2 < 0 || c.expect < 0 || c.fast < 0 || c.up < 0 || c.down < 0:
		return fmt.Errorf("count shift: negative sums or statistics (events %g, exposure %g, deviations %g, expected %g, fast %g, rise %g, fall %g)",
			c.events, c.exposure, c.dev2, c.expect, c.fast, c.up, c.down)
	case c.n > 0 && c.exposure <= 0:
		return fmt.Errorf("count shift: %d increments learnt without exposure", c.n)
	}
	return nil
}
