package detectors

import (
	"math"
	"unsafe"
)

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
// comparable. An offline detector can fix the range in advance from the
// whole series; a streaming one cannot, so its range grows, and without the
// spreading every growth would leave the regimes' masses in bins that now
// cover other values.
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
//   - a value beyond the range by more than RecordK noise σ (a record,
//     see ewmaState.noise) alarms at once, scored 2·excess/(RecordK·σ) up to
//     2·entropyMaxScore, even if its bin has mass: a new high just above
//     a peak the series reaches every day lands in the top bin, where
//     every regime has mass;
//   - a window that is merely unlike every regime (D finite) is a
//     candidate: it scores 0.9 and becomes a regime, and it alarms only if
//     the window Window/2 values later is very unlike (p = 0.0001) every
//     regime the series had before the candidate, or the window Window
//     values later, which shares no value with it, is still unlike them
//     at p = 0.001. A real change of distribution persists; a chance clump
//     of noise is over by then. Without this check a series of pure noise
//     would alarm once every few thousand samples; with it, noise alarms
//     only on a new extreme (TestEntropyNoiseQuiet). The price is a later
//     alarm on a real change, which is why a very unlike window confirms
//     it after half a window rather than a whole one.
//
// Echoes: for Window−1 values after an alarm the ring still holds the
// value that alarmed (at the slow scale, for Window means after an alarm
// at either scale, the mean it is part of), and what follows is the same
// incident: only a value in a bin no remembered regime has mass in alarms
// again. A window that every regime lacks a bin of only because it mixes
// the alarmed value with a value in a known bin scores 0.9, and neither a
// record nor a candidate confirmed in that time alarms. Without this, one
// spike on Gaussian noise can alarm again a few values later, and a level
// shift, one incident, raises several alarms; holding back only the
// windows new by combination is not enough, as records and confirmations
// inside the echo add alarms of their own (TestEntropyEcho).
//
// Slow scale (SlowScale > 0): the means of SlowScale consecutive values
// form a second ring of Window means with SlowRegimes regimes of their
// own, over the range the means have spanned (not the single values'
// range, which one spike widens until the means all fall in a bin or
// two), judged the same way on the sample that completes a mean; the
// detector's score is the higher of the two scales. A level shift of a
// fraction of the noise or a change over hours hardly moves 16 single
// values' histogram but moves that of 16 means, whose spread is
// √SlowScale times narrower.
// Two differences, both because means of noise set new records now and
// then (a mean beyond every earlier one lands in a bin no regime has):
// every new regime of the slow scale is a candidate to be confirmed (an
// empty bin counts as mass entropyEmptyMass), and the scale is Ready
// only after EntropyWarmup means.
//
// Expected is the mean of the matched (or new) fast-scale regime's bin
// centres weighted by its mass and the band spans the bins it has mass
// in. The score is not calibrated: the χ² test already measures surprise
// in a unit that is the same on every series.
//
// State: the first value (the reference every value is kept against, as
// float32) and each scale's range relative to it, ring position and
// pending candidate, echo countdown, and the running mean, inline; in the Set's
// allocation, so that a Set with Entropy disabled pays nothing for it,
// each scale's ring of Window float32 values and its regimes as
// Regimes·Bins uint8 masses (255 a regime, most recently matched first),
// see entropyViews.
type entropyState struct {
	ref        float64 // the first value; every value is kept relative to it
	fast, slow entropyScale
	acc        float32 // Σ (v − ref)/SlowScale over the values since the last slow value
	nacc       uint8   // values in acc
	seen       bool    // ref is set
	// fastD and slowD are the G statistics of the last matches (see
	// entropyScale.matched), outside the scales, where they would cost
	// their alignment padding twice.
	fastD, slowD float64
}

