package detectors

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/common/model"
)

func TestCombine(t *testing.T) {
	all := DefaultParams()
	slopeOut := true // Slope's raw score is above 1
	f := func(name string, p *Params, per [NumKinds]Result, wantDriver Kind) {
		t.Helper()
		out := Output{Per: per}
		if got := driver(&out, p, slopeOut); got != wantDriver {
			t.Errorf("%s: got driver %s, want %s", name, got, wantDriver)
		}
	}
	r := func(score float64) Result { return Result{Expected: score * 10, Score: score, Ready: true} }
	var none Result
	f("lowest of three", &all, [NumKinds]Result{r(0.5), r(3), r(2), r(0.1)}, KindEWMA)
	f("lowest of three, other order", &all, [NumKinds]Result{r(2), r(0.5), r(3), r(0.1)}, KindZScore)
	f("lower of two", &all, [NumKinds]Result{r(3), none, r(2), r(0.1)}, KindHoltWinters)
	f("one", &all, [NumKinds]Result{none, r(5), none, r(0.1)}, KindZScore)
	f("slope higher", &all, [NumKinds]Result{r(0.5), r(3), r(2), r(2.5)}, KindSlope)
	f("slope above the lowest, below the others", &all, [NumKinds]Result{r(0.5), r(3), r(2), r(1)}, KindSlope)
	f("slope tie keeps level", &all, [NumKinds]Result{r(0.5), r(3), r(2), r(0.5)}, KindEWMA)
	slopeOut = false
	f("slope higher but its raw score ≤ 1", &all, [NumKinds]Result{r(0.5), r(3), r(2), r(2.5)}, KindEWMA)
	f("only slope ready, raw score ≤ 1", &all, [NumKinds]Result{none, none, none, r(0.3)}, KindSlope)
	slopeOut = true
	f("equal scores keep kind order", &all, [NumKinds]Result{r(1), r(1), r(1), none}, KindEWMA)
	f("only slope ready", &all, [NumKinds]Result{none, none, none, r(0.3)}, KindSlope)
	f("nothing ready", &all, [NumKinds]Result{{Expected: 7}, {Expected: 8}, none, none}, KindEWMA)
	hwOnly := DefaultParams()
	hwOnly.EWMA.Enabled, hwOnly.ZScore.Enabled = false, false
	f("nothing ready, first enabled", &hwOnly, [NumKinds]Result{none, none, {Expected: 9}, none}, KindHoltWinters)
}

// randomSeries is a sine with noise, spikes and irregular intervals.
func randomSeries(seed uint64, n int) series {
	nz := noise(seed, 1)
	s := series{t: make([]int64, n), v: make([]float64, n)}
	tm := int64(1_700_000_000_000)
	for i := range n {
		tm += 1 + int64(30000*(1+nz()))
		v := 50 + 20*math.Sin(float64(tm)/1e7) + 3*nz()
		if i%97 == 0 {
			v += 40 * nz()
		}
		s.t[i], s.v[i] = tm, v
	}
	return s
}

// Set runs exactly the code of the single detectors: its Per results equal
// theirs bit for bit, and its Combined equals New(KindCombined)'s.
func TestSetMatchesDetectors(t *testing.T) {
	p := DefaultParams()
	p.HoltWinters.Season = model.Duration(6 * time.Hour) // so the test crosses seasons
	p.Entropy.Enabled = true
	s := randomSeries(21, 5000)
	var set Set
	set.Init(&p)
	var ds [NumKinds + 1]Detector
	for k := range ds {
		ds[k] = New(Kind(k), &p)
	}
	for i := range s.t {
		o := set.Update(&p, s.t[i], s.v[i])
		for k, d := range ds {
			got := o.Combined
			if Kind(k) != KindCombined {
				got = o.Per[k]
			}
			if want := d.Update(s.t[i], s.v[i]); got != want {
				t.Fatalf("sample %d %s: Set gave %+v, detector %+v", i, Kind(k), got, want)
			}
		}
		if o.Combined != o.Per[o.Driver] {
			t.Fatalf("sample %d: Combined %+v is not Per[%s] %+v", i, o.Combined, o.Driver, o.Per[o.Driver])
		}
	}
}

