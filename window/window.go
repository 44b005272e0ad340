package window

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/series"
)

// Options configure the shards (from config.WindowConfig and OutputConfig).
type Options struct {
	Shards          int
	QueueSize       int
	MaxSeries       int
	SeriesTTL       time.Duration
	PublishInterval time.Duration
	PerDetector     bool
	// Warmup reads new series' history before analysing them; off unless
	// Warmup.Warmer is set (by cmd: window does not know where history lives).
	Warmup WarmupOptions
	// Incidents receives the evidence and group membership of the series;
	// nil turns the incident stage off.
	Incidents *Incidents
	// Logger receives the one warning about several senders of the same
	// series (senders.go); nil logs nothing.
	Logger *zap.Logger
}

// OptionsFromConfig returns the Options of cfg, resolving shards = 0 to
// GOMAXPROCS. With warm-up configured it fills Warmup except its Warmer.
func OptionsFromConfig(cfg *config.Config) Options {
	n := cfg.Window.Shards
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	o := Options{
		Shards:          n,
		QueueSize:       cfg.Window.QueueSize,
		MaxSeries:       cfg.Window.MaxSeries,
		SeriesTTL:       time.Duration(cfg.Window.SeriesTTL),
		PublishInterval: time.Duration(cfg.Window.PublishInterval),
		PerDetector:     cfg.Output.PerDetector,
	}
	if w := &cfg.Warmup; w.Enabled() {
		o.Warmup = WarmupOptions{
			Lookback:    w.LookbackFor(cfg),
			MaxBuffered: w.MaxBufferedSamples,
			// Two remote-read timeouts: room for a retry after a timed-out
			// request, and for the queue ahead of the series.
			Timeout: 2 * time.Duration(w.RemoteRead.RemoteTimeout),
		}
	}
	return o
}

// Appender receives the records the shards emit (the sink: remote-write
// queues, score history). Append is called by several shard goroutines at
// once, must not block for long and must not keep recs after it returns
// (copy what it needs).
type Appender interface {
	Append(recs []series.Record)
}

// Errors Enqueue returns; both mean "503, try again".
var (
	ErrQueueFull = errors.New("shard queue is full")
	ErrClosed    = errors.New("shutting down")
)

// Shards is the set of shard goroutines. Each series belongs to the shard
// Hash % N, whose goroutine alone touches its state.
type Shards struct {
	opts   Options
	out    Appender
	shards []*shard
	done   []chan struct{}
	active atomic.Int64 // series tracked, all shards (for max_series)
	free   chan *Batch  // bounded free list of batches

	started  atomic.Bool
	closed   atomic.Bool
	inflight sync.WaitGroup
	mu       sync.Mutex // serialises ApplyRules and Stop
	stopped  bool

	// The several-senders watch (senders.go); watchDone is nil until Start.
	logger               *zap.Logger
	watchStop, watchDone chan struct{}
}

// New builds the shards; Start runs them.
func New(opts Options, rules *Rules, out Appender, reg *prometheus.Registry) *Shards {
	// Enough free batches for every queue slot plus one being filled and one
	// being processed per shard.
	s := &Shards{opts: opts, out: out, free: make(chan *Batch, opts.Shards*(opts.QueueSize+2)), logger: opts.Logger}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	for i := range opts.Shards {
		s.done = append(s.done, make(chan struct{}))
		s.shards = append(s.shards, newShard(i, s, rules, s.done[i]))
	}
	s.register(reg)
	return s
}

// N returns the number of shards.
func (s *Shards) N() int { return len(s.shards) }

// Start starts one goroutine per shard, and one that watches for several
// senders of the same series.
func (s *Shards) Start() {
	s.started.Store(true)
	for i, sh := range s.shards {
		go sh.run(s.done[i])
	}
	s.watchStop, s.watchDone = make(chan struct{}), make(chan struct{})
	go s.watchSenders(s.watchStop, s.watchDone)
}

// Enqueue hands b to shard i without blocking. On success the shard owns b;
// on error the caller still does (and should answer 503).
func (s *Shards) Enqueue(i int, b *Batch) error {
	s.inflight.Add(1)
	defer s.inflight.Done()
	if s.closed.Load() {
		return ErrClosed
	}
	select {
	case s.shards[i].in <- b:
		return nil
	default:
		return ErrQueueFull
	}
}

