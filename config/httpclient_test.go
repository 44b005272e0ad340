package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

// unsupportedClientKeys are the keys of Prometheus's HTTP client config,
// relative to a remote_write entry, that anomalyd refuses as unknown keys:
// *_ref need a secret manager anomalyd does not have, bearer_token and
// bearer_token_file are deprecated in Prometheus for authorization,
// http_headers and inline PEM (ca, cert, key) are other ways to say what
// headers and the *_file keys say, and the JWT grant of oauth2 is not
// supported.
var unsupportedClientKeys = []string{
	"bearer_token", "bearer_token_file", "http_headers",
	"basic_auth.username_ref", "basic_auth.password_ref", "authorization.credentials_ref",
	"tls_config.ca", "tls_config.cert", "tls_config.key",
	"tls_config.ca_ref", "tls_config.cert_ref", "tls_config.key_ref",
	"oauth2.client_secret_ref", "oauth2.grant_type", "oauth2.signature_algorithm",
	"oauth2.iss", "oauth2.audience", "oauth2.claims", "oauth2.client_certificate_key_id",
	"oauth2.client_certificate_key", "oauth2.client_certificate_key_file", "oauth2.client_certificate_key_ref",
	"oauth2.tls_config.ca", "oauth2.tls_config.cert", "oauth2.tls_config.key",
	"oauth2.tls_config.ca_ref", "oauth2.tls_config.cert_ref", "oauth2.tls_config.key_ref",
}

// nestedYAML returns {a: {b: {c: v}}} for the key path a.b.c.
func nestedYAML(path string, v any) map[string]any {
	keys := strings.Split(path, ".")
	m := map[string]any{keys[len(keys)-1]: v}
	for i := len(keys) - 2; i >= 0; i-- {
		m = map[string]any{keys[i]: m}
	}
	return m
}

// TestUnsupportedClientKeys: each refused key is an unknown key, in a
// remote_write entry and in warmup.remote_read, named in the error.
func TestUnsupportedClientKeys(t *testing.T) {
	for _, k := range unsupportedClientKeys {
		entry := nestedYAML(k, "x")
		entry["url"] = "https://store.example/api/v1/write"
		// Set the block's required keys so that only the refused key is wrong.
		if o, ok := entry["oauth2"].(map[string]any); ok {
			o["client_id"], o["client_secret"], o["token_url"] = "i", "s", "https://auth.example/token"
		}
		for _, doc := range []map[string]any{
			{"remote_write": []any{entry}},
			{"warmup": map[string]any{"remote_read": entry}},
		} {
			b, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			leaf := k[strings.LastIndexByte(k, '.')+1:]
			_, err = Load(b)
			if err == nil || !strings.Contains(err.Error(), "field "+leaf+" not found in type config.") {
				t.Errorf("%s in\n%s\ngot error %v; want field %s not found", k, b, err, leaf)
			}
		}
	}
}