// After Reset, a Set (and every Detector) gives the outputs of a fresh one.
func TestReset(t *testing.T) {
	p := DefaultParams()
	p.HoltWinters.Season = model.Duration(6 * time.Hour)
	s := randomSeries(22, 3000)
	want := runSet(&p, s)
	var set Set
	set.Init(&p)
	buf := &set.slots()[0]
	for i := range 1234 {
		set.Update(&p, s.t[i]-10*day, s.v[i]*3) // other data first
	}
	set.Reset()
	if &set.slots()[0] != buf {
		t.Fatal("Reset reallocated the ring")
	}
	for i := range s.t {
		if got := set.Update(&p, s.t[i], s.v[i]); got != want[i] {
			t.Fatalf("sample %d after Reset: got %+v, want %+v", i, got, want[i])
		}
	}
	for k := range NumKinds + 1 {
		d := New(k, &p)
		var first []Result
		for i := range 500 {
			first = append(first, d.Update(s.t[i], s.v[i]))
		}
		d.Reset()
		for i := range 500 {
			if got := d.Update(s.t[i], s.v[i]); got != first[i] {
				t.Fatalf("%s sample %d after Reset: got %+v, want %+v", k, i, got, first[i])
			}
		}
	}
}

// Disabled detectors are neither updated nor counted, and cost no memory.
func TestSetDisabled(t *testing.T) {
	p := DefaultParams()
	p.ZScore.Enabled, p.Slope.Enabled, p.Entropy.Enabled = false, false, false
	var set Set
	set.Init(&p)
	if len(set.slots()) != 2*24 {
		t.Fatalf("buf has %d float32, want 48 (the seasonal slots only)", len(set.slots()))
	}
	s := randomSeries(23, 2000)
	for i := range s.t {
		o := set.Update(&p, s.t[i], s.v[i])
		if o.Per[KindZScore] != (Result{}) || o.Per[KindSlope] != (Result{}) {
			t.Fatalf("sample %d: disabled detectors gave %+v %+v", i, o.Per[KindZScore], o.Per[KindSlope])
		}
		e, h := o.Per[KindEWMA], o.Per[KindHoltWinters]
		want := KindEWMA // lower of the two; ties keep the lower kind
		if h.Score < e.Score {
			want = KindHoltWinters
		}
		if i >= p.Warmup && o.Driver != want {
			t.Fatalf("sample %d: driver %s for EWMA %g HW %g, want %s", i, o.Driver, e.Score, h.Score, want)
		}
	}
	p.HoltWinters.Enabled = false
	set.Init(&p)
	if set.mem != nil {
		t.Fatalf("EWMA only: buf %d float32, want none", len(set.slots()))
	}
	p.HoltWinters.Enabled, p.HoltWinters.Season = true, 0
	set.Init(&p)
	if set.mem != nil {
		t.Fatalf("EWMA + HW without season: buf %d float32, want none", len(set.slots()))
	}
}

// Warm-up: not Ready (score 0) until Warmup samples came before; ZScore and
// Slope also need 3 samples in the ring.
func TestWarmup(t *testing.T) {
	for _, warmup := range []int{2, 10} {
		p := smallParams()
		p.Warmup = warmup
		s := regular(20, 0, time.Second, func(i int) float64 { return float64(i * i % 7) })
		out := runSet(&p, s)
		for i, o := range out {
			for k, r := range o.Per[:KindEntropy] { // Entropy (off here): TestEntropyReady
				want := i >= warmup && (Kind(k) == KindEWMA || Kind(k) == KindHoltWinters || i >= 3)
				if r.Ready != want || (!r.Ready && r.Score != 0) {
					t.Fatalf("warmup %d sample %d %s: %+v, want ready %v", warmup, i, Kind(k), r, want)
				}
			}
			if o.Combined.Ready != (i >= warmup) {
				t.Fatalf("warmup %d sample %d: combined %+v", warmup, i, o.Combined)
			}
		}
	}
}

