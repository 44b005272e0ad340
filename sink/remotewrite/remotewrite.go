package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// RemoteWriter sends records, and the incident series, to one
// Prometheus-compatible store with the remote-write protocol. It implements
// window.Appender and window.IncidentAppender.
//
// Records are spread over a fixed number of send queues
// (queue_config.max_shards) by series.Info.Hash, so the samples of one series
// always go through the same queue and reach the store in timestamp order.
// Each queue is bounded in output samples (queue_config.capacity); Append
// drops and counts what does not fit instead of blocking. One goroutine per
// queue batches, encodes, sends and retries. See doc.go for the trade-offs.
//
// Append and AppendIncidents may be called by any number of goroutines at
// once; Start and Stop by one owner.
type RemoteWriter struct {
	name   string // the remote label value
	url    string
	logger *zap.Logger
	names  series.Names

	client     *http.Client // sends cfg.Headers, the credentials and User-Agent
	timeout    time.Duration
	rw2        bool        // protobuf_message asks for RW2
	rw1Only    atomic.Bool // RW2 was refused by the store: RW1 from now on
	retry429   bool
	maxSend    int
	deadline   time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	capacity   int64 // per queue, output samples
	// jitter returns the sleep for a backoff of d. Tests replace it.
	jitter func(d time.Duration) time.Duration

	queues []*queue
	m      writerMetrics

	// hardCtx aborts in-flight requests and backoff sleeps when Stop's
	// context ends.
	hardCtx    context.Context
	hardCancel context.CancelFunc
	stopCh     chan struct{} // closed by Stop: flush and exit
	wg         sync.WaitGroup

	mu       sync.Mutex // guards started and stopped
	started  bool
	stopped  bool
	lastDrop atomic.Int64 // unix nanos of the last queue_full log line

	// diskDir is this remote's directory under the queue directory; ""
	// keeps the queues in memory only. maxDisk bounds it
	// (queue_config.max_disk_usage_bytes), split evenly over the queues.
	diskDir string
	maxDisk int64
	// legacyDirs are queue directories of another max_shards, sent before
	// anything new; gate is closed once they are (nil when there are none).
	legacyDirs     []string
	gate           chan struct{}
	legacyQ        atomic.Pointer[queue] // the one being sent, for the metrics
	lastLimitLog   atomic.Int64
	lastDiskErrLog atomic.Int64

	// health counts the queues whose last request failed and will be
	// retried, for the failing and recovered log lines.
	health        sync.Mutex
	failingQueues int
	failingSince  time.Time
	failingLogged time.Time
}

// NewRemoteWriter builds a writer for one store and registers the
// anomalyd_sink_* families in reg (nil: a private registry). Writers of
// several stores on one registry share the families (NewFanout). cfg must
// be validated with defaults applied; files it names (password_file,
// credentials_file, TLS files) are read now.
//
// queueDir is where the send queues persist (see NewFanout); "" keeps them
// in memory only.
func NewRemoteWriter(cfg *config.RemoteWriteConfig, names series.Names, queueDir string, reg *prometheus.Registry, logger *zap.Logger) (*RemoteWriter, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	sm := newSinkMetrics(reg)
	w, err := newRemoteWriter(cfg, names, queueDir, logger)
	if err != nil {
		return nil, err
	}
	w.m = sm.forRemote(w.name, w)
	return w, nil
}

