// Package config holds anomalyd's YAML configuration: the structs, their
// defaults, strict parsing and validation. See doc.go.
package config

import (
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/detectors"
)

// Config is the whole configuration file. The zero value is not valid; use
// Load, LoadFile or Default.
type Config struct {
	Ingest      IngestConfig         `yaml:"ingest"`
	Window      WindowConfig         `yaml:"window"`
	Detectors   detectors.Params     `yaml:"detectors"`
	Rules       []*Rule              `yaml:"rules"`
	Output      OutputConfig         `yaml:"output"`
	RemoteWrite []*RemoteWriteConfig `yaml:"remote_write"`

	// original is the text the config was loaded from (empty for Default).
	original string
}

// IngestConfig limits what one remote-write request may carry.
type IngestConfig struct {
	MaxCompressedBytes  int64          `yaml:"max_compressed_bytes"`   // 413 above this
	MaxDecodedBytes     int64          `yaml:"max_decoded_bytes"`      // 400 above this, checked before allocating
	MaxLabelsPerSeries  int            `yaml:"max_labels_per_series"`  // series with more are invalid (400)
	MaxLabelNameLength  int            `yaml:"max_label_name_length"`  // bytes
	MaxLabelValueLength int            `yaml:"max_label_value_length"` // bytes
	MaxFuture           model.Duration `yaml:"max_future"`             // samples further ahead are invalid (400)
}

// WindowConfig configures the shards that hold per-series state.
type WindowConfig struct {
	Shards          int            `yaml:"shards"`           // 0 = GOMAXPROCS
	QueueSize       int            `yaml:"queue_size"`       // batches buffered per shard before 503
	MaxSeries       int            `yaml:"max_series"`       // series tracked in all; new ones beyond are counted, not tracked
	SeriesTTL       model.Duration `yaml:"series_ttl"`       // idle series are evicted after this
	PublishInterval model.Duration `yaml:"publish_interval"` // how often shards publish the snapshot /metrics reads
}

// Rule selects series and says whether and how they are analysed. Rules are
// tried in order; the first whose selector matches a series decides. A series
// no rule matches is analysed with the top-level detectors settings.
type Rule struct {
	// Match is a Prometheus series selector: `{__name__=~"http_.*", job="api"}`
	// or `http_requests_total{job="api"}`.
	Match string `yaml:"match"`
	// Action is "analyse" (default) or "ignore".
	Action string `yaml:"action"`
	// Detectors are the top-level detectors settings with this rule's
	// overrides applied: keys the rule does not set are inherited.
	Detectors detectors.Params `yaml:"detectors"`

	// Matchers are parsed from Match at load time.
	Matchers []*labels.Matcher `yaml:"-"`
}

// OutputConfig names the output series.
type OutputConfig struct {
	ScoreName    string `yaml:"score_name"`    // default anomaly_score
	ExpectedName string `yaml:"expected_name"` // default anomaly_expected
	LowerName    string `yaml:"lower_name"`    // default anomaly_lower
	UpperName    string `yaml:"upper_name"`    // default anomaly_upper
	// PerDetector adds one series per single detector (detector="ewma", …)
	// beside detector="combined".
	PerDetector bool `yaml:"per_detector"`
}

// RemoteWriteConfig is one store anomalyd sends its output series to. Keys
// mirror Prometheus's remote_write block where they exist.
type RemoteWriteConfig struct {
	URL             string            `yaml:"url"`
	Name            string            `yaml:"name"`
	RemoteTimeout   model.Duration    `yaml:"remote_timeout"`
	Headers         map[string]string `yaml:"headers"`
	BasicAuth       *BasicAuth        `yaml:"basic_auth"`
	Authorization   *Authorization    `yaml:"authorization"`
	TLSConfig       TLSConfig         `yaml:"tls_config"`
	QueueConfig     QueueConfig       `yaml:"queue_config"`
	ProtobufMessage string            `yaml:"protobuf_message"` // prometheus.WriteRequest (default) or io.prometheus.write.v2.Request
}

// BasicAuth as in Prometheus: password or password_file, not both.
type BasicAuth struct {
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Authorization as in Prometheus: type (default Bearer) and credentials or credentials_file.
type Authorization struct {
	Type            string `yaml:"type"`
	Credentials     string `yaml:"credentials"`
	CredentialsFile string `yaml:"credentials_file"`
}

// TLSConfig as in Prometheus.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// QueueConfig as in Prometheus, except that the number of send queues is
// fixed (MaxShards) so a series always goes through the same queue.
type QueueConfig struct {
	Capacity          int            `yaml:"capacity"`             // samples buffered per queue; beyond it new samples are dropped and counted
	MaxShards         int            `yaml:"max_shards"`           // number of send queues (fixed)
	MaxSamplesPerSend int            `yaml:"max_samples_per_send"` // samples per request
	BatchSendDeadline model.Duration `yaml:"batch_send_deadline"`  // send a partial batch after this
	MinBackoff        model.Duration `yaml:"min_backoff"`
	MaxBackoff        model.Duration `yaml:"max_backoff"`
	RetryOnRateLimit  bool           `yaml:"retry_on_http_429"`
}
