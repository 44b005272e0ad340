package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/incident"
)

// Rule actions.
const (
	ActionAnalyse = "analyse" // run the detectors on the series (default)
	ActionIgnore  = "ignore"  // drop the series: no state, no output
)

// Remote-write protobuf messages, spelt as in Prometheus's protobuf_message.
const (
	RemoteWriteProtoMsgV1 = wire.MessageWriteV1 // remote write 1.0 (default)
	RemoteWriteProtoMsgV2 = wire.MessageWriteV2 // remote write 2.0
)

// Default values. Each block's defaults apply key by key: a block that sets
// one key keeps the defaults of the others.
var (
	// DefaultIngestConfig limits what one remote-write request may carry.
	DefaultIngestConfig = IngestConfig{
		// 32 MiB = 32 × 1024 × 1024 = 33 554 432 bytes, the limit of
		// Prometheus's own receiver (storage/remote decodeReadLimit). Snappy
		// output is at most 32 + n + n/6 bytes for n input bytes, so a body
		// this large decodes to at least 6/7 × 32 MiB ≈ 27 MiB: the decoded
		// limit does the real work, this one stops garbage early.
		MaxCompressedBytes: 32 << 20,
		// 32 MiB: a Prometheus request carries at most max_samples_per_send =
		// 2000 series; at ~300 B of labels and sample per series (remote write
		// 1.0 repeats the labels in every request) that is ~600 KB, so 32 MiB
		// leaves ~50× headroom for senders with bigger batches (vmagent).
		MaxDecodedBytes: 32 << 20,
		// 64 = about twice Mimir's max_label_names_per_series (30).
		MaxLabelsPerSeries: 64,
		// 1024 bytes, as Mimir's max_label_name_length.
		MaxLabelNameLength: 1024,
		// 4096 bytes = 2 × Mimir's max_label_value_length (2048).
		MaxLabelValueLength: 4096,
		// 10m, as Mimir's creation_grace_period: generous for clock skew,
		// short enough that a wrong clock is noticed.
		MaxFuture: model.Duration(10 * time.Minute),
	}

	// DefaultWindowConfig sizes the shards.
	DefaultWindowConfig = WindowConfig{
		// 0 = GOMAXPROCS at start-up: one shard goroutine per core.
		Shards: 0,
		// 64 batches per shard. A batch is one request's share for the shard
		// (at most a few thousand samples). Prometheus sends up to 50 requests
		// at once (its default max_shards), so 64 absorbs one sender at full
		// parallelism without a 503. Worst case, every sample of every batch
		// in one shard: 64 × 2000 samples × 24 B (ref, t, v) ≈ 3 MB.
		QueueSize: 64,
		// 1 000 000 series. At the default detectors a series holds ~1 KiB
		// (30-sample ring × 16 B = 480 B, 2 × 24 Holt-Winters slots × 8 B =
		// 384 B, running sums, labels), so ~1 GiB at the limit.
		MaxSeries: 1_000_000,
		// 15m = 60 missed scrapes at 15 s, or 7 at 2 m: a restarted target or
		// a few failed scrapes keep their history; a series gone for longer
		// starts again from warm-up.
		SeriesTTL: model.Duration(15 * time.Minute),
		// 1s: /metrics is at most 1 s behind the shards; one snapshot per
		// shard per second is cheap.
		PublishInterval: model.Duration(time.Second),
	}

	// DefaultRule is the built-in rule list's only entry: classic histogram
	// buckets are cumulative counters whose shape changes with every
	// deployment; scoring each le bucket floods the output and says little the
	// _count and _sum series do not. A `rules:` list in the file replaces it.
	DefaultRule = Rule{Match: `{__name__=~".+_bucket"}`, Action: ActionIgnore}

	// DefaultExcludeProducts select the series alerting and recording rules
	// produce: ALERTS and ALERTS_FOR_STATE, and recording rules' outputs,
	// whose names contain a colon (level:metric:operations). They are
	// derived from other series (often from anomalyd's own scores) and
	// analysing them feeds anomalyd's results back into its input.
	// DefaultExclude adds the output series names to them.
	DefaultExcludeProducts = []string{
		`{__name__=~"ALERTS|ALERTS_FOR_STATE"}`,
		`{__name__=~".*:.*"}`,
	}

	// DefaultOutputConfig names the output series.
	DefaultOutputConfig = OutputConfig{
		ScoreName:    "anomaly_score",
		ExpectedName: "anomaly_expected",
		LowerName:    "anomaly_lower",
		UpperName:    "anomaly_upper",
		PerDetector:  false, // only detector="combined": 4 output series per input series, not 4 × 6
		// false: the driver series add one output series per input series
		// and enabled detector (4 + 4 with the default detectors), and most
		// users look at the score alone.
		Driver:     false,
		DriverName: "anomaly_driver",
		// true: expected value and band of a counter are of its per-second
		// rate, which no PromQL rate() reproduces sample for sample, so a
		// plot of the band needs the value it bounds.
		Value:     true,
		ValueName: "anomaly_value",
	}

	// DefaultRemoteWriteConfig is the default of each remote_write entry.
	DefaultRemoteWriteConfig = RemoteWriteConfig{
		HTTPClientConfig: HTTPClientConfig{RemoteTimeout: model.Duration(30 * time.Second), Client: DefaultClientConfig}, // 30s as Prometheus
		QueueConfig:      DefaultQueueConfig,
		ProtobufMessage:  RemoteWriteProtoMsgV1, // every store that accepts remote write accepts 1.0
	}

	// DefaultQueueConfig sizes the send queues of one remote_write entry.
	DefaultQueueConfig = QueueConfig{
		// 100 000 output samples per queue. One input sample gives 4 output
		// samples (score, expected, lower, upper; × 6 with per_detector; + 1
		// per enabled detector with driver; + 1 for a series analysed as a
		// rate, with value), so
		// a queue holds 25 000 input samples: a 30 s store outage at
		// 25 000 / 30 s ≈ 833 input samples/s per queue, e.g. ~800 series at
		// 1 s resolution or ~12 500 at a 15 s scrape interval (× max_shards
		// for all queues). Memory: 100 000 × ~32 B ≈ 3 MB per queue.
		Capacity: 100_000,
		// 4 queues, each with one request in flight: at ~100 ms per request,
		// 4 × 2000 samples / 0.1 s = 80 000 output samples/s
		// = 20 000 input samples/s.
		MaxShards: 4,
		// 2000, as Prometheus: ~2000 × 100 B ≈ 200 KB before snappy.
		MaxSamplesPerSend: 2000,
		// 5s, as Prometheus: a quiet queue still sends within 5 s.
		BatchSendDeadline: model.Duration(5 * time.Second),
		// 30ms doubling to 5s, as Prometheus: 30 ms × 2^8 = 7.7 s, so the
		// ninth attempt waits the full 5 s.
		MinBackoff: model.Duration(30 * time.Millisecond),
		MaxBackoff: model.Duration(5 * time.Second),
		// false, as Prometheus: a 429 asks for less traffic, and retrying
		// would hold the queue behind data the store refused.
		RetryOnRateLimit: false,
		// 1 GiB per remote, used only with --storage.path: enough for
		// about an hour of store outage at 100k input series
		// (docs/configuration.md has the arithmetic), and small beside a
		// Prometheus's own disk.
		MaxDiskUsageBytes: 1 << 30,
	}
)

