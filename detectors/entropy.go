package detectors

import "math"

// The regime detector: relative entropy of the recent distribution against
// the distributions the series has shown before (Wang et al. 2011,
// "Statistical techniques for online anomaly detection in data centers",
// the relative-entropy detector of NAB), made streaming and bounded.
//
// The values the series has taken span [lo, hi] (expanding only); that
// range is cut into Bins equal bins. The last Window values form a
// histogram p. A regime is a histogram q remembered from an earlier window;
// up to Regimes of them are kept, most recently matched first. p is tested
// against each with the G-test statistic
//
//	D = 2·Window·Σ p_b·ln(p_b / q_b)   (χ² with Bins − 1 degrees of freedom)
//
// and the closest regime matches if D < T, the χ² quantile at p = 0.01. If
// none does, p becomes a new regime (evicting the least recently matched):
// the series does something it has not done before. A value in a bin that a
// regime never had makes D infinite for that regime, so a new extreme, a
// spike into an empty part of the range, is always new. When the range
// grows, each regime's mass is spread onto the new bins in proportion to
// their overlap with the old ones, so a window and the regimes stay
// comparable; without this the streaming version lost 16 NAB points
// against a range fixed in advance from the whole file, as NAB's detector
// has it.
//
// Score = D/T below 1 for a window that matches a regime. A new regime is
// this detector's alarm, scored 2·D/T (≥ 2, D capped at 10·T) so that it
// outranks a level detector's score near 1 in the combined maximum, but
// not always at once:
//
//   - a value in a bin that no remembered regime has mass in (D infinite:
//     a new extreme, a jump into an empty part of the range, or on
//     heavy-tailed noise a tail value last seen before every remembered
//     regime) alarms at once;
//   - a window that is merely unlike every regime (D finite) is a
//     candidate: it scores 0.9 and becomes a regime, and it alarms only if
//     the window Window/2 values later is very unlike (p = 0.0001) every
//     regime the series had before the candidate, or the window Window
//     values later, which shares no value with it, is still unlike them
//     at p = 0.001. A real change of distribution persists; a chance clump
//     of noise is over by then. Without this check a series of pure noise
//     alarmed once every few thousand samples (on 30 synthetic noise
//     series and NAB's art_noisy: 0 alarms with it, every series without
//     it) at a cost of 1.5 NAB points (3.7 with the one-window check
//     alone).
//
// Expected is the mean of the matched (or new)
// regime's bin centres weighted by its mass and the band spans the bins it
// has mass in. The score is not calibrated: the χ² test already measures
// surprise in a unit that is the same on every series.
//
// State: lo, hi and the first value (the reference the ring stores values
// against, as float32) inline; in the Set's allocation, so that a Set
// with Entropy disabled pays nothing for it, the ring of Window float32
// values and the regimes as Regimes·Bins uint8 masses (255 a regime, most
// recently matched first), passed to every method as ring and mass.
type entropyState struct {
	ref, lo, hi float64
	nreg        uint8 // regimes in use, mass[0:nreg·Bins]
	pos         uint8 // next ring slot
	fill        uint8 // values in the ring, ≤ Window
	seen        bool  // ref, lo and hi are set
	wait        uint8 // values until the candidate regime is judged (0: none pending)
	// newer has bit i set if regime i (most recently matched first) was
	// added since the candidate opened, the candidate included.
	newer uint16
	pend  float32 // the candidate's score if it is confirmed
}

// Bounds of EntropyParams: the regimes are a fixed array.
const (
	MaxEntropyWindow  = 64
	MaxEntropyBins    = 8
	MaxEntropyRegimes = 16
)

// chi2p01 is the χ² quantile at p = 0.01 (upper tail) by degrees of
// freedom 1..MaxEntropyBins−1.
var chi2p01 = [MaxEntropyBins]float64{0, 6.634897, 9.210340, 11.344867, 13.276704, 15.086272, 16.811894, 18.475307}

// chi2p001 is the χ² quantile at p = 0.001, the confirmation's threshold
// one window after a candidate.
var chi2p001 = [MaxEntropyBins]float64{0, 10.827566, 13.815511, 16.266236, 18.466827, 20.515006, 22.457744, 24.321886}

// chi2p0001 is the χ² quantile at p = 0.0001, the early confirmation's
// threshold half a window after a candidate.
var chi2p0001 = [MaxEntropyBins]float64{0, 15.136705, 18.420681, 21.107513, 23.512742, 25.744832, 27.856341, 29.877504}

// lnTab[i] = ln(i) for the counts and masses (ln 0 is never read: a zero
// count contributes nothing, a zero mass makes D infinite).
var lnTab = func() (t [MaxEntropyWindow*MaxEntropyBins + 256*MaxEntropyBins]float64) {
	for i := 1; i < len(t); i++ {
		t[i] = math.Log(float64(i))
	}
	return t
}()

// entropyMaxScore caps D/T of a new regime (D is infinite for a new extreme).
const entropyMaxScore = 10

