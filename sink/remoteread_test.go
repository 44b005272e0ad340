package sink

import (
	"bufio"
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
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/selfmon"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/series"
)

const readBase = 1_700_000_000_000 // first record time of readFixture

// readFixture is a History of 3 input series × 300 records at 15 s (warm-up
// first, one with per-detector records, one ending stale) and its oracle.
func readFixture(t testing.TB) (*History, histOracle) {
	t.Helper()
	h, _ := newTestHistory(time.Hour)
	infos := []*series.Info{
		mkSeries("__name__", "cpu", "job", "api", "instance", "a"),
		mkSeries("__name__", "cpu", "job", "api", "instance", "b"),
		mkSeries("__name__", "mem", "metric", "clash"), // no job label
	}
	rng := rand.New(rand.NewPCG(3, 4))
	oracle := histOracle{}
	walk := make([]float64, len(infos))
	for i := range 300 {
		ts := int64(readBase + i*testStep)
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
		oracle.add(testNames, recs...)
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

// match keeps the series that match every matcher.
func (o histOracle) match(ms ...*labels.Matcher) histOracle {
	out := histOracle{}
	for k, ss := range o {
		if matchLabels(ms, parseKey(k)) {
			out[k] = ss
		}
	}
	return out
}

func newTestReadHandler(h *History, mod func(c *config.HistoryConfig)) (*ReadHandler, *selfmon.Registry) {
	cfg := config.DefaultHistoryConfig
	if mod != nil {
		mod(&cfg)
	}
	reg := selfmon.NewRegistry()
	return NewReadHandler(h, &cfg, reg, nil), reg
}

func encodeRead(t testing.TB, req *prompb.ReadRequest) []byte {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func postRead(h http.Handler, body []byte, header map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/api/v1/read", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-protobuf")
	r.Header.Set("Content-Encoding", "snappy")
	for k, v := range header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func pbMatcher(t prompb.LabelMatcher_Type, name, value string) *prompb.LabelMatcher {
	return &prompb.LabelMatcher{Type: t, Name: name, Value: value}
}

func pbQuery(mint, maxt int64, ms ...*prompb.LabelMatcher) *prompb.Query {
	return &prompb.Query{StartTimestampMs: mint, EndTimestampMs: maxt, Matchers: ms}
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

// decodeSamplesResponse checks a SAMPLES response's headers and decodes it.
func decodeSamplesResponse(t *testing.T, rec *httptest.ResponseRecorder) *prompb.ReadResponse {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct, ce := rec.Header().Get("Content-Type"), rec.Header().Get("Content-Encoding"); ct != "application/x-protobuf" || ce != "snappy" {
		t.Fatalf("Content-Type %q, Content-Encoding %q: want application/x-protobuf, snappy", ct, ce)
	}
	raw, err := snappy.Decode(nil, rec.Body.Bytes())
	if err != nil {
		t.Fatalf("response is not a snappy block: %v", err)
	}
	var resp prompb.ReadResponse
	if err := resp.Unmarshal(raw); err != nil {
		t.Fatalf("cannot unmarshal ReadResponse: %v", err)
	}
	return &resp
}

// readOne posts a read request of the one query q to h, accepting the
// response types in accepted, and returns what came back (samples or
// streamed chunks) as an oracle.
func readOne(t *testing.T, h http.Handler, q *prompb.Query, accepted []prompb.ReadRequest_ResponseType) histOracle {
	t.Helper()
	rec := postRead(h, encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: accepted}), nil)
	if accepted[0] == prompb.ReadRequest_SAMPLES {
		return resultOracle(t, decodeSamplesResponse(t, rec).Results[0])
	}
	return streamedOracles(t, readFrames(t, rec.Body.Bytes()), []*prompb.Query{q})[0]
}

// resultOracle turns a QueryResult into an oracle, checking sorted series.
func resultOracle(t *testing.T, res *prompb.QueryResult) histOracle {
	t.Helper()
	o := histOracle{}
	var lsets [][]prompb.Label
	for _, ts := range res.Timeseries {
		lsets = append(lsets, ts.Labels)
		k := labelKey(ts.Labels)
		if _, dup := o[k]; dup {
			t.Errorf("series %s twice", k)
		}
		for _, s := range ts.Samples {
			o[k] = append(o[k], sample{s.Timestamp, s.Value})
		}
	}
	checkSorted(t, lsets)
	return o
}

// frame is one decoded STREAMED_XOR_CHUNKS frame.
type frame struct {
	size int // bytes of data (without the length and CRC)
	resp prompb.ChunkedReadResponse
}

// readFrames splits a streamed body into frames, checking each CRC-32C, as
// Prometheus's ChunkedReader does.
func readFrames(t *testing.T, body []byte) []frame {
	t.Helper()
	fr := wire.NewFrameReader(bufio.NewReader(bytes.NewReader(body)), math.MaxUint64, nil)
	var frames []frame
	for {
		data, err := fr.Next()
		if err == io.EOF {
			return frames
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(frames), err)
		}
		f := frame{size: len(data)}
		if err := f.resp.Unmarshal(data); err != nil {
			t.Fatalf("frame %d: %v", len(frames), err)
		}
		frames = append(frames, f)
	}
}

// streamedOracles decodes frames into one oracle per query, trimmed to each
// query's range; it checks one series a frame, query order, series sorted
// within a query and a series' frames adjacent.
func streamedOracles(t *testing.T, frames []frame, queries []*prompb.Query) []histOracle {
	t.Helper()
	out := make([]histOracle, len(queries))
	for i := range out {
		out[i] = histOracle{}
	}
	lsets := make([][][]prompb.Label, len(queries))
	last := int64(-1)
	for i, f := range frames {
		qi := f.resp.QueryIndex
		if qi < last || qi >= int64(len(queries)) {
			t.Fatalf("frame %d: query index %d after %d (of %d queries)", i, qi, last, len(queries))
		}
		last = qi
		if len(f.resp.ChunkedSeries) != 1 {
			t.Fatalf("frame %d: %d infos, want 1", i, len(f.resp.ChunkedSeries))
		}
		cs := f.resp.ChunkedSeries[0]
		k := labelKey(cs.Labels)
		ls := lsets[qi]
		if n := len(ls); n == 0 || labelKey(ls[n-1]) != k {
			if _, seen := out[qi][k]; seen {
				t.Errorf("query %d: frames of %s not adjacent", qi, k)
			}
			lsets[qi] = append(ls, cs.Labels)
		}
		q := queries[qi]
		for _, c := range cs.Chunks {
			if c.Type != prompb.Chunk_XOR {
				t.Fatalf("%s: chunk type %v", k, c.Type)
			}
			if c.MaxTimeMs < q.StartTimestampMs || c.MinTimeMs > q.EndTimestampMs {
				t.Errorf("%s: chunk [%d, %d] outside [%d, %d]", k, c.MinTimeMs, c.MaxTimeMs, q.StartTimestampMs, q.EndTimestampMs)
			}
			ss := decodeChunk(t, c.Data)
			if ss[0].T != c.MinTimeMs || ss[len(ss)-1].T != c.MaxTimeMs {
				t.Errorf("%s: chunk says [%d, %d], holds [%d, %d]", k, c.MinTimeMs, c.MaxTimeMs, ss[0].T, ss[len(ss)-1].T)
			}
			for _, s := range ss {
				if s.T >= q.StartTimestampMs && s.T <= q.EndTimestampMs {
					out[qi][k] = append(out[qi][k], s)
				}
			}
		}
	}
	for _, ls := range lsets {
		checkSorted(t, ls)
	}
	return out
}

var (
	samplesOnly  = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES}
	streamedPref = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES}
)

