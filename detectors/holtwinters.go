package detectors

import (
	"math"
	"time"
)

// hwState is the state of additive Holt-Winters with Brutlag's confidence
// bands (Brutlag 2000, "Aberrant behavior detection in time series for
// network monitoring", LISA XIV). For a sample v at time t:
//
//	ŷ = a + b + c(t)                          prediction (one sample step ahead)
//	band = ŷ ± K·d(t)                         Brutlag's δ = K
//	a' = (a + b) + α·((v − c(t)) − (a + b))   level
//	b' = b + β·((a' − a) − b)                 trend, per sample step
//	c ← c + γ·((v − a') − c)                  seasonal
//	d ← d + γ·(|v − ŷ| − d)                   seasonal mean absolute deviation
//
// written in error-correction form so a constant series stays exactly
// constant (score 0, not 1e-16 noise).
//
// The season is a duration S split into B slots; the slot of a sample is
// floor((t mod S)·B / S) with a floored modulo, i.e. it is indexed by the
// timestamp, not by a sample count, so gaps and irregular intervals land
// in the right slot. Each slot i holds c[i] and d[i], taken as the values
// at the slot's centre; c(t) and d(t) interpolate linearly between the two
// centres around t (wrapping from the last slot to the first), and the
// update shares the error between those two slots by the same weights (a
// least-mean-squares step on the interpolated seasonal, which for a sample
// at a centre is exactly the formula above). Why: with piecewise-constant
// slots, a fast level (α = 0.1 per 15 s sample) follows the data inside a
// slot and every slot boundary becomes a step in ŷ as large as the
// seasonal change over one slot — up to 2·sin(π/B) of a sine's amplitude
// (a quarter of it in 24 slots) — and alarms on anomaly-free data. With
// several samples per slot, γ applies per sample, so c and d follow the
// last ~1/γ samples near each centre.
//
// Start-up, the classical Holt-Winters initialisation from the first
// season (level = its mean, c[i] = slot mean − level, b = 0) done online:
//
//   - Priming, from the first sample t₀ until t₀ + S: the model is Holt's
//     linear trend (c = 0) and the band uses `dev`, the mean absolute
//     one-step error over all samples (weight max(γ, 1/k) for the k-th
//     error, like the EWMA's start). Meanwhile c[i] accumulates the plain
//     mean of v − v₀ over slot i and d[i] counts its samples.
//   - At the first sample at or after t₀ + S: level = v₀ + M, with M the
//     mean of the visited slots' means; c[i] −= M; d[i] = dev; b = 0. Every
//     slot visited so far becomes trusted.
//   - Afterwards a slot is trusted once it was visited in an earlier
//     season (bitmask `trusted`, refreshed from `seen` when a sample opens a
//     new season); until then it takes no part in c(t) and d(t): the
//     other neighbour's values are used alone, and with neither trusted
//     c(t) = 0 and d(t) = dev. A slot first visited after priming (a gap)
//     starts with c[i] = v − a' and d[i] = dev.
//
// Without priming, a level that follows the data during the first season
// absorbs the seasonal shape, c learns only the level's lag, and with
// α = γ = 0.1 it takes many seasons to converge, alarming on anomaly-free
// data meanwhile. With S = 0 there are no slots: the model is Holt's
// linear trend and the band uses `dev`.
//
// c and d live outside the struct as []float32 slices of length B (in
// Set's one allocation, or in HoltWinters' fixed arrays): float32 halves
// their size and is ample, because c is an offset from the level and d a
// spread, both small next to the value, and a relative error of 6e-8 of
// either is invisible in a band. Their updates saturate at ±MaxFloat32.
type hwState struct {
	level, trend float64
	dev          float64 // mean |one-step error| over all samples
	v0           float64 // first value; priming slot means are relative to it
	start        int64   // time of the first sample, ms
	epoch        int64   // season number floor(t / S) of the last sample
	seen         uint64  // bit i: slot i has been visited
	trusted      uint64  // bit i: slot i was visited in an earlier season
	primed       bool    // the first season has been converted
}

