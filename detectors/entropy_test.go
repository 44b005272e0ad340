package detectors

import (
	"math"
	"math/rand/v2"
	"testing"
)

func entropyParams() Params {
	p := DefaultParams()
	p.Entropy.Enabled = true
	return p
}

// runEntropy feeds v to a fresh Entropy detector, one sample a minute.
func runEntropy(p *Params, v []float64) []Result {
	d := New(KindEntropy, p)
	out := make([]Result, len(v))
	for i, x := range v {
		out[i] = d.Update(int64(i)*60_000, x)
	}
	return out
}

func maxResult(rs []Result) (m float64, at int) {
	for i, r := range rs {
		if r.Score > m {
			m, at = r.Score, i
		}
	}
	return m, at
}

// Ready once the ring is full and Warmup + EntropyWarmup samples came
// before.
func TestEntropyReady(t *testing.T) {
	p := entropyParams()
	rng := rand.New(rand.NewPCG(1, 2))
	v := make([]float64, EntropyWarmup+40)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	for i, r := range runEntropy(&p, v) {
		if want := i >= p.Entropy.Window-1 && i >= p.Warmup+EntropyWarmup; r.Ready != want || (!r.Ready && r.Score != 0) {
			t.Fatalf("sample %d: %+v, want ready %v", i, r, want)
		}
	}
}

// A spike into an empty part of the range is a new regime (score ≥ 2);
// once it has left the window, the noise matches its old regimes again,
// although the range grew ten-fold (the regimes were re-binned).
func TestEntropySpike(t *testing.T) {
	p := entropyParams()
	rng := rand.New(rand.NewPCG(3, 4))
	v := make([]float64, 1200)
	for i := range v {
		v[i] = rng.Float64()
	}
	v[1000] = 10
	out := runEntropy(&p, v)
	if r := out[1000]; !(r.Score >= 2) {
		t.Fatalf("spike: %+v, want score ≥ 2", r)
	}
	if m, at := maxResult(out[1000+p.Entropy.Window:]); m >= 1 {
		t.Fatalf("noise after the spike: score %g at %d, want < 1", m, 1000+p.Entropy.Window+at)
	}
	if r := out[1199]; !(r.Lower >= 0 && r.Upper < 2 && r.Expected > r.Lower && r.Expected < r.Upper) {
		t.Fatalf("band after the spike %+v, want the lowest of 6 bins over [0, 10]", r)
	}
}

// A level shift alarms, then the new level is a regime: one incident, not
// hours of alarms; a return to the old level is a known regime.
func TestEntropyLevelShift(t *testing.T) {
	p := entropyParams()
	rng := rand.New(rand.NewPCG(5, 6))
	v := make([]float64, 3000)
	for i := range v {
		v[i] = rng.NormFloat64()
		if i >= 1000 && i < 2000 {
			v[i] += 20
		}
	}
	out := runEntropy(&p, v)
	if m, _ := maxResult(out[1000:1001]); m < 2 {
		t.Fatalf("shift: score %g, want ≥ 2", m)
	}
	w := p.Entropy.Window
	alarms := func(rs []Result) (n int) {
		for _, r := range rs {
			if r.Score >= 2 {
				n++
			}
		}
		return n
	}
	if n := alarms(out[1000+w : 2000]); n > 20 {
		t.Fatalf("new level: %d alarms once the window is past the shift, want ≤ 20", n)
	}
	if m, _ := maxResult(out[2000:2001]); m >= 1 {
		t.Fatalf("back at the old level: score %g, want < 1 (a known regime)", m)
	}
	if n := alarms(out[2000+w:]); n > 20 {
		t.Fatalf("back at the old level: %d alarms, want ≤ 20", n)
	}
}

