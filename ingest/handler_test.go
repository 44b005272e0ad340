package ingest

import (
	"bytes"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/windowtest"
)

func testOptions() Options {
	return Options{MaxCompressedBytes: 1 << 20, MaxDecodedBytes: 4 << 20, MaxLabelsPerSeries: 30,
		MaxLabelNameLength: 64, MaxLabelValueLength: 256, MaxFuture: 10 * time.Minute}
}

type testEnv struct {
	h      *Handler
	shards *window.Shards
	rec    *windowtest.Recorder
	reg    *prometheus.Registry
}

func newEnv(t testing.TB, queueSize int, start bool) *testEnv {
	t.Helper()
	cfg := config.Default()
	rec := &windowtest.Recorder{}
	opts := window.Options{Shards: 2, QueueSize: queueSize, MaxSeries: 1000, SeriesTTL: time.Hour, PublishInterval: time.Hour}
	reg := prometheus.NewRegistry()
	shards := window.New(opts, window.CompileRules(cfg), rec, reg)
	if start {
		shards.Start()
		t.Cleanup(func() { shards.Stop(t.Context()) })
	}
	return &testEnv{h: NewHandler(testOptions(), shards, reg, zap.NewNop()), shards: shards, rec: rec, reg: reg}
}

func encodeV1(t testing.TB, wr *prompb.WriteRequest) []byte {
	t.Helper()
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func encodeV2(t testing.TB, wr *writev2.Request) []byte {
	t.Helper()
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

func post(h http.Handler, body []byte, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func now() int64 { return time.Now().UnixMilli() }

func gaugeSeries(name string, ts int64, v float64, extra ...prompb.Label) prompb.TimeSeries {
	return prompb.TimeSeries{
		Labels:  append([]prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "test"}}, extra...),
		Samples: []prompb.Sample{{Timestamp: ts, Value: v}},
	}
}

func TestStatusCodes(t *testing.T) {
	env := newEnv(t, 16, true)
	good := encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{gaugeSeries("up", now(), 1)}})
	st := writev2.NewSymbolTable()
	goodV2 := encodeV2(t, &writev2.Request{Timeseries: []writev2.TimeSeries{{
		LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("up"), st.Symbolize("job"), st.Symbolize("v2")},
		Samples:    []writev2.Sample{{Value: 1, Timestamp: now()}, {Value: 2, Timestamp: now() + 1}},
	}}, Symbols: st.Symbols()})
	bigDecoded := snappy.Encode(nil, make([]byte, 5<<20)) // decodes to 5 MiB > 4 MiB limit
	var framed bytes.Buffer
	fw := snappy.NewBufferedWriter(&framed)
	fw.Write([]byte("x"))
	fw.Close()

	tests := []struct {
		name     string
		method   string
		body     []byte
		header   map[string]string
		want     int
		contains string
	}{
		{"rw1", "", good, nil, 204, ""},
		{"missing content type is rw1", "", good, map[string]string{"Content-Type": ""}, 204, ""},
		{"missing content encoding is snappy", "", good, map[string]string{"Content-Encoding": ""}, 204, ""},
		{"rw1 proto param", "", good, map[string]string{"Content-Type": "application/x-protobuf;proto=prometheus.WriteRequest"}, 204, ""},
		{"rw2 with whitespace and case", "", goodV2, map[string]string{"Content-Type": "Application/X-Protobuf; proto=io.prometheus.write.v2.Request"}, 204, ""},
		{"GET", http.MethodGet, nil, nil, 405, "use POST"},
		{"text/plain", "", good, map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type"},
		{"unknown proto", "", good, map[string]string{"Content-Type": "application/x-protobuf;proto=foo.Bar"}, 415, "proto must be"},
		{"zstd", "", good, map[string]string{"Content-Encoding": "zstd"}, 415, "Content-Encoding"},
		{"gzip", "", good, map[string]string{"Content-Encoding": "gzip"}, 415, "Content-Encoding"},
		{"too large", "", make([]byte, 1<<20+1), nil, 413, "ingest.max_compressed_bytes"},
		{"decompression bomb", "", bigDecoded, nil, 400, "ingest.max_decoded_bytes"},
		{"framed snappy", "", framed.Bytes(), nil, 400, "framed"},
		{"not snappy", "", []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), nil, 400, "snappy"},
		{"not protobuf", "", snappy.Encode(nil, []byte{0x0a, 0x80}), nil, 400, "cannot decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/api/v1/write", bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/x-protobuf")
			req.Header.Set("Content-Encoding", "snappy")
			for k, v := range tc.header {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			w := httptest.NewRecorder()
			env.h.ServeHTTP(w, req)
			if w.Code != tc.want {
				t.Fatalf("got %d %q, want %d", w.Code, w.Body.String(), tc.want)
			}
			if !strings.Contains(w.Body.String(), tc.contains) {
				t.Fatalf("body %q does not contain %q", w.Body.String(), tc.contains)
			}
		})
	}
}

