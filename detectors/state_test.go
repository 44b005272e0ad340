package detectors

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/common/model"
)

// stateParams are DefaultParams with a 6 h season, so that a few thousand
// samples at ~30 s cross seasons (as in TestSetMatchesDetectors).
func stateParams() Params {
	p := DefaultParams()
	p.HoltWinters.Season = model.Duration(6 * time.Hour)
	return p
}

// setAfter returns a Set with p that has seen the first n samples of s.
func setAfter(p *Params, s series, n int) *Set {
	set := new(Set)
	set.Init(p)
	for i := range n {
		set.Update(p, s.t[i], s.v[i])
	}
	return set
}

// checkFresh fails unless s is exactly what Init(p) makes.
func checkFresh(t *testing.T, what string, s *Set, p *Params) {
	t.Helper()
	var fresh Set
	fresh.Init(p)
	if !reflect.DeepEqual(*s, fresh) {
		t.Fatalf("%s: not a fresh Init state: Set%s differs", what, diffState(reflect.ValueOf(*s), reflect.ValueOf(fresh)))
	}
}

// diffState returns the path below a of the first field where a and b
// differ (floats by bits) and the two values, "" if none.
func diffState(a, b reflect.Value) string {
	switch a.Kind() {
	case reflect.Struct:
		for i := range a.NumField() {
			if d := diffState(a.Field(i), b.Field(i)); d != "" {
				return "." + a.Type().Field(i).Name + d
			}
		}
	case reflect.Array, reflect.Slice:
		if a.Len() != b.Len() {
			return fmt.Sprintf(": length %d and %d", a.Len(), b.Len())
		}
		for i := range a.Len() {
			if d := diffState(a.Index(i), b.Index(i)); d != "" {
				return fmt.Sprintf("[%d]%s", i, d)
			}
		}
	case reflect.Float32, reflect.Float64:
		if x, y := a.Float(), b.Float(); math.Float64bits(x) != math.Float64bits(y) {
			return fmt.Sprintf(": %v and %v", x, y)
		}
	case reflect.Pointer:
		// Set.mem: the caller compares the allocations (Set.slots).
	case reflect.Bool:
		if a.Bool() != b.Bool() {
			return fmt.Sprintf(": %v and %v", a.Bool(), b.Bool())
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if a.Int() != b.Int() {
			return fmt.Sprintf(": %d and %d", a.Int(), b.Int())
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if a.Uint() != b.Uint() {
			return fmt.Sprintf(": %d and %d", a.Uint(), b.Uint())
		}
	default:
		return fmt.Sprintf(": cannot compare a %s", a.Type())
	}
	return ""
}

// fillState sets every field under v (a settable value at path) to a
// pseudo-random value that is not zero and not NaN: bools true, numbers
// random non-zero, floats finite. It fails on any kind a Set must not
// hold: a pointer other than Set.mem, a map, a string, a slice.
func fillState(t *testing.T, rng *rand.Rand, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			name := path + "." + v.Type().Field(i).Name
			switch name {
			case "Set.w", "Set.b", "Set.e":
				continue // the layout Init derives from Params, checked by the header
			}
			f := v.Field(i)
			fillState(t, rng, reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), name)
		}
	case reflect.Array:
		for i := range v.Len() {
			fillState(t, rng, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Pointer:
		if path != "Set.mem" {
			t.Fatalf("%s is a %s: a Set holds no pointers besides mem; encode it in stateFields and teach this test", path, v.Type())
		}
		// The allocation: filled by the caller, which has the Set.
	case reflect.Bool:
		v.SetBool(true) // false is what Init leaves
	case reflect.Float32, reflect.Float64:
		v.SetFloat((1 + rng.Float64()) * math.Pow(10, float64(rng.IntN(13)-6)) * float64(1-2*rng.IntN(2)))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(rng.Uint64()>>(65-v.Type().Bits())) + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(rng.Uint64()>>(64-v.Type().Bits()) | 1)
	default:
		t.Fatalf("%s is a %s: a Set holds no pointers besides mem; encode it in stateFields and teach this test", path, v.Type())
	}
}

// Every field of a Set and of the states it nests, whatever its value,
// survives AppendState and RestoreState: a field added to any of them but
// not to stateFields keeps the random value here and comes back zero.
func TestSetStateComplete(t *testing.T) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(7, 11))
	for round := range 20 {
		var s Set
		s.Init(&p)
		fillState(t, rng, reflect.ValueOf(&s).Elem(), "Set")
		for i, buf := 0, s.slots(); i < len(buf); i++ {
			fillState(t, rng, reflect.ValueOf(&buf[i]).Elem(), fmt.Sprintf("Set.mem[%d]", i))
		}
		// The indexes RestoreState checks, brought into range (and kept
		// non-zero, so that they are still told apart from Init's zeros).
		s.win.head = 1 + s.win.head%(s.w-1)
		s.win.n = 1 + s.win.n%s.w
		en := &p.Entropy
		for _, sc := range []struct {
			s       *entropyScale
			regimes int
		}{{&s.ent.fast, en.Regimes}, {&s.ent.slow, en.SlowRegimes}} {
			sc.s.pos = 1 + sc.s.pos%uint8(en.Window-1)
			sc.s.fill = 1 + sc.s.fill%uint8(en.Window)
			sc.s.nreg = 1 + sc.s.nreg%uint8(sc.regimes)
		}
		s.ent.nacc = 1 + s.ent.nacc%uint8(en.SlowScale-1)
		// Not state: what the last window matched, which a restored Set
		// recomputes (TestEntropyReuseExact).
		s.ent.fast.matched, s.ent.slow.matched = false, false
		s.ent.fastD, s.ent.slowD = 0, 0

		b := s.AppendState(nil)
		if len(b) != s.StateSize() {
			t.Fatalf("AppendState wrote %d bytes, StateSize is %d: stateFields and the stateFields constant disagree", len(b), s.StateSize())
		}
		var r Set
		rest, err := r.RestoreState(&p, b)
		if err != nil || len(rest) != 0 {
			t.Fatalf("round %d: RestoreState: %d bytes left, error %v", round, len(rest), err)
		}
		if d := diffState(reflect.ValueOf(r), reflect.ValueOf(s)); d != "" {
			t.Fatalf("round %d: restored and saved Set differ at Set%s: a field is missing from stateFields (and setStateVersion needs a bump)", round, d)
		}
		if d := diffState(reflect.ValueOf(r.slots()), reflect.ValueOf(s.slots())); d != "" {
			t.Fatalf("round %d: restored and saved Set differ at Set.mem%s", round, d)
		}
	}
}

