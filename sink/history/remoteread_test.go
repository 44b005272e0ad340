package history

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/series"
)

const readBase = 1_700_000_000_000 // first record time of readFixture

// readFixture is a History of 3 input series × 300 records at 15 s (warm-up
// first, one with per-detector records, one ending stale) and its oracle.
func readFixture(t testing.TB) (*History, sinktest.Oracle) {
	t.Helper()
	h, _ := newTestHistory(time.Hour)
	infos := []*series.Info{
		sinktest.Info("__name__", "cpu", "job", "api", "instance", "a"),
		sinktest.Info("__name__", "cpu", "job", "api", "instance", "b"),
		sinktest.Info("__name__", "mem", "metric", "clash"), // no job label
	}
	rng := rand.New(rand.NewPCG(3, 4))
	oracle := sinktest.Oracle{}
	walk := make([]float64, len(infos))
	for i := range 300 {
		ts := int64(readBase + i*sinktest.Step)
		var recs []series.Record
		for j, s := range infos {
			r := walkRecord(rng, s, ts, detectors.KindCombined, &walk[j])
			r.Warmup = i < 10
			if j == 2 && i == 299 {
				r = series.Record{Series: s, T: ts, Detector: detectors.KindCombined, Stale: true}
			}
			recs = append(recs, r)
		}
		recs = append(recs, walkRecord(rng, infos[0], ts, detectors.KindZScore, &walk[0]))
		h.Append(recs)
		oracle.Add(sinktest.Names, recs...)
	}
	return h, oracle
}

// parseKey turns a labelKey back into labels (fixture values hold no , or =).
func parseKey(k string) []prompb.Label {
	var ls []prompb.Label
	for _, kv := range strings.Split(k, ",") {
		n, v, _ := strings.Cut(kv, "=")
		ls = append(ls, prompb.Label{Name: n, Value: v})
	}
	return ls
}

// matchOracle keeps the series of o that match every matcher.
func matchOracle(o sinktest.Oracle, ms ...*labels.Matcher) sinktest.Oracle {
	out := sinktest.Oracle{}
	for k, ss := range o {
		if matchLabels(ms, parseKey(k)) {
			out[k] = ss
		}
	}
	return out
}

func newTestReadHandler(h *History, mod func(c *config.HistoryConfig)) (*ReadHandler, *prometheus.Registry) {
	cfg := config.DefaultHistoryConfig
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	return NewReadHandler(h, &cfg, reg, nil), reg
}

// toMatchersT compiles matchers for the oracle.
func toMatchersT(t *testing.T, pbs []*prompb.LabelMatcher) []*labels.Matcher {
	t.Helper()
	ms, err := toMatchers(pbs)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// readOne posts a read request of the one query q to h, accepting the
// response types in accepted, and returns what came back (samples or
// streamed chunks) as an oracle.
func readOne(t *testing.T, h http.Handler, q *prompb.Query, accepted []prompb.ReadRequest_ResponseType) sinktest.Oracle {
	t.Helper()
	rec := sinktest.PostRead(h, sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: accepted}), nil)
	if accepted[0] == prompb.ReadRequest_SAMPLES {
		return sinktest.ResultOracle(t, sinktest.DecodeSamplesResponse(t, rec).Results[0])
	}
	return sinktest.StreamedOracles(t, sinktest.ReadFrames(t, rec.Body.Bytes()), []*prompb.Query{q})[0]
}

