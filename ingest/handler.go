package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anomalyd/anomalyd/window/series"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window"
)

// Options are the request limits (config.IngestConfig).
type Options struct {
	MaxCompressedBytes  int64
	MaxDecodedBytes     int64
	MaxLabelsPerSeries  int
	MaxLabelNameLength  int
	MaxLabelValueLength int
	MaxFuture           time.Duration
	HA                  HAOptions
}

// The proto= of the two protocol versions' Content-Type.
const (
	protoV1 = wire.MessageWriteV1
	protoV2 = wire.MessageWriteV2
)

// Handler serves POST /api/v1/write. It is safe for concurrent use.
type Handler struct {
	opts    atomic.Pointer[Options]
	shards  *window.Shards
	logger  *zap.Logger
	m       *metrics
	closing atomic.Bool
	states  chan *reqState // free list of request memory

	// ha elects one replica per HA cluster; nil when ha.enabled is off.
	// haMu serialises SetOptions, which may replace it.
	ha   atomic.Pointer[haTracker]
	haMu sync.Mutex

	// lastWarn is when invalid input was last logged at warn level (unix
	// nanoseconds); suppressed counts the requests not logged since.
	lastWarn   atomic.Int64
	suppressed atomic.Int64

	// metricTypes maps metric family names to their RW1 metadata type.
	// Copy-on-write: metadata changes rarely and is read on every request.
	metaMu      sync.Mutex
	metricTypes atomic.Pointer[map[string]uint8]
}

// NewHandler returns a handler that feeds shards.
func NewHandler(opts Options, shards *window.Shards, reg *prometheus.Registry, logger *zap.Logger) *Handler {
	// One free state per concurrent request worth keeping warm: senders
	// rarely run more parallel requests than a few per core.
	h := &Handler{shards: shards, logger: logger, m: newMetrics(reg), states: make(chan *reqState, 4*runtime.GOMAXPROCS(0))}
	h.opts.Store(&opts)
	if opts.HA.Enabled {
		h.ha.Store(newHATracker(opts.HA, h.m, logger))
	}
	empty := map[string]uint8{}
	h.metricTypes.Store(&empty)
	return h
}

// SetOptions replaces the limits and the HA settings (config reload). A
// change of ha.enabled or of either HA label forgets every election: the
// next request of each cluster is elected.
func (h *Handler) SetOptions(opts Options) {
	h.haMu.Lock()
	defer h.haMu.Unlock()
	if haLabelsChanged(h.opts.Load().HA, opts.HA) {
		var next *haTracker
		if opts.HA.Enabled {
			next = newHATracker(opts.HA, h.m, h.logger)
		}
		if old := h.ha.Swap(next); old != nil {
			old.close()
		}
	} else if t := h.ha.Load(); t != nil {
		t.configure(opts.HA)
	}
	h.opts.Store(&opts)
}

// Shutdown makes every later request fail with 503, so senders retry
// against the next instance (or this one after its restart).
func (h *Handler) Shutdown() { h.closing.Store(true) }

// logInvalid logs a 400 at warn level at most every 10 s (a misbehaving
// sender retries nothing, but may send the same bad series every scrape),
// and every one at debug level.
func (h *Handler) logInvalid(msg string) {
	h.logger.Debug("invalid series in remote write request", zap.String("error", msg))
	now := time.Now().UnixNano()
	last := h.lastWarn.Load()
	if now-last < int64(10*time.Second) || !h.lastWarn.CompareAndSwap(last, now) {
		h.suppressed.Add(1)
		return
	}
	h.logger.Warn("invalid series in remote write request; the valid rest was written",
		zap.String("error", msg), zap.Int64("similar_requests_not_logged", h.suppressed.Swap(0)))
}

// httpError carries the status a failure maps to.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status: the one place that decides.
func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.code
	}
	return http.StatusInternalServerError
}

// parseContentType picks the protocol from Content-Type as PROTOCOL.md says:
// a missing header means RW1; anything but application/x-protobuf with no
// proto or one of the two known protos is 415.
func parseContentType(ct string) (string, error) {
	if ct == "" {
		return protoV1, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: %v", ct, err)
	}
	if mt != wire.ContentTypeProtobuf {
		return "", errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: want "+wire.ContentTypeProtobuf, ct)
	}
	switch p := params["proto"]; p {
	case "", protoV1:
		return protoV1, nil
	case protoV2:
		return protoV2, nil
	default:
		return "", errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: proto must be %s or %s", ct, protoV1, protoV2)
	}
}

// reqState is the request-scoped memory, pooled.
type reqState struct {
	comp    []byte
	key     []byte
	req     request
	batches []*window.Batch
	// Per shard: how many of the batch's samples come from native
	// histograms, and how many histograms they are (one per _count sample).
	derived, hists []int
}