// seasonMillis returns the season length S in ms (0: no season).
func seasonMillis(p *HoltWintersParams) int64 {
	return int64(time.Duration(p.Season) / time.Millisecond)
}

// update scores v at t against the prediction from the state before it,
// then includes it. seas and devs are the slot arrays (length B, or 0 for
// no season); n is the number of samples seen before this one.
func (h *hwState) update(p *HoltWintersParams, seas, devs []float32, n uint32, rdy bool, t int64, v float64) Result {
	nb := len(seas)
	S := seasonMillis(p)
	if S <= 0 {
		nb = 0
	}
	var slot, i, j int
	var f float64
	var bit uint64
	var epoch int64
	if nb > 0 {
		epoch, slot, i, j, f = position(t, S, nb)
		bit = 1 << slot
	}
	if n == 0 {
		h.begin(seas, devs, t, v, epoch, slot)
		return Result{}
	}
	priming := nb > 0 && !h.primed
	if priming && t-h.start >= S {
		h.prime(seas, devs, epoch)
		priming = false
	}
	if nb > 0 && !priming {
		if epoch != h.epoch {
			h.trusted = h.seen
			h.epoch = epoch
		}
	}

	c, d := 0.0, h.dev
	if nb > 0 {
		c, d = interp(seas, devs, h.trusted, i, j, f, d)
	}
	pred := h.level + h.trend + c
	r := verdict(v, pred, d, p.K, rdy)

	ae := math.Abs(v - pred)
	base := h.level + h.trend
	level := base + p.Alpha*((v-c)-base)
	h.trend += p.Beta * ((level - h.level) - h.trend)
	h.level = level
	w := p.Gamma
	if k := float64(n); 1/k > w {
		w = 1 / k
	}
	h.dev += w * (ae - h.dev)
	switch {
	case nb == 0:
	case priming:
		// Slot mean of v − v₀; d[slot] counts the slot's samples (exact
		// in float32 up to 2^24).
		k := float64(devs[slot]) + 1
		cs := float64(seas[slot])
		seas[slot], devs[slot] = f32(cs+((v-h.v0)-cs)/k), float32(k)
		h.seen |= bit
	case h.seen&bit == 0:
		seas[slot], devs[slot] = f32(v-level), f32(h.dev)
		h.seen |= bit
	default:
		// Gradient step on the interpolated seasonal (least mean squares):
		// each visited neighbour moves by its share of the error.
		cs, _ := interp(seas, devs, h.seen, i, j, f, 0)
		ec := (v - level) - cs
		for _, k := range [2]struct {
			k int
			w float64
		}{{i, 1 - f}, {j, f}} {
			if h.seen&(1<<k.k) != 0 && k.w > 0 {
				seas[k.k] = f32(float64(seas[k.k]) + p.Gamma*k.w*ec)
				devs[k.k] = f32(float64(devs[k.k]) + p.Gamma*k.w*(ae-float64(devs[k.k])))
			}
		}
	}
	if !isFinite(h.level) || !isFinite(h.trend) || !isFinite(h.dev) {
		// Only reachable with |v| near math.MaxFloat64: start over from v
		// rather than carry Inf or NaN forever.
		h.begin(seas, devs, t, v, epoch, slot)
	}
	return r
}

// begin starts a new model at the sample (t, v) in slot: priming begins.
func (h *hwState) begin(seas, devs []float32, t int64, v float64, epoch int64, slot int) {
	*h = hwState{level: v, v0: v, start: t, epoch: epoch}
	clear(seas)
	clear(devs)
	if len(seas) > 0 {
		devs[slot] = 1 // one sample of v − v₀ = 0 in slot
		h.seen = 1 << slot
	}
}