// TestReadRoundTrip: both response types return what was appended, for
// several queries, ranges inclusive, series sorted, labels as remote write
// writes them.
func TestReadRoundTrip(t *testing.T) {
	hist, oracle := readFixture(t)
	handler, reg := newTestReadHandler(hist, nil)
	queries := []*prompb.Query{
		sinktest.PBQuery(math.MinInt64, math.MaxInt64, sinktest.PBMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score")),
		sinktest.PBQuery(readBase+50*sinktest.Step, readBase+200*sinktest.Step,
			sinktest.PBMatcher(prompb.LabelMatcher_RE, "metric", "cpu|mem"), sinktest.PBMatcher(prompb.LabelMatcher_EQ, "detector", "combined")),
		sinktest.PBQuery(readBase, readBase+299*sinktest.Step, sinktest.PBMatcher(prompb.LabelMatcher_NEQ, "detector", "combined")),
	}
	want := make([]sinktest.Oracle, len(queries))
	for i, q := range queries {
		want[i] = matchOracle(oracle.In(q.StartTimestampMs, q.EndTimestampMs), toMatchersT(t, q.Matchers)...)
		if len(want[i]) == 0 {
			t.Fatalf("query %d selects nothing; fix the test", i)
		}
	}
	for _, tc := range []struct {
		name     string
		accepted []prompb.ReadRequest_ResponseType
		streamed bool
	}{
		{"samples by default", nil, false},
		{"samples", sinktest.SamplesOnly, false},
		{"streamed first", sinktest.StreamedPref, true},
		{"unknown type skipped", []prompb.ReadRequest_ResponseType{7, prompb.ReadRequest_STREAMED_XOR_CHUNKS}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := sinktest.PostRead(handler, sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: queries, AcceptedResponseTypes: tc.accepted}), nil)
			var got []sinktest.Oracle
			if tc.streamed {
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse" {
					t.Fatalf("Content-Type %q", ct)
				}
				got = sinktest.StreamedOracles(t, sinktest.ReadFrames(t, rec.Body.Bytes()), queries)
			} else {
				resp := sinktest.DecodeSamplesResponse(t, rec)
				if len(resp.Results) != len(queries) {
					t.Fatalf("%d results for %d queries", len(resp.Results), len(queries))
				}
				for _, res := range resp.Results {
					got = append(got, sinktest.ResultOracle(t, res))
				}
			}
			for i := range queries {
				sinktest.CompareOracles(t, got[i], want[i])
			}
		})
	}
	if v := metricValue(t, reg, `anomalyd_read_requests_total{code="200"}`); v != 4 {
		t.Errorf(`anomalyd_read_requests_total{code="200"} = %g, want 4`, v)
	}
	if v := metricValue(t, reg, "anomalyd_read_queries_total"); v != 12 {
		t.Errorf("anomalyd_read_queries_total = %g, want 12", v)
	}
}

// TestReadLabels: labels are exactly series.AppendOutputLabels' (the input's
// metric label renamed, metric and detector added).
func TestReadLabels(t *testing.T) {
	hist, _ := readFixture(t)
	handler, _ := newTestReadHandler(hist, nil)
	q := sinktest.PBQuery(readBase, readBase, sinktest.PBMatcher(prompb.LabelMatcher_EQ, "metric", "mem"), sinktest.PBMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))
	resp := sinktest.DecodeSamplesResponse(t, sinktest.PostRead(handler, sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}}), nil))
	ts := resp.Results[0].Timeseries
	want := "__name__=anomaly_score,detector=combined,exported_metric=clash,metric=mem"
	if len(ts) != 1 || sinktest.LabelKey(ts[0].Labels) != want {
		t.Fatalf("got %v, want one series %s", resp.Results[0], want)
	}
}