// newRemoteWriter builds a writer without its metrics (w.m), which the
// caller sets with forRemote once every writer of a fan-out is built: a
// reload that fails half-way must leave the running writers' series alone.
func newRemoteWriter(cfg *config.RemoteWriteConfig, names series.Names, queueDir string, logger *zap.Logger) (*RemoteWriter, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	name := remoteName(cfg)
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("remote_write %q: cannot parse url: %w", name, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("remote_write %q: url %q must be http:// or https:// with a host", name, u.Redacted())
	}
	qc := &cfg.QueueConfig
	switch {
	case qc.MaxShards <= 0:
		return nil, fmt.Errorf("remote_write %q: queue_config.max_shards must be > 0, got %d", name, qc.MaxShards)
	case qc.MaxSamplesPerSend <= 0:
		return nil, fmt.Errorf("remote_write %q: queue_config.max_samples_per_send must be > 0, got %d", name, qc.MaxSamplesPerSend)
	case qc.Capacity < series.NumSlots: // the most samples one record becomes
		return nil, fmt.Errorf("remote_write %q: queue_config.capacity must be >= %d samples, got %d", name, series.NumSlots, qc.Capacity)
	case qc.BatchSendDeadline <= 0:
		return nil, fmt.Errorf("remote_write %q: queue_config.batch_send_deadline must be > 0, got %v", name, qc.BatchSendDeadline)
	case qc.MinBackoff <= 0 || qc.MaxBackoff < qc.MinBackoff:
		return nil, fmt.Errorf("remote_write %q: need 0 < queue_config.min_backoff (%v) <= queue_config.max_backoff (%v)", name, qc.MinBackoff, qc.MaxBackoff)
	case cfg.RemoteTimeout <= 0:
		return nil, fmt.Errorf("remote_write %q: remote_timeout must be > 0, got %v", name, cfg.RemoteTimeout)
	case qc.MaxDiskUsageBytes < 0:
		return nil, fmt.Errorf("remote_write %q: queue_config.max_disk_usage_bytes must be >= 0, got %d", name, qc.MaxDiskUsageBytes)
	}
	var rw2 bool
	switch cfg.ProtobufMessage {
	case "", wire.MessageWriteV1:
	case wire.MessageWriteV2:
		rw2 = true
	default:
		return nil, fmt.Errorf("remote_write %q: unknown protobuf_message %q, want %q or %q", name, cfg.ProtobufMessage, wire.MessageWriteV1, wire.MessageWriteV2)
	}
	// User-Agent as Prometheus's: version.ComponentUserAgent, read here:
	// main sets version.Version before.
	client, err := cfg.NewClient("remote_write", version.ComponentUserAgent("anomalyd"))
	if err != nil {
		return nil, fmt.Errorf("remote_write %q: %w", name, err)
	}

	w := &RemoteWriter{
		name:       name,
		url:        cfg.URL,
		logger:     logger.With(zap.String("remote", name), zap.String("url", u.Redacted())),
		names:      names,
		client:     client,
		timeout:    time.Duration(cfg.RemoteTimeout),
		rw2:        rw2,
		retry429:   qc.RetryOnRateLimit,
		maxSend:    qc.MaxSamplesPerSend,
		deadline:   time.Duration(qc.BatchSendDeadline),
		minBackoff: time.Duration(qc.MinBackoff),
		maxBackoff: time.Duration(qc.MaxBackoff),
		capacity:   int64(qc.Capacity),
		jitter:     addJitter,
		queues:     make([]*queue, qc.MaxShards),
		stopCh:     make(chan struct{}),
	}
	if queueDir != "" && qc.MaxDiskUsageBytes > 0 {
		w.diskDir = filepath.Join(queueDir, remoteDirName(name))
		w.maxDisk = qc.MaxDiskUsageBytes
	}
	w.hardCtx, w.hardCancel = context.WithCancel(context.Background())
	for i := range w.queues {
		w.queues[i] = newQueue()
	}
	return w, nil
}

// remoteName is the remote label value: cfg.Name (config fills it in), or
// host/path of the URL for an unvalidated config (never its user info or
// query, which may hold secrets).
func remoteName(cfg *config.RemoteWriteConfig) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	if u, err := url.Parse(cfg.URL); err == nil && u.Host != "" {
		return u.Host + u.Path
	}
	return cfg.URL
}

// Name returns the value of the remote label of this writer's metrics.
func (w *RemoteWriter) Name() string { return w.name }

// Start opens the disk queues, if any, and starts one sender goroutine per
// queue. Records appended before Start wait in the queues. Start after Stop
// does nothing. When the disk queues cannot be opened the writer keeps its
// queues in memory only and Start returns the error.
func (w *RemoteWriter) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started || w.stopped {
		return nil
	}
	w.started = true
	var err error
	if w.diskDir != "" {
		if err = w.openDisk(); err != nil {
			w.diskDir = ""
		}
	}
	for i, q := range w.queues {
		s := newSender(w, q, i)
		w.wg.Add(1)
		if q.disk != nil {
			go func() {
				defer w.wg.Done()
				s.runDisk()
			}()
		} else {
			go s.run()
		}
	}
	if w.gate != nil {
		w.wg.Add(1)
		go w.drainLegacy()
	}
	return err
}

