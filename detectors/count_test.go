package detectors

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anomalyd/anomalyd/detectors/statecodec"
)

// countWindow is the window the tests pass to CountShift.Update: the
// default Params.Window.
var countWindow = DefaultParams().Window

// TestCountShiftQuiet feeds Poisson counts of several rates: the test must
// not alarm (score ≥ 2) on any, and reach the band edge (score ≥ 1) on
// almost no sample.
func TestCountShiftQuiet(t *testing.T) {
	const n = 100_000
	for _, lambda := range []float64{0.05, 0.2, 3, 15, 200} {
		r := rand.New(rand.NewPCG(1, uint64(lambda*100)))
		var c CountShift
		var edge, judged int
		for i := range n {
			s, _, ok := c.Update(float64(poisson(r, lambda)), 1, countWindow)
			if ok {
				judged++
			}
			if s >= 2 {
				t.Fatalf("λ %g: sample %d scored %g: an alarm on a quiet Poisson count", lambda, i, s)
			}
			if s >= 1 {
				edge++
			}
		}
		// Judged from its first ten events on (at most a few hundred
		// samples at λ 0.05).
		if judged < n-n/100 {
			t.Errorf("λ %g: judged %d of %d samples: a Poisson count must be tested", lambda, judged, n)
		}
		if edge > n/1000 {
			t.Errorf("λ %g: %d of %d samples at the band edge", lambda, edge, n)
		}
	}
}

// TestCountShiftFindsShift changes the rate of a Poisson count after 2,000
// quiet samples and counts the samples until the score reaches 2: each
// change is under 3σ a sample, which no single sample shows.
func TestCountShiftFindsShift(t *testing.T) {
	for _, tc := range []struct {
		name       string
		from, to   float64
		within     int // median samples to the alarm over the seeds
		secs       float64
		seeds      int
		worstBound int
	}{
		{"requests fall to a quarter", 15, 15.0 / 4, 6, 1, 21, 12},
		{"requests double", 15, 30, 6, 1, 21, 12},
		{"errors from 0.17 to 2 a second", 0.17, 2, 10, 1, 21, 16},
		{"15 s scrape, requests fall by 30 %", 15 * 15, 0.7 * 15 * 15, 3, 15, 21, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var delays []int
			for seed := range tc.seeds {
				r := rand.New(rand.NewPCG(uint64(seed), 7))
				var c CountShift
				for range 2000 {
					if s, _, _ := c.Update(float64(poisson(r, tc.from)), tc.secs, countWindow); s >= 2 {
						t.Fatalf("seed %d: alarm before the shift", seed)
					}
				}
				delay := -1
				for i := range 200 {
					s, rate, _ := c.Update(float64(poisson(r, tc.to)), tc.secs, countWindow)
					if s >= 2 {
						delay = i + 1
						if !closeTo(rate*tc.secs, tc.from, 0.25) {
							t.Errorf("seed %d: judged against a baseline of %g a sample, the rate before the shift was %g", seed, rate*tc.secs, tc.from)
						}
						break
					}
				}
				if delay < 0 {
					t.Fatalf("seed %d: no alarm in 200 samples after the shift", seed)
				}
				delays = append(delays, delay)
			}
			slices.Sort(delays)
			med, worst := delays[len(delays)/2], slices.Max(delays)
			t.Logf("alarm after %v samples", delays)
			if med > tc.within || worst > tc.worstBound {
				t.Errorf("alarm after %v samples (median %d, worst %d), want a median ≤ %d and worst ≤ %d",
					delays, med, worst, tc.within, tc.worstBound)
			}
		})
	}
}

// TestCountShiftBatches: a counter that moves in batches (1,000 every 10
// samples) is no count of independent events and is not judged, from its
// first batch on.
func TestCountShiftBatches(t *testing.T) {
	var c CountShift
	for i := range 5000 {
		d := 0.0
		if i%10 == 9 {
			d = 1000
		}
		s, _, judged := c.Update(d, 1, countWindow)
		if s >= 1 {
			t.Fatalf("sample %d scored %g", i, s)
		}
		if judged && i >= 9 {
			t.Fatalf("sample %d judged: dispersion %g", i, c.dispersion())
		}
	}
}