// minSeriesTTL bounds window.series_ttl from below. A TTL shorter than the
// scrape interval would evict every series between two samples, so no
// detector would ever leave warm-up; 1m covers scrape intervals up to 1m.
const minSeriesTTL = model.Duration(time.Minute)

// reservedHeaders may not be set in remote_write headers: the sender sets
// them, or they are hop-by-hop. Authorization is reported on its own.
// Lower case; compared case-insensitively. Prometheus's list, plus
// Retry-Attempt.
var reservedHeaders = map[string]bool{
	"authorization":                     true,
	"host":                              true,
	"content-encoding":                  true,
	"content-length":                    true,
	"content-type":                      true,
	"user-agent":                        true,
	"connection":                        true,
	"keep-alive":                        true,
	"proxy-authenticate":                true,
	"proxy-authorization":               true,
	"www-authenticate":                  true,
	"accept-encoding":                   true,
	"x-prometheus-remote-write-version": true,
	"x-prometheus-remote-read-version":  true,
	"retry-attempt":                     true,
}

// Default returns the configuration used when no file is given: every series
// analysed with detectors.DefaultParams except those DefaultExclude selects
// and classic histogram buckets (DefaultRule), output on /metrics only (no
// remote_write). Each call returns a new Config the caller owns.
func Default() *Config {
	r := DefaultRule
	c := &Config{
		Ingest:    DefaultIngestConfig,
		Window:    DefaultWindowConfig,
		Detectors: detectors.DefaultParams(),
		Exclude:   DefaultExclude(&DefaultOutputConfig),
		Rules:     []*Rule{&r},
		Output:    DefaultOutputConfig,
		Warmup:    DefaultWarmupConfig,
		History:   DefaultHistoryConfig,
		Incidents: DefaultIncidentsConfig,
		HA:        DefaultHAConfig,
	}
	c.Incidents.GroupBy = slices.Clone(DefaultIncidentsConfig.GroupBy)
	r.Detectors = c.Detectors
	r.Incidents.GroupBy = slices.Clone(c.Incidents.GroupBy)
	if err := c.validate(); err != nil {
		panic("BUG: invalid default config: " + err.Error())
	}
	return c
}

