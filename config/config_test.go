package config

import (
	"crypto/tls"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"

	"github.com/anomalyd/anomalyd/detectors"
)

// badConfigs pins every error message to a testdata/*.bad.yml file. The
// message is what LoadFile returns after "parsing YAML file testdata/F: ".
var badConfigs = []struct {
	file, err string
}{
	{"syntax.bad.yml", "yaml: line 2: did not find expected key"},
	{"unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 2: field windows not found in type config.Config"},
	{"duplicate_key.bad.yml", "yaml: unmarshal errors:\n  line 3: field window already set in type config.Config"},
	{"not_a_map.bad.yml", "yaml: unmarshal errors:\n  line 1: cannot unmarshal !!seq into config.Config"},
	{"type_errors.bad.yml", "yaml: unmarshal errors:\n  line 2: cannot unmarshal !!str `many` into int\n  line 5: field alpah not found in type detectors.EWMAParams\n  line 7: field max_fture not found in type config.IngestConfig"},
	{"ingest_max_compressed_bytes.bad.yml", "ingest.max_compressed_bytes must be positive, got 0"},
	{"ingest_max_decoded_bytes.bad.yml", "ingest.max_decoded_bytes must be positive, got -1"},
	{"ingest_max_labels_per_series.bad.yml", "ingest.max_labels_per_series must be positive, got 0"},
	{"ingest_max_label_name_length.bad.yml", "ingest.max_label_name_length must be positive, got 0"},
	{"ingest_max_label_value_length.bad.yml", "ingest.max_label_value_length must be positive, got 0"},
	{"ingest_max_future.bad.yml", "ingest.max_future must be positive, got 0s"},
	{"ingest_bad_duration.bad.yml", "ingest: unknown unit \"x\" in duration \"5x\""},
	{"ingest_null_leaf.bad.yml", "ingest.max_future must be positive, got 0s"},
	{"window_shards.bad.yml", "window.shards must not be negative, got -1"},
	{"window_queue_size.bad.yml", "window.queue_size must be at least 1, got 0"},
	{"window_max_series.bad.yml", "window.max_series must be positive, got 0"},
	{"window_series_ttl.bad.yml", "window.series_ttl must be at least 1m, got 30s"},
	{"window_publish_interval.bad.yml", "window.publish_interval must be positive, got 0s"},
	{"detectors_ewma_alpha.bad.yml", "detectors: ewma.alpha must be in (0, 1), got 1.5"},
	{"detectors_window.bad.yml", "detectors: window must be between 3 and 1024, got 2"},
	{"detectors_entropy_window.bad.yml", "detectors: entropy.window must be between 4 and 64, got 100"},
	{"detectors_entropy_bins.bad.yml", "detectors: entropy.bins must be between 2 and 8, got 1"},
	{"detectors_entropy_regimes.bad.yml", "detectors: entropy.regimes must be between 1 and 16, got 0"},
	{"detectors_entropy_slow_scale.bad.yml", "detectors: entropy.slow_scale must be 0 (off) or between 2 and 255, got 1"},
	{"detectors_entropy_slow_regimes.bad.yml", "detectors: entropy.slow_regimes must be between 1 and 16, got 17"},
	{"detectors_entropy_record_k.bad.yml", "detectors: entropy.record_k must be 0 (off) or positive, got -1"},
	{"detectors_none_enabled.bad.yml", "detectors: at least one detector must be enabled"},
	{"detectors_calibration_k.bad.yml", "detectors: calibration.k must be positive, got 0"},
	{"detectors_bad_duration.bad.yml", "detectors: unknown unit \" day\" in duration \"1 day\""},
	{"rules_not_a_list.bad.yml", "yaml: unmarshal errors:\n  line 2: cannot unmarshal !!map into []config.Rule"},
	{"rules_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 2: field matcher not found in type config.Rule"},
	{"rules_match_required.bad.yml", "rules[1]: match is required"},
	{"rules_null_entry.bad.yml", "rules[0]: match is required"},
	{"rules_bad_selector.bad.yml", "rules[0]: match: 1:6: parse error: unexpected identifier \"api\" in label matching, expected string"},
	{"rules_bad_regex.bad.yml", "rules[0]: match: 1:4: parse error: error parsing regexp: missing closing ): `(api`"},
	{"rules_action.bad.yml", "rules[0]: action must be \"analyse\" or \"ignore\", got \"analyze\""},
	{"rules_detectors.bad.yml", "rules[1].detectors: ewma.alpha must be in (0, 1), got 1.5"},
	{"rules_detectors_inherited.bad.yml", "rules[0].detectors: at least one detector must be enabled"},
	{"rules_detectors_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 5: field alpah not found in type detectors.EWMAParams"},
	{"rules_detectors_bad_duration.bad.yml", "rules[1].detectors: unknown unit \"x\" in duration \"5x\""},
	{"rules_incidents_group_by_empty.bad.yml", "rules[1].incidents.group_by must name at least one label"},
	{"rules_incidents_group_by_name.bad.yml", `rules[0].incidents.group_by[0]: "__name__" is not a label name other than __name__`},
	{"rules_incidents_group_by_twice.bad.yml", `rules[0].incidents.group_by[2]: "pod" is listed twice`},
	{"rules_incidents_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 5: field min_score not found in type config.RuleIncidentsConfig"},
	{"output_invalid_name.bad.yml", "output.score_name \"anomaly.score\" is not a valid metric name"},
	{"output_empty_name.bad.yml", "output.upper_name \"\" is not a valid metric name"},
	{"output_duplicate_names.bad.yml", "output.lower_name and output.upper_name are both \"anomaly_lower\""},
	{"output_driver_name_invalid.bad.yml", "output.driver_name \"anomaly-driver\" is not a valid metric name"},
	{"output_driver_name_duplicate.bad.yml", "output.score_name and output.driver_name are both \"anomaly_score\""},
	{"output_driver_type.bad.yml", "yaml: unmarshal errors:\n  line 2: cannot unmarshal !!str `sometimes` into bool"},
	{"rw_not_a_list.bad.yml", "yaml: unmarshal errors:\n  line 2: cannot unmarshal !!map into []config.RemoteWriteConfig"},
	{"rw_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 3: field queue not found in type config.RemoteWriteConfig"},
	{"rw_queue_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 4: field max_samples not found in type config.QueueConfig"},
	{"rw_url_required.bad.yml", "remote_write[0]: url is required"},
	{"rw_url_scheme.bad.yml", "remote_write[0]: unsupported url scheme \"ftp\""},
	{"rw_url_invalid.bad.yml", "remote_write[0]: url: parse \"http://a b/\": invalid character \" \" in host name"},
	{"rw_url_no_host.bad.yml", "remote_write[0]: url \"http:///api/v1/write\" has no host"},
	{"rw_url_credentials.bad.yml", "remote_write[0]: url must not contain credentials; use basic_auth"},
	{"rw_remote_timeout.bad.yml", "remote_write[0]: remote_timeout must be positive, got 0s"},
	{"rw_bad_duration.bad.yml", "remote_write[1]: not a valid duration string: \"soon\""},
	{"rw_protobuf_message.bad.yml", "remote_write[0]: protobuf_message must be prometheus.WriteRequest or io.prometheus.write.v2.Request, got \"x\""},
	{"rw_header_reserved.bad.yml", "remote_write[0]: headers: \"content-type\" is set by anomalyd and cannot be changed"},
	{"rw_header_authorization.bad.yml", "remote_write[0]: headers: set Authorization with basic_auth, authorization or oauth2, not headers"},
	{"rw_header_name.bad.yml", "remote_write[0]: headers: invalid header name \"X Tenant\""},
	{"rw_header_value.bad.yml", "remote_write[0]: headers: value of \"X-Tenant\" contains a line break or NUL"},
	{"rw_basic_and_authorization.bad.yml", "remote_write[0]: basic_auth and authorization must not both be set"},
	{"rw_basic_password_twice.bad.yml", "remote_write[0]: basic_auth: password and password_file must not both be set"},
	{"rw_authorization_basic.bad.yml", "remote_write[0]: authorization: type \"basic\" is not allowed; use basic_auth"},
	{"rw_authorization_type.bad.yml", "remote_write[0]: authorization: invalid type \"Bearer token\""},
	{"rw_authorization_credentials_twice.bad.yml", "remote_write[0]: authorization: credentials and credentials_file must not both be set"},
	{"rw_authorization_no_credentials.bad.yml", "remote_write[0]: authorization: credentials or credentials_file is required"},
	{"rw_tls_cert_without_key.bad.yml", "remote_write[0]: tls_config: cert_file and key_file must be set together"},
	{"rw_queue_capacity.bad.yml", "remote_write[0]: queue_config.capacity must be positive, got 0"},
	{"rw_queue_max_shards.bad.yml", "remote_write[0]: queue_config.max_shards must be positive, got 0"},
	{"rw_queue_max_samples_per_send.bad.yml", "remote_write[0]: queue_config.max_samples_per_send must be positive, got -5"},
	{"rw_queue_batch_send_deadline.bad.yml", "remote_write[0]: queue_config.batch_send_deadline must be positive, got 0s"},
	{"rw_queue_min_backoff.bad.yml", "remote_write[0]: queue_config.min_backoff must be positive, got 0s"},
	{"rw_queue_max_backoff.bad.yml", "remote_write[0]: queue_config.max_backoff must be positive, got 0s"},
	{"rw_queue_samples_over_capacity.bad.yml", "remote_write[0]: queue_config.max_samples_per_send (5000) must not exceed queue_config.capacity (1000)"},
	{"rw_queue_backoff_order.bad.yml", "remote_write[0]: queue_config.min_backoff (10s) must not exceed queue_config.max_backoff (5s)"},
	{"rw_queue_max_disk_usage_bytes.bad.yml", "remote_write[0]: queue_config.max_disk_usage_bytes must be 0 (memory only) or at least 1048576 (1 MiB), got 1000"},
	{"rw_duplicate_name.bad.yml", "remote_write[2]: duplicate name \"store\" (also used by remote_write[0])"},
	{"rw_same_url.bad.yml", "remote_write[1]: same url as remote_write[0]; give them distinct names to send twice"},
	{"rw_header_duplicate.bad.yml", "yaml: unmarshal errors:\n  line 5: key \"X-Tenant\" already set in map"},
	{"warmup_concurrency.bad.yml", "warmup.concurrency must be positive, got 0"},
	{"warmup_lookback.bad.yml", `warmup: not a valid duration string: "-1h"`},
	{"warmup_rate.bad.yml", "warmup.max_series_per_second must be positive, got 0"},
	{"warmup_remote_read_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 4: field queue_config not found in type config.HTTPClientConfig"},
	{"warmup_remote_read_url.bad.yml", `warmup.remote_read: unsupported url scheme "ftp"`},
	{"history_max_bytes_in_frame.bad.yml", "history.max_bytes_in_frame must be positive, got 0"},
	{"history_max_series.bad.yml", "history.max_series must be positive, got 0"},
	{"history_retention.bad.yml", `history: not a valid duration string: "-1h"`},
	{"history_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 2: field retension not found in type config.HistoryConfig"},
	{"incidents_group_by_empty.bad.yml", "incidents.group_by must name at least one label"},
	{"incidents_group_by_name.bad.yml", `incidents.group_by[1]: "pod-name" is not a label name other than __name__`},
	{"ha_cluster_label.bad.yml", `ha.cluster_label: "prometheus-cluster" is not a label name other than __name__`},
	{"ha_replica_label_name.bad.yml", `ha.replica_label: "__name__" is not a label name other than __name__`},
	{"ha_same_labels.bad.yml", `ha.cluster_label and ha.replica_label are both "cluster"`},
	{"ha_failover_timeout.bad.yml", "ha.failover_timeout must be positive, got 0s"},
	{"ha_max_clusters.bad.yml", "ha.max_clusters must be positive, got 0"},
	{"ha_unknown_key.bad.yml", "yaml: unmarshal errors:\n  line 3: field failover not found in type config.HAConfig"},
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range badConfigs {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			c, err := LoadFile(path)
			if err == nil {
				t.Fatalf("LoadFile(%s): no error; got config\n%s", path, c)
			}
			want := "parsing YAML file " + path + ": " + tc.err
			if err.Error() != want {
				t.Errorf("LoadFile(%s):\ngot  %q\nwant %q", path, err.Error(), want)
			}
		})
	}

	// Every bad file has a case and every case a file.
	files, err := filepath.Glob("testdata/*.bad.yml")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{}
	for _, tc := range badConfigs {
		if cases[tc.file] {
			t.Errorf("%s: listed twice", tc.file)
		}
		cases[tc.file] = true
	}
	for _, f := range files {
		if !cases[filepath.Base(f)] {
			t.Errorf("%s has no case in badConfigs", f)
		}
		delete(cases, filepath.Base(f))
	}
	for f := range cases {
		t.Errorf("badConfigs lists %s, which does not exist", f)
	}
}