// A Set restored from a snapshot goes on exactly as the one saved: every
// later Output is identical, bit for bit, whenever the snapshot is taken.
func TestSetStateResume(t *testing.T) {
	p := stateParams()
	s := randomSeries(31, 4000)
	other := DefaultParams()
	other.Window = 200 // a larger buf for the restore to reuse
	for _, at := range []int{0, 1, 50, 600, 2000, 3999} {
		a := setAfter(&p, s, at)
		state := a.AppendState(nil)
		b := setAfter(&other, randomSeries(32, 500), 500) // dirty, other settings
		buf := &b.slots()[0]
		if rest, err := b.RestoreState(&p, state); err != nil || len(rest) != 0 {
			t.Fatalf("snapshot after %d samples: %d bytes left, error %v", at, len(rest), err)
		}
		if &b.slots()[0] != buf {
			t.Fatalf("snapshot after %d samples: RestoreState reallocated a buf large enough", at)
		}
		for i := at; i < len(s.t); i++ {
			if got, want := b.Update(&p, s.t[i], s.v[i]), a.Update(&p, s.t[i], s.v[i]); got != want {
				t.Fatalf("snapshot after %d samples, sample %d: restored %+v, saved %+v", at, i, got, want)
			}
		}
		if ga, gb := a.AppendState(nil), b.AppendState(nil); !bytes.Equal(ga, gb) {
			t.Fatalf("snapshot after %d samples: the states differ at the end", at)
		}
	}
}

