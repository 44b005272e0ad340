package detectors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/anomalyd/anomalyd/detectors/statecodec"
)

// setStateVersion is the first byte of a state written by
// Set.AppendState: the layout of what follows. Bump it whenever a field is
// added, removed, reordered or resized, or changes meaning (a unit, a
// reference, what a bit or a slot of buf stands for): RestoreState refuses
// any other version and the series starts cold, which is safe, whereas a
// state read under the wrong layout is wrong silently.
// TestSetStateComplete fails when a field is added but not encoded.
const setStateVersion = 1

// Sizes of the encoding, in bytes.
const (
	// stateHeader: version u8, w u16, b u8, e u8, len(buf) u32.
	stateHeader = 1 + 2 + 1 + 1 + 4
	// stateFields: every field after the header but buf, in the order of
	// Set.stateFields: ewmaState 3·f64; hwState 4·f64, 2·i64, 2·u64, bool;
	// entropyState f64, 2 scales (2·f32, 5·u8, u16, f32), f32, u8, bool;
	// window i64, 6·f64 (vRef and the sums), 2·u16, f64 (mae);
	// numCalibrated calibs (2·f32, u32); n u32, held u8, run f32.
	stateFields = 3*8 +
		(4*8 + 2*8 + 2*8 + 1) +
		(8 + 2*(2*4+5+2+4) + 4 + 1 + 1) +
		(8 + 6*8 + 2*2 + 8) +
		int(numCalibrated)*(4+4+4) +
		4 + 1 + 4
)

// ErrStateParams is returned, wrapped, by Set.RestoreState for a state
// that does not fit the Params it is restored with: it was saved with
// detector settings that size the state differently (window, which
// detectors are enabled, holt_winters.season_buckets, the entropy
// settings), or that place its entropy ring positions and regime counts
// beyond these. The caller starts that series cold.
var ErrStateParams = errors.New("the state was saved with other detector settings")

// StateSize returns the exact number of bytes AppendState appends for s:
// 275 + 4·len(buf); 979 with DefaultParams.
func (s *Set) StateSize() int {
	return stateHeader + stateFields + 4*len(s.slots())
}

// AppendState appends the complete state of s to dst and returns the
// extended slice; s is not changed. It allocates nothing if dst has
// StateSize() bytes of spare capacity. Like Update, it must be called by
// the goroutine that owns s, after Init (it panics before).
//
// The encoding is fixed little-endian, field by field (floats as their
// IEEE 754 bits, bools as one byte 0 or 1, no padding):
//
//	version u8 (setStateVersion), w u16, b u8, e u8, len(buf) u32
//	every field of Set and of its nested states (see Set.stateFields)
//	buf: len(buf) float32 bits
//
// The header carries the sizes Init derived from the Params, not the
// Params themselves: a Set does not keep them (see RestoreState). The
// Entropy masses are bytes kept in float32 slots and are encoded as those
// slots' bits, so a state moves only between machines of the same byte
// order (every port anomalyd is built for is little-endian).
func (s *Set) AppendState(dst []byte) []byte {
	if !s.init {
		panic("BUG: detectors: Set.AppendState called before Set.Init")
	}
	dst = slices.Grow(dst, s.StateSize())
	dst = append(dst, setStateVersion)
	dst = binary.LittleEndian.AppendUint16(dst, s.w)
	dst = append(dst, s.b, s.e)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s.slots())))
	c := statecodec.Encoder(dst)
	s.stateFields(&c)
	return c.Bytes()
}