// Pure noise never alarms once the regimes are learnt: a window of noise
// that no regime explains (the χ² test at p = 0.01 against regimes that are
// single windows fails on a few windows in a thousand) is only a candidate,
// and the window after it is ordinary noise again. Bounded noise never
// alarms; Gaussian noise alarms only, and rarely, on a new extreme that
// lands in a bin no remembered regime has (+4σ). Heavy-tailed noise is not
// covered: its tail values land in such bins far more often.
func TestEntropyNoiseQuiet(t *testing.T) {
	p := entropyParams()
	shapes := []struct {
		name    string
		bounded bool
		f       func(*rand.Rand) float64
	}{
		{"uniform", true, func(r *rand.Rand) float64 { return 8 + 11*r.Float64() }},
		{"triangular", true, func(r *rand.Rand) float64 { return r.Float64() + r.Float64() }},
		{"quantised uniform", true, func(r *rand.Rand) float64 { return float64(r.IntN(21)) }},
		{"gaussian", false, func(r *rand.Rand) float64 { return 50 + 5*r.NormFloat64() }},
		{"quantised gaussian", false, func(r *rand.Rand) float64 { return math.Round(20 + 3*r.NormFloat64()) }},
	}
	candidates := 0
	for _, sh := range shapes {
		extremes, series := 0, 0
		for seed := range uint64(10) {
			rng := rand.New(rand.NewPCG(seed, 77))
			v := make([]float64, 4000)
			for i := range v {
				v[i] = sh.f(rng)
			}
			out := runEntropy(&p, v)
			lo, hi := v[0], v[0]
			alarmed := false
			for i, r := range out {
				extreme := v[i] < lo || v[i] > hi
				lo, hi = min(lo, v[i]), max(hi, v[i])
				switch {
				case i < 600:
				case r.Score == entropyCandidateScore:
					candidates++
				case r.Score >= 1 && !sh.bounded && extreme:
					extremes++
					alarmed = true
				case r.Score >= 1:
					t.Errorf("%s seed %d: score %g at %d (not a new extreme), want < 1", sh.name, seed, r.Score, i)
				}
			}
			if alarmed {
				series++
			}
		}
		if extremes > 2 {
			t.Errorf("%s: %d alarms on new extremes in 10 series, want ≤ 2", sh.name, extremes)
		}
		t.Logf("%s: %d alarms on new extremes, in %d of 10 series", sh.name, extremes, series)
	}
	if candidates == 0 {
		t.Error("no candidate regime on 50 noise series: the test no longer exercises the confirmation")
	}
	t.Logf("%d candidates dropped", candidates)
}

// A change of distribution inside the range (uniform noise that narrows to
// its middle) gives finite D: a candidate that is confirmed half a window
// or a window later, since the narrow noise is still unlike every older
// regime; a
// clump of values at the top of the range that lasts less than a window is
// a candidate that is dropped.
func TestEntropyConfirm(t *testing.T) {
	p := entropyParams()
	// The fast scale alone: the slow one sees the narrowing too, later
	// (TestEntropySlowScale covers it).
	p.Entropy.SlowScale = 0
	w := p.Entropy.Window
	const at = 2000
	rng := rand.New(rand.NewPCG(8, 9))
	narrow := func() float64 { return 0.52 + 0.04*rng.Float64() } // one bin of six
	v := make([]float64, 3000)
	for i := range v {
		v[i] = rng.Float64()
		if i >= at {
			v[i] = narrow()
		}
	}
	for i := 1000; i < 1010; i++ { // the clump, at the top of the range
		v[i] = 0.9 + 0.1*rng.Float64()
	}
	out := runEntropy(&p, v)
	if m, i := maxResult(out[600:at]); m >= 1 {
		t.Fatalf("before the change: score %g at %d (the clump at 1000 must not alarm)", m, 600+i)
	}
	cand := -1
	for i := 1000; i < 1000+w; i++ {
		if out[i].Score == entropyCandidateScore {
			cand = i
			break
		}
	}
	if cand < 0 {
		t.Fatal("the clump opened no candidate: the test no longer exercises a dropped one")
	}
	first := -1
	for i := at; i < at+3*w; i++ {
		if out[i].Score >= 2 {
			first = i
			break
		}
	}
	if first < at+w/2 {
		t.Fatalf("narrowing: first alarm at %d, want one between %d and %d (half a window or a window after the candidate)", first, at+w/2, at+3*w)
	}
	if out[first-w/2].Score != entropyCandidateScore && out[first-w].Score != entropyCandidateScore {
		t.Fatalf("narrowing: alarm at %d but no candidate half a window or a window before (%+v, %+v)", first, out[first-w/2], out[first-w])
	}
	if m, i := maxResult(out[first+1:]); m >= 1 {
		t.Fatalf("narrow noise after the alarm: score %g at %d, want < 1 (a known regime)", m, first+1+i)
	}
}

// NaN and ±Inf are neither learnt nor scored.
func TestEntropyNonFinite(t *testing.T) {
	p := entropyParams()
	d := New(KindEntropy, &p).(*Entropy)
	for i := range 30 {
		d.Update(int64(i), float64(i%3))
	}
	before := d.e
	for _, x := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if r := d.Update(100, x); r != (Result{}) {
			t.Fatalf("%g: %+v, want the zero Result", x, r)
		}
	}
	if d.e != before {
		t.Fatalf("state changed by non-finite values")
	}
	// Extremes whose range overflows: no panic, finite output.
	for i, x := range []float64{math.MaxFloat64, -math.MaxFloat64, 0, 1} {
		r := d.Update(int64(200+i), x)
		if !isFinite(r.Score) || !isFinite(r.Expected) || !isFinite(r.Lower) || !isFinite(r.Upper) {
			t.Fatalf("%g: %+v", x, r)
		}
	}
}

