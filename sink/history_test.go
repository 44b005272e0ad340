package sink

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/selfmon"
	"github.com/anomalyd/anomalyd/window/series"
)

const testStep = 15_000 // ms between records, a 15 s scrape interval

// newTestHistory returns a History with testNames and its registry.
func newTestHistory(retention time.Duration) (*History, *selfmon.Registry) {
	reg := selfmon.NewRegistry()
	return NewHistory(retention, 1_000_000, func() series.Names { return testNames }, reg), reg
}

// histOracle is what a History should hold: every output series' samples,
// by labelKey, built from the records by the documented rules.
type histOracle map[string][]sample

func (o histOracle) add(names series.Names, recs ...series.Record) {
	for _, r := range recs {
		for m := r.Slots(); m != 0; m &= m - 1 {
			out := bits.TrailingZeros16(m)
			lbls := series.AppendOutputLabels(nil, r.Series, names.Name(out), r.DetectorOf(out))
			k := labelKey(lbls)
			v := r.Value(out)
			if r.Stale {
				if len(o[k]) == 0 {
					continue // no series to end
				}
				v = staleNaN
			}
			if n := len(o[k]); n > 0 && o[k][n-1].T >= r.T {
				continue // out of order
			}
			o[k] = append(o[k], sample{r.T, v})
		}
	}
}

// in returns the oracle restricted to [mint, maxt], series without samples
// left out.
func (o histOracle) in(mint, maxt int64) histOracle {
	out := histOracle{}
	for k, ss := range o {
		for _, s := range ss {
			if s.T >= mint && s.T <= maxt {
				out[k] = append(out[k], s)
			}
		}
	}
	return out
}

// decodeChunk decodes an XOR chunk with chunkenc.
func decodeChunk(t *testing.T, b []byte) []sample {
	t.Helper()
	c, err := chunkenc.FromData(chunkenc.EncXOR, b)
	if err != nil {
		t.Fatalf("chunk: %v", err)
	}
	var out []sample
	it := c.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		out = append(out, sample{ts, v})
	}
	if err := it.Err(); err != nil {
		t.Fatalf("chunk: %v", err)
	}
	if len(out) != c.NumSamples() {
		t.Fatalf("chunk decodes to %d samples, header says %d", len(out), c.NumSamples())
	}
	return out
}

// queryAll returns what h.query returns for ms over [mint, maxt], chunks
// decoded and trimmed to the range, checking chunk times on the way.
func queryAll(t *testing.T, h *History, mint, maxt int64, ms ...*labels.Matcher) (histOracle, []string) {
	t.Helper()
	got := histOracle{}
	var order []string
	for _, m := range h.query(ms, mint, maxt) {
		k := labelKey(m.labels)
		order = append(order, k)
		for _, c := range m.chunks {
			ss := decodeChunk(t, c.b)
			if ss[0].T != c.minT || ss[len(ss)-1].T != c.maxT {
				t.Errorf("%s: chunk says [%d, %d], holds [%d, %d]", k, c.minT, c.maxT, ss[0].T, ss[len(ss)-1].T)
			}
			if c.maxT < mint || c.minT > maxt {
				t.Errorf("%s: chunk [%d, %d] outside the query range [%d, %d]", k, c.minT, c.maxT, mint, maxt)
			}
			for _, s := range ss {
				if s.T >= mint && s.T <= maxt {
					got[k] = append(got[k], s)
				}
			}
		}
	}
	return got, order
}