func TestSetUpdateDoesNotAllocate(t *testing.T) {
	p := DefaultParams()
	s := randomSeries(24, 4096)
	var set Set
	set.Init(&p)
	i := 0
	if a := testing.AllocsPerRun(10000, func() {
		set.Update(&p, s.t[i%4096]+int64(i/4096)*day*100, s.v[i%4096])
		i++
	}); a != 0 {
		t.Fatalf("Set.Update: %g allocations a call, want 0", a)
	}
	var sink Result
	for k := range NumKinds + 1 {
		d := New(k, &p)
		j := 0
		if a := testing.AllocsPerRun(5000, func() {
			sink = d.Update(s.t[j%4096]+int64(j/4096)*day*100, s.v[j%4096])
			j++
		}); a != 0 {
			t.Fatalf("%s Update: %g allocations a call, want 0", k, a)
		}
	}
	_ = sink
}

// The state of one series with DefaultParams (Entropy on, both scales) is
// at most 1016 bytes, and 744 with Entropy disabled: the struct plus
// its one allocation (2 float32 a ring entry, 2 a seasonal slot, 1 an
// Entropy ring entry at each scale, 1 per 4 Entropy masses).
func TestSetMemoryBudget(t *testing.T) {
	p := DefaultParams()
	for _, ent := range []bool{false, true} {
		p.Entropy.Enabled = ent
		var set Set
		set.Init(&p)
		want := int(unsafe.Sizeof(Set{})) + 4*(2*p.Window+2*p.HoltWinters.SeasonBuckets)
		budget := 744
		if ent {
			want += 4 * entropySlots(&p.Entropy)
			budget = 1016
		}
		if got := set.Bytes(); got != want {
			t.Fatalf("entropy %v: Bytes() = %d, want %d", ent, got, want)
		}
		if got := set.Bytes(); got > budget {
			t.Fatalf("entropy %v: one series takes %d bytes (struct %d + ring %d·8 + slots %d·8), budget %d",
				ent, got, unsafe.Sizeof(Set{}), p.Window, p.HoltWinters.SeasonBuckets, budget)
		}
	}
	p.Entropy.Enabled = false
	var set Set
	set.Init(&p)
	if a := testing.AllocsPerRun(100, func() { var s Set; s.Init(&p) }); a != 1 {
		t.Fatalf("Init: %g allocations, want 1", a)
	}
	if a := testing.AllocsPerRun(100, func() { set.Init(&p) }); a != 0 {
		t.Fatalf("re-Init: %g allocations, want 0 (reuses the ring)", a)
	}
}

func TestMisuse(t *testing.T) {
	f := func(name, wantPanic string, fn func()) {
		t.Helper()
		defer func() {
			t.Helper()
			if r, _ := recover().(string); !strings.HasPrefix(r, wantPanic) {
				t.Errorf("%s: panic %q, want prefix %q", name, r, wantPanic)
			}
		}()
		fn()
	}
	p := DefaultParams()
	f("Update before Init", "BUG: detectors: Set.Update called before Set.Init", func() {
		var s Set
		s.Update(&p, 0, 0)
	})
	bad := p
	bad.Window = 1
	f("Init with invalid params", "BUG: detectors: invalid params: window must be between 3 and 1024, got 1", func() {
		var s Set
		s.Init(&bad)
	})
	f("New with invalid params", "BUG: detectors: invalid params: window", func() { New(KindSlope, &bad) })
	f("New with unknown kind", "BUG: detectors.New: unknown kind 7", func() { New(7, &p) })
}