// DefaultExclude returns the exclude list used when a file has no `exclude`
// key: DefaultExcludeProducts, then one selector for the output series names
// of o (anomaly_score, anomaly_expected, …) and the incident series
// (incident.Names), so that scores scraped from /metrics and
// remote-written back are never scored again.
func DefaultExclude(o *OutputConfig) []string {
	names := append(o.seriesNames(), incident.Names...)
	for i, n := range names {
		names[i] = regexp.QuoteMeta(n) // output names are metric names: QuoteMeta changes nothing
	}
	own := fmt.Sprintf(`{__name__=~%q}`, strings.Join(names, "|"))
	return append(slices.Clone(DefaultExcludeProducts), own)
}

// Warnings are what is valid but probably a mistake in c, one sentence
// each, naming the key: anomalyd logs them at start and on reload, and
// `anomalyd check config` prints them.
func (c *Config) Warnings() []string {
	var ws []string
	var missed []string
	for _, name := range append(c.Output.seriesNames(), incident.Names...) {
		if !c.Excluded(func(l string) string {
			if l == labels.MetricName {
				return name
			}
			return ""
		}) {
			missed = append(missed, name)
		}
	}
	if len(missed) > 0 {
		ws = append(ws, fmt.Sprintf("exclude does not select the output series %s: a Prometheus that scrapes anomalyd and remote-writes to it without dropping them (write_relabel_configs) feeds anomalyd its own scores, whose labels then nest (exported_exported_metric); a list in the file replaces the default exclude list, so repeat its entries", strings.Join(missed, ", ")))
	}
	return ws
}

// Excluded reports whether the exclude list selects the series whose label
// values get returns ("" for an absent label, as in Prometheus).
func (c *Config) Excluded(get func(name string) string) bool {
	return MatchesAny(c.ExcludeMatchers, get)
}

// Load parses and validates the YAML configuration s. Unknown keys are
// errors. Keys left out, or left empty (`ingest:` with nothing under it), take
// their defaults. An empty document gives Default().
func Load(s []byte) (*Config, error) {
	// Decoding into a pointer tells an explicit `null` document, which yaml
	// would otherwise decode as a zero Config, from a missing one.
	cfg := Default()
	if err := yaml.UnmarshalStrict(s, &cfg); err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = Default()
	}
	cfg.original = string(s)
	return cfg, nil
}

// LoadFile reads, parses and validates the configuration file at path.
// Relative file names in it (password_file, credentials_file, ca_file,
// cert_file, key_file) are resolved against the file's directory.
func LoadFile(path string) (*Config, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config file: %w", err)
	}
	cfg, err := Load(content)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML file %s: %w", path, err)
	}
	cfg.setDirectory(filepath.Dir(path))
	return cfg, nil
}

// String returns the effective configuration as YAML, defaults filled in and
// secrets (passwords, credentials) replaced by <secret>. Load accepts it.
func (c *Config) String() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Sprintf("<error creating config string: %s>", err)
	}
	return string(b)
}

// RuleFor returns the first rule whose selector matches the series whose
// labels get returns, or nil when none does (the series is then analysed
// with c.Detectors).
func (c *Config) RuleFor(get func(name string) string) *Rule {
	for _, r := range c.Rules {
		if r.Matches(get) {
			return r
		}
	}
	return nil
}

