package detectors

import (
	"fmt"
	"unsafe"
)

// Set is the complete detector state of one series: the five detectors and
// the ring buffer that ZScore and Slope share. The zero value is not
// usable: call Init. A Set holds no pointers besides its one allocation,
// mem, so its fields and mem are all there is to serialise: AppendState
// writes them (StateSize bytes, 979 with DefaultParams) and RestoreState
// reads them back (see State in the package doc). A copy by
// value shares mem: only one of the copies may be updated. A Set is owned
// by one goroutine (the shard) and is not safe for concurrent use.
//
// Memory with DefaultParams: unsafe.Sizeof(Set{}) = 312 bytes (320 after
// the allocator's rounding) plus one allocation of 4·(2·Window +
// 2·SeasonBuckets) = 432 bytes for the ring and the seasonal slots and 272
// for Entropy's rings and masses at both scales (fast ring 64, masses 96;
// slow ring 64, masses 48), 704 (a size class): 1016 bytes a series; with
// Entropy disabled 744 (TestSetMemoryBudget).
// The calibration is 12 bytes a detector (48), the two slow mean
// absolute errors 16 and the run hold 5 (in what was padding).
// 48 slots would add 192 bytes; disabling ZScore and Slope saves 240.
type Set struct {
	// mem is the one allocation, 2w + 2b + e float32 (see slots): the ring
	// (2 float32 an entry, see window), the Holt-Winters seasonal and
	// deviation slots, Entropy's rings and masses. A pointer rather than a
	// slice: the sizes below give its length, and the 16 bytes keep a Set
	// within the 320-byte size class when a shard allocates it on its own.
	mem  *float32
	ewma ewmaState
	hw   hwState
	ent  entropyState
	win  window
	cal  [numCalibrated]calib // each calibrated detector's calibration (see calib)
	n    uint32               // samples seen, saturating
	w    uint16               // ring capacity in buf (0: neither ZScore nor Slope enabled)
	b    uint8                // seasonal slots in buf (0: no seasonal component)
	e    uint8                // Entropy's float32s in buf after the seasonal slots: ring, then masses (0: disabled)
	init bool                 // Init was called
	held uint8                // samples the current run has held Combined.Score at 1 (see holdRun)
	run  float32              // the level band's half-width at the start of a run beyond it, signed by its side; 0 outside a run
}

// Init sizes s for p and resets it. It allocates once: 2·p.Window float32
// for the ring if ZScore or Slope is enabled, plus 2·SeasonBuckets float32
// if Holt-Winters is enabled with a season; an earlier allocation is reused
// if it is large enough. p must be valid (Init panics otherwise) and must
// be passed unchanged to every Update.
func (s *Set) Init(p *Params) {
	mustValid(p)
	var w, b, e int
	if p.ZScore.Enabled || p.Slope.Enabled {
		w = p.Window
	}
	if p.HoltWinters.Enabled && p.HoltWinters.Season > 0 {
		b = p.HoltWinters.SeasonBuckets
	}
	if p.Entropy.Enabled {
		e = entropySlots(&p.Entropy)
	}
	mem := s.mem
	switch need, have := 2*w+2*b+e, len(s.slots()); {
	case need == 0:
		mem = nil
	case have >= need:
		clear(unsafe.Slice(mem, need))
	default:
		mem = unsafe.SliceData(make([]float32, need))
	}
	*s = Set{mem: mem, w: uint16(w), b: uint8(b), e: uint8(e), init: true}
}

// slots returns the allocation: 2w + 2b + e float32.
func (s *Set) slots() []float32 {
	if s.mem == nil {
		return nil
	}
	return unsafe.Slice(s.mem, 2*int(s.w)+2*int(s.b)+int(s.e))
}

// InitConstant sizes s for p and puts it in the state n Updates with the
// value v would leave it in, at n evenly spaced times from t0 to t1 (n ≥ 1;
// t0 = t1 when n is 1): the state of a series whose value has never changed,
// rebuilt when it first changes (the shards hold such a series without
// detector state until then). It replays at most p.WarmUp() of those
// samples, the last ones, and then counts all n: every detector is past its
// warm-up after WarmUp samples, and what it keeps of a constant beyond them
// is the constant. So for n ≤ p.WarmUp() the state is exactly the one the
// n Updates give, and for more it differs only in what had decayed already
// (an EWMA variance 0.9^WarmUp of its start) and in Holt-Winters' seasonal
// slots, which only the replayed span visits.
func (s *Set) InitConstant(p *Params, v float64, n uint32, t0, t1 int64) {
	s.Init(p)
	constantRun(p, n, t0, t1, func(t, _ int64) { s.update(p, t, v, false) })
	s.n = max(s.n, n)
}