// Output.Record: 1 + the excess in widths of the range before the sample
// for a sample beyond every earlier value, 1 for a constant series' first
// other value, 0 within the range and before the regime detector is
// Ready; Age counts the samples before.
func TestOutputRecord(t *testing.T) {
	p := DefaultParams()
	var set Set
	set.Init(&p)
	n := p.Warmup + EntropyWarmup + 10
	var o Output
	for i := range n {
		o = set.Update(&p, int64(i+1)*15000, float64(i%10))
		if i < 10 && o.Record != 0 {
			t.Fatalf("sample %d: Record %v before the detector is Ready", i, o.Record)
		}
	}
	if o.Age != uint32(n-1) {
		t.Errorf("Age %d, want %d", o.Age, n-1)
	}
	for _, tc := range []struct{ v, want float64 }{{5, 0}, {9, 0}, {0, 0}, {27, 3}, {-9, 1 + 9.0/27}} {
		o = set.Update(&p, int64(n+1)*15000, tc.v)
		n++
		if math.Abs(o.Record-tc.want) > 1e-6 {
			t.Errorf("value %v after the range [0, 9] (then [0, 27]): Record %v, want %v", tc.v, o.Record, tc.want)
		}
	}

	set.Init(&p)
	for i := range n {
		o = set.Update(&p, int64(i+1)*15000, 7)
	}
	if o.Record != 0 {
		t.Fatalf("a constant series: Record %v", o.Record)
	}
	if o = set.Update(&p, int64(n+1)*15000, 7.5); o.Record != 1 {
		t.Errorf("a constant series' first other value: Record %v, want 1", o.Record)
	}
}

// Nothing alarms before the calibration is ready: a spike right after
// warm-up scores 0 and is not Ready, where the same spike later alarms.
func TestNotReadyUntilCalibrated(t *testing.T) {
	p := DefaultParams()
	for _, tc := range []struct {
		at    int
		alarm bool
	}{{p.Warmup + 5, false}, {p.Warmup + CalibWarmup - 1, false}, {300, true}} {
		s := regular(tc.at+1, 0, 15*time.Second, func(i int) float64 {
			if i == tc.at {
				return 100
			}
			return 10 + math.Sin(float64(i))
		})
		out := runSet(&p, s)
		for i, o := range out[:min(len(out), p.Warmup+CalibWarmup)] {
			for k := range KindEntropy {
				if r := o.Per[k]; r.Ready || r.Score != 0 {
					t.Fatalf("spike at %d: sample %d, %s: %+v before its calibration is ready", tc.at, i, k, r)
				}
			}
		}
		if c := out[tc.at].Combined; (c.Score >= 2) != tc.alarm {
			t.Errorf("spike at sample %d: combined %+v, want alarm %v", tc.at, c, tc.alarm)
		}
	}
}

// An outage that recurs alarms each time: the regime detector remembers
// the first one as a regime (the repeat matches it), but the level
// detectors' bands, which forget within their memories, still put the
// repeat far outside.
func TestRecurringOutageAlarms(t *testing.T) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(1, 2))
	day := int(24 * time.Hour / (15 * time.Second))
	for _, gap := range []float64{0.25, 1, 2} {
		outages := []int{day / 2, day/2 + int(gap*float64(day))}
		s := regular(outages[1]+40, 0, 15*time.Second, func(i int) float64 {
			for _, o := range outages {
				if i >= o && i < o+20 {
					return 0 // 5 minutes at 0
				}
			}
			return 100 + 10*math.Sin(2*math.Pi*float64(i)/float64(day)) + 2*rng.NormFloat64()
		})
		out := runSet(&p, s)
		for k, o := range outages {
			if sc := out[o].Combined.Score; sc < 2 {
				t.Errorf("outages %.2f days apart: outage %d scores %.2f on its first sample, want an alarm (≥ 2)", gap, k+1, sc)
			}
		}
	}
}