// Config is the whole configuration file. The zero value is not valid; use
// Load, LoadFile or Default. A Config from these is complete and valid, is
// not modified afterwards and may be shared between goroutines.
type Config struct {
	Ingest    IngestConfig     `yaml:"ingest"`
	Window    WindowConfig     `yaml:"window"`
	Detectors detectors.Params `yaml:"detectors"`
	// Exclude are series selectors of series never analysed, whatever the
	// rules say (DefaultExclude when the key is absent; `exclude: []`
	// analyses everything).
	Exclude     []string             `yaml:"exclude"`
	Rules       []*Rule              `yaml:"rules"`
	Output      OutputConfig         `yaml:"output"`
	RemoteWrite []*RemoteWriteConfig `yaml:"remote_write"`
	Warmup      WarmupConfig         `yaml:"warmup"`
	History     HistoryConfig        `yaml:"history"`
	Incidents   IncidentsConfig      `yaml:"incidents"`
	HA          HAConfig             `yaml:"ha"`

	// ExcludeMatchers are parsed from Exclude at load time, one list per
	// selector.
	ExcludeMatchers [][]*labels.Matcher `yaml:"-"`

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
	PublishInterval model.Duration `yaml:"publish_interval"` // a /metrics scrape sees outputs at most this old; shards copy their outputs for readers at most this often
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
	// Incidents are the top-level incidents settings a rule may override
	// (group_by), with this rule's override applied.
	Incidents RuleIncidentsConfig `yaml:"incidents"`

	// Matchers are parsed from Match at load time.
	Matchers []*labels.Matcher `yaml:"-"`

	// overrides and incidentOverrides decode the rule's own `detectors:`
	// and `incidents:` blocks; Config.UnmarshalYAML applies them to copies
	// of the top-level settings and then clears them.
	overrides, incidentOverrides func(any) error
}

// RuleIncidentsConfig is what a rule may override of the top-level
// incidents block: group_by alone. A series' group is decided per series,
// by its rule; the other keys tune a group or the whole stage, and a group
// may hold the series of several rules.
type RuleIncidentsConfig struct {
	// GroupBy are the label names whose values make the incident group of
	// the rule's series (IncidentsConfig.GroupBy). A group is its label
	// set: series of two rules with the same values of the same group
	// labels are in one group.
	GroupBy []string `yaml:"group_by"`
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
	// Driver adds the driver series, a state set: per input series and
	// detector enabled for it, DriverName{detector="<kind>"} is 1 for the
	// detector that drove the combined score and 0 for the others.
	Driver     bool   `yaml:"driver"`
	DriverName string `yaml:"driver_name"` // default anomaly_driver
	// Value adds the value series of every series analysed as a
	// per-second rate (a counter, or a gauge that only grows): ValueName
	// is that rate, the value Expected, Lower and Upper bound. Other
	// series' analysed value is the input itself.
	Value     bool   `yaml:"value"`
	ValueName string `yaml:"value_name"` // default anomaly_value
}

// seriesNames returns the names of every output series o may produce.
func (o *OutputConfig) seriesNames() []string {
	return []string{o.ScoreName, o.ExpectedName, o.LowerName, o.UpperName, o.DriverName, o.ValueName}
}

// RemoteWriteConfig is one store anomalyd sends its output series to. Keys
// mirror Prometheus's remote_write block where they exist.
type RemoteWriteConfig struct {
	HTTPClientConfig `yaml:",inline"`
	Name             string      `yaml:"name"`
	QueueConfig      QueueConfig `yaml:"queue_config"`
	ProtobufMessage  string      `yaml:"protobuf_message"` // prometheus.WriteRequest (default) or io.prometheus.write.v2.Request
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
	// MaxDiskUsageBytes bounds the disk queue of the remote (with
	// --storage.path); past it the oldest blocks are dropped and counted.
	// 0 keeps the queue in memory only.
	MaxDiskUsageBytes int64 `yaml:"max_disk_usage_bytes"`
}

// MinDiskUsageBytes is the smallest queue_config.max_disk_usage_bytes other
// than 0: room for a few segments of a few requests in each queue.
const MinDiskUsageBytes = 1 << 20

// lazy keeps a YAML value to be decoded later, into a value chosen later.
// yaml.v2 hands every UnmarshalYAML a function that decodes the node under it
// with the same decoder, so calling it after the fact still reports the
// node's own line numbers and is still strict. A lazy left empty (key absent
// or null) decodes nothing.
type lazy struct{ unmarshal func(any) error }