// StateSize is exact for every layout; with DefaultParams it is 979
// bytes (doc.go). Neither direction allocates with a buffer in hand.
func TestSetStateSize(t *testing.T) {
	s := randomSeries(33, 1000)
	for _, tc := range []struct {
		name string
		mod  func(*Params)
		want int
	}{
		{"defaults", func(*Params) {}, 979},
		{"entropy off", func(p *Params) { p.Entropy.Enabled = false }, 275 + 4*(2*30+2*24)},
		{"no slow scale", func(p *Params) { p.Entropy.SlowScale = 0 }, 275 + 4*(2*30+2*24+16+24)},
		{"no season", func(p *Params) { p.HoltWinters.Season = 0 }, 275 + 4*(2*30+68)},
		{"EWMA only", func(p *Params) {
			p.ZScore.Enabled, p.Slope.Enabled, p.HoltWinters.Enabled, p.Entropy.Enabled = false, false, false, false
		}, 275},
	} {
		p := DefaultParams()
		tc.mod(&p)
		set := setAfter(&p, s, len(s.t))
		b := set.AppendState(nil)
		if set.StateSize() != tc.want || len(b) != tc.want {
			t.Errorf("%s: StateSize %d, AppendState %d bytes, want %d", tc.name, set.StateSize(), len(b), tc.want)
		}
		var r Set
		if rest, err := r.RestoreState(&p, b); err != nil || len(rest) != 0 {
			t.Errorf("%s: %d bytes left, error %v", tc.name, len(rest), err)
		}
		dst := make([]byte, 0, set.StateSize())
		if a := testing.AllocsPerRun(100, func() { dst = set.AppendState(dst[:0]) }); a != 0 {
			t.Errorf("%s: AppendState: %g allocations, want 0", tc.name, a)
		}
		if a := testing.AllocsPerRun(100, func() { r.RestoreState(&p, b) }); a != 0 {
			t.Errorf("%s: RestoreState: %g allocations, want 0", tc.name, a)
		}
	}
}

// A state saved with settings that size or index it differently is
// refused with ErrStateParams; rest skips it and s is left fresh.
func TestRestoreStateParams(t *testing.T) {
	saved := stateParams()
	set := setAfter(&saved, randomSeries(34, 2000), 2000)
	// Entropy indexes that only settings of the same sizes can tell apart.
	set.ent.fast.nreg, set.ent.fast.pos, set.ent.nacc = 16, 15, 7
	next := []byte("next series")
	state := append(set.AppendState(nil), next...)
	f := func(name string, mod func(*Params), want string) {
		t.Helper()
		p := saved
		mod(&p)
		var s Set
		rest, err := s.RestoreState(&p, state)
		if want == "" {
			if err != nil || !bytes.Equal(rest, next) {
				t.Errorf("%s: rest %q, error %v, want no error", name, rest, err)
			}
			return
		}
		if !errors.Is(err, ErrStateParams) || err.Error() != want {
			t.Errorf("%s: error\n%v\nwant\n%s (ErrStateParams)", name, err, want)
		}
		if !bytes.Equal(rest, next) {
			t.Errorf("%s: rest %q, want %q", name, rest, next)
		}
		checkFresh(t, name, &s, &p)
	}
	const sizes = "cannot restore detector state: saved with a ring of 30, 24 seasonal slots, 68 entropy slots (176 float32), configured "
	const other = ": the state was saved with other detector settings"
	f("window", func(p *Params) { p.Window = 31 }, sizes+"31, 24, 68 (178)"+other)
	f("season buckets", func(p *Params) { p.HoltWinters.SeasonBuckets = 12 }, sizes+"30, 12, 68 (152)"+other)
	f("no season", func(p *Params) { p.HoltWinters.Season = 0 }, sizes+"30, 0, 68 (128)"+other)
	f("zscore and slope off", func(p *Params) { p.ZScore.Enabled, p.Slope.Enabled = false, false }, sizes+"0, 24, 68 (116)"+other)
	f("entropy off", func(p *Params) { p.Entropy.Enabled = false }, sizes+"30, 24, 0 (108)"+other)
	f("entropy slow scale off", func(p *Params) { p.Entropy.SlowScale = 0 }, sizes+"30, 24, 40 (148)"+other)
	// Settings whose slots add up to the same 68: the indexes tell.
	f("entropy regimes and bins, as many slots", func(p *Params) {
		p.Entropy.Regimes, p.Entropy.Bins, p.Entropy.SlowRegimes = 12, 8, 6
	}, "cannot restore detector state: entropy fast ring position 15, fill 16 and 16 regimes beyond entropy.window 16 and 12 regimes"+other)
	f("entropy window, as many slots", func(p *Params) { p.Entropy.Window, p.Entropy.SlowRegimes = 12, 13 },
		"cannot restore detector state: entropy fast ring position 15, fill 16 and 16 regimes beyond entropy.window 12 and 16 regimes"+other)
	f("entropy slow scale", func(p *Params) { p.Entropy.SlowScale = 4 },
		"cannot restore detector state: entropy holds 7 values towards a slow mean of entropy.slow_scale 4"+other)
	// Settings that keep every size and index restore (see RestoreState).
	f("alpha and season length", func(p *Params) { p.EWMA.Alpha, p.HoltWinters.Season = 0.2, model.Duration(12*time.Hour) }, "")
}

