package sink

import (
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"mime"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/selfmon"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/series"
)

var testNames = series.Names{Score: "anomaly_score", Expected: "anomaly_expected", Lower: "anomaly_lower", Upper: "anomaly_upper", Driver: "anomaly_driver"}

// testConfig is a config with the documented defaults applied.
func testConfig(url string) *config.RemoteWriteConfig {
	return &config.RemoteWriteConfig{
		HTTPClientConfig: config.HTTPClientConfig{URL: url, RemoteTimeout: model.Duration(30 * time.Second)},
		Name:             "test",
		QueueConfig: config.QueueConfig{
			Capacity:          100000,
			MaxShards:         4,
			MaxSamplesPerSend: 2000,
			BatchSendDeadline: model.Duration(5 * time.Second),
			MinBackoff:        model.Duration(30 * time.Millisecond),
			MaxBackoff:        model.Duration(5 * time.Second),
		},
		ProtobufMessage: wire.MessageWriteV1,
	}
}

// newTestWriter builds a writer with an observed logger. With h != nil
// requests go straight to h in the same process (no network), which
// testing/synctest needs: a real listener is not "durably blocked".
func newTestWriter(t *testing.T, cfg *config.RemoteWriteConfig, h http.Handler) (*RemoteWriter, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	w, err := NewRemoteWriter(cfg, testNames, selfmon.NewRegistry(), zap.New(core))
	if err != nil {
		t.Fatalf("NewRemoteWriter: %v", err)
	}
	w.jitter = func(d time.Duration) time.Duration { return d }
	if h != nil {
		w.client.Transport = handlerTransport{h} // keeps the real client's redirect policy
	}
	return w, logs
}

// handlerTransport serves requests with a handler in the calling goroutine.
// A handler that returns errTransport makes the round trip fail.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if rec.Code == codeTransportError {
		return nil, fmt.Errorf("connection reset by peer (test)")
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// codeTransportError, returned by a receiver's respond func, makes
// handlerTransport fail the request as a network error would.
const codeTransportError = 999

// mkSeries builds a series.Info from label pairs.
func mkSeries(kv ...string) *series.Info {
	type lbl struct{ n, v string }
	ls := make([]lbl, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, lbl{kv[i], kv[i+1]})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].n < ls[j].n })
	var b strings.Builder
	name := ""
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(series.LabelSep)
		}
		b.WriteString(l.n)
		b.WriteByte(series.LabelSep)
		b.WriteString(l.v)
		if l.n == "__name__" {
			name = l.v
		}
	}
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return &series.Info{Labels: b.String(), Name: name, Hash: h.Sum64()}
}

type sample struct {
	T int64
	V float64
}

func (s sample) String() string {
	return fmt.Sprintf("%d:%s(%#x)", s.T, strconv.FormatFloat(s.V, 'g', -1, 64), math.Float64bits(s.V))
}

// labelKey writes a label set as n=v,n=v.
func labelKey(ls []prompb.Label) string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
	}
	return b.String()
}

// receiver is a remote-write store that really decodes what it gets.
type receiver struct {
	t  *testing.T
	mu sync.Mutex
	// respond picks the answer to request n (0-based) before the body is
	// decoded; nil or a 2xx code: decode and keep the samples.
	respond func(n int, r *http.Request) (code int, hdr map[string]string, body string)
	// knowsRW1Only: decode every body as RW1 and never send the Written
	// headers, as a store that predates RW2 does.
	knowsRW1Only bool

	n       int
	series  map[string][]sample
	protos  []string // per request: "rw1" or "rw2"
	headers []http.Header
	times   []time.Time
	tsCount []int // TimeSeries per accepted request
	meta    []writev2.Metadata_MetricType
}

func newReceiver(t *testing.T) *receiver {
	return &receiver{t: t, series: map[string][]sample{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	rc.mu.Lock()
	n := rc.n
	rc.n++
	rc.headers = append(rc.headers, r.Header.Clone())
	rc.times = append(rc.times, time.Now())
	rc.protos = append(rc.protos, proto)
	rc.mu.Unlock()

	code := http.StatusNoContent
	if rc.respond != nil {
		// Not under rc.mu: respond may block (on the request's context).
		var hdr map[string]string
		var msg string
		code, hdr, msg = rc.respond(n, r)
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		if code/100 != 2 {
			w.WriteHeader(code)
			io.WriteString(w, msg)
			return
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()

	if ce := r.Header.Get("Content-Encoding"); ce != "snappy" {
		t.Errorf("request %d: Content-Encoding %q, want snappy", n, ce)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Errorf("request %d: snappy block decode: %v", n, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	seen := map[string]bool{}
	add := func(ls []prompb.Label, ss []sample) {
		for i := 1; i < len(ls); i++ {
			if ls[i-1].Name >= ls[i].Name {
				t.Errorf("request %d: labels not sorted or duplicated: %v", n, ls)
			}
		}
		k := labelKey(ls)
		if seen[k] {
			t.Errorf("request %d: series %s appears twice: samples of one series must be grouped", n, k)
		}
		seen[k] = true
		rc.series[k] = append(rc.series[k], ss...)
	}
	if proto == "rw2" && !rc.knowsRW1Only {
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
			var ss []sample
			for _, s := range ts.Samples {
				ss = append(ss, sample{s.Timestamp, s.Value})
			}
			written += len(ss)
			rc.meta = append(rc.meta, ts.Metadata.Type)
			add(ls, ss)
		}
		rc.tsCount = append(rc.tsCount, len(req.Timeseries))
		w.Header().Set(wire.HeaderSamplesWritten, strconv.Itoa(written))
		w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", "0")
		w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", "0")
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
		var ss []sample
		for _, s := range ts.Samples {
			ss = append(ss, sample{s.Timestamp, s.Value})
		}
		add(ts.Labels, ss)
	}
	rc.tsCount = append(rc.tsCount, len(req.Timeseries))
	w.WriteHeader(code)
}

func (rc *receiver) requests() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.n
}

// checkOrder fails unless every series has strictly increasing timestamps
// (which also rules out duplicates) and returns the number of samples.
func (rc *receiver) checkOrder(t *testing.T) int {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	total := 0
	for k, ss := range rc.series {
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

// sameSamples compares by value bits, so NaN, stale markers and ±Inf compare exactly.
func sameSamples(got, want []sample) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].T != want[i].T || math.Float64bits(got[i].V) != math.Float64bits(want[i].V) {
			return false
		}
	}
	return true
}

// records makes nSeries × nTimes normal records, one Append batch per
// timestamp, values derived from series and time so they can be checked.
func mkRecords(infos []*series.Info, t int64) []series.Record {
	recs := make([]series.Record, len(infos))
	for i, s := range infos {
		v := float64(t) + float64(i)/1000
		recs[i] = series.Record{Series: s, T: t, Detector: detectors.KindCombined, Score: v, Expected: v + 1, Lower: v - 1, Upper: v + 2}
	}
	return recs
}

func manySeries(n int) []*series.Info {
	ss := make([]*series.Info, n)
	for i := range ss {
		ss[i] = mkSeries("__name__", "http_requests_total", "job", "api", "instance", fmt.Sprintf("10.0.%d.%d:9100", i/256, i%256))
	}
	return ss
}

func counterValue(c *selfmon.Counter) int64 { return int64(c.Value()) }
