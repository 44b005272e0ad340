package config

import (
	"fmt"
	"time"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"
)

var (
	// DefaultWarmupConfig leaves warm-up off (no remote_read) and sizes it
	// for when it is turned on.
	DefaultWarmupConfig = WarmupConfig{
		// 0: the longest Holt-Winters season over the detectors block and
		// the rules, plus DefaultWarmupMargin (see WarmupConfig.LookbackFor).
		Lookback: 0,
		// 4 requests in flight: Prometheus answers remote read from one
		// goroutine per request; 4 keeps a 2-core Prometheus responsive.
		Concurrency: 4,
		// 100 series per request: one query per series, so a request of
		// 100 × 1 day at 15 s ≈ 576 000 samples ≈ 1 MB of XOR chunks.
		SeriesPerRequest: 100,
		// 1000 series/s: a restart with 100 000 series is warm in ~2 min
		// and a burst of new series cannot flood Prometheus.
		MaxSeriesPerSecond: 1000,
		// 64 MiB of decoded responses in flight over all requests, and the
		// limit of one response (a response larger than this is an error).
		MaxBytes: 64 << 20,
		// 100 000 series waiting for history; beyond that, new series start
		// cold (anomalyd_warmup_series_total{result="skipped"}).
		MaxPending: 100_000,
		// 64 live samples held per warming series (16 min at 15 s); a
		// series whose history takes longer gives up waiting and starts
		// with what it has (its buffered samples are fed, nothing lost).
		MaxBufferedSamples: 64,
	}

	// DefaultWarmupRemoteRead is the default of warmup.remote_read.
	DefaultWarmupRemoteRead = HTTPClientConfig{
		RemoteTimeout: model.Duration(time.Minute), // as Prometheus's remote_read
		Client:        DefaultClientConfig,
	}

	// DefaultHistoryConfig keeps no output samples: the history is off
	// unless history.retention is set.
	DefaultHistoryConfig = HistoryConfig{
		// Off: a user with a store has the scores there (they are on
		// /metrics and remote write), and keeping every output series
		// costs more CPU and memory per series than the detectors do.
		// 1h is the value to set for Grafana's default "last 1 hour".
		Retention: 0,
		// 100 000 input series: at 1h and a 15 s interval the history
		// holds ~12 KiB per input series (4 output series of XOR chunks
		// at ~6.5 bytes a sample, go test ./sink/history -run TestHistoryMemoryPerSeries), so
		// ≤ ~1.2 GiB however many series anomalyd analyses; a quarter more
		// if all are counters (output.value adds a fifth series).
		MaxSeries: 100_000,
		// 10, as Prometheus's --storage.remote.read-concurrent-limit.
		MaxConcurrentReads: 10,
		// 32 MiB decoded request, as Prometheus's remote-read handler limit
		// (decodeReadLimit).
		MaxDecodedBytes: 32 << 20,
		// 50 000 000 samples per query, as Prometheus's
		// --storage.remote.read-sample-limit (SAMPLES responses only).
		MaxSamplesPerQuery: 50_000_000,
		// 1 MiB, as Prometheus's --storage.remote.read-max-bytes-in-frame.
		MaxBytesInFrame: 1 << 20,
	}
)

// DefaultWarmupMargin is added to the longest season for the default
// lookback: one detector window at up to a 2-minute scrape interval
// (30 samples × 2 m).
const DefaultWarmupMargin = time.Hour

// WarmupConfig reads each analysed series' history from a Prometheus
// remote-read endpoint when the series first appears, so its detectors start
// warm. Without remote_read, warm-up is off.
type WarmupConfig struct {
	RemoteRead *HTTPClientConfig `yaml:"remote_read,omitempty"` // Prometheus's /api/v1/read; nil: warm-up off
	// Lookback is how much history is read; 0: LookbackFor's default.
	Lookback           model.Duration `yaml:"lookback"`
	Concurrency        int            `yaml:"concurrency"`           // remote-read requests in flight
	SeriesPerRequest   int            `yaml:"series_per_request"`    // queries (one per series) per request
	MaxSeriesPerSecond float64        `yaml:"max_series_per_second"` // rate limit on series read
	MaxBytes           int64          `yaml:"max_bytes"`             // decoded response bytes in flight, and per response
	MaxPending         int            `yaml:"max_pending"`           // series waiting; beyond it new series start cold
	MaxBufferedSamples int            `yaml:"max_buffered_samples"`  // live samples held per warming series
}

// Enabled reports whether warm-up is configured.
func (c *WarmupConfig) Enabled() bool { return c.RemoteRead != nil }

// LookbackFor returns the history to read: Lookback if set, else the longest
// Holt-Winters season of cfg's detectors and rules plus DefaultWarmupMargin.
func (c *WarmupConfig) LookbackFor(cfg *Config) time.Duration {
	if c.Lookback > 0 {
		return time.Duration(c.Lookback)
	}
	var season time.Duration
	consider := func(p *detectors.Params) {
		if p.HoltWinters.Enabled && time.Duration(p.HoltWinters.Season) > season {
			season = time.Duration(p.HoltWinters.Season)
		}
	}
	consider(&cfg.Detectors)
	for _, r := range cfg.Rules {
		if r.Action == ActionAnalyse {
			consider(&r.Detectors)
		}
	}
	return season + DefaultWarmupMargin
}

