package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/anomalyd/anomalyd/config"
)

// webRequest is one request every endpoint test sends, and the status
// the endpoint answers an authorised client.
type webRequest struct {
	method, path string
	body         []byte // snappy protobuf when not nil
	want         int
}

// webEndpoints are one request to every endpoint, with the status a
// client that may use it gets (lifecycle and pprof enabled).
func webEndpoints(t *testing.T) []webRequest {
	t.Helper()
	ts := prompb.TimeSeries{
		Labels:  []prompb.Label{{Name: "__name__", Value: "web_gauge"}, {Name: "job", Value: "t"}},
		Samples: []prompb.Sample{{Timestamp: time.Now().UnixMilli(), Value: 1}},
	}
	write, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ts}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	read, err := (&prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: now - 60_000, EndTimestampMs: now,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "anomaly_score"}},
	}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return []webRequest{
		{http.MethodPost, "/api/v1/write", snappy.Encode(nil, write), http.StatusNoContent},
		{http.MethodPost, "/api/v1/read", snappy.Encode(nil, read), http.StatusOK},
		{http.MethodGet, "/metrics", nil, http.StatusOK},
		{http.MethodGet, "/api/v1/incidents", nil, http.StatusOK},
		{http.MethodGet, "/api/v1/anomalies", nil, http.StatusOK},
		{http.MethodGet, "/api/v1/series?match[]=up", nil, http.StatusOK},
		{http.MethodGet, "/api/v1/detail?match[]=web_gauge", nil, http.StatusNotFound}, // one sample: no verdict yet
		{http.MethodGet, "/api", nil, http.StatusOK},
		{http.MethodGet, "/static/app.js", nil, http.StatusOK},
		{http.MethodGet, "/api/v1/status/config", nil, http.StatusOK},
		{http.MethodGet, "/-/healthy", nil, http.StatusOK},
		{http.MethodGet, "/-/ready", nil, http.StatusOK},
		{http.MethodPost, "/-/reload", nil, http.StatusOK},
		{http.MethodGet, "/debug/pprof/", nil, http.StatusOK},
		{http.MethodGet, "/", nil, http.StatusOK},
		{http.MethodGet, "/nope", nil, http.StatusNotFound},
	}
}

// webDo sends r to base with client, with basic auth when user is not
// empty, and returns the status, the WWW-Authenticate header and the body.
func webDo(t *testing.T, client *http.Client, base string, r webRequest, user, pass string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

// writeWebConfig writes a web config file (node_exporter's format) into
// a new directory and returns its path.
func writeWebConfig(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "web-config.yml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// bcryptHash hashes a test password at bcrypt's lowest cost, which is
// as valid as any other and keeps the test fast.
func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// TestWebBasicAuth: with basic_auth_users in --web.config.file, every
// endpoint answers 401 (with a Basic challenge) to a request without
// credentials or with a wrong password, and its usual status to the
// user's.
func TestWebBasicAuth(t *testing.T) {
	webCfg := writeWebConfig(t, "basic_auth_users:\n  prometheus: "+bcryptHash(t, "s3cret")+"\n")
	// The history on, so that /api/v1/read is served too.
	_, addr, _ := startServerWith(t, "history: {retention: 1h}\n", serverOptions{webConfigFile: webCfg, enableLifecycle: true, enablePprof: true})
	base := "http://" + addr
	for _, r := range webEndpoints(t) {
		for _, cred := range []struct{ user, pass string }{{"", ""}, {"prometheus", "wrong"}, {"nobody", "s3cret"}} {
			code, challenge, body := webDo(t, http.DefaultClient, base, r, cred.user, cred.pass)
			if code != http.StatusUnauthorized || !strings.HasPrefix(challenge, "Basic") {
				t.Errorf("%s %s as %q/%q: %d (WWW-Authenticate %q), want 401 with a Basic challenge: %s",
					r.method, r.path, cred.user, cred.pass, code, challenge, firstLines(body, 3))
			}
		}
		if code, _, body := webDo(t, http.DefaultClient, base, r, "prometheus", "s3cret"); code != r.want {
			t.Errorf("%s %s with credentials: %d, want %d: %s", r.method, r.path, code, r.want, firstLines(body, 3))
		}
	}
}

// TestWebTLS: with tls_server_config, anomalyd serves HTTPS with the
// configured certificate: a client trusting the test CA gets 200 (and
// basic auth applies inside TLS), one that does not fails the handshake,
// and plain HTTP is refused.
func TestWebTLS(t *testing.T) {
	dir := t.TempDir()
	caPool := writeTestCerts(t, dir)
	webCfg := filepath.Join(dir, "web-config.yml")
	text := "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: " + bcryptHash(t, "s3cret") + "\n"
	if err := os.WriteFile(webCfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr, _ := startServerWith(t, "", serverOptions{webConfigFile: webCfg})
	base := "https://" + addr
	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	healthy := webRequest{method: http.MethodGet, path: "/-/healthy"}
	if code, _, body := webDo(t, trusting, base, healthy, "prometheus", "s3cret"); code != http.StatusOK {
		t.Errorf("GET /-/healthy over TLS with credentials: %d, want 200: %s", code, body)
	}
	if code, _, _ := webDo(t, trusting, base, healthy, "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /-/healthy over TLS without credentials: %d, want 401", code)
	}

	// A client with an empty trust store does not know the test CA.
	untrusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}
	_, err := untrusting.Get(base + "/-/healthy")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("GET over TLS without trusting the CA: %v, want an unknown authority error", err)
	}

	plain := &http.Client{Timeout: 10 * time.Second}
	resp, err := plain.Get("http://" + addr + "/-/healthy")
	if err != nil {
		t.Fatalf("plain HTTP to the TLS port: %v, want Go's 400 answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: %d, want 400", resp.StatusCode)
	}
}