// interp returns the seasonal term and deviation at position f between the
// centres of slots i and j, from the slots in mask only (weights 1 − f and
// f, renormalised); def and 0 if neither is in mask.
func interp(seas, devs []float32, mask uint64, i, j int, f, def float64) (c, d float64) {
	var wi, wj float64
	if mask&(1<<i) != 0 {
		wi = 1 - f
	}
	if mask&(1<<j) != 0 {
		wj = f
	}
	ws := wi + wj
	if !(ws > 0) {
		return 0, def
	}
	return (wi*float64(seas[i]) + wj*float64(seas[j])) / ws, (wi*float64(devs[i]) + wj*float64(devs[j])) / ws
}

// prime ends priming (see hwState): it turns the slot means of the first
// season into seasonal offsets around their mean and restarts the level
// there. epoch is the season number of the current sample. O(B), once.
func (h *hwState) prime(seas, devs []float32, epoch int64) {
	var sum float64
	var cnt int
	for i := range seas {
		if h.seen&(1<<i) != 0 {
			sum += float64(seas[i])
			cnt++
		}
	}
	var m float64
	if cnt > 0 {
		m = sum / float64(cnt)
	}
	for i := range seas {
		if h.seen&(1<<i) != 0 {
			seas[i], devs[i] = f32(float64(seas[i])-m), f32(h.dev)
		}
	}
	h.level, h.trend = h.v0+m, 0
	h.trusted = h.seen
	h.epoch = epoch
	h.primed = true
}

// reset forgets every sample; the next update starts a new model.
func (h *hwState) reset(seas, devs []float32) {
	*h = hwState{}
	clear(seas)
	clear(devs)
}

// position locates t in a season of S ms in nb slots: epoch = floor(t/S)
// is the season number, slot = floor((t mod S)·nb/S) the sample's own slot,
// and i, j (= i+1 mod nb) the slots whose centres (k + ½ in slot units)
// bracket t, with f ∈ [0, 1) the weight of j.
func position(t, S int64, nb int) (epoch int64, slot, i, j int, f float64) {
	epoch = t / S
	if t%S < 0 {
		epoch--
	}
	m := t - epoch*S // t mod S, in [0, S)
	slot = int(m * int64(nb) / S)
	q := float64(m)*float64(nb)/float64(S) - 0.5
	fl := math.Floor(q)
	i, f = int(fl), q-fl
	if i < 0 {
		i += nb
	}
	if j = i + 1; j == nb {
		j = 0
	}
	return epoch, slot, i, j, f
}

// HoltWinters is the additive Holt-Winters detector with Brutlag (2000)
// bands on its own: Expected = level + trend + seasonal(t), band =
// Expected ± K·d(t) with d the seasonal mean absolute deviation, Score =
// |v − Expected| / (K·d), d floored, calibrated if Params.Calibration is
// enabled (see calib). The seasonal slots are indexed by
// timestamp (see Set). Its slot arrays are fixed [MaxSeasonBuckets]float32
// arrays, so it needs no allocation (488 bytes). Init it before use. A
// HoltWinters is not safe for concurrent use.
type HoltWinters struct {
	p         *Params
	n         uint32
	h         hwState
	cal       calib
	seasonal  [MaxSeasonBuckets]float32
	deviation [MaxSeasonBuckets]float32
}

// Init binds p (which must be valid and must not change afterwards) and
// resets the state. It panics if p is invalid.
func (d *HoltWinters) Init(p *Params) {
	mustValid(p)
	*d = HoltWinters{p: p}
}

// Update scores v at time t (ms, strictly increasing) and includes it. It
// does not allocate.
func (d *HoltWinters) Update(t int64, v float64) Result {
	hp := &d.p.HoltWinters
	nb := 0
	if hp.Season > 0 {
		nb = hp.SeasonBuckets
	}
	r := d.h.update(hp, d.seasonal[:nb], d.deviation[:nb], d.n, ready(d.n, d.p.Warmup), t, v)
	calibrateBand(&r, d.cal.apply(&r, &d.p.Calibration))
	d.n = inc(d.n)
	return r
}

// Reset forgets every sample.
func (d *HoltWinters) Reset() {
	d.n, d.cal = 0, calib{}
	d.h.reset(d.seasonal[:], d.deviation[:])
}