// TestClientConfigErrors: mistakes in the client keys are errors naming
// the key, in remote_write entries and in warmup.remote_read.
func TestClientConfigErrors(t *testing.T) {
	for _, tc := range []struct{ entry, err string }{
		{"basic_auth: {username: u, password: p}\noauth2: {client_id: i, client_secret: s, token_url: 'https://a/t'}", "basic_auth and oauth2 must not both be set"},
		{"authorization: {credentials: c}\noauth2: {client_id: i, client_secret: s, token_url: 'https://a/t'}", "authorization and oauth2 must not both be set"},
		{"basic_auth: {username: u, username_file: f}", "basic_auth: username and username_file must not both be set"},
		{"oauth2: {client_secret: s, token_url: 'https://a/t'}", "oauth2: client_id is required"},
		{"oauth2: {client_id: i, token_url: 'https://a/t'}", "oauth2: client_secret or client_secret_file is required"},
		{"oauth2: {client_id: i, client_secret: s, client_secret_file: f, token_url: 'https://a/t'}", "oauth2: client_secret and client_secret_file must not both be set"},
		{"oauth2: {client_id: i, client_secret: s}", "oauth2: token_url is required"},
		{"oauth2: {client_id: i, client_secret: s, token_url: 'ftp://a/t'}", `oauth2: token_url "ftp://a/t" must be http:// or https:// with a host`},
		{"oauth2: {client_id: i, client_secret: s, token_url: 'https://a/t', tls_config: {key_file: k}}", "oauth2: tls_config: cert_file and key_file must be set together"},
		{"oauth2: {client_id: i, client_secret: s, token_url: 'https://a/t', tls_config: {min_version: TLS14}}", `oauth2.tls_config.min_version: unknown TLS version "TLS14"; want TLS10, TLS11, TLS12 or TLS13`},
		{"oauth2: {client_id: i, client_secret: s, token_url: 'https://a/t', proxy_url: 'p:1'}", `oauth2.proxy_url: unsupported scheme "p" (want http, https or socks5)`},
		{"tls_config: {min_version: tls13}", `tls_config.min_version: unknown TLS version "tls13"; want TLS10, TLS11, TLS12 or TLS13`},
		{"tls_config: {max_version: TLS14}", `tls_config.max_version: unknown TLS version "TLS14"`},
		{"tls_config: {min_version: TLS13, max_version: TLS12}", "tls_config: max_version TLS 1.2 is below min_version TLS 1.3"},
		{"proxy_url: 'http://'", `proxy_url: "http://" has no host`},
		{"proxy_url: 'http://a b'", `proxy_url: parse "http://a b": invalid character " " in host name`},
		{"proxy_url: 'http://p:3128'\nproxy_from_environment: true", "if proxy_from_environment is configured, proxy_url must not be configured"},
		{"no_proxy: localhost", "if no_proxy is configured, proxy_url must also be configured"},
		{"proxy_connect_header: {X-A: [b]}", "if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured"},
		{"enable_http2: maybe", "cannot unmarshal !!str `maybe` into bool"},
		{"basic_auth: {username: [u]}", "cannot unmarshal !!seq into string"},
	} {
		indent := strings.ReplaceAll(tc.entry, "\n", "\n    ")
		for _, f := range []struct{ src, prefix string }{
			{"remote_write:\n  - url: https://store.example/api/v1/write\n    " + indent + "\n", "remote_write[0]: "},
			{"warmup:\n  remote_read:\n    url: https://prom.example/api/v1/read\n    " + indent + "\n", "warmup.remote_read: "},
		} {
			_, err := Load([]byte(f.src))
			want := f.prefix + tc.err
			switch {
			case strings.HasPrefix(tc.err, "cannot unmarshal"):
				want = tc.err // a type error names its line instead
			case strings.Contains(tc.err, "_version: unknown") || strings.HasPrefix(tc.err, "proxy_url") || strings.HasPrefix(tc.err, "oauth2.proxy_url"):
				// Found while decoding, before the block is validated.
				want = strings.Replace(want, "warmup.remote_read: ", "warmup: remote_read: ", 1)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load(%q):\ngot  %v\nwant %q", f.src, err, want)
			}
		}
	}
}

