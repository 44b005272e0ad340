package detectors

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// fuzzParams picks one of a few configurations from cfg.
func fuzzParams(cfg uint8) Params {
	p := DefaultParams()
	if cfg&1 != 0 {
		p.Window, p.Warmup = 3, 2
	}
	switch cfg >> 1 & 3 {
	case 1:
		p.HoltWinters.Season = 0
	case 2:
		p.HoltWinters.Season, p.HoltWinters.SeasonBuckets = model.Duration(7*time.Second), 7
	case 3:
		p.HoltWinters.Season, p.HoltWinters.SeasonBuckets = model.Duration(48*time.Hour), MaxSeasonBuckets
	}
	if cfg&8 != 0 {
		p.EWMA.Enabled, p.Slope.Enabled = false, false
	}
	if cfg&16 != 0 {
		p.EWMA.Alpha, p.HoltWinters.Alpha, p.HoltWinters.Beta, p.HoltWinters.Gamma = 0.999, 0.999, 0.999, 0.999
	}
	return p
}

// record appends one fuzz input sample: dt in ms (the top bit multiplies
// it by 2^20 for gaps of up to 143 years) and the value's bits.
func record(dst []byte, dt uint32, v float64) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, dt)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

// FuzzSetUpdate feeds arbitrary (dt, value) pairs: Update never panics,
// every score is finite and in [0, MaxScore], a score is 0 unless Ready,
// every band is finite with Lower ≤ Upper,
// Combined is Per[Driver], the Set agrees with the single detectors, and
// its final state survives AppendState and RestoreState.
// Non-finite values are skipped, as the caller guarantees (the shard drops
// stale markers and never passes NaN or ±Inf).
func FuzzSetUpdate(f *testing.F) {
	var b []byte
	f.Add(uint8(0), int64(0), b)
	for i := range 40 {
		b = record(b, 15000, 42) // constant
		_ = i
	}
	f.Add(uint8(0), int64(1_700_000_000_000), b)
	b = nil
	for i, v := range []float64{
		0, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, -0.0,
		math.NaN(), math.Float64frombits(0x7ff0000000000002), math.Inf(1), math.Inf(-1),
		1e308, -1e308, 3.4e38, -3.5e38, 1e-300, 1, 2, 3, 1e12, 1e12 + 1, 5,
	} {
		b = record(b, uint32(1+i*1000), v)
	}
	f.Add(uint8(1), int64(-1), b)
	f.Add(uint8(1), int64(-1), b[:len(b)-5]) // truncated record
	f.Add(uint8(5), int64(math.MaxInt64>>12), b)
	b = nil
	for i := range 60 {
		dt := uint32(15000)
		if i%10 == 9 {
			dt = 1<<31 | 5000 // a gap of 5000·2^20 ms ≈ 61 days
		}
		b = record(b, dt, float64(i%7)*1e6)
	}
	f.Add(uint8(2), int64(0), b)
	f.Add(uint8(31), int64(-1e12), b)

	f.Fuzz(func(t *testing.T, cfg uint8, start int64, data []byte) {
		p := fuzzParams(cfg)
		var set Set
		set.Init(&p)
		var ds [NumKinds]Detector
		for k := range ds {
			ds[k] = New(Kind(k), &p)
		}
		tm := start >> 12 // ±2^51 ms, room for 143-year gaps without overflow
		for i := 0; i+12 <= len(data) && i < 12*2000; i += 12 {
			dt := int64(binary.LittleEndian.Uint32(data[i:]))
			if dt&(1<<31) != 0 {
				dt = (dt &^ (1 << 31)) << 20
			}
			tm += max(dt, 1)
			v := math.Float64frombits(binary.LittleEndian.Uint64(data[i+4:]))
			if !isFinite(v) {
				continue
			}
			o := set.Update(&p, tm, v)
			if o.Driver >= NumKinds || !sameResult(o.Combined, o.Per[o.Driver]) {
				t.Fatalf("sample %d: driver %d, combined %+v", i/12, o.Driver, o.Combined)
			}
			for k, r := range o.Per {
				if !(r.Score >= 0 && r.Score <= MaxScore) || (!r.Ready && r.Score != 0) ||
					!isFinite(r.Expected) || !isFinite(r.Lower) || !isFinite(r.Upper) || r.Lower > r.Upper {
					t.Fatalf("sample %d (t %d, v %g) %s: %+v", i/12, tm, v, Kind(k), r)
				}
				enabled := [NumKinds]bool{p.EWMA.Enabled, p.ZScore.Enabled, p.HoltWinters.Enabled, p.Slope.Enabled}[k]
				if want := ds[k].Update(tm, v); enabled && !sameResult(r, want) {
					t.Fatalf("sample %d %s: Set %+v, detector %+v", i/12, Kind(k), r, want)
				}
			}
		}
		// Every state the detectors reach restores (RestoreState's checks
		// refuse nothing they make) and encodes back to the same bytes.
		st := set.AppendState(nil)
		var r Set
		if rest, err := r.RestoreState(&p, st); err != nil || len(rest) != 0 {
			t.Fatalf("the state after the input does not restore: %d bytes left, error %v", len(rest), err)
		}
		if !bytes.Equal(r.AppendState(nil), st) {
			t.Fatal("the restored state encodes differently")
		}
	})
}

// sameResult compares Results bit for bit, so NaN equals NaN.
func sameResult(a, b Result) bool {
	eq := func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }
	return a.Ready == b.Ready && eq(a.Expected, b.Expected) && eq(a.Lower, b.Lower) && eq(a.Upper, b.Upper) && eq(a.Score, b.Score)
}