// TestReadRoundTrip: both response types return what was appended, for
// several queries, ranges inclusive, series sorted, labels as remote write
// writes them.
func TestReadRoundTrip(t *testing.T) {
	hist, oracle := readFixture(t)
	handler, reg := newTestReadHandler(hist, nil)
	queries := []*prompb.Query{
		pbQuery(math.MinInt64, math.MaxInt64, pbMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score")),
		pbQuery(readBase+50*testStep, readBase+200*testStep,
			pbMatcher(prompb.LabelMatcher_RE, "metric", "cpu|mem"), pbMatcher(prompb.LabelMatcher_EQ, "detector", "combined")),
		pbQuery(readBase, readBase+299*testStep, pbMatcher(prompb.LabelMatcher_NEQ, "detector", "combined")),
	}
	want := make([]histOracle, len(queries))
	for i, q := range queries {
		want[i] = oracle.in(q.StartTimestampMs, q.EndTimestampMs).match(toMatchersT(t, q.Matchers)...)
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
		{"samples", samplesOnly, false},
		{"streamed first", streamedPref, true},
		{"unknown type skipped", []prompb.ReadRequest_ResponseType{7, prompb.ReadRequest_STREAMED_XOR_CHUNKS}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := postRead(handler, encodeRead(t, &prompb.ReadRequest{Queries: queries, AcceptedResponseTypes: tc.accepted}), nil)
			var got []histOracle
			if tc.streamed {
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse" {
					t.Fatalf("Content-Type %q", ct)
				}
				got = streamedOracles(t, readFrames(t, rec.Body.Bytes()), queries)
			} else {
				resp := decodeSamplesResponse(t, rec)
				if len(resp.Results) != len(queries) {
					t.Fatalf("%d results for %d queries", len(resp.Results), len(queries))
				}
				for _, res := range resp.Results {
					got = append(got, resultOracle(t, res))
				}
			}
			for i := range queries {
				compareOracle(t, got[i], want[i])
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
	q := pbQuery(readBase, readBase, pbMatcher(prompb.LabelMatcher_EQ, "metric", "mem"), pbMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))
	resp := decodeSamplesResponse(t, postRead(handler, encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}}), nil))
	ts := resp.Results[0].Timeseries
	want := "__name__=anomaly_score,detector=combined,exported_metric=clash,metric=mem"
	if len(ts) != 1 || labelKey(ts[0].Labels) != want {
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
		{"name equal", []*prompb.LabelMatcher{pbMatcher(EQ, "__name__", "anomaly_score")}, 4},
		{"regex anchored", []*prompb.LabelMatcher{pbMatcher(RE, "__name__", "anomaly_sc")}, 0},
		{"regex anchored at the start", []*prompb.LabelMatcher{pbMatcher(RE, "__name__", "score")}, 0},
		{"regex", []*prompb.LabelMatcher{pbMatcher(RE, "__name__", "anomaly_sc.*")}, 4},
		{"regex alternatives", []*prompb.LabelMatcher{pbMatcher(RE, "__name__", "anomaly_(lower|upper)")}, 8},
		{"not equal", []*prompb.LabelMatcher{pbMatcher(NEQ, "detector", "combined")}, 4},
		{"not regex", []*prompb.LabelMatcher{pbMatcher(NRE, "instance", "a")}, 8},
		{"not regex anchored", []*prompb.LabelMatcher{pbMatcher(NRE, "instance", "a|")}, 4},
		{"not regex on metric", []*prompb.LabelMatcher{pbMatcher(NRE, "metric", "c.*")}, 4},
		{"absent label is empty", []*prompb.LabelMatcher{pbMatcher(EQ, "job", "")}, 4},
		{"absent label not empty", []*prompb.LabelMatcher{pbMatcher(RE, "job", ".+")}, 12},
		{"several", []*prompb.LabelMatcher{pbMatcher(EQ, "metric", "cpu"), pbMatcher(EQ, "instance", "a"), pbMatcher(EQ, "detector", "zscore")}, 4},
		{"no matchers", nil, 16},
		{"none", []*prompb.LabelMatcher{pbMatcher(EQ, "__name__", "nope")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(math.MinInt64, math.MaxInt64, tc.ms...)}}
			got := resultOracle(t, decodeSamplesResponse(t, postRead(handler, encodeRead(t, req), nil)).Results[0])
			if len(got) != tc.want {
				t.Errorf("%d infos, want %d: %v", len(got), tc.want, keys(got))
			}
			compareOracle(t, got, oracle.match(toMatchersT(t, tc.ms)...))
		})
	}
}

