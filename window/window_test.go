package window

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
	"github.com/anomalyd/anomalyd/window/windowtest"
)

type env struct {
	s   *Shards
	rec *windowtest.Recorder
	reg *prometheus.Registry
}

func newEnv(t *testing.T, cfg *config.Config, mod func(*Options)) *env {
	t.Helper()
	opts := Options{Shards: 2, QueueSize: 16, MaxSeries: 100, SeriesTTL: 15 * time.Minute, PublishInterval: time.Nanosecond}
	if mod != nil {
		mod(&opts)
	}
	rec := &windowtest.Recorder{}
	reg := prometheus.NewRegistry()
	s := New(opts, CompileRules(cfg), rec, reg)
	s.Start()
	t.Cleanup(func() { s.Stop(t.Context()) })
	return &env{s: s, rec: rec, reg: reg}
}

// key builds a canonical key from name/value pairs (already sorted).
func key(pairs ...string) []byte {
	var b []byte
	for _, p := range pairs {
		b = append(b, p...)
		b = append(b, 0xff)
	}
	return b
}

// send writes samples of one series (labels as sorted name/value pairs).
func (e *env) send(t testing.TB, counter bool, samples []Sample, pairs ...string) {
	t.Helper()
	k := key(pairs...)
	h := xxhash.Sum64(k)
	b := e.s.GetBatch()
	b.Keys = append(b.Keys, k...)
	var ns, ne uint32
	for i := 0; i+1 < len(pairs); i += 2 {
		off := 0
		for _, p := range pairs[:i+1] {
			off += len(p) + 1
		}
		if pairs[i] == "__name__" {
			ns, ne = uint32(off), uint32(off+len(pairs[i+1]))
		}
	}
	b.Samples = append(b.Samples, samples...)
	b.Series = append(b.Series, BatchSeries{Hash: h, KeyStart: 0, KeyEnd: uint32(len(k)), NameStart: ns, NameEnd: ne,
		SamplesStart: 0, SamplesEnd: uint32(len(samples)), Counter: counter})
	if err := e.s.Enqueue(int(h%uint64(e.s.N())), b); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	e.s.Sync()
}

func ramp(t0 int64, n int, stepMs int64, f func(i int) float64) []Sample {
	out := make([]Sample, n)
	for i := range out {
		out[i] = Sample{T: t0 + int64(i)*stepMs, V: f(i)}
	}
	return out
}

const t0 = int64(1_700_000_000_000)

func TestKeyHelperFindsName(t *testing.T) {
	k := key("__name__", "up", "job", "x")
	if string(k[9:11]) != "up" {
		t.Fatalf("test helper: name offset wrong in %q", k)
	}
}

func TestCounterAnalysedAsRate(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	// 10 per second, scraped every 15 s; Ready after warm-up and
	// calibration.
	e.send(t, true, ramp(t0, 140, 15_000, func(i int) float64 { return float64(i) * 150 }), "__name__", "reqs_total")
	recs := e.rec.Take()
	if len(recs) != 139 {
		t.Fatalf("got %d outputs for 140 counter samples, want 139 (the first only primes the rate)", len(recs))
	}
	last := recs[len(recs)-1]
	if last.Warmup || math.Abs(last.Expected-10) > 1e-6 {
		t.Fatalf("expected rate: got %+v, want ready with expected 10/s", last)
	}
	if last.Score > 1 {
		t.Fatalf("steady counter scored %v", last.Score)
	}
	// Every accepted sample is accounted for: 139 analysed, 1 priming.
	var analysed, primed uint64
	for _, sh := range e.s.shards {
		analysed += sh.stats.samples.Load()
		primed += sh.stats.primed.Load()
	}
	if analysed != 139 || primed != 1 {
		t.Fatalf("analysed %d, primed %d: want 139 and 1", analysed, primed)
	}
}

func TestCounterReset(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	s := ramp(t0, 30, 15_000, func(i int) float64 { return float64(i) * 150 })
	// Restart: the counter starts again from 0 and keeps 10/s.
	s = append(s, ramp(t0+30*15_000, 10, 15_000, func(i int) float64 { return float64(i+1) * 150 })...)
	e.send(t, true, s, "__name__", "reqs_total")
	recs := e.rec.Take()
	for _, r := range recs {
		if r.Expected < 0 || r.Score > 1 {
			t.Fatalf("counter reset produced %+v: a reset is not a negative rate", r)
		}
	}
	if got := e.s.shards[0].stats.counterResets.Load() + e.s.shards[1].stats.counterResets.Load(); got != 1 {
		t.Fatalf("counter resets: got %d, want 1", got)
	}
}