// TestReadMatchers: all four matcher types, regexes anchored, an absent
// label equal to "".
func TestReadMatchers(t *testing.T) {
	hist, oracle := readFixture(t)
	handler, _ := newTestReadHandler(hist, nil)
	const (
		EQ  = prompb.LabelMatcher_EQ
		NEQ = prompb.LabelMatcher_NEQ
		RE  = prompb.LabelMatcher_RE
		NRE = prompb.LabelMatcher_NRE
	)
	for _, tc := range []struct {
		name string
		ms   []*prompb.LabelMatcher
		want int // output series
	}{
		{"name equal", []*prompb.LabelMatcher{sinktest.PBMatcher(EQ, "__name__", "anomaly_score")}, 4},
		{"regex anchored", []*prompb.LabelMatcher{sinktest.PBMatcher(RE, "__name__", "anomaly_sc")}, 0},
		{"regex anchored at the start", []*prompb.LabelMatcher{sinktest.PBMatcher(RE, "__name__", "score")}, 0},
		{"regex", []*prompb.LabelMatcher{sinktest.PBMatcher(RE, "__name__", "anomaly_sc.*")}, 4},
		{"regex alternatives", []*prompb.LabelMatcher{sinktest.PBMatcher(RE, "__name__", "anomaly_(lower|upper)")}, 8},
		{"not equal", []*prompb.LabelMatcher{sinktest.PBMatcher(NEQ, "detector", "combined")}, 4},
		{"not regex", []*prompb.LabelMatcher{sinktest.PBMatcher(NRE, "instance", "a")}, 8},
		{"not regex anchored", []*prompb.LabelMatcher{sinktest.PBMatcher(NRE, "instance", "a|")}, 4},
		{"not regex on metric", []*prompb.LabelMatcher{sinktest.PBMatcher(NRE, "metric", "c.*")}, 4},
		{"absent label is empty", []*prompb.LabelMatcher{sinktest.PBMatcher(EQ, "job", "")}, 4},
		{"absent label not empty", []*prompb.LabelMatcher{sinktest.PBMatcher(RE, "job", ".+")}, 12},
		{"several", []*prompb.LabelMatcher{sinktest.PBMatcher(EQ, "metric", "cpu"), sinktest.PBMatcher(EQ, "instance", "a"), sinktest.PBMatcher(EQ, "detector", "zscore")}, 4},
		{"no matchers", nil, 16},
		{"none", []*prompb.LabelMatcher{sinktest.PBMatcher(EQ, "__name__", "nope")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(math.MinInt64, math.MaxInt64, tc.ms...)}}
			got := sinktest.ResultOracle(t, sinktest.DecodeSamplesResponse(t, sinktest.PostRead(handler, sinktest.EncodeRead(t, req), nil)).Results[0])
			if len(got) != tc.want {
				t.Errorf("%d infos, want %d: %v", len(got), tc.want, keys(got))
			}
			sinktest.CompareOracles(t, got, matchOracle(oracle, toMatchersT(t, tc.ms)...))
		})
	}
}

func keys(o sinktest.Oracle) []string {
	var ks []string
	for k := range o {
		ks = append(ks, k)
	}
	return ks
}

// TestReadRange: [start, end] is inclusive at both ends, for both response
// types; end < start selects nothing.
func TestReadRange(t *testing.T) {
	hist, _ := readFixture(t)
	handler, _ := newTestReadHandler(hist, nil)
	score := sinktest.PBMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score")
	t5, t6 := int64(readBase+5*sinktest.Step), int64(readBase+6*sinktest.Step)
	for _, tc := range []struct {
		name       string
		mint, maxt int64
		want       []int64 // timestamps in each series
	}{
		{"one instant", t5, t5, []int64{t5}},
		{"both ends", t5, t6, []int64{t5, t6}},
		{"between samples", t5 + 1, t6 - 1, nil},
		{"end before start", t6, t5, nil},
		{"huge", math.MinInt64, math.MaxInt64, nil},
	} {
		for _, accepted := range [][]prompb.ReadRequest_ResponseType{sinktest.SamplesOnly, sinktest.StreamedPref} {
			t.Run(tc.name+"/"+accepted[0].String(), func(t *testing.T) {
				got := readOne(t, handler, sinktest.PBQuery(tc.mint, tc.maxt, score), accepted)
				if tc.name == "huge" {
					if len(got) != 4 {
						t.Errorf("%d infos, want 4", len(got))
					}
					return
				}
				if tc.want == nil && len(got) != 0 {
					t.Errorf("got %v, want nothing", got)
				}
				for k, ss := range got {
					var ts []int64
					for _, s := range ss {
						ts = append(ts, s.T)
					}
					if len(ts) != len(tc.want) || (len(ts) > 0 && (ts[0] != tc.want[0] || ts[len(ts)-1] != tc.want[len(tc.want)-1])) {
						t.Errorf("%s: timestamps %v, want %v", k, ts, tc.want)
					}
				}
				if tc.want != nil && len(got) != 4 {
					t.Errorf("%d infos, want 4", len(got))
				}
			})
		}
	}
}

