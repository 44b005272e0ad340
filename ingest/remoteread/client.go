package remoteread

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/series"
)

// Query asks for the samples of one series in [Start, End] (milliseconds,
// inclusive, as remote read's own ranges).
type Query struct {
	// Labels is the canonical label set (name 0xff value 0xff …, sorted,
	// empty values dropped, __name__ included), as series.Info.Labels.
	Labels     string
	Start, End int64
}

// ReadStats describe one response.
type ReadStats struct {
	Code     int   // HTTP status; 0: no answer
	Streamed bool  // STREAMED_XOR_CHUNKS (else SAMPLES)
	Bytes    int64 // decoded response bytes: the snappy-decoded body, or the frames' data
	Samples  int   // samples returned, over all queries
}

// DefaultMaxFrameBytes bounds one frame of a streamed response: 50 MB, as
// Prometheus's own remote-read client (remote_read chunked_read_limit).
// Prometheus sends frames of about 1 MiB (--storage.remote.read-max-bytes-in-frame).
const DefaultMaxFrameBytes = 50e6

// sampleBytes is what one decoded sample costs us (window.Sample): it counts
// towards a response's byte limit along with the decoded response, so the
// limit bounds the memory a response really takes (XOR chunks decode to
// ~10× their size).
const sampleBytes = 16

// Client reads series history from a Prometheus remote-read endpoint
// (/api/v1/read). It is safe for concurrent use.
type Client struct {
	url      string
	hc       *http.Client // sends the user's headers, the credentials and User-Agent
	timeout  time.Duration
	maxFrame uint64
	// ignore is a label name left out of the answered series before they
	// are matched to the series asked for (SetIgnoreLabel), or "".
	ignore string
}

// SetIgnoreLabel makes c leave the label called name out of the series
// Prometheus answers before matching them to the series asked for: the HA
// replica label (ha.replica_label), which anomalyd removes from its series
// and the replica's Prometheus adds to its answers as an external label.
// Call it before the first Read.
func (c *Client) SetIgnoreLabel(name string) { c.ignore = name }

// NewClient returns a client for cfg. userAgent is sent as User-Agent, as
// "anomalyd/<version>".
func NewClient(cfg *config.HTTPClientConfig, userAgent string) (*Client, error) {
	hc, err := cfg.NewClient("warmup_remote_read", userAgent)
	if err != nil {
		return nil, fmt.Errorf("cannot set up warmup.remote_read: %w", err)
	}
	return &Client{url: cfg.URL, hc: hc,
		timeout: time.Duration(cfg.RemoteTimeout), maxFrame: DefaultMaxFrameBytes}, nil
}

// Read sends one remote-read request with one query per element of qs and
// returns, at index i, the samples of qs[i]: sorted by time, one per
// timestamp, within [Start, End], from the series whose label set is exactly
// qs[i].Labels (equality matchers also select series with more labels; those
// are dropped). The response may be at most maxBytes decoded bytes, counting
// 16 bytes per sample returned. The result belongs to the caller.
func (c *Client) Read(ctx context.Context, qs []Query, maxBytes int64) ([][]window.Sample, ReadStats, error) {
	return c.read(ctx, qs, &reservation{limit: maxBytes})
}

// Errors that tell the warmer what to do next.
var (
	// errTooLarge: the response exceeds its limit (warmup.max_bytes).
	errTooLarge = errors.New("response exceeds warmup.max_bytes")
	// errBudget: the bytes shared by all requests in flight are taken; the
	// response fits on its own.
	errBudget = errors.New("warmup.max_bytes in flight are taken by other requests")
)

// statusError is a non-2xx answer.
type statusError struct {
	code int
	msg  string // first line of the body
}

func (e *statusError) Error() string {
	return fmt.Sprintf("remote read answered %d %s: %s", e.code, http.StatusText(e.code), e.msg)
}

// permanentError is a failure that the same request would meet again.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// retryable reports whether err may go away if the request is sent again:
// network errors, 5xx, 429, broken streams. 4xx, wrong content types and
// responses over the limit will not.
func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code/100 == 5 || se.code == http.StatusTooManyRequests
	}
	var pe permanentError
	return !errors.As(err, &pe) && !errors.Is(err, errTooLarge)
}