func TestDefault(t *testing.T) {
	d := Default()
	if err := d.validate(); err != nil {
		t.Fatalf("Default() is invalid: %s", err)
	}
	if d == Default() || d.Rules[0] == Default().Rules[0] {
		t.Fatal("Default() returned shared values; want a new Config per call")
	}
	if len(d.Rules) != 1 || d.Rules[0].Action != ActionIgnore || d.Rules[0].Match != `{__name__=~".+_bucket"}` {
		t.Fatalf("Default().Rules = %v; want the one bucket-ignoring rule", d.String())
	}
	if got := matcherStrings(d.Rules[0]); got != `__name__=~".+_bucket"` {
		t.Errorf("default rule matchers %s", got)
	}
	if d.RemoteWrite != nil {
		t.Errorf("Default().RemoteWrite = %v; want none", d.RemoteWrite)
	}
	wantExclude := []string{`{__name__=~"ALERTS|ALERTS_FOR_STATE"}`, `{__name__=~".*:.*"}`,
		`{__name__=~"anomaly_score|anomaly_expected|anomaly_lower|anomaly_upper|anomaly_driver|anomaly_value|anomaly_incident_score|anomaly_incident_series|anomaly_incident_open|anomaly_incidents_opened_total"}`}
	if !slices.Equal(d.Exclude, wantExclude) || len(d.ExcludeMatchers) != len(wantExclude) {
		t.Errorf("Default().Exclude = %q (%d matcher lists); want %q", d.Exclude, len(d.ExcludeMatchers), wantExclude)
	}

	for _, src := range []string{"", "\n", "# only a comment\n", "---\n", "~\n", "null\n", "{}\n"} {
		c, err := Load([]byte(src))
		if err != nil {
			t.Fatalf("Load(%q): %s", src, err)
		}
		assertEqual(t, "Load("+src+")", c, d)
	}
	for _, f := range []string{"empty.good.yml", "empty_blocks.good.yml"} {
		c, err := LoadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		assertEqual(t, f, c, d)
	}
}