func TestOrderDuplicatesAndSpecialValues(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	samples := []Sample{
		{T: t0, V: 1},
		{T: t0 + 1000, V: 2},
		{T: t0 + 1000, V: 2}, // exact duplicate (a retry): accepted silently
		{T: t0 + 1000, V: 3}, // same timestamp, other value: dropped
		{T: t0 + 500, V: 4},  // out of order: dropped
		{T: t0 + 2000, V: math.NaN()},
		{T: t0 + 3000, V: math.Inf(1)},
		{T: t0 + 4000, V: 5},
	}
	e.send(t, false, samples, "__name__", "g")
	recs := e.rec.Take()
	if len(recs) != 3 {
		t.Fatalf("got %d outputs, want 3 (t0, t0+1s, t0+4s)", len(recs))
	}
	st := func(f func(*shardStats) uint64) (n uint64) {
		for _, sh := range e.s.shards {
			n += f(&sh.stats)
		}
		return n
	}
	for name, c := range map[string]struct{ got, want uint64 }{
		"duplicates":   {st(func(s *shardStats) uint64 { return s.duplicates.Load() }), 1},
		"conflicts":    {st(func(s *shardStats) uint64 { return s.conflicts.Load() }), 1},
		"out of order": {st(func(s *shardStats) uint64 { return s.outOfOrder.Load() }), 1},
		"non-finite":   {st(func(s *shardStats) uint64 { return s.nonFinite.Load() }), 2},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", name, c.got, c.want)
		}
	}
}

func TestStaleMarkerEndsSeries(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	e.send(t, false, ramp(t0, 5, 1000, func(int) float64 { return 1 }), "__name__", "g")
	if n := len(e.snapshot()); n != 1 {
		t.Fatalf("snapshot has %d records, want 1", n)
	}
	e.rec.Take()
	e.send(t, false, []Sample{{T: t0 + 5000, V: math.Float64frombits(value.StaleNaN)}}, "__name__", "g")
	recs := e.rec.Take()
	if len(recs) != 1 || !recs[0].Stale || recs[0].T != t0+5000 {
		t.Fatalf("got %+v, want one stale record at the marker's timestamp", recs)
	}
	if n := len(e.snapshot()); n != 0 {
		t.Fatalf("a stale series is still on /metrics (%d records)", n)
	}
	// A second marker emits nothing more; a new sample revives the series.
	e.send(t, false, []Sample{{T: t0 + 6000, V: math.Float64frombits(value.StaleNaN)}, {T: t0 + 7000, V: 1}}, "__name__", "g")
	recs = e.rec.Take()
	if len(recs) != 1 || recs[0].Stale {
		t.Fatalf("got %+v, want one ordinary record", recs)
	}
}

func (e *env) snapshot() []series.Record {
	var out []series.Record
	for _, s := range e.s.Snapshots(nil) {
		out = append(out, s...)
	}
	return out
}

func TestDefaultRulesIgnoreBuckets(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	e.send(t, true, ramp(t0, 3, 1000, func(i int) float64 { return float64(i) }), "__name__", "http_duration_seconds_bucket", "le", "0.1")
	e.send(t, true, ramp(t0, 3, 1000, func(i int) float64 { return float64(i) }), "__name__", "http_duration_seconds_count")
	recs := e.rec.Take()
	for _, r := range recs {
		if r.Series.Name == "http_duration_seconds_bucket" {
			t.Fatalf("a _bucket series was analysed")
		}
	}
	if len(recs) != 2 {
		t.Fatalf("got %d outputs, want 2 from the _count series", len(recs))
	}
	if e.s.active.Load() != 1 {
		t.Fatalf("active series: got %d, want 1", e.s.active.Load())
	}
}