// TestReadStaleMarkers: stale markers come back bit for bit in both
// response types.
func TestReadStaleMarkers(t *testing.T) {
	hist, _ := readFixture(t)
	handler, _ := newTestReadHandler(hist, nil)
	last := int64(readBase + 299*sinktest.Step)
	q := sinktest.PBQuery(last, last, sinktest.PBMatcher(prompb.LabelMatcher_EQ, "metric", "mem"))
	for _, accepted := range [][]prompb.ReadRequest_ResponseType{sinktest.SamplesOnly, sinktest.StreamedPref} {
		got := readOne(t, handler, q, accepted)
		if len(got) != 4 {
			t.Errorf("%v: %d infos, want 4", accepted[0], len(got))
		}
		for k, ss := range got {
			if len(ss) != 1 || math.Float64bits(ss[0].V) != math.Float64bits(staleNaN) {
				t.Errorf("%v: %s = %v, want one stale marker (%#x)", accepted[0], k, ss, math.Float64bits(staleNaN))
			}
		}
	}
}

// TestReadFrameSplitting: with a small max_bytes_in_frame a series spans
// several frames, each within the limit unless it holds a single chunk;
// together they hold every chunk in order.
func TestReadFrameSplitting(t *testing.T) {
	hist, oracle := readFixture(t)
	q := sinktest.PBQuery(math.MinInt64, math.MaxInt64, sinktest.PBMatcher(prompb.LabelMatcher_RE, "__name__", ".+"))
	req := sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: sinktest.StreamedPref})
	for _, tc := range []struct {
		maxFrame      int
		wantMoreThan1 bool // some series needs several frames
	}{
		{1 << 20, false},
		{1500, true},
		{100, true}, // smaller than any chunk: one chunk a frame
	} {
		handler, _ := newTestReadHandler(hist, func(c *config.HistoryConfig) { c.MaxBytesInFrame = tc.maxFrame })
		rec := sinktest.PostRead(handler, req, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("max %d: status %d: %s", tc.maxFrame, rec.Code, rec.Body)
		}
		frames := sinktest.ReadFrames(t, rec.Body.Bytes())
		perSeries := map[string]int{}
		for i, f := range frames {
			cs := f.Resp.ChunkedSeries[0]
			perSeries[sinktest.LabelKey(cs.Labels)]++
			if f.Size > tc.maxFrame && len(cs.Chunks) > 1 {
				t.Errorf("max %d: frame %d is %d bytes with %d chunks", tc.maxFrame, i, f.Size, len(cs.Chunks))
			}
			if tc.maxFrame == 100 && len(cs.Chunks) != 1 {
				t.Errorf("max %d: frame %d has %d chunks, want 1", tc.maxFrame, i, len(cs.Chunks))
			}
			// A frame that could have taken the next chunk must have.
			if i+1 < len(frames) && sinktest.LabelKey(frames[i+1].Resp.ChunkedSeries[0].Labels) == sinktest.LabelKey(cs.Labels) {
				next := frames[i+1].Resp.ChunkedSeries[0].Chunks[0]
				grown := f.Resp
				grown.ChunkedSeries = []*prompb.ChunkedSeries{{Labels: cs.Labels, Chunks: append(cs.Chunks[:len(cs.Chunks):len(cs.Chunks)], next)}}
				if grown.Size() <= tc.maxFrame {
					t.Errorf("max %d: frame %d (%d bytes) stops before a chunk that fits (%d bytes)", tc.maxFrame, i, f.Size, grown.Size())
				}
			}
		}
		split := false
		for _, n := range perSeries {
			split = split || n > 1
		}
		if split != tc.wantMoreThan1 {
			t.Errorf("max %d: some series split over frames: %v, want %v (%v)", tc.maxFrame, split, tc.wantMoreThan1, perSeries)
		}
		got := sinktest.StreamedOracles(t, frames, []*prompb.Query{q})[0]
		sinktest.CompareOracles(t, got, oracle)
	}
}

