package ingest

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/series"
)

type nopAppender struct{}

func (nopAppender) Append([]series.Record) {}

// nopWriter is a ResponseWriter that allocates nothing per request.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// benchSeries builds node_exporter- and service-like label sets (~150 bytes).
func benchSeries(n int) [][]prompb.Label {
	out := make([][]prompb.Label, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = []prompb.Label{
				{Name: "__name__", Value: fmt.Sprintf("node_cpu_seconds_total_%d", i%50)},
				{Name: "cpu", Value: fmt.Sprint(i % 64)},
				{Name: "instance", Value: fmt.Sprintf("node-%04d.example.internal:9100", i/640)},
				{Name: "job", Value: "node"},
				{Name: "mode", Value: "user"},
			}
		} else {
			out[i] = []prompb.Label{
				{Name: "__name__", Value: fmt.Sprintf("http_request_duration_seconds_gauge_%d", i%40)},
				{Name: "code", Value: "200"},
				{Name: "handler", Value: fmt.Sprintf("/api/v1/items/%d", i%97)},
				{Name: "instance", Value: fmt.Sprintf("api-%04d:8080", i/400)},
				{Name: "job", Value: "api"},
				{Name: "method", Value: "GET"},
			}
		}
	}
	return out
}

// encodeRound encodes one sample per series, perRequest series a request.
func encodeRound(dst [][]byte, lbls [][]prompb.Label, perRequest int, ts int64, round int) [][]byte {
	dst = dst[:0]
	wr := &prompb.WriteRequest{}
	for start := 0; start < len(lbls); start += perRequest {
		wr.Timeseries = wr.Timeseries[:0]
		for i := start; i < min(start+perRequest, len(lbls)); i++ {
			v := float64(round*(i%7+1)) + float64(i%13) // counters grow, gauges wiggle
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: lbls[i], Samples: []prompb.Sample{{Timestamp: ts, Value: v}}})
		}
		b, _ := wr.Marshal()
		dst = append(dst, snappy.Encode(nil, b))
	}
	return dst
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngest measures the whole ingest path with the default four
// detectors: HTTP handler, snappy, decode, canonicalise, hash, shard hand-off,
// series lookup, counter rates and detectors. One op is one scrape round of
// 100k series in requests of 2000 samples. Reported: CPU-seconds per million
// samples (process CPU, all goroutines) and allocations per request.
func BenchmarkIngest(b *testing.B) { benchmarkIngest(b, false) }

// BenchmarkIngestHA is BenchmarkIngest with ha on and every series from the
// elected replica of one cluster: the per-request election and the replica
// label left out of every key.
func BenchmarkIngestHA(b *testing.B) { benchmarkIngest(b, true) }