// EntropyWarmup is how many samples Entropy needs before it is Ready, if
// Warmup is shorter: while the range grows and the first regimes form,
// nearly every window is new, and an early confirmation fired on flat
// noise at sample 69 (TestDriftCalibrated). Like CalibWarmup, 100 samples.
const EntropyWarmup = 100

// entropyReady reports whether Entropy, having seen n samples before the
// current one, is past its warm-up: max(p.Warmup, EntropyWarmup).
func entropyReady(n uint32, p *Params) bool {
	return ready(n, max(p.Warmup, EntropyWarmup))
}

// entropyCandidateScore is the score of a candidate regime until it is
// judged: above every match, below the alarm level 1.
const entropyCandidateScore = 0.9

func (e *entropyState) reset() { *e = entropyState{} }

// update scores the window ending with v (ring holds p.Window float32
// values, relative to e.ref). A non-finite v is not learnt and scores 0,
// not Ready. The Result is Ready when rdy and the ring is full.
func (e *entropyState) update(p *EntropyParams, ring []float32, mass []uint8, rdy bool, v float64) Result {
	if !isFinite(v) {
		return Result{}
	}
	if !e.seen {
		e.ref, e.lo, e.hi, e.seen = v, v, v, true
	}
	if v < e.lo || v > e.hi {
		e.expand(mass, p.Bins, min(e.lo, v), max(e.hi, v))
	}
	ring[e.pos] = f32(v - e.ref)
	if e.pos++; int(e.pos) == len(ring) {
		e.pos = 0
	}
	if int(e.fill) < len(ring) {
		e.fill++
		if int(e.fill) < len(ring) {
			return Result{}
		}
	}

	nb := p.Bins
	var cnt [MaxEntropyBins]int
	step := (e.hi - e.lo) / float64(nb)
	for _, y := range ring {
		cnt[e.bin(nb, step, float64(y)+e.ref)]++
	}
	// D = 2·Σ c_b·(ln c_b − ln W − ln q_b), with q_b = m_b / Σm.
	w := len(ring)
	var plnp float64 // Σ c_b·(ln c_b − ln W)
	for b := range nb {
		if c := cnt[b]; c > 0 {
			plnp += float64(c) * (lnTab[c] - lnTab[w])
		}
	}
	best, bestD := -1, math.Inf(1)
	oldD := math.Inf(1) // the closest regime older than the candidate (only while one is pending)
	for r := range int(e.nreg) {
		row := mass[r*nb : r*nb+nb]
		sum := 0
		for _, m := range row {
			sum += int(m)
		}
		d := plnp
		for b, m := range row {
			if c := cnt[b]; c > 0 {
				if m == 0 {
					d = math.Inf(1)
					break
				}
				d -= float64(c) * (lnTab[m] - lnTab[sum])
			}
		}
		if d *= 2; d < bestD {
			best, bestD = r, d
		}
		if e.wait > 0 && e.newer&(1<<r) == 0 && d < oldD {
			oldD = d
		}
	}
	T := chi2p01[nb-1]
	var score float64
	matched := best >= 0 && bestD < T
	if matched {
		score = max(0, bestD/T)
	}
	if e.wait > 0 {
		// Half of the window is new since the candidate: confirm it early
		// if it is already very unlike every older regime. A whole window
		// later the window shares no value with the candidate's: confirm
		// it if it is still unlike every older regime.
		e.wait--
		switch {
		case e.pend > 0 && int(e.wait) == w-w/2 && oldD >= chi2p0001[nb-1],
			e.pend > 0 && e.wait == 0 && oldD >= chi2p001[nb-1]:
			score = max(score, float64(e.pend))
			e.pend = 0
		}
		if e.wait == 0 {
			e.newer, e.pend = 0, 0
		}
	}
	if matched {
		e.toFront(mass, nb, best)
		return e.result(mass, nb, step, rdy, score)
	}
	if e.nreg > 0 {
		s := 2 * min(bestD/T, entropyMaxScore)
		switch {
		case math.IsInf(bestD, 1): // a bin new to every regime
			score = max(score, s)
		case e.wait == 0:
			e.wait, e.newer, e.pend = uint8(w), 0, float32(s)
			fallthrough
		default:
			score = max(score, entropyCandidateScore)
		}
	}
	e.insert(mass, nb, p.Regimes, &cnt, w)
	return e.result(mass, nb, step, rdy, score)
}

// result is the Result for the front regime (the one just matched or
// added) with score, which counts only when rdy.
func (e *entropyState) result(mass []uint8, nb int, step float64, rdy bool, score float64) Result {
	r := e.band(mass, nb, step, rdy)
	if rdy {
		r.Score = score
	}
	return r
}

// bin returns the bin of x in [lo, hi] cut into nb bins of width step.
func (e *entropyState) bin(nb int, step, x float64) int {
	if !(step > 0) {
		return 0
	}
	b := int(math.Floor((x - e.lo) / step))
	if !(b >= 0) { // also NaN, from float32 rounding of huge offsets
		return 0
	}
	return min(b, nb-1)
}