func compareOracle(t *testing.T, got, want histOracle) {
	t.Helper()
	for k, w := range want {
		if !sameSamples(got[k], w) {
			t.Errorf("series %s:\n got %v\nwant %v", k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected series %s: %v", k, got[k])
		}
	}
}

// walkRecord advances the random walk *prev and returns a record around it:
// a score and a band like a detector's, deterministic for a seeded rng.
func walkRecord(rng *rand.Rand, s *series.Info, ts int64, det detectors.Kind, prev *float64) series.Record {
	*prev += rng.NormFloat64()
	v := *prev
	return series.Record{Series: s, T: ts, Detector: det, Score: math.Abs(rng.NormFloat64()), Expected: v, Lower: v - 3, Upper: v + 3}
}

// metricValue returns the value of the self metric line that starts with
// series (name and labels as written, e.g. `x_total{code="200"}`).
func metricValue(t *testing.T, reg *selfmon.Registry, infos string) float64 {
	t.Helper()
	var b strings.Builder
	if err := reg.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, infos+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("%s not in self metrics:\n%s", infos, b.String())
	return 0
}

// checkSorted fails unless lsets is sorted as Prometheus's labels.Compare
// sorts label sets.
func checkSorted(t *testing.T, lsets [][]prompb.Label) {
	t.Helper()
	toLabels := func(ls []prompb.Label) labels.Labels {
		b := labels.NewScratchBuilder(len(ls))
		for _, l := range ls {
			b.Add(l.Name, l.Value)
		}
		return b.Labels()
	}
	for i := 1; i < len(lsets); i++ {
		if labels.Compare(toLabels(lsets[i-1]), toLabels(lsets[i])) >= 0 {
			t.Errorf("series not sorted: %s before %s", labelKey(lsets[i-1]), labelKey(lsets[i]))
		}
	}
}

// chunkSamples is the sample count in an XOR chunk's header.
func chunkSamples(b []byte) int { return int(b[0])<<8 | int(b[1]) }

func TestHistoryAppendQuery(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	a := mkSeries("__name__", "cpu", "job", "a")
	b := mkSeries("__name__", "mem", "job", "b", "metric", "clash")
	rng := rand.New(rand.NewPCG(1, 2))
	oracle := histOracle{}
	var va, vb float64
	const base = 1_700_000_000_000
	for i := range 300 {
		ts := int64(base + i*testStep)
		recs := []series.Record{walkRecord(rng, a, ts, detectors.KindCombined, &va), walkRecord(rng, b, ts, detectors.KindCombined, &vb)}
		if i < 10 { // warm-up: the score only
			for j := range recs {
				recs[j].Warmup, recs[j].Score = true, 0
			}
		}
		recs = append(recs, walkRecord(rng, a, ts, detectors.KindEWMA, &va)) // per_detector on for a
		h.Append(recs)
		oracle.add(testNames, recs...)
	}
	got, order := queryAll(t, h, math.MinInt64, math.MaxInt64)
	compareOracle(t, got, oracle)
	if len(order) != 12 {
		t.Errorf("%d infos, want 12 (2 inputs × combined + 1 × ewma, × 4 outputs)", len(order))
	}
	// 300 samples a series: chunks of 120, 120 and a head of 60.
	var lsets [][]prompb.Label
	for _, m := range h.query(nil, math.MinInt64, math.MaxInt64) {
		lsets = append(lsets, m.labels)
		var sizes []int
		for _, c := range m.chunks {
			sizes = append(sizes, len(decodeChunk(t, c.b)))
		}
		want := []int{120, 120, 60}
		// Sorted, so __name__ comes first; warm-up records (combined only) have no band.
		if m.labels[0].Value != "anomaly_score" && strings.Contains(labelKey(m.labels), "detector=combined") {
			want = []int{120, 120, 50}
		}
		if fmt.Sprint(sizes) != fmt.Sprint(want) {
			t.Errorf("%s: chunk sizes %v, want %v", labelKey(m.labels), sizes, want)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 12 {
		t.Errorf("anomalyd_history_series = %g, want 12", v)
	}
	if v := metricValue(t, reg, "anomalyd_history_samples_appended_total"); v != 3*300*4-2*10*3 {
		t.Errorf("anomalyd_history_samples_appended_total = %g, want %d", v, 3*300*4-2*10*3)
	}
	checkSorted(t, lsets)
	size := 0
	for _, m := range h.query(nil, math.MinInt64, math.MaxInt64) {
		for _, c := range m.chunks {
			size += len(c.b)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_bytes"); v != float64(size) {
		t.Errorf("anomalyd_history_bytes = %g, want %d (the chunks' lengths)", v, size)
	}
}

// TestHistoryRetention: chunks whose newest sample is older than the
// newest sample appended minus the retention are dropped, whole; a series
// without chunks is dropped; the gauges follow.
func TestHistoryRetention(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	live := mkSeries("__name__", "live")
	gone := mkSeries("__name__", "gone")
	oracle := histOracle{}
	const n = 3 * 240 // 3 h at 15 s
	for i := range n {
		ts := int64(i * testStep)
		recs := mkRecords([]*series.Info{live}, ts)
		if i < 100 { // gone stops after 25 min
			recs = append(recs, mkRecords([]*series.Info{gone}, ts)...)
		}
		h.Append(recs)
		oracle.add(testNames, recs...)
	}
	newest := int64((n - 1) * testStep)
	cutoff := newest - time.Hour.Milliseconds()
	ms := h.query(nil, math.MinInt64, math.MaxInt64)
	if len(ms) != 4 {
		t.Fatalf("%d series after 3h, want the 4 of %q only: %v", len(ms), "live", ms)
	}
	for _, m := range ms {
		first := m.chunks[0]
		if first.maxT < cutoff {
			t.Errorf("%s: chunk [%d, %d] kept, older than the cutoff %d", labelKey(m.labels), first.minT, first.maxT, cutoff)
		}
		// Chunks are 120 samples = 30 min: the oldest kept starts at most
		// a chunk plus a sweep interval (1h/16) before the cutoff.
		if slack := int64(120*testStep) + time.Hour.Milliseconds()/sweepFraction; first.minT < cutoff-slack {
			t.Errorf("%s: oldest chunk starts at %d, more than %d ms before the cutoff %d", labelKey(m.labels), first.minT, slack, cutoff)
		}
		// What is kept is exact: the oracle's samples from the first kept one on.
		var kept []sample
		for _, c := range m.chunks {
			kept = append(kept, decodeChunk(t, c.b)...)
		}
		k := labelKey(m.labels)
		if want := oracle.in(first.minT, math.MaxInt64)[k]; !sameSamples(kept, want) {
			t.Errorf("%s: kept %d samples, want the %d from %d on", k, len(kept), len(want), first.minT)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 4 {
		t.Errorf("anomalyd_history_series = %g, want 4", v)
	}
	size := 0
	for _, m := range ms {
		for _, c := range m.chunks {
			size += len(c.b)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_bytes"); v != float64(size) {
		t.Errorf("anomalyd_history_bytes = %g, want %d", v, size)
	}
	// A series that comes back after eviction starts anew.
	h.Append(mkRecords([]*series.Info{gone}, newest+testStep))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchEqual, "metric", "gone"))
	if len(got) != 4 {
		t.Errorf("returning series: %d output infos, want 4: %v", len(got), got)
	}
	for k, ss := range got {
		if len(ss) != 1 || ss[0].T != newest+testStep {
			t.Errorf("returning series %s: %v, want one sample at %d", k, ss, newest+testStep)
		}
	}
}

func TestHistoryOutOfOrder(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	s := mkSeries("__name__", "x")
	h.Append(mkRecords([]*series.Info{s}, 2000))
	h.Append(mkRecords([]*series.Info{s}, 1000)) // older
	h.Append(mkRecords([]*series.Info{s}, 2000)) // duplicate
	h.Append(mkRecords([]*series.Info{s}, 3000))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	want := histOracle{}
	want.add(testNames, mkRecords([]*series.Info{s}, 2000)...)
	want.add(testNames, mkRecords([]*series.Info{s}, 3000)...)
	compareOracle(t, got, want)
	if v := metricValue(t, reg, "anomalyd_history_samples_out_of_order_total"); v != 8 {
		t.Errorf("anomalyd_history_samples_out_of_order_total = %g, want 8", v)
	}
}

// TestHistoryStale: a stale record ends the output series that exist with
// StaleNaN (bit-exact); it creates none.
func TestHistoryStale(t *testing.T) {
	h, _ := newTestHistory(time.Hour)
	full := mkSeries("__name__", "full")
	warm := mkSeries("__name__", "warm")
	never := mkSeries("__name__", "never")
	recs := []series.Record{
		{Series: full, T: 1000, Detector: detectors.KindCombined, Score: 1, Expected: 2, Lower: 1, Upper: 3},
		{Series: warm, T: 1000, Detector: detectors.KindCombined, Warmup: true},
		{Series: full, T: 2000, Detector: detectors.KindCombined, Stale: true},
		{Series: warm, T: 2000, Detector: detectors.KindCombined, Stale: true, Warmup: true},
		{Series: never, T: 2000, Detector: detectors.KindCombined, Stale: true},
	}
	h.Append(recs)
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	want := histOracle{}
	want.add(testNames, recs...)
	compareOracle(t, got, want)
	if len(got) != 5 {
		t.Errorf("%d infos, want 5 (4 of full, the score of warm)", len(got))
	}
	for k, ss := range got {
		if last := ss[len(ss)-1]; last.T != 2000 || math.Float64bits(last.V) != math.Float64bits(staleNaN) {
			t.Errorf("%s ends with %v, want a stale marker at 2000", k, last)
		}
	}
}

// TestHistorySeriesIdentity: series are told apart by labels, not by hash
// or series.Info pointer.
func TestHistorySeriesIdentity(t *testing.T) {
	h, _ := newTestHistory(time.Hour)
	a := mkSeries("__name__", "x", "i", "a")
	b := mkSeries("__name__", "x", "i", "b")
	b.Hash = a.Hash                           // a collision
	a2 := mkSeries("__name__", "x", "i", "a") // a comes back: new series.Info, same labels
	h.Append(mkRecords([]*series.Info{a, b}, 1000))
	h.Append(mkRecords([]*series.Info{a2, b}, 2000))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	want := histOracle{}
	want.add(testNames, mkRecords([]*series.Info{a, b}, 1000)...)
	want.add(testNames, mkRecords([]*series.Info{a2, b}, 2000)...)
	compareOracle(t, got, want)
}

// TestHistoryNamesAtQueryTime: output names are read when queried, so a
// reload that renames outputs renames the history.
func TestHistoryNamesAtQueryTime(t *testing.T) {
	names := testNames
	h := NewHistory(time.Hour, 1_000_000, func() series.Names { return names }, nil)
	h.Append(mkRecords([]*series.Info{mkSeries("__name__", "x")}, 1000))
	names.Score = "renamed_score"
	ms := h.query([]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "renamed_score")}, 0, 2000)
	if len(ms) != 1 {
		t.Fatalf("%d series named renamed_score, want 1", len(ms))
	}
}

// TestHistoryAppendNoAllocs: once a series' head buffer has grown (its
// first chunk), appending allocates nothing until the next cut.
func TestHistoryAppendNoAllocs(t *testing.T) {
	h, _ := newTestHistory(time.Hour)
	infos := manySeries(64)
	ts := int64(0)
	for range samplesPerChunk + 1 { // fill the first chunk and cut it
		h.Append(mkRecords(infos, ts))
		ts += testStep
	}
	recs := mkRecords(infos, ts)
	if n := testing.AllocsPerRun(50, func() {
		for i := range recs {
			recs[i].T = ts
		}
		h.Append(recs)
		ts += testStep
	}); n != 0 {
		t.Errorf("%v allocations per Append of %d records, want 0", n, len(recs))
	}
}

// TestHistoryConcurrent: shards append while queries read (run with -race).
func TestHistoryConcurrent(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	const shards, perShard, steps = 4, 50, 200
	var wg sync.WaitGroup
	for s := range shards {
		infos := make([]*series.Info, perShard)
		for i := range infos {
			infos[i] = mkSeries("__name__", "m", "shard", fmt.Sprint(s), "i", fmt.Sprint(i))
		}
		wg.Go(func() {
			for i := range steps {
				h.Append(mkRecords(infos, int64(i*testStep)))
			}
		})
	}
	done := make(chan struct{})
	var queries int
	go func() {
		defer close(done)
		m := labels.MustNewMatcher(labels.MatchRegexp, "shard", "[02]")
		for range 20 {
			for _, s := range h.query([]*labels.Matcher{m}, math.MinInt64, math.MaxInt64) {
				for _, c := range s.chunks {
					decodeChunk(t, c.b)
				}
			}
			queries++
		}
	}()
	wg.Wait()
	<-done
	if v := metricValue(t, reg, "anomalyd_history_samples_appended_total"); v != shards*perShard*steps*4 {
		t.Errorf("appended %g samples, want %d", v, shards*perShard*steps*4)
	}
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	if len(got) != shards*perShard*4 {
		t.Errorf("%d infos, want %d", len(got), shards*perShard*4)
	}
	for k, ss := range got {
		if len(ss) != steps {
			t.Errorf("%s: %d samples, want %d", k, len(ss), steps)
		}
	}
}

// detectorRun feeds a random walk with daily-ish noise through the default
// detectors and returns the combined records of one input series.
func detectorRun(s *series.Info, seed uint64, n int) []series.Record {
	p := detectors.DefaultParams()
	var set detectors.Set
	set.Init(&p)
	rng := rand.New(rand.NewPCG(seed, seed))
	v := 100.0
	recs := make([]series.Record, n)
	for i := range recs {
		ts := int64(1_700_000_000_000 + i*testStep)
		v += rng.NormFloat64()
		out := set.Update(&p, ts, v+5*rng.NormFloat64())
		c := out.Combined
		recs[i] = series.Record{Series: s, T: ts, Detector: detectors.KindCombined, Warmup: !c.Ready,
			Score: c.Score, Expected: c.Expected, Lower: c.Lower, Upper: c.Upper}
	}
	return recs
}

// TestHistoryMemoryPerSeries measures the history's memory per input series
// at the default 1h retention and a 15 s interval, with real detector
// outputs (4 output series per input series). It logs the figures and
// fails only if they are far above what the README states.
func TestHistoryMemoryPerSeries(t *testing.T) {
	const inputs, steps = 2000, 3 * 240 // 3 h: retention reaches its steady state
	infos := manySeries(inputs)
	runs := make([][]series.Record, inputs)
	for i, s := range infos {
		runs[i] = detectorRun(s, uint64(i), steps)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h, reg := newTestHistory(time.Hour)
	batch := make([]series.Record, inputs)
	minBytes, maxBytes := math.Inf(1), 0.0
	for step := range steps {
		for i := range runs {
			batch[i] = runs[i][step]
		}
		h.Append(batch)
		if step >= 2*240 { // the last hour: steady state
			b := metricValue(t, reg, "anomalyd_history_bytes")
			minBytes, maxBytes = min(minBytes, b), max(maxBytes, b)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(runs)
	held := 0
	for _, m := range h.query(nil, math.MinInt64, math.MaxInt64) {
		for _, c := range m.chunks {
			held += chunkSamples(c.b)
		}
	}
	chunkBytes := metricValue(t, reg, "anomalyd_history_bytes")
	heap := float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
	t.Logf("1h retention, 15 s interval, %d input series × 4 outputs, default detectors: "+
		"%.0f samples held per output series (%.1f min); chunk bytes %.0f B per input series (%.0f to %.0f over the last hour), %.2f B/sample; "+
		"heap %.0f B per input infos, %.2f B/sample",
		inputs, float64(held)/inputs/4, float64(held)/inputs/4/4, chunkBytes/inputs, minBytes/inputs, maxBytes/inputs, chunkBytes/float64(held),
		heap/inputs, heap/float64(held))
	if heap/inputs > 32<<10 {
		t.Errorf("heap %.0f B per input infos, want under 32 KiB", heap)
	}
}

// BenchmarkHistoryAppend: one Append of 250 combined records (one input
// series each), as a shard hands them over; ns/op ÷ 250 = ns per record.
func BenchmarkHistoryAppend(b *testing.B) {
	batch := benchBatch()[:250]
	h, _ := newTestHistory(time.Hour)
	ts := batch[0].T
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		ts += testStep
		for i := range batch {
			r := &batch[i]
			r.T = ts
			r.Score = math.Abs(rng.NormFloat64())
			r.Expected += rng.NormFloat64()
			r.Lower, r.Upper = r.Expected-3, r.Expected+3
		}
		h.Append(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(batch)), "ns/record")
}

// TestHistoryMaxSeries: beyond max_series input series, the outputs of new
// input series are counted and not kept, those of held ones still are; once
// held ones expire, new ones are kept again.
func TestHistoryMaxSeries(t *testing.T) {
	reg := selfmon.NewRegistry()
	h := NewHistory(time.Hour, 2, func() series.Names { return testNames }, reg)
	a, b, c := mkSeries("__name__", "a"), mkSeries("__name__", "b"), mkSeries("__name__", "c")
	h.Append(mkRecords([]*series.Info{a, b, c}, 0))
	h.Append(mkRecords([]*series.Info{a, b, c}, testStep))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	if len(got) != 8 {
		t.Fatalf("%d output infos, want the 8 of a and b: %v", len(got), got)
	}
	for k := range got {
		if strings.Contains(k, `"c"`) {
			t.Errorf("series %s of the third input series kept", k)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_samples_over_limit_total"); v != 8 {
		t.Errorf("anomalyd_history_samples_over_limit_total = %g, want 8 (4 outputs × 2 records of c)", v)
	}
	if v := metricValue(t, reg, "anomalyd_history_input_series"); v != 2 {
		t.Errorf("anomalyd_history_input_series = %g, want 2", v)
	}
	// a and b stop; after the retention has passed (and a sweep of every
	// partition), c is kept.
	for i := range 2 * historyPartitions {
		h.Append(mkRecords([]*series.Info{c}, time.Hour.Milliseconds()+int64(i+2)*testStep))
	}
	got, _ = queryAll(t, h, math.MinInt64, math.MaxInt64)
	if len(got) != 4 {
		t.Fatalf("%d output series after a and b expired, want the 4 of c: %v", len(got), got)
	}
	if v := metricValue(t, reg, "anomalyd_history_input_series"); v != 1 {
		t.Errorf("anomalyd_history_input_series = %g, want 1", v)
	}
}