func TestChunkedBodyOverLimitIs413(t *testing.T) {
	env := newEnv(t, 16, true)
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), strings.NewReader("xx")))
	req.ContentLength = -1
	w := httptest.NewRecorder()
	env.h.ServeHTTP(w, req)
	if w.Code != 413 {
		t.Fatalf("got %d, want 413", w.Code)
	}
}

func TestRW2WrittenHeaders(t *testing.T) {
	env := newEnv(t, 16, true)
	st := writev2.NewSymbolTable()
	ts := now()
	wr := &writev2.Request{Timeseries: []writev2.TimeSeries{
		{LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("a")}, Samples: []writev2.Sample{{Value: 1, Timestamp: ts}, {Value: 2, Timestamp: ts + 1000}}},
		{LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("h")}, Histograms: []writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 1}, Timestamp: ts}}},
		{LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("b")}, Samples: []writev2.Sample{{Value: 3, Timestamp: ts}},
			Exemplars: []writev2.Exemplar{{Value: 1, Timestamp: ts}}},
	}}
	wr.Symbols = st.Symbols()
	w := post(env.h, encodeV2(t, wr), map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"})
	if w.Code != 204 {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	for h, want := range map[string]string{"Samples": "3", "Histograms": "1", "Exemplars": "0"} {
		if got := w.Header().Get("X-Prometheus-Remote-Write-" + h + "-Written"); got != want {
			t.Errorf("%s-Written: got %q, want %q (histograms are analysed, exemplars never claimed)", h, got, want)
		}
	}
	// RW1 responses carry no such headers.
	w = post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{gaugeSeries("up", ts, 1)}}), nil)
	if got := w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"); got != "" {
		t.Fatalf("RW1 response has Samples-Written %q", got)
	}
}

func TestPartialWrite(t *testing.T) {
	env := newEnv(t, 16, true)
	ts := now()
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		gaugeSeries("good_gauge", ts, 1),
		{Labels: []prompb.Label{{Name: "__name__", Value: "dup"}, {Name: "a", Value: "1"}, {Name: "a", Value: "2"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}}},
		{Labels: []prompb.Label{{Name: "job", Value: "noname"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "", Value: "v"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "bad\xffutf8"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}}},
		gaugeSeries("future_gauge", ts+11*60*1000, 1),
	}}
	w := post(env.h, encodeV1(t, wr), nil)
	if w.Code != 400 {
		t.Fatalf("got %d, want 400", w.Code)
	}
	body := w.Body.String()
	for _, want := range []string{"duplicate_label_name: 1", "missing_metric_name: 1", "empty_label_name: 1",
		"invalid_utf8: 1", "too_far_in_future: 1", "the rest was written", `duplicate label name "a"`} {
		if !strings.Contains(body, want) {
			t.Errorf("body %q lacks %q", body, want)
		}
	}
	env.shards.Sync()
	got := env.rec.Series()
	if got["__name__\xffgood_gauge\xffjob\xfftest\xff"] != 1 || len(got) != 1 {
		t.Fatalf("the valid series was not written (partial write): got %v", got)
	}
}

// Unsorted labels and empty values must not create a second series.
func TestCanonicalIdentity(t *testing.T) {
	env := newEnv(t, 16, true)
	ts := now()
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "job", Value: "j"}, {Name: "__name__", Value: "g"}, {Name: "a", Value: "1"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "g"}, {Name: "a", Value: "1"}, {Name: "empty", Value: ""}, {Name: "job", Value: "j"}}, Samples: []prompb.Sample{{Timestamp: ts + 1000, Value: 2}}},
	}}
	if w := post(env.h, encodeV1(t, wr), nil); w.Code != 204 {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	env.shards.Sync()
	got := env.rec.Series()
	if len(got) != 1 || got["__name__\xffg\xffa\xff1\xffjob\xffj\xff"] != 2 {
		t.Fatalf("got series %v, want one canonical series with 2 outputs", got)
	}
}

