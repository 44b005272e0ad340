package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/anomalyd/anomalyd/config"
)

// Remote-write HTTP header names and values (remote_write_spec.md,
// remote_write_spec_2_0.md).
const (
	hdrVersion        = "X-Prometheus-Remote-Write-Version"
	hdrSamplesWritten = "X-Prometheus-Remote-Write-Samples-Written"
	hdrRetryAttempt   = "Retry-Attempt"
	versionRW1        = "0.1.0"
	versionRW2        = "2.0.0"
	contentTypeRW1    = "application/x-protobuf"
	contentTypeRW2    = "application/x-protobuf;proto=io.prometheus.write.v2.Request"

	// maxErrBody is how much of an error response is read and logged.
	maxErrBody = 1 << 10
	// maxDrain is how much of a response body is read so that the
	// connection can be reused; a longer body closes the connection.
	maxDrain = 64 << 10
)

// newHTTPClient returns the client of one writer. Each send queue has at
// most one request in flight, so one idle connection per queue is kept.
// No proxy: like Prometheus (proxy_from_environment defaults to false), an
// HTTP_PROXY meant for other traffic is not used silently.
// Redirects are not followed: a POST turned into a GET would lose the batch;
// a 3xx is reported as a rejection so the user fixes the URL.
func newHTTPClient(cfg *config.RemoteWriteConfig, queues int) (*http.Client, error) {
	tlsCfg, err := newTLSConfig(&cfg.TLSConfig)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          queues,
		MaxIdleConnsPerHost:   queues,
		IdleConnTimeout:       5 * time.Minute,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// newTLSConfig loads the CA and the client certificate once, at start.
func newTLSConfig(c *config.TLSConfig) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // the user asked for it
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read tls_config.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_config.ca_file %q holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls_config.cert_file and tls_config.key_file must be set together")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load tls_config.cert_file / key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// staticHeaders returns the headers set on every request: cfg.Headers, then
// the Authorization header from basic_auth or authorization (files are read
// now, once).
func staticHeaders(cfg *config.RemoteWriteConfig) (http.Header, error) {
	h := make(http.Header, len(cfg.Headers)+1)
	for k, v := range cfg.Headers {
		h.Set(k, v)
	}
	if cfg.BasicAuth != nil && cfg.Authorization != nil {
		return nil, errors.New("at most one of basic_auth and authorization may be set")
	}
	if ba := cfg.BasicAuth; ba != nil {
		pw := ba.Password
		if ba.PasswordFile != "" {
			b, err := os.ReadFile(ba.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("cannot read basic_auth.password_file: %w", err)
			}
			pw = strings.TrimSpace(string(b))
		}
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(ba.Username+":"+pw)))
	}
	if a := cfg.Authorization; a != nil {
		typ := a.Type
		if typ == "" {
			typ = "Bearer"
		}
		cred := a.Credentials
		if a.CredentialsFile != "" {
			b, err := os.ReadFile(a.CredentialsFile)
			if err != nil {
				return nil, fmt.Errorf("cannot read authorization.credentials_file: %w", err)
			}
			cred = strings.TrimSpace(string(b))
		}
		h.Set("Authorization", typ+" "+cred)
	}
	return h, nil
}

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
	for k, v := range w.header {
		req.Header[k] = v
	}
	if rw2 {
		req.Header.Set("Content-Type", contentTypeRW2)
		req.Header.Set(hdrVersion, versionRW2)
	} else {
		req.Header.Set("Content-Type", contentTypeRW1)
		req.Header.Set(hdrVersion, versionRW1)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("User-Agent", "anomalyd/"+Version)
	if attempt > 0 {
		req.Header.Set(hdrRetryAttempt, strconv.Itoa(attempt))
	}

	start := time.Now()
	defer func() { res.dur = time.Since(start) }()
	resp, err := w.client.Do(req)
	if err != nil {
		return storeResult{err: err}
	}
	defer resp.Body.Close()
	res.code = resp.StatusCode
	if v := resp.Header.Get(hdrSamplesWritten); v != "" {
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
