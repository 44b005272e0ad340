package history

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/sink/wire"
)

// ReadHandler serves POST /api/v1/read, Prometheus's remote-read protocol,
// from a History: a Prometheus with `remote_read: [{url: …/api/v1/read,
// read_recent: true}]` queries anomalyd's output series as if it stored
// them. Both response types are served: STREAMED_XOR_CHUNKS (Prometheus 3
// asks for it first) sends the History's chunks as they are, SAMPLES
// (Prometheus 2 asks only for it) decodes them.
//
// Requests are checked before any work: POST (405), Content-Type
// application/x-protobuf or none and Content-Encoding snappy or none (415),
// the body size (413) and the snappy-decoded size (400, checked with
// snappy.DecodedLen before decoding). At most history.max_concurrent_reads
// requests are served at once; the rest wait, and give up (503) when their
// client does. ServeHTTP may be called by many goroutines at once.
type ReadHandler struct {
	hist       *History
	maxDecoded int64
	maxBody    int64 // snappy.MaxEncodedLen(maxDecoded)
	maxSamples int
	maxFrame   int
	sem        chan struct{} // a token per request being served
	logger     *zap.Logger
	requests   *prometheus.CounterVec
	queries    prometheus.Counter
	duration   prometheus.Histogram
}

// readCodes are the code label values of anomalyd_read_requests_total,
// registered up front so that rate() sees them from zero; "aborted" counts
// streams cut after their status was sent.
var readCodes = []string{"200", "400", "405", "413", "415", "500", "503", "aborted"}

// NewReadHandler returns the handler of POST /api/v1/read over hist, with
// the limits of cfg (validated, defaults applied), and registers the
// anomalyd_read_* families in reg (nil: a private registry).
func NewReadHandler(hist *History, cfg *config.HistoryConfig, reg *prometheus.Registry, logger *zap.Logger) *ReadHandler {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	maxBody := int64(snappy.MaxEncodedLen(int(min(cfg.MaxDecodedBytes, 1<<32-1))))
	if maxBody < 0 { // larger than snappy can encode in one block
		maxBody = cfg.MaxDecodedBytes
	}
	h := &ReadHandler{
		hist:       hist,
		maxDecoded: cfg.MaxDecodedBytes,
		maxBody:    maxBody,
		maxSamples: cfg.MaxSamplesPerQuery,
		maxFrame:   cfg.MaxBytesInFrame,
		sem:        make(chan struct{}, cfg.MaxConcurrentReads),
		logger:     logger,
		requests: promreg.NewCounterVec(reg, "anomalyd_read_requests_total",
			`Remote-read requests by HTTP status (code="aborted": a stream cut after its status was sent).`, "code"),
		queries: promreg.NewCounter(reg, "anomalyd_read_queries_total",
			"Remote-read queries answered (a request holds one or more)."),
		duration: promreg.NewHistogram(reg, "anomalyd_read_request_duration_seconds",
			"Time to serve one remote-read request, waiting for a slot included.", promreg.DefBuckets),
	}
	for _, c := range readCodes {
		h.requests.WithLabelValues(c)
	}
	return h
}

// readError carries the HTTP status a failure maps to.
type readError struct {
	code int
	err  error
}

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func readErrorf(code int, format string, args ...any) error {
	return &readError{code: code, err: fmt.Errorf(format, args...)}
}

// readStatus maps an error to its HTTP status: the one place that decides.
func readStatus(err error) int {
	var re *readError
	if errors.As(err, &re) {
		return re.code
	}
	return http.StatusInternalServerError
}

