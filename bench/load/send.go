package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// sender posts requests, one HTTP connection per shard as Prometheus's
// remote-write shards do: series i always goes through connection i % C and
// a connection has at most one request in flight, so a series' samples
// arrive in order.
type sender struct {
	url             string
	protocol        int
	clients         []*http.Client
	maxAttempts     int
	minBackoff      time.Duration
	maxBackoff      time.Duration
	honorRetryAfter bool
}

func newSender(url string, protocol, conns, maxAttempts int, timeout time.Duration, honorRetryAfter bool) *sender {
	s := &sender{url: url, protocol: protocol, maxAttempts: maxAttempts, minBackoff: 5 * time.Millisecond,
		maxBackoff: 500 * time.Millisecond, honorRetryAfter: honorRetryAfter}
	for range conns {
		// One transport per connection: MaxConnsPerHost 1 pins the
		// connection, keep-alive reuses it.
		tr := &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
			IdleConnTimeout:     5 * time.Minute,
			// A request body (~55 KiB at 2000 samples) in one write
			// instead of 4 KiB pieces: fewer syscalls for the loader.
			WriteBufferSize: 256 << 10,
		}
		s.clients = append(s.clients, &http.Client{Transport: tr, Timeout: timeout})
	}
	return s
}

func (s *sender) close() {
	for _, c := range s.clients {
		c.CloseIdleConnections()
	}
}

// stats are the counts of one phase on one connection; merge sums them.
type stats struct {
	Requests         int64 // requests finished (accepted or failed)
	Accepted         int64
	Failed           int64 // 4xx other than 429, or attempts exhausted
	Attempts         int64
	Retries          int64
	SamplesSent      int64 // samples in finished requests
	SamplesAccepted  int64
	SamplesFailed    int64
	SamplesConfirmed int64 // RW2: X-Prometheus-Remote-Write-Samples-Written
	Unconfirmed      int64 // RW2: 2xx without that header
	Bytes            int64 // request bodies sent, retries included
	Codes            map[int]int64
	Latencies        []time.Duration // one per attempt
}

func newStats() *stats { return &stats{Codes: map[int]int64{}} }

func (s *stats) merge(o *stats) {
	s.Requests += o.Requests
	s.Accepted += o.Accepted
	s.Failed += o.Failed
	s.Attempts += o.Attempts
	s.Retries += o.Retries
	s.SamplesSent += o.SamplesSent
	s.SamplesAccepted += o.SamplesAccepted
	s.SamplesFailed += o.SamplesFailed
	s.SamplesConfirmed += o.SamplesConfirmed
	s.Unconfirmed += o.Unconfirmed
	s.Bytes += o.Bytes
	for k, v := range o.Codes {
		s.Codes[k] += v
	}
	s.Latencies = append(s.Latencies, o.Latencies...)
}

// codeNetworkError stands for "no HTTP status" in stats.Codes.
const codeNetworkError = 0

// send posts req on connection c until it is accepted (2xx), fails for
// good (4xx other than 429) or maxAttempts are used up. 5xx, 429 and network
// errors are retried after a backoff doubling from 5 ms to 500 ms with
// jitter (Retry-After instead, with -honor-retry-after).
func (s *sender) send(ctx context.Context, c int, req Request, st *stats) {
	backoff := s.minBackoff
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		code, written, hasWritten, retryAfter, err := s.post(ctx, c, req.Body)
		st.Latencies = append(st.Latencies, time.Since(t0))
		st.Attempts++
		st.Bytes += int64(len(req.Body))
		if err != nil {
			code = codeNetworkError
		}
		st.Codes[code]++
		switch {
		case err == nil && code/100 == 2:
			st.Requests++
			st.Accepted++
			st.SamplesSent += int64(req.Samples)
			st.SamplesAccepted += int64(req.Samples)
			if s.protocol == 2 {
				if hasWritten {
					st.SamplesConfirmed += written
				} else {
					st.Unconfirmed++
				}
			}
			return
		case err == nil && code/100 != 5 && code != http.StatusTooManyRequests,
			attempt >= s.maxAttempts, ctx.Err() != nil:
			st.Requests++
			st.Failed++
			st.SamplesSent += int64(req.Samples)
			st.SamplesFailed += int64(req.Samples)
			return
		}
		st.Retries++
		wait := backoff/2 + rand.N(backoff/2+1)
		if s.honorRetryAfter && retryAfter > 0 {
			wait = retryAfter
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, s.maxBackoff)
	}
}