// TestReadBadRequests: every malformed or unsupported request gets its 4xx
// before any work, and the handler serves the next good one.
func TestReadBadRequests(t *testing.T) {
	hist, _ := readFixture(t)
	handler, reg := newTestReadHandler(hist, func(c *config.HistoryConfig) {
		c.MaxDecodedBytes = 1 << 20
		c.MaxSamplesPerQuery = 1000
	})
	good := sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{
		sinktest.PBQuery(readBase, readBase+10*sinktest.Step, sinktest.PBMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))}})
	bomb := snappy.Encode(nil, make([]byte, 2<<20)) // 2 MiB of zeros: ~100 KiB compressed
	fakeLen := binary.AppendUvarint(nil, 1<<31)     // a block header claiming 2 GiB
	fakeLen = append(fakeLen, 0, 0, 0, 0)
	framed := append([]byte("\xff\x06\x00\x00sNaPpY"), good...)
	random := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	req := func(r *prompb.ReadRequest) []byte { return sinktest.EncodeRead(t, r) }
	all := sinktest.PBMatcher(prompb.LabelMatcher_RE, "__name__", ".+")
	for _, tc := range []struct {
		name    string
		method  string
		body    []byte
		header  map[string]string
		unknown bool // ContentLength -1: only MaxBytesReader can stop it
		code    int
		msg     string
	}{
		{name: "GET", method: http.MethodGet, code: 405, msg: "use POST"},
		{name: "garbage", body: []byte("hello, world"), code: 400, msg: "snappy"},
		{name: "empty body", body: nil, code: 400, msg: "snappy"},
		{name: "protobuf garbage", body: snappy.Encode(nil, []byte{0xff, 0xff, 0xff}), code: 400, msg: "unmarshal"},
		{name: "snappy framed", body: framed, code: 400, msg: "snappy"},
		{name: "snappy bomb", body: bomb, code: 400, msg: "history.max_decoded_bytes"},
		{name: "snappy length lie", body: fakeLen, code: 400, msg: "history.max_decoded_bytes"},
		{name: "body too large", body: random, code: 413, msg: "exceeds limit"},
		{name: "body too large, no length", body: random, unknown: true, code: 413, msg: "exceeds limit"},
		{name: "gzip", body: good, header: map[string]string{"Content-Encoding": "gzip"}, code: 415, msg: "Content-Encoding"},
		{name: "zstd", body: good, header: map[string]string{"Content-Encoding": "zstd"}, code: 415, msg: "Content-Encoding"},
		{name: "json", body: good, header: map[string]string{"Content-Type": "application/json"}, code: 415, msg: "Content-Type"},
		{name: "bad media type", body: good, header: map[string]string{"Content-Type": "application/x-protobuf; proto"}, code: 415, msg: "Content-Type"},
		{name: "other proto", body: good, header: map[string]string{"Content-Type": "application/x-protobuf;proto=prometheus.WriteRequest"}, code: 415, msg: "proto"},
		{name: "no headers", body: good, header: map[string]string{"Content-Type": "", "Content-Encoding": ""}, code: 200},
		{name: "headers with case and spaces", body: good, header: map[string]string{"Content-Type": "Application/X-Protobuf ; proto=prometheus.ReadRequest", "Content-Encoding": "Snappy"}, code: 200},
		{name: "unknown response type", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(0, 1, all)},
			AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{5}}), code: 400, msg: "response types"},
		{name: "invalid regex", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(0, 1, sinktest.PBMatcher(prompb.LabelMatcher_RE, "x", "("))}}),
			code: 400, msg: "query 0"},
		{name: "invalid regex in a later query, streamed", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(0, 1, all),
			sinktest.PBQuery(0, 1, sinktest.PBMatcher(prompb.LabelMatcher_NRE, "x", "[z-a]"))}, AcceptedResponseTypes: sinktest.StreamedPref}), code: 400, msg: "query 1"},
		{name: "unknown matcher type", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(0, 1, sinktest.PBMatcher(9, "x", "y"))}}),
			code: 400, msg: "matcher type"},
		{name: "too many samples", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(math.MinInt64, math.MaxInt64, all)}}),
			code: 400, msg: "history.max_samples_per_query"},
		{name: "many samples streamed", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(math.MinInt64, math.MaxInt64, all)},
			AcceptedResponseTypes: sinktest.StreamedPref}), code: 200}, // frames bound the memory, as in Prometheus
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, "/api/v1/read", bytes.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/x-protobuf")
			r.Header.Set("Content-Encoding", "snappy")
			for k, v := range tc.header {
				if v == "" {
					r.Header.Del(k)
				} else {
					r.Header.Set(k, v)
				}
			}
			if tc.unknown {
				r.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, r)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.msg) {
				t.Errorf("status %d %q, want %d containing %q", rec.Code, rec.Body, tc.code, tc.msg)
			}
			if tc.code == 405 && rec.Header().Get("Allow") != "POST" {
				t.Errorf("Allow: %q, want POST", rec.Header().Get("Allow"))
			}
			// The handler is still good.
			if rec := sinktest.PostRead(handler, good, nil); rec.Code != 200 {
				t.Errorf("next good request: status %d: %s", rec.Code, rec.Body)
			}
		})
	}
	if v := metricValue(t, reg, `anomalyd_read_requests_total{code="415"}`); v != 5 {
		t.Errorf(`anomalyd_read_requests_total{code="415"} = %g, want 5`, v)
	}
}