// entropyScale is the window and regimes of one time scale: single values
// (fast) or means of SlowScale values (slow), each binned over the range
// its own values have spanned.
type entropyScale struct {
	lo, hi float32 // the range the scale's values have spanned, relative to ref
	nreg   uint8   // regimes in use, mass[0:nreg·Bins]
	pos    uint8   // next ring slot
	fill   uint8   // values in the ring, ≤ Window
	wait   uint8   // values until the candidate regime is judged (0: none pending)
	// echo is how many more values the ring holds a value that alarmed,
	// or at the slow scale a mean of one (see Echoes on entropyState).
	echo uint8
	// matched says the last window matched a regime, now regime 0, at G
	// statistic lastD (entropyState.fastD or slowD). Not part of the saved
	// state: a restored or reset scale computes its next window in full.
	matched bool
	// newer has bit i set if regime i (most recently matched first) was
	// added since the candidate opened, the candidate included.
	newer uint16
	pend  float32 // the candidate's score if it is confirmed
}

// Bounds of EntropyParams: the regimes are a fixed array.
const (
	MaxEntropyWindow    = 64
	MaxEntropyBins      = 8
	MaxEntropyRegimes   = 16
	MaxEntropySlowScale = 255
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

// entropyEmptyMass is the mass, in units of 1/255, that a regime of the
// slow scale is taken to have in a bin it has none in: a tenth of the
// least mass a regime holds (1), so a value there still weighs heavily in
// D, but finite, so that the window is a candidate to be confirmed rather
// than an alarm at once. Means of noise set new records now and then (a
// mean beyond every earlier one, in a bin no regime has: a stationary
// series sets about ln n upper records in n values); a lasting change
// keeps filling such bins and is confirmed half a window later.
const entropyEmptyMass = 0.1

var lnEmptyMass = math.Log(entropyEmptyMass)

// entropyMaxScore caps D/T of a new regime (D is infinite for a new extreme).
const entropyMaxScore = 10

// EntropyWarmup is how many samples after Warmup Entropy needs before it
// is Ready: while the range grows and the first regimes form, nearly every
// window is new, and an early confirmation can fire on flat noise
// (TestDriftCalibrated). Like CalibWarmup, 100 samples, so that no
// detector alarms before the calibrated ones can.
const EntropyWarmup = 100

// entropyReady reports whether Entropy, having seen n samples before the
// current one, is past its warm-up (entropyWarm).
func entropyReady(n uint32, p *Params) bool { return ready(n, entropyWarm(p)) }

// entropyWarm is Entropy's warm-up: p.Warmup + EntropyWarmup samples.
func entropyWarm(p *Params) int { return p.Warmup + EntropyWarmup }

// entropySlowReady reports whether the slow scale, having seen n samples
// before the current one, is past its warm-up (entropySlowWarm).
func entropySlowReady(n uint32, p *Params) bool { return ready(n, entropySlowWarm(p)) }

// entropySlowWarm is the slow scale's warm-up: like the fast scale it
// needs EntropyWarmup values of its own, SlowScale·EntropyWarmup samples
// (800 by default). Ready after 32 or 64 means instead, it alarms on the
// noise of the unit tests (TestEntropyNoiseQuiet, TestStep,
// TestDriftCalibrated) while its first regimes form.
func entropySlowWarm(p *Params) int { return max(p.Warmup, EntropyWarmup*p.Entropy.SlowScale) }

// entropyCandidateScore is the score of a candidate regime until it is
// judged: above every match, below the alarm level 1.
const entropyCandidateScore = 0.9

func (e *entropyState) reset() { *e = entropyState{} }

// entropySlots is how many float32 slots of a Set's allocation Entropy
// takes: the fast ring and masses, then the slow ring and masses.
func entropySlots(p *EntropyParams) int {
	n := p.Window + massSlots(p.Regimes, p.Bins)
	if p.SlowScale > 0 {
		n += p.Window + massSlots(p.SlowRegimes, p.Bins)
	}
	return n
}

// massSlots is how many float32 slots hold regimes·bins uint8 masses.
func massSlots(regimes, bins int) int {
	return (regimes*bins + 3) / 4
}

// massBytes views the float32 slots that hold regimes·bins masses as the
// bytes they are. The slots are only ever accessed as bytes.
func massBytes(slots []float32, regimes, bins int) []uint8 {
	return unsafe.Slice((*uint8)(unsafe.Pointer(unsafe.SliceData(slots))), regimes*bins)
}

// entropyViews splits buf (entropySlots(p) float32s) into the fast ring
// and masses and the slow ring and masses (nil if SlowScale is 0).
func entropyViews(p *EntropyParams, buf []float32) (fr []float32, fm []uint8, sr []float32, sm []uint8) {
	w, o := p.Window, p.Window+massSlots(p.Regimes, p.Bins)
	fr, fm = buf[:w], massBytes(buf[w:o], p.Regimes, p.Bins)
	if p.SlowScale > 0 {
		sr, sm = buf[o:o+w], massBytes(buf[o+w:], p.SlowRegimes, p.Bins)
	}
	return fr, fm, sr, sm
}

// record returns 1 + e for a v beyond every value the series has taken
// before (the fast scale's range), e the excess as a multiple of the
// range's width (0 for the first value other than a constant one's, which
// has no width to measure by), and 0 for a v within the range, the first
// value, and a non-finite v. A record is how a fault shows on a series
// whose ordinary values set no band: it is rare by itself (a new value
// beats all n before it about twice in n), and rarer the farther out it
// lands.
func (e *entropyState) record(v float64) float64 {
	s := &e.fast
	if !e.seen || !isFinite(v) {
		return 0
	}
	y := v - e.ref
	lo, hi := float64(s.lo), float64(s.hi)
	if y >= lo && y <= hi {
		return 0
	}
	if hi > lo {
		return 1 + max(lo-y, y-hi)/(hi-lo)
	}
	return 1
}

// update scores the window ending with v at both scales (buf holds
// entropySlots(p) float32s, see entropyViews; ring values are relative to
// e.ref). A non-finite v is not learnt and scores 0, not Ready. The Result
// is Ready when rdy and the fast ring is full; its score is the higher of
// the fast one and, on the sample that completes a slow value, the slow
// one. Expected and the band are the fast scale's. spread is the series'
// noise σ (ewmaState.noise) for the record rule (RecordK·spread; 0: off).
func (e *entropyState) update(p *EntropyParams, buf []float32, rdy, slowRdy bool, v, spread float64) Result {
	if !isFinite(v) {
		return Result{}
	}
	fr, fm, sr, sm := entropyViews(p, buf)
	if !e.seen {
		e.ref, e.seen = v, true
	}
	nb := p.Bins
	y := f32(v - e.ref)
	slow := 0.0
	if p.SlowScale > 0 {
		e.acc = f32(float64(e.acc) + float64(y)/float64(p.SlowScale))
		if e.nacc++; int(e.nacc) == p.SlowScale {
			m := e.acc
			e.acc, e.nacc = 0, 0
			slow, _ = e.slow.step(nb, p.SlowRegimes, sr, sm, m, true, 0, &e.slowD)
		}
	}
	score, full := e.fast.step(nb, p.Regimes, fr, fm, y, false, p.RecordK*spread, &e.fastD)
	if score > 1 && p.SlowScale > 0 {
		// The slow ring holds the mean v is part of for Window means.
		e.slow.echo = uint8(p.Window)
	}
	if !full {
		return Result{}
	}
	r := e.fast.band(fm, nb, e.ref, rdy)
	if rdy {
		r.Score = score
		if slowRdy {
			r.Score = max(score, slow)
		}
	}
	return r
}

// step adds y (a value relative to ref) to the scale's ring, growing the
// range first if y lies outside it, and scores the window, matching it to
// a regime or adding it as a new one. It reports false, and scores 0,
// until the ring is full. With confirmAll (the slow scale), a bin that a
// regime has no mass in counts as mass entropyEmptyMass in it instead of
// making D infinite, so every new regime is a candidate to be confirmed.
// A y beyond the range by more than margin (> 0) is a record: it scores
// 2·excess/margin (at most 2·entropyMaxScore) whatever its window does.
// A score above 1 is an alarm: the Window−1 values after it are its echo
// (see entropyState), in which only a value in a bin no remembered regime
// has mass in alarms.
func (s *entropyScale) step(nb, regimes int, ring []float32, mass []uint8, y float32, confirmAll bool, margin float64, lastD *float64) (float64, bool) {
	if s.fill == 0 && s.nreg == 0 {
		s.lo, s.hi = y, y
	}
	echo := s.echo > 0
	if echo {
		s.echo--
	}
	score, full := s.judge(nb, regimes, ring, mass, y, confirmAll, margin, echo, lastD)
	if score > 1 {
		s.echo = uint8(len(ring) - 1)
	}
	return score, full
}

// judge is step without the echo bookkeeping; echo reports that the ring
// holds a value that alarmed; lastD holds the G statistic of the last
// match (see matched).
func (s *entropyScale) judge(nb, regimes int, ring []float32, mass []uint8, y float32, confirmAll bool, margin float64, echo bool, lastD *float64) (float64, bool) {
	var score float64
	same := s.matched && int(s.fill) == len(ring) && s.wait == 0
	if y < s.lo || y > s.hi {
		if margin > 0 && s.hi > s.lo {
			if ex := max(float64(s.lo)-float64(y), float64(y)-float64(s.hi)); ex > margin && !echo {
				score = 2 * min(ex/margin, entropyMaxScore)
			}
		}
		s.expand(mass[:int(s.nreg)*nb], nb, min(s.lo, y), max(s.hi, y))
		same = false
	}
	lo, step := float64(s.lo), (float64(s.hi)-float64(s.lo))/float64(nb)
	// y replacing a value of its own bin leaves the histogram as it was.
	same = same && binOf(nb, lo, step, float64(ring[s.pos])) == binOf(nb, lo, step, float64(y))
	ring[s.pos] = y
	if s.pos++; int(s.pos) == len(ring) {
		s.pos = 0
	}
	if int(s.fill) < len(ring) {
		s.fill++
		if int(s.fill) < len(ring) {
			return 0, false
		}
	}
	T := chi2p01[nb-1]
	if same {
		// The same histogram against the same regimes: the last window
		// matched, which only moved its regime to the front, and no
		// candidate is pending. So every regime's D is as it was and
		// regime 0 matches again at lastD, as the loop below would find.
		// Most windows of a steady series are such windows.
		return max(score, *lastD/T), true
	}

	var cnt [MaxEntropyBins]int
	for _, x := range ring {
		cnt[binOf(nb, lo, step, float64(x))]++
	}
	// D = 2·Σ c_b·(ln c_b − ln W − ln q_b), with q_b = m_b / Σm.
	w := len(ring)
	var plnp float64 // Σ c_b·(ln c_b − ln W)
	// The bins the window has values in, in order, and their counts: the
	// regime loop below visits only those.
	var nzBin [MaxEntropyBins]uint8
	var nzCnt [MaxEntropyBins]float64
	nz := 0
	for b := range nb {
		if c := cnt[b]; c > 0 {
			plnp += float64(c) * (lnTab[c] - lnTab[w])
			nzBin[nz], nzCnt[nz] = uint8(b), float64(c)
			nz++
		}
	}
	best, bestD := -1, math.Inf(1)
	oldD := math.Inf(1) // the closest regime older than the candidate (only while one is pending)
	for r := range int(s.nreg) {
		row := mass[r*nb : r*nb+nb]
		sum := 0
		for _, m := range row {
			sum += int(m)
		}
		d := plnp
		for k, b := range nzBin[:nz] {
			c, m := nzCnt[k], row[b]
			if m == 0 {
				if confirmAll {
					d -= c * (lnEmptyMass - lnTab[sum])
					continue
				}
				d = math.Inf(1)
				break
			}
			d -= c * (lnTab[m] - lnTab[sum])
		}
		if d *= 2; d < bestD {
			best, bestD = r, d
		}
		if s.wait > 0 && s.newer&(1<<r) == 0 && d < oldD {
			oldD = d
		}
	}
	matched := best >= 0 && bestD < T
	s.matched, *lastD = matched, bestD
	if matched {
		score = max(score, bestD/T)
	}
	if s.wait > 0 {
		// Half of the window is new since the candidate: confirm it early
		// if it is already very unlike every older regime. A whole window
		// later the window shares no value with the candidate's: confirm
		// it if it is still unlike every older regime.
		s.wait--
		switch {
		case s.pend > 0 && int(s.wait) == w-w/2 && oldD >= chi2p0001[nb-1],
			s.pend > 0 && s.wait == 0 && oldD >= chi2p001[nb-1]:
			if !echo {
				score = max(score, float64(s.pend))
			}
			s.pend = 0
		}
		if s.wait == 0 {
			s.newer, s.pend = 0, 0
		}
	}
	if matched {
		s.toFront(mass, nb, best)
		return score, true
	}
	if s.nreg > 0 {
		d := 2 * min(bestD/T, entropyMaxScore)
		switch {
		case math.IsInf(bestD, 1) && echo && s.known(mass, nb, binOf(nb, lo, step, float64(y))):
			// y is in a bin a regime has mass in: the window is new
			// only because it still holds the value that alarmed.
			score = max(score, entropyCandidateScore)
		case math.IsInf(bestD, 1): // a bin new to every regime
			score = max(score, d)
		case s.wait == 0:
			s.wait, s.newer, s.pend = uint8(w), 0, float32(d)
			fallthrough
		default:
			score = max(score, entropyCandidateScore)
		}
	}
	s.insert(mass, nb, regimes, &cnt, w)
	return score, true
}

// known reports whether some remembered regime has mass in bin b.
func (s *entropyScale) known(mass []uint8, nb, b int) bool {
	for r := range int(s.nreg) {
		if mass[r*nb+b] > 0 {
			return true
		}
	}
	return false
}

// binOf returns the bin of x in the range from lo cut into nb bins of
// width step.
func binOf(nb int, lo, step, x float64) int {
	if !(step > 0) {
		return 0
	}
	b := int(math.Floor((x - lo) / step))
	if !(b >= 0) { // also NaN, from float32 rounding of huge offsets
		return 0
	}
	return min(b, nb-1)
}

// band reports regime 0 (the one just matched or added): its mass-weighted
// bin centre as Expected, the bins it has mass in as the band.
func (s *entropyScale) band(mass []uint8, nb int, ref float64, rdy bool) Result {
	lo, hi := ref+float64(s.lo), ref+float64(s.hi)
	step := (hi - lo) / float64(nb)
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
		return Result{Expected: clampFinite(lo), Lower: clampFinite(lo), Upper: clampFinite(hi), Ready: rdy}
	}
	return Result{
		Expected: clampFinite(lo + step*wsum/sum),
		Lower:    clampFinite(lo + step*float64(first)),
		Upper:    clampFinite(lo + step*float64(last+1)),
		Ready:    rdy,
	}
}