func TestBackPressureIs503(t *testing.T) {
	env := newEnv(t, 1, false) // shards not running: queues fill up
	ts := now()
	var codes []int
	for i := range 6 {
		wr := &prompb.WriteRequest{}
		for j := range 20 {
			wr.Timeseries = append(wr.Timeseries, gaugeSeries("g", ts+int64(i), 1, prompb.Label{Name: "i", Value: string(rune('a' + j))}))
		}
		w := post(env.h, encodeV1(t, wr), nil)
		codes = append(codes, w.Code)
		if w.Code == 503 && w.Header().Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	if codes[0] != 204 || codes[len(codes)-1] != 503 {
		t.Fatalf("codes %v: want 204 first, then 503 once the queues are full (never 429, never a silent drop)", codes)
	}
}

// readCounter is a request body that counts the bytes read from it.
type readCounter struct {
	r *bytes.Reader
	n int
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestFullQueueRefusedBeforeDecoding: with a shard queue full, a request
// gets 503 with Retry-After before its body is read, so the CPU of
// decoding it goes to the shards; once the queue has room, the same
// request is accepted.
func TestFullQueueRefusedBeforeDecoding(t *testing.T) {
	env := newEnv(t, 1, false) // shards not running: queues fill up
	ts := now()
	wr := &prompb.WriteRequest{}
	for j := range 20 {
		wr.Timeseries = append(wr.Timeseries, gaugeSeries("g", ts, 1, prompb.Label{Name: "i", Value: string(rune('a' + j))}))
	}
	body := encodeV1(t, wr)
	for i := 0; !env.shards.Full(); i++ {
		if i == 10 {
			t.Fatal("the queues never filled")
		}
		post(env.h, body, nil)
	}
	rc := &readCounter{r: bytes.NewReader(body)}
	req := httptest.NewRequest(http.MethodPost, "/api/v1/write", rc)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	w := httptest.NewRecorder()
	env.h.ServeHTTP(w, req)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || rc.n != 0 {
		t.Fatalf("queue full: %d (Retry-After %q), %d body bytes read; want 503 with Retry-After and the body unread: %s",
			w.Code, w.Header().Get("Retry-After"), rc.n, w.Body)
	}
	env.shards.Start()
	t.Cleanup(func() { env.shards.Stop(t.Context()) })
	env.shards.Sync()
	if w := post(env.h, body, nil); w.Code != 204 {
		t.Fatalf("after the queues drained: %d, want 204: %s", w.Code, w.Body)
	}
}

func TestShutdownIs503(t *testing.T) {
	env := newEnv(t, 16, true)
	env.h.Shutdown()
	w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{gaugeSeries("up", now(), 1)}}), nil)
	if w.Code != 503 {
		t.Fatalf("got %d, want 503", w.Code)
	}
}

func TestCounterFromMetadata(t *testing.T) {
	env := newEnv(t, 16, true)
	ts := now()
	// RW1 metadata arrives in its own request, as Prometheus sends it.
	meta := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "odd_name"}}}
	if w := post(env.h, encodeV1(t, meta), nil); w.Code != 204 {
		t.Fatalf("metadata: %d", w.Code)
	}
	// A counter's first sample only primes the rate: one output for two samples.
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "odd_name"}},
		Samples: []prompb.Sample{{Timestamp: ts, Value: 100}, {Timestamp: ts + 1000, Value: 110}},
	}}}
	if w := post(env.h, encodeV1(t, wr), nil); w.Code != 204 {
		t.Fatalf("got %d", w.Code)
	}
	env.shards.Sync()
	if got := env.rec.Series()["__name__\xffodd_name\xff"]; got != 1 {
		t.Fatalf("counter from metadata: got %d outputs, want 1 (first sample primes the rate)", got)
	}
}

func TestNoPanicOnSpecialValues(t *testing.T) {
	env := newEnv(t, 16, true)
	ts := now()
	wr := &prompb.WriteRequest{}
	for i, v := range specialValues {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "special"}},
			Samples: []prompb.Sample{{Timestamp: ts + int64(i), Value: v}},
		})
	}
	if w := post(env.h, encodeV1(t, wr), nil); w.Code != 204 {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	env.shards.Sync()
	for _, r := range env.rec.Records() {
		if !r.Stale && (math.IsNaN(r.Score) || math.IsInf(r.Score, 0)) {
			t.Fatalf("non-finite score %v", r.Score)
		}
	}
}