// Full reports whether some shard's queue is full right now: a request
// whose series span every shard, as a sender's do, would be refused in
// part (Enqueue returns ErrQueueFull), so ingest refuses it before
// spending CPU on decoding it.
func (s *Shards) Full() bool {
	for _, sh := range s.shards {
		if len(sh.in) == cap(sh.in) {
			return true
		}
	}
	return false
}

// Stop refuses new batches, lets every shard drain its queue and publish,
// and returns when they are done or ctx ends.
func (s *Shards) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	if s.watchDone != nil {
		close(s.watchStop)
		<-s.watchDone
	}
	s.closed.Store(true)
	if !s.started.Load() {
		return nil // nothing runs (a restore that failed, say)
	}
	s.inflight.Wait() // no Enqueue is between its closed check and its send
	for _, sh := range s.shards {
		close(sh.in)
	}
	for _, d := range s.done {
		select {
		case <-d:
		case <-ctx.Done():
			return fmt.Errorf("cannot drain shards: %w", ctx.Err())
		}
	}
	return nil
}

// ApplyRules switches every shard to rules (a config reload) and waits for
// them to finish re-evaluating their series.
func (s *Shards) ApplyRules(rules *Rules, perDetector bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.opts.PerDetector = perDetector
	var wg sync.WaitGroup
	for _, sh := range s.shards {
		wg.Add(1)
		sh.ctl <- func() {
			defer wg.Done()
			sh.applyRules(rules, perDetector)
		}
	}
	wg.Wait()
}

// Sync returns once every shard has processed the batches enqueued before
// the call. For tests and benchmarks.
func (s *Shards) Sync() {
	for i, sh := range s.shards {
		for len(sh.in) > 0 {
			time.Sleep(time.Millisecond)
		}
		s.onShard(i, func() {})
	}
}

// onShard runs f on shard i's goroutine and waits for it; false if the
// shard has not started (a restore in progress) or has stopped.
func (s *Shards) onShard(i int, f func()) bool {
	if !s.started.Load() {
		return false
	}
	done := make(chan struct{})
	select {
	case s.shards[i].ctl <- func() { f(); close(done) }:
	case <-s.done[i]:
		return false
	}
	<-done
	return true
}

// Snapshots appends, for each shard, its latest outputs to dst. A shard
// whose snapshot is older than the publish interval is asked for a new one
// first, so a scrape sees outputs at most publish_interval old while a
// scrape storm costs at most one O(series) copy per interval. The slices
// are immutable: readers may keep them as long as they like.
func (s *Shards) Snapshots(dst [][]series.Record) [][]series.Record {
	now := time.Now()
	for i, sh := range s.shards {
		if p := sh.snap.Load(); p == nil || now.Sub(p.at) >= s.opts.PublishInterval {
			s.onShard(i, func() { sh.flushOut(); sh.publish(now) })
		}
		if p := sh.snap.Load(); p != nil {
			dst = append(dst, p.recs)
		}
	}
	return dst
}

// asleep returns how many series sleep (see seriesState.hold).
func (s *Shards) asleep() int64 {
	var n int64
	for _, sh := range s.shards {
		n += sh.stats.asleep.Load()
	}
	return n
}

// QueueDepth returns the batches waiting in shard i's queue.
func (s *Shards) QueueDepth(i int) int { return len(s.shards[i].in) }