func (s *sender) post(ctx context.Context, c int, body []byte) (code int, written int64, hasWritten bool, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, false, 0, err
	}
	h := req.Header
	h.Set("Content-Encoding", "snappy")
	h.Set("User-Agent", "anomalyd-bench-load/1")
	if s.protocol == 2 {
		h.Set("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
		h.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	} else {
		h.Set("Content-Type", "application/x-protobuf")
		h.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	resp, err := s.clients[c].Do(req)
	if err != nil {
		return 0, 0, false, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if v := resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			written, hasWritten = n, true
		}
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if sec, err := strconv.Atoi(v); err == nil && sec > 0 {
			retryAfter = min(time.Duration(sec)*time.Second, 10*time.Second)
		}
	}
	return resp.StatusCode, written, hasWritten, retryAfter, nil
}

// sendRound sends one round on every connection in parallel and returns
// when all of it is answered.
func (s *sender) sendRound(ctx context.Context, rd *Round, st *stats) {
	per := make([]*stats, len(rd.Conns))
	var wg sync.WaitGroup
	for c := range rd.Conns {
		per[c] = newStats()
		wg.Go(func() {
			for _, q := range rd.Conns[c] {
				if ctx.Err() != nil {
					return
				}
				s.send(ctx, c, q, per[c])
			}
		})
	}
	wg.Wait()
	for _, p := range per {
		st.merge(p)
	}
}

// roundGate decides, in the timed phase, which rounds a connection may
// start: all until the deadline; after it, only rounds some connection has
// already started, so every connection ends after the same round and the
// timed phase holds whole rounds.
type roundGate struct {
	mu         sync.Mutex
	deadline   time.Time // zero: no deadline
	stop       int       // last round allowed once the deadline passed; -1 before
	maxStarted int
}

func newRoundGate(deadline time.Time) *roundGate {
	return &roundGate{deadline: deadline, stop: -1, maxStarted: -1}
}

func (g *roundGate) begin(r int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stop < 0 && !g.deadline.IsZero() && !time.Now().Before(g.deadline) {
		g.stop = g.maxStarted
	}
	if g.stop >= 0 {
		return r <= g.stop
	}
	g.maxStarted = max(g.maxStarted, r)
	return true
}

// rounds returns how many rounds every connection completed.
func (g *roundGate) rounds(first int) int {
	if g.stop >= 0 {
		return g.stop - first + 1
	}
	return g.maxStarted - first + 1
}

// sendFree sends rounds as fast as the receiver takes them: each connection
// goes through its share of the rounds in order, without waiting for the
// other connections (Prometheus's shards do not wait for each other). It
// returns the rounds every connection completed.
func (s *sender) sendFree(ctx context.Context, rounds []*Round, gate *roundGate, st *stats) int {
	if len(rounds) == 0 {
		return 0
	}
	conns := len(rounds[0].Conns)
	per := make([]*stats, conns)
	var wg sync.WaitGroup
	for c := range conns {
		per[c] = newStats()
		wg.Go(func() {
			for _, rd := range rounds {
				if ctx.Err() != nil || !gate.begin(rd.Index) {
					return
				}
				for _, q := range rd.Conns[c] {
					s.send(ctx, c, q, per[c])
				}
			}
		})
	}
	wg.Wait()
	for _, p := range per {
		st.merge(p)
	}
	return gate.rounds(rounds[0].Index)
}

// counterPoller sums counters scraped from a /metrics endpoint.
type counterPoller struct {
	url    string
	names  [][]byte
	client *http.Client
}