// getState takes request memory from the bounded free list. Not a
// sync.Pool: a GC empties it, and reallocating (and zeroing) multi-MiB
// decode buffers after every GC showed in profiles.
func (h *Handler) getState() *reqState {
	select {
	case st := <-h.states:
		return st
	default:
		return new(reqState)
	}
}

func (h *Handler) putState(st *reqState) {
	if cap(st.comp) > 64<<20 || cap(st.req.buf) > 64<<20 {
		return // do not pin a huge body's memory
	}
	st.req.reset()
	clear(st.batches)
	st.batches = st.batches[:0]
	select {
	case h.states <- st:
	default:
	}
}

// framedMagic starts a snappy *framed* stream, which remote write forbids.
var framedMagic = []byte("\xff\x06\x00\x00sNaPpY")

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	proto, res, err := h.serve(w, r)
	code := http.StatusNoContent
	if err != nil {
		code = statusOf(err)
	}
	if proto == protoV2 {
		hd := w.Header()
		hd.Set(wire.HeaderSamplesWritten, strconv.Itoa(res.written))
		hd.Set(wire.HeaderHistogramsWritten, strconv.Itoa(res.histograms))
		hd.Set(wire.HeaderExemplarsWritten, "0")
	}
	if err != nil {
		msg := err.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, msg, code)
		if code != http.StatusServiceUnavailable {
			h.logger.Debug("remote write request rejected", zap.Int("status", code), zap.String("error", msg))
		}
	} else {
		w.WriteHeader(code)
	}
	h.m.observe(proto, code, time.Since(start))
}

// result is what a request wrote: the Written headers of an RW2 answer.
type result struct{ written, histograms int }

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (string, result, error) {
	var res result
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return "", res, errorf(http.StatusMethodNotAllowed, "method %s not allowed, use POST", r.Method)
	}
	proto, err := parseContentType(r.Header.Get("Content-Type"))
	if err != nil {
		return "", res, err
	}
	if enc := r.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, wire.EncodingSnappy) {
		return proto, res, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: only snappy is supported", enc)
	}
	if h.closing.Load() {
		return proto, res, errorf(http.StatusServiceUnavailable, "anomalyd is shutting down")
	}
	// Back-pressure before the work: with a shard's queue full the request
	// would be refused in part after decoding it, CPU the shards need to
	// catch up. The sender retries the whole request either way.
	if h.shards.Full() {
		return proto, res, errorf(http.StatusServiceUnavailable, "cannot accept samples: %v; retry later", window.ErrQueueFull)
	}
	opts := h.opts.Load()
	if r.ContentLength > opts.MaxCompressedBytes {
		return proto, res, errorf(http.StatusRequestEntityTooLarge,
			"request body of %d bytes exceeds limit %d (ingest.max_compressed_bytes)", r.ContentLength, opts.MaxCompressedBytes)
	}
	st := h.getState()
	defer h.putState(st)

	st.comp, err = readBody(st.comp[:0], r.Body, r.ContentLength, opts.MaxCompressedBytes)
	if err != nil {
		return proto, res, err
	}
	h.m.bytes.Add(float64(len(st.comp)))
	if bytes.HasPrefix(st.comp, framedMagic) {
		return proto, res, errorf(http.StatusBadRequest, "cannot decode request: snappy framed format is not supported, send the block format")
	}
	n, err := snappy.DecodedLen(st.comp)
	if err != nil {
		return proto, res, errorf(http.StatusBadRequest, "cannot decode request: invalid snappy block: %v", err)
	}
	if int64(n) > opts.MaxDecodedBytes {
		return proto, res, errorf(http.StatusBadRequest,
			"cannot decode request: decoded size %d bytes exceeds limit %d (ingest.max_decoded_bytes)", n, opts.MaxDecodedBytes)
	}
	if cap(st.req.buf) < n {
		st.req.buf = make([]byte, n)
	}
	st.req.buf, err = snappy.Decode(st.req.buf[:n], st.comp)
	if err != nil {
		return proto, res, errorf(http.StatusBadRequest, "cannot decode request: invalid snappy block: %v", err)
	}
	if proto == protoV2 {
		err = st.req.decodeV2()
	} else {
		err = st.req.decodeV1()
	}
	if err != nil {
		return proto, res, errorf(http.StatusBadRequest, "%v", err)
	}
	// HA pairs: one decision per request, on its first series' labels.
	var strip string
	if t := h.ha.Load(); t != nil {
		if cluster, replica := t.labels(&st.req, opts.MaxLabelValueLength); cluster != nil && replica != nil {
			switch t.check(cluster, replica, t.clock()) {
			case haAnalyse:
				strip = t.replicaLabel
			case haDeduplicate:
				// Accepted: the elected replica writes the same samples.
				// Reported as written so that a remote write 2.0 sender
				// does not take the answer for a failure.
				res.written, res.histograms = len(st.req.samples), len(st.req.hists)
				h.m.haDeduplicated.Add(float64(res.written + res.histograms))
				return proto, res, nil
			case haTooManyClusters:
				h.m.haTooMany.Add(float64(len(st.req.samples) + len(st.req.hists)))
				err := errTooManyClusters(cluster, t.maxClusters.Load())
				h.logInvalid(err.Error())
				return proto, res, err
			}
		}
	}
	err = h.route(st, proto, opts, strip, &res)
	return proto, res, err
}

