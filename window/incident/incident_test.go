package incident

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/detectors"
)

const step = int64(15_000) // ms: a 15 s scrape interval

// run feeds a group of n series for steps samples from t0: score(i, k)
// is series k's combined score at step i. It returns the steps at which an
// incident opened and the peak score.
func run(g *Group, n, steps int, t0 int64, score func(i, k int) float64) (opened []int, peak float64) {
	for i := range steps {
		t := t0 + int64(i)*step
		for k := range n {
			g.Observe(fmt.Sprintf("s%03d", k), t, step, score(i, k))
		}
		st := g.Evaluate(t, n, nil)
		if st.Opened {
			opened = append(opened, i)
		}
		peak = max(peak, st.Score)
	}
	return opened, peak
}

// noise is a score that leaves the band (≥ 1) about once in 1/p samples,
// rarely by much: what calibrated detectors give on a quiet series.
func noise(rng *rand.Rand, p float64) float64 {
	if rng.Float64() < p {
		return 1 + rng.ExpFloat64()*0.5
	}
	return rng.Float64() * 0.8
}

const day = int(24 * time.Hour / (15 * time.Second))

// A spike of one noisy series is noise; ten series shifting together
// are one incident, however many of them join.
func TestSpikeVersusShift(t *testing.T) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(1, 2))
	g := NewGroup(&p)
	const n = 20
	opened, _ := run(g, n, 2*day, 1, func(i, k int) float64 {
		switch {
		case k == 3 && i == day+100:
			return 3 // a spike: three times the band's half-width
		}
		return noise(rng, 1.0/500)
	})
	if len(opened) != 0 {
		t.Fatalf("a quiet group of %d series with one spike opened incidents at steps %v", n, opened)
	}
	t1 := 1 + int64(2*day)*step
	opened, peak := run(g, n, 200, t1, func(i, k int) float64 {
		if k < 10 && i >= 50 && i < 80 {
			return 2 + float64(k%3) // ten series shift together for 30 samples
		}
		return noise(rng, 1.0/500)
	})
	if len(opened) != 1 || opened[0] < 50 || opened[0] > 52 {
		t.Fatalf("ten series shifting together at step 50 opened incidents at %v (peak %.2f); want one within 2 samples", opened, peak)
	}
	if g.Opened() != 1 {
		t.Errorf("%d incidents opened in all; want the one", g.Opened())
	}
}

// A series far outside a band it has not left for days opens an incident
// alone; the same excursion on a series that goes that far every few
// hours does not.
func TestOneSeriesExtreme(t *testing.T) {
	p := DefaultParams()
	for _, tc := range []struct {
		name  string
		every int // samples between the series' excursions to 150-300, 0: none
		want  int
	}{{"quiet series", 0, 1}, {"series with regular excursions", 500, 0}} {
		rng := rand.New(rand.NewPCG(3, 4))
		g := NewGroup(&p)
		opened, peak := run(g, 10, 3*day, 1, func(i, k int) float64 {
			switch {
			case k == 0 && i == 3*day-10:
				return 200
			case k == 0 && tc.every > 0 && i%tc.every == 7:
				return 150 + 150*rng.Float64()
			}
			return noise(rng, 0)
		})
		// The regular series opens incidents while its excursions are new;
		// only the last day counts.
		var late []int
		for _, o := range opened {
			if o >= 2*day {
				late = append(late, o)
			}
		}
		if len(late) != tc.want {
			t.Errorf("%s: an excursion to 200 on the third day opened incidents at %v (peak %.2f); want %d", tc.name, late, peak, tc.want)
		}
	}
}

// An outage that recurs opens an incident each time; between them the
// incident closes after Quiet samples.
func TestRecurringOutage(t *testing.T) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(5, 6))
	g := NewGroup(&p)
	opened, _ := run(g, 8, 3*day, 1, func(i, k int) float64 {
		for _, at := range []int{day / 2, 2 * day} {
			if k < 4 && i >= at && i < at+20 {
				return 4
			}
		}
		return noise(rng, 1.0/1000)
	})
	if len(opened) != 2 || opened[0] != day/2 || opened[1] != 2*day {
		t.Fatalf("two outages at %d and %d opened incidents at %v; want one at each start", day/2, 2*day, opened)
	}
}

// A group of 500 quiet series does not page more often than a group of 5
// with the same series: the threshold grows with the number of series
// that could be unusual by chance.
func TestLargeGroupNoMoreFalseIncidents(t *testing.T) {
	p := DefaultParams()
	count := func(n int) int {
		rng := rand.New(rand.NewPCG(7, uint64(n)))
		g := NewGroup(&p)
		opened, _ := run(g, n, 2*day, 1, func(i, k int) float64 { return noise(rng, 1.0/300) })
		return len(opened)
	}
	small, large := count(5), count(500)
	if large > max(small, 1) {
		t.Errorf("chance incidents over 2 days: %d with 500 series, %d with 5; want no more with 500", large, small)
	}
}

