package config

import (
	"crypto/tls"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// HTTPClientConfig is how anomalyd reaches another server: a remote_write
// store or the Prometheus that warm-up reads history from. Keys mirror
// Prometheus's remote_write and remote_read blocks: url, remote_timeout and
// headers, then Prometheus's HTTP client keys inline (Client).
type HTTPClientConfig struct {
	URL           string            `yaml:"url"`
	RemoteTimeout model.Duration    `yaml:"remote_timeout"`
	Headers       map[string]string `yaml:"headers,omitempty"`
	// Client holds basic_auth, authorization, oauth2, tls_config, the proxy
	// keys, follow_redirects and enable_http2, inline as in Prometheus. Only
	// the keys clientKeys decodes can be set: the type's others
	// (bearer_token, http_headers, the *_ref keys, inline PEM, the JWT
	// grant) are unknown keys in a file, so a Config never holds them.
	Client promcfg.HTTPClientConfig `yaml:",inline"`
}

// DefaultClientConfig is the default of the Prometheus HTTP client keys.
// follow_redirects is false, unlike in Prometheus: anomalyd only POSTs, a
// 301 or 302 turns a POST into a GET without its body, and a 3xx reported
// as an error tells the user to fix the url.
var DefaultClientConfig = promcfg.HTTPClientConfig{
	FollowRedirects: false,
	EnableHTTP2:     true,
}

// proxyKeys decode the proxy keys of a client block or of its oauth2 block.
// Each field points into the value decoded, so a key left out or set to
// null keeps its value; proxy_url is parsed by apply, so that its error
// names the key.
type proxyKeys struct {
	ProxyURL             *string              `yaml:"proxy_url"`
	NoProxy              *string              `yaml:"no_proxy"`
	ProxyFromEnvironment *bool                `yaml:"proxy_from_environment"`
	ProxyConnectHeader   *promcfg.ProxyHeader `yaml:"proxy_connect_header"`
}

func newProxyKeys(p *promcfg.ProxyConfig) proxyKeys {
	raw := ""
	if p.ProxyURL.URL != nil {
		raw = p.ProxyURL.String()
	}
	return proxyKeys{ProxyURL: &raw, NoProxy: &p.NoProxy,
		ProxyFromEnvironment: &p.ProxyFromEnvironment, ProxyConnectHeader: &p.ProxyConnectHeader}
}

// apply parses proxy_url into p; key is its path in errors.
func (k proxyKeys) apply(key string, p *promcfg.ProxyConfig) error {
	if *k.ProxyURL == "" {
		p.ProxyURL = promcfg.URL{}
		return nil
	}
	u, err := url.Parse(*k.ProxyURL)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "socks5" && u.Scheme != "socks5h":
		return fmt.Errorf("%s: unsupported scheme %q (want http, https or socks5)", key, u.Scheme)
	case u.Host == "":
		return fmt.Errorf("%s: %q has no host", key, *k.ProxyURL)
	}
	p.ProxyURL = promcfg.URL{URL: u}
	return nil
}

// clientKeys decode an HTTPClientConfig: inline in the block's own decoding
// struct (RemoteWriteConfig.UnmarshalYAML, WarmupConfig.UnmarshalYAML), then
// apply. The leaves point into the config, so a key left out or set to null
// keeps its default; the blocks are decoded by apply into types that have
// only the keys anomalyd supports, so any other key is a strict-mode error
// naming it ("field password_ref not found in type config.BasicAuth").
type clientKeys struct {
	URL             *string            `yaml:"url"`
	RemoteTimeout   *model.Duration    `yaml:"remote_timeout"`
	Headers         *map[string]string `yaml:"headers"`
	BasicAuth       lazy               `yaml:"basic_auth"`
	Authorization   lazy               `yaml:"authorization"`
	OAuth2          lazy               `yaml:"oauth2"`
	TLSConfig       lazy               `yaml:"tls_config"`
	FollowRedirects *bool              `yaml:"follow_redirects"`
	EnableHTTP2     *bool              `yaml:"enable_http2"`
	Proxy           proxyKeys          `yaml:",inline"`
}