// FuzzHandler throws arbitrary bodies (raw and snappy-wrapped) at the whole
// handler, RW1 and RW2: it must never panic and must answer 204, 400 or (back-pressure) 503.
func FuzzHandler(f *testing.F) {
	f.Add([]byte{}, false, false)
	b, _ := randomV1(nil2rng(), 4).Marshal()
	f.Add(b, true, false)
	b, _ = randomV2(nil2rng(), 4).Marshal()
	f.Add(b, true, true)
	env := newEnv(f, 1024, true)
	f.Fuzz(func(t *testing.T, body []byte, wrap, v2 bool) {
		if wrap {
			body = snappy.Encode(nil, body)
		}
		hdr := map[string]string{}
		if v2 {
			hdr["Content-Type"] = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
		}
		w := post(env.h, body, hdr)
		if w.Code != 204 && w.Code != 400 && w.Code != 503 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}

func nil2rng() *rand.Rand { return rand.New(rand.NewPCG(11, 12)) }

func TestUTF8Labels(t *testing.T) {
	env := newEnv(t, 16, true)
	ts := now()
	// Valid non-ASCII passes (RW1 and RW2); invalid UTF-8 is a 400.
	ok := encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{gaugeSeries("temp", ts, 1, prompb.Label{Name: "city", Value: "Zürich"})}})
	if w := post(env.h, ok, nil); w.Code != 204 {
		t.Fatalf("RW1 valid UTF-8: got %d %s", w.Code, w.Body)
	}
	for _, sym := range []string{"Zürich", "bad\xc3("} {
		wr := &writev2.Request{Symbols: []string{"", "__name__", "temp", "city", sym}, Timeseries: []writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []writev2.Sample{{Value: 1, Timestamp: ts}}},
		}}
		w := post(env.h, encodeV2(t, wr), map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"})
		want := 204
		if !utf8.ValidString(sym) {
			want = 400
		}
		if w.Code != want {
			t.Fatalf("RW2 symbol %q: got %d, want %d", sym, w.Code, want)
		}
	}
}

const contentTypeV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"

// v2Series is one RW2 test series: a gauge called name with n samples one
// second apart from ts.
func v2Series(st *writev2.SymbolsTable, name string, ts int64, n int) writev2.TimeSeries {
	s := writev2.TimeSeries{LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize(name), st.Symbolize("job"), st.Symbolize("rw2")}}
	for i := range n {
		s.Samples = append(s.Samples, writev2.Sample{Value: float64(i), Timestamp: ts + int64(i)*1000})
	}
	return s
}

// v2Key is the canonical key of v2Series(name).
func v2Key(name string) string { return "__name__\xff" + name + "\xffjob\xffrw2\xff" }

// v2Hist is one RW2 test series: a native histogram called name with n
// samples one second apart from ts, count 10·i and sum 2.5·i; a gauge
// histogram when gauge.
func v2Hist(st *writev2.SymbolsTable, name string, ts int64, n int, gauge bool) writev2.TimeSeries {
	s := writev2.TimeSeries{LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize(name), st.Symbolize("job"), st.Symbolize("rw2")}}
	for i := range n {
		h := writev2.Histogram{Count: &writev2.Histogram_CountInt{CountInt: uint64(10 * i)}, Sum: 2.5 * float64(i), Schema: 0,
			PositiveSpans: []writev2.BucketSpan{{Offset: 0, Length: 1}}, PositiveDeltas: []int64{int64(10 * i)}, Timestamp: ts + int64(i)*1000}
		if gauge {
			h.ResetHint = writev2.Histogram_RESET_HINT_GAUGE
		}
		s.Histograms = append(s.Histograms, h)
	}
	return s
}