// toFront moves regime r to the front (most recently matched).
func (s *entropyScale) toFront(mass []uint8, nb, r int) {
	if r == 0 {
		return
	}
	if m := s.newer; m != 0 { // bit r moves to 0, bits 0..r-1 up by one
		s.newer = m&^(1<<(r+1)-1) | (m&(1<<r-1))<<1 | (m>>r)&1
	}
	var tmp [MaxEntropyBins]uint8
	copy(tmp[:nb], mass[r*nb:r*nb+nb])
	copy(mass[nb:r*nb+nb], mass[:r*nb])
	copy(mass[:nb], tmp[:nb])
}

// insert adds the histogram cnt of w values as the front regime, evicting
// the least recently matched one if all `regimes` slots are in use.
func (s *entropyScale) insert(mass []uint8, nb, regimes int, cnt *[MaxEntropyBins]int, w int) {
	n := int(s.nreg)
	if n < regimes {
		n++
	}
	if s.wait > 0 {
		s.newer = s.newer<<1 | 1
	}
	// Shift regimes 0..n-2 down by one; the last one falls off if full.
	copy(mass[nb:n*nb], mass[:(n-1)*nb])
	for b := range nb {
		mass[b] = quantMass(float64(cnt[b]) / float64(w))
	}
	s.nreg = uint8(n)
}