func TestHoldRun(t *testing.T) {
	// Level vote: ZScore, Expected 10, band 10 ± 2 (half-width 2).
	lv := func(score float64) Output {
		var o Output
		o.Per[KindEWMA] = Result{Expected: 10, Lower: 6, Upper: 14, Score: score + 1, Ready: true}
		o.Per[KindZScore] = Result{Expected: 10, Lower: 8, Upper: 12, Score: score, Ready: true}
		o.Combined = o.Per[KindZScore]
		return o
	}
	f := func(name string, o Output, run float32, k uint8, v float64, wantScore float64, wantRun float32, wantK uint8) {
		t.Helper()
		gotRun, gotK := holdRun(&o, run, k, v)
		if o.Combined.Score != wantScore || gotRun != wantRun || gotK != wantK {
			t.Errorf("%s: got score %g run %g k %d, want %g %g %d", name, o.Combined.Score, gotRun, gotK, wantScore, wantRun, wantK)
		}
	}
	f("in band, no run", lv(0.5), 0, 0, 11, 0.5, 0, 0)
	f("beyond the band above starts a run", lv(3), 0, 0, 20, 3, 2, 0)
	f("beyond the band below starts a run", lv(3), 0, 0, 0, 3, -2, 0)
	f("run goes on beyond the old half-width", lv(0.3), 2, 0, 13, 1, 2, 1)
	f("a higher score is kept", lv(4), 2, 3, 20, 4, 2, 4)
	f("within the old half-width ends it", lv(0.3), 2, 1, 11.5, 0.3, 0, 0)
	f("the other side ends it", lv(0.3), 2, 1, 7, 0.3, 0, 0)
	f("the other side beyond the band starts a new run", lv(2), 2, 1, 5, 2, -2, 0)
	f("after HoldMax samples it ends", lv(0.3), 2, HoldMax, 13, 0.3, 0, 0)
	f("nothing ready", Output{}, 2, 0, 13, 0, 0, 0)

	// A held sample shows the band it is beyond: the run's half-width
	// around the level vote's Expected, not the band that widened.
	o := lv(0.3)
	o.Per[KindZScore].Lower, o.Per[KindZScore].Upper = -20, 40
	o.Combined = o.Per[KindZScore]
	holdRun(&o, 2, 0, 13)
	if c := o.Combined; c.Expected != 10 || c.Lower != 8 || c.Upper != 12 {
		t.Errorf("held sample 13: band %g [%g, %g], want 10 [8, 12]", c.Expected, c.Lower, c.Upper)
	}
}

// UpdateCombined gives what Update gives, except that the bands of the
// Per results that neither drive Combined nor are the level vote stay
// raw: Combined, Driver, Record, Age, every Per score and Ready flag, and
// those two detectors' bands are bit for bit Update's, on a series that
// has every detector drive at some point.
func TestUpdateCombinedMatchesUpdate(t *testing.T) {
	p := DefaultParams()
	p.HoltWinters.Season = model.Duration(6 * time.Hour)
	s := randomSeries(23, 6000)
	var a, b Set
	a.Init(&p)
	b.Init(&p)
	drove := map[Kind]int{}
	rawBands := 0
	for i := range s.t {
		want, got := a.Update(&p, s.t[i], s.v[i]), b.UpdateCombined(&p, s.t[i], s.v[i])
		if got.Combined != want.Combined || got.Driver != want.Driver || got.Record != want.Record || got.Age != want.Age {
			t.Fatalf("sample %d: UpdateCombined %+v (driver %v), Update %+v (driver %v)", i, got.Combined, got.Driver, want.Combined, want.Driver)
		}
		lvl, lvlOK := levelVote(&want)
		for k := range NumKinds {
			g, w := got.Per[k], want.Per[k]
			if g.Score != w.Score || g.Ready != w.Ready || g.Expected != w.Expected {
				t.Fatalf("sample %d, %v: UpdateCombined %+v, Update %+v", i, Kind(k), g, w)
			}
			if (Kind(k) == want.Driver || (lvlOK && Kind(k) == lvl)) && g != w {
				t.Fatalf("sample %d, %v drives or is the level vote: band %g..%g, Update's %g..%g", i, Kind(k), g.Lower, g.Upper, w.Lower, w.Upper)
			}
			if g != w {
				rawBands++
			}
		}
		if want.Combined.Ready {
			drove[want.Driver]++
		}
	}
	t.Logf("drivers %v; %d Per bands left raw", drove, rawBands)
	if len(drove) < 3 || rawBands == 0 {
		t.Fatalf("drivers %v, %d raw bands: the series does not exercise UpdateCombined", drove, rawBands)
	}
}