// TestExcludeProducts: with the default config, alerting and recording rule
// products and anomalyd's own output series are never analysed, counted
// under their own reason on every sample (the first, which creates the
// cache entry, and later ones); a reload to `exclude: []` analyses them.
func TestExcludeProducts(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	products := [][]string{
		{"__name__", "ALERTS", "alertname", "AnomalyDetected", "alertstate", "firing"},
		{"__name__", "ALERTS_FOR_STATE", "alertname", "AnomalyDetected"},
		{"__name__", "metric_job:anomaly_score:max", "job", "node"},
		{"__name__", "anomaly_score", "detector", "combined", "metric", "up"},
		{"__name__", "anomaly_upper", "detector", "combined", "metric", "up"},
	}
	for range 2 {
		for _, p := range products {
			e.send(t, false, ramp(t0, 3, 1000, func(i int) float64 { return float64(i) }), p...)
		}
	}
	e.send(t, false, ramp(t0, 3, 1000, func(i int) float64 { return float64(i) }), "__name__", "up", "job", "node")
	for _, r := range e.rec.Take() {
		if r.Series.Name != "up" {
			t.Errorf("%s was analysed; want it excluded", r.Series.Name)
		}
	}
	var excluded, ignored uint64
	for _, sh := range e.s.shards {
		excluded += sh.stats.excluded.Load()
		ignored += sh.stats.ignored.Load()
	}
	if want := uint64(2 * 3 * len(products)); excluded != want || ignored != 0 {
		t.Errorf("excluded samples %d, ignored by rule %d; want %d and 0", excluded, ignored, want)
	}
	if got := e.s.active.Load(); got != 1 {
		t.Errorf("active series %d, want 1", got)
	}

	next, err := config.Load([]byte("exclude: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.s.ApplyRules(CompileRules(next), false)
	e.send(t, false, []Sample{{T: t0 + 5000, V: 1}}, products[0]...)
	if recs := e.rec.Take(); len(recs) != 1 || recs[0].Series.Name != "ALERTS" {
		t.Errorf("after a reload to exclude: [] got %d records; want one for ALERTS", len(recs))
	}
}

func TestMaxSeries(t *testing.T) {
	e := newEnv(t, config.Default(), func(o *Options) { o.MaxSeries = 2 })
	for _, n := range []string{"a", "b", "c", "d"} {
		e.send(t, false, []Sample{{T: t0, V: 1}}, "__name__", n)
	}
	if got := e.s.active.Load(); got != 2 {
		t.Fatalf("active: got %d, want 2", got)
	}
	var limited uint64
	for _, sh := range e.s.shards {
		limited += sh.stats.limited.Load()
	}
	if limited != 2 {
		t.Fatalf("limited samples: got %d, want 2", limited)
	}
}

func TestTTLEvictionEmitsStaleMarkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, config.Default(), func(o *Options) { o.SeriesTTL = time.Minute })
		now := time.Now().UnixMilli()
		e.send(t, false, ramp(now, 3, 1000, func(int) float64 { return 1 }), "__name__", "idle")
		e.rec.Take()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		recs := e.rec.Take()
		if len(recs) != 1 || !recs[0].Stale || recs[0].Series.Name != "idle" {
			t.Fatalf("got %+v, want one stale record for the evicted series", recs)
		}
		if e.s.active.Load() != 0 {
			t.Fatalf("active after eviction: %d", e.s.active.Load())
		}
		if n := len(e.snapshot()); n != 0 {
			t.Fatalf("evicted series still on /metrics")
		}
	})
}

// TestPerDetectorOutputs: with output.per_detector every detector the
// series' rule enables has its own series, in the remote-write output and
// on /metrics, and no other detector does; a reload that turns a detector
// off, or per_detector off, ends those series with stale markers.
func TestPerDetectorOutputs(t *testing.T) {
	cfg := loadConfig(t, `
output: {per_detector: true}
rules:
  - match: '{__name__="no_hw"}'
    detectors: {holt_winters: {enabled: false}}
`)
	e := newEnv(t, cfg, func(o *Options) { o.PerDetector = true })
	for _, name := range []string{"all", "no_hw"} {
		e.send(t, false, ramp(t0, 2, 1000, func(int) float64 { return 1 }), "__name__", name)
	}
	kinds := func(recs []series.Record, stale bool) map[string]uint8 {
		got := map[string]uint8{}
		for _, r := range recs {
			if r.Stale != stale {
				t.Fatalf("record %+v: want stale %v", r, stale)
			}
			got[r.Series.Name] |= 1 << r.Detector
		}
		return got
	}
	combined := uint8(1 << detectors.KindCombined)
	recs := e.rec.Take()
	if len(recs) != 2*(6+5) {
		t.Fatalf("got %d records, want 2 samples × (6 + 5)", len(recs))
	}
	want := map[string]uint8{"all": setAll | combined, "no_hw": setNoHW | combined}
	if got := kinds(recs, false); !maps.Equal(got, want) {
		t.Fatalf("detectors per series %v, want %v", got, want)
	}
	if got := kinds(e.snapshot(), false); !maps.Equal(got, want) {
		t.Fatalf("on /metrics: detectors per series %v, want %v", got, want)
	}

	// Slope off for every series: its per-detector series end.
	next := loadConfig(t, `
output: {per_detector: true}
detectors: {slope: {enabled: false}}
rules:
  - match: '{__name__="no_hw"}'
    detectors: {holt_winters: {enabled: false}, slope: {enabled: false}}
`)
	e.s.ApplyRules(CompileRules(next), true)
	slope := uint8(1 << detectors.KindSlope)
	if got, want := kinds(e.rec.Take(), true), map[string]uint8{"all": slope, "no_hw": slope}; !maps.Equal(got, want) {
		t.Fatalf("stale markers %v, want %v", got, want)
	}
	want = map[string]uint8{"all": setAll&^slope | combined, "no_hw": setNoHW&^slope | combined}
	if got := kinds(e.snapshot(), false); !maps.Equal(got, want) {
		t.Fatalf("on /metrics after the reload: %v, want %v", got, want)
	}

	// per_detector off: every remaining per-detector series ends.
	e.s.ApplyRules(CompileRules(next), false)
	if got, want := kinds(e.rec.Take(), true), map[string]uint8{"all": setAll &^ slope, "no_hw": setNoHW &^ slope}; !maps.Equal(got, want) {
		t.Fatalf("stale markers %v, want %v", got, want)
	}
	want = map[string]uint8{"all": combined, "no_hw": combined}
	if got := kinds(e.snapshot(), false); !maps.Equal(got, want) {
		t.Fatalf("on /metrics without per_detector: %v, want %v", got, want)
	}
}

