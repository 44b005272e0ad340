package window

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/checkpoint"
)

// Checkpointer keeps the shards' state on disk: it restores it at start,
// checkpoints it every interval while the server runs and once more at
// shutdown, after the shards have drained. One checkpoint at a time; the
// shards take batches throughout (Shards.Checkpoint).
type Checkpointer struct {
	shards *Shards
	// inc is the incident stage, whose state goes to incDir (nil: none).
	inc      *Incidents
	dir      string
	incDir   string
	interval time.Duration
	logger   *zap.Logger

	mu     sync.Mutex // one checkpoint at a time
	cancel context.CancelFunc
	done   chan struct{}

	duration, size, series, lastSuccess   prometheus.Gauge
	failures                              prometheus.Counter
	restored, restoreDuration, restoreAge prometheus.Gauge
	restoreFailed                         *prometheus.CounterVec
}

// NewCheckpointer returns a Checkpointer of shards and the incident stage
// inc (nil: none) into dir (which must exist), every interval (0: only at
// shutdown). The incident stage's state goes to the subdirectory
// incidents, created here.
func NewCheckpointer(shards *Shards, inc *Incidents, dir string, interval time.Duration, reg *prometheus.Registry, logger *zap.Logger) (*Checkpointer, error) {
	incDir := filepath.Join(dir, "incidents")
	if err := os.MkdirAll(incDir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create the incident checkpoint directory: %w", err)
	}
	return &Checkpointer{
		shards: shards, inc: inc, dir: dir, incDir: incDir, interval: interval, logger: logger,
		duration:    promreg.NewGauge(reg, "anomalyd_checkpoint_duration_seconds", "How long the last checkpoint took to write."),
		size:        promreg.NewGauge(reg, "anomalyd_checkpoint_size_bytes", "Size of the last checkpoint on disk."),
		series:      promreg.NewGauge(reg, "anomalyd_checkpoint_series", "Series in the last checkpoint."),
		lastSuccess: promreg.NewGauge(reg, "anomalyd_checkpoint_last_success_timestamp_seconds", "When the last checkpoint was completed; 0 before the first."),
		failures:    promreg.NewCounter(reg, "anomalyd_checkpoint_failures_total", "Checkpoints that failed; the shards concerned keep their previous checkpoint."),
		restored:    promreg.NewGauge(reg, "anomalyd_checkpoint_restored_series", "Series whose state was restored at start."),
		restoreDuration: promreg.NewGauge(reg, "anomalyd_checkpoint_restore_duration_seconds",
			"How long restoring the state took at start."),
		restoreAge: promreg.NewGauge(reg, "anomalyd_checkpoint_restore_age_seconds",
			"Age at start of the oldest checkpoint restored: the most the restored state lags; 0 when nothing was restored."),
		restoreFailed: promreg.NewCounterVec(reg, "anomalyd_checkpoint_restore_failures_total",
			"Checkpoint files that could not be restored at start, by cause; their series started cold.", "reason"),
	}, nil
}

// Restore loads the state saved last into the incident stage and the
// shards, neither of which may have started, and starts the incident
// stage: the restored series rejoin their groups through it. It logs what
// it restored and every file it could not.
func (c *Checkpointer) Restore() RestoreInfo {
	start := time.Now()
	if c.inc != nil {
		if err := c.restoreIncidents(); err != nil {
			c.restoreFailed.WithLabelValues(restoreFailure(err)).Inc()
			c.logger.Error("cannot restore the incident stage's state; open incidents and each group's learnt rates start over",
				zap.String("reason", restoreFailure(err)), zap.Error(err))
		}
		c.inc.Start()
	}
	ri := c.shards.Restore(c.dir, start)
	if c.inc != nil {
		c.inc.RestoreDone()
	}
	took := time.Since(start)
	c.restored.Set(float64(ri.Series))
	c.restoreDuration.Set(took.Seconds())
	for _, err := range ri.Failed {
		reason := restoreFailure(err)
		c.restoreFailed.WithLabelValues(reason).Inc()
		c.logger.Error("cannot restore a checkpoint; its series start cold", zap.String("reason", reason), zap.Error(err))
	}
	if ri.Files == 0 {
		c.logger.Info("no state to restore: every series starts cold", zap.String("dir", c.dir))
		return ri
	}
	age := start.Sub(ri.Oldest)
	c.restoreAge.Set(max(age.Seconds(), 0))
	c.logger.Info("state restored", zap.Int("series", ri.Series), zap.Int("files", ri.Files),
		zap.Int("skipped", ri.Skipped), zap.Duration("age", age.Round(time.Second)), zap.Duration("took", took))
	return ri
}