// Append copies the records into their send queues. It never blocks on the
// network: it takes each queue's lock for as long as it copies records, and
// drops (and counts) the records that do not fit in a full queue or arrive
// after Stop. recs is not kept.
func (w *RemoteWriter) Append(recs []series.Record) {
	if len(recs) == 0 {
		return
	}
	n := uint64(len(w.queues))
	var full, shutdown int64
	for i, q := range w.queues {
		f, s := q.push(recs, uint64(i), n, w.capacity, int64(w.maxSend))
		full += f
		shutdown += s
	}
	w.countDropped(full, shutdown)
}

// countDropped counts samples dropped because a queue was full (logged at
// most once a minute) and because the writer was stopping.
func (w *RemoteWriter) countDropped(full, shutdown int64) {
	if full > 0 {
		w.m.droppedFull.Add(float64(full))
		w.logQueueFull()
	}
	if shutdown > 0 {
		w.m.droppedShutdown.Add(float64(shutdown))
	}
}

// logQueueFull logs at most once a minute that samples are being dropped.
func (w *RemoteWriter) logQueueFull() {
	now := time.Now().UnixNano()
	last := w.lastDrop.Load()
	if now-last < int64(time.Minute) || !w.lastDrop.CompareAndSwap(last, now) {
		return
	}
	w.logger.Warn("send queue full, dropping new output samples; the store is slow or down, or raise queue_config.capacity / max_shards",
		zap.Int("capacity_per_queue", int(w.capacity)), zap.Int("queues", len(w.queues)))
}

// Stop stops accepting records and flushes what is queued, still retrying,
// until ctx ends; then it aborts in-flight requests and drops the rest,
// counting it as reason="shutdown". With a disk queue it writes what is
// queued in memory to disk instead, waits for the request in flight (until
// ctx ends) and keeps everything unsent for the next start. It returns when
// every goroutine of the writer has exited. A ctx without deadline waits for
// the store for ever.
func (w *RemoteWriter) Stop(ctx context.Context) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	started := w.started
	w.mu.Unlock()

	for _, q := range w.queues {
		q.close()
	}
	if ctx.Err() != nil {
		w.hardCancel() // send nothing more
	}
	close(w.stopCh)
	if started {
		done := make(chan struct{})
		go func() { w.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			w.hardCancel()
			<-done
		}
	} else {
		var dropped int64
		for _, q := range w.queues {
			dropped += q.drain()
		}
		w.m.droppedShutdown.Add(float64(dropped))
	}
	w.hardCancel()
	w.client.CloseIdleConnections()
}

// Fanout sends every record to each configured store. With zero stores
// Append does nothing. Like RemoteWriter, Append may be called by many
// goroutines at once.
type Fanout struct {
	writers  []*RemoteWriter
	queueDir string
	logger   *zap.Logger
}

