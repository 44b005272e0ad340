package detectors

import "math"

// ewmaState is the state of the EWMA detector: an exponentially weighted
// mean and variance (Finch 2009, "Incremental calculation of weighted mean
// and variance", the exponentially weighted variance recurrence):
//
//	diff = v − mean
//	incr = w·diff
//	mean ← mean + incr
//	var  ← (1 − w)·(var + diff·incr)
//
// with weight w = max(alpha, 1/k) for the k-th sample. The σ of the band is
// floored at mae, the slow mean absolute one-step error (see SlowAlpha). The 1/k start makes
// the first samples a plain cumulative mean and population variance (k=1
// sets mean = v, var = 0), so the band is not too narrow right after warm-up
// as it is when var starts at 0 and grows at rate alpha; from k = 1/alpha on
// it is the textbook EWMA.
type ewmaState struct {
	mean, variance float64
	mae            float64 // slow mean |v − mean| (SlowAlpha), floors σ
}

// noise is the series' noise σ as Entropy's record rule measures a new
// extreme's excess in: 1.25 × the slow mean absolute one-step error (≈ σ
// for Gaussian noise). A Set keeps it up to date whenever the rule is on,
// whether or not the EWMA detector is enabled.
func (e *ewmaState) noise() float64 { return 1.25 * e.mae }

// update scores v against the mean and variance before v (n samples seen
// before it), then includes v.
func (e *ewmaState) update(p *EWMAParams, n uint32, rdy bool, v float64) Result {
	var r Result
	lim := math.Inf(1)
	if n > 0 {
		sd := max(math.Sqrt(e.variance), e.mae)
		r = verdict(v, e.mean, sd, p.K, rdy)
		if rdy {
			lim = p.K * sigmaFloor(sd, e.mean)
		}
	}
	w := p.Alpha
	if k := float64(n) + 1; 1/k > w {
		w = 1 / k
	}
	diff := v - e.mean
	incr := w * diff
	e.mean += incr
	e.variance = (1 - w) * (e.variance + diff*incr)
	if n > 0 {
		e.mae = slowMAD(e.mae, math.Abs(diff), lim, n)
	}
	if !isFinite(e.mean) || !isFinite(e.variance) {
		// Only reachable with |v| near math.MaxFloat64: start over from v
		// rather than carry Inf or NaN forever.
		e.mean, e.variance, e.mae = v, 0, 0
	}
	return r
}

// EWMA is the exponentially weighted moving average detector on its own:
// Expected = the weighted mean before the sample, band = Expected ± K·σ
// with σ the exponentially weighted standard deviation (Finch 2009),
// raw score |v − Expected| / (K·σ), σ floored (at the slow mean absolute
// error too), then calibrated if Params.Calibration is enabled (see calib).
// Init it before use. An EWMA is not safe for concurrent use.
type EWMA struct {
	p   *Params
	n   uint32
	s   ewmaState
	cal calib
}

// Init binds p (which must be valid and must not change afterwards) and
// resets the state. It panics if p is invalid.
func (d *EWMA) Init(p *Params) {
	mustValid(p)
	*d = EWMA{p: p}
}

// Update scores v and includes it; t is not used. It does not allocate.
func (d *EWMA) Update(t int64, v float64) Result {
	r := d.s.update(&d.p.EWMA, d.n, ready(d.n, d.p.Warmup), v)
	calibrateBand(&r, d.cal.apply(&r, &d.p.Calibration))
	d.n = inc(d.n)
	return r
}

// Reset forgets every sample.
func (d *EWMA) Reset() {
	d.n, d.s, d.cal = 0, ewmaState{}, calib{}
}

// inc increments a sample count, saturating at math.MaxUint32.
func inc(n uint32) uint32 {
	if n < math.MaxUint32 {
		n++
	}
	return n
}
