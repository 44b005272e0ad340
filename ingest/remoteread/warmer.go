package remoteread

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window"
)

// Retry policy for a request that failed in a way that may pass (network,
// 5xx, 429, a broken stream): up to maxAttempts attempts, backoff doubling
// from minBackoff, with jitter. With the defaults the waits add up to at most
// 1.5·(1+2+4+8) s ≈ 23 s, well inside the two remote_timeouts (2m by default)
// a new series waits for its history; each series'
// deadline (window.WarmupOptions.Timeout) cuts it shorter.
const (
	defaultMinBackoff  = time.Second
	defaultMaxAttempts = 5
)

// Warmer reads the history of new series from Prometheus for the shards
// (window.Warmer). Series queue up (at most warmup.max_pending), leave the
// queue in requests of up to warmup.series_per_request, at most
// warmup.concurrency requests in flight, at most
// warmup.max_series_per_second, with at most warmup.max_bytes of decoded
// responses held. It is safe for concurrent use.
type Warmer struct {
	client      *Client
	concurrency int
	perRequest  int
	maxPending  int
	maxBytes    int64
	minBackoff  time.Duration
	maxAttempts int
	logger      *zap.Logger
	m           *metrics
	logs        logLimiter

	mu      sync.Mutex
	queue   []window.WarmRequest // waiting, oldest first from head
	head    int
	closed  bool
	pending atomic.Int64  // queued or being read: bounded by maxPending
	wake    chan struct{} // capacity 1: something was queued

	slots  chan struct{} // one per request in flight
	budget budget
	tokens tokenBucket

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewWarmer returns a Warmer reading from cfg.RemoteRead (which must be set).
// userAgent is sent as User-Agent.
func NewWarmer(cfg *config.WarmupConfig, userAgent string, reg *prometheus.Registry, logger *zap.Logger) (*Warmer, error) {
	if cfg.RemoteRead == nil {
		return nil, errors.New("BUG: remoteread: NewWarmer without warmup.remote_read")
	}
	c, err := NewClient(cfg.RemoteRead, userAgent)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Warmer{
		client:      c,
		concurrency: cfg.Concurrency,
		perRequest:  cfg.SeriesPerRequest,
		maxPending:  cfg.MaxPending,
		maxBytes:    cfg.MaxBytes,
		minBackoff:  defaultMinBackoff,
		maxAttempts: defaultMaxAttempts,
		logger:      logger.With(zap.String("component", "warmup"), zap.String("url", cfg.RemoteRead.URL)),
		wake:        make(chan struct{}, 1),
		slots:       make(chan struct{}, cfg.Concurrency),
		budget:      budget{max: cfg.MaxBytes},
		// A burst of one request's worth, so that a full request never
		// waits for tokens it could never hold.
		tokens: newTokenBucket(cfg.MaxSeriesPerSecond, max(cfg.SeriesPerRequest, 1)),
		ctx:    ctx,
		cancel: cancel,
	}
	w.m = newMetrics(reg, w)
	return w, nil
}

// SetIgnoreLabel is Client.SetIgnoreLabel: with ha.enabled, the HA replica
// label of the Prometheus answering. Call it before Start.
func (w *Warmer) SetIgnoreLabel(name string) { w.client.SetIgnoreLabel(name) }

// Start starts the dispatcher.
func (w *Warmer) Start() {
	w.wg.Add(1)
	go w.dispatch()
}

// Stop refuses new series, drops the queue, aborts the requests in flight
// and waits for its goroutines until ctx ends. Series left waiting start
// cold when their shard stops or their deadline passes.
func (w *Warmer) Stop(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	dropped := len(w.queue) - w.head
	w.queue, w.head = nil, 0
	w.mu.Unlock()
	w.pending.Add(-int64(dropped))
	w.m.skipped.Add(float64(dropped))
	w.cancel()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cannot stop warm-up: %w", ctx.Err())
	}
}