// startSeries picks the batch of the shard that owns the series keyed
// st.key, copies the key into it and returns the batch, the shard and the
// series' entry with its key and the start of its samples filled in; the
// caller appends the samples, sets SamplesEnd and Counter, and appends the
// entry to b.Series.
func (h *Handler) startSeries(st *reqState, nShards int) (*window.Batch, int, window.BatchSeries) {
	hash := series.Hash(st.key)
	shard := int(hash % uint64(nShards))
	b := st.batches[shard]
	if b == nil {
		b = h.shards.GetBatch()
		st.batches[shard] = b
	}
	ks := uint32(len(b.Keys))
	b.Keys = append(b.Keys, st.key...)
	nameStart, nameEnd := series.NameSpan(st.key)
	ss := uint32(len(b.Samples))
	return b, shard, window.BatchSeries{
		Hash:         hash,
		KeyStart:     ks,
		KeyEnd:       uint32(len(b.Keys)),
		NameStart:    ks + nameStart,
		NameEnd:      ks + nameEnd,
		SamplesStart: ss,
		SamplesEnd:   ss,
	}
}

// readBody reads the whole body into dst, at most limit bytes.
func readBody(dst []byte, body io.Reader, length, limit int64) ([]byte, error) {
	if length >= 0 {
		if int64(cap(dst)) < length {
			dst = make([]byte, length)
		}
		dst = dst[:length]
		if _, err := io.ReadFull(body, dst); err != nil {
			return dst, errorf(http.StatusBadRequest, "cannot read request body: %v", err)
		}
		return dst, nil
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		m, err := body.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+m]
		if int64(len(dst)) > limit {
			return dst, errorf(http.StatusRequestEntityTooLarge,
				"request body exceeds limit %d bytes (ingest.max_compressed_bytes)", limit)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, errorf(http.StatusBadRequest, "cannot read request body: %v", err)
		}
	}
}

// Reasons a series or sample is invalid (400, the rest of the request is written).
type reason uint8

const (
	reasonOK reason = iota
	reasonMissingName
	reasonEmptyLabelName
	reasonDuplicateLabel
	reasonInvalidUTF8
	reasonTooManyLabels
	reasonNameTooLong
	reasonValueTooLong
	reasonBadSymbolRef
	reasonSamplesAndHistograms
	reasonTooFarInFuture
	reasonNoSamples
	numReasons
)

var reasonNames = [numReasons]string{"", "missing_metric_name", "empty_label_name", "duplicate_label_name",
	"invalid_utf8", "too_many_labels", "label_name_too_long", "label_value_too_long", "invalid_symbol_reference",
	"samples_and_histograms", "too_far_in_future", "no_samples"}