func (l *lazy) UnmarshalYAML(unmarshal func(any) error) error {
	l.unmarshal = unmarshal
	return nil
}

// decodeState decodes lazies, gathering yaml.v2 type errors (each names its
// line) so that they are reported together, in line order, as yaml.v2 does.
type decodeState struct{ typeErrs []string }

// decode decodes l into v. A type error is kept for later; any other error
// (a bad duration, say) is returned prefixed with path, the key it came from.
func (st *decodeState) decode(path string, l lazy, v any) error {
	if l.unmarshal == nil {
		return nil
	}
	err := l.unmarshal(v)
	if te, ok := err.(*yaml.TypeError); ok {
		st.typeErrs = append(st.typeErrs, te.Errors...)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func (st *decodeState) err() error {
	if len(st.typeErrs) == 0 {
		return nil
	}
	slices.SortStableFunc(st.typeErrs, func(a, b string) int { return errLine(a) - errLine(b) })
	return &yaml.TypeError{Errors: st.typeErrs}
}

// errLine is N in a yaml.v2 error "line N: …", or 0.
func errLine(s string) int {
	s, ok := strings.CutPrefix(s, "line ")
	if !ok {
		return 0
	}
	n, _ := strconv.Atoi(s[:strings.IndexByte(s+":", ':')])
	return n
}

// topLevel is a config file with every block still undecoded.
type topLevel struct {
	ingest, window, detectors, output lazy
	warmup, history, incidents, ha    lazy
	rules                             *[]lazy   // nil: absent or null; empty: `rules: []`
	exclude                           *[]string // nil: absent or null; empty: `exclude: []`
	remoteWrite                       []lazy
}

func readTopLevel(unmarshal func(any) error) (*topLevel, error) {
	// Named after the public types so that strict-mode errors read
	// "field x not found in type config.Config" and
	// "cannot unmarshal !!str `x` into []config.Rule".
	type (
		Rule              struct{ lazy }
		RemoteWriteConfig struct{ lazy }
		Config            struct {
			Ingest      lazy                `yaml:"ingest"`
			Window      lazy                `yaml:"window"`
			Detectors   lazy                `yaml:"detectors"`
			Exclude     *[]string           `yaml:"exclude"`
			Rules       *[]Rule             `yaml:"rules"`
			Output      lazy                `yaml:"output"`
			RemoteWrite []RemoteWriteConfig `yaml:"remote_write"`
			Warmup      lazy                `yaml:"warmup"`
			History     lazy                `yaml:"history"`
			Incidents   lazy                `yaml:"incidents"`
			HA          lazy                `yaml:"ha"`
		}
	)
	var raw Config
	if err := unmarshal(&raw); err != nil {
		return nil, err
	}
	t := &topLevel{ingest: raw.Ingest, window: raw.Window, detectors: raw.Detectors, output: raw.Output,
		warmup: raw.Warmup, history: raw.History, exclude: raw.Exclude, incidents: raw.Incidents, ha: raw.HA}
	if raw.Rules != nil {
		rules := make([]lazy, len(*raw.Rules))
		for i, r := range *raw.Rules {
			rules[i] = r.lazy
		}
		t.rules = &rules
	}
	for _, rw := range raw.RemoteWrite {
		t.remoteWrite = append(t.remoteWrite, rw.lazy)
	}
	return t, nil
}

// UnmarshalYAML implements yaml.Unmarshaler. It applies the defaults, decodes
// the blocks and validates the result.
//
// The top-level keys are first kept undecoded, then decoded in a fixed order,
// because a rule's detectors inherit from the top-level detectors block
// wherever that appears in the file, and because an error inside a list
// entry should name its index (rules[2], remote_write[0]).
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = *Default()
	raw, err := readTopLevel(unmarshal)
	if err != nil {
		return err
	}

	var st decodeState
	if err := st.decode("ingest", raw.ingest, &c.Ingest); err != nil {
		return err
	}
	if err := st.decode("window", raw.window, &c.Window); err != nil {
		return err
	}
	if err := st.decode("detectors", raw.detectors, &c.Detectors); err != nil {
		return err
	}
	if raw.rules != nil {
		c.Rules = make([]*Rule, len(*raw.rules))
		for i, l := range *raw.rules {
			r := &Rule{Action: ActionAnalyse} // a null entry decodes nothing
			if err := st.decode(fmt.Sprintf("rules[%d]", i), l, r); err != nil {
				return err
			}
			c.Rules[i] = r
		}
	}
	for i, r := range c.Rules {
		p := c.Detectors
		if err := st.decode(fmt.Sprintf("rules[%d].detectors", i), lazy{r.overrides}, &p); err != nil {
			return err
		}
		r.Detectors, r.overrides = p, nil
	}
	if err := st.decode("output", raw.output, &c.Output); err != nil {
		return err
	}
	c.Exclude = DefaultExclude(&c.Output)
	if raw.exclude != nil {
		c.Exclude = *raw.exclude
	}
	for i, l := range raw.remoteWrite {
		rw := new(RemoteWriteConfig)
		*rw = DefaultRemoteWriteConfig // a null entry decodes nothing
		if err := st.decode(fmt.Sprintf("remote_write[%d]", i), l, rw); err != nil {
			return err
		}
		c.RemoteWrite = append(c.RemoteWrite, rw)
	}
	if err := st.decode("warmup", raw.warmup, &c.Warmup); err != nil {
		return err
	}
	if err := st.decode("history", raw.history, &c.History); err != nil {
		return err
	}
	if err := st.decode("incidents", raw.incidents, &c.Incidents); err != nil {
		return err
	}
	if err := st.decode("ha", raw.ha, &c.HA); err != nil {
		return err
	}
	// A rule's group_by, like its detectors, is inherited unless the rule
	// sets it, from the top-level incidents block wherever that is.
	for i, r := range c.Rules {
		ri := RuleIncidentsConfig{GroupBy: slices.Clone(c.Incidents.GroupBy)}
		if err := st.decode(fmt.Sprintf("rules[%d].incidents", i), lazy{r.incidentOverrides}, &ri); err != nil {
			return err
		}
		r.Incidents, r.incidentOverrides = ri, nil
	}
	if err := st.err(); err != nil {
		return err
	}
	return c.validate()
}

// validate checks c and fills in what is derived from it: rule matchers,
// remote_write names and the default authorization type. Errors name the key.
func (c *Config) validate() error {
	if err := c.Ingest.validate(); err != nil {
		return err
	}
	if err := c.Window.validate(); err != nil {
		return err
	}
	if err := c.Detectors.Validate(); err != nil {
		return fmt.Errorf("detectors: %w", err)
	}
	// Before the rules, which inherit incidents.group_by: an invalid
	// top-level value is reported at its own key, not at a rule's.
	if err := c.Incidents.validate(); err != nil {
		return err
	}
	c.ExcludeMatchers = c.ExcludeMatchers[:0]
	for i, sel := range c.Exclude {
		ms, err := ParseSelector(sel)
		if err != nil {
			return fmt.Errorf("exclude[%d]: %w", i, err)
		}
		c.ExcludeMatchers = append(c.ExcludeMatchers, ms)
	}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("rules[%d]: %w", i, err)
		}
		if err := r.Detectors.Validate(); err != nil {
			return fmt.Errorf("rules[%d].detectors: %w", i, err)
		}
		if err := validateGroupBy(fmt.Sprintf("rules[%d].incidents.group_by", i), r.Incidents.GroupBy); err != nil {
			return err
		}
	}
	if err := c.Output.validate(); err != nil {
		return err
	}
	names := make(map[string]int, len(c.RemoteWrite))
	for i, rw := range c.RemoteWrite {
		generated := rw.Name == ""
		if err := rw.validate(); err != nil {
			return fmt.Errorf("remote_write[%d]: %w", i, err)
		}
		if j, dup := names[rw.Name]; dup {
			if generated && rw.URL == c.RemoteWrite[j].URL {
				return fmt.Errorf("remote_write[%d]: same url as remote_write[%d]; give them distinct names to send twice", i, j)
			}
			return fmt.Errorf("remote_write[%d]: duplicate name %q (also used by remote_write[%d])", i, rw.Name, j)
		}
		names[rw.Name] = i
	}
	if err := c.Warmup.validate(); err != nil {
		return err
	}
	if err := c.HA.validate(); err != nil {
		return err
	}
	return c.History.validate()
}