// The group remembers at most MaxMembers series.
func TestMaxMembers(t *testing.T) {
	p := DefaultParams()
	p.MaxMembers = 8
	g := NewGroup(&p)
	for k := range 100 {
		g.Observe(fmt.Sprintf("s%d", k), 1+int64(k)*step, step, 2)
	}
	if len(g.members) != 8 {
		t.Fatalf("%d members, want at most 8", len(g.members))
	}
	if _, ok := g.members["s99"]; !ok {
		t.Fatal("the newest series was evicted; want the oldest evidence to go")
	}
}

// TestReason: the words follow the detector that drove the score and
// where the value lies.
func TestReason(t *testing.T) {
	for _, tc := range []struct {
		d    Detail
		want string
	}{
		{Detail{Driver: detectors.KindEntropy, Score: 20, Value: 9, Expected: 5}, "new high beyond everything seen"},
		{Detail{Driver: detectors.KindEntropy, Score: 20, Value: 1, Expected: 5}, "new low beyond everything seen"},
		{Detail{Driver: detectors.KindEntropy, Score: 3, Value: 9, Expected: 5}, "value in a range the series does not usually take (level shift)"},
		{Detail{Driver: detectors.KindSlope, Score: 3, Value: 9, Expected: 5}, "sustained drift above the expected band"},
		{Detail{Driver: detectors.KindHoltWinters, Score: 3, Value: 1, Expected: 5}, "seasonal deviation: below what is usual at this time"},
		{Detail{Driver: detectors.KindZScore, Score: 3, Value: 9, Expected: 5, Lower: 4, Upper: 6}, "spike above the expected band"},
		{Detail{Driver: detectors.KindEWMA, Score: 3, Value: 1, Expected: 5, Lower: 4, Upper: 6}, "drop below the expected band"},
		{Detail{Driver: detectors.KindEWMA, Score: 30, Value: 4.5, Expected: 5, Lower: 4, Upper: 6},
			"sustained shift below the expected value: the recent samples together are unusual, this one is within its band"},
	} {
		if got := tc.d.Reason(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.d, got, tc.want)
		}
	}
}

// A record is weighed by how rare records are, not by its score: a
// series that sets a new high about once a day (each scored far outside
// its noise, as a burst is) opens nothing, nor does a young series' new
// high; a burst forty range widths beyond anything the series took opens
// an incident alone.
func TestRecords(t *testing.T) {
	p := DefaultParams()
	for _, tc := range []struct {
		name   string
		at     int     // step of the record under test
		record float64 // its Record: 1 + excess in range widths
		want   int
	}{
		{"young series, new high 3 widths out", 100, 4, 0},
		{"a day's new high, just beyond", 3*day - 10, 1.2, 0},
		{"a burst 40 widths beyond", 3*day - 10, 41, 1},
	} {
		rng := rand.New(rand.NewPCG(9, 10))
		g := NewGroup(&p)
		var opened []int
		for i := range 3 * day {
			t0 := 1 + int64(i)*step
			for k := range 10 {
				score, d := noise(rng, 1.0/500), Detail{Age: uint32(i)}
				if k == 0 && i%day == day/2 {
					// the series' daily new high, scored 80 in its noise
					score, d.Record = 80, 1.1
				}
				if k == 0 && i == tc.at {
					score, d.Record = 80, tc.record
				}
				g.ObserveDetail(fmt.Sprintf("s%03d", k), t0, step, score, d)
			}
			if st := g.Evaluate(t0, 10, nil); st.Opened {
				opened = append(opened, i)
			}
		}
		var atRecord int
		for _, o := range opened {
			if o >= tc.at && o <= tc.at+2 {
				atRecord++
			}
		}
		if atRecord != tc.want || len(opened) != tc.want {
			t.Errorf("%s: incidents opened at steps %v; want %d at step %d", tc.name, opened, tc.want, tc.at)
		}
	}
}