// TestClientConfigDefaults: follow_redirects is off and enable_http2 on; a
// key set to null keeps its default; proxy_url survives String and Load.
func TestClientConfigDefaults(t *testing.T) {
	c, err := Load([]byte("remote_write:\n  - url: http://a/\n    enable_http2:\n    follow_redirects:\n" +
		"  - url: http://b/\n    enable_http2: false\n    follow_redirects: true\n    proxy_url: http://p:3128\n" +
		"warmup: {remote_read: {url: 'http://c/'}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][2]bool{{false, true}, {true, false}} {
		cc := c.RemoteWrite[i].Client
		if cc.FollowRedirects != want[0] || cc.EnableHTTP2 != want[1] {
			t.Errorf("remote_write[%d]: follow_redirects %v enable_http2 %v, want %v %v", i, cc.FollowRedirects, cc.EnableHTTP2, want[0], want[1])
		}
	}
	if rr := c.Warmup.RemoteRead.Client; rr.FollowRedirects || !rr.EnableHTTP2 {
		t.Errorf("warmup.remote_read: follow_redirects %v enable_http2 %v, want false true", rr.FollowRedirects, rr.EnableHTTP2)
	}
	c2, err := Load([]byte(c.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.RemoteWrite[1].Client.ProxyURL.String(); got != "http://p:3128" {
		t.Errorf("proxy_url after String and Load: %q", got)
	}
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "anomalyd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key signed by ca, for 127.0.0.1 (server)
// or a client, as a tls.Certificate and as PEM.
func (ca *testCA) issue(t *testing.T, serial int64, server bool) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("test %d", serial)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM, keyPEM
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// loadClient loads a config file in dir with one remote_write entry (url
// and the lines of entry) and builds its client.
func loadClient(t *testing.T, dir, url, entry string) *http.Client {
	t.Helper()
	path := filepath.Join(dir, "anomalyd.yml")
	src := "remote_write:\n  - url: " + url + "\n    " + strings.ReplaceAll(entry, "\n", "\n    ") + "\n"
	writeFile(t, path, []byte(src))
	c, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := c.RemoteWrite[0].NewClient("test", "anomalyd/test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// headerRecorder answers 204 and keeps the headers of every request.
type headerRecorder struct {
	mu      sync.Mutex
	headers []http.Header
	hosts   []string
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.headers = append(h.headers, r.Header.Clone())
	h.hosts = append(h.hosts, r.Host)
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *headerRecorder) last(t *testing.T, name string) string {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.headers) == 0 {
		t.Fatal("no request arrived")
	}
	return h.headers[len(h.headers)-1].Get(name)
}

func post(t *testing.T, hc *http.Client, url string) {
	t.Helper()
	resp, err := hc.Post(url, "application/x-protobuf", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

// TestClientCredentialRotation: a password_file or credentials_file
// rewritten between two requests is sent by the second request, without
// building the client again; relative names are relative to the config
// file; headers and User-Agent go on every request.
func TestClientCredentialRotation(t *testing.T) {
	for _, tc := range []struct {
		name, entry, file string
		before, after     string // Authorization sent
	}{
		{"password_file", "basic_auth: {username: u, password_file: pw}", "pw", "Basic dTpvbGQ=", "Basic dTpuZXc="},
		{"credentials_file", "authorization: {type: Token, credentials_file: sub/tok}", "sub/tok", "Token old", "Token new"},
		{"username_file", "basic_auth: {username_file: pw, password: p}", "pw", "Basic b2xkOnA=", "Basic bmV3OnA="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, "sub"), 0o700)
			writeFile(t, filepath.Join(dir, tc.file), []byte("old\n"))
			rec := &headerRecorder{}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			hc := loadClient(t, dir, srv.URL, tc.entry+"\nheaders: {X-Scope-OrgID: tenant-1}")
			post(t, hc, srv.URL)
			if got := rec.last(t, "Authorization"); got != tc.before {
				t.Errorf("first request: Authorization %q, want %q", got, tc.before)
			}
			writeFile(t, filepath.Join(dir, tc.file), []byte("new\n"))
			post(t, hc, srv.URL)
			if got := rec.last(t, "Authorization"); got != tc.after {
				t.Errorf("after rotation: Authorization %q, want %q", got, tc.after)
			}
			if got := rec.last(t, "X-Scope-OrgID"); got != "tenant-1" {
				t.Errorf("X-Scope-OrgID %q, want tenant-1", got)
			}
			if got := rec.last(t, "User-Agent"); got != "anomalyd/test" {
				t.Errorf("User-Agent %q, want anomalyd/test", got)
			}
		})
	}
}

// TestClientFileErrors: NewClient reads every file once, so a missing one
// fails at start naming its key.
func TestClientFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ entry, want string }{
		{"basic_auth: {username: u, password_file: missing}", "cannot read basic_auth.password_file: open " + filepath.Join(dir, "missing")},
		{"basic_auth: {username_file: missing}", "cannot read basic_auth.username_file"},
		{"authorization: {credentials_file: missing}", "cannot read authorization.credentials_file"},
		{"oauth2: {client_id: i, client_secret_file: missing, token_url: 'http://127.0.0.1:1/t'}", "cannot read oauth2.client_secret_file"},
		{"oauth2: {client_id: i, client_secret: s, token_url: 'http://127.0.0.1:1/t', tls_config: {ca_file: missing}}", "cannot read oauth2.tls_config.ca_file"},
		{"tls_config: {ca_file: missing}", "cannot read tls_config.ca_file"},
		{"tls_config: {cert_file: missing, key_file: k}", "cannot read tls_config.cert_file"},
	} {
		path := filepath.Join(dir, "anomalyd.yml")
		writeFile(t, path, []byte("remote_write:\n  - url: https://127.0.0.1:1/\n    "+tc.entry+"\n"))
		c, err := LoadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", tc.entry, err)
		}
		_, err = c.RemoteWrite[0].NewClient("test", "anomalyd/test")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want %q", tc.entry, err, tc.want)
		}
	}
}