// constantRun calls f with the times of the samples InitConstant replays,
// oldest first: the last p.WarmUp() of n evenly spaced from t0 to t1 (exact
// for integer spacing), each with the time of the sample before it.
func constantRun(p *Params, n uint32, t0, t1 int64, f func(t, prev int64)) {
	if n == 0 {
		return
	}
	m := min(int64(n), int64(p.WarmUp()))
	span, gaps := t1-t0, max(int64(n)-1, 1)
	prev := t1 - span*m/gaps
	for i := m - 1; i >= 0; i-- {
		t := t1 - span*i/gaps // i gaps before t1
		f(t, prev)
		prev = t
	}
}

// WarmUp returns how many samples a Set takes to be past every enabled
// detector's warm-up: p.Warmup, then CalibWarmup raw scores to calibrate
// (with calibration on; a calibration counts the raw scores of a Ready
// detector), and Entropy's own, fast and slow (entropyWarm,
// entropySlowWarm), its ring full.
func (p *Params) WarmUp() int {
	n := p.Warmup
	if p.Calibration.Enabled {
		n = max(n, p.Warmup+CalibWarmup)
	}
	if en := &p.Entropy; en.Enabled {
		n = max(n, entropyWarm(p), en.Window)
		if en.SlowScale > 0 {
			n = max(n, entropySlowWarm(p))
		}
	}
	return n
}

// Recent calls f with the samples in the rolling window, oldest first: the
// last Params.Window values Update was given (fewer at first), with their
// times in ms, as the ring keeps them (a value to 6e-8 of the window's
// spread from its reference, a time to the millisecond; see window). f is
// not called when neither ZScore nor Slope is enabled.
func (s *Set) Recent(f func(t int64, v float64)) {
	if s.w > 0 {
		s.win.each(s.slots()[:2*int(s.w)], f)
	}
}

// Reset returns s to the state right after Init, keeping the allocation.
func (s *Set) Reset() {
	clear(s.slots())
	*s = Set{mem: s.mem, w: s.w, b: s.b, e: s.e, init: s.init}
}

// Bytes returns the memory s holds: the struct and its allocation (before
// the allocator rounds the latter up to a size class).
func (s *Set) Bytes() int {
	return int(unsafe.Sizeof(*s)) + 4*len(s.slots())
}

// Update scores the sample (t, v) with every enabled detector, then
// includes it in their state. t is in milliseconds and must be strictly
// increasing; v must be finite (the caller drops stale markers, NaN and
// ±Inf). p is the Params given to Init. Update does not allocate and calls
// the detectors directly, not through Detector.
//
// Each detector judges v against its state *before* v. A detector is Ready
// once the series has had p.Warmup samples before this one (ZScore and
// Slope also need ≥ 3 samples in the ring, Entropy a full ring and
// EntropyWarmup more samples) and, with calibration on, CalibWarmup raw
// scores calibrate it; until then its Score is 0.
// Disabled detectors are not updated and their Per entry is zero.
//
// With p.Calibration enabled every Per result is calibrated (see calib)
// before they are combined.
//
// Combined (see Output) is the Result of one detector, out.Driver:
//
//   - the level detectors {EWMA, ZScore, HoltWinters} that are Ready vote
//     with the lowest score, so a level alarm needs all of them to agree
//     (and a seasonal swing that Holt-Winters expects does not alarm);
//   - Slope, if Ready and its raw score is above 1 (the line moved more
//     than K residual deviations across the window), replaces that when
//     its score is strictly higher: Combined.Score = max(lowest level
//     score, slope score), because a slow drift is what the level
//     detectors adapt to and miss;
//   - if no detector is Ready, Combined is the not-Ready Result of the
//     first enabled detector, with Score 0.
//
// Then a run beyond the level band holds Combined.Score at 1 or more for
// up to HoldMax samples after its first (see holdRun), so a plateau far
// outside the band is not called normal once the detectors' spreads have
// widened with its first sample.
func (s *Set) Update(p *Params, t int64, v float64) Output {
	return s.update(p, t, v, true)
}

// UpdateCombined is Update for a caller that reads only Combined, Driver
// and the Per scores: the bands of Per results other than the driver's
// and the level vote's stay uncalibrated (the raw band, where the raw
// score is 1). It saves a math.Expm1 per calibrated detector whose band
// nothing reads.
func (s *Set) UpdateCombined(p *Params, t int64, v float64) Output {
	return s.update(p, t, v, false)
}