// read is Read with the warmer's accounting: res counts decoded bytes
// against the response limit and the budget shared by requests in flight.
func (c *Client) read(ctx context.Context, qs []Query, res *reservation) ([][]window.Sample, ReadStats, error) {
	var st ReadStats
	body, err := encodeRequest(qs)
	if err != nil {
		return nil, st, permanentError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, st, permanentError{fmt.Errorf("cannot build remote-read request: %w", err)}
	}
	// Prometheus's remote-read client sends these (storage/remote/client.go).
	req.Header.Set("Content-Encoding", wire.EncodingSnappy)
	req.Header.Set("Accept-Encoding", wire.EncodingSnappy)
	req.Header.Set("Content-Type", wire.ContentTypeProtobuf)
	req.Header.Set(wire.HeaderReadVersion, wire.ReadVersion)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, st, fmt.Errorf("cannot send remote-read request: %w", err)
	}
	defer func() {
		// Drain a little so the connection can be reused, but never a
		// whole oversized body.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	st.Code = resp.StatusCode
	if resp.StatusCode/100 != 2 {
		return nil, st, &statusError{code: resp.StatusCode, msg: firstLine(resp.Body)}
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case err != nil:
		return nil, st, permanentError{fmt.Errorf("remote read answered with Content-Type %q: %w", resp.Header.Get("Content-Type"), err)}
	case mt == wire.ContentTypeStreamed && params["proto"] == wire.MessageChunkedReadResponse:
		st.Streamed = true
		out := make([][]window.Sample, len(qs))
		err = decodeStreamed(resp.Body, qs, out, res, c.maxFrame, c.ignore, &st)
		return out, st, err
	case mt == wire.ContentTypeProtobuf:
		out := make([][]window.Sample, len(qs))
		err = decodeSamples(resp.Body, qs, out, res, c.ignore, &st)
		return out, st, err
	default:
		return nil, st, permanentError{fmt.Errorf("remote read answered with Content-Type %q; want %s or %s; proto=%s (is warmup.remote_read.url a Prometheus /api/v1/read?)",
			resp.Header.Get("Content-Type"), wire.ContentTypeProtobuf, wire.ContentTypeStreamed, wire.MessageChunkedReadResponse)}
	}
}

// encodeRequest builds the snappy-compressed ReadRequest: one query per
// series, an equality matcher per label (__name__ included), streamed XOR
// chunks preferred (Prometheus's read path is cheapest that way) and
// SAMPLES accepted from servers that only speak that.
func encodeRequest(qs []Query) ([]byte, error) {
	rr := prompb.ReadRequest{
		Queries:               make([]*prompb.Query, len(qs)),
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES},
	}
	for i := range qs {
		q := &prompb.Query{StartTimestampMs: qs[i].Start, EndTimestampMs: qs[i].End}
		for n, v, rest := series.NextLabel(qs[i].Labels); n != ""; n, v, rest = series.NextLabel(rest) {
			q.Matchers = append(q.Matchers, &prompb.LabelMatcher{Type: prompb.LabelMatcher_EQ, Name: n, Value: v})
		}
		if len(q.Matchers) == 0 {
			return nil, fmt.Errorf("query %d has no labels", i)
		}
		rr.Queries[i] = q
	}
	b, err := rr.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot encode remote-read request: %w", err)
	}
	return snappy.Encode(nil, b), nil
}

// firstLine returns the first line of an error body, at most 1 KiB.
func firstLine(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 1024))
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	return string(bytes.TrimSpace(b))
}

