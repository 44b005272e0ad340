package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrapeShop reads s's /metrics over a real connection and returns its
// body and every sample by its series (name{labels} as written).
func scrapeShop(t *testing.T, addr string) ([]byte, map[string]float64) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return body, samples
}

// The service under its own load answers requests at the offered rate and
// exposes them in a format Prometheus's own linter accepts, with a
// consistent histogram.
func TestShopServesItsLoad(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (Debian's prometheus package) is needed: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newShop()
	stop := serveShop(context.Background(), s, ln)
	time.Sleep(2 * time.Second)
	stop() // every request answered; scrape what they left on a second server
	srv := httptest.NewServer(s.handler())
	defer srv.Close()

	body, got := scrapeShop(t, srv.Listener.Addr().String())
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n%s", err, out, body)
	}
	for _, r := range s.routes {
		ok := got[`shop_http_requests_total{code="200",handler="`+r.name+`"}`]
		fail := got[`shop_http_requests_total{code="500",handler="`+r.name+`"}`]
		count := got[`shop_http_request_duration_seconds_count{handler="`+r.name+`"}`]
		inf := got[`shop_http_request_duration_seconds_bucket{handler="`+r.name+`",le="+Inf"}`]
		// Two seconds of a Poisson process at rate λ: 2λ ± √(2λ).
		n, sd := 2*r.rate, math.Sqrt(2*r.rate)
		if lo, hi := max(1, n-4*sd), n+5*sd; ok+fail < lo || ok+fail > hi {
			t.Errorf("%s answered %v requests in 2 s at %v a second, want %.0f to %.0f", r.name, ok+fail, r.rate, lo, hi)
		}
		if count != ok+fail || inf != count {
			t.Errorf("%s: %v requests answered, histogram count %v, +Inf bucket %v: want all equal", r.name, ok+fail, count, inf)
		}
		prev := 0.0
		for _, b := range latencyBounds {
			v := got[`shop_http_request_duration_seconds_bucket{handler="`+r.name+`",le="`+strconv.FormatFloat(b, 'g', -1, 64)+`"}`]
			if v < prev || v > count {
				t.Errorf("%s: bucket le=%v is %v after %v (count %v): buckets must be cumulative", r.name, b, v, prev, count)
			}
			prev = v
		}
		if mean := got[`shop_http_request_duration_seconds_sum{handler="`+r.name+`"}`] / count; mean < r.median.Seconds()/2 || mean > 5*r.median.Seconds() {
			t.Errorf("%s: mean latency %.4f s, want about the log-normal mean %.4f s", r.name, mean, 1.13*r.median.Seconds())
		}
	}
	if v, ok := got["shop_http_requests_in_flight"]; !ok || v != 0 {
		t.Errorf("in flight after the load stopped: %v (present %v), want 0", v, ok)
	}
}

// Each service fault changes what it says it changes, only while it is
// injected, and only on its route.
func TestShopFaults(t *testing.T) {
	s := newShop()
	byName := func(name string) *route {
		i := slices.IndexFunc(s.routes, func(r *route) bool { return r.name == name })
		return s.routes[i]
	}
	search, cart, checkout := byName("search"), byName("cart"), byName("checkout")
	medianDelay := func(r *route) time.Duration {
		rng := rand.New(rand.NewPCG(1, 2))
		d := make([]time.Duration, 1001)
		for i := range d {
			d[i] = s.delay(r, rng)
		}
		slices.Sort(d)
		return d[500]
	}
	check := func(fault string) {
		t.Helper()
		wantErr, wantRate, slow := search.errs, cart.rate, false
		switch fault {
		case "errors":
			wantErr = 0.10
		case "traffic":
			wantRate = cart.rate / 4
		case "latency":
			slow = true
		}
		if got := s.errShare(search); got != wantErr {
			t.Errorf("fault %q: search fails %v of requests, want %v", fault, got, wantErr)
		}
		if got := s.errShare(checkout); got != checkout.errs {
			t.Errorf("fault %q: checkout fails %v of requests, want its usual %v", fault, got, checkout.errs)
		}
		if got := s.rateOf(cart); got != wantRate {
			t.Errorf("fault %q: cart is offered %v requests a second, want %v", fault, got, wantRate)
		}
		if got := s.rateOf(search); got != search.rate {
			t.Errorf("fault %q: search is offered %v requests a second, want its usual %v", fault, got, search.rate)
		}
		m := medianDelay(checkout)
		if slow && m < 120*time.Millisecond || !slow && (m < 25*time.Millisecond || m > 35*time.Millisecond) {
			t.Errorf("fault %q: checkout's median service time %v (usual median %v, +100 ms while slow)", fault, m, checkout.median)
		}
		if m := medianDelay(search); m < 6*time.Millisecond || m > 10*time.Millisecond {
			t.Errorf("fault %q: search's median service time %v, want about its usual %v", fault, m, search.median)
		}
	}
	check("")
	for name := range shopFaults {
		s.inject(name)
		check(name)
		s.inject("")
		check("")
	}

	// Through the handler: during the errors fault search answers 500 to
	// about a tenth of the requests, and the series counts them.
	s.inject("errors")
	search.median = 0 // no need to wait here
	h := s.handler()
	for range 2000 {
		h.ServeHTTP(discardWriter{}, httpGet(t, "/api/search"))
	}
	search.mu.Lock()
	fails := search.codes[1]
	search.mu.Unlock()
	if fails < 140 || fails > 260 {
		t.Errorf("errors fault: %d of 2000 search requests failed, want about 200", fails)
	}
}

func httpGet(t *testing.T, path string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