// Every prefix of a state is refused, without a panic, leaving s fresh.
func TestRestoreStateTruncated(t *testing.T) {
	p := stateParams()
	state := setAfter(&p, randomSeries(35, 1500), 1500).AppendState(nil)
	var s Set
	for n := range len(state) {
		rest, err := s.RestoreState(&p, state[:n])
		if err == nil || errors.Is(err, ErrStateParams) || rest != nil {
			t.Fatalf("%d of %d bytes: rest %d bytes, error %v, want a truncation error", n, len(state), len(rest), err)
		}
		checkFresh(t, fmt.Sprintf("%d of %d bytes", n, len(state)), &s, &p)
	}
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "cannot restore detector state: empty input"},
		{5, "cannot restore detector state: truncated: 5 bytes, the header needs 9"},
		{978, "cannot restore detector state: truncated: 978 bytes, the state needs 979"},
	} {
		if _, err := s.RestoreState(&p, state[:tc.n]); err == nil || err.Error() != tc.want {
			t.Errorf("%d bytes: error %v, want %s", tc.n, err, tc.want)
		}
	}
}

// A state no Set can hold is refused (a NaN window mae too: the window
// caps it); the values the detectors may hold (any mass byte) are restored
// as they are.
func TestRestoreStateInvalid(t *testing.T) {
	p := stateParams()
	base := setAfter(&p, randomSeries(36, 1500), 1500)
	staleNaN := math.Float64frombits(0x7ff0000000000002)
	f := func(name string, mod func(s *Set) []byte, want string) {
		t.Helper()
		s := *base
		s.mem = unsafe.SliceData(append([]float32(nil), base.slots()...))
		state := mod(&s)
		if state == nil {
			state = s.AppendState(nil)
		}
		var r Set
		rest, err := r.RestoreState(&p, state)
		if want == "" {
			if err != nil || len(rest) != 0 {
				t.Fatalf("%s: %d bytes left, error %v", name, len(rest), err)
			}
			if got := r.AppendState(nil); !bytes.Equal(got, state) {
				t.Fatalf("%s: restored state encodes differently", name)
			}
			return
		}
		if err == nil || err.Error() != want || errors.Is(err, ErrStateParams) {
			t.Errorf("%s: error\n%v\nwant\n%s", name, err, want)
		}
		checkFresh(t, name, &r, &p)
	}
	const prefix = "cannot restore detector state: "
	f("ewma mean NaN", func(s *Set) []byte { s.ewma.mean = math.NaN(); return nil }, prefix+"ewma mean is NaN")
	f("holt-winters dev stale marker", func(s *Set) []byte { s.hw.dev = staleNaN; return nil }, prefix+"holt-winters dev is NaN")
	f("holt-winters level +Inf", func(s *Set) []byte { s.hw.level = math.Inf(1); return nil }, prefix+"holt-winters level is +Inf")
	f("calibration -Inf", func(s *Set) []byte { s.cal[KindSlope].q = float32(math.Inf(-1)); return nil }, prefix+"slope calibration q is -Inf")
	f("ring value", func(s *Set) []byte { s.slots()[7] = float32(math.NaN()); return nil }, prefix+"ring 7 is NaN")
	f("seasonal slot", func(s *Set) []byte { s.slots()[2*30+30] = float32(math.Inf(1)); return nil }, prefix+"seasonal slot 30 is +Inf")
	f("entropy slow ring", func(s *Set) []byte {
		_, _, sr, _ := entropyViews(&p.Entropy, s.slots()[2*30+2*24:])
		sr[3] = float32(math.NaN())
		return nil
	}, prefix+"entropy slow ring 3 is NaN")
	f("ring head", func(s *Set) []byte { s.win.head = 30; return nil }, prefix+"ring head 30 and length 30 outside its capacity 30")
	f("ring length", func(s *Set) []byte { s.win.n = 31; return nil }, prefix+"ring head 0 and length 31 outside its capacity 30")
	f("version 0", func(s *Set) []byte { b := s.AppendState(nil); b[0] = 0; return b }, prefix+"layout version 0, want 1")
	f("version 2", func(s *Set) []byte { b := s.AppendState(nil); b[0] = 2; return b }, prefix+"layout version 2, want 1")
	f("bool byte", func(s *Set) []byte {
		s.hw.primed = false
		b0 := s.AppendState(nil)
		s.hw.primed = true
		b := s.AppendState(nil)
		for i := range b {
			if b[i] != b0[i] {
				b[i] = 2
				break
			}
		}
		return b
	}, prefix+"bool byte 2 at offset 97, want 0 or 1")
	f("window mae NaN", func(s *Set) []byte { s.win.mae = staleNaN; return nil }, prefix+"window mae is NaN")
	f("masses that look like NaN", func(s *Set) []byte {
		_, fm, _, _ := entropyViews(&p.Entropy, s.slots()[2*30+2*24:])
		for i := range 8 {
			fm[i] = 0xff
		}
		return nil
	}, "")
}