// TestExclude: the exclude list selects products of alerting and recording
// rules and the output series by default, follows renamed outputs, and a
// file's own list (even an empty one) replaces it.
func TestExclude(t *testing.T) {
	excluded := func(c *Config, name string, extra ...string) bool {
		return c.Excluded(func(n string) string {
			if n == "__name__" {
				return name
			}
			for i := 0; i+1 < len(extra); i += 2 {
				if extra[i] == n {
					return extra[i+1]
				}
			}
			return ""
		})
	}
	for _, tc := range []struct {
		src      string
		excluded []string
		analysed []string
	}{
		{"", []string{"ALERTS", "ALERTS_FOR_STATE", "job:up:sum", "metric_job:anomaly_score:max", "anomaly_score",
			"anomaly_expected", "anomaly_lower", "anomaly_upper", "anomaly_driver", "anomaly_value"},
			[]string{"up", "node_cpu_seconds_total", "ALERTS_x", "anomaly_scores", "anomalyd_ingest_requests_total"}},
		{"output: {score_name: my_score}\n", []string{"my_score", "anomaly_expected", "ALERTS", "a:b"},
			[]string{"anomaly_score", "up"}},
		{"exclude: []\n", nil, []string{"ALERTS", "a:b", "anomaly_score"}},
		{"exclude: ['{job=\"prometheus\"}']\n", nil, []string{"ALERTS", "anomaly_score"}},
	} {
		c, err := Load([]byte(tc.src))
		if err != nil {
			t.Fatalf("Load(%q): %s", tc.src, err)
		}
		for _, n := range tc.excluded {
			if !excluded(c, n) {
				t.Errorf("Load(%q): %s is analysed; want it excluded", tc.src, n)
			}
		}
		for _, n := range tc.analysed {
			if excluded(c, n) {
				t.Errorf("Load(%q): %s is excluded; want it analysed", tc.src, n)
			}
		}
	}
	c, err := Load([]byte("exclude: ['{job=\"prometheus\"}']\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !excluded(c, "up", "job", "prometheus") || excluded(c, "up", "job", "node") {
		t.Errorf("exclude: [{job=\"prometheus\"}] does not select by job")
	}
	if ws := Default().Warnings(); len(ws) != 0 {
		t.Errorf("Default().Warnings() = %q; want none", ws)
	}
	for src, want := range map[string]string{
		"exclude: []\n": "anomaly_score, anomaly_expected, anomaly_lower, anomaly_upper, anomaly_driver, anomaly_value, anomaly_incident_score, anomaly_incident_series, anomaly_incident_open, anomaly_incidents_opened_total",
		"exclude: ['{__name__=~\"anomaly_(score|expected|incident.*|incidents.*)\"}']\n": "anomaly_lower, anomaly_upper, anomaly_driver, anomaly_value",
		"output: {upper_name: u}\nexclude: ['{__name__=~\"anomaly_.*\"}']\n":             "u",
	} {
		c, err := Load([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if ws := c.Warnings(); len(ws) != 1 || !strings.Contains(ws[0], "exclude does not select the output series "+want+":") {
			t.Errorf("Load(%q).Warnings() = %q; want one naming %s", src, ws, want)
		}
	}
	if _, err := Load([]byte("exclude: ['{__name__=~\"(\"}']\n")); err == nil || !strings.Contains(err.Error(), "exclude[0]") {
		t.Errorf("bad exclude selector: err %v; want one naming exclude[0]", err)
	}
}

func TestFullConfig(t *testing.T) {
	proxy, _ := url.Parse("http://proxy.example.com:3128")
	proxyURL := promcfg.URL{URL: proxy}
	proxyHeader := promcfg.ProxyHeader{"Proxy-Authorization": {"Basic YW5vbWFseWQ6aHVudGVyMg=="}}
	fullTLS := func(serverName string) promcfg.TLSConfig {
		return promcfg.TLSConfig{CAFile: "testdata/secrets/ca.pem", CertFile: "testdata/secrets/client.pem",
			KeyFile: "testdata/secrets/client-key.pem", ServerName: serverName,
			MinVersion: promcfg.TLSVersion(tls.VersionTLS12), MaxVersion: promcfg.TLSVersion(tls.VersionTLS13)}
	}
	rw := func(url, name string, client promcfg.HTTPClientConfig) *RemoteWriteConfig {
		return &RemoteWriteConfig{
			HTTPClientConfig: HTTPClientConfig{URL: url, RemoteTimeout: model.Duration(30 * time.Second), Client: client},
			Name:             name,
			QueueConfig:      DefaultQueueConfig,
			ProtobufMessage:  RemoteWriteProtoMsgV1,
		}
	}
	c, err := LoadFile("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	top := detectors.Params{
		Window: 60,
		Warmup: 20,
		EWMA:   detectors.EWMAParams{Enabled: true, Alpha: 0.2, K: 3.5},
		ZScore: detectors.ZScoreParams{Enabled: true, K: 3},
		HoltWinters: detectors.HoltWintersParams{
			Enabled: true, Alpha: 0.05, Beta: 0.01, Gamma: 0.2,
			Season: model.Duration(7 * 24 * time.Hour), SeasonBuckets: 42, K: 3,
		},
		Slope:       detectors.SlopeParams{Enabled: false, K: 5},
		Entropy:     detectors.EntropyParams{Enabled: false, Window: 20, Bins: 5, Regimes: 12, SlowScale: 4, SlowRegimes: 6, RecordK: 1.5},
		Calibration: detectors.CalibrationParams{Enabled: true, K: 4},
	}
	http := top
	http.EWMA.Alpha = 0.3
	http.HoltWinters.Season = model.Duration(24 * time.Hour)
	http.HoltWinters.SeasonBuckets = 24

	want := &Config{
		Ingest: IngestConfig{
			MaxCompressedBytes:  16 << 20,
			MaxDecodedBytes:     64 << 20,
			MaxLabelsPerSeries:  40,
			MaxLabelNameLength:  256,
			MaxLabelValueLength: 2048,
			MaxFuture:           model.Duration(5 * time.Minute),
		},
		Window: WindowConfig{
			Shards:          8,
			QueueSize:       128,
			MaxSeries:       200000,
			SeriesTTL:       model.Duration(30 * time.Minute),
			PublishInterval: model.Duration(2 * time.Second),
		},
		Detectors: top,
		Exclude: []string{`{__name__=~"ALERTS|ALERTS_FOR_STATE"}`, `{__name__=~".*:.*"}`,
			`{__name__=~"anomalyd_(score|expected|lower|upper|driver|value)", detector!=""}`},
		Rules: []*Rule{
			{Match: `{__name__=~".+_bucket"}`, Action: ActionIgnore, Detectors: top,
				Incidents: RuleIncidentsConfig{GroupBy: []string{"namespace", "pod"}}},
			{Match: `http_requests_total{job="api", code!~"5.."}`, Action: ActionAnalyse, Detectors: http,
				Incidents: RuleIncidentsConfig{GroupBy: []string{"namespace", "service"}}},
		},
		Output: OutputConfig{
			ScoreName:    "anomalyd_score",
			ExpectedName: "anomalyd_expected",
			LowerName:    "anomalyd_lower",
			UpperName:    "anomalyd_upper",
			PerDetector:  true,
			Driver:       true,
			DriverName:   "anomalyd_driver",
			Value:        false,
			ValueName:    "anomalyd_value",
		},
		RemoteWrite: []*RemoteWriteConfig{
			{
				HTTPClientConfig: HTTPClientConfig{
					URL:           "https://mimir.example.com/api/v1/push",
					RemoteTimeout: model.Duration(10 * time.Second),
					Headers:       map[string]string{"X-Scope-OrgID": "anomalyd"},
					Client: promcfg.HTTPClientConfig{
						BasicAuth: &promcfg.BasicAuth{Username: "anomalyd", PasswordFile: "testdata/secrets/mimir-password"},
						TLSConfig: fullTLS("mimir.internal"),
						ProxyConfig: promcfg.ProxyConfig{ProxyURL: proxyURL, NoProxy: "10.0.0.0/8,.internal",
							ProxyConnectHeader: proxyHeader},
						EnableHTTP2: true,
					},
				},
				Name: "mimir",
				QueueConfig: QueueConfig{
					Capacity:          50000,
					MaxShards:         2,
					MaxSamplesPerSend: 1000,
					BatchSendDeadline: model.Duration(2 * time.Second),
					MinBackoff:        model.Duration(50 * time.Millisecond),
					MaxBackoff:        model.Duration(10 * time.Second),
					RetryOnRateLimit:  true,
					MaxDiskUsageBytes: 256 << 20,
				},
				ProtobufMessage: RemoteWriteProtoMsgV2,
			},
			rw("http://victoriametrics:8428/api/v1/write", "e07efa", promcfg.HTTPClientConfig{ // e07efa pinned: the name is a label value of our metrics
				BasicAuth: &promcfg.BasicAuth{Username: "anomalyd", Password: "hunter2"}, EnableHTTP2: true}),
			rw("https://thanos.example.com/api/v1/receive", "af29f1", promcfg.HTTPClientConfig{
				Authorization: &promcfg.Authorization{Type: "Bearer", Credentials: "s3cr3t-token"}, EnableHTTP2: true}),
			rw("https://prometheus.example.com/api/v1/write", "c3f5d6", promcfg.HTTPClientConfig{
				Authorization: &promcfg.Authorization{Type: "Bearer", CredentialsFile: "testdata/secrets/prometheus-token"},
				ProxyConfig:   promcfg.ProxyConfig{ProxyFromEnvironment: true}, EnableHTTP2: true}),
			rw("https://cortex.example.com/api/v1/push", "58b381", promcfg.HTTPClientConfig{
				BasicAuth: &promcfg.BasicAuth{UsernameFile: "testdata/secrets/cortex-user", PasswordFile: "testdata/secrets/cortex-password"}, EnableHTTP2: true}),
			rw("https://grafana-cloud.example.com/api/prom/push", "44f44d", promcfg.HTTPClientConfig{
				OAuth2: &promcfg.OAuth2{
					ClientID: "anomalyd", ClientSecretFile: "testdata/secrets/oauth2-secret", Scopes: []string{"metrics.write"},
					TokenURL: "https://auth.example.com/oauth2/token", EndpointParams: map[string]string{"audience": "metrics"},
					TLSConfig:   fullTLS("auth.internal"),
					ProxyConfig: promcfg.ProxyConfig{ProxyURL: proxyURL, NoProxy: ".internal", ProxyConnectHeader: proxyHeader},
				},
				EnableHTTP2: true}),
			rw("https://grafana-cloud.example.com/api/prom/push", "grafana-cloud-2", promcfg.HTTPClientConfig{
				OAuth2: &promcfg.OAuth2{ClientID: "anomalyd", ClientSecret: "hunter2", TokenURL: "https://auth.example.com/oauth2/token",
					ProxyConfig: promcfg.ProxyConfig{ProxyFromEnvironment: true}},
				EnableHTTP2: true}),
		},
		Warmup: WarmupConfig{
			RemoteRead: &HTTPClientConfig{
				URL:           "https://prometheus.example.com/api/v1/read",
				RemoteTimeout: model.Duration(2 * time.Minute),
				Headers:       map[string]string{"X-Scope-OrgID": "anomalyd"},
				Client: promcfg.HTTPClientConfig{
					BasicAuth:   &promcfg.BasicAuth{Username: "anomalyd", Password: "hunter2"},
					TLSConfig:   promcfg.TLSConfig{CAFile: "testdata/secrets/ca.pem", ServerName: "prometheus.internal"},
					EnableHTTP2: true,
				},
			},
			Lookback:           model.Duration(8 * 24 * time.Hour),
			Concurrency:        2,
			SeriesPerRequest:   50,
			MaxSeriesPerSecond: 200,
			MaxBytes:           32 << 20,
			MaxPending:         50000,
			MaxBufferedSamples: 128,
		},
		History: HistoryConfig{
			Retention:          model.Duration(2 * time.Hour),
			MaxSeries:          20000,
			MaxConcurrentReads: 4,
			MaxDecodedBytes:    1 << 20,
			MaxSamplesPerQuery: 1000000,
			MaxBytesInFrame:    512 << 10,
		},
		Incidents: IncidentsConfig{
			GroupBy: []string{"namespace", "pod"}, MinScore: 1.5, Window: 4, HalfLife: model.Duration(12 * time.Hour),
			FalsePerDay: 0.05, Quiet: 20, Tail: 2.5, MaxMembers: 1000, MaxGroups: 500,
		},
		HA: HAConfig{Enabled: true, ClusterLabel: "prom_cluster", ReplicaLabel: "prom_replica",
			FailoverTimeout: model.Duration(time.Minute), MaxClusters: 20},
	}
	if err := want.validate(); err != nil {
		t.Fatalf("want is invalid: %s", err)
	}
	assertEqual(t, "full.good.yml", c, want)
	if got := matcherStrings(c.Rules[1]); got != `__name__="http_requests_total", job="api", code!~"5.."` {
		t.Errorf("rules[1] matchers %s", got)
	}
}

// TestFullConfigHasEveryKey keeps testdata/full.good.yml, the documented
// reference, complete: every key of every struct must appear in it. A rule's
// detectors block only overrides, so its sub-keys are not required.
func TestFullConfigHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	var walkDoc func(prefix string, v any)
	walkDoc = func(prefix string, v any) {
		switch v := v.(type) {
		case map[any]any:
			for k, e := range v {
				p := joinKey(prefix, k.(string))
				inFile[p] = true
				walkDoc(p, e)
			}
		case []any:
			for _, e := range v {
				walkDoc(prefix, e)
			}
		}
	}
	walkDoc("", doc)

	// warmup.remote_read has the keys of a remote_write entry, documented there.
	skip := map[string]bool{"rules.detectors": true, "warmup.remote_read": true}
	// Keys of Prometheus's client config that anomalyd refuses
	// (TestUnsupportedClientKeys) cannot be in the file.
	refused := map[string]bool{}
	for _, k := range unsupportedClientKeys {
		refused["remote_write."+k] = true
	}
	marshaler := reflect.TypeFor[yaml.Marshaler]()
	var walkType func(prefix string, t reflect.Type)
	walkType = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		// A type that marshals itself (a URL) is one value, not a block.
		if typ.Kind() != reflect.Struct || typ.Implements(marshaler) {
			return
		}
		for f := range typ.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if opts == "inline" {
				walkType(prefix, f.Type)
				continue
			}
			p := joinKey(prefix, name)
			if refused[p] {
				continue
			}
			if !inFile[p] {
				t.Errorf("testdata/full.good.yml does not set %s", p)
			}
			if !skip[p] {
				walkType(p, f.Type)
			}
		}
	}
	walkType("", reflect.TypeFor[Config]())
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func TestRuleInheritance(t *testing.T) {
	c, err := LoadFile("testdata/inherit.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	top := detectors.DefaultParams()
	top.Window = 60
	top.HoltWinters.SeasonBuckets = 2
	if c.Detectors != top {
		t.Errorf("top-level detectors\ngot  %+v\nwant %+v", c.Detectors, top)
	}

	ewma := top
	ewma.EWMA.Alpha = 0.3
	fast := top
	fast.HoltWinters.Season = model.Duration(10 * time.Second)
	want := []struct {
		action string
		p      detectors.Params
	}{
		{ActionAnalyse, ewma},
		{ActionIgnore, top},
		{ActionAnalyse, fast},
		{ActionAnalyse, fast}, // *fast alias
		{ActionAnalyse, top},  // empty detectors block
	}
	if len(c.Rules) != len(want) {
		t.Fatalf("got %d rules, want %d", len(c.Rules), len(want))
	}
	for i, w := range want {
		r := c.Rules[i]
		if r.Action != w.action {
			t.Errorf("rules[%d].action = %q, want %q", i, r.Action, w.action)
		}
		if r.Detectors != w.p {
			t.Errorf("rules[%d].detectors\ngot  %+v\nwant %+v", i, r.Detectors, w.p)
		}
	}
	// Window 60 came from a block further down the file than the rule.
	if c.Rules[0].Detectors.Window != 60 {
		t.Errorf("rules[0].detectors.window = %d, want 60 (inherited)", c.Rules[0].Detectors.Window)
	}
}

func TestPartialBlocks(t *testing.T) {
	c, err := LoadFile("testdata/partial.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Ingest.MaxFuture = model.Duration(5 * time.Minute)
	want.Window.Shards = 2
	want.Output.PerDetector = true
	want.Output.Driver = true // driver_name keeps its default
	want.Rules = []*Rule{{Match: "up", Action: ActionAnalyse, Detectors: detectors.DefaultParams(),
		Incidents: RuleIncidentsConfig{GroupBy: []string{"job", "instance"}}}}
	rw0, rw1 := DefaultRemoteWriteConfig, DefaultRemoteWriteConfig
	rw0.URL, rw0.Name = "http://localhost:9090/api/v1/write", "e9eb76"
	rw0.QueueConfig.MaxShards = 8
	rw1.URL, rw1.Name = "https://localhost:9091/api/v1/write", "f62bc3"
	rw1.Client.Authorization = &promcfg.Authorization{Type: "Bearer", Credentials: "token"}
	want.RemoteWrite = []*RemoteWriteConfig{&rw0, &rw1}
	if err := want.validate(); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "partial.good.yml", c, want)
}

// TestOutputOptional: the driver series are off by default and the value
// series on; each can be turned on or off keeping its default name, which
// can be changed like the other names.
func TestOutputOptional(t *testing.T) {
	f := func(src string, driver bool, driverName string, value bool, valueName string) {
		t.Helper()
		c, err := Load([]byte(src))
		if err != nil {
			t.Fatalf("Load(%q): %s", src, err)
		}
		o := c.Output
		if o.Driver != driver || o.DriverName != driverName || o.Value != value || o.ValueName != valueName {
			t.Errorf("Load(%q): driver %v, driver_name %q, value %v, value_name %q; want %v, %q, %v, %q",
				src, o.Driver, o.DriverName, o.Value, o.ValueName, driver, driverName, value, valueName)
		}
	}
	f("", false, "anomaly_driver", true, "anomaly_value")
	f("output: {per_detector: true}", false, "anomaly_driver", true, "anomaly_value")
	f("output: {driver: true}", true, "anomaly_driver", true, "anomaly_value")
	f("output: {driver: true, driver_name: which_detector}", true, "which_detector", true, "anomaly_value")
	f("output: {driver_name: which_detector}", false, "which_detector", true, "anomaly_value")
	f("output: {value: false}", false, "anomaly_driver", false, "anomaly_value")
	f("output: {value_name: analysed}", false, "anomaly_driver", true, "analysed")
	if _, err := Load([]byte("output: {value_name: anomaly_score}")); err == nil || !strings.Contains(err.Error(), "output.score_name and output.value_name") {
		t.Errorf("Load(value_name: anomaly_score) = %v, want an error naming both keys", err)
	}
}

// TestRuleIncidentsGroupBy: a rule's incidents.group_by replaces the
// top-level one for its series; a rule that does not set it, or sets an
// empty incidents block, inherits the top-level one wherever that block is
// in the file, the built-in rule included.
func TestRuleIncidentsGroupBy(t *testing.T) {
	f := func(src string, want ...[]string) {
		t.Helper()
		c, err := Load([]byte(src))
		if err != nil {
			t.Fatalf("Load(%q): %s", src, err)
		}
		if len(c.Rules) != len(want) {
			t.Fatalf("Load(%q): %d rules, want %d", src, len(c.Rules), len(want))
		}
		for i, w := range want {
			if got := c.Rules[i].Incidents.GroupBy; !slices.Equal(got, w) {
				t.Errorf("Load(%q): rules[%d].incidents.group_by = %q, want %q", src, i, got, w)
			}
		}
	}
	f("", []string{"job", "instance"})
	f("incidents: {group_by: [namespace, pod]}", []string{"namespace", "pod"})
	f(`
rules:
  - match: '{job="api"}'
    incidents: {group_by: [service]}
  - match: up
  - match: down
    incidents:
  - match: left
    incidents: {}
incidents: {group_by: [namespace, pod]}
`, []string{"service"}, []string{"namespace", "pod"}, []string{"namespace", "pod"}, []string{"namespace", "pod"})
	// The override is the whole list, not merged with the top-level one.
	f("rules: [{match: up, incidents: {group_by: [instance]}}]", []string{"instance"})
}

func TestNoRules(t *testing.T) {
	c, err := LoadFile("testdata/no_rules.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Rules == nil || len(c.Rules) != 0 {
		t.Fatalf("rules: [] gave %#v; want an empty list", c.Rules)
	}
	if r := c.RuleFor(func(string) string { return "x_bucket" }); r != nil {
		t.Errorf("RuleFor = %v; want nil without rules", r)
	}
}

// TestStringRoundTrip: String shows the effective config, Load accepts it
// and gives the same config back, except that secrets are <secret>.
func TestStringRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := LoadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s := c.String()
			for _, secret := range []string{"hunter2", "s3cr3t-token"} {
				if strings.Contains(s, secret) {
					t.Errorf("String() shows the secret %q:\n%s", secret, s)
				}
			}
			c2, err := Load([]byte(s))
			if err != nil {
				t.Fatalf("Load(String()): %s\n%s", err, s)
			}
			want := maskSecrets(c)
			assertEqual(t, "Load(String())", c2, want)
			if s2 := c2.String(); s2 != s {
				t.Errorf("String() is not stable:\n%s\nthen\n%s", s, s2)
			}
		})
	}
}