// TestClientTLS: a server whose certificate a test CA signed, and that
// requires a client certificate from the same CA, is reached with ca_file,
// cert_file and key_file; without ca_file the server is not trusted;
// min_version TLS13 does not reach a server that stops at TLS 1.2, TLS12 does.
func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	serverPair, _, _ := ca.issue(t, 2, true)
	_, clientCert, clientKey := ca.issue(t, 3, false)
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.pem)
	writeFile(t, filepath.Join(dir, "client.pem"), clientCert)
	writeFile(t, filepath.Join(dir, "client-key.pem"), clientKey)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)

	start := func(maxVersion uint16) (*httptest.Server, *headerRecorder) {
		rec := &headerRecorder{}
		srv := httptest.NewUnstartedServer(rec)
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshakes are expected
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MaxVersion: maxVersion}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv, rec
	}
	srv, rec := start(0)
	hc := loadClient(t, dir, srv.URL, "tls_config: {ca_file: ca.pem, cert_file: client.pem, key_file: client-key.pem}")
	post(t, hc, srv.URL)
	rec.mu.Lock()
	n := len(rec.headers)
	rec.mu.Unlock()
	if n != 1 {
		t.Errorf("%d requests arrived, want 1", n)
	}

	hc = loadClient(t, dir, srv.URL, "tls_config: {cert_file: client.pem, key_file: client-key.pem}")
	if _, err := hc.Post(srv.URL, "text/plain", strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("without ca_file: got %v, want an unknown authority error", err)
	}
	hc = loadClient(t, dir, srv.URL, "tls_config: {ca_file: ca.pem}")
	if _, err := hc.Post(srv.URL, "text/plain", strings.NewReader("x")); err == nil {
		t.Error("without a client certificate: the request went through")
	}

	tls12, _ := start(tls.VersionTLS12)
	entry := "tls_config: {ca_file: ca.pem, cert_file: client.pem, key_file: client-key.pem, min_version: %s}"
	hc = loadClient(t, dir, tls12.URL, fmt.Sprintf(entry, "TLS13"))
	if _, err := hc.Post(tls12.URL, "text/plain", strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("min_version TLS13 against a TLS 1.2 server: got %v, want a protocol version error", err)
	}
	post(t, loadClient(t, dir, tls12.URL, fmt.Sprintf(entry, "TLS12")), tls12.URL)
}

