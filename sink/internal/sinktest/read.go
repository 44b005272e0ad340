package sinktest

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/sink/wire"
)

// Response types a remote-read client accepts: Prometheus 2's, and
// Prometheus 3's preference.
var (
	SamplesOnly  = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES}
	StreamedPref = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES}
)

// EncodeRead marshals and snappy-encodes a read request.
func EncodeRead(t testing.TB, req *prompb.ReadRequest) []byte {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// PostRead posts body to h as Prometheus does; header adds to or (with an
// empty value) removes from Prometheus's headers.
func PostRead(h http.Handler, body []byte, header map[string]string) *httptest.ResponseRecorder {
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

// PBMatcher returns a remote-read matcher.
func PBMatcher(t prompb.LabelMatcher_Type, name, value string) *prompb.LabelMatcher {
	return &prompb.LabelMatcher{Type: t, Name: name, Value: value}
}

// PBQuery returns a remote-read query over [mint, maxt].
func PBQuery(mint, maxt int64, ms ...*prompb.LabelMatcher) *prompb.Query {
	return &prompb.Query{StartTimestampMs: mint, EndTimestampMs: maxt, Matchers: ms}
}

// DecodeSamplesResponse checks a SAMPLES response's headers and decodes it.
func DecodeSamplesResponse(t testing.TB, rec *httptest.ResponseRecorder) *prompb.ReadResponse {
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

// ResultOracle turns a QueryResult into an oracle, checking sorted series.
func ResultOracle(t testing.TB, res *prompb.QueryResult) Oracle {
	t.Helper()
	o := Oracle{}
	var lsets [][]prompb.Label
	for _, ts := range res.Timeseries {
		lsets = append(lsets, ts.Labels)
		k := LabelKey(ts.Labels)
		if _, dup := o[k]; dup {
			t.Errorf("series %s twice", k)
		}
		for _, s := range ts.Samples {
			o[k] = append(o[k], Sample{T: s.Timestamp, V: s.Value})
		}
	}
	CheckSorted(t, lsets)
	return o
}

// Frame is one decoded STREAMED_XOR_CHUNKS frame.
type Frame struct {
	Size int // bytes of data (without the length and CRC)
	Resp prompb.ChunkedReadResponse
}

// ReadFrames splits a streamed body into frames, checking each CRC-32C, as
// Prometheus's ChunkedReader does.
func ReadFrames(t testing.TB, body []byte) []Frame {
	t.Helper()
	fr := wire.NewFrameReader(bufio.NewReader(bytes.NewReader(body)), math.MaxUint64, nil)
	var frames []Frame
	for {
		data, err := fr.Next()
		if err == io.EOF {
			return frames
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(frames), err)
		}
		f := Frame{Size: len(data)}
		if err := f.Resp.Unmarshal(data); err != nil {
			t.Fatalf("frame %d: %v", len(frames), err)
		}
		frames = append(frames, f)
	}
}

// StreamedOracles decodes frames into one oracle per query, trimmed to each
// query's range; it checks one series a frame, query order, series sorted
// within a query and a series' frames adjacent.
func StreamedOracles(t testing.TB, frames []Frame, queries []*prompb.Query) []Oracle {
	t.Helper()
	out := make([]Oracle, len(queries))
	for i := range out {
		out[i] = Oracle{}
	}
	lsets := make([][][]prompb.Label, len(queries))
	last := int64(-1)
	for i, f := range frames {
		qi := f.Resp.QueryIndex
		if qi < last || qi >= int64(len(queries)) {
			t.Fatalf("frame %d: query index %d after %d (of %d queries)", i, qi, last, len(queries))
		}
		last = qi
		if len(f.Resp.ChunkedSeries) != 1 {
			t.Fatalf("frame %d: %d infos, want 1", i, len(f.Resp.ChunkedSeries))
		}
		cs := f.Resp.ChunkedSeries[0]
		k := LabelKey(cs.Labels)
		ls := lsets[qi]
		if n := len(ls); n == 0 || LabelKey(ls[n-1]) != k {
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
			ss := DecodeChunk(t, c.Data)
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
		CheckSorted(t, ls)
	}
	return out
}

// CheckSorted fails unless lsets is sorted as Prometheus's labels.Compare
// sorts label sets.
func CheckSorted(t testing.TB, lsets [][]prompb.Label) {
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
			t.Errorf("series not sorted: %s before %s", LabelKey(lsets[i-1]), LabelKey(lsets[i]))
		}
	}
}