// restoreIncidents restores the incident stage from the one record of its
// newest checkpoint, if there is one.
func (c *Checkpointer) restoreIncidents() error {
	path, ok, err := checkpoint.Latest(c.incDir, 0, 1)
	if err != nil || !ok {
		return err
	}
	r, err := checkpoint.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	rec, err := r.Next()
	rec = slices.Clone(rec) // Next reuses its buffer, and the trailer is read next
	if err == nil {
		if _, err = r.Next(); err == nil {
			err = fmt.Errorf("checkpoint %s: %w: more than one record", path, checkpoint.ErrCorrupt)
		} else if errors.Is(err, io.EOF) {
			err = nil
		}
	} else if errors.Is(err, io.EOF) {
		err = fmt.Errorf("checkpoint %s: %w: no record", path, checkpoint.ErrCorrupt)
	}
	if err != nil {
		return err
	}
	if err := c.inc.Restore(rec); err != nil {
		return fmt.Errorf("checkpoint %s: %w: %w", path, checkpoint.ErrCorrupt, err)
	}
	return nil
}

// restoreFailure names the cause of a restore error for the reason label.
func restoreFailure(err error) string {
	var se *checkpoint.ShardMismatchError
	switch {
	case errors.Is(err, checkpoint.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, checkpoint.ErrTruncated):
		return "truncated"
	case errors.Is(err, checkpoint.ErrUnknownVersion):
		return "unknown_version"
	case errors.As(err, &se):
		return "shard_mismatch"
	}
	return "io"
}

// Start checkpoints every interval until Stop; nothing with interval 0.
func (c *Checkpointer) Start() {
	if c.interval <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		tick := time.NewTicker(c.interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				c.Checkpoint(ctx)
			}
		}
	}()
}

// Stop ends the periodic checkpoints, abandoning one in progress (its
// shards keep their previous checkpoint): at shutdown the final one
// follows at once.
func (c *Checkpointer) Stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
		c.cancel = nil
	}
}

// Checkpoint writes a checkpoint now and records how it went.
func (c *Checkpointer) Checkpoint(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	info, err := c.shards.Checkpoint(ctx, c.dir, start)
	if c.inc != nil && ctx.Err() == nil {
		n, ierr := c.checkpointIncidents(start)
		info.Bytes += n
		err = errors.Join(err, ierr)
	}
	took := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return err // stopped for the checkpoint at shutdown: not a failure
		}
		c.failures.Inc()
		c.logger.Error("checkpoint failed; the shards concerned keep their previous one", zap.String("dir", c.dir), zap.Error(err))
		return fmt.Errorf("cannot checkpoint the series state: %w", err)
	}
	c.duration.Set(took.Seconds())
	c.size.Set(float64(info.Bytes))
	c.series.Set(float64(info.Series))
	c.lastSuccess.Set(float64(time.Now().UnixMilli()) / 1000)
	c.logger.Debug("checkpoint written", zap.Int("series", info.Series), zap.Int64("bytes", info.Bytes), zap.Duration("took", took))
	return nil
}

// checkpointIncidents writes the incident stage's state as the one record
// of its checkpoint and returns the file's size.
func (c *Checkpointer) checkpointIncidents(now time.Time) (int64, error) {
	state, err := c.inc.State()
	if err != nil {
		return 0, fmt.Errorf("incident stage: %w", err)
	}
	w, err := checkpoint.Create(c.incDir, 0, 1, now)
	if err != nil {
		return 0, fmt.Errorf("incident stage: %w", err)
	}
	defer w.Abort()
	if err := w.Append(state); err != nil {
		return 0, fmt.Errorf("incident stage: %w", err)
	}
	info, err := w.Commit()
	if err != nil {
		return info.Bytes, fmt.Errorf("incident stage: %w", err)
	}
	return info.Bytes, nil
}