func newClientKeys(c *HTTPClientConfig) clientKeys {
	return clientKeys{
		URL: &c.URL, RemoteTimeout: &c.RemoteTimeout, Headers: &c.Headers,
		FollowRedirects: &c.Client.FollowRedirects, EnableHTTP2: &c.Client.EnableHTTP2,
		Proxy: newProxyKeys(&c.Client.ProxyConfig),
	}
}

// apply decodes the blocks of k into c. Errors name the key.
func (k *clientKeys) apply(c *HTTPClientConfig) error {
	cc := &c.Client
	if k.BasicAuth.unmarshal != nil {
		// Named BasicAuth so that strict-mode errors read "… in type config.BasicAuth".
		type BasicAuth struct {
			Username     string         `yaml:"username"`
			UsernameFile string         `yaml:"username_file"`
			Password     promcfg.Secret `yaml:"password"`
			PasswordFile string         `yaml:"password_file"`
		}
		var b BasicAuth
		if err := k.BasicAuth.unmarshal(&b); err != nil {
			return err
		}
		cc.BasicAuth = &promcfg.BasicAuth{Username: b.Username, UsernameFile: b.UsernameFile,
			Password: b.Password, PasswordFile: b.PasswordFile}
	}
	if k.Authorization.unmarshal != nil {
		type Authorization struct {
			Type            string         `yaml:"type"`
			Credentials     promcfg.Secret `yaml:"credentials"`
			CredentialsFile string         `yaml:"credentials_file"`
		}
		var a Authorization
		if err := k.Authorization.unmarshal(&a); err != nil {
			return err
		}
		cc.Authorization = &promcfg.Authorization{Type: a.Type, Credentials: a.Credentials, CredentialsFile: a.CredentialsFile}
	}
	if k.OAuth2.unmarshal != nil {
		o := new(promcfg.OAuth2)
		type OAuth2 struct {
			ClientID         string            `yaml:"client_id"`
			ClientSecret     promcfg.Secret    `yaml:"client_secret"`
			ClientSecretFile string            `yaml:"client_secret_file"`
			Scopes           []string          `yaml:"scopes"`
			TokenURL         string            `yaml:"token_url"`
			EndpointParams   map[string]string `yaml:"endpoint_params"`
			TLSConfig        lazy              `yaml:"tls_config"`
			Proxy            proxyKeys         `yaml:",inline"`
		}
		raw := OAuth2{Proxy: newProxyKeys(&o.ProxyConfig)}
		if err := k.OAuth2.unmarshal(&raw); err != nil {
			return err
		}
		o.ClientID, o.ClientSecret, o.ClientSecretFile = raw.ClientID, raw.ClientSecret, raw.ClientSecretFile
		o.Scopes, o.TokenURL, o.EndpointParams = raw.Scopes, raw.TokenURL, raw.EndpointParams
		if err := decodeTLSConfig("oauth2.tls_config", raw.TLSConfig, &o.TLSConfig); err != nil {
			return err
		}
		if err := raw.Proxy.apply("oauth2.proxy_url", &o.ProxyConfig); err != nil {
			return err
		}
		cc.OAuth2 = o
	}
	if err := decodeTLSConfig("tls_config", k.TLSConfig, &cc.TLSConfig); err != nil {
		return err
	}
	return k.Proxy.apply("proxy_url", &cc.ProxyConfig)
}