// A reload keeps the state of series whose rule did not change and resets
// the others.
func TestApplyRulesKeepsUnchangedState(t *testing.T) {
	cfg := config.Default()
	e := newEnv(t, cfg, nil)
	// Ready: warm-up and calibration.
	e.send(t, false, ramp(t0, 120, 1000, func(i int) float64 { return float64(i % 3) }), "__name__", "kept")
	e.send(t, false, ramp(t0, 120, 1000, func(i int) float64 { return float64(i % 3) }), "__name__", "changed")
	e.rec.Take()

	next, err := config.Load([]byte(`
rules:
  - match: '{__name__="changed"}'
    detectors: {ewma: {alpha: 0.5}}
`))
	if err != nil {
		t.Fatal(err)
	}
	e.s.ApplyRules(CompileRules(next), false)
	e.send(t, false, []Sample{{T: t0 + 120_000, V: 1}}, "__name__", "kept")
	e.send(t, false, []Sample{{T: t0 + 120_000, V: 1}}, "__name__", "changed")
	for _, r := range e.rec.Take() {
		switch r.Series.Name {
		case "kept":
			if r.Warmup {
				t.Error("kept series lost its detector state on reload")
			}
		case "changed":
			if !r.Warmup {
				t.Error("series with changed detector settings kept its old state")
			}
		}
	}
}

// Stop must leave no shard goroutine behind.
func TestStopLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	opts := Options{Shards: 4, QueueSize: 4, MaxSeries: 10, SeriesTTL: time.Minute, PublishInterval: time.Second}
	s := New(opts, CompileRules(config.Default()), &windowtest.Recorder{}, prometheus.NewRegistry())
	s.Start()
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(0, s.GetBatch()); err != ErrClosed {
		t.Fatalf("Enqueue after Stop: got %v, want ErrClosed", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Stop, %d before", n, before)
	}
}