// TestClientOAuth2: the client credentials grant against a token endpoint;
// the token goes to the store as a bearer token, and the token is fetched
// again when client_secret_file changes.
func TestClientOAuth2(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "secret"), []byte("s1\n"))
	var mu sync.Mutex
	var forms []string
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		mu.Lock()
		forms = append(forms, fmt.Sprintf("%s %s:%s %s %s", r.PostForm.Get("grant_type"), id, secret,
			r.PostForm.Get("scope"), r.PostForm.Get("audience")))
		n := len(forms)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"token-%d","token_type":"Bearer","expires_in":3600}`, n)
	}))
	defer tokens.Close()
	rec := &headerRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()

	hc := loadClient(t, dir, srv.URL, "oauth2:\n  client_id: anomalyd\n  client_secret_file: secret\n"+
		"  scopes: [metrics.write, metrics.read]\n  token_url: "+tokens.URL+"/token\n  endpoint_params: {audience: metrics}")
	post(t, hc, srv.URL)
	post(t, hc, srv.URL)
	if got := rec.last(t, "Authorization"); got != "Bearer token-1" {
		t.Errorf("Authorization %q, want Bearer token-1 (one token for both requests)", got)
	}
	writeFile(t, filepath.Join(dir, "secret"), []byte("s2\n"))
	post(t, hc, srv.URL)
	if got := rec.last(t, "Authorization"); got != "Bearer token-2" {
		t.Errorf("after the secret changed: Authorization %q, want Bearer token-2", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"client_credentials anomalyd:s1 metrics.write metrics.read metrics",
		"client_credentials anomalyd:s2 metrics.write metrics.read metrics"}
	if strings.Join(forms, "\n") != strings.Join(want, "\n") {
		t.Errorf("token requests:\n%s\nwant\n%s", strings.Join(forms, "\n"), strings.Join(want, "\n"))
	}
}

// TestClientProxy: with proxy_url, requests go to the proxy, with the
// credentials of the proxy URL; without it they go straight to the store.
func TestClientProxy(t *testing.T) {
	proxy := &headerRecorder{}
	psrv := httptest.NewServer(proxy)
	defer psrv.Close()
	dir := t.TempDir()
	// The store's name does not resolve: only the proxy can answer.
	store := "http://store.invalid/api/v1/write"
	pu := strings.Replace(psrv.URL, "http://", "http://anomalyd:hunter2@", 1)
	hc := loadClient(t, dir, store, "proxy_url: "+pu+"\nauthorization: {credentials: tok}")
	post(t, hc, store)
	proxy.mu.Lock()
	host := proxy.hosts[0]
	proxy.mu.Unlock()
	if host != "store.invalid" {
		t.Errorf("the proxy got a request for %q, want store.invalid", host)
	}
	if got := proxy.last(t, "Proxy-Authorization"); got != "Basic YW5vbWFseWQ6aHVudGVyMg==" {
		t.Errorf("Proxy-Authorization %q, want the proxy URL's credentials", got)
	}
	if got := proxy.last(t, "Authorization"); got != "Bearer tok" {
		t.Errorf("Authorization %q, want Bearer tok", got)
	}

	// An HTTP_PROXY meant for other traffic is not used without
	// proxy_from_environment.
	t.Setenv("HTTP_PROXY", psrv.URL)
	rec := &headerRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	post(t, loadClient(t, dir, srv.URL, "enable_http2: true"), srv.URL)
	proxy.mu.Lock()
	n := len(proxy.hosts)
	proxy.mu.Unlock()
	if n != 1 {
		t.Errorf("the proxy got %d requests, want 1: HTTP_PROXY was used", n)
	}
}

// TestClientRedirects: a 3xx is returned, not followed, unless
// follow_redirects is set.
func TestClientRedirects(t *testing.T) {
	rec := &headerRecorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusPermanentRedirect)
	})
	mux.Handle("/new", rec)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := t.TempDir()
	resp, err := loadClient(t, dir, srv.URL, "headers: {X-A: b}").Post(srv.URL+"/old", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("default: got %s, want the 308 itself", resp.Status)
	}
	post(t, loadClient(t, dir, srv.URL, "follow_redirects: true"), srv.URL+"/old")
}