// decodeTLSConfig decodes l over *dst (keys left out keep their values);
// key is the block's path in errors.
func decodeTLSConfig(key string, l lazy, dst *promcfg.TLSConfig) error {
	if l.unmarshal == nil {
		return nil
	}
	type TLSConfig struct {
		CAFile             string `yaml:"ca_file"`
		CertFile           string `yaml:"cert_file"`
		KeyFile            string `yaml:"key_file"`
		ServerName         string `yaml:"server_name"`
		InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
		MinVersion         string `yaml:"min_version"`
		MaxVersion         string `yaml:"max_version"`
	}
	t := TLSConfig{CAFile: dst.CAFile, CertFile: dst.CertFile, KeyFile: dst.KeyFile, ServerName: dst.ServerName,
		InsecureSkipVerify: dst.InsecureSkipVerify, MinVersion: dst.MinVersion.String(), MaxVersion: dst.MaxVersion.String()}
	if err := l.unmarshal(&t); err != nil {
		return err
	}
	minV, err := parseTLSVersion(key+".min_version", t.MinVersion)
	if err != nil {
		return err
	}
	maxV, err := parseTLSVersion(key+".max_version", t.MaxVersion)
	if err != nil {
		return err
	}
	*dst = promcfg.TLSConfig{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: minV, MaxVersion: maxV}
	return nil
}

// parseTLSVersion parses TLS10 … TLS13; "" is 0 (Go's default).
func parseTLSVersion(key, s string) (promcfg.TLSVersion, error) {
	if s == "" {
		return 0, nil
	}
	if v, ok := promcfg.TLSVersions[s]; ok {
		return v, nil
	}
	return 0, fmt.Errorf("%s: unknown TLS version %q; want TLS10, TLS11, TLS12 or TLS13", key, s)
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
			return fmt.Errorf("headers: set Authorization with basic_auth, authorization or oauth2, not headers")
		case reservedHeaders[strings.ToLower(name)]:
			return fmt.Errorf("headers: %q is set by anomalyd and cannot be changed", name)
		case !validHeaderName(name):
			return fmt.Errorf("headers: invalid header name %q", name)
		case strings.ContainsAny(c.Headers[name], "\r\n\x00"):
			return fmt.Errorf("headers: value of %q contains a line break or NUL", name)
		}
	}
	cc := &c.Client
	var auth []string
	for _, a := range []struct {
		key string
		set bool
	}{{"basic_auth", cc.BasicAuth != nil}, {"authorization", cc.Authorization != nil}, {"oauth2", cc.OAuth2 != nil}} {
		if a.set {
			auth = append(auth, a.key)
		}
	}
	if len(auth) > 1 {
		return fmt.Errorf("%s and %s must not both be set", auth[0], auth[1])
	}
	if ba := cc.BasicAuth; ba != nil {
		if ba.Username != "" && ba.UsernameFile != "" {
			return fmt.Errorf("basic_auth: username and username_file must not both be set")
		}
		if ba.Password != "" && ba.PasswordFile != "" {
			return fmt.Errorf("basic_auth: password and password_file must not both be set")
		}
	}
	if a := cc.Authorization; a != nil {
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
	if o := cc.OAuth2; o != nil {
		if err := validateOAuth2(o); err != nil {
			return fmt.Errorf("oauth2: %w", err)
		}
	}
	if err := validateTLSConfig(&cc.TLSConfig); err != nil {
		return fmt.Errorf("tls_config: %w", err)
	}
	if err := cc.ProxyConfig.Validate(); err != nil {
		return err
	}
	// What is left of Prometheus's own checks; the above report the same
	// mistakes naming the key.
	return cc.Validate()
}