func keys(o histOracle) []string {
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
	score := pbMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score")
	t5, t6 := int64(readBase+5*testStep), int64(readBase+6*testStep)
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
		for _, accepted := range [][]prompb.ReadRequest_ResponseType{samplesOnly, streamedPref} {
			t.Run(tc.name+"/"+accepted[0].String(), func(t *testing.T) {
				got := readOne(t, handler, pbQuery(tc.mint, tc.maxt, score), accepted)
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
	last := int64(readBase + 299*testStep)
	q := pbQuery(last, last, pbMatcher(prompb.LabelMatcher_EQ, "metric", "mem"))
	for _, accepted := range [][]prompb.ReadRequest_ResponseType{samplesOnly, streamedPref} {
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
	q := pbQuery(math.MinInt64, math.MaxInt64, pbMatcher(prompb.LabelMatcher_RE, "__name__", ".+"))
	req := encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: streamedPref})
	for _, tc := range []struct {
		maxFrame      int
		wantMoreThan1 bool // some series needs several frames
	}{
		{1 << 20, false},
		{1500, true},
		{100, true}, // smaller than any chunk: one chunk a frame
	} {
		handler, _ := newTestReadHandler(hist, func(c *config.HistoryConfig) { c.MaxBytesInFrame = tc.maxFrame })
		rec := postRead(handler, req, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("max %d: status %d: %s", tc.maxFrame, rec.Code, rec.Body)
		}
		frames := readFrames(t, rec.Body.Bytes())
		perSeries := map[string]int{}
		for i, f := range frames {
			cs := f.resp.ChunkedSeries[0]
			perSeries[labelKey(cs.Labels)]++
			if f.size > tc.maxFrame && len(cs.Chunks) > 1 {
				t.Errorf("max %d: frame %d is %d bytes with %d chunks", tc.maxFrame, i, f.size, len(cs.Chunks))
			}
			if tc.maxFrame == 100 && len(cs.Chunks) != 1 {
				t.Errorf("max %d: frame %d has %d chunks, want 1", tc.maxFrame, i, len(cs.Chunks))
			}
			// A frame that could have taken the next chunk must have.
			if i+1 < len(frames) && labelKey(frames[i+1].resp.ChunkedSeries[0].Labels) == labelKey(cs.Labels) {
				next := frames[i+1].resp.ChunkedSeries[0].Chunks[0]
				grown := f.resp
				grown.ChunkedSeries = []*prompb.ChunkedSeries{{Labels: cs.Labels, Chunks: append(cs.Chunks[:len(cs.Chunks):len(cs.Chunks)], next)}}
				if grown.Size() <= tc.maxFrame {
					t.Errorf("max %d: frame %d (%d bytes) stops before a chunk that fits (%d bytes)", tc.maxFrame, i, f.size, grown.Size())
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
		got := streamedOracles(t, frames, []*prompb.Query{q})[0]
		compareOracle(t, got, oracle)
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
	good := encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{
		pbQuery(readBase, readBase+10*testStep, pbMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))}})
	bomb := snappy.Encode(nil, make([]byte, 2<<20)) // 2 MiB of zeros: ~100 KiB compressed
	fakeLen := binary.AppendUvarint(nil, 1<<31)     // a block header claiming 2 GiB
	fakeLen = append(fakeLen, 0, 0, 0, 0)
	framed := append([]byte("\xff\x06\x00\x00sNaPpY"), good...)
	random := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	req := func(r *prompb.ReadRequest) []byte { return encodeRead(t, r) }
	all := pbMatcher(prompb.LabelMatcher_RE, "__name__", ".+")
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
		{name: "unknown response type", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(0, 1, all)},
			AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{5}}), code: 400, msg: "response types"},
		{name: "invalid regex", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(0, 1, pbMatcher(prompb.LabelMatcher_RE, "x", "("))}}),
			code: 400, msg: "query 0"},
		{name: "invalid regex in a later query, streamed", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(0, 1, all),
			pbQuery(0, 1, pbMatcher(prompb.LabelMatcher_NRE, "x", "[z-a]"))}, AcceptedResponseTypes: streamedPref}), code: 400, msg: "query 1"},
		{name: "unknown matcher type", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(0, 1, pbMatcher(9, "x", "y"))}}),
			code: 400, msg: "matcher type"},
		{name: "too many samples", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(math.MinInt64, math.MaxInt64, all)}}),
			code: 400, msg: "history.max_samples_per_query"},
		{name: "many samples streamed", body: req(&prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(math.MinInt64, math.MaxInt64, all)},
			AcceptedResponseTypes: streamedPref}), code: 200}, // frames bound the memory, as in Prometheus
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
			if rec := postRead(handler, good, nil); rec.Code != 200 {
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
		good := encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{
			pbQuery(readBase, readBase, pbMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))}})
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
	body := encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{pbQuery(math.MinInt64, math.MaxInt64)},
		AcceptedResponseTypes: streamedPref})
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
		{Queries: []*prompb.Query{pbQuery(readBase, readBase+100*testStep, pbMatcher(prompb.LabelMatcher_EQ, "__name__", "anomaly_score"))}},
		{Queries: []*prompb.Query{pbQuery(math.MinInt64, math.MaxInt64, pbMatcher(prompb.LabelMatcher_RE, "metric", "c.*"))},
			AcceptedResponseTypes: streamedPref},
		{Queries: []*prompb.Query{pbQuery(1, 0), pbQuery(0, 1, pbMatcher(prompb.LabelMatcher_RE, "x", "("))}},
		{AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{3}},
	} {
		b := encodeRead(f, r)
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
		rec := postRead(handler, body, hd)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			return
		}
		if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/x-streamed-protobuf") {
			readFrames(t, rec.Body.Bytes())
		} else {
			decodeSamplesResponse(t, rec)
		}
	})
}