// The backtest's Analyser must score exactly as a shard does.
func TestAnalyserMatchesShard(t *testing.T) {
	cfg := config.Default()
	e := newEnv(t, cfg, nil)
	samples := ramp(t0, 60, 15_000, func(i int) float64 { return float64(i*i%17) + 100*float64(i/40) })
	samples = append(samples, Sample{T: t0, V: 1}, Sample{T: t0 + 61*15_000, V: math.NaN()}, Sample{T: t0 + 62*15_000, V: 3})
	e.send(t, true, samples, "__name__", "x_total")
	got := e.rec.Take()
	p, ignored := CompileRules(cfg).ParamsFor(string(key("__name__", "x_total")))
	if ignored {
		t.Fatal("x_total is ignored by the default rules")
	}
	a := NewAnalyser(p, true)
	var want []detectors.Result
	for _, s := range samples {
		if o, ok := a.Observe(s.T, s.V); ok {
			want = append(want, o.Combined)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("shard emitted %d records, analyser %d", len(got), len(want))
	}
	for i := range got {
		w := want[i]
		if got[i].Score != w.Score || got[i].Expected != w.Expected || got[i].Warmup == w.Ready {
			t.Fatalf("record %d: shard %+v, analyser %+v", i, got[i], w)
		}
	}
}

// TestMetricsHoldsPeak: a one-sample alarm followed by an ordinary sample
// before the next scrape still reaches /metrics (the snapshot's score is
// the highest since the previous snapshot, for the combined score and, with
// output.per_detector, each detector's), once.
func TestMetricsHoldsPeak(t *testing.T) {
	e := newEnv(t, config.Default(), func(o *Options) { o.PerDetector = true })
	noise := func(i int) float64 { return 10 + float64((i*7919)%13)/13 }
	e.send(t, false, ramp(t0, 400, 1000, noise), "__name__", "g")
	e.snapshot()
	e.rec.Take()
	spikeT := t0 + 400_000
	e.send(t, false, []Sample{{T: spikeT, V: 1000}, {T: spikeT + 1000, V: noise(400)}}, "__name__", "g")
	var spike, after [detectors.NumKinds + 1]float64
	for _, r := range e.rec.Take() {
		switch r.T {
		case spikeT:
			spike[r.Detector] = r.Score
		case spikeT + 1000:
			after[r.Detector] = r.Score
		}
	}
	c := detectors.KindCombined
	if !(spike[c] >= 2) || !(after[c] < spike[c]) {
		t.Fatalf("combined scores %v then %v: want an alarm (≥ 2), then less", spike[c], after[c])
	}
	if !(spike[detectors.KindEWMA] > after[detectors.KindEWMA]) {
		t.Fatalf("EWMA scores %v then %v: want the spike's higher", spike[detectors.KindEWMA], after[detectors.KindEWMA])
	}
	snap := e.snapshot()
	if len(snap) != int(detectors.NumKinds)+1 {
		t.Fatalf("snapshot has %d records, want %d", len(snap), detectors.NumKinds+1)
	}
	for _, r := range snap {
		k := r.Detector
		if want := max(float64(float32(spike[k])), after[k]); r.T != spikeT+1000 || r.Score != want {
			t.Fatalf("snapshot %s %+v: want the latest output (t %d) with the higher score %v", k, r, spikeT+1000, want)
		}
	}
	e.send(t, false, []Sample{{T: spikeT + 2000, V: noise(401)}}, "__name__", "g")
	var latest [detectors.NumKinds + 1]float64
	for _, r := range e.rec.Take() {
		latest[r.Detector] = r.Score
	}
	for _, r := range e.snapshot() {
		if r.Score != latest[r.Detector] {
			t.Fatalf("snapshot %s after the next sample %+v: want its own score %v, the spike shown once", r.Detector, r, latest[r.Detector])
		}
	}
}

// A gauge that only grows (a timestamp such as node_time_seconds, a size,
// an untyped counter) is new at every sample; after its trial it is
// analysed as its rate of change, so that its steady growth scores as
// normal and a fall (a restart) alarms.
func TestGrowingGaugeAnalysedAsRate(t *testing.T) {
	p, _ := CompileRules(config.Default()).ParamsFor(string(key("__name__", "node_time_seconds")))
	a := NewAnalyser(p, false)
	rng := rand.New(rand.NewPCG(1, 2))
	var last detectors.Result
	for i := range 3000 {
		ts := t0 + int64(i)*1000 + int64(rng.IntN(20))
		o, ok := a.Observe(ts, float64(ts)/1000+0.004*rng.Float64()) // the node's clock read a few ms late
		if !ok {
			t.Fatalf("sample %d not analysed", i)
		}
		if i > trialSamples && o.Combined.Score > 1 {
			t.Fatalf("sample %d of a steadily growing gauge scored %v", i, o.Combined.Score)
		}
		last = o.Combined
	}
	if !last.Ready || math.Abs(last.Expected-1) > 0.05 {
		t.Fatalf("a clock read every second: got %+v, want its rate, 1 per second, as expected", last)
	}
	// The clock is set back an hour: the rate falls to -3600 for one sample.
	ts := t0 + 3000*1000
	o, _ := a.Observe(ts, float64(ts)/1000-3600)
	if o.Combined.Score <= 1 {
		t.Fatalf("a clock set back an hour scored %v, want an alarm", o.Combined.Score)
	}
}

// The trial ends a gauge's chance to become a rate at its first fall, and
// a gauge that is flat but for a step or two stays a value: a level
// detector, not a rate, is what sees its next step.
func TestGaugeTrial(t *testing.T) {
	p, _ := CompileRules(config.Default()).ParamsFor(string(key("__name__", "g")))
	for _, tc := range []struct {
		name string
		f    func(i int) float64
		want bool // analysed as a rate of change
	}{
		{"rises", func(i int) float64 { return float64(i) }, true},
		{"rises by steps", func(i int) float64 { return float64(i / 20) }, true},
		{"falls once", func(i int) float64 {
			if i == 40 {
				return 0
			}
			return float64(i)
		}, false},
		{"two steps", func(i int) float64 { return float64(min(i/30, 2)) }, false},
		{"flat", func(int) float64 { return 7 }, false},
	} {
		a := NewAnalyser(p, false)
		for i := range 200 {
			a.Observe(t0+int64(i)*15_000, tc.f(i))
		}
		if got := a.se.flags&flagDeriv != 0; got != tc.want {
			t.Errorf("%s: analysed as a rate of change: %v, want %v (trial %08b)", tc.name, got, tc.want, a.se.trial)
		}
	}
}

// TestIncidentStage: the shards send the evidence of a group's series to
// the incident stage, which opens one incident when they shift together
// and counts the group's series; a series without the group labels is in
// no group.
func TestIncidentStage(t *testing.T) {
	reg := prometheus.NewRegistry()
	inc := NewIncidents(incident.DefaultParams(), 10, nil, reg)
	inc.Start()
	t.Cleanup(inc.Stop)
	e := newEnv(t, config.Default(), func(o *Options) { o.Incidents = inc })
	rng := rand.New(rand.NewPCG(3, 4))
	const n, quiet = 8, 300
	start := time.Now().Add(-10 * time.Minute).UnixMilli()
	for i := range quiet + 5 {
		for k := range n {
			v := 50 + rng.NormFloat64()
			if i >= quiet {
				v += 40
			}
			e.send(t, false, []Sample{{T: start + int64(i)*1000, V: v}}, "__name__", fmt.Sprintf("m%d", k), "instance", "a:1", "job", "node")
		}
	}
	e.send(t, false, []Sample{{T: start, V: 1}}, "__name__", "loner")
	var st *IncidentStatus
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st = inc.Status(); len(st.Incidents) > 0 {
			break
		}
	}
	if len(st.Incidents) != 1 || len(st.Groups) != 1 {
		t.Fatalf("status %+v; want one group with one incident", st)
	}
	// The data is minutes old: the incident opened at the shift and had
	// closed, its quiet period over, by the time the stage published.
	g, in := st.Groups[0], st.Incidents[0]
	if g.Group != "instance\xffa:1\xffjob\xffnode\xff" || g.Opened != 1 || in.Open || in.Series < 2 || len(in.Top) < 2 ||
		in.Start != start+quiet*1000 {
		t.Errorf("group %+v, incident %+v; want the node group with one closed incident of several series from the shift", g, in)
	}
	if r := in.Top[0].Detail.Reason(); r != "new high beyond everything seen" {
		t.Errorf("reason %q for %+v", r, in.Top[0].Detail)
	}
}