func TestStringShowsSecretPlaceholder(t *testing.T) {
	c, err := LoadFile("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	for _, want := range []string{"password: <secret>", "credentials: <secret>", "password_file: testdata/secrets/mimir-password"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	// The loaded config itself keeps the secret.
	if c.RemoteWrite[1].Client.BasicAuth.Password != "hunter2" {
		t.Errorf("password = %q", c.RemoteWrite[1].Client.BasicAuth.Password)
	}
}

func TestLoadFile(t *testing.T) {
	_, err := LoadFile("testdata/missing.yml")
	if want := "cannot read config file: open testdata/missing.yml: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}

	// Absolute file names are kept; relative ones are relative to the file.
	dir := t.TempDir()
	path := filepath.Join(dir, "anomalyd.yml")
	src := "remote_write:\n" +
		"  - url: https://a/\n    basic_auth: {username: u, password_file: pw}\n" +
		"    tls_config: {ca_file: /etc/ssl/ca.pem, cert_file: ../c.pem, key_file: k.pem}\n" +
		"  - url: https://b/\n    authorization: {credentials_file: sub/token}\n" +
		"  - url: https://c/\n    oauth2: {client_id: i, client_secret_file: secret, token_url: 'https://t/', tls_config: {ca_file: oca.pem}}\n" +
		"warmup:\n  remote_read: {url: 'https://d/', basic_auth: {username_file: user}}\n"
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rw := c.RemoteWrite
	for _, f := range []struct{ got, want string }{
		{rw[0].Client.BasicAuth.PasswordFile, filepath.Join(dir, "pw")},
		{rw[0].Client.TLSConfig.CAFile, "/etc/ssl/ca.pem"},
		{rw[0].Client.TLSConfig.CertFile, filepath.Join(filepath.Dir(dir), "c.pem")},
		{rw[0].Client.TLSConfig.KeyFile, filepath.Join(dir, "k.pem")},
		{rw[1].Client.Authorization.CredentialsFile, filepath.Join(dir, "sub/token")},
		{rw[2].Client.OAuth2.ClientSecretFile, filepath.Join(dir, "secret")},
		{rw[2].Client.OAuth2.TLSConfig.CAFile, filepath.Join(dir, "oca.pem")},
		{c.Warmup.RemoteRead.Client.BasicAuth.UsernameFile, filepath.Join(dir, "user")},
	} {
		if f.got != f.want {
			t.Errorf("got %q, want %q", f.got, f.want)
		}
	}
	if c.original != src {
		t.Errorf("original = %q", c.original)
	}
}

func TestRuleMatches(t *testing.T) {
	c, err := Load([]byte(`
rules:
  - match: 'http_requests_total{job="api", code!~"5.."}'
  - match: '{job=""}'
    action: ignore
`))
	if err != nil {
		t.Fatal(err)
	}
	f := func(lbls map[string]string, want int) {
		t.Helper()
		get := func(name string) string { return lbls[name] }
		got := -1
		if r := c.RuleFor(get); r != nil {
			got = slices.Index(c.Rules, r)
		}
		if got != want {
			t.Errorf("RuleFor(%v) = rule %d, want %d", lbls, got, want)
		}
	}
	f(map[string]string{"__name__": "http_requests_total", "job": "api", "code": "200"}, 0)
	f(map[string]string{"__name__": "http_requests_total", "job": "api"}, 0) // absent code is "", which !~ 5..
	f(map[string]string{"__name__": "http_requests_total", "job": "api", "code": "503"}, -1)
	f(map[string]string{"__name__": "http_requests_total", "job": "apis", "code": "200"}, -1) // = is exact
	f(map[string]string{"__name__": "http_requests_total", "code": "200"}, 1)                 // no job
	f(map[string]string{"__name__": "up", "job": "node"}, -1)

	if !(&Rule{}).Matches(func(string) string { return "" }) {
		t.Error("a rule without matchers must match everything")
	}
}

// assertEqual compares configs, matchers by their text.
func assertEqual(t *testing.T, what string, got, want *Config) {
	t.Helper()
	if len(got.Rules) == len(want.Rules) {
		for i := range got.Rules {
			if g, w := matcherStrings(got.Rules[i]), matcherStrings(want.Rules[i]); g != w {
				t.Errorf("%s: rules[%d] matchers %s, want %s", what, i, g, w)
			}
		}
	}
	if g, w := comparableCopy(got), comparableCopy(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\ngot\n%s\nwant\n%s", what, got, want)
		if got.String() == want.String() { // differences String does not show
			t.Errorf("got  %#v\nwant %#v", g, w)
		}
	}
}

// comparableCopy returns a copy of c without what DeepEqual cannot compare
// (compiled matchers) or should not (the source text).
func comparableCopy(c *Config) Config {
	n := *c
	n.original = ""
	n.ExcludeMatchers = nil
	n.Rules = nil
	for _, r := range c.Rules {
		r := *r
		r.Matchers = nil
		n.Rules = append(n.Rules, &r)
	}
	if c.Rules != nil && n.Rules == nil {
		n.Rules = []*Rule{}
	}
	return n
}

func matcherStrings(r *Rule) string {
	var s []string
	for _, m := range r.Matchers {
		s = append(s, m.String())
	}
	return strings.Join(s, ", ")
}

// maskSecrets returns a copy of c with secrets as String shows them.
func maskSecrets(c *Config) *Config {
	n := *c
	n.RemoteWrite = nil
	for _, rw := range c.RemoteWrite {
		rw := *rw
		rw.HTTPClientConfig = maskClientSecrets(rw.HTTPClientConfig)
		n.RemoteWrite = append(n.RemoteWrite, &rw)
	}
	if c.Warmup.RemoteRead != nil {
		rr := maskClientSecrets(*c.Warmup.RemoteRead)
		n.Warmup.RemoteRead = &rr
	}
	return &n
}

// secretPlaceholder is what String shows for a secret, as Prometheus does.
const secretPlaceholder = "<secret>"

func maskClientSecrets(c HTTPClientConfig) HTTPClientConfig {
	cc := &c.Client
	if cc.BasicAuth != nil && cc.BasicAuth.Password != "" {
		ba := *cc.BasicAuth
		ba.Password = secretPlaceholder
		cc.BasicAuth = &ba
	}
	if cc.Authorization != nil && cc.Authorization.Credentials != "" {
		a := *cc.Authorization
		a.Credentials = secretPlaceholder
		cc.Authorization = &a
	}
	cc.ProxyConnectHeader = maskProxyHeader(cc.ProxyConnectHeader)
	if cc.OAuth2 != nil {
		o := *cc.OAuth2
		if o.ClientSecret != "" {
			o.ClientSecret = secretPlaceholder
		}
		o.ProxyConnectHeader = maskProxyHeader(o.ProxyConnectHeader)
		cc.OAuth2 = &o
	}
	return c
}

func maskProxyHeader(h promcfg.ProxyHeader) promcfg.ProxyHeader {
	if h == nil {
		return nil
	}
	m := promcfg.ProxyHeader{}
	for k, vs := range h {
		for range vs {
			m[k] = append(m[k], secretPlaceholder)
		}
	}
	return m
}

// FuzzLoad checks that Load does not panic and that every config it accepts
// survives String and Load again.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Load(b)
		if err != nil {
			return
		}
		s := c.String()
		c2, err := Load([]byte(s))
		if err != nil {
			t.Fatalf("Load(String()) of %q: %s\n%s", b, err, s)
		}
		if s2 := c2.String(); s2 != s {
			t.Fatalf("String() changed on reload:\n%s\nthen\n%s", s, s2)
		}
	})
}