// Warm queues req (window.Warmer). It never blocks: beyond
// warmup.max_pending, or once stopped, it refuses and the series starts cold.
func (w *Warmer) Warm(req window.WarmRequest) bool {
	w.mu.Lock()
	if w.closed || w.pending.Load() >= int64(w.maxPending) {
		w.mu.Unlock()
		w.m.skipped.Inc()
		return false
	}
	w.queue = append(w.queue, req)
	w.pending.Add(1)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// dispatch turns the queue into requests. It takes a request slot before
// it looks at the queue, so that the series that arrive while every request
// is in flight make the next one fuller; then the rate limit's tokens for
// the series it takes, then their first share of the byte budget.
func (w *Warmer) dispatch() {
	defer w.wg.Done()
	share := w.maxBytes / int64(w.concurrency)
	for {
		select {
		case w.slots <- struct{}{}:
		case <-w.ctx.Done():
			return
		}
		n := w.waitQueued()
		if n == 0 { // stopping
			return
		}
		if w.tokens.wait(w.ctx, n) != nil || w.budget.acquire(w.ctx, share) != nil {
			return
		}
		batch := w.take(n)
		if len(batch) == 0 {
			w.budget.release(share)
			<-w.slots
			continue
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() { <-w.slots }()
			res := &reservation{b: &w.budget, held: share, limit: w.maxBytes}
			defer res.release()
			w.fetch(batch, res)
		}()
	}
}

// waitQueued waits until series are queued and returns how many the next
// request takes, or 0 when the Warmer stops.
func (w *Warmer) waitQueued() int {
	for {
		w.mu.Lock()
		n := len(w.queue) - w.head
		w.mu.Unlock()
		if n > 0 {
			return min(n, w.perRequest)
		}
		select {
		case <-w.wake:
		case <-w.ctx.Done():
			return 0
		}
	}
}

// take removes up to n series from the queue. Those past their deadline
// are dropped: their series no longer wait (the shard replays them cold).
func (w *Warmer) take(n int) []window.WarmRequest {
	now := time.Now()
	batch := make([]window.WarmRequest, 0, n)
	expired := 0
	w.mu.Lock()
	for len(batch) < n && w.head < len(w.queue) {
		r := w.queue[w.head]
		w.queue[w.head] = window.WarmRequest{}
		w.head++
		if now.After(r.Deadline) {
			expired++
			continue
		}
		batch = append(batch, r)
	}
	// Reuse the queue's memory once it is empty (unless a burst grew it
	// past a few thousand requests: then let it go), or when the consumed
	// head is more than half of it.
	switch {
	case w.head == len(w.queue) && cap(w.queue) > 4096:
		w.queue, w.head = nil, 0
	case w.head == len(w.queue):
		w.queue, w.head = w.queue[:0], 0
	case w.head > len(w.queue)/2:
		n := copy(w.queue, w.queue[w.head:])
		clear(w.queue[n:]) // drop the moved requests' references
		w.queue, w.head = w.queue[:n], 0
	}
	w.mu.Unlock()
	if expired > 0 {
		w.pending.Add(-int64(expired))
		w.m.skipped.Add(float64(expired))
	}
	return batch
}

// fetch reads the history of batch and delivers every series' answer. It
// retries what may pass, waits for more of the byte budget when other
// requests hold it, and splits a batch whose response is over
// warmup.max_bytes.
func (w *Warmer) fetch(batch []window.WarmRequest, res *reservation) {
	qs := make([]Query, len(batch))
	deadline := batch[0].Deadline
	for i := range batch {
		qs[i] = Query{Labels: batch[i].Labels, Start: batch[i].Start, End: batch[i].End}
		if batch[i].Deadline.Before(deadline) {
			deadline = batch[i].Deadline
		}
	}
	// No answer helps after the first series stops waiting; the others
	// would be retried in a later request only if that were worth a
	// second queue, which it is not.
	ctx, cancel := context.WithDeadline(w.ctx, deadline)
	defer cancel()
	backoff := w.minBackoff
	for attempt := 1; ; attempt++ {
		res.used = 0
		start := time.Now()
		out, st, err := w.client.read(ctx, qs, res)
		w.m.request(st, err, time.Since(start))
		switch {
		case err == nil:
			w.deliver(batch, out, nil)
			return
		case errors.Is(err, errBudget):
			// Other requests hold the bytes this response needs: wait for
			// twice as many (FIFO, holding none meanwhile, so requests
			// waiting for each other cannot deadlock). Not Prometheus's
			// fault, so not an attempt; it ends because the share grows
			// to warmup.max_bytes, where only errTooLarge remains.
			need := min(max(2*res.held, res.used), w.maxBytes)
			res.release()
			if err := w.budget.acquire(ctx, need); err != nil {
				w.fail(batch, fmt.Errorf("cannot wait for warmup.max_bytes: %w", err))
				return
			}
			res.held = need
			attempt--
			continue
		case errors.Is(err, errTooLarge) && len(batch) > 1:
			h := len(batch) / 2
			w.logger.Debug("remote-read response over warmup.max_bytes; splitting the request",
				zap.Int("series", len(batch)), zap.Error(err))
			w.fetch(batch[:h], res)
			w.fetch(batch[h:], res)
			return
		case !retryable(err) || attempt >= w.maxAttempts:
			w.fail(batch, err)
			return
		}
		sleep := backoff + rand.N(backoff/2+1) // jitter: restarted anomalyds do not retry in step
		w.logs.warn(w.logger, "cannot read history, retrying", zap.Error(err), zap.Int("series", len(batch)),
			zap.Int("attempt", attempt), zap.Duration("retry_in", sleep))
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			w.fail(batch, fmt.Errorf("%w; gave up retrying after %d attempts: %w", err, attempt, ctx.Err()))
			return
		}
		backoff *= 2
	}
}

// fail delivers err to every series of batch: they start cold.
func (w *Warmer) fail(batch []window.WarmRequest, err error) {
	if w.ctx.Err() == nil {
		w.logs.warn(w.logger, "cannot read history; these series start cold", zap.Error(err), zap.Int("series", len(batch)))
	}
	w.deliver(batch, nil, err)
}

// deliver hands each series its history (out[i]) or err.
func (w *Warmer) deliver(batch []window.WarmRequest, out [][]window.Sample, err error) {
	for i := range batch {
		var h []window.Sample
		if out != nil {
			h = out[i]
		}
		switch {
		case w.ctx.Err() != nil:
			w.m.skipped.Inc() // stopping: the shard replays it cold
		case err != nil:
			w.m.failed.Inc()
		case len(h) == 0:
			w.m.empty.Inc()
		default:
			w.m.warmed.Inc()
		}
		batch[i].Deliver(w.ctx, h, err)
	}
	w.pending.Add(-int64(len(batch)))
}

// logLimiter lets one warning through every 10 s: while Prometheus is down
// every request fails, and one line says as much as a thousand.
type logLimiter struct {
	last       atomic.Int64 // unix nanoseconds of the last warning
	suppressed atomic.Int64
}

func (l *logLimiter) warn(logger *zap.Logger, msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(10*time.Second) || !l.last.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		logger.Debug(msg, fields...)
		return
	}
	logger.Warn(msg, append(fields, zap.Int64("similar_not_logged", l.suppressed.Swap(0)))...)
}