// NewFanout builds one RemoteWriter per config, sharing one set of
// anomalyd_sink_* families in reg (nil: a private registry). Remote names
// (name, or host/path of url) must be unique.
//
// queueDir ("" for none) is where the send queues persist: one directory
// per remote, named after it, holding one directory per send queue. The
// disk queues are opened by Start, so that a reload can build the new
// writers while the old ones still hold the directories.
func NewFanout(cfgs []*config.RemoteWriteConfig, names series.Names, queueDir string, reg *prometheus.Registry, logger *zap.Logger) (*Fanout, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	f := &Fanout{queueDir: queueDir, logger: logger}
	if len(cfgs) == 0 {
		return f, nil
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	sm := newSinkMetrics(reg)
	seen := make(map[string]int, len(cfgs))
	for i, cfg := range cfgs {
		name := remoteName(cfg)
		if j, ok := seen[name]; ok {
			return nil, fmt.Errorf("remote_write[%d] and remote_write[%d] have the same name %q: set distinct names", j, i, name)
		}
		seen[name] = i
		w, err := newRemoteWriter(cfg, names, queueDir, logger)
		if err != nil {
			return nil, err
		}
		f.writers = append(f.writers, w)
	}
	for _, w := range f.writers {
		w.m = sm.forRemote(w.name, w)
	}
	return f, nil
}

// ForgetRemoved deletes the metrics of f's remotes that next (the fan-out
// replacing f after a reload) does not have, so that a removed remote_write
// entry leaves /metrics. Call it once f is stopped: a writer that is still
// sending would bring its series back.
func (f *Fanout) ForgetRemoved(next *Fanout) {
	keep := map[string]bool{}
	for _, w := range next.writers {
		keep[w.name] = true
	}
	for _, w := range f.writers {
		if !keep[w.name] {
			w.m.sm.forget(w.name)
		}
	}
}

// Writers returns the writers, in config order. The slice is shared: do not modify it.
func (f *Fanout) Writers() []*RemoteWriter { return f.writers }

// Start starts every writer. It returns the errors of the writers whose
// disk queues could not be opened; those run with memory queues only. It
// warns about queue directories of remotes no longer configured: their
// scores wait there until the entry is back or the directory is removed.
func (f *Fanout) Start() error {
	var errs []error
	used := map[string]bool{}
	for _, w := range f.writers {
		if err := w.Start(); err != nil {
			errs = append(errs, err)
		}
		used[filepath.Base(w.diskDir)] = true
	}
	if f.queueDir != "" {
		ents, _ := os.ReadDir(f.queueDir)
		for _, e := range ents {
			if e.IsDir() && !used[e.Name()] {
				f.logger.Warn("queue directory of a remote_write entry that is not configured: its scores are not sent; add the entry back or remove the directory",
					zap.String("dir", filepath.Join(f.queueDir, e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

// Append appends recs to every writer; it does not keep recs.
func (f *Fanout) Append(recs []series.Record) {
	for _, w := range f.writers {
		w.Append(recs)
	}
}

// AppendIncidents appends the incident series to every writer (see
// RemoteWriter.AppendIncidents).
func (f *Fanout) AppendIncidents(t int64, groups []incident.GroupStatus, ended []string) {
	for _, w := range f.writers {
		w.AppendIncidents(t, groups, ended)
	}
}

// Stop stops every writer at once, all flushing until ctx ends, so that a
// slow store does not eat the flush time of the others.
func (f *Fanout) Stop(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range f.writers {
		wg.Go(func() { w.Stop(ctx) })
	}
	wg.Wait()
}

// sinkMetrics are the anomalyd_sink_* families, registered once per
// registry and shared by the writers (children per remote).
type sinkMetrics struct {
	reg                   *prometheus.Registry
	sent, failed, retried *prometheus.CounterVec
	dropped               *prometheus.CounterVec
	requests              *prometheus.CounterVec
	duration              *prometheus.HistogramVec
	capacity, diskMax     *prometheus.GaugeVec
}

// The families of each remote computed at scrape time from its writer.
const (
	pendingName = "anomalyd_sink_queue_samples"
	pendingHelp = "Output samples queued or being sent, over all send queues, in memory and on disk."

	diskBytesName = "anomalyd_sink_disk_queue_bytes"
	diskBytesHelp = "Size of the disk queue's segment files, over all send queues (sent blocks included until their segment is removed)."

	diskBlocksName = "anomalyd_sink_disk_queue_blocks"
	diskBlocksHelp = "Requests (encoded blocks) waiting in the disk queue, over all send queues."
)

func newSinkMetrics(reg *prometheus.Registry) *sinkMetrics {
	return &sinkMetrics{
		reg: reg,
		sent: promreg.NewCounterVec(reg, "anomalyd_sink_samples_sent_total",
			"Output samples the store accepted.", "remote"),
		failed: promreg.NewCounterVec(reg, "anomalyd_sink_samples_failed_total",
			"Output samples the store rejected without retry (4xx, 429 unless retry_on_http_429, or RW2 partial writes).", "remote"),
		retried: promreg.NewCounterVec(reg, "anomalyd_sink_samples_retried_total",
			"Output samples sent again after a network error, 5xx or retried 429 (counted once per retry).", "remote"),
		dropped: promreg.NewCounterVec(reg, "anomalyd_sink_samples_dropped_total",
			"Output samples never sent: queue_full = the send queue was full when the record arrived; shutdown = still queued when Stop's deadline ended or appended after Stop; disk_limit = oldest on disk, dropped at queue_config.max_disk_usage_bytes; disk_error = the disk queue could not be written, or a frame could not be read back (cut off by a crash).", "remote", "reason"),
		requests: promreg.NewCounterVec(reg, "anomalyd_sink_requests_total",
			"Remote-write requests by HTTP status code (code=\"error\": no response).", "remote", "code"),
		duration: promreg.NewHistogramVec(reg, "anomalyd_sink_request_duration_seconds",
			"Duration of one remote-write request, until the response body is read.", promreg.DefBuckets, "remote"),
		diskMax: promreg.NewGaugeVec(reg, "anomalyd_sink_disk_queue_max_bytes",
			"queue_config.max_disk_usage_bytes: past it the oldest blocks are dropped; 0 when the queue is in memory only.", "remote"),
		capacity: promreg.NewGaugeVec(reg, "anomalyd_sink_queue_capacity_samples",
			"Output samples the send queues can hold: queue_config.capacity × max_shards.", "remote"),
	}
}

// writerMetrics are one writer's children.
type writerMetrics struct {
	sm                           *sinkMetrics
	remote                       string
	sent, failed, retried        prometheus.Counter
	droppedFull, droppedShutdown prometheus.Counter
	droppedLimit, droppedDisk    prometheus.Counter
	duration                     prometheus.Observer
}

func (sm *sinkMetrics) forRemote(remote string, w *RemoteWriter) writerMetrics {
	l := prometheus.Labels{"remote": remote}
	promreg.GaugeFunc(sm.reg, pendingName, pendingHelp, l, w.queuedSamples)
	sm.capacity.WithLabelValues(remote).Set(float64(w.capacity) * float64(len(w.queues)))
	promreg.GaugeFunc(sm.reg, diskBytesName, diskBytesHelp, l, w.diskBytes)
	promreg.GaugeFunc(sm.reg, diskBlocksName, diskBlocksHelp, l, func() float64 {
		var n int64
		w.eachQueue(func(q *queue) { n += q.diskBlocks.Load() })
		return float64(n)
	})
	sm.diskMax.WithLabelValues(remote).Set(float64(w.maxDisk))
	return writerMetrics{
		sm:              sm,
		remote:          remote,
		sent:            sm.sent.WithLabelValues(remote),
		failed:          sm.failed.WithLabelValues(remote),
		retried:         sm.retried.WithLabelValues(remote),
		droppedFull:     sm.dropped.WithLabelValues(remote, "queue_full"),
		droppedShutdown: sm.dropped.WithLabelValues(remote, "shutdown"),
		droppedLimit:    sm.dropped.WithLabelValues(remote, "disk_limit"),
		droppedDisk:     sm.dropped.WithLabelValues(remote, "disk_error"),
		duration:        sm.duration.WithLabelValues(remote),
	}
}

// forget deletes every series of remote, so that a remote a reload removed
// leaves /metrics with its writer.
func (sm *sinkMetrics) forget(remote string) {
	l := prometheus.Labels{"remote": remote}
	for _, v := range []*prometheus.CounterVec{sm.sent, sm.failed, sm.retried, sm.dropped, sm.requests} {
		v.DeletePartialMatch(l)
	}
	sm.duration.DeletePartialMatch(l)
	sm.capacity.DeletePartialMatch(l)
	sm.diskMax.DeletePartialMatch(l)
	for _, name := range []string{pendingName, diskBytesName, diskBlocksName} {
		promreg.UnregisterFunc(sm.reg, name, l)
	}
}

// eachQueue calls f for every queue, and for the queue of an earlier
// max_shards being sent.
func (w *RemoteWriter) eachQueue(f func(q *queue)) {
	for _, q := range w.queues {
		f(q)
	}
	if q := w.legacyQ.Load(); q != nil {
		f(q)
	}
}

// queuedSamples is the anomalyd_sink_queue_samples of the writer: records
// queued or in the senders' hands, and samples in blocks in memory or on disk.
func (w *RemoteWriter) queuedSamples() float64 {
	var n int64
	w.eachQueue(func(q *queue) { n += q.pending.Load() + q.stored.Load() })
	return float64(n)
}

// diskBytes is the size of the writer's segment files.
func (w *RemoteWriter) diskBytes() float64 {
	var n int64
	w.eachQueue(func(q *queue) { n += q.diskBytes.Load() })
	return float64(n)
}

// logEvery runs log when the last run recorded in last is at least every
// ago (or never was).
func (w *RemoteWriter) logEvery(last *atomic.Int64, every time.Duration, log func()) {
	now := time.Now().UnixNano()
	l := last.Load()
	if l != 0 && now-l < int64(every) || !last.CompareAndSwap(l, now) {
		return
	}
	log()
}