// ServeHTTP answers one remote-read request and counts it by status.
func (h *ReadHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	aborted := true // until serve returns: it panics with http.ErrAbortHandler to cut a stream
	defer func() {
		if aborted {
			h.requests.WithLabelValues("aborted").Inc()
		}
		h.duration.Observe(time.Since(start).Seconds())
	}()
	err := h.serve(w, r)
	aborted = false
	code := http.StatusOK
	if err != nil {
		code = readStatus(err)
		msg := err.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		http.Error(w, msg, code)
		h.logger.Debug("remote read request rejected", zap.Int("status", code), zap.String("error", msg))
	}
	h.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

// readQuery is one query of a request, its matchers compiled.
type readQuery struct {
	matchers   []*labels.Matcher
	mint, maxt int64
}

// serve answers r. An error is returned before anything is written; once the
// response has started, a failure panics with http.ErrAbortHandler so the
// client sees a broken connection, never a truncated 200.
func (h *ReadHandler) serve(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return readErrorf(http.StatusMethodNotAllowed, "method %s not allowed, use POST", r.Method)
	}
	if err := checkReadHeaders(r.Header); err != nil {
		return err
	}
	if r.ContentLength > h.maxBody {
		return readErrorf(http.StatusRequestEntityTooLarge,
			"request body of %d bytes exceeds limit %d (snappy bound of history.max_decoded_bytes)", r.ContentLength, h.maxBody)
	}
	ctx := r.Context()
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return readErrorf(http.StatusServiceUnavailable,
			"gave up waiting for one of %d read slots (history.max_concurrent_reads): %w", cap(h.sem), ctx.Err())
	}
	defer func() { <-h.sem }()

	req, err := h.decodeRequest(w, r)
	if err != nil {
		return err
	}
	queries := make([]readQuery, len(req.Queries))
	for i, q := range req.Queries {
		ms, err := toMatchers(q.Matchers)
		if err != nil {
			return readErrorf(http.StatusBadRequest, "query %d: %w", i, err)
		}
		queries[i] = readQuery{matchers: ms, mint: q.StartTimestampMs, maxt: q.EndTimestampMs}
	}
	rt, err := negotiateResponseType(req.AcceptedResponseTypes)
	if err != nil {
		return err
	}
	if rt == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
		h.serveStreamed(w, r, queries)
		return nil
	}
	return h.serveSamples(w, r, queries)
}

// checkReadHeaders accepts what Prometheus sends: Content-Type
// application/x-protobuf (or none, assumed to be it) and Content-Encoding
// snappy (or none, assumed to be it).
func checkReadHeaders(hd http.Header) error {
	if ct := hd.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return readErrorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: %w", ct, err)
		}
		if mt != wire.ContentTypeProtobuf {
			return readErrorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: want "+wire.ContentTypeProtobuf, ct)
		}
		if p := params["proto"]; p != "" && p != wire.MessageReadRequest {
			return readErrorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: proto must be "+wire.MessageReadRequest, ct)
		}
	}
	if enc := strings.TrimSpace(hd.Get("Content-Encoding")); enc != "" && !strings.EqualFold(enc, wire.EncodingSnappy) {
		return readErrorf(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: only snappy is supported", enc)
	}
	return nil
}

// decodeRequest reads, decompresses and unmarshals the request body.
func (h *ReadHandler) decodeRequest(w http.ResponseWriter, r *http.Request) (*prompb.ReadRequest, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, readErrorf(http.StatusRequestEntityTooLarge,
				"request body exceeds limit %d bytes (snappy bound of history.max_decoded_bytes)", h.maxBody)
		}
		return nil, readErrorf(http.StatusBadRequest, "cannot read request body: %w", err)
	}
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return nil, readErrorf(http.StatusBadRequest, "cannot decode snappy block: %w", err)
	}
	if int64(n) > h.maxDecoded {
		return nil, readErrorf(http.StatusBadRequest,
			"cannot decode request: decoded size %d bytes exceeds limit %d (history.max_decoded_bytes)", n, h.maxDecoded)
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, readErrorf(http.StatusBadRequest, "cannot decode snappy block: %w", err)
	}
	var req prompb.ReadRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, readErrorf(http.StatusBadRequest, "cannot unmarshal ReadRequest: %w", err)
	}
	return &req, nil
}

