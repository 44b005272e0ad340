package sinktest

import (
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/sink/wire"
)

// Receiver is a remote-write store that really decodes what it gets and
// keeps it. Serve it with httptest.NewServer, or call ServeHTTP directly.
// Its fields are guarded by Mu.
type Receiver struct {
	t  *testing.T
	Mu sync.Mutex
	// Respond picks the answer to request n (0-based) before the body is
	// decoded; nil or a 2xx code: decode and keep the samples.
	Respond func(n int, r *http.Request) (code int, hdr map[string]string, body string)
	// KnowsRW1Only: decode every body as RW1 and never send the Written
	// headers, as a store that predates RW2 does.
	KnowsRW1Only bool

	N       int      // requests
	Series  Oracle   // the samples of every request taken
	Protos  []string // per request: "rw1" or "rw2"
	Headers []http.Header
	Times   []time.Time
	TSCount []int // TimeSeries per accepted request
	Meta    []writev2.Metadata_MetricType
	// MetaOf is the RW2 metadata type of each series (by LabelKey), as
	// its last request said.
	MetaOf map[string]writev2.Metadata_MetricType
}

// NewReceiver returns an empty Receiver that reports to t.
func NewReceiver(t *testing.T) *Receiver {
	return &Receiver{t: t, Series: Oracle{}, MetaOf: map[string]writev2.Metadata_MetricType{}}
}

func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := rc.t
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		t.Errorf("bad Content-Type %q: %v", r.Header.Get("Content-Type"), err)
	}
	proto := "rw1"
	if params["proto"] == wire.MessageWriteV2 {
		proto = "rw2"
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("read body: %v", err)
	}
	rc.Mu.Lock()
	n := rc.N
	rc.N++
	rc.Headers = append(rc.Headers, r.Header.Clone())
	rc.Times = append(rc.Times, time.Now())
	rc.Protos = append(rc.Protos, proto)
	rc.Mu.Unlock()

	code := http.StatusNoContent
	if rc.Respond != nil {
		// Not under rc.Mu: respond may block (on the request's context).
		var hdr map[string]string
		var msg string
		code, hdr, msg = rc.Respond(n, r)
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		if code/100 != 2 {
			w.WriteHeader(code)
			io.WriteString(w, msg)
			return
		}
	}
	rc.Mu.Lock()
	defer rc.Mu.Unlock()

	if ce := r.Header.Get("Content-Encoding"); ce != wire.EncodingSnappy {
		t.Errorf("request %d: Content-Encoding %q, want snappy", n, ce)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Errorf("request %d: snappy block decode: %v", n, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	seen := map[string]bool{}
	add := func(ls []prompb.Label, ss []Sample) {
		for i := 1; i < len(ls); i++ {
			if ls[i-1].Name >= ls[i].Name {
				t.Errorf("request %d: labels not sorted or duplicated: %v", n, ls)
			}
		}
		k := LabelKey(ls)
		if seen[k] {
			t.Errorf("request %d: series %s appears twice: samples of one series must be grouped", n, k)
		}
		seen[k] = true
		rc.Series[k] = append(rc.Series[k], ss...)
	}
	if proto == "rw2" && !rc.KnowsRW1Only {
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			t.Errorf("request %d: RW2 unmarshal: %v", n, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if len(req.Symbols) == 0 || req.Symbols[0] != "" {
			t.Errorf("request %d: symbols[0] must be \"\", got %q", n, req.Symbols)
		}
		written := 0
		for _, ts := range req.Timeseries {
			if len(ts.LabelsRefs)%2 != 0 {
				t.Errorf("request %d: odd labels_refs", n)
				continue
			}
			var ls []prompb.Label
			for i := 0; i < len(ts.LabelsRefs); i += 2 {
				nr, vr := ts.LabelsRefs[i], ts.LabelsRefs[i+1]
				if int(nr) >= len(req.Symbols) || int(vr) >= len(req.Symbols) {
					t.Errorf("request %d: ref out of range", n)
					continue
				}
				ls = append(ls, prompb.Label{Name: req.Symbols[nr], Value: req.Symbols[vr]})
			}
			var ss []Sample
			for _, s := range ts.Samples {
				ss = append(ss, Sample{T: s.Timestamp, V: s.Value})
			}
			written += len(ss)
			rc.Meta = append(rc.Meta, ts.Metadata.Type)
			rc.MetaOf[LabelKey(ls)] = ts.Metadata.Type
			add(ls, ss)
		}
		rc.TSCount = append(rc.TSCount, len(req.Timeseries))
		w.Header().Set(wire.HeaderSamplesWritten, strconv.Itoa(written))
		w.Header().Set(wire.HeaderHistogramsWritten, "0")
		w.Header().Set(wire.HeaderExemplarsWritten, "0")
		w.WriteHeader(code)
		return
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Errorf("request %d: RW1 unmarshal: %v", n, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	for _, ts := range req.Timeseries {
		var ss []Sample
		for _, s := range ts.Samples {
			ss = append(ss, Sample{T: s.Timestamp, V: s.Value})
		}
		add(ts.Labels, ss)
	}
	rc.TSCount = append(rc.TSCount, len(req.Timeseries))
	w.WriteHeader(code)
}

// Requests returns the number of requests received.
func (rc *Receiver) Requests() int {
	rc.Mu.Lock()
	defer rc.Mu.Unlock()
	return rc.N
}

// CheckOrder fails unless every series has strictly increasing timestamps
// (which also rules out duplicates) and returns the number of samples.
func (rc *Receiver) CheckOrder(t *testing.T) int {
	t.Helper()
	rc.Mu.Lock()
	defer rc.Mu.Unlock()
	total := 0
	for k, ss := range rc.Series {
		for i := 1; i < len(ss); i++ {
			if ss[i].T <= ss[i-1].T {
				t.Errorf("series %s: timestamp %d after %d (not strictly increasing)", k, ss[i].T, ss[i-1].T)
				break
			}
		}
		total += len(ss)
	}
	return total
}