// writeTestCerts writes a new CA's certificate (ca.crt) and a server
// certificate for 127.0.0.1 it signed (server.crt, server.key) into dir,
// and returns a pool holding the CA.
func writeTestCerts(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "anomalyd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "anomalyd"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.crt":     {Type: "CERTIFICATE", Bytes: caDER},
		"server.crt": {Type: "CERTIFICATE", Bytes: der},
		"server.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

// TestWebLifecycle: POST /-/reload answers 403 naming the flag without
// --web.enable-lifecycle, and reloads with it; SIGHUP's path (reload)
// works either way.
func TestWebLifecycle(t *testing.T) {
	srv, addr, _ := startServerWith(t, "", serverOptions{})
	base := "http://" + addr
	code, body := httpDo(t, http.MethodPost, base+"/-/reload", nil)
	if code != http.StatusForbidden || !strings.Contains(body, "--web.enable-lifecycle") {
		t.Errorf("POST /-/reload without --web.enable-lifecycle: %d %q, want 403 naming the flag", code, body)
	}
	if code, _ := httpDo(t, http.MethodPut, base+"/-/reload", nil); code != http.StatusForbidden {
		t.Errorf("PUT /-/reload without --web.enable-lifecycle: %d, want 403", code)
	}
	if code, _ := httpDo(t, http.MethodGet, base+"/-/reload", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload: %d, want 405", code)
	}
	if err := srv.reload(); err != nil {
		t.Errorf("reload (SIGHUP) without --web.enable-lifecycle: %v", err)
	}
	if _, idx := httpDo(t, http.MethodGet, base+"/api", nil); !strings.Contains(idx, "--web.enable-lifecycle") {
		t.Errorf("the endpoint list does not say /-/reload needs --web.enable-lifecycle:\n%s", idx)
	}

	_, addr, _ = startServerWith(t, "", serverOptions{enableLifecycle: true})
	if code, body := httpDo(t, http.MethodPost, "http://"+addr+"/-/reload", nil); code != http.StatusOK {
		t.Errorf("POST /-/reload with --web.enable-lifecycle: %d %s, want 200", code, body)
	}
}

// TestWebPprof: /debug/pprof/ is 404 without --web.enable-pprof, served
// with it.
func TestWebPprof(t *testing.T) {
	_, addr, _ := startServerWith(t, "", serverOptions{})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := httpDo(t, http.MethodGet, "http://"+addr+path, nil); code != http.StatusNotFound {
			t.Errorf("GET %s without --web.enable-pprof: %d, want 404", path, code)
		}
	}
	_, addr, _ = startServerWith(t, "", serverOptions{enablePprof: true})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := httpDo(t, http.MethodGet, "http://"+addr+path, nil); code != http.StatusOK {
			t.Errorf("GET %s with --web.enable-pprof: %d, want 200", path, code)
		}
	}
}

// TestWebConfigInvalid: a web config that cannot serve (missing, not
// YAML, a password that is not a bcrypt hash, a certificate that does not
// exist) stops the start with an error naming --web.config.file, from
// newServer and from the command.
func TestWebConfigInvalid(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"missing":      "",
		"not YAML":     "basic_auth_users: [\n",
		"unknown key":  "basic_auth_user:\n  a: b\n",
		"plain pass":   "basic_auth_users:\n  prometheus: s3cret\n",
		"missing cert": "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
	} {
		file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yml")
		if name != "missing" {
			if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := newServer(config.Default(), serverOptions{webConfigFile: file}, zap.NewNop())
		if err == nil || !strings.Contains(err.Error(), "--web.config.file") {
			t.Errorf("%s: newServer: %v, want an error naming --web.config.file", name, err)
		}
		var out, errOut bytes.Buffer
		code := run([]string{"--web.config.file=" + file, "--web.listen-address=127.0.0.1:0", "--storage.path="}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), "--web.config.file") {
			t.Errorf("%s: anomalyd exit %d, want 1 with an error naming --web.config.file:\n%s", name, code, errOut.String())
		}
	}
}

// TestSlogBridge: the web package's slog lines come out through zap at
// the matching level, with their attributes and groups as fields, and
// lines below the zap level are dropped.
func TestSlogBridge(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := newSlogLogger(zap.New(core))
	l.Debug("hidden")
	l.Info("TLS is enabled.", "http2", true, "address", "127.0.0.1:9700")
	l.With("component", "web").WithGroup("g").Error("Unable to parse configuration", "err", errors.New("boom"), slog.Int("n", 3))
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want 2: %v", len(entries), entries)
	}
	if e := entries[0]; e.Level != zapcore.InfoLevel || e.Message != "TLS is enabled." ||
		e.ContextMap()["http2"] != true || e.ContextMap()["address"] != "127.0.0.1:9700" {
		t.Errorf("info entry: %v %q %v", e.Level, e.Message, e.ContextMap())
	}
	if e := entries[1]; e.Level != zapcore.ErrorLevel || e.ContextMap()["component"] != "web" ||
		e.ContextMap()["g.err"] != "boom" || e.ContextMap()["g.n"] != int64(3) {
		t.Errorf("error entry: %v %q %v", e.Level, e.Message, e.ContextMap())
	}
}