// Records of one series in a row are rarer than the same records apart:
// three modest new highs in a row open an incident, three apart do not,
// and a day-long climb the detectors keep flagging is one incident, not
// one per new high.
func TestChainedRecords(t *testing.T) {
	p := DefaultParams()
	at := 2 * day
	for _, tc := range []struct {
		name    string
		records []int // steps at which series 0 sets a record
		want    int
	}{
		{"three new highs in a row", []int{at, at + 1, at + 2}, 1},
		{"three new highs apart", []int{at, at + 10, at + 20}, 0},
		{"one new high", []int{at}, 0},
	} {
		g := NewGroup(&p)
		rng := rand.New(rand.NewPCG(11, 12))
		rec := map[int]bool{}
		for _, i := range tc.records {
			rec[i] = true
		}
		var opened []int
		for i := range 3 * day {
			t0 := 1 + int64(i)*step
			for k := range 10 {
				score, d := noise(rng, 1.0/500), Detail{Age: uint32(i)}
				if k == 0 && rec[i] {
					score, d.Record = 20, 1.3
				}
				g.ObserveDetail(fmt.Sprintf("s%03d", k), t0, step, score, d)
			}
			if st := g.Evaluate(t0, 10, nil); st.Opened {
				opened = append(opened, i)
			}
		}
		if len(opened) != tc.want || tc.want > 0 && (opened[0] < at || opened[0] > at+2) {
			t.Errorf("%s: incidents opened at steps %v; want %d at steps %d to %d", tc.name, opened, tc.want, at, at+2)
		}
	}

	// A ramp: series 0 sets a new high every sample for a day.
	g := NewGroup(&p)
	rng := rand.New(rand.NewPCG(13, 14))
	var opened []int
	for i := range 3 * day {
		t0 := 1 + int64(i)*step
		for k := range 10 {
			score, d := noise(rng, 1.0/500), Detail{Age: uint32(i)}
			if k == 0 && i >= day && i < 2*day {
				score, d.Record = 5, 1.01
			}
			g.ObserveDetail(fmt.Sprintf("s%03d", k), t0, step, score, d)
		}
		if st := g.Evaluate(t0, 10, nil); st.Opened {
			opened = append(opened, i)
		}
	}
	if len(opened) != 1 || opened[0] > day+2 {
		t.Errorf("climb from step %d to %d: incidents opened at steps %v; want one at its start", day, 2*day, opened)
	}
}

// TestEvaluateKeepsTheMostSurprising: with more live series than the score
// reads, Evaluate keeps exactly the first maxFisher of them in order (most
// surprising first, ties by series), as sorting them all would, and counts
// them all.
func TestEvaluateKeepsTheMostSurprising(t *testing.T) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(3, 5))
	for _, n := range []int{10, maxFisher, maxFisher + 1, 300} {
		g := NewGroup(&p)
		t0 := int64(1_700_000_000_000)
		for i := range 200 {
			tm := t0 + int64(i)*step
			for k := range n {
				score := noise(rng, 0.02)
				if i == 199 {
					score = 1 + float64(rng.IntN(8)) // ties in surprise, told apart by series
				}
				g.Observe(fmt.Sprintf("s%03d", k), tm, step, score)
			}
		}
		tm := t0 + 199*step
		var top []Contributor
		st := g.Evaluate(tm, n, &top)
		var want []Contributor
		for _, m := range g.members {
			if tm < m.live && tm >= m.since {
				want = append(want, Contributor{Series: m.key, T: m.at, Score: m.score, Surprise: m.surprise, Detail: m.detail})
			}
		}
		slices.SortFunc(want, func(a, b Contributor) int {
			return cmp.Or(cmp.Compare(b.Surprise, a.Surprise), strings.Compare(a.Series, b.Series))
		})
		if st.Series != len(want) || len(want) < min(n, maxFisher) {
			t.Fatalf("%d series: %d live, %d by the members (the test wants them all live)", n, st.Series, len(want))
		}
		if !reflect.DeepEqual(top, want[:min(len(want), maxFisher)]) {
			t.Fatalf("%d series: top\n%v\nwant\n%v", n, top, want[:min(len(want), maxFisher)])
		}
	}
}

// BenchmarkEvaluate is one evaluation of a node_exporter-sized group (500
// series) in which 200 show live evidence, as a shard batch brings it.
func BenchmarkEvaluate(b *testing.B) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(3, 5))
	g := NewGroup(&p)
	t0 := int64(1_700_000_000_000)
	for i := range 100 {
		for k := range 500 {
			score := noise(rng, 0.01)
			if i == 99 && k%5 < 2 {
				score = 1 + rng.Float64()
			}
			g.Observe(fmt.Sprintf("s%03d", k), t0+int64(i)*step, step, score)
		}
	}
	var top []Contributor
	b.ReportAllocs()
	for b.Loop() {
		g.Evaluate(t0+99*step, 500, &top)
	}
}

// TestLogPartialExp checks ln Σ_{j<k} T^j/j! against the sum in 256-bit
// floats, from T near 0 to far beyond k, where the terms would overflow a
// float64.
func TestLogPartialExp(t *testing.T) {
	for _, T := range []float64{1e-9, 0.3, 1, 2.5, 7, 31.9, 64, 150, 1e4, 1e9, 1e300} {
		for k := 1; k <= maxFisher+1; k++ {
			sum, term := new(big.Float).SetPrec(256), new(big.Float).SetPrec(256).SetInt64(1)
			bt := new(big.Float).SetPrec(256).SetFloat64(T)
			for j := range k {
				if j > 0 {
					term.Mul(term, bt)
					term.Quo(term, new(big.Float).SetInt64(int64(j)))
				}
				sum.Add(sum, term)
			}
			mant := new(big.Float)
			exp := sum.MantExp(mant)
			m, _ := mant.Float64()
			want := math.Log(m) + float64(exp)*math.Ln2
			if got := logPartialExp(T, k); math.Abs(got-want) > 1e-12*max(1, math.Abs(want)) {
				t.Fatalf("T=%g k=%d: %v, want %v", T, k, got, want)
			}
		}
	}
}
