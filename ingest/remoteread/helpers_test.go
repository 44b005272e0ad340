package remoteread

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/series"
)

// lbls builds a canonical label set from sorted name/value pairs.
func lbls(pairs ...string) string {
	var b []byte
	for _, p := range pairs {
		b = append(b, p...)
		b = append(b, series.LabelSep)
	}
	return string(b)
}

func toProm(key string) []prompb.Label {
	var out []prompb.Label
	for n, v, rest := series.NextLabel(key); n != ""; n, v, rest = series.NextLabel(rest) {
		out = append(out, prompb.Label{Name: n, Value: v})
	}
	return out
}

// fakeProm answers remote read like Prometheus does, from series held in
// memory: equality matchers select every series that has the labels (also
// those with more), streamed answers carry whole chunks of up to
// chunkSamples samples (so samples outside the range too), one frame per
// series and query.
type fakeProm struct {
	mu       sync.Mutex
	series   map[string][]window.Sample // canonical labels → sorted samples
	samples  bool                       // answer SAMPLES even when streaming is accepted
	header   http.Header                // of the last request
	req      *prompb.ReadRequest        // the last request
	requests atomic.Int64
	// fault, if set, may answer request n itself (returns true).
	fault func(n int64, w http.ResponseWriter) bool
	// corrupt, if set, may change a streamed frame before it is written.
	corrupt func(frame []byte) []byte
}

const chunkSamples = 120

func newFakeProm(t *testing.T) (*fakeProm, *httptest.Server) {
	f := &fakeProm{series: map[string][]window.Sample{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeProm) add(key string, s []window.Sample) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.series[key] = s
}

func (f *fakeProm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.requests.Add(1)
	comp, _ := io.ReadAll(r.Body)
	raw, err := snappy.Decode(nil, comp)
	if err != nil {
		http.Error(w, "bad snappy: "+err.Error(), http.StatusBadRequest)
		return
	}
	var rr prompb.ReadRequest
	if err := rr.Unmarshal(raw); err != nil {
		http.Error(w, "bad proto: "+err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.header, f.req = r.Header.Clone(), &rr
	fault, corrupt, samplesOnly := f.fault, f.corrupt, f.samples
	keys := make([]string, 0, len(f.series))
	for k := range f.series {
		keys = append(keys, k)
	}
	all := f.series
	f.mu.Unlock()
	if fault != nil && fault(n, w) {
		return
	}
	slices.Sort(keys)
	matches := func(q *prompb.Query, key string) bool {
		for _, m := range q.Matchers {
			found := false
			for n, v, rest := series.NextLabel(key); n != ""; n, v, rest = series.NextLabel(rest) {
				found = found || (n == m.Name && v == m.Value)
			}
			if m.Type != prompb.LabelMatcher_EQ || !found {
				return false
			}
		}
		return true
	}
	streamed := !samplesOnly && slices.Contains(rr.AcceptedResponseTypes, prompb.ReadRequest_STREAMED_XOR_CHUNKS)
	if !streamed {
		var resp prompb.ReadResponse
		for _, q := range rr.Queries {
			qr := &prompb.QueryResult{}
			for _, k := range keys {
				if !matches(q, k) {
					continue
				}
				ts := &prompb.TimeSeries{Labels: toProm(k)}
				for _, s := range all[k] {
					if s.T >= q.StartTimestampMs && s.T <= q.EndTimestampMs {
						ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: s.T, Value: s.V})
					}
				}
				qr.Timeseries = append(qr.Timeseries, ts)
			}
			resp.Results = append(resp.Results, qr)
		}
		b, _ := resp.Marshal()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Header().Set("Content-Encoding", "snappy")
		w.Write(snappy.Encode(nil, b))
		return
	}
	w.Header().Set("Content-Type", "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
	for qi, q := range rr.Queries {
		for _, k := range keys {
			if !matches(q, k) {
				continue
			}
			var chunks []prompb.Chunk
			for _, c := range xorChunks(all[k], chunkSamples) {
				if c.MaxTimeMs >= q.StartTimestampMs && c.MinTimeMs <= q.EndTimestampMs {
					chunks = append(chunks, c)
				}
			}
			if len(chunks) == 0 {
				continue
			}
			resp := prompb.ChunkedReadResponse{QueryIndex: int64(qi),
				ChunkedSeries: []*prompb.ChunkedSeries{{Labels: toProm(k), Chunks: chunks}}}
			b, _ := resp.Marshal()
			frame := wire.AppendFrame(nil, b)
			if corrupt != nil {
				frame = corrupt(frame)
			}
			w.Write(frame)
		}
	}
}

// xorChunks encodes s in XOR chunks of up to n samples.
func xorChunks(s []window.Sample, n int) []prompb.Chunk {
	var out []prompb.Chunk
	for len(s) > 0 {
		part := s[:min(n, len(s))]
		s = s[len(part):]
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			panic(err)
		}
		for _, x := range part {
			app.Append(0, x.T, x.V)
		}
		out = append(out, prompb.Chunk{MinTimeMs: part[0].T, MaxTimeMs: part[len(part)-1].T,
			Type: prompb.Chunk_XOR, Data: slices.Clone(c.Bytes())})
	}
	return out
}

func steps(t0 int64, n int, step int64, f func(i int) float64) []window.Sample {
	out := make([]window.Sample, n)
	for i := range out {
		out[i] = window.Sample{T: t0 + int64(i)*step, V: f(i)}
	}
	return out
}

func testClient(t *testing.T, url string) *Client {
	t.Helper()
	cfg := config.DefaultWarmupRemoteRead
	cfg.URL = url + "/api/v1/read"
	cfg.Headers = map[string]string{"X-Scope-OrgID": "tenant-1"}
	c, err := NewClient(&cfg, "anomalyd/test")
	if err != nil {
		t.Fatal(err)
	}
	c.timeout = 10 * time.Second
	return c
}
