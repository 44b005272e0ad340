package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// HTTPClientConfig is how anomalyd reaches another server: a remote_write
// store or the Prometheus that warm-up reads history from. Keys mirror
// Prometheus's remote_write and remote_read blocks.
type HTTPClientConfig struct {
	URL           string            `yaml:"url"`
	RemoteTimeout model.Duration    `yaml:"remote_timeout"`
	Headers       map[string]string `yaml:"headers,omitempty"`
	BasicAuth     *BasicAuth        `yaml:"basic_auth,omitempty"`
	Authorization *Authorization    `yaml:"authorization,omitempty"`
	TLSConfig     TLSConfig         `yaml:"tls_config,omitempty"`
}

// validate checks c and sets the default authorization type. Errors are
// relative to the block c was decoded from.
func (c *HTTPClientConfig) validate() error {
	if c.URL == "" {
		return fmt.Errorf("url is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("unsupported url scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("url %q has no host", c.URL)
	}
	if u.User != nil {
		// The url ends up in logs and in the remote label of our metrics.
		return fmt.Errorf("url must not contain credentials; use basic_auth")
	}
	if c.RemoteTimeout <= 0 {
		return fmt.Errorf("remote_timeout must be positive, got %s", c.RemoteTimeout)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		switch {
		case strings.EqualFold(name, "Authorization"):
			return fmt.Errorf("headers: set Authorization with basic_auth or authorization, not headers")
		case reservedHeaders[strings.ToLower(name)]:
			return fmt.Errorf("headers: %q is set by anomalyd and cannot be changed", name)
		case !validHeaderName(name):
			return fmt.Errorf("headers: invalid header name %q", name)
		case strings.ContainsAny(c.Headers[name], "\r\n\x00"):
			return fmt.Errorf("headers: value of %q contains a line break or NUL", name)
		}
	}
	if c.BasicAuth != nil && c.Authorization != nil {
		return fmt.Errorf("basic_auth and authorization must not both be set")
	}
	if ba := c.BasicAuth; ba != nil && ba.Password != "" && ba.PasswordFile != "" {
		return fmt.Errorf("basic_auth: password and password_file must not both be set")
	}
	if a := c.Authorization; a != nil {
		if a.Type == "" {
			a.Type = "Bearer"
		}
		switch {
		case strings.EqualFold(a.Type, "Basic"):
			return fmt.Errorf("authorization: type %q is not allowed; use basic_auth", a.Type)
		case !validHeaderName(a.Type):
			return fmt.Errorf("authorization: invalid type %q", a.Type)
		case a.Credentials != "" && a.CredentialsFile != "":
			return fmt.Errorf("authorization: credentials and credentials_file must not both be set")
		case a.Credentials == "" && a.CredentialsFile == "":
			return fmt.Errorf("authorization: credentials or credentials_file is required")
		}
	}
	if (c.TLSConfig.CertFile == "") != (c.TLSConfig.KeyFile == "") {
		return fmt.Errorf("tls_config: cert_file and key_file must be set together")
	}
	return nil
}

// setDirectory resolves relative file names in c against dir.
func (c *HTTPClientConfig) setDirectory(dir string) {
	join := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if c.BasicAuth != nil {
		join(&c.BasicAuth.PasswordFile)
	}
	if c.Authorization != nil {
		join(&c.Authorization.CredentialsFile)
	}
	join(&c.TLSConfig.CAFile)
	join(&c.TLSConfig.CertFile)
	join(&c.TLSConfig.KeyFile)
}

// NewClient returns an HTTP client for c that keeps up to conns idle
// connections (one per request the caller keeps in flight). No proxy: like
// Prometheus (proxy_from_environment defaults to false), an HTTP_PROXY meant
// for other traffic is not used silently. Redirects are not followed: a POST
// turned into a GET would lose its body; a 3xx is reported to the caller so
// the user fixes the URL. The timeout is the caller's (RemoteTimeout per
// request, through the request's context).
func (c *HTTPClientConfig) NewClient(conns int) (*http.Client, error) {
	tlsCfg, err := newTLSConfig(&c.TLSConfig)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
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
func newTLSConfig(c *TLSConfig) (*tls.Config, error) {
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

// StaticHeaders returns the headers to set on every request: c.Headers, then
// the Authorization header from basic_auth or authorization (files are read
// now, once).
func (c *HTTPClientConfig) StaticHeaders() (http.Header, error) {
	h := make(http.Header, len(c.Headers)+1)
	for k, v := range c.Headers {
		h.Set(k, v)
	}
	if c.BasicAuth != nil && c.Authorization != nil {
		return nil, errors.New("at most one of basic_auth and authorization may be set")
	}
	if ba := c.BasicAuth; ba != nil {
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
	if a := c.Authorization; a != nil {
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