// band reports regime 0 (the one just matched or added): its mass-weighted
// bin centre as Expected, the bins it has mass in as the band.
func (e *entropyState) band(mass []uint8, nb int, step float64, rdy bool) Result {
	row := mass[:nb]
	first, last, sum, wsum := -1, 0, 0.0, 0.0
	for b, m := range row {
		if m > 0 {
			if first < 0 {
				first = b
			}
			last = b
			sum += float64(m)
			wsum += float64(m) * (float64(b) + 0.5)
		}
	}
	if first < 0 || !(step > 0) {
		return Result{Expected: clampFinite(e.lo), Lower: clampFinite(e.lo), Upper: clampFinite(e.hi), Ready: rdy}
	}
	return Result{
		Expected: clampFinite(e.lo + step*wsum/sum),
		Lower:    clampFinite(e.lo + step*float64(first)),
		Upper:    clampFinite(e.lo + step*float64(last+1)),
		Ready:    rdy,
	}
}

// toFront moves regime r to the front (most recently matched).
func (e *entropyState) toFront(mass []uint8, nb, r int) {
	if r == 0 {
		return
	}
	if m := e.newer; m != 0 { // bit r moves to 0, bits 0..r-1 up by one
		e.newer = m&^(1<<(r+1)-1) | (m&(1<<r-1))<<1 | (m>>r)&1
	}
	var tmp [MaxEntropyBins]uint8
	copy(tmp[:nb], mass[r*nb:r*nb+nb])
	copy(mass[nb:r*nb+nb], mass[:r*nb])
	copy(mass[:nb], tmp[:nb])
}

// insert adds the histogram cnt of w values as the front regime, evicting
// the least recently matched one if all `regimes` slots are in use.
func (e *entropyState) insert(mass []uint8, nb, regimes int, cnt *[MaxEntropyBins]int, w int) {
	n := int(e.nreg)
	if n < regimes {
		n++
	}
	if e.wait > 0 {
		e.newer = e.newer<<1 | 1
	}
	// Shift regimes 0..n-2 down by one; the last one falls off if full.
	copy(mass[nb:n*nb], mass[:(n-1)*nb])
	for b := range nb {
		mass[b] = quantMass(float64(cnt[b]) / float64(w))
	}
	e.nreg = uint8(n)
}

// quantMass returns a mass fraction f in [0, 1] as uint8 units of 1/255,
// at least 1 if f > 0 so that the regime keeps its support.
func quantMass(f float64) uint8 {
	if !(f > 0) {
		return 0
	}
	return uint8(max(1, min(255, math.Round(255*f))))
}

// expand grows the range to [nlo, nhi] and spreads every regime's mass
// from the old bins onto the new ones by overlap. A range whose width
// overflows is not taken: the value is binned at the edge instead.
func (e *entropyState) expand(mass []uint8, nb int, nlo, nhi float64) {
	if !isFinite(nhi - nlo) {
		return
	}
	olo, ostep := e.lo, (e.hi-e.lo)/float64(nb)
	nstep := (nhi - nlo) / float64(nb)
	e.lo, e.hi = nlo, nhi
	if !(nstep > 0) {
		return
	}
	for r := range int(e.nreg) {
		row := mass[r*nb : r*nb+nb]
		var out [MaxEntropyBins]float64
		for b, m := range row {
			if m == 0 {
				continue
			}
			if !(ostep > 0) { // the old range was one point: all mass there
				out[e.bin(nb, nstep, olo)] += float64(m)
				continue
			}
			a := olo + float64(b)*ostep
			z := a + ostep
			for k := range nb {
				na := nlo + float64(k)*nstep
				if ov := min(z, na+nstep) - max(a, na); ov > 0 {
					out[k] += float64(m) * ov / ostep
				}
			}
		}
		for b := range nb {
			row[b] = uint8(min(255, math.Round(out[b])))
		}
	}
}

// Entropy is the regime detector on its own (see entropyState). Init it
// before use. An Entropy is not safe for concurrent use.
type Entropy struct {
	p    *Params
	n    uint32
	e    entropyState
	ring []float32
	mass []uint8
}

// Init binds p (which must be valid and must not change afterwards),
// allocates the ring and resets the state. It panics if p is invalid.
func (d *Entropy) Init(p *Params) {
	mustValid(p)
	*d = Entropy{p: p, ring: make([]float32, p.Entropy.Window), mass: make([]uint8, p.Entropy.Regimes*p.Entropy.Bins)}
}

// Update scores the window ending with v and includes v. It does not
// allocate.
func (d *Entropy) Update(t int64, v float64) Result {
	r := d.e.update(&d.p.Entropy, d.ring, d.mass, entropyReady(d.n, d.p), v)
	d.n = inc(d.n)
	return r
}

// Reset forgets every sample and keeps the ring.
func (d *Entropy) Reset() {
	d.n = 0
	clear(d.mass)
	d.e.reset()
}