// An incident stage that never started stops at once, and Stop twice is
// harmless (a server that failed half-way through starting).
func TestIncidentStageStopUnstarted(t *testing.T) {
	inc := NewIncidents(incident.DefaultParams(), 10, nil, prometheus.NewRegistry())
	done := make(chan struct{})
	go func() { inc.Stop(); inc.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop of a stage that never started did not return")
	}
}

// A rate whose increments are whole numbers counts events, and an
// increment within 2√λ of the λ expected is counting noise: Prometheus's
// own scrape counters rise by 1 a second, and by 0 or 2 when a scrape comes
// a little early or late, which must not score however narrow the band of
// a series that never moved is. Beyond that range the detectors judge as
// before, and a rate with fractional increments is judged as before.
func TestCountingNoise(t *testing.T) {
	p, _ := CompileRules(config.Default()).ParamsFor(string(key("__name__", "promhttp_metric_handler_requests_total")))
	run := func(step float64, tail []float64) []detectors.Output {
		a := NewAnalyser(p, true)
		rng := rand.New(rand.NewPCG(3, 4))
		v, ts := 0.0, t0
		var last detectors.Output
		for i := range 1500 {
			ts, v = t0+int64(i)*1000+int64(rng.IntN(5)), v+step
			o, ok := a.Observe(ts, v)
			if i > 0 && !ok {
				t.Fatalf("sample %d not analysed", i)
			}
			last = o
		}
		if !last.Combined.Ready {
			t.Fatalf("not Ready after 1500 samples: %+v", last.Combined)
		}
		var outs []detectors.Output
		for i, d := range tail {
			ts, v = t0+int64(1500+i)*1000, v+d
			o, _ := a.Observe(ts, v)
			outs = append(outs, o)
		}
		return outs
	}

	outs := run(1, []float64{0, 2, 1, 1})
	for i, o := range outs {
		if o.Combined.Score != 0 || o.Record != 0 {
			t.Errorf("scrape counter, increment %d of %v: score %v, record %v, want 0 (counting noise)", i, []float64{0, 2, 1, 1}, o.Combined.Score, o.Record)
		}
		for k, r := range o.Per {
			if r.Score != 0 {
				t.Errorf("scrape counter, increment %d: detector %v scored %v, want 0", i, detectors.Kind(k), r.Score)
			}
		}
	}
	if c := outs[3].Combined; c.Lower > -0.9 || c.Upper < 2.9 {
		t.Errorf("scrape counter: band [%v, %v], want it to hold 1 ± 2 a second", c.Lower, c.Upper)
	}
	if o := run(1, []float64{10})[0]; o.Combined.Score <= 1 {
		t.Errorf("scrape counter rising by 10 where 1 is expected scored %v, want an alarm", o.Combined.Score)
	}
	if o := run(0.5, []float64{0})[0]; o.Combined.Score <= 1 {
		t.Errorf("a rate of fractional increments (0.5 a second) falling to 0 scored %v, want an alarm as before", o.Combined.Score)
	}
}

