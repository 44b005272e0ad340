package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// shop is the RED target of the run: a small HTTP service with three
// endpoints, instrumented the way a Go service usually is (requests by
// handler and code, a latency histogram by handler, requests in flight),
// under a steady open-loop load from the same process, so that the
// defaults are also judged on a service's Rate, Errors and Duration and
// not only on the machine's metrics. Its faults are the ones a service's
// owner is paged for: a slow dependency (latency), a failing one (errors)
// and lost traffic (traffic). The machine's faults reach it too: a busy
// CPU slows every handler a little.
type shop struct {
	routes   []*route
	fault    atomic.Pointer[string] // the service fault being injected, "" for none
	inflight atomic.Int64
}

// route is one endpoint: its offered load, its service time and what it
// has served.
type route struct {
	name   string
	rate   float64       // requests a second the load offers
	median time.Duration // median service time (log-normal, σ 0.5)
	errs   float64       // share of requests that fail with 500 in normal times
	work   int           // SHA-256 blocks of 16 KiB hashed per request (CPU)

	mu      sync.Mutex
	codes   [2]uint64 // 200, 500
	buckets [len(latencyBounds)]uint64
	sum     float64
	count   uint64
}

// latencyBounds are the histogram's upper bounds in seconds, Prometheus's
// client_golang DefBuckets.
var latencyBounds = [...]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// shopFaults are the service faults -faults can name, with what each does
// and the series it must move.
var shopFaults = map[string]struct {
	what    string
	signals []selector
}{
	// The histogram's buckets are not analysed by default (config's rule
	// ignoring _bucket), so latency reaches anomalyd as the rate of the sum.
	"latency": {"checkout's dependency slows down: +100 ms a request (log-normal, σ 0.3)", []selector{
		{Metric: "shop_http_request_duration_seconds_sum", Label: "handler", Value: "checkout"}}},
	"errors": {"search fails 10 % of requests with 500 instead of 0.5 %", []selector{
		{Metric: "shop_http_requests_total", Label: "code", Value: "500"}}},
	"traffic": {"cart gets a quarter of its traffic (an upstream fails)", []selector{
		{Metric: "shop_http_requests_total", Label: "handler", Value: "cart"},
		{Metric: "shop_http_request_duration_seconds_count", Label: "handler", Value: "cart"}}},
}

func newShop() *shop {
	s := &shop{routes: []*route{
		{name: "search", rate: 30, median: 8 * time.Millisecond, errs: 0.005, work: 2},
		{name: "cart", rate: 15, median: 5 * time.Millisecond, work: 1},
		{name: "checkout", rate: 4, median: 30 * time.Millisecond, errs: 0.002, work: 4},
	}}
	none := ""
	s.fault.Store(&none)
	return s
}

// inject starts fault name ("" ends it).
func (s *shop) inject(name string) { s.fault.Store(&name) }

func (s *shop) faulty(name string) bool { return *s.fault.Load() == name }

// rateOf is the load offered to r now: a quarter of it to cart during the
// traffic fault.
func (s *shop) rateOf(r *route) float64 {
	if r.name == "cart" && s.faulty("traffic") {
		return r.rate / 4
	}
	return r.rate
}

// errShare is the share of r's requests that fail now.
func (s *shop) errShare(r *route) float64 {
	if r.name == "search" && s.faulty("errors") {
		return 0.10
	}
	return r.errs
}

// delay is the service time of one request to r now, drawn with rng.
func (s *shop) delay(r *route, rng *rand.Rand) time.Duration {
	d := float64(r.median) * math.Exp(0.5*rng.NormFloat64())
	if r.name == "checkout" && s.faulty("latency") {
		d += float64(100*time.Millisecond) * math.Exp(0.3*rng.NormFloat64())
	}
	return time.Duration(min(d, float64(5*time.Second)))
}

// handler serves the three endpoints under /api/ and the metrics at /metrics.
func (s *shop) handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes {
		mux.HandleFunc("/api/"+r.name, func(w http.ResponseWriter, req *http.Request) {
			s.serve(r, w)
		})
	}
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		s.writeMetrics(w)
	})
	return mux
}