// TestWarmupLookbackDefault: the default lookback is the longest season of
// an analysing rule or the top-level detectors, plus DefaultWarmupMargin.
func TestWarmupLookbackDefault(t *testing.T) {
	c, err := Load([]byte(`
warmup:
  remote_read: {url: "http://127.0.0.1:9090/api/v1/read"}
detectors: {holt_winters: {season: 12h}}
rules:
  - match: '{job="weekly"}'
    detectors: {holt_winters: {season: 1w}}
  - match: '{job="ignored"}'
    action: ignore
    detectors: {holt_winters: {season: 4w}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Warmup.Enabled() || c.Warmup.RemoteRead.RemoteTimeout != model.Duration(time.Minute) {
		t.Errorf("warmup.remote_read = %+v, want enabled with the 1m default timeout", c.Warmup.RemoteRead)
	}
	if got, want := c.Warmup.LookbackFor(c), 7*24*time.Hour+DefaultWarmupMargin; got != want {
		t.Errorf("LookbackFor = %s, want %s", got, want)
	}
	c.Rules = c.Rules[1:]
	if got, want := c.Warmup.LookbackFor(c), 12*time.Hour+DefaultWarmupMargin; got != want {
		t.Errorf("LookbackFor without the weekly rule = %s, want %s", got, want)
	}
	c.Warmup.Lookback = model.Duration(3 * time.Hour)
	if got := c.Warmup.LookbackFor(c); got != 3*time.Hour {
		t.Errorf("LookbackFor with lookback: 3h = %s", got)
	}
	if d := Default(); d.Warmup.Enabled() || d.History.Enabled() {
		t.Errorf("defaults: warm-up enabled %v, history enabled %v (want both false)", d.Warmup.Enabled(), d.History.Enabled())
	}
}