// Every RW2 case goes through the real handler. A 400 writes the valid
// rest of the request, and the Written headers say exactly what that was:
// validation finishes before the first sample is handed to a shard, so the
// answer never disagrees with what was analysed.
func TestRW2Conformance(t *testing.T) {
	ts := now()
	tests := []struct {
		name string
		// build returns the request; st symbolises its strings.
		build    func(st *writev2.SymbolsTable) []writev2.TimeSeries
		want     int
		contains []string
		// written and histograms are Samples-Written and
		// Histograms-Written ("" is "0"); analysed the series the shards
		// got, with their number of outputs (one per gauge sample, one per
		// counter sample after the first, which primes the rate).
		written, histograms string
		analysed            map[string]int
	}{
		{
			name: "valid metadata, exemplars beside samples",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				s := v2Series(st, "g_ok", ts, 2)
				s.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: st.Symbolize("help"), UnitRef: st.Symbolize("seconds")}
				s.Exemplars = []writev2.Exemplar{{LabelsRefs: []uint32{st.Symbolize("trace_id"), st.Symbolize("t1")}, Value: 1, Timestamp: ts}}
				return []writev2.TimeSeries{s, v2Series(st, "g_other", ts, 1)}
			},
			want: 204, written: "3", analysed: map[string]int{v2Key("g_ok"): 2, v2Key("g_other"): 1},
		},
		{
			name: "help_ref beyond symbols",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				bad := v2Series(st, "g_bad", ts, 2)
				bad.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: 1000}
				return []writev2.TimeSeries{v2Series(st, "g_ok", ts, 1), bad}
			},
			want:     400,
			contains: []string{"invalid_symbol_reference: 1", "metadata.help_ref 1000 is beyond the symbols table", `__name__="g_bad"`, "the rest was written"},
			written:  "1", analysed: map[string]int{v2Key("g_ok"): 1},
		},
		{
			name: "unit_ref beyond symbols",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				bad := v2Series(st, "g_bad", ts, 1)
				bad.Metadata = writev2.Metadata{UnitRef: 77}
				return []writev2.TimeSeries{bad, v2Series(st, "g_ok", ts, 2)}
			},
			want:     400,
			contains: []string{"invalid_symbol_reference: 1", "metadata.unit_ref 77 is beyond the symbols table"},
			written:  "2", analysed: map[string]int{v2Key("g_ok"): 2},
		},
		{
			name: "exemplars without samples or histograms",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				bad := v2Series(st, "g_bad", ts, 0)
				bad.Exemplars = []writev2.Exemplar{{LabelsRefs: []uint32{st.Symbolize("trace_id"), st.Symbolize("t1")}, Value: 1, Timestamp: ts}}
				return []writev2.TimeSeries{v2Series(st, "g_ok", ts, 1), bad}
			},
			want:     400,
			contains: []string{"no_samples: 1", "at least one sample or histogram (it has 1 exemplars)"},
			written:  "1", analysed: map[string]int{v2Key("g_ok"): 1},
		},
		{
			name: "nothing but labels",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				return []writev2.TimeSeries{v2Series(st, "g_bad", ts, 0)}
			},
			want:     400,
			contains: []string{"no_samples: 1"},
			written:  "0", analysed: map[string]int{},
		},
		{
			name: "native histograms as _count and _sum counters",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				return []writev2.TimeSeries{v2Series(st, "g_ok", ts, 2), v2Hist(st, "h", ts, 3, false)}
			},
			want: 204, written: "2", histograms: "3",
			analysed: map[string]int{v2Key("g_ok"): 2, v2Key("h_count"): 2, v2Key("h_sum"): 2},
		},
		{
			name: "gauge histogram as _count and _sum gauges",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				return []writev2.TimeSeries{v2Hist(st, "gh", ts, 3, true)}
			},
			want: 204, written: "0", histograms: "3",
			analysed: map[string]int{v2Key("gh_count"): 3, v2Key("gh_sum"): 3},
		},
		{
			name: "samples and histograms in one series",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				bad := v2Hist(st, "h_bad", ts, 2, false)
				bad.Samples = []writev2.Sample{{Value: 1, Timestamp: ts}}
				return []writev2.TimeSeries{bad, v2Hist(st, "h", ts, 2, true)}
			},
			want:     400,
			contains: []string{"samples_and_histograms: 1"},
			written:  "0", histograms: "2",
			analysed: map[string]int{v2Key("h_count"): 2, v2Key("h_sum"): 2},
		},
		{
			name: "histogram too far in the future",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				h := v2Hist(st, "gh", ts, 2, true)
				h.Histograms[1].Timestamp = ts + 11*60*1000
				return []writev2.TimeSeries{h}
			},
			want:     400,
			contains: []string{"too_far_in_future: 1", "histogram timestamp"},
			written:  "0", histograms: "1",
			analysed: map[string]int{v2Key("gh_count"): 1, v2Key("gh_sum"): 1},
		},
		{
			name: "histogram with a dangling help_ref",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				bad := v2Hist(st, "h_bad", ts, 2, false)
				bad.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: 999}
				return []writev2.TimeSeries{bad, v2Series(st, "g_ok", ts, 1)}
			},
			want:     400,
			contains: []string{"metadata.help_ref 999"},
			written:  "1", histograms: "0",
			analysed: map[string]int{v2Key("g_ok"): 1},
		},
		{
			name: "every series invalid",
			build: func(st *writev2.SymbolsTable) []writev2.TimeSeries {
				bad := v2Series(st, "g_bad", ts, 3)
				bad.Metadata = writev2.Metadata{HelpRef: 5000}
				return []writev2.TimeSeries{bad}
			},
			want:     400,
			contains: []string{"metadata.help_ref 5000"},
			written:  "0", analysed: map[string]int{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t, 16, true)
			st := writev2.NewSymbolTable()
			wr := &writev2.Request{Timeseries: tc.build(&st)}
			wr.Symbols = st.Symbols()
			w := post(env.h, encodeV2(t, wr), map[string]string{"Content-Type": contentTypeV2})
			if w.Code != tc.want {
				t.Fatalf("got %d %q, want %d", w.Code, w.Body, tc.want)
			}
			for _, want := range tc.contains {
				if !strings.Contains(w.Body.String(), want) {
					t.Errorf("body %q lacks %q", w.Body, want)
				}
			}
			histograms := tc.histograms
			if histograms == "" {
				histograms = "0"
			}
			for h, want := range map[string]string{"Samples": tc.written, "Histograms": histograms, "Exemplars": "0"} {
				if got := w.Header().Get("X-Prometheus-Remote-Write-" + h + "-Written"); got != want {
					t.Errorf("%s-Written: got %q, want %q", h, got, want)
				}
			}
			env.shards.Sync()
			got := env.rec.Series()
			if len(got) != len(tc.analysed) {
				t.Fatalf("analysed %v, want %v", got, tc.analysed)
			}
			for k, n := range tc.analysed {
				if got[k] != n {
					t.Fatalf("analysed %v, want %v", got, tc.analysed)
				}
			}
		})
	}
}