// RestoreState makes s the Set that AppendState encoded at the start of
// src, to be updated with p from then on, and returns the rest of src.
// It calls Init(p) first (so p must be valid, and its allocation is reused if it is
// large enough) and does not allocate otherwise. A restored Set gives,
// sample for sample, the Outputs the saved one would have given.
//
// On error s is left as Init(p) left it, never half-restored, and the
// error says what was wrong:
//
//   - an empty or truncated src, or a layout version other than
//     setStateVersion: rest is nil, nothing after the error can be read;
//   - a state that does not fit p (errors.Is(err, ErrStateParams)): its
//     sizes differ from those Init(p) gives, or an entropy ring position or
//     regime count lies beyond p's; rest skips the state, so a caller can
//     go on with the next one;
//   - a state that no Set can hold: a NaN or ±Inf where the detectors keep
//     values finite, a ring head or length beyond the ring, a bool byte
//     other than 0 or 1; rest skips the state.
//
// These checks keep a restored Set from panicking in Update or holding a
// NaN where the detectors never do; anything else in a state is trusted (a checkpoint file's
// checksum is what protects the bytes). A change of settings that keeps
// every size and index valid (any alpha or k, holt_winters.season,
// entropy.slow_scale, entropy.bins and regimes whose slots add up the
// same) restores without error: the state is read as if it had been made
// with p. A checkpoint file should therefore record the Params, once per
// rule, and not restore its series when they changed.
func (s *Set) RestoreState(p *Params, src []byte) (rest []byte, err error) {
	s.Init(p)
	switch {
	case len(src) == 0:
		return nil, errors.New("cannot restore detector state: empty input")
	case src[0] != setStateVersion:
		return nil, fmt.Errorf("cannot restore detector state: layout version %d, want %d", src[0], setStateVersion)
	case len(src) < stateHeader:
		return nil, fmt.Errorf("cannot restore detector state: truncated: %d bytes, the header needs %d", len(src), stateHeader)
	}
	w, b, e := binary.LittleEndian.Uint16(src[1:]), src[3], src[4]
	nbuf := binary.LittleEndian.Uint32(src[5:])
	if need := uint64(stateHeader+stateFields) + 4*uint64(nbuf); uint64(len(src)) < need {
		return nil, fmt.Errorf("cannot restore detector state: truncated: %d bytes, the state needs %d", len(src), need)
	}
	size := stateHeader + stateFields + 4*int(nbuf)
	rest = src[size:]
	if w != s.w || b != s.b || e != s.e || int(nbuf) != len(s.slots()) {
		return rest, fmt.Errorf("cannot restore detector state: saved with a ring of %d, %d seasonal slots, %d entropy slots (%d float32), "+
			"configured %d, %d, %d (%d): %w", w, b, e, nbuf, s.w, s.b, s.e, len(s.slots()), ErrStateParams)
	}
	c := statecodec.Decoder(src[stateHeader:size], stateHeader)
	s.stateFields(&c)
	if err := s.checkState(p, &c); err != nil {
		s.Reset()
		return rest, fmt.Errorf("cannot restore detector state: %w", err)
	}
	return rest, nil
}

// stateFields walks every field of s in the order of the encoding, buf
// last, appending (c.Encoding()) or decoding each. One list serves both
// directions, so they cannot disagree; w, b, e are the header's, and init
// is Init's (RestoreState calls it), not state.
func (s *Set) stateFields(c *statecodec.Codec) {
	c.F64(&s.ewma.mean)
	c.F64(&s.ewma.variance)
	c.F64(&s.ewma.mae)

	h := &s.hw
	c.F64(&h.level)
	c.F64(&h.trend)
	c.F64(&h.dev)
	c.F64(&h.v0)
	c.I64(&h.start)
	c.I64(&h.epoch)
	c.U64(&h.seen)
	c.U64(&h.trusted)
	c.Bool(&h.primed)

	e := &s.ent
	c.F64(&e.ref)
	for _, sc := range [2]*entropyScale{&e.fast, &e.slow} {
		c.F32(&sc.lo)
		c.F32(&sc.hi)
		c.U8(&sc.nreg)
		c.U8(&sc.pos)
		c.U8(&sc.fill)
		c.U8(&sc.wait)
		c.U8(&sc.echo)
		c.U16(&sc.newer)
		c.F32(&sc.pend)
	}
	c.F32(&e.acc)
	c.U8(&e.nacc)
	c.Bool(&e.seen)

	w := &s.win
	c.I64(&w.tBase)
	c.F64(&w.vRef)
	c.F64(&w.sx)
	c.F64(&w.sy)
	c.F64(&w.sxx)
	c.F64(&w.sxy)
	c.F64(&w.syy)
	c.U16(&w.head)
	c.U16(&w.n)
	c.F64(&w.mae)

	for i := range s.cal {
		c.F32(&s.cal[i].m)
		c.F32(&s.cal[i].q)
		c.U32(&s.cal[i].n)
	}
	c.U32(&s.n)
	c.U8(&s.held)
	c.F32(&s.run)

	c.F32s(s.slots())
}