func benchmarkIngest(b *testing.B, ha bool) {
	const nSeries, perRequest = 100_000, 2000
	cfg := config.Default()
	opts := window.Options{Shards: runtime.GOMAXPROCS(0), QueueSize: 64, MaxSeries: 1_000_000, SeriesTTL: time.Hour, PublishInterval: time.Hour}
	reg := prometheus.NewRegistry()
	shards := window.New(opts, window.CompileRules(cfg), nopAppender{}, reg)
	shards.Start()
	defer shards.Stop(b.Context())
	o := testOptions()
	o.MaxCompressedBytes, o.MaxDecodedBytes = 32<<20, 32<<20
	lbls := benchSeries(nSeries)
	if ha {
		o.HA = testHA()
		lbls = withReplica(lbls, "a")
	}
	h := NewHandler(o, shards, reg, zap.NewNop())
	ts := time.Now().Add(-24 * time.Hour).UnixMilli()
	w := &nopWriter{h: http.Header{}}
	body := bytes.NewReader(nil)
	req, _ := http.NewRequest(http.MethodPost, "/api/v1/write", body)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	var reqs [][]byte
	serve := func() {
		for _, r := range reqs {
			body.Reset(r)
			req.Body = readCloser{body}
			req.ContentLength = int64(len(r))
			h.ServeHTTP(w, req)
			for w.code == http.StatusServiceUnavailable { // back-pressure: retry as a sender would
				time.Sleep(time.Millisecond)
				body.Reset(r)
				h.ServeHTTP(w, req)
			}
			if w.code != http.StatusNoContent {
				b.Fatalf("status %d", w.code)
			}
		}
		shards.Sync()
	}
	// Warm up: create the series and fill the detector windows.
	round := 0
	for ; round < 12; round++ {
		reqs = encodeRound(reqs, lbls, perRequest, ts+int64(round)*15_000, round)
		serve()
	}
	// Every timed round is encoded before the timer starts, so neither the
	// encoding nor the garbage it leaves for the GC is measured. That needs
	// b.N up front, hence the classic loop instead of b.Loop.
	rounds := make([][][]byte, b.N)
	for i := range rounds {
		rounds[i] = encodeRound(nil, lbls, perRequest, ts+int64(round+i)*15_000, round+i)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs0 := ms.Mallocs
	c0 := cpuNow()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		reqs = rounds[i]
		serve()
	}
	b.StopTimer()
	cpu := cpuNow() - c0
	runtime.ReadMemStats(&ms)
	samples := float64(b.N) * nSeries
	b.ReportMetric(cpu.Seconds()/samples*1e6, "cpu-s/Msamples")
	b.ReportMetric(float64(ms.Mallocs-mallocs0)/float64(b.N*len(reqs)), "allocs/request")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// withReplica adds the external labels of replica of HA cluster c1 to
// every label set of lbls.
func withReplica(lbls [][]prompb.Label, replica string) [][]prompb.Label {
	out := make([][]prompb.Label, len(lbls))
	for i, ls := range lbls {
		out[i] = append(slices.Clone(ls), prompb.Label{Name: "__replica__", Value: replica}, prompb.Label{Name: "cluster", Value: "c1"})
	}
	return out
}

// The ingest path must not allocate per series or per sample: a request of
// 2000 known series may cost a couple of allocations in all (shared runtime
// work), never thousands. With ha on, neither does the election.
func TestIngestAllocationsPerRequest(t *testing.T) {
	t.Run("ha off", func(t *testing.T) { testIngestAllocations(t, false) })
	t.Run("ha on", func(t *testing.T) { testIngestAllocations(t, true) })
}

func testIngestAllocations(t *testing.T, ha bool) {
	const nSeries = 2000
	var env *testEnv
	lbls := benchSeries(nSeries)
	if ha {
		env, lbls = newHAEnv(t, testHA()), withReplica(lbls, "a")
	} else {
		env = newEnv(t, 64, true)
	}
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var rounds [][]byte
	for r := range 130 {
		rounds = append(rounds, encodeRound(nil, lbls, nSeries, ts+int64(r)*15_000, r)...)
	}
	w := &nopWriter{h: http.Header{}}
	body := bytes.NewReader(nil)
	req, _ := http.NewRequest(http.MethodPost, "/api/v1/write", body)
	req.Header.Set("Content-Type", "application/x-protobuf")
	next := 0
	serve := func() {
		body.Reset(rounds[next])
		req.Body = readCloser{body}
		req.ContentLength = int64(len(rounds[next]))
		next++
		env.h.ServeHTTP(w, req)
		if w.code != http.StatusNoContent {
			t.Fatalf("status %d", w.code)
		}
		env.shards.Sync()
	}
	for range 20 { // create the series, grow every buffer
		serve()
	}
	if avg := testing.AllocsPerRun(100, serve); avg > 10 {
		t.Fatalf("%.1f allocations per request of %d series, want ≤ 10", avg, nSeries)
	}
}

// Native histograms through remote write 2.0 cost no allocation per series
// either: each becomes two derived series in the same batches.
func TestIngestAllocationsRW2Histograms(t *testing.T) {
	const nSeries = 500
	env := newEnv(t, 64, true)
	ts := time.Now().Add(-time.Hour).UnixMilli()
	var rounds [][]byte
	for r := range 40 {
		st := writev2.NewSymbolTable()
		wr := &writev2.Request{}
		for i := range nSeries {
			s := v2Series(&st, fmt.Sprintf("g_%d", i), ts+int64(r)*15_000, 1)
			if i%2 == 0 {
				s = v2Hist(&st, fmt.Sprintf("h_%d", i), ts+int64(r)*15_000, 1, false)
				s.Histograms[0].Count = &writev2.Histogram_CountInt{CountInt: uint64(r * (i + 1))}
			}
			wr.Timeseries = append(wr.Timeseries, s)
		}
		wr.Symbols = st.Symbols()
		rounds = append(rounds, encodeV2(t, wr))
	}
	w := &nopWriter{h: http.Header{}}
	body := bytes.NewReader(nil)
	req, _ := http.NewRequest(http.MethodPost, "/api/v1/write", body)
	req.Header.Set("Content-Type", contentTypeV2)
	next := 0
	serve := func() {
		body.Reset(rounds[next])
		req.Body = readCloser{body}
		req.ContentLength = int64(len(rounds[next]))
		next++
		env.h.ServeHTTP(w, req)
		if w.code != http.StatusNoContent {
			t.Fatalf("status %d", w.code)
		}
		if got := w.h.Get("X-Prometheus-Remote-Write-Histograms-Written"); got != "250" {
			t.Fatalf("Histograms-Written %q, want 250", got)
		}
		env.shards.Sync()
	}
	for range 20 {
		serve()
	}
	// An RW2 answer costs a few allocations per request on top of RW1's:
	// three Written header values, the Content-Type's proto parameter and
	// the counts of 100 or more formatted. One per series would be 500.
	if avg := testing.AllocsPerRun(10, serve); avg > 16 {
		t.Fatalf("%.1f allocations per request of %d series, want ≤ 16", avg, nSeries)
	}
}

// BenchmarkSeriesKey measures what ingest does per series before the
// shard hand-off: decode a request of 2000 series, then validate each
// series' labels, build its key (canonicalKey) and hash it. Reported per
// series; "reversed" sends every series' labels in reverse order, which
// takes the general path (sort, then validate, then build).
func BenchmarkSeriesKey(b *testing.B) {
	for _, reversed := range []bool{false, true} {
		name := "sorted"
		if reversed {
			name = "reversed"
		}
		b.Run(name, func(b *testing.B) {
			lbls := benchSeries(2000)
			if reversed {
				for _, l := range lbls {
					slices.Reverse(l)
				}
			}
			raw, err := snappy.Decode(nil, encodeRound(nil, lbls, len(lbls), 1000, 1)[0])
			if err != nil {
				b.Fatal(err)
			}
			h := &Handler{}
			o := testOptions()
			var req request
			var key []byte
			var sum uint64
			b.ReportAllocs()
			for b.Loop() {
				req.reset()
				req.buf = raw
				if err := req.decodeV1(); err != nil {
					b.Fatal(err)
				}
				for i := range req.series {
					var why reason
					var detail string
					key, why, detail = h.canonicalKey(key[:0], &req, &req.series[i], protoV1, &o, "")
					if why != reasonOK {
						b.Fatal(detail)
					}
					sum += series.Hash(key)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lbls)), "ns/series")
			_ = sum
		})
	}
}
