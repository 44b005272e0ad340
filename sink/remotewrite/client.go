package remotewrite

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anomalyd/anomalyd/sink/wire"
)

const (
	// maxErrBody is how much of an error response is read and logged.
	maxErrBody = 1 << 10
	// maxDrain is how much of a response body is read so that the
	// connection can be reused; a longer body closes the connection.
	maxDrain = 64 << 10
)

// storeResult is what one request came to.
type storeResult struct {
	code       int   // HTTP status; 0 when no response arrived
	err        error // transport error or timeout
	retryAfter time.Duration
	written    int64 // X-Prometheus-Remote-Write-Samples-Written
	hasWritten bool
	msg        string // first line of an error body, ≤ 1 KiB
	dur        time.Duration
}

// store POSTs one encoded batch. attempt > 0 marks a retry (Retry-Attempt).
func (w *RemoteWriter) store(body []byte, rw2 bool, attempt int) (res storeResult) {
	ctx, cancel := context.WithTimeout(w.hardCtx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return storeResult{err: err}
	}
	if rw2 {
		req.Header.Set("Content-Type", wire.ContentTypeWriteV2)
		req.Header.Set(wire.HeaderWriteVersion, wire.WriteVersion2)
	} else {
		req.Header.Set("Content-Type", wire.ContentTypeProtobuf)
		req.Header.Set(wire.HeaderWriteVersion, wire.WriteVersion1)
	}
	req.Header.Set("Content-Encoding", wire.EncodingSnappy)
	if attempt > 0 {
		req.Header.Set(wire.HeaderRetryAttempt, strconv.Itoa(attempt))
	}

	start := time.Now()
	defer func() { res.dur = time.Since(start) }()
	resp, err := w.client.Do(req)
	if err != nil {
		return storeResult{err: err}
	}
	defer resp.Body.Close()
	res.code = resp.StatusCode
	if v := resp.Header.Get(wire.HeaderSamplesWritten); v != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
			res.written, res.hasWritten = n, true
		}
	}
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		return res
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrBody))
	res.msg = firstLine(b)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		res.retryAfter = d
	}
	return res
}

// firstLine returns b up to its first line break, as valid UTF-8.
func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// parseRetryAfter parses a Retry-After value: delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3). A date in the past means "now" (0, true).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		const maxSecs = int64(1<<63-1) / int64(time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