// quantMass returns a mass fraction f in [0, 1] as uint8 units of 1/255,
// at least 1 if f > 0 so that the regime keeps its support.
func quantMass(f float64) uint8 {
	if !(f > 0) {
		return 0
	}
	return uint8(max(1, min(255, math.Round(255*f))))
}

// expand grows the range to [nlo, nhi] and spreads the mass of every
// regime in use (mass) from the old bins onto the new ones by overlap.
// The bounds are float32 offsets (f32 saturates), so the width, taken in
// float64, is always finite.
func (s *entropyScale) expand(mass []uint8, nb int, nlo, nhi float32) {
	olo, ostep := float64(s.lo), (float64(s.hi)-float64(s.lo))/float64(nb)
	nstep := (float64(nhi) - float64(nlo)) / float64(nb)
	s.lo, s.hi = nlo, nhi
	if !(nstep > 0) {
		return
	}
	nlo64 := float64(nlo)
	for r := 0; r+nb <= len(mass); r += nb {
		row := mass[r : r+nb]
		var out [MaxEntropyBins]float64
		for b, m := range row {
			if m > 0 {
				for k := range nb {
					out[k] += float64(m) * spreadFrac(nb, b, k, olo, ostep, nlo64, nstep)
				}
			}
		}
		for b := range nb {
			row[b] = uint8(min(255, math.Round(out[b])))
		}
	}
}