func newCounterPoller(url string, names []string) *counterPoller {
	p := &counterPoller{url: url, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	for _, n := range names {
		p.names = append(p.names, []byte(n))
	}
	return p
}

// read scrapes once and returns the sum of the counters, how long the
// scrape took and its size.
func (p *counterPoller) read(ctx context.Context) (sum float64, took time.Duration, size int64, err error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cannot scrape %s: %w", p.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, 0, fmt.Errorf("cannot scrape %s: status %d", p.url, resp.StatusCode)
	}
	cr := &countingReader{r: resp.Body}
	sum, found, err := sumCounters(cr, p.names)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cannot scrape %s: %w", p.url, err)
	}
	if !found {
		return 0, 0, 0, fmt.Errorf("scrape of %s has none of the counters %q (-delay-metrics)", p.url, p.names)
	}
	return sum, time.Since(t0), cr.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// sumCounters sums the values of every sample of the named metrics in a
// text-format exposition. Lines longer than the buffer are skipped.
func sumCounters(r io.Reader, names [][]byte) (sum float64, found bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	skipping := false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			skipping = true
			continue
		}
		if !skipping && len(line) > 0 && line[0] != '#' {
			if v, ok := sampleValue(line, names); ok {
				sum += v
				found = true
			}
		}
		skipping = false
		if err == io.EOF {
			return sum, found, nil
		}
		if err != nil {
			return 0, false, err
		}
	}
}

// sampleValue parses `name{labels} value [timestamp]` when name is one of
// names.
func sampleValue(line []byte, names [][]byte) (float64, bool) {
	line = bytes.TrimRight(line, "\r\n")
	i := bytes.IndexAny(line, "{ ")
	if i < 0 {
		return 0, false
	}
	if !slices.ContainsFunc(names, func(n []byte) bool { return bytes.Equal(line[:i], n) }) {
		return 0, false
	}
	rest := line[i:]
	if rest[0] == '{' {
		j := bytes.LastIndexByte(rest, '}')
		if j < 0 {
			return 0, false
		}
		rest = rest[j+1:]
	}
	f := bytes.Fields(rest)
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(f[0]), 64)
	return v, err == nil
}

// delayMeter measures the score delay round by round: the time from a
// round's last answer until the receiver's counters (-delay-metrics) have
// grown by the round's accepted samples. It measures growth, not absolute
// values, so samples a receiver never counts (anomalyd does not count the
// first sample of a counter series, which only starts its rate) do not
// matter once every series exists.
type delayMeter struct {
	poller *counterPoller
	rounds int
	// upper: the end of the first scrape that saw the growth; lower: the
	// end of the last one that did not (or the last answer). The counters
	// are read at the end of a scrape, so the delay is in [lower, upper].
	upper, lower []time.Duration
	scrapes      []time.Duration
	scrapeBytes  int64
	timeouts     int
}

// settle scrapes until two scrapes in a row agree (at most 30 s) and
// returns the value.
func (m *delayMeter) settle(ctx context.Context) (float64, error) {
	prev := math.NaN()
	deadline := time.Now().Add(30 * time.Second)
	for ctx.Err() == nil {
		v, took, n, err := m.poller.read(ctx)
		if err != nil {
			return 0, err
		}
		m.scrapes, m.scrapeBytes = append(m.scrapes, took), n
		if v == prev || time.Now().After(deadline) {
			return v, nil
		}
		prev = v
		time.Sleep(10 * time.Millisecond)
	}
	return 0, ctx.Err()
}

// measure settles the counters, calls send (which sends a round and
// returns its accepted samples), then scrapes until the counters grew by
// that much, for at most limit.
func (m *delayMeter) measure(ctx context.Context, send func() int64, limit time.Duration) error {
	before, err := m.settle(ctx)
	if err != nil {
		return err
	}
	n := send()
	acked := time.Now()
	m.rounds++
	lower := acked
	for time.Since(acked) < limit && ctx.Err() == nil {
		v, took, size, err := m.poller.read(ctx)
		if err != nil {
			return err
		}
		m.scrapes, m.scrapeBytes = append(m.scrapes, took), size
		if v >= before+float64(n) {
			m.upper = append(m.upper, time.Since(acked))
			m.lower = append(m.lower, lower.Sub(acked))
			return nil
		}
		lower = time.Now()
		time.Sleep(2 * time.Millisecond)
	}
	m.timeouts++
	return ctx.Err()
}