// With one regime, every new regime evicts the old one: an alternation
// between two levels alarms at every switch; with two or more regimes
// the alternation is learnt.
func TestEntropyRegimesEvict(t *testing.T) {
	v := make([]float64, 4000)
	for i := range v {
		if (i/200)%2 == 1 {
			v[i] = 10 + float64(i%3)
		} else {
			v[i] = float64(i % 3)
		}
	}
	count := func(regimes int) (n int) {
		p := entropyParams()
		p.Entropy.Regimes = regimes
		out := runEntropy(&p, v)
		for _, r := range out[2000:] {
			if r.Score >= 2 {
				n++
			}
		}
		return n
	}
	one, many := count(1), count(16)
	t.Logf("alarms in the second half: 1 regime %d, 16 regimes %d", one, many)
	if one < 10 || many != 0 {
		t.Fatalf("alarms in the second half: 1 regime %d (want ≥ 10, one a switch), 16 regimes %d (want 0)", one, many)
	}
}

// A level shift of 0.75σ is lost in the histogram of 16 single values but
// not in that of 16 means of 8, whose spread is √8 times narrower: on ten
// noise series the slow scale alarms on nearly every one within three of
// its windows (384 samples), the fast scale alone on at most one. Before
// the shift neither scale alarms once both are past their warm-up.
func TestEntropySlowScale(t *testing.T) {
	const at, shift, seeds = 3000, 0.75, 10
	p := entropyParams()
	within := 3 * p.Entropy.Window * p.Entropy.SlowScale
	slowWarm := EntropyWarmup * p.Entropy.SlowScale
	var caught, fastCaught int
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 77))
		v := make([]float64, at+within)
		for i := range v {
			v[i] = rng.NormFloat64()
			if i >= at {
				v[i] += shift
			}
		}
		p := entropyParams()
		both := runEntropy(&p, v)
		p.Entropy.SlowScale = 0
		fast := runEntropy(&p, v)
		// From the slow scale's warm-up on (the fast scale still sets
		// new extremes before that).
		if m, i := maxResult(both[slowWarm:at]); m >= 1 {
			t.Errorf("seed %d: score %g at %d before the shift", seed, m, slowWarm+i)
		}
		if m, _ := maxResult(both[at:]); m >= 2 {
			caught++
		}
		if m, _ := maxResult(fast[at:]); m >= 2 {
			fastCaught++
		}
	}
	t.Logf("a %gσ shift: alarm within %d samples on %d of %d series with the slow scale, %d without", shift, within, caught, seeds, fastCaught)
	if caught < seeds-2 || fastCaught > 1 {
		t.Fatalf("a %gσ shift: alarm within %d samples on %d of %d series with the slow scale (want ≥ %d), %d without (want ≤ 1)",
			shift, within, caught, seeds, seeds-2, fastCaught)
	}
}

// TestEntropyRecord: a new extreme beyond the range by more than
// record_k noise σ alarms at once even where the histogram cannot see it
// (a noisy curve peaks near its maximum every cycle, so the record lands
// in a bin every regime has mass in); without the rule it does not, nor
// does a record within σ. The curve's own new maxima, a fraction of σ
// beyond the old ones, change no score.
func TestEntropyRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	v := make([]float64, 2000)
	for i := range v {
		v[i] = 100 + 10*math.Sin(2*math.Pi*float64(i)/200) + 0.5*rng.NormFloat64()
	}
	peak := 1850 // a crest: the curve is at its maximum
	hi := math.Inf(-1)
	for _, x := range v[:peak] {
		hi = max(hi, x)
	}
	// σ ≈ 2.6 here: the noise plus the EWMA's lag on the curve.
	for _, tc := range []struct {
		excess float64
		alarm  bool
	}{{4, true}, {1.5, false}} {
		v[peak] = hi + tc.excess
		p := entropyParams()
		on := runEntropy(&p, v)
		p.Entropy.RecordK = 0
		off := runEntropy(&p, v)
		for i := range peak {
			if on[i] != off[i] {
				t.Fatalf("sample %d before the record: %+v with the rule, %+v without", i, on[i], off[i])
			}
		}
		if off[peak].Score >= 2 || (on[peak].Score >= 2) != tc.alarm {
			t.Fatalf("a record %g above the maximum scored %g with the rule, %g without: want an alarm (≥ 2) %v with it, none without",
				tc.excess, on[peak].Score, off[peak].Score, tc.alarm)
		}
	}
}