// setDirectory resolves relative file names against dir.
func (c *Config) setDirectory(dir string) {
	for _, rw := range c.RemoteWrite {
		rw.setDirectory(dir)
	}
	if c.Warmup.RemoteRead != nil {
		c.Warmup.RemoteRead.setDirectory(dir)
	}
}

func (c *IngestConfig) validate() error {
	for _, f := range []struct {
		key string
		v   int64
	}{
		{"max_compressed_bytes", c.MaxCompressedBytes},
		{"max_decoded_bytes", c.MaxDecodedBytes},
		{"max_labels_per_series", int64(c.MaxLabelsPerSeries)},
		{"max_label_name_length", int64(c.MaxLabelNameLength)},
		{"max_label_value_length", int64(c.MaxLabelValueLength)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("ingest.%s must be positive, got %d", f.key, f.v)
		}
	}
	if c.MaxFuture <= 0 {
		return fmt.Errorf("ingest.max_future must be positive, got %s", c.MaxFuture)
	}
	return nil
}

func (c *WindowConfig) validate() error {
	switch {
	case c.Shards < 0:
		return fmt.Errorf("window.shards must not be negative, got %d", c.Shards)
	case c.QueueSize < 1:
		return fmt.Errorf("window.queue_size must be at least 1, got %d", c.QueueSize)
	case c.MaxSeries <= 0:
		return fmt.Errorf("window.max_series must be positive, got %d", c.MaxSeries)
	case c.SeriesTTL < minSeriesTTL:
		return fmt.Errorf("window.series_ttl must be at least %s, got %s", minSeriesTTL, c.SeriesTTL)
	case c.PublishInterval <= 0:
		return fmt.Errorf("window.publish_interval must be positive, got %s", c.PublishInterval)
	}
	return nil
}

