package sink

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/history"
	"github.com/anomalyd/anomalyd/sink/metrics"
	"github.com/anomalyd/anomalyd/sink/remotewrite"
	"github.com/anomalyd/anomalyd/sink/ui"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// reloadStopTimeout is how long a reload lets the remote writers it
// replaces flush what they hold. The reload waits for them (a store that is
// down costs the whole timeout), so it is short; what is still queued then
// is counted as dropped{reason="shutdown"}.
const reloadStopTimeout = 10 * time.Second

// Outputs is where the shards' records go: the remote-write fan-out over the
// remote_write entries, the UI's store of recent samples and, when
// history.retention > 0, the score history.
// The incident stage's series go to the remote-write fan-out too. Outputs
// owns the current output names, which the remote writers, the history's
// queries and /metrics use.
//
// Append and AppendIncidents may be called by many goroutines at once:
// Outputs is the window.Appender the shards get and the
// window.IncidentAppender of the incident stage. Reload, Start and Stop are
// for one owner; they exclude each other.
type Outputs struct {
	reg    *prometheus.Registry
	logger *zap.Logger
	// queueDir is where the remote-write queues persist; "" for memory only.
	queueDir string

	// to is what Append hands records to: the fan-out, and the history when
	// there is one. Reload swaps it under the running shards, so Append
	// pays one atomic load and takes no lock.
	to    atomic.Pointer[appenderBox]
	names atomic.Pointer[series.Names]

	// history and read are nil when history.retention is 0. A reload keeps
	// them: history settings take effect after a restart.
	history *history.History
	read    *history.ReadHandler
	// recent keeps what the UI plots: the recent samples of the series
	// that matter now. A reload keeps it.
	recent *ui.Store

	mu      sync.Mutex     // guards what follows
	cfg     *config.Config // the config of the current fan-out
	fanout  *remotewrite.Fanout
	started bool
	stopped bool
}

// appender is window.Appender, declared here so that sink does not import
// the shards' package.
type appender interface {
	Append(recs []series.Record)
}

// appenderBox lets an atomic.Pointer hold an interface value, and the
// fan-out that takes the incident series with it.
type appenderBox struct {
	appender
	fan *remotewrite.Fanout
}

// tee hands every batch of records to each appender in turn.
type tee []appender

func (t tee) Append(recs []series.Record) {
	for _, a := range t {
		a.Append(recs)
	}
}

// NewOutputs builds the remote writers of cfg.RemoteWrite and, when
// cfg.History is enabled, the history and its read handler, registering
// their metrics in reg (nil: a private registry). cfg must be validated with
// defaults applied. Nothing is sent before Start. queueDir is the directory
// where the remote-write queues persist (the queue subdirectory of
// --storage.path), "" to keep them in memory only.
func NewOutputs(cfg *config.Config, queueDir string, reg *prometheus.Registry, logger *zap.Logger) (*Outputs, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	o := &Outputs{reg: reg, logger: logger, cfg: cfg, queueDir: queueDir}
	names := namesOf(&cfg.Output)
	o.names.Store(&names)
	fan, err := remotewrite.NewFanout(cfg.RemoteWrite, names, queueDir, reg, logger)
	if err != nil {
		return nil, fmt.Errorf("cannot set up remote_write: %w", err)
	}
	o.fanout = fan
	if cfg.History.Enabled() {
		o.history = history.New(time.Duration(cfg.History.Retention), cfg.History.MaxSeries, o.Names, reg)
		o.read = history.NewReadHandler(o.history, &cfg.History, reg, logger)
	}
	o.recent = ui.NewStore(ui.DefaultOptions, reg)
	o.to.Store(o.boxFor(fan))
	return o, nil
}

// namesOf returns the output names of the output block.
func namesOf(c *config.OutputConfig) series.Names {
	return series.Names{Score: c.ScoreName, Expected: c.ExpectedName, Lower: c.LowerName, Upper: c.UpperName, Driver: c.DriverName, Value: c.ValueName}
}