// checkState reports what in a decoded s no Set made with p can hold (see
// RestoreState); c is the codec that decoded it.
func (s *Set) checkState(p *Params, c *statecodec.Codec) error {
	if err := c.Err(); err != nil {
		return err
	}
	// The detectors keep these finite: the float32s saturate (f32), the
	// EWMA and Holt-Winters start over when they overflow, ref, v0 and
	// vRef are samples, and the window's sums are of at most MaxWindow
	// float32 products, and the window's mae is capped.
	for _, f := range [...]struct {
		name string
		v    float64
	}{
		{"ewma mean", s.ewma.mean}, {"ewma variance", s.ewma.variance}, {"ewma mae", s.ewma.mae},
		{"holt-winters level", s.hw.level}, {"holt-winters trend", s.hw.trend},
		{"holt-winters dev", s.hw.dev}, {"holt-winters v0", s.hw.v0},
		{"entropy ref", s.ent.ref}, {"entropy acc", float64(s.ent.acc)},
		{"entropy fast lo", float64(s.ent.fast.lo)}, {"entropy fast hi", float64(s.ent.fast.hi)},
		{"entropy fast pend", float64(s.ent.fast.pend)},
		{"entropy slow lo", float64(s.ent.slow.lo)}, {"entropy slow hi", float64(s.ent.slow.hi)},
		{"entropy slow pend", float64(s.ent.slow.pend)},
		{"window vRef", s.win.vRef}, {"window mae", s.win.mae}, {"window sx", s.win.sx}, {"window sy", s.win.sy},
		{"window sxx", s.win.sxx}, {"window sxy", s.win.sxy}, {"window syy", s.win.syy},
		{"ewma calibration m", float64(s.cal[KindEWMA].m)}, {"ewma calibration q", float64(s.cal[KindEWMA].q)},
		{"zscore calibration m", float64(s.cal[KindZScore].m)}, {"zscore calibration q", float64(s.cal[KindZScore].q)},
		{"holt-winters calibration m", float64(s.cal[KindHoltWinters].m)},
		{"holt-winters calibration q", float64(s.cal[KindHoltWinters].q)},
		{"slope calibration m", float64(s.cal[KindSlope].m)}, {"slope calibration q", float64(s.cal[KindSlope].q)},
		{"run", float64(s.run)},
	} {
		if !isFinite(f.v) {
			return fmt.Errorf("%s is %g", f.name, f.v)
		}
	}
	w := 2 * int(s.w)
	if s.win.n > s.w || s.win.head >= max(s.w, 1) {
		return fmt.Errorf("ring head %d and length %d outside its capacity %d", s.win.head, s.win.n, s.w)
	}
	if err := finiteSlots("ring", s.slots()[:w]); err != nil {
		return err
	}
	if err := finiteSlots("seasonal slot", s.slots()[w:w+2*int(s.b)]); err != nil {
		return err
	}
	if s.e == 0 {
		return nil
	}
	ep := &p.Entropy
	fr, _, sr, _ := entropyViews(ep, s.slots()[w+2*int(s.b):])
	if err := s.ent.fast.check("fast", ep.Window, ep.Regimes); err != nil {
		return err
	}
	if err := finiteSlots("entropy fast ring", fr); err != nil {
		return err
	}
	if ep.SlowScale == 0 {
		return nil
	}
	if err := s.ent.slow.check("slow", ep.Window, ep.SlowRegimes); err != nil {
		return err
	}
	if int(s.ent.nacc) >= ep.SlowScale {
		return fmt.Errorf("entropy holds %d values towards a slow mean of entropy.slow_scale %d: %w", s.ent.nacc, ep.SlowScale, ErrStateParams)
	}
	return finiteSlots("entropy slow ring", sr)
}

// check reports a ring position, fill or regime count of the scale that
// Entropy with this window and this many regimes cannot hold.
func (sc *entropyScale) check(name string, window, regimes int) error {
	if int(sc.pos) >= window || int(sc.fill) > window || int(sc.nreg) > regimes {
		return fmt.Errorf("entropy %s ring position %d, fill %d and %d regimes beyond entropy.window %d and %d regimes: %w",
			name, sc.pos, sc.fill, sc.nreg, window, regimes, ErrStateParams)
	}
	return nil
}

// finiteSlots reports the first non-finite float32 of slots: all exponent
// bits set (NaN or ±Inf).
func finiteSlots(name string, slots []float32) error {
	for i, x := range slots {
		if math.Float32bits(x)&0x7f800000 == 0x7f800000 {
			return fmt.Errorf("%s %d is %g", name, i, x)
		}
	}
	return nil
}