// decodeSamples decodes a SAMPLES response: one snappy block holding a
// ReadResponse with one QueryResult per query, in query order.
func decodeSamples(body io.Reader, qs []Query, out [][]window.Sample, res *reservation, ignore string, st *ReadStats) error {
	// The compressed body is at most the decoded limit plus snappy's
	// worst-case overhead; reading more than that is already too much.
	// (MaxEncodedLen is -1 beyond 4 GiB: cap the limit at 1 GiB first.)
	remaining := max(res.limit-res.used, 0)
	comp, err := io.ReadAll(io.LimitReader(body, int64(snappy.MaxEncodedLen(int(min(remaining, 1<<30))))+1))
	if err != nil {
		return fmt.Errorf("cannot read remote-read response: %w", err)
	}
	n, err := snappy.DecodedLen(comp)
	if err != nil {
		return fmt.Errorf("cannot decode remote-read response: invalid snappy block: %w", err)
	}
	// Before allocating: a decompression bomb never gets its buffer.
	if err := res.take(int64(n)); err != nil {
		return fmt.Errorf("cannot decode remote-read response of %d bytes: %w", n, err)
	}
	st.Bytes = int64(n)
	raw, err := snappy.Decode(make([]byte, n), comp)
	if err != nil {
		return fmt.Errorf("cannot decode remote-read response: invalid snappy block: %w", err)
	}
	var rr prompb.ReadResponse
	if err := rr.Unmarshal(raw); err != nil {
		return fmt.Errorf("cannot decode remote-read response: %w", err)
	}
	if len(rr.Results) != len(qs) {
		return fmt.Errorf("remote read answered %d results to %d queries", len(rr.Results), len(qs))
	}
	var key []byte
	for i, qr := range rr.Results {
		if qr == nil {
			continue
		}
		for _, ts := range qr.Timeseries {
			if ts == nil {
				continue
			}
			if key = appendKey(key[:0], ts.Labels, ignore); string(key) != qs[i].Labels {
				continue
			}
			if err := res.take(int64(len(ts.Samples)) * sampleBytes); err != nil {
				return fmt.Errorf("cannot decode remote-read response: %w", err)
			}
			for _, s := range ts.Samples {
				if s.Timestamp >= qs[i].Start && s.Timestamp <= qs[i].End {
					out[i] = append(out[i], window.Sample{T: s.Timestamp, V: s.Value})
				}
			}
		}
	}
	finish(out, st)
	return nil
}

// decodeStreamed decodes a STREAMED_XOR_CHUNKS response frame by frame.
// Each frame holds a ChunkedReadResponse with (part of) one series and the
// index of the query it answers; a series may span several frames.
func decodeStreamed(body io.Reader, qs []Query, out [][]window.Sample, res *reservation, maxFrame uint64, ignore string, st *ReadStats) error {
	// Each frame's length is charged to res before its buffer is allocated.
	fr := wire.NewFrameReader(bufio.NewReaderSize(body, 32<<10), maxFrame, func(size uint64) error { return res.take(int64(size)) })
	var (
		key  []byte
		resp prompb.ChunkedReadResponse
	)
	for {
		data, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			err = fmt.Errorf("cannot read streamed remote-read response after %d bytes: %w", st.Bytes, err)
			var tooLong *wire.FrameSizeError
			if errors.As(err, &tooLong) {
				err = permanentError{err} // the same response has the same frame
			}
			return err
		}
		st.Bytes += int64(len(data))
		resp.Reset()
		if err := resp.Unmarshal(data); err != nil {
			return fmt.Errorf("cannot decode frame of streamed remote-read response: %w", err)
		}
		qi := resp.QueryIndex
		if qi < 0 || qi >= int64(len(qs)) {
			return fmt.Errorf("streamed remote-read response has query_index %d for %d queries", qi, len(qs))
		}
		q := &qs[qi]
		for _, cs := range resp.ChunkedSeries {
			if cs == nil {
				continue
			}
			if key = appendKey(key[:0], cs.Labels, ignore); string(key) != q.Labels {
				continue
			}
			for ci := range cs.Chunks {
				before := len(out[qi])
				out[qi], err = appendChunk(out[qi], &cs.Chunks[ci], q.Start, q.End)
				if err != nil {
					return fmt.Errorf("cannot decode chunk of streamed remote-read response: %w", err)
				}
				if err := res.take(int64(len(out[qi])-before) * sampleBytes); err != nil {
					return fmt.Errorf("cannot decode streamed remote-read response: %w", err)
				}
			}
		}
	}
	finish(out, st)
	return nil
}

// finish sorts and deduplicates every result and counts the samples.
func finish(out [][]window.Sample, st *ReadStats) {
	for i := range out {
		out[i] = sortUnique(out[i])
		st.Samples += len(out[i])
	}
}