// TestCountShiftRaisesScore: a request counter counting 15 a second whose
// rate falls to a quarter scores each sample within its noise, but the
// count test adds them up: the combined score alarms within a few samples,
// reporting the rate before the fall as expected. A counter whose
// increments are not whole numbers is not tested.
func TestCountShiftRaisesScore(t *testing.T) {
	p, _ := CompileRules(config.Default()).ParamsFor(string(key("__name__", "http_requests_total")))
	run := func(scale float64) (int, detectors.Output, *seriesState) {
		a := NewAnalyser(p, true)
		rng := rand.New(rand.NewPCG(5, 6))
		draw := func(lambda float64) float64 {
			l, k, q := math.Exp(-lambda), 0.0, 1.0
			for q *= rng.Float64(); q > l; q *= rng.Float64() {
				k++
			}
			return k
		}
		v := 0.0
		for i := range 1500 {
			v += draw(15) * scale
			if o, _ := a.Observe(t0+int64(i)*1000, v); o.Combined.Score >= 2 && i > 200 {
				t.Fatalf("scale %g: sample %d alarmed before the fall: %+v", scale, i, o.Combined)
			}
		}
		for i := range 30 {
			v += draw(15.0/4) * scale
			if o, _ := a.Observe(t0+int64(1500+i)*1000, v); o.Combined.Score >= 2 {
				return i + 1, o, &a.se
			}
		}
		return -1, detectors.Output{}, &a.se
	}
	n, o, se := run(1)
	if n < 0 || n > 8 {
		t.Fatalf("a request rate falling from 15 to 3.75 a second alarmed after %d samples, want ≤ 8", n)
	}
	if c := o.Combined; o.Driver != detectors.KindEWMA || math.Abs(c.Expected-15) > 2 || c.Lower > c.Expected || c.Upper < c.Expected {
		t.Errorf("alarm after %d samples reports %+v, driver %v: want the rate before the fall, about 15, in its band, driver ewma", n, c, o.Driver)
	}
	if se.count == nil {
		t.Error("a counter of whole increments has no count test")
	}
	if n, _, se := run(0.37); n >= 0 && n <= 8 || se.count != nil {
		t.Errorf("a counter of fractional increments: alarm after %d samples, count test %v; want the detectors' verdict alone", n, se.count)
	}
}

// TestSleepChangesNothing: a series that sleeps through a constant run and
// wakes at its first change gives, sample for sample, the verdicts of one
// that never slept (an Analyser with per-detector outputs stays awake), for
// runs up to WarmUp samples, where the rebuilt state is exact: a gauge, a
// counter counting events at a constant rate (its count test is rebuilt
// too), and a constant gauge with a missed scrape (the replay spaces the
// run evenly, so its verdicts after waking may differ a little: only the
// alarm decision is compared).
func TestSleepChangesNothing(t *testing.T) {
	p := detectors.DefaultParams()
	walk := func(i int) float64 { return float64(i*i%23) - 11 }
	for _, tc := range []struct {
		name    string
		counter bool
		exact   bool
		run     int
		value   func(i int, changed bool) float64
		skip    int // a sample index left out of the run, 0 for none
	}{
		{"gauge", false, true, 700, func(i int, changed bool) float64 {
			if !changed {
				return 42.5
			}
			return 42.5 + walk(i)
		}, 0},
		{"counter", true, true, 700, func(i int, changed bool) float64 {
			if !changed {
				return float64(3 * i)
			}
			return float64(3*700 + 12*(i-700) + i%3)
		}, 0},
		{"gauge with a gap", false, false, 700, func(i int, changed bool) float64 {
			if !changed {
				return 7
			}
			return 7 + 3*walk(i)
		}, 350},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, awake := NewAnalyser(&p, tc.counter), NewAnalyser(&p, tc.counter)
			awake.se.per = new([detectors.NumKinds]lastOut)
			var alarms int
			for i := range tc.run + 300 {
				if i == tc.skip && i > 0 {
					continue
				}
				ts, v := t0+int64(i)*15_000, tc.value(i, i >= tc.run)
				got, ok1 := a.Observe(ts, v)
				want, ok2 := awake.Observe(ts, v)
				if ok1 != ok2 {
					t.Fatalf("sample %d: analysed %v, awake %v", i, ok1, ok2)
				}
				if i == tc.run-1 && !a.se.asleep {
					t.Fatalf("not asleep at the end of a run of %d", tc.run)
				}
				if want.Combined.Score >= 1 {
					alarms++
				}
				if tc.exact && (got.Combined != want.Combined || got.Driver != want.Driver || got.Record != want.Record) {
					t.Fatalf("sample %d: got %+v (driver %s, record %g), never asleep %+v (driver %s, record %g)",
						i, got.Combined, got.Driver, got.Record, want.Combined, want.Driver, want.Record)
				}
				if (got.Combined.Score >= 1) != (want.Combined.Score >= 1) {
					t.Fatalf("sample %d: score %g, never asleep %g", i, got.Combined.Score, want.Combined.Score)
				}
			}
			if a.st.slept != 1 || a.st.woken != 1 || awake.st.slept != 0 {
				t.Fatalf("slept %d and woke %d times, want once; the awake one slept %d times", a.st.slept, a.st.woken, awake.st.slept)
			}
			if alarms == 0 {
				t.Fatal("nothing alarmed after the change: the test compares only quiet verdicts")
			}
		})
	}
}