// toMatchers compiles remote-read matchers. Regular expressions are fully
// anchored (labels.NewMatcher wraps them in ^(?s:…)$), as in PromQL.
func toMatchers(pbs []*prompb.LabelMatcher) ([]*labels.Matcher, error) {
	ms := make([]*labels.Matcher, 0, len(pbs))
	for _, pb := range pbs {
		var t labels.MatchType
		switch pb.Type {
		case prompb.LabelMatcher_EQ:
			t = labels.MatchEqual
		case prompb.LabelMatcher_NEQ:
			t = labels.MatchNotEqual
		case prompb.LabelMatcher_RE:
			t = labels.MatchRegexp
		case prompb.LabelMatcher_NRE:
			t = labels.MatchNotRegexp
		default:
			return nil, fmt.Errorf("unknown matcher type %d for label %q", pb.Type, pb.Name)
		}
		m, err := labels.NewMatcher(t, pb.Name, pb.Value)
		if err != nil {
			return nil, fmt.Errorf("invalid matcher %s%s%q: %w", pb.Name, t, pb.Value, err)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// negotiateResponseType picks the first response type the client accepts
// that anomalyd serves; none listed means SAMPLES (Prometheus 2 lists none).
func negotiateResponseType(accepted []prompb.ReadRequest_ResponseType) (prompb.ReadRequest_ResponseType, error) {
	if len(accepted) == 0 {
		return prompb.ReadRequest_SAMPLES, nil
	}
	for _, t := range accepted {
		if t == prompb.ReadRequest_SAMPLES || t == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
			return t, nil
		}
	}
	return 0, readErrorf(http.StatusBadRequest,
		"none of the accepted response types %v is supported: want SAMPLES or STREAMED_XOR_CHUNKS", accepted)
}

// serveSamples answers with one snappy ReadResponse holding one QueryResult
// per query, each sample in its query's range exactly.
func (h *ReadHandler) serveSamples(w http.ResponseWriter, r *http.Request, queries []readQuery) error {
	resp := prompb.ReadResponse{Results: make([]*prompb.QueryResult, len(queries))}
	var dec chunkDecoder
	for i, q := range queries {
		if err := r.Context().Err(); err != nil {
			return readErrorf(http.StatusServiceUnavailable, "client went away: %w", err)
		}
		matches := h.hist.query(q.matchers, q.mint, q.maxt)
		h.queries.Inc()
		res := &prompb.QueryResult{Timeseries: make([]*prompb.TimeSeries, 0, len(matches))}
		n := 0
		for _, m := range matches {
			var samples []prompb.Sample
			for _, c := range m.chunks {
				var err error
				if samples, err = dec.appendSamples(samples, c.b, q.mint, q.maxt); err != nil {
					return readErrorf(http.StatusInternalServerError, "BUG: query %d: %s: %w", i, formatLabels(m.labels), err)
				}
				if n+len(samples) > h.maxSamples {
					return readErrorf(http.StatusBadRequest,
						"query %d: more than %d samples (history.max_samples_per_query); narrow the time range or the matchers", i, h.maxSamples)
				}
			}
			if len(samples) > 0 {
				n += len(samples)
				res.Timeseries = append(res.Timeseries, &prompb.TimeSeries{Labels: m.labels, Samples: samples})
			}
		}
		resp.Results[i] = res
	}
	raw, err := resp.Marshal()
	if err != nil {
		return readErrorf(http.StatusInternalServerError, "cannot marshal ReadResponse: %w", err)
	}
	w.Header().Set("Content-Type", wire.ContentTypeProtobuf)
	w.Header().Set("Content-Encoding", wire.EncodingSnappy)
	w.Write(snappy.Encode(nil, raw)) // an error means the client went away
	return nil
}

// chunkDecoder decodes XOR chunks, reusing one iterator.
type chunkDecoder struct {
	chunk chunkenc.XORChunk
	it    chunkenc.Iterator
}

// appendSamples appends the samples of chunk b within [mint, maxt] to dst.
func (d *chunkDecoder) appendSamples(dst []prompb.Sample, b []byte, mint, maxt int64) ([]prompb.Sample, error) {
	d.chunk.Reset(b)
	d.it = d.chunk.Iterator(d.it)
	for d.it.Next() == chunkenc.ValFloat {
		t, v := d.it.At()
		if t > maxt {
			break
		}
		if t >= mint {
			dst = append(dst, prompb.Sample{Timestamp: t, Value: v})
		}
	}
	return dst, d.it.Err()
}

// serveStreamed answers with STREAMED_XOR_CHUNKS: for each query, its series
// sorted by labels, each in one or more frames of at most
// history.max_bytes_in_frame (a frame exceeds it only when one chunk and
// the labels alone do). Chunks are sent whole when they overlap the range;
// the client trims samples outside it. Any failure once writing has begun
// aborts the connection.
func (h *ReadHandler) serveStreamed(w http.ResponseWriter, r *http.Request, queries []readQuery) {
	w.Header().Set("Content-Type", wire.ContentTypeChunkedRead)
	bw := bufio.NewWriterSize(w, 64<<10)
	fw := frameWriter{w: wire.NewFrameWriter(bw), maxFrame: h.maxFrame}
	for i, q := range queries {
		if r.Context().Err() != nil {
			panic(http.ErrAbortHandler) // the client went away
		}
		matches := h.hist.query(q.matchers, q.mint, q.maxt)
		h.queries.Inc()
		for _, m := range matches {
			if err := fw.writeSeries(int64(i), m.labels, m.chunks); err != nil {
				h.logger.Debug("remote read stream aborted", zap.Int("query", i), zap.Error(err))
				panic(http.ErrAbortHandler)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		h.logger.Debug("remote read stream aborted", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
}

// frameWriter writes a series as ChunkedReadResponse frames (wire's frame
// format), packing its chunks into frames of at most maxFrame bytes.
type frameWriter struct {
	w        *wire.FrameWriter
	maxFrame int
	buf      []byte // marshalled frame, reused
	chunks   []prompb.Chunk
}

// writeSeries writes one series in as few frames as max_bytes_in_frame
// allows, at least one chunk a frame, chunks in order.
func (f *frameWriter) writeSeries(queryIndex int64, lbls []prompb.Label, chunks []histChunk) error {
	labelsSize := 0
	for i := range lbls {
		labelsSize += fieldSize(lbls[i].Size())
	}
	for len(chunks) > 0 {
		f.chunks = f.chunks[:0]
		seriesSize := labelsSize
		for _, c := range chunks {
			pc := prompb.Chunk{MinTimeMs: c.minT, MaxTimeMs: c.maxT, Type: prompb.Chunk_XOR, Data: c.b}
			size := seriesSize + fieldSize(pc.Size())
			if len(f.chunks) > 0 && frameSize(size, queryIndex) > f.maxFrame {
				break
			}
			f.chunks = append(f.chunks, pc)
			seriesSize = size
		}
		chunks = chunks[len(f.chunks):]
		resp := prompb.ChunkedReadResponse{
			ChunkedSeries: []*prompb.ChunkedSeries{{Labels: lbls, Chunks: f.chunks}},
			QueryIndex:    queryIndex,
		}
		if err := f.writeFrame(&resp); err != nil {
			return err
		}
	}
	return nil
}

// fieldSize is the encoded size of an embedded message field of n bytes
// with a one-byte tag.
func fieldSize(n int) int { return 1 + uvarintSize(uint64(n)) + n }

// frameSize is the encoded size of a ChunkedReadResponse holding one series
// of seriesSize bytes.
func frameSize(seriesSize int, queryIndex int64) int {
	n := fieldSize(seriesSize)
	if queryIndex != 0 {
		n += 1 + uvarintSize(uint64(queryIndex))
	}
	return n
}

func uvarintSize(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func (f *frameWriter) writeFrame(resp *prompb.ChunkedReadResponse) error {
	n := resp.Size()
	f.buf = slices.Grow(f.buf[:0], n)[:n]
	if _, err := resp.MarshalToSizedBuffer(f.buf); err != nil {
		return fmt.Errorf("cannot marshal ChunkedReadResponse: %w", err)
	}
	return f.w.WriteFrame(f.buf)
}

// formatLabels formats labels as {a="b", …} for messages.
func formatLabels(lbls []prompb.Label) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range lbls {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}