// TestInitConstantExact checks InitConstant against a Set fed the constant
// samples one by one: for up to WarmUp samples at a regular interval, the
// Sets agree bit for bit on every output that follows.
func TestInitConstantExact(t *testing.T) {
	p := DefaultParams()
	const step = 15_000
	for _, v := range []float64{0, 3.5, -2e9} {
		for _, n := range []uint32{1, 2, 57, 111, uint32(p.WarmUp())} {
			var fed, built Set
			fed.Init(&p)
			t0 := int64(1_700_000_000_000)
			for i := range int64(n) {
				fed.Update(&p, t0+i*step, v)
			}
			t1 := t0 + int64(n-1)*step
			built.InitConstant(&p, v, n, t0, t1)
			walk := randomSeries(uint64(n), 300)
			for i := range walk.t {
				tm, x := t1+int64(i+1)*step, v+walk.v[i]-50
				a, b := fed.Update(&p, tm, x), built.Update(&p, tm, x)
				if a != b {
					t.Fatalf("v=%g n=%d: sample %d after the constant: outputs differ:\nfed   %+v\nbuilt %+v", v, n, i, a, b)
				}
			}
		}
	}
}

// TestInitConstantLong checks InitConstant for a constant longer than
// WarmUp, which it rebuilds from WarmUp samples: the age is the whole run,
// and a step after it alarms as on a Set fed every sample.
func TestInitConstantLong(t *testing.T) {
	p := DefaultParams()
	const step = 15_000
	n := uint32(2 * 24 * time.Hour / (step * time.Millisecond))
	var fed, built Set
	fed.Init(&p)
	t0 := int64(1_700_000_000_000)
	for i := range int64(n) {
		fed.Update(&p, t0+i*step, 42)
	}
	t1 := t0 + int64(n-1)*step
	built.InitConstant(&p, 42, n, t0, t1)
	var differ int
	for i := range 200 {
		tm, x := t1+int64(i+1)*step, 50.0
		a, b := fed.Update(&p, tm, x), built.Update(&p, tm, x)
		if i == 0 {
			if b.Age != n || a.Age != n {
				t.Errorf("ages %d (fed) and %d (built), want %d", a.Age, b.Age, n)
			}
			if a.Combined.Score < 1 || b.Combined.Score < 1 {
				t.Errorf("the step scored %.3g (fed) and %.3g (built), want both ≥ 1", a.Combined.Score, b.Combined.Score)
			}
		}
		if (a.Combined.Score >= 1) != (b.Combined.Score >= 1) {
			differ++
		}
	}
	if differ > 0 {
		t.Errorf("%d of 200 samples after the step: alarm decisions differ", differ)
	}
}

// TestWarmUp: from sample Params.WarmUp on every enabled detector is Ready,
// Entropy's slow scale included (which Ready does not show), under several
// settings, so that InitConstant's replay of WarmUp samples leaves none of
// them in its warm-up; where the slow scale does not set it, it is the
// first such sample.
func TestWarmUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(p *Params)
	}{
		{"defaults", func(*Params) {}},
		{"entropy off", func(p *Params) { p.Entropy.Enabled = false }},
		{"no slow scale", func(p *Params) { p.Entropy.SlowScale = 0 }},
		{"calibration off, entropy off", func(p *Params) { p.Calibration.Enabled, p.Entropy.Enabled = false, false }},
		{"long warmup", func(p *Params) { p.Warmup = 150 }},
	} {
		p := DefaultParams()
		tc.mod(&p)
		var s Set
		s.Init(&p)
		in := randomSeries(41, p.WarmUp()+1)
		for i := range in.t {
			o := s.Update(&p, in.t[i], in.v[i])
			all := true
			for k := range NumKinds {
				if p.Enabled(Kind(k)) && !o.Per[k].Ready {
					all = false
				}
			}
			slowSets := p.Entropy.Enabled && p.Entropy.SlowScale > 0 && entropySlowWarm(&p) == p.WarmUp()
			if want := i >= p.WarmUp(); all != want && (want || !slowSets) {
				t.Fatalf("%s: at sample %d (WarmUp %d) every enabled detector Ready: %v", tc.name, i, p.WarmUp(), all)
			}
		}
		if p.Entropy.Enabled && p.Entropy.SlowScale > 0 && !entropySlowReady(uint32(p.WarmUp()), &p) {
			t.Fatalf("%s: the slow scale is not Ready at WarmUp %d", tc.name, p.WarmUp())
		}
	}
}
