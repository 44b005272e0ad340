package window

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/sink/selfmon"
	"github.com/anomalyd/anomalyd/window/checkpoint"
)

// Checkpointer keeps the shards' state on disk: it restores it at start,
// checkpoints it every interval while the server runs and once more at
// shutdown, after the shards have drained. One checkpoint at a time; the
// shards take batches throughout (Shards.Checkpoint).
type Checkpointer struct {
	shards   *Shards
	dir      string
	interval time.Duration
	logger   *zap.Logger

	mu     sync.Mutex // one checkpoint at a time
	cancel context.CancelFunc
	done   chan struct{}

	duration, size, series, lastSuccess   *selfmon.Gauge
	failures                              *selfmon.Counter
	restored, restoreDuration, restoreAge *selfmon.Gauge
	restoreFailed                         *selfmon.CounterVec
}

// NewCheckpointer returns a Checkpointer of shards into dir (which must
// exist), every interval (0: only at shutdown).
func NewCheckpointer(shards *Shards, dir string, interval time.Duration, reg *selfmon.Registry, logger *zap.Logger) *Checkpointer {
	return &Checkpointer{
		shards: shards, dir: dir, interval: interval, logger: logger,
		duration:    reg.NewGauge("anomalyd_checkpoint_duration_seconds", "How long the last checkpoint took to write."),
		size:        reg.NewGauge("anomalyd_checkpoint_size_bytes", "Size of the last checkpoint on disk."),
		series:      reg.NewGauge("anomalyd_checkpoint_series", "Series in the last checkpoint."),
		lastSuccess: reg.NewGauge("anomalyd_checkpoint_last_success_timestamp_seconds", "When the last checkpoint was completed; 0 before the first."),
		failures:    reg.NewCounter("anomalyd_checkpoint_failures_total", "Checkpoints that failed; the shards concerned keep their previous checkpoint."),
		restored:    reg.NewGauge("anomalyd_checkpoint_restored_series", "Series whose state was restored at start."),
		restoreDuration: reg.NewGauge("anomalyd_checkpoint_restore_duration_seconds",
			"How long restoring the state took at start."),
		restoreAge: reg.NewGauge("anomalyd_checkpoint_restore_age_seconds",
			"Age at start of the oldest checkpoint restored: the most the restored state lags; 0 when nothing was restored."),
		restoreFailed: reg.NewCounterVec("anomalyd_checkpoint_restore_failures_total",
			"Checkpoint files that could not be restored at start, by cause; their series started cold.", "reason"),
	}
}

// Restore loads the state saved last into the shards, which must not have
// started, logging what it restored and every file it could not.
func (c *Checkpointer) Restore() RestoreInfo {
	start := time.Now()
	ri := c.shards.Restore(c.dir, start)
	took := time.Since(start)
	c.restored.Set(float64(ri.Series))
	c.restoreDuration.Set(took.Seconds())
	for _, err := range ri.Failed {
		reason := restoreFailure(err)
		c.restoreFailed.With(reason).Inc()
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