func validateOAuth2(o *promcfg.OAuth2) error {
	if o.ClientID == "" {
		return fmt.Errorf("client_id is required")
	}
	switch {
	case o.ClientSecret != "" && o.ClientSecretFile != "":
		return fmt.Errorf("client_secret and client_secret_file must not both be set")
	case o.ClientSecret == "" && o.ClientSecretFile == "":
		return fmt.Errorf("client_secret or client_secret_file is required")
	}
	if o.TokenURL == "" {
		return fmt.Errorf("token_url is required")
	}
	u, err := url.Parse(o.TokenURL)
	if err != nil {
		return fmt.Errorf("token_url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("token_url %q must be http:// or https:// with a host", o.TokenURL)
	}
	if err := validateTLSConfig(&o.TLSConfig); err != nil {
		return fmt.Errorf("tls_config: %w", err)
	}
	return o.ProxyConfig.Validate()
}

func validateTLSConfig(t *promcfg.TLSConfig) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("cert_file and key_file must be set together")
	}
	if t.MinVersion != 0 && t.MaxVersion != 0 && t.MaxVersion < t.MinVersion {
		return fmt.Errorf("max_version %s is below min_version %s", tlsVersionName(t.MaxVersion), tlsVersionName(t.MinVersion))
	}
	return nil
}

func tlsVersionName(v promcfg.TLSVersion) string { return tls.VersionName(uint16(v)) }

// setDirectory resolves relative file names in c against dir.
func (c *HTTPClientConfig) setDirectory(dir string) { c.Client.SetDirectory(dir) }

// files returns the files c names, by key.
func (c *HTTPClientConfig) files() [][2]string {
	var fs [][2]string
	add := func(key, path string) {
		if path != "" {
			fs = append(fs, [2]string{key, path})
		}
	}
	addTLS := func(key string, t *promcfg.TLSConfig) {
		add(key+".ca_file", t.CAFile)
		add(key+".cert_file", t.CertFile)
		add(key+".key_file", t.KeyFile)
	}
	cc := &c.Client
	if ba := cc.BasicAuth; ba != nil {
		add("basic_auth.username_file", ba.UsernameFile)
		add("basic_auth.password_file", ba.PasswordFile)
	}
	if a := cc.Authorization; a != nil {
		add("authorization.credentials_file", a.CredentialsFile)
	}
	if o := cc.OAuth2; o != nil {
		add("oauth2.client_secret_file", o.ClientSecretFile)
		addTLS("oauth2.tls_config", &o.TLSConfig)
	}
	addTLS("tls_config", &cc.TLSConfig)
	return fs
}

// NewClient returns an HTTP client for c, named name (the dialer_name of
// Prometheus's connection metrics), that sends userAgent as User-Agent and
// c.Headers on every request. Credential, CA and certificate files are read
// again when they change (the password files on every request), so a
// rotated secret is used without a restart or a reload; NewClient reads
// each once, so that a missing file fails now and names its key. The
// timeout is the caller's (RemoteTimeout per request, through the request's
// context). No proxy unless configured: like Prometheus
// (proxy_from_environment defaults to false), an HTTP_PROXY meant for other
// traffic is not used silently.
func (c *HTTPClientConfig) NewClient(name, userAgent string) (*http.Client, error) {
	// Validate a copy: c may come from a test rather than Load, and
	// validate sets the default authorization type.
	v := *c
	if a := v.Client.Authorization; a != nil {
		a2 := *a
		v.Client.Authorization = &a2
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	for _, f := range v.files() {
		if _, err := os.ReadFile(f[1]); err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", f[0], err)
		}
	}
	hc, err := promcfg.NewClientFromConfig(v.Client, name, promcfg.WithUserAgent(userAgent))
	if err != nil {
		return nil, err
	}
	if len(v.Headers) > 0 {
		h := make(http.Header, len(v.Headers))
		for k, val := range v.Headers {
			h.Set(k, val)
		}
		hc.Transport = &headerRoundTripper{header: h, next: hc.Transport}
	}
	return hc, nil
}

// headerRoundTripper sets the headers of the headers key on every request.
type headerRoundTripper struct {
	header http.Header
	next   http.RoundTripper
}

func (rt *headerRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	// A RoundTripper must not change the caller's request.
	req = req.Clone(req.Context())
	for k, v := range rt.header {
		req.Header[k] = v
	}
	return rt.next.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (rt *headerRoundTripper) CloseIdleConnections() {
	if ci, ok := rt.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