// After a spike, the window holds it for Window−1 more values, and the
// slow ring holds the mean it is part of for Window more means; a window
// that is new only in combination with the spike (a value in a bin the
// regimes know beside it), or a candidate confirmed while the spike is
// still in the window, is the same incident, not a second alarm. A value
// in a bin no regime has still alarms.
func TestEntropyEcho(t *testing.T) {
	p := entropyParams()
	const at = 1500
	n := at + p.Entropy.SlowScale*(p.Entropy.Window+1)
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		v[at] = 8
		out := runEntropy(&p, v)
		if r := out[at]; !(r.Score >= 2) {
			t.Fatalf("seed %d: spike %+v, want an alarm (score ≥ 2)", seed, r)
		}
		for i := at + 1; i < len(v); i++ {
			if out[i].Score > 1 {
				t.Errorf("seed %d: sample %d (%g), %d after the spike: score %g, want ≤ 1", seed, i, v[i], i-at, out[i].Score)
			}
		}
	}
	// A level shift is one incident: at most 2 alarms a series on average
	// in the 1500 values after it (more when the echo held back only
	// windows new by combination, not records and confirmations), and
	// every series alarms.
	for _, shift := range []float64{2, 3, 5, 20} {
		total := 0
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, 6))
			v := make([]float64, 3000)
			for i := range v {
				v[i] = rng.NormFloat64()
				if i >= at {
					v[i] += shift
				}
			}
			n := 0
			for _, r := range runEntropy(&p, v)[at:] {
				if r.Score > 1 {
					n++
				}
			}
			if n == 0 {
				t.Errorf("seed %d: a shift of %gσ never alarmed", seed, shift)
			}
			total += n
		}
		if total > 40 {
			t.Errorf("a shift of %gσ: %d alarms on 20 series after it, want ≤ 40", shift, total)
		}
	}
	// A second spike, into a bin no regime has mass in, while the first
	// is still in the window.
	rng := rand.New(rand.NewPCG(1, 7))
	v := make([]float64, at+p.Entropy.Window)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	v[at], v[at+3] = 8, -9
	if out := runEntropy(&p, v); !(out[at+3].Score >= 2) {
		t.Fatalf("a second spike 3 after the first: %+v, want an alarm (score ≥ 2)", out[at+3])
	}
}

// TestEntropyReuseExact: a window whose histogram is the last one's, after
// a match, reuses that match's D (entropyScale.judge). A Set that forgets
// the last match before every sample, and so computes every window in
// full, gives the same Output bit for bit, on noise, on a steady series
// of a few levels, on a constant and on small counts, and the reuse is
// taken on most samples of the steady ones.
func TestEntropyReuseExact(t *testing.T) {
	p := stateParams()
	nz := noise(5, 1)
	rng := rand.New(rand.NewPCG(5, 6))
	n := 6000
	sine := randomSeries(9, n)
	cases := map[string]func(i int) float64{
		"noise":       func(i int) float64 { return 50 + 3*nz() },
		"levels":      func(i int) float64 { return float64(10 * (1 + i/1500 + rng.IntN(10)/9)) },
		"constant":    func(int) float64 { return 7 },
		"counts":      func(int) float64 { return float64(rng.IntN(3) + rng.IntN(2)) },
		"sine+spikes": func(i int) float64 { return sine.v[i] },
	}
	for name, gen := range cases {
		var a, b Set
		a.Init(&p)
		b.Init(&p)
		w, nb := 2*int(a.w)+2*int(a.b), p.Entropy.Bins
		reused := 0
		for i := range n {
			tm := int64(1_700_000_000_000) + int64(i)*30_000
			v := gen(i)
			sc := &a.ent.fast
			fr, _, _, _ := entropyViews(&p.Entropy, a.slots()[w:])
			y := f32(v - a.ent.ref)
			lo, step := float64(sc.lo), (float64(sc.hi)-float64(sc.lo))/float64(nb)
			if a.ent.seen && sc.matched && int(sc.fill) == len(fr) && sc.wait == 0 && y >= sc.lo && y <= sc.hi &&
				binOf(nb, lo, step, float64(fr[sc.pos])) == binOf(nb, lo, step, float64(y)) {
				reused++
			}
			b.ent.fast.matched, b.ent.slow.matched = false, false
			if got, want := b.Update(&p, tm, v), a.Update(&p, tm, v); got != want {
				t.Fatalf("%s, sample %d: computed in full %+v, with reuse %+v", name, i, got, want)
			}
		}
		t.Logf("%s: %d of %d windows reused the last match", name, reused, n)
		if (name == "levels" || name == "constant") && reused < n/2 {
			t.Errorf("%s: %d of %d windows reused the last match, want most", name, reused, n)
		}
	}
}
