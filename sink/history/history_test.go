package history

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/series"
)

// newTestHistory returns a History with sinktest.Names and its registry.
func newTestHistory(retention time.Duration) (*History, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return New(retention, 1_000_000, func() series.Names { return sinktest.Names }, reg), reg
}

// queryAll returns what h.query returns for ms over [mint, maxt], chunks
// decoded and trimmed to the range, checking chunk times on the way.
func queryAll(t *testing.T, h *History, mint, maxt int64, ms ...*labels.Matcher) (sinktest.Oracle, []string) {
	t.Helper()
	got := sinktest.Oracle{}
	var order []string
	for _, m := range h.query(ms, mint, maxt) {
		k := sinktest.LabelKey(m.labels)
		order = append(order, k)
		for _, c := range m.chunks {
			ss := sinktest.DecodeChunk(t, c.b)
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

// walkRecord advances the random walk *prev and returns a record around it:
// a score and a band like a detector's, deterministic for a seeded rng.
func walkRecord(rng *rand.Rand, s *series.Info, ts int64, det detectors.Kind, prev *float64) series.Record {
	*prev += rng.NormFloat64()
	v := *prev
	return series.Record{Series: s, T: ts, Detector: det, Score: math.Abs(rng.NormFloat64()), Expected: v, Lower: v - 3, Upper: v + 3}
}

// metricValue returns the value of the self metric line that starts with
// series (name and labels as written, e.g. `x_total{code="200"}`).
func metricValue(t *testing.T, reg *prometheus.Registry, infos string) float64 {
	t.Helper()
	var b strings.Builder
	if err := promreg.WriteText(&b, reg); err != nil {
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

// chunkSamples is the sample count in an XOR chunk's header.
func chunkSamples(b []byte) int { return int(b[0])<<8 | int(b[1]) }

func TestHistoryAppendQuery(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	a := sinktest.Info("__name__", "cpu", "job", "a")
	b := sinktest.Info("__name__", "mem", "job", "b", "metric", "clash")
	rng := rand.New(rand.NewPCG(1, 2))
	oracle := sinktest.Oracle{}
	var va, vb float64
	const base = 1_700_000_000_000
	for i := range 300 {
		ts := int64(base + i*sinktest.Step)
		recs := []series.Record{walkRecord(rng, a, ts, detectors.KindCombined, &va), walkRecord(rng, b, ts, detectors.KindCombined, &vb)}
		if i < 10 { // warm-up: the score only
			for j := range recs {
				recs[j].Warmup, recs[j].Score = true, 0
			}
		}
		recs = append(recs, walkRecord(rng, a, ts, detectors.KindEWMA, &va)) // per_detector on for a
		h.Append(recs)
		oracle.Add(sinktest.Names, recs...)
	}
	got, order := queryAll(t, h, math.MinInt64, math.MaxInt64)
	sinktest.CompareOracles(t, got, oracle)
	if len(order) != 12 {
		t.Errorf("%d infos, want 12 (2 inputs × combined + 1 × ewma, × 4 outputs)", len(order))
	}
	// 300 samples a series: chunks of 120, 120 and a head of 60.
	var lsets [][]prompb.Label
	for _, m := range h.query(nil, math.MinInt64, math.MaxInt64) {
		lsets = append(lsets, m.labels)
		var sizes []int
		for _, c := range m.chunks {
			sizes = append(sizes, len(sinktest.DecodeChunk(t, c.b)))
		}
		want := []int{120, 120, 60}
		// Sorted, so __name__ comes first; warm-up records (combined only) have no band.
		if m.labels[0].Value != "anomaly_score" && strings.Contains(sinktest.LabelKey(m.labels), "detector=combined") {
			want = []int{120, 120, 50}
		}
		if fmt.Sprint(sizes) != fmt.Sprint(want) {
			t.Errorf("%s: chunk sizes %v, want %v", sinktest.LabelKey(m.labels), sizes, want)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 12 {
		t.Errorf("anomalyd_history_series = %g, want 12", v)
	}
	if v := metricValue(t, reg, "anomalyd_history_samples_appended_total"); v != 3*300*4-2*10*3 {
		t.Errorf("anomalyd_history_samples_appended_total = %g, want %d", v, 3*300*4-2*10*3)
	}
	sinktest.CheckSorted(t, lsets)
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
	live := sinktest.Info("__name__", "live")
	gone := sinktest.Info("__name__", "gone")
	oracle := sinktest.Oracle{}
	const n = 3 * 240 // 3 h at 15 s
	for i := range n {
		ts := int64(i * sinktest.Step)
		recs := sinktest.Records([]*series.Info{live}, ts)
		if i < 100 { // gone stops after 25 min
			recs = append(recs, sinktest.Records([]*series.Info{gone}, ts)...)
		}
		h.Append(recs)
		oracle.Add(sinktest.Names, recs...)
	}
	newest := int64((n - 1) * sinktest.Step)
	cutoff := newest - time.Hour.Milliseconds()
	ms := h.query(nil, math.MinInt64, math.MaxInt64)
	if len(ms) != 4 {
		t.Fatalf("%d series after 3h, want the 4 of %q only: %v", len(ms), "live", ms)
	}
	for _, m := range ms {
		first := m.chunks[0]
		if first.maxT < cutoff {
			t.Errorf("%s: chunk [%d, %d] kept, older than the cutoff %d", sinktest.LabelKey(m.labels), first.minT, first.maxT, cutoff)
		}
		// Chunks are 120 samples = 30 min: the oldest kept starts at most
		// a chunk plus a sweep interval (1h/16) before the cutoff.
		if slack := int64(120*sinktest.Step) + time.Hour.Milliseconds()/sweepFraction; first.minT < cutoff-slack {
			t.Errorf("%s: oldest chunk starts at %d, more than %d ms before the cutoff %d", sinktest.LabelKey(m.labels), first.minT, slack, cutoff)
		}
		// What is kept is exact: the oracle's samples from the first kept one on.
		var kept []sinktest.Sample
		for _, c := range m.chunks {
			kept = append(kept, sinktest.DecodeChunk(t, c.b)...)
		}
		k := sinktest.LabelKey(m.labels)
		if want := oracle.In(first.minT, math.MaxInt64)[k]; !sinktest.SameSamples(kept, want) {
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
	h.Append(sinktest.Records([]*series.Info{gone}, newest+sinktest.Step))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64, labels.MustNewMatcher(labels.MatchEqual, "metric", "gone"))
	if len(got) != 4 {
		t.Errorf("returning series: %d output infos, want 4: %v", len(got), got)
	}
	for k, ss := range got {
		if len(ss) != 1 || ss[0].T != newest+sinktest.Step {
			t.Errorf("returning series %s: %v, want one sample at %d", k, ss, newest+sinktest.Step)
		}
	}
}

func TestHistoryOutOfOrder(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	s := sinktest.Info("__name__", "x")
	h.Append(sinktest.Records([]*series.Info{s}, 2000))
	h.Append(sinktest.Records([]*series.Info{s}, 1000)) // older
	h.Append(sinktest.Records([]*series.Info{s}, 2000)) // duplicate
	h.Append(sinktest.Records([]*series.Info{s}, 3000))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	want := sinktest.Oracle{}
	want.Add(sinktest.Names, sinktest.Records([]*series.Info{s}, 2000)...)
	want.Add(sinktest.Names, sinktest.Records([]*series.Info{s}, 3000)...)
	sinktest.CompareOracles(t, got, want)
	if v := metricValue(t, reg, "anomalyd_history_samples_out_of_order_total"); v != 8 {
		t.Errorf("anomalyd_history_samples_out_of_order_total = %g, want 8", v)
	}
}

// TestHistoryStale: a stale record ends the output series that exist with
// StaleNaN (bit-exact); it creates none.
func TestHistoryStale(t *testing.T) {
	h, _ := newTestHistory(time.Hour)
	full := sinktest.Info("__name__", "full")
	warm := sinktest.Info("__name__", "warm")
	never := sinktest.Info("__name__", "never")
	recs := []series.Record{
		{Series: full, T: 1000, Detector: detectors.KindCombined, Score: 1, Expected: 2, Lower: 1, Upper: 3},
		{Series: warm, T: 1000, Detector: detectors.KindCombined, Warmup: true},
		{Series: full, T: 2000, Detector: detectors.KindCombined, Stale: true},
		{Series: warm, T: 2000, Detector: detectors.KindCombined, Stale: true, Warmup: true},
		{Series: never, T: 2000, Detector: detectors.KindCombined, Stale: true},
	}
	h.Append(recs)
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	want := sinktest.Oracle{}
	want.Add(sinktest.Names, recs...)
	sinktest.CompareOracles(t, got, want)
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
	a := sinktest.Info("__name__", "x", "i", "a")
	b := sinktest.Info("__name__", "x", "i", "b")
	b.Hash = a.Hash                                // a collision
	a2 := sinktest.Info("__name__", "x", "i", "a") // a comes back: new series.Info, same labels
	h.Append(sinktest.Records([]*series.Info{a, b}, 1000))
	h.Append(sinktest.Records([]*series.Info{a2, b}, 2000))
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	want := sinktest.Oracle{}
	want.Add(sinktest.Names, sinktest.Records([]*series.Info{a, b}, 1000)...)
	want.Add(sinktest.Names, sinktest.Records([]*series.Info{a2, b}, 2000)...)
	sinktest.CompareOracles(t, got, want)
}

// TestHistoryNamesAtQueryTime: output names are read when queried, so a
// reload that renames outputs renames the history.
func TestHistoryNamesAtQueryTime(t *testing.T) {
	names := sinktest.Names
	h := New(time.Hour, 1_000_000, func() series.Names { return names }, nil)
	h.Append(sinktest.Records([]*series.Info{sinktest.Info("__name__", "x")}, 1000))
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
	infos := sinktest.Infos(64)
	ts := int64(0)
	for range samplesPerChunk + 1 { // fill the first chunk and cut it
		h.Append(sinktest.Records(infos, ts))
		ts += sinktest.Step
	}
	recs := sinktest.Records(infos, ts)
	if n := testing.AllocsPerRun(50, func() {
		for i := range recs {
			recs[i].T = ts
		}
		h.Append(recs)
		ts += sinktest.Step
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
			infos[i] = sinktest.Info("__name__", "m", "shard", fmt.Sprint(s), "i", fmt.Sprint(i))
		}
		wg.Go(func() {
			for i := range steps {
				h.Append(sinktest.Records(infos, int64(i*sinktest.Step)))
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
					sinktest.DecodeChunk(t, c.b)
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
		ts := int64(1_700_000_000_000 + i*sinktest.Step)
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
// fails only if they are far above what docs/operations.md states.
func TestHistoryMemoryPerSeries(t *testing.T) {
	const inputs, steps = 2000, 3 * 240 // 3 h: retention reaches its steady state
	infos := sinktest.Infos(inputs)
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
	batch := sinktest.BenchBatch()[:250]
	h, _ := newTestHistory(time.Hour)
	ts := batch[0].T
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		ts += sinktest.Step
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
	reg := prometheus.NewRegistry()
	h := New(time.Hour, 2, func() series.Names { return sinktest.Names }, reg)
	a, b, c := sinktest.Info("__name__", "a"), sinktest.Info("__name__", "b"), sinktest.Info("__name__", "c")
	h.Append(sinktest.Records([]*series.Info{a, b, c}, 0))
	h.Append(sinktest.Records([]*series.Info{a, b, c}, sinktest.Step))
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
		h.Append(sinktest.Records([]*series.Info{c}, time.Hour.Milliseconds()+int64(i+2)*sinktest.Step))
	}
	got, _ = queryAll(t, h, math.MinInt64, math.MaxInt64)
	if len(got) != 4 {
		t.Fatalf("%d output series after a and b expired, want the 4 of c: %v", len(got), got)
	}
	if v := metricValue(t, reg, "anomalyd_history_input_series"); v != 1 {
		t.Errorf("anomalyd_history_input_series = %g, want 1", v)
	}
}