// TestSleepingSeriesRevived: a sleeping series ended by a stale marker and
// revived with the same value emits the verdict it had, not an empty one.
func TestSleepingSeriesRevived(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	const n = 300
	e.send(t, false, ramp(t0, n, 15_000, func(int) float64 { return 7 }), "__name__", "g")
	recs := e.rec.Take()
	if got := e.s.asleep(); got != 1 {
		t.Fatalf("%d series asleep after %d constant samples, want 1", got, n)
	}
	before := recs[len(recs)-1]
	e.send(t, false, []Sample{{T: t0 + n*15_000, V: math.Float64frombits(value.StaleNaN)}, {T: t0 + (n+1)*15_000, V: 7}}, "__name__", "g")
	recs = e.rec.Take()
	if len(recs) != 2 || !recs[0].Stale || recs[1].Stale {
		t.Fatalf("got %+v, want a stale marker and a record", recs)
	}
	after := recs[1]
	if after.Expected != 7 || after.Expected != before.Expected || after.Lower != before.Lower ||
		after.Upper != before.Upper || after.Warmup || after.Score != 0 {
		t.Fatalf("revived with the same value: %+v, before the marker %+v", after, before)
	}
}

// TestSleepUnderOtherSettings: under other detector settings too, a series
// that sleeps through a constant run gives the verdicts of one that never
// slept when the run is at most WarmUp long (the rebuilt state is exact),
// and the same alarm decisions when it is longer (200 samples without
// Entropy, whose WarmUp is 110; three times WarmUp).
func TestSleepUnderOtherSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(p *detectors.Params)
	}{
		{"entropy off", func(p *detectors.Params) { p.Entropy.Enabled = false }},
		{"calibration off", func(p *detectors.Params) { p.Calibration.Enabled = false }},
		{"no season", func(p *detectors.Params) { p.HoltWinters.Season = 0 }},
		{"no slow scale", func(p *detectors.Params) { p.Entropy.SlowScale = 0 }},
		{"short window", func(p *detectors.Params) { p.Window, p.Warmup = 5, 3 }},
		{"level detectors only", func(p *detectors.Params) { p.Slope.Enabled, p.Entropy.Enabled = false, false }},
	} {
		p := detectors.DefaultParams()
		tc.mod(&p)
		for _, run := range []int{200, 3 * p.WarmUp()} {
			a, awake := NewAnalyser(&p, false), NewAnalyser(&p, false)
			awake.se.per = new([detectors.NumKinds]lastOut)
			var alarms int
			for i := range run + 200 {
				v := 3.25
				if i >= run {
					v += float64(i*i%19) - 9
				}
				ts := t0 + int64(i)*15_000
				got, _ := a.Observe(ts, v)
				want, _ := awake.Observe(ts, v)
				if want.Combined.Score >= 1 {
					alarms++
				}
				if run <= p.WarmUp() && (got.Combined != want.Combined || got.Driver != want.Driver) {
					t.Fatalf("%s, run %d, sample %d: got %+v (%s), never asleep %+v (%s)",
						tc.name, run, i, got.Combined, got.Driver, want.Combined, want.Driver)
				}
				if (got.Combined.Score >= 1) != (want.Combined.Score >= 1) {
					t.Fatalf("%s, run %d, sample %d: score %g, never asleep %g", tc.name, run, i, got.Combined.Score, want.Combined.Score)
				}
			}
			if a.st.slept != 1 || a.st.woken != 1 || alarms == 0 {
				t.Fatalf("%s, run %d: slept %d, woke %d times, %d alarms after the change", tc.name, run, a.st.slept, a.st.woken, alarms)
			}
		}
	}
}

// TestCounterResetNotScored: a restart resets a counter part-way through a
// scrape interval, so the increase across the reset is unknown: the
// sample only primes the next rate, as a counter's first sample does, and
// the restart raises no alarm, however late in the interval it came. The
// rate from the next sample on is judged as before.
func TestCounterResetNotScored(t *testing.T) {
	for _, frac := range []float64{0.05, 0.5, 0.95} {
		e := newEnv(t, config.Default(), nil)
		const n = 300
		// 10/s ± a little, every 15 s; at sample n the process restarted
		// frac of an interval before the scrape.
		v, samples := 0.0, make([]Sample, 0, n+20)
		for i := range n {
			v += 150 + float64((i*7919)%11) - 5
			samples = append(samples, Sample{T: t0 + int64(i)*15_000, V: v})
		}
		v = 150 * frac
		for i := n; i < n+20; i++ {
			samples = append(samples, Sample{T: t0 + int64(i)*15_000, V: v})
			v += 150 + float64((i*7919)%11) - 5
		}
		e.send(t, true, samples, "__name__", "reqs_total")
		for _, r := range e.rec.Take() {
			i := int((r.T - t0) / 15_000)
			if i == n {
				t.Errorf("restart %.0f%% into the interval: the reset sample was scored %+v", 100*frac, r)
			}
			if i > n && r.Score >= 1 {
				t.Errorf("restart %.0f%% into the interval: sample %d after it scored %g (rate %g)", 100*frac, i-n, r.Score, r.Analysed)
			}
		}
		if got := e.s.shards[0].stats.counterResets.Load() + e.s.shards[1].stats.counterResets.Load(); got != 1 {
			t.Fatalf("counter resets: got %d, want 1", got)
		}
	}
}