// UnmarshalYAML implements yaml.Unmarshaler: keys left out keep the values
// *c had (DefaultWarmupConfig when decoded as part of a Config), and
// remote_read keys default one by one (DefaultWarmupRemoteRead).
func (c *WarmupConfig) UnmarshalYAML(unmarshal func(any) error) error {
	// Named WarmupConfig so that strict-mode errors read
	// "… in type config.WarmupConfig".
	type WarmupConfig struct {
		RemoteRead         *lazy           `yaml:"remote_read"`
		Lookback           *model.Duration `yaml:"lookback"`
		Concurrency        *int            `yaml:"concurrency"`
		SeriesPerRequest   *int            `yaml:"series_per_request"`
		MaxSeriesPerSecond *float64        `yaml:"max_series_per_second"`
		MaxBytes           *int64          `yaml:"max_bytes"`
		MaxPending         *int            `yaml:"max_pending"`
		MaxBufferedSamples *int            `yaml:"max_buffered_samples"`
	}
	raw := WarmupConfig{
		Lookback:           &c.Lookback,
		Concurrency:        &c.Concurrency,
		SeriesPerRequest:   &c.SeriesPerRequest,
		MaxSeriesPerSecond: &c.MaxSeriesPerSecond,
		MaxBytes:           &c.MaxBytes,
		MaxPending:         &c.MaxPending,
		MaxBufferedSamples: &c.MaxBufferedSamples,
	}
	if err := unmarshal(&raw); err != nil {
		return err
	}
	if raw.RemoteRead != nil && raw.RemoteRead.unmarshal != nil {
		rr := DefaultWarmupRemoteRead
		// Named HTTPClientConfig for the same reason as above.
		type HTTPClientConfig struct {
			Client clientKeys `yaml:",inline"`
		}
		keys := HTTPClientConfig{Client: newClientKeys(&rr)}
		if err := raw.RemoteRead.unmarshal(&keys); err != nil {
			return err
		}
		if err := keys.Client.apply(&rr); err != nil {
			if _, ok := err.(*yaml.TypeError); ok {
				return err // names its line
			}
			return fmt.Errorf("remote_read: %w", err)
		}
		c.RemoteRead = &rr
	}
	return nil
}

func (c *WarmupConfig) validate() error {
	if c.RemoteRead != nil {
		if err := c.RemoteRead.validate(); err != nil {
			return fmt.Errorf("warmup.remote_read: %w", err)
		}
	}
	for _, f := range []struct {
		key string
		v   int64
	}{
		{"concurrency", int64(c.Concurrency)},
		{"series_per_request", int64(c.SeriesPerRequest)},
		{"max_bytes", c.MaxBytes},
		{"max_pending", int64(c.MaxPending)},
		{"max_buffered_samples", int64(c.MaxBufferedSamples)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("warmup.%s must be positive, got %d", f.key, f.v)
		}
	}
	if !(c.MaxSeriesPerSecond > 0) {
		return fmt.Errorf("warmup.max_series_per_second must be positive, got %g", c.MaxSeriesPerSecond)
	}
	return nil
}

// HistoryConfig keeps recent output samples in memory and serves them on
// POST /api/v1/read, so a Prometheus with remote_read can query scores that
// were never written to a store.
type HistoryConfig struct {
	// Retention is how long output samples are kept, counted back from the
	// newest sample appended (data time, not the wall clock); 0s turns the
	// history and /api/v1/read off.
	Retention model.Duration `yaml:"retention"`
	// MaxSeries bounds the input series whose outputs are kept (the first
	// seen); the outputs of others are counted and not kept.
	MaxSeries          int   `yaml:"max_series"`
	MaxConcurrentReads int   `yaml:"max_concurrent_reads"`  // reads beyond this wait
	MaxDecodedBytes    int64 `yaml:"max_decoded_bytes"`     // of a read request; 400 above
	MaxSamplesPerQuery int   `yaml:"max_samples_per_query"` // SAMPLES responses; 400 above
	MaxBytesInFrame    int   `yaml:"max_bytes_in_frame"`    // STREAMED_XOR_CHUNKS frame size
}

// Enabled reports whether the history is kept.
func (c *HistoryConfig) Enabled() bool { return c.Retention > 0 }

func (c *HistoryConfig) validate() error {
	for _, f := range []struct {
		key string
		v   int64
	}{
		{"max_series", int64(c.MaxSeries)},
		{"max_concurrent_reads", int64(c.MaxConcurrentReads)},
		{"max_decoded_bytes", c.MaxDecodedBytes},
		{"max_samples_per_query", int64(c.MaxSamplesPerQuery)},
		{"max_bytes_in_frame", int64(c.MaxBytesInFrame)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("history.%s must be positive, got %d", f.key, f.v)
		}
	}
	return nil
}