// boxFor returns what Append should hand records to with fan as the
// fan-out.
func (o *Outputs) boxFor(fan *remotewrite.Fanout) *appenderBox {
	if o.history == nil {
		return &appenderBox{tee{fan, o.recent}, fan}
	}
	return &appenderBox{tee{fan, o.history, o.recent}, fan}
}

// Recent returns the store of what the UI plots.
func (o *Outputs) Recent() *ui.Store { return o.recent }

// Append hands recs to the remote writers and the history. It does not
// block on the network and does not keep recs.
func (o *Outputs) Append(recs []series.Record) { o.to.Load().Append(recs) }

// AppendIncidents hands the incident series the incident stage published
// at t to the remote writers (not to the history): it is the
// window.IncidentAppender of the stage. It does not block on the network
// and does not modify groups or ended.
func (o *Outputs) AppendIncidents(t int64, groups []incident.GroupStatus, ended []string) {
	o.to.Load().fan.AppendIncidents(t, groups, ended)
}

// Names returns the current output names.
func (o *Outputs) Names() series.Names { return *o.names.Load() }

// ReadHandler returns the handler of POST /api/v1/read, or nil when the
// history is off.
func (o *Outputs) ReadHandler() http.Handler {
	if o.read == nil {
		return nil
	}
	return o.read
}

// MetricsHandler returns the handler of /metrics: the latest outputs of src
// under the current names, the incident series of inc (when not nil), then
// the metrics of the registry.
func (o *Outputs) MetricsHandler(src metrics.SnapshotSource, inc metrics.IncidentSource) http.Handler {
	return metrics.Handler(o.Names, src, inc, o.reg)
}

// Start starts the remote writers. Records appended before Start wait in
// their queues. Start after Stop does nothing. It returns the error of a
// disk queue that could not be opened; that remote then queues in memory
// only.
func (o *Outputs) Start() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started || o.stopped {
		return nil
	}
	o.started = true
	return o.fanout.Start()
}

// Reload applies what cfg changes at run time. New output names apply at
// once (to /metrics and to the whole history, which is keyed without them).
// When remote_write or output changed, it builds new remote writers, swaps
// them in under the running shards, stops the old ones, which flush for at
// most reloadStopTimeout (with a disk queue: write their queues to disk),
// and then starts the new ones, which take over the disk queues of the
// remotes they keep; records wait in the new queues meanwhile. History settings need a restart: a change is
// logged and kept for later. cfg must be validated with defaults applied.
// On error the running writers stay, and the next Reload compares with the
// config before this one; new output names are applied before the writers
// are built, so they stay too.
func (o *Outputs) Reload(cfg *config.Config) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stopped {
		return errors.New("cannot reload the outputs: they are stopped")
	}
	if cfg.History != o.cfg.History {
		o.logger.Warn("history settings changed; they take effect after a restart (the history is kept across reloads)")
	}
	if cfg.Output != o.cfg.Output {
		names := namesOf(&cfg.Output)
		o.names.Store(&names)
	}
	// Compare values, not String(): String hides secrets, and a changed
	// password must rebuild the clients.
	if !reflect.DeepEqual(o.cfg.RemoteWrite, cfg.RemoteWrite) || cfg.Output != o.cfg.Output {
		fan, err := remotewrite.NewFanout(cfg.RemoteWrite, namesOf(&cfg.Output), o.queueDir, o.reg, o.logger)
		if err != nil {
			return fmt.Errorf("cannot set up remote_write: %w", err)
		}
		old := o.fanout
		o.to.Store(o.boxFor(fan))
		o.fanout = fan
		ctx, cancel := context.WithTimeout(context.Background(), reloadStopTimeout)
		old.Stop(ctx)
		cancel()
		old.ForgetRemoved(fan)
		if o.started {
			// After the old writers released their disk queues.
			if err := fan.Start(); err != nil {
				o.cfg = cfg
				return err
			}
		}
	}
	o.cfg = cfg
	return nil
}

// Stop stops the remote writers: later records are dropped and counted, and
// what is queued is flushed until ctx ends (see remotewrite.RemoteWriter.Stop).
// The history keeps answering reads.
func (o *Outputs) Stop(ctx context.Context) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopped = true
	o.fanout.Stop(ctx)
}