// fuzzStateParams is fuzzParams(cfg) with bit 5 turning Entropy off and
// bit 6 its slow scale.
func fuzzStateParams(cfg uint8) Params {
	p := fuzzParams(cfg)
	if cfg&32 != 0 {
		p.Entropy.Enabled = false
	}
	if cfg&64 != 0 {
		p.Entropy.SlowScale = 0
	}
	return p
}

// FuzzRestoreState: RestoreState never panics; on error s is fresh and
// rest, if any, is the input's tail; a state that restores encodes back
// to exactly the bytes it was read from, and the Set it gives can be
// updated without panicking.
func FuzzRestoreState(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(0), []byte{setStateVersion})
	f.Add(uint8(0), []byte{2, 30, 0, 24, 68, 176, 0, 0, 0})
	for _, cfg := range []uint8{0, 1, 2, 3, 4, 6, 8, 33, 64, 65} {
		p := fuzzStateParams(cfg)
		for _, n := range []int{0, 3, 150, 1200} {
			st := setAfter(&p, randomSeries(uint64(cfg)+37, n), n).AppendState(nil)
			f.Add(cfg, st)
			f.Add(cfg, st[:len(st)-3])
			f.Add(cfg, append(st, 1, 2, 3))
		}
	}
	p := stateParams()
	set := setAfter(&p, randomSeries(38, 500), 500)
	for _, v := range []float64{math.Float64frombits(0x7ff0000000000002), math.Inf(1), math.Inf(-1), math.MaxFloat64, -0.0} {
		s := *set
		s.ewma.mean, s.win.mae = v, v
		f.Add(uint8(0), s.AppendState(nil))
	}

	f.Fuzz(func(t *testing.T, cfg uint8, data []byte) {
		p := fuzzStateParams(cfg)
		var s Set
		rest, err := s.RestoreState(&p, data)
		if err != nil {
			checkFresh(t, err.Error(), &s, &p)
			if rest != nil && !bytes.HasSuffix(data, rest) {
				t.Fatalf("error %v: rest is not the input's tail", err)
			}
			return
		}
		if !bytes.HasSuffix(data, rest) {
			t.Fatal("rest is not the input's tail")
		}
		read := data[:len(data)-len(rest)]
		if got := s.AppendState(nil); !bytes.Equal(got, read) {
			t.Fatalf("restored state encodes to\n%x\nnot the bytes read\n%x", got, read)
		}
		nz := noise(uint64(len(data)), 10)
		for i := range 40 {
			s.Update(&p, 1_700_000_000_000+int64(i)*15000, 100+nz())
		}
	})
}