// TestReadConcurrencyLimit: beyond max_concurrent_reads requests wait for a
// slot, and give up with 503 when their client does.
func TestReadConcurrencyLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hist, _ := readFixture(t)
		handler, _ := newTestReadHandler(hist, func(c *config.HistoryConfig) { c.MaxConcurrentReads = 1 })
		good := sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{
			sinktest.PBQuery(readBase, readBase, sinktest.PBMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))}})
		serve := func(ctx context.Context, body io.Reader) (<-chan int, *httptest.ResponseRecorder) {
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/read", body)
			rec := httptest.NewRecorder()
			done := make(chan int, 1)
			go func() {
				handler.ServeHTTP(rec, r)
				done <- rec.Code
			}()
			return done, rec
		}
		finished := func(c <-chan int) (int, bool) {
			select {
			case code := <-c:
				return code, true
			default:
				return 0, false
			}
		}

		// The first request holds the only slot while its body trickles in.
		release := make(chan struct{})
		first, _ := serve(context.Background(), &gatedReader{gate: release, r: bytes.NewReader(good)})
		synctest.Wait()
		if _, ok := finished(first); ok {
			t.Fatal("first request finished with its body still blocked")
		}

		// The second waits, and gives up when its client does.
		ctx, cancel := context.WithCancel(context.Background())
		second, rec2 := serve(ctx, bytes.NewReader(good))
		synctest.Wait()
		if code, ok := finished(second); ok {
			t.Fatalf("second request finished with %d while the only slot is taken", code)
		}
		cancel()
		synctest.Wait()
		if code, ok := finished(second); !ok || code != http.StatusServiceUnavailable {
			t.Fatalf("cancelled waiting request: finished %v, status %d (%s), want 503", ok, code, rec2.Body)
		}

		// The third waits, then runs when the first is done.
		third, _ := serve(context.Background(), bytes.NewReader(good))
		synctest.Wait()
		if _, ok := finished(third); ok {
			t.Fatal("third request finished while the only slot is taken")
		}
		close(release)
		synctest.Wait()
		for i, c := range []<-chan int{first, third} {
			if code, ok := finished(c); !ok || code != http.StatusOK {
				t.Errorf("request %d: finished %v, status %d, want 200", []int{1, 3}[i], ok, code)
			}
		}
	})
}