func (s *shop) serve(r *route, w http.ResponseWriter) {
	start := time.Now()
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 0))
	var buf [16 << 10]byte
	for i := range r.work {
		buf[0] = byte(i)
		sum := sha256.Sum256(buf[:])
		buf[1] = sum[0]
	}
	if d := s.delay(r, rng) - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	code := http.StatusOK
	if rng.Float64() < s.errShare(r) {
		code = http.StatusInternalServerError
	}
	w.WriteHeader(code)
	r.observe(code, time.Since(start))
}

func (r *route) observe(code int, d time.Duration) {
	sec := d.Seconds()
	r.mu.Lock()
	defer r.mu.Unlock()
	if code == http.StatusOK {
		r.codes[0]++
	} else {
		r.codes[1]++
	}
	for i, b := range latencyBounds {
		if sec <= b {
			r.buckets[i]++
		}
	}
	r.sum += sec
	r.count++
}

// writeMetrics writes the text exposition format. A code's series exists
// from the start (0 until the first such answer), as client_golang users
// do with WithLabelValues at start-up, so a fault's first errors move a
// series the detectors know rather than create one.
func (s *shop) writeMetrics(w io.Writer) {
	fmt.Fprintln(w, "# HELP shop_http_requests_total Requests answered, by handler and status code.")
	fmt.Fprintln(w, "# TYPE shop_http_requests_total counter")
	type snap struct {
		codes   [2]uint64
		buckets [len(latencyBounds)]uint64
		sum     float64
		count   uint64
	}
	snaps := make([]snap, len(s.routes))
	for i, r := range s.routes {
		r.mu.Lock()
		snaps[i] = snap{r.codes, r.buckets, r.sum, r.count}
		r.mu.Unlock()
	}
	for i, r := range s.routes {
		fmt.Fprintf(w, "shop_http_requests_total{code=\"200\",handler=%q} %d\n", r.name, snaps[i].codes[0])
		if r.errs > 0 {
			fmt.Fprintf(w, "shop_http_requests_total{code=\"500\",handler=%q} %d\n", r.name, snaps[i].codes[1])
		}
	}
	fmt.Fprintln(w, "# HELP shop_http_request_duration_seconds Time to answer a request, by handler.")
	fmt.Fprintln(w, "# TYPE shop_http_request_duration_seconds histogram")
	for i, r := range s.routes {
		for j, b := range latencyBounds {
			fmt.Fprintf(w, "shop_http_request_duration_seconds_bucket{handler=%q,le=%q} %d\n", r.name, strconv.FormatFloat(b, 'g', -1, 64), snaps[i].buckets[j])
		}
		fmt.Fprintf(w, "shop_http_request_duration_seconds_bucket{handler=%q,le=\"+Inf\"} %d\n", r.name, snaps[i].count)
		fmt.Fprintf(w, "shop_http_request_duration_seconds_sum{handler=%q} %s\n", r.name, strconv.FormatFloat(snaps[i].sum, 'g', -1, 64))
		fmt.Fprintf(w, "shop_http_request_duration_seconds_count{handler=%q} %d\n", r.name, snaps[i].count)
	}
	fmt.Fprintln(w, "# HELP shop_http_requests_in_flight Requests being served.")
	fmt.Fprintln(w, "# TYPE shop_http_requests_in_flight gauge")
	fmt.Fprintf(w, "shop_http_requests_in_flight %d\n", s.inflight.Load())
}

// serveShop serves s on ln until ctx is done, and offers it its load:
// per route, requests at exponentially distributed intervals (a Poisson
// process at the route's current rate) from a client with keep-alive, at
// most maxInFlight at once (beyond that a request waits: an open-loop
// load that a stalled service turns closed). The returned function stops
// load and server and waits for them.
func serveShop(ctx context.Context, s *shop, ln net.Listener) (stop func()) {
	srv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	const maxInFlight = 64
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: maxInFlight}}
	sem := make(chan struct{}, maxInFlight)
	for i, r := range s.routes {
		url := "http://" + ln.Addr().String() + "/api/" + r.name
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i)+1, uint64(time.Now().UnixNano())))
			next := time.Now()
			for {
				next = next.Add(time.Duration(rng.ExpFloat64() / s.rateOf(r) * float64(time.Second)))
				t := time.NewTimer(time.Until(next))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				wg.Go(func() {
					defer func() { <-sem }()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
					if resp, err := client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
		})
	}
	return func() {
		cancel()
		sctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		_ = srv.Shutdown(sctx)
		wg.Wait()
		client.CloseIdleConnections()
	}
}