func (s *Set) update(p *Params, t int64, v float64, allBands bool) Output {
	if !s.init {
		panic("BUG: detectors: Set.Update called before Set.Init")
	}
	var out Output
	rdy := ready(s.n, p.Warmup)
	spread := s.ewma.noise() // before v, for Entropy's record rule
	if p.EWMA.Enabled || (p.Entropy.Enabled && p.Entropy.RecordK > 0) {
		r := s.ewma.update(&p.EWMA, s.n, rdy, v)
		if p.EWMA.Enabled {
			out.Per[KindEWMA] = r
		}
	}
	buf := s.slots()
	w := 2 * int(s.w)
	slopeAgree := 1.0
	if w > 0 {
		ring := buf[:w]
		if p.ZScore.Enabled {
			out.Per[KindZScore] = s.win.zscore(p.ZScore.K, rdy, s.n, v)
		}
		if p.Slope.Enabled {
			out.Per[KindSlope], slopeAgree = s.win.slope(ring, p.Slope.K, rdy, t, agreeGate(&p.Calibration))
		}
		s.win.push(ring, t, v)
	}
	if p.HoltWinters.Enabled {
		b := int(s.b)
		seas, devs := buf[w:w+b], buf[w+b:w+2*b]
		out.Per[KindHoltWinters] = s.hw.update(&p.HoltWinters, seas, devs, s.n, rdy, t, v)
	}
	if p.Entropy.Enabled {
		o := w + 2*int(s.b)
		rec := s.ent.record(v) // against the range before v
		out.Per[KindEntropy] = s.ent.update(&p.Entropy, buf[o:o+int(s.e)], entropyReady(s.n, p), entropySlowReady(s.n, p), v, spread)
		if out.Per[KindEntropy].Ready {
			out.Record = rec
		}
	}
	out.Age = s.n
	slopeOut := out.Per[KindSlope].Score*slopeAgree > 1 // raw: the line left its band
	// calibrateBand's x, per detector.
	var band [numCalibrated]float64
	for k := range numCalibrated {
		band[k] = s.cal[k].apply(&out.Per[k], &p.Calibration)
	}
	out.Per[KindSlope].Score *= slopeAgree
	s.n = inc(s.n)
	// The driver depends only on scores, so the bands can wait for it.
	drv := driver(&out, p, slopeOut)
	if allBands {
		for k := range numCalibrated {
			calibrateBand(&out.Per[k], band[k])
		}
	} else {
		// The bands that Combined and the run hold read: the driver's and
		// the level vote's (the same detector, most of the time).
		if drv < numCalibrated {
			calibrateBand(&out.Per[drv], band[drv])
		}
		if lvl, ok := levelVote(&out); ok && lvl != drv {
			calibrateBand(&out.Per[lvl], band[lvl])
		}
	}
	out.Driver, out.Combined = drv, out.Per[drv]
	s.run, s.held = holdRun(&out, s.run, s.held, v)
	return out
}

// mustValid panics if p is invalid: Params are validated when the config
// is loaded, so an invalid one here is a bug.
func mustValid(p *Params) {
	if err := p.Validate(); err != nil {
		panic("BUG: detectors: invalid params: " + err.Error())
	}
}

// Detector is one detector with its Params bound, for the registry and
// tests. The shards use Set, which calls the concrete types directly.
type Detector interface {
	// Update scores v at time t (ms, strictly increasing), then includes it.
	Update(t int64, v float64) Result
	// Reset forgets every sample.
	Reset()
}

var (
	_ Detector = (*EWMA)(nil)
	_ Detector = (*ZScore)(nil)
	_ Detector = (*HoltWinters)(nil)
	_ Detector = (*Slope)(nil)
	_ Detector = (*Entropy)(nil)
	_ Detector = (*combined)(nil)
)

// New returns detector kind bound to p, Init'ed. A single kind runs
// whether or not it is Enabled in p; KindCombined runs a Set (honouring
// Enabled) and returns Output.Combined. p must be valid and must not
// change afterwards. New panics on an unknown kind or invalid p.
func New(kind Kind, p *Params) Detector {
	switch kind {
	case KindEWMA:
		d := new(EWMA)
		d.Init(p)
		return d
	case KindZScore:
		d := new(ZScore)
		d.Init(p)
		return d
	case KindHoltWinters:
		d := new(HoltWinters)
		d.Init(p)
		return d
	case KindSlope:
		d := new(Slope)
		d.Init(p)
		return d
	case KindEntropy:
		d := new(Entropy)
		d.Init(p)
		return d
	case KindCombined:
		d := &combined{p: p}
		d.s.Init(p)
		return d
	}
	panic(fmt.Sprintf("BUG: detectors.New: unknown kind %d", kind))
}

// combined adapts a Set to Detector.
type combined struct {
	p *Params
	s Set
}

func (d *combined) Update(t int64, v float64) Result { return d.s.Update(d.p, t, v).Combined }
func (d *combined) Reset()                           { d.s.Reset() }