func (s *Shards) register(reg *prometheus.Registry) {
	sum := func(f func(*shardStats) uint64) func() float64 {
		return func() float64 {
			var n uint64
			for _, sh := range s.shards {
				n += f(&sh.stats)
			}
			return float64(n)
		}
	}
	promreg.CounterFunc(reg, "anomalyd_window_samples_analysed_total",
		"Samples fed to the detectors (counters: rates computed from them).", nil,
		sum(func(st *shardStats) uint64 { return st.samples.Load() }))
	dropped := func(f func() float64, reason string) {
		promreg.CounterFunc(reg, "anomalyd_window_samples_not_analysed_total",
			"Accepted samples that were not fed to the detectors, by reason.", prometheus.Labels{"reason": reason}, f)
	}
	dropped(sum(func(st *shardStats) uint64 { return st.outOfOrder.Load() }), "out_of_order")
	dropped(sum(func(st *shardStats) uint64 { return st.duplicates.Load() }), "duplicate")
	dropped(sum(func(st *shardStats) uint64 { return st.conflicts.Load() }), "duplicate_timestamp")
	dropped(sum(func(st *shardStats) uint64 { return st.nonFinite.Load() }), "non_finite")
	dropped(sum(func(st *shardStats) uint64 { return st.staleMarkers.Load() }), "stale_marker")
	dropped(sum(func(st *shardStats) uint64 { return st.primed.Load() }), "counter_first_sample")
	dropped(sum(func(st *shardStats) uint64 { return st.counterResets.Load() }), "counter_reset")
	dropped(sum(func(st *shardStats) uint64 { return st.ignored.Load() }), "ignored_by_rule")
	dropped(sum(func(st *shardStats) uint64 { return st.excluded.Load() }), "excluded")
	dropped(sum(func(st *shardStats) uint64 { return st.limited.Load() }), "series_limit")
	promreg.CounterFunc(reg, "anomalyd_window_rate_resets_total",
		"Resets seen in series analysed as rates (counters).", nil,
		sum(func(st *shardStats) uint64 { return st.counterResets.Load() }))
	promreg.GaugeFunc(reg, "anomalyd_window_series_active", "Series tracked by the shards.", nil,
		func() float64 { return float64(s.active.Load()) })
	promreg.GaugeFunc(reg, "anomalyd_window_series_asleep",
		"Series whose value has not changed since their detectors started, held without detector state until it does.", nil,
		func() float64 { return float64(s.asleep()) })
	promreg.GaugeFunc(reg, "anomalyd_window_series_limit", "The max_series limit.", nil,
		func() float64 { return float64(s.opts.MaxSeries) })
	promreg.CounterFunc(reg, "anomalyd_window_series_created_total",
		"Series that started being tracked.", nil,
		sum(func(st *shardStats) uint64 { return st.seriesCreated.Load() }))
	promreg.CounterFunc(reg, "anomalyd_window_series_evicted_total",
		"Series evicted after series_ttl idle or by a reload.", nil,
		sum(func(st *shardStats) uint64 { return st.seriesEvicted.Load() }))
	promreg.CounterFunc(reg, "anomalyd_window_processing_seconds_total",
		"Time the shard goroutines spent processing batches (series lookup and detectors).", nil,
		func() float64 { return sum(func(st *shardStats) uint64 { return st.processingNanos.Load() })() / 1e9 })
	for i := range s.shards {
		promreg.GaugeFunc(reg, "anomalyd_window_shard_queue_batches", "Batches waiting in each shard's queue.",
			prometheus.Labels{"shard": fmt.Sprint(i)}, func() float64 { return float64(len(s.shards[i].in)) })
	}
	promreg.GaugeFunc(reg, "anomalyd_window_shard_queue_capacity_batches",
		"Capacity of each shard's queue (window.queue_size).", nil,
		func() float64 { return float64(s.opts.QueueSize) })
	if s.opts.Warmup.enabled() {
		s.registerWarmup(reg, sum)
	}
}

func (s *Shards) registerWarmup(reg *prometheus.Registry, sum func(func(*shardStats) uint64) func() float64) {
	promreg.GaugeFunc(reg, "anomalyd_window_series_warming",
		"New series holding their live samples while their history is read.", nil,
		func() float64 {
			var n int64
			for _, sh := range s.shards {
				n += sh.stats.warming.Load()
			}
			return float64(n)
		})
	promreg.CounterFunc(reg, "anomalyd_window_series_warmed_total",
		"New series whose detectors were fed their history before their first live sample.", nil,
		sum(func(st *shardStats) uint64 { return st.warmed.Load() }))
	promreg.CounterFunc(reg, "anomalyd_window_warmup_history_samples_total",
		"History samples fed to the detectors of new series (not scored into outputs).", nil,
		sum(func(st *shardStats) uint64 { return st.warmHistorySamples.Load() }))
	cold := func(f func() float64, reason string) {
		promreg.CounterFunc(reg, "anomalyd_window_warmup_gave_up_total",
			"New series that started cold without waiting longer for their history, by reason.", prometheus.Labels{"reason": reason}, f)
	}
	cold(sum(func(st *shardStats) uint64 { return st.warmRefused.Load() }), "refused")
	for r, name := range [numGaveUp]string{gaveUpBufferFull: "buffer_full", gaveUpTimeout: "timeout", gaveUpEvicted: "evicted"} {
		cold(sum(func(st *shardStats) uint64 { return st.warmGaveUp[r].Load() }), name)
	}
	promreg.CounterFunc(reg, "anomalyd_window_warmup_late_total",
		"Histories that arrived after their series had stopped waiting; ignored.", nil,
		sum(func(st *shardStats) uint64 { return st.warmLate.Load() }))
}