// A stale histogram ends both derived series; RW1 histograms are analysed
// the same way (RW1 answers carry no Written headers).
func TestNativeHistograms(t *testing.T) {
	ts := now()
	t.Run("stale marker", func(t *testing.T) {
		env := newEnv(t, 16, true)
		st := writev2.NewSymbolTable()
		s := v2Hist(&st, "h", ts, 3, false)
		stale := s.Histograms[2]
		stale.Timestamp, stale.Sum = ts+3000, math.Float64frombits(value.StaleNaN)
		s.Histograms = append(s.Histograms, stale)
		wr := &writev2.Request{Timeseries: []writev2.TimeSeries{s}, Symbols: st.Symbols()}
		w := post(env.h, encodeV2(t, wr), map[string]string{"Content-Type": contentTypeV2})
		if w.Code != 204 || w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written") != "4" {
			t.Fatalf("got %d %q, Histograms-Written %q; want 204, 4", w.Code, w.Body, w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written"))
		}
		env.shards.Sync()
		for _, name := range []string{"h_count", "h_sum"} {
			recs := env.rec.Of(name)
			if len(recs) == 0 || !recs[len(recs)-1].Stale || recs[len(recs)-1].T != ts+3000 {
				t.Fatalf("%s: records %+v, want the last one stale at %d", name, recs, ts+3000)
			}
		}
	})
	t.Run("rw1", func(t *testing.T) {
		env := newEnv(t, 16, true)
		s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "h"}, {Name: "job", Value: "rw1"}}}
		for i := range 3 {
			s.Histograms = append(s.Histograms, prompb.Histogram{Count: &prompb.Histogram_CountFloat{CountFloat: 4 * float64(i)},
				Sum: float64(i), Timestamp: ts + int64(i)*1000})
		}
		w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s, gaugeSeries("g", ts, 1)}}), nil)
		if w.Code != 204 {
			t.Fatalf("got %d %q, want 204", w.Code, w.Body)
		}
		env.shards.Sync()
		got := env.rec.Series()
		want := map[string]int{"__name__\xffh_count\xffjob\xffrw1\xff": 2, "__name__\xffh_sum\xffjob\xffrw1\xff": 2, "__name__\xffg\xffjob\xfftest\xff": 1}
		if len(got) != len(want) {
			t.Fatalf("analysed %v, want %v", got, want)
		}
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("analysed %v, want %v", got, want)
			}
		}
	})
}