// route validates, canonicalises and hashes every series, copies it into
// the batch of its shard and enqueues the batches. strip is a label name
// left out of every series' key and hash (the HA replica label), or "".
func (h *Handler) route(st *reqState, proto string, opts *Options, strip string, res *result) error {
	req := &st.req
	if len(req.metadata) > 0 {
		h.learnMetadata(req)
	}
	types := *h.metricTypes.Load()
	nShards := h.shards.N()
	for len(st.batches) < nShards {
		st.batches = append(st.batches, nil)
		st.derived = append(st.derived, 0)
		st.hists = append(st.hists, 0)
	}
	clear(st.derived)
	clear(st.hists)
	maxT := time.Now().Add(opts.MaxFuture).UnixMilli()
	var (
		invalid     [numReasons]int // series (samples, for too_far_in_future)
		rejectedBy  [numReasons]int // samples
		firstErr    string
		exemplars   int
		accepted    int
		histsOK     int
		totalSeries = len(req.series)
	)
	// tooFarInFuture counts a sample or histogram of s at t beyond
	// ingest.max_future, which is refused alone (the other samples of s
	// are analysed), and keeps the first such error.
	tooFarInFuture := func(s *wireSeries, what string, t int64) {
		invalid[reasonTooFarInFuture]++
		rejectedBy[reasonTooFarInFuture]++
		if firstErr == "" {
			firstErr = fmt.Sprintf("series %s: %s timestamp %d is more than %s in the future (ingest.max_future)",
				formatLabels(req, s), what, t, opts.MaxFuture)
		}
	}
	for si := range req.series {
		s := &req.series[si]
		exemplars += int(s.exemplars)
		var (
			why    reason
			detail string
		)
		// The key: name 0xff value 0xff … over the sorted labels, empty
		// values and the HA replica label dropped. Built in scratch to
		// hash it, then copied once into the shard's batch: the one copy
		// out of the request buffer.
		st.key, why, detail = h.canonicalKey(st.key[:0], req, s, proto, opts, strip)
		if why != reasonOK {
			invalid[why]++
			rejectedBy[why] += int(s.samplesEnd-s.samplesStart) + int(s.histograms)
			if firstErr == "" {
				firstErr = fmt.Sprintf("series %s: %s", formatLabels(req, s), detail)
			}
			continue
		}
		if s.samplesEnd > s.samplesStart {
			b, _, bs := h.startSeries(st, nShards)
			for _, smp := range req.samples[s.samplesStart:s.samplesEnd] {
				if smp.t > maxT {
					tooFarInFuture(s, "sample", smp.t)
					continue
				}
				b.Samples = append(b.Samples, window.Sample{T: smp.t, V: smp.v})
			}
			bs.SamplesEnd = uint32(len(b.Samples))
			bs.Counter = isCounter(b.Keys[bs.NameStart:bs.NameEnd], s.metricType, types)
			b.Series = append(b.Series, bs)
		}
		if s.histograms > 0 {
			// A native histogram is analysed as the two series a classic
			// histogram would have: name_count and name_sum, counters
			// (rates) unless it is a gauge histogram. Its buckets are not
			// analysed, as classic _bucket series are not by default.
			hs := req.hists[s.histStart : s.histStart+s.histograms]
			gauge := false
			for _, hsmp := range hs {
				gauge = gauge || hsmp.gauge
			}
			for _, sum := range [2]bool{false, true} {
				suffix := "_count"
				if sum {
					suffix = "_sum"
				}
				st.key = appendKey(st.key[:0], req, s, strip, suffix)
				b, shard, bs := h.startSeries(st, nShards)
				for _, hsmp := range hs {
					if hsmp.t > maxT {
						if !sum { // count each histogram once
							tooFarInFuture(s, "histogram", hsmp.t)
						}
						continue
					}
					v := hsmp.count
					if sum {
						v = hsmp.sum
					}
					// A stale histogram carries the stale marker in its sum
					// (Prometheus's staleness for histograms): it ends both
					// derived series.
					if value.IsStaleNaN(hsmp.sum) {
						v = math.Float64frombits(value.StaleNaN)
					}
					b.Samples = append(b.Samples, window.Sample{T: hsmp.t, V: v})
				}
				bs.SamplesEnd = uint32(len(b.Samples))
				bs.Counter = !gauge
				b.Series = append(b.Series, bs)
				n := int(bs.SamplesEnd - bs.SamplesStart)
				st.derived[shard] += n
				if !sum {
					st.hists[shard] += n
				}
			}
		}
	}
	var enqueueErr error
	backPressured := 0
	for i, b := range st.batches {
		if b == nil {
			continue
		}
		st.batches[i] = nil
		n := b.Len()
		if enqueueErr == nil {
			if err := h.shards.Enqueue(i, b); err != nil {
				enqueueErr = err
			} else {
				accepted += n - st.derived[i]
				histsOK += st.hists[i]
				continue
			}
		}
		backPressured += n - st.derived[i] + st.hists[i]
		h.shards.PutBatch(b)
	}
	res.written, res.histograms = accepted, histsOK
	h.m.account(proto, accepted, histsOK, backPressured, exemplars, &invalid, &rejectedBy)
	if enqueueErr != nil {
		return errorf(http.StatusServiceUnavailable, "cannot accept samples: %v; retry later", enqueueErr)
	}
	if firstErr != "" {
		nInvalid := 0
		for _, c := range invalid {
			nInvalid += c
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%d invalid series or samples of %d series (", nInvalid, totalSeries)
		sep := ""
		for i, c := range invalid {
			if c > 0 {
				fmt.Fprintf(&b, "%s%s: %d", sep, reasonNames[i], c)
				sep = ", "
			}
		}
		fmt.Fprintf(&b, "); the rest was written; first: %s", firstErr)
		h.logInvalid(b.String())
		return errorf(http.StatusBadRequest, "%s", b.String())
	}
	return nil
}