func (c *OutputConfig) validate() error {
	names := [...]struct{ key, v string }{
		{"score_name", c.ScoreName},
		{"expected_name", c.ExpectedName},
		{"lower_name", c.LowerName},
		{"upper_name", c.UpperName},
		{"driver_name", c.DriverName},
		{"value_name", c.ValueName},
	}
	for i, n := range names {
		if !model.LegacyValidation.IsValidMetricName(n.v) {
			return fmt.Errorf("output.%s %q is not a valid metric name", n.key, n.v)
		}
		for _, m := range names[:i] {
			if m.v == n.v {
				return fmt.Errorf("output.%s and output.%s are both %q", m.key, n.key, n.v)
			}
		}
	}
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler. It sets the default action and
// keeps the rule's `detectors:` and `incidents:` blocks undecoded:
// Config.UnmarshalYAML applies them over the top-level settings once those
// are known. A Rule is only meaningful decoded as part of a Config.
func (r *Rule) UnmarshalYAML(unmarshal func(any) error) error {
	// Named Rule so that strict-mode errors read "… in type config.Rule".
	type Rule struct {
		Match     string `yaml:"match"`
		Action    string `yaml:"action"`
		Detectors lazy   `yaml:"detectors"`
		Incidents lazy   `yaml:"incidents"`
	}
	raw := Rule{Action: ActionAnalyse}
	if err := unmarshal(&raw); err != nil {
		return err
	}
	r.Match, r.Action = raw.Match, raw.Action
	r.overrides, r.incidentOverrides = raw.Detectors.unmarshal, raw.Incidents.unmarshal
	r.Detectors, r.Incidents, r.Matchers = detectors.Params{}, RuleIncidentsConfig{}, nil
	return nil
}

// validate parses Match into Matchers and checks Action. Detectors are
// checked by the caller, whose error names the detectors key.
func (r *Rule) validate() error {
	if strings.TrimSpace(r.Match) == "" {
		return fmt.Errorf("match is required")
	}
	ms, err := ParseSelector(r.Match)
	if err != nil {
		return fmt.Errorf("match: %w", err)
	}
	r.Matchers = ms
	if r.Action != ActionAnalyse && r.Action != ActionIgnore {
		return fmt.Errorf("action must be %q or %q, got %q", ActionAnalyse, ActionIgnore, r.Action)
	}
	return nil
}

// Matches reports whether every matcher of r matches the series whose label
// values get returns (MatchesAll). Matches may be called from several
// goroutines at once.
func (r *Rule) Matches(get func(name string) string) bool { return MatchesAll(r.Matchers, get) }

// MatchesAny reports whether the series whose label values get returns
// matches any of the selectors sels, as a list of selectors (match[] in
// Prometheus's API, the exclude list) selects; none selects nothing.
func MatchesAny(sels [][]*labels.Matcher, get func(name string) string) bool {
	for _, ms := range sels {
		if MatchesAll(ms, get) {
			return true
		}
	}
	return false
}

// MatchesAll reports whether every matcher of a selector ms matches the
// series whose label values get returns; get returns "" for an absent
// label, as in Prometheus, so `{job=""}` selects series without a job. No
// matchers match everything.
func MatchesAll(ms []*labels.Matcher, get func(name string) string) bool {
	for _, m := range ms {
		if !m.Matches(get(m.Name)) {
			return false
		}
	}
	return true
}

// UnmarshalYAML implements yaml.Unmarshaler. Keys not given, or given with an
// empty value, keep the values *c had before (DefaultRemoteWriteConfig when
// decoded as part of a Config); queue_config keys default one by one.
// Validation is left to Config, whose errors name the entry's index.
func (c *RemoteWriteConfig) UnmarshalYAML(unmarshal func(any) error) error {
	// Every field points into c: yaml.v2 overwrites a field with its zero
	// value for an explicit null, but here it only clears the pointer.
	// Named RemoteWriteConfig so that strict-mode errors read
	// "… in type config.RemoteWriteConfig".
	type RemoteWriteConfig struct {
		Name            *string      `yaml:"name"`
		QueueConfig     *QueueConfig `yaml:"queue_config"`
		ProtobufMessage *string      `yaml:"protobuf_message"`
		Client          clientKeys   `yaml:",inline"`
	}
	raw := RemoteWriteConfig{
		Name:            &c.Name,
		QueueConfig:     &c.QueueConfig,
		ProtobufMessage: &c.ProtobufMessage,
		Client:          newClientKeys(&c.HTTPClientConfig),
	}
	if err := unmarshal(&raw); err != nil {
		return err
	}
	return raw.Client.apply(&c.HTTPClientConfig)
}

// validate checks c, names it after its URL if it has no name and sets the
// default authorization type. Errors are relative to the entry.
func (c *RemoteWriteConfig) validate() error {
	if err := c.HTTPClientConfig.validate(); err != nil {
		return err
	}
	if c.Name == "" {
		// Like Prometheus, which hashes the whole entry: a stable name for
		// the remote label that does not leak the url.
		sum := sha256.Sum256([]byte(c.URL))
		c.Name = hex.EncodeToString(sum[:])[:6]
	}
	if c.ProtobufMessage != RemoteWriteProtoMsgV1 && c.ProtobufMessage != RemoteWriteProtoMsgV2 {
		return fmt.Errorf("protobuf_message must be %s or %s, got %q", RemoteWriteProtoMsgV1, RemoteWriteProtoMsgV2, c.ProtobufMessage)
	}
	return c.QueueConfig.validate()
}

func (c *QueueConfig) validate() error {
	for _, f := range []struct {
		key string
		v   int
	}{
		{"capacity", c.Capacity},
		{"max_shards", c.MaxShards},
		{"max_samples_per_send", c.MaxSamplesPerSend},
	} {
		if f.v <= 0 {
			return fmt.Errorf("queue_config.%s must be positive, got %d", f.key, f.v)
		}
	}
	for _, f := range []struct {
		key string
		v   model.Duration
	}{
		{"batch_send_deadline", c.BatchSendDeadline},
		{"min_backoff", c.MinBackoff},
		{"max_backoff", c.MaxBackoff},
	} {
		if f.v <= 0 {
			return fmt.Errorf("queue_config.%s must be positive, got %s", f.key, f.v)
		}
	}
	if c.MaxSamplesPerSend > c.Capacity {
		// A batch could never fill up: every send would wait for the deadline.
		return fmt.Errorf("queue_config.max_samples_per_send (%d) must not exceed queue_config.capacity (%d)", c.MaxSamplesPerSend, c.Capacity)
	}
	if c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("queue_config.min_backoff (%s) must not exceed queue_config.max_backoff (%s)", c.MinBackoff, c.MaxBackoff)
	}
	if c.MaxDiskUsageBytes != 0 && c.MaxDiskUsageBytes < MinDiskUsageBytes {
		return fmt.Errorf("queue_config.max_disk_usage_bytes must be 0 (memory only) or at least %d (1 MiB), got %d", MinDiskUsageBytes, c.MaxDiskUsageBytes)
	}
	return nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