// TestCountShiftLearnsLevel: a rate that halves and stays there alarms,
// then becomes the new level: the score falls back below the band edge
// within a few windows and stays there.
func TestCountShiftLearnsLevel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var c CountShift
	for range 2000 {
		c.Update(float64(poisson(r, 20)), 1, countWindow)
	}
	alarmed, last := false, -1
	for i := range 2000 {
		s, _, _ := c.Update(float64(poisson(r, 10)), 1, countWindow)
		if s >= 2 {
			alarmed = true
		}
		if s >= 1 {
			last = i
		}
	}
	if !alarmed {
		t.Fatal("a halved rate never alarmed")
	}
	if last > 4*countWindow {
		t.Errorf("still at the band edge %d samples after the shift: the new level is not learnt", last)
	}
}

// TestCountShiftState: a CountShift decoded from its encoding goes on
// exactly as the original, and a decoded state Update cannot make is
// refused.
func TestCountShiftState(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	var a CountShift
	for range 500 {
		a.Update(float64(poisson(r, 4)), 1, countWindow)
	}
	enc := statecodec.Encoder(nil)
	a.StateFields(&enc)
	if len(enc.Bytes()) != CountShiftStateSize {
		t.Fatalf("encoded %d bytes, CountShiftStateSize is %d", len(enc.Bytes()), CountShiftStateSize)
	}
	var b CountShift
	dec := statecodec.Decoder(enc.Bytes(), 0)
	b.StateFields(&dec)
	if err := dec.Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckState(); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("decoded %+v, encoded %+v", b, a)
	}
	for i := range 500 {
		d := float64(poisson(r, 4+float64(i/100)))
		sa, ra, ja := a.Update(d, 1, countWindow)
		sb, rb, jb := b.Update(d, 1, countWindow)
		if sa != sb || ra != rb || ja != jb {
			t.Fatalf("sample %d: restored gives %g %g %v, original %g %g %v", i, sb, rb, jb, sa, ra, ja)
		}
	}
	for _, bad := range []func(c *CountShift){
		func(c *CountShift) { c.up = math.NaN() },
		func(c *CountShift) { c.exposure = math.Inf(1) },
		func(c *CountShift) { c.events = -2 },
		func(c *CountShift) { c.exposure = 0 },
	} {
		c := a
		bad(&c)
		if c.CheckState() == nil {
			t.Errorf("CheckState accepted %+v", c)
		}
	}
}

func TestCountShiftAllocs(t *testing.T) {
	var c CountShift
	d := 0.0
	if n := testing.AllocsPerRun(1000, func() { d++; c.Update(float64(int(d)%7), 1, countWindow) }); n != 0 {
		t.Fatalf("Update allocates %g times", n)
	}
}

func BenchmarkCountShift(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	ds := make([]float64, 1024)
	for i := range ds {
		ds[i] = float64(poisson(r, 5))
	}
	var c CountShift
	b.ResetTimer()
	for i := range b.N {
		c.Update(ds[i&1023], 1, countWindow)
	}
}

// poisson draws a Poisson count of mean lambda: by inversion below 30, by
// the normal approximation, rounded and floored at 0, above.
func poisson(r *rand.Rand, lambda float64) int {
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*r.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// TestCountShiftInitConstant: a count test rebuilt from a run of n
// increments at one rate is the one fed them, for n from 2 up to WarmUp
// at a regular interval.
func TestCountShiftInitConstant(t *testing.T) {
	p := DefaultParams()
	const step = 15_000
	for _, rate := range []float64{0, 0.2, 3} {
		for _, n := range []uint32{2, 40, uint32(p.WarmUp())} {
			var fed, built CountShift
			for range n {
				fed.Update(math.Round(rate*step/1000), step/1000, p.Window)
			}
			t0 := int64(1_700_000_000_000)
			built.InitConstant(&p, rate, n, t0, t0+int64(n-1)*step)
			if fed != built {
				t.Fatalf("rate %g, %d increments: rebuilt %+v, fed %+v", rate, n, built, fed)
			}
		}
	}
}