// gatedReader blocks its first Read until gate is closed.
type gatedReader struct {
	gate <-chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

// failingWriter is a ResponseWriter whose client has gone away.
type failingWriter struct{ h http.Header }

func (w *failingWriter) Header() http.Header { return w.h }
func (w *failingWriter) WriteHeader(int)     {}
func (w *failingWriter) Write(p []byte) (int, error) {
	return 0, errors.New("connection reset by peer")
}

// TestReadStreamAbort: a stream that cannot be written ends with
// http.ErrAbortHandler (the server drops the connection), never a
// truncated 200.
func TestReadStreamAbort(t *testing.T) {
	hist, _ := readFixture(t)
	handler, reg := newTestReadHandler(hist, func(c *config.HistoryConfig) { c.MaxBytesInFrame = 200 })
	body := sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{sinktest.PBQuery(math.MinInt64, math.MaxInt64)},
		AcceptedResponseTypes: sinktest.StreamedPref})
	r := httptest.NewRequest(http.MethodPost, "/api/v1/read", bytes.NewReader(body))
	got := func() (v any) {
		defer func() { v = recover() }()
		handler.ServeHTTP(&failingWriter{h: http.Header{}}, r)
		return nil
	}()
	if got != http.ErrAbortHandler {
		t.Fatalf("recovered %v, want http.ErrAbortHandler", got)
	}
	if v := metricValue(t, reg, `anomalyd_read_requests_total{code="aborted"}`); v != 1 {
		t.Errorf(`anomalyd_read_requests_total{code="aborted"} = %g, want 1`, v)
	}
}

// FuzzReadHandler: any body, with or without the headers, gets a 2xx or a
// 4xx, never a panic; a 200 decodes.
func FuzzReadHandler(f *testing.F) {
	hist, _ := readFixture(f)
	handler, _ := newTestReadHandler(hist, func(c *config.HistoryConfig) {
		c.MaxDecodedBytes = 64 << 10
		c.MaxSamplesPerQuery = 5000
		c.MaxBytesInFrame = 512
	})
	for _, r := range []*prompb.ReadRequest{
		{Queries: []*prompb.Query{sinktest.PBQuery(readBase, readBase+100*sinktest.Step, sinktest.PBMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))}},
		{Queries: []*prompb.Query{sinktest.PBQuery(math.MinInt64, math.MaxInt64, sinktest.PBMatcher(prompb.LabelMatcher_RE, "metric", "c.*"))},
			AcceptedResponseTypes: sinktest.StreamedPref},
		{Queries: []*prompb.Query{sinktest.PBQuery(1, 0), sinktest.PBQuery(0, 1, sinktest.PBMatcher(prompb.LabelMatcher_RE, "x", "("))}},
		{AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{3}},
	} {
		b := sinktest.EncodeRead(f, r)
		f.Add(b, false)
		f.Add(b[:len(b)/2], true)
		raw, _ := r.Marshal()
		f.Add(raw, false)
	}
	f.Add([]byte{}, false)
	f.Add(binary.AppendUvarint(nil, 1<<40), false)
	f.Add([]byte("\xff\x06\x00\x00sNaPpY"), false)
	f.Fuzz(func(t *testing.T, body []byte, noHeaders bool) {
		var hd map[string]string
		if noHeaders {
			hd = map[string]string{"Content-Type": "", "Content-Encoding": ""}
		}
		rec := sinktest.PostRead(handler, body, hd)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/x-streamed-protobuf") {
			sinktest.ReadFrames(t, rec.Body.Bytes())
		} else {
			sinktest.DecodeSamplesResponse(t, rec)
		}
	})
}