// spreadFrac is the fraction of old bin b (width ostep from olo; ostep 0:
// the old range was one point, all of it there) that new bin k (width
// nstep from nlo, nb bins) covers.
func spreadFrac(nb, b, k int, olo, ostep, nlo, nstep float64) float64 {
	if !(ostep > 0) {
		if k == binOf(nb, nlo, nstep, olo) {
			return 1
		}
		return 0
	}
	a := olo + float64(b)*ostep
	na := nlo + float64(k)*nstep
	return max(0, min(a+ostep, na+nstep)-max(a, na)) / ostep
}

// Entropy is the regime detector on its own (see entropyState). Init it
// before use. An Entropy is not safe for concurrent use.
type Entropy struct {
	p    *Params
	n    uint32
	e    entropyState
	ewma ewmaState // the spread for the record rule, as a Set keeps it
	buf  []float32 // rings and masses, see entropyViews
}

// Init binds p (which must be valid and must not change afterwards),
// allocates the rings and masses and resets the state. It panics if p is
// invalid.
func (d *Entropy) Init(p *Params) {
	mustValid(p)
	*d = Entropy{p: p, buf: make([]float32, entropySlots(&p.Entropy))}
}

// Update scores the window ending with v and includes v. It does not
// allocate.
func (d *Entropy) Update(t int64, v float64) Result {
	r := d.e.update(&d.p.Entropy, d.buf, entropyReady(d.n, d.p), entropySlowReady(d.n, d.p), v, d.ewma.noise())
	if d.p.Entropy.RecordK > 0 {
		d.ewma.update(&d.p.EWMA, d.n, ready(d.n, d.p.Warmup), v)
	}
	d.n = inc(d.n)
	return r
}

// Reset forgets every sample and keeps the allocation.
func (d *Entropy) Reset() {
	d.n, d.ewma = 0, ewmaState{}
	clear(d.buf)
	d.e.reset()
}
