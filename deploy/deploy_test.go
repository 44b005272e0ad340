package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The rule files and their promtool unit tests, relative to prometheus/.
var (
	ruleFiles     = []string{"anomalyd-alerts.yml", "anomalyd-recording.yml"}
	ruleTestFiles = []string{"anomalyd-alerts.test.yml", "anomalyd-recording.test.yml"}
)

// documentedMetrics are the series anomalyd documents: its output series and
// its self metrics. Dashboard queries may select nothing else.
var documentedMetrics = []string{
	"anomaly_score",
	"anomaly_expected",
	"anomaly_lower",
	"anomaly_upper",
	"anomaly_value",
	"anomaly_incident_score",
	"anomaly_incident_open",
	"anomalyd_ingest_samples_received_total",
	"anomalyd_window_series_active",
	"anomalyd_sink_samples_sent_total",
	"anomalyd_sink_samples_dropped_total",
	"anomalyd_sink_samples_failed_total",
}

// lookPromtool returns the path of promtool or fails the test: these checks
// are part of `make test`, which installs it.
func lookPromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found on PATH (%v): install it with `apt-get install -y prometheus`", err)
	}
	return p
}

// runPromtool runs promtool with args in dir and fails with its output when
// it exits non-zero.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(lookPromtool(t), args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out.String())
	}
	return out.String()
}

func TestPromtool(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"check config", []string{"check", "config", "prometheus.yml"}},
		{"check rules", append([]string{"check", "rules"}, ruleFiles...)},
		{"test rules", append([]string{"test", "rules"}, ruleTestFiles...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runPromtool(t, "prometheus", tc.args...)
			t.Logf("promtool %s:\n%s", strings.Join(tc.args, " "), out)
		})
	}
}

// TestRuleFilesListed keeps the lists above, prometheus.yml and the folder in
// step: a new rule file needs a test file and must be loaded by prometheus.yml.
func TestRuleFilesListed(t *testing.T) {
	ymls, err := filepath.Glob("prometheus/*.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules, tests []string
	for _, p := range ymls {
		switch b := filepath.Base(p); {
		case b == "prometheus.yml":
		case strings.HasSuffix(b, ".test.yml"):
			tests = append(tests, b)
		default:
			rules = append(rules, b)
		}
	}
	if !slices.Equal(rules, ruleFiles) {
		t.Errorf("rule files in prometheus/: got %q want %q (update ruleFiles)", rules, ruleFiles)
	}
	if !slices.Equal(tests, ruleTestFiles) {
		t.Errorf("rule test files in prometheus/: got %q want %q (update ruleTestFiles)", tests, ruleTestFiles)
	}
	cfg, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ruleFiles {
		if !bytes.Contains(cfg, []byte("- "+r+"\n")) {
			t.Errorf("prometheus.yml rule_files does not list %s", r)
		}
		test, err := os.ReadFile(filepath.Join("prometheus", strings.TrimSuffix(r, ".yml")+".test.yml"))
		if err != nil {
			t.Errorf("rule file %s has no unit tests: %v", r, err)
		} else if !bytes.Contains(test, []byte("- "+r+"\n")) {
			t.Errorf("%s.test.yml does not load %s", strings.TrimSuffix(r, ".yml"), r)
		}
	}
}

// dashboard is the part of a Grafana dashboard the tests look at.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Annotations   struct {
		List []struct {
			Name       string         `json:"name"`
			Expr       string         `json:"expr"`
			Datasource *datasourceRef `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	Expr       string         `json:"expr"`
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Datasource  *datasourceRef `json:"datasource"`
	Panels      []panel        `json:"panels"` // collapsed rows
	Targets     []target       `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Color struct {
				Mode string `json:"mode"`
			} `json:"color"`
			Thresholds struct {
				Steps []struct {
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
		Overrides []struct {
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/anomalyd.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/anomalyd.json is not a valid dashboard: %v", err)
	}
	if dec.More() {
		t.Fatal("grafana/anomalyd.json: data after the dashboard object")
	}
	return &d
}

// allPanels flattens rows (collapsed rows carry their panels inside).
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaVars replaces the Grafana variables that are not inside a PromQL
// string with values that make the expression valid PromQL; $job, $metric
// and the like only occur inside label-matcher strings and stay.
var grafanaVars = strings.NewReplacer(
	"${series:raw}", `job="x",instance="y",metric="z",detector="combined"`,
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "1h",
)

// variableExpr extracts the PromQL of label_values(expr, label) and
// query_result(expr) variable queries.
var variableExpr = regexp.MustCompile(`^(?:label_values\((.*), *\w+\)|query_result\((.*)\))$`)

var varRef = regexp.MustCompile(`\$\{?(\w+)`)

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want >= 36 (Grafana 9+)", d.SchemaVersion)
	}

	var exprs []string // every PromQL expression, for promtool
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			if v.Name != "DS_PROMETHEUS" || string(v.Query) != `"prometheus"` {
				t.Errorf("datasource variable %s with query %s: want DS_PROMETHEUS of type prometheus", v.Name, v.Query)
			}
		case "query":
			if v.Datasource == nil || v.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("variable %s: datasource %+v, want uid ${DS_PROMETHEUS}", v.Name, v.Datasource)
			}
			m := variableExpr.FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("variable %s: query %q is neither label_values(expr, label) nor query_result(expr)", v.Name, v.Definition)
				continue
			}
			checkMetrics(t, "variable "+v.Name, m[1]+m[2])
			exprs = append(exprs, m[1]+m[2])
		}
	}
	for _, want := range []string{"DS_PROMETHEUS", "job", "metric", "instance", "series"} {
		if !vars[want] {
			t.Errorf("templating has no variable %s", want)
		}
	}

	seen := map[string]bool{} // documented metrics some panel queries
	var band, threshold, topk bool
	for _, p := range allPanels(d.Panels) {
		if p.Type == "row" {
			continue
		}
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: datasource %+v, want prometheus ${DS_PROMETHEUS}", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" {
				t.Errorf("%s: target with expr %q refId %q", where, tg.Expr, tg.RefID)
				continue
			}
			if tg.Datasource != nil && tg.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("%s target %s: datasource uid %q", where, tg.RefID, tg.Datasource.UID)
			}
			for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
					t.Errorf("%s target %s: undefined variable $%s in %s", where, tg.RefID, m[1], tg.Expr)
				}
			}
			for _, n := range checkMetrics(t, where+" target "+tg.RefID, tg.Expr) {
				seen[n] = true
			}
			exprs = append(exprs, tg.Expr)
			if tg.Expr == topkOverRange && p.Type == "table" {
				topk = true
			}
		}
		for _, o := range p.FieldConfig.Overrides {
			for _, pr := range o.Properties {
				if pr.ID == "custom.fillBelowTo" && string(pr.Value) == `"lower"` {
					band = true
				}
			}
		}
		if p.Type == "timeseries" && slices.ContainsFunc(p.Targets, func(tg target) bool {
			return strings.HasPrefix(tg.Expr, "anomaly_score")
		}) {
			for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
				switch {
				case s.Value != nil && *s.Value == alarmLevel:
					threshold = true
				case s.Value != nil && *s.Value == 1 && p.FieldConfig.Defaults.Color.Mode != "thresholds":
					t.Errorf("%s: a threshold line at 1, the band's edge: the alarm level is %g", where, alarmLevel)
				}
			}
		}
	}
	if !band {
		t.Error("no panel fills the band between anomaly_lower and anomaly_upper (custom.fillBelowTo)")
	}
	if !threshold {
		t.Errorf("no anomaly_score time series panel has a threshold at %g", alarmLevel)
	}
	if !topk {
		t.Errorf("no table panel queries %s", topkOverRange)
	}
	// Annotations: the anomaly alerts and the open incidents, both PromQL
	// that parses.
	var alerts, incidents bool
	for _, a := range d.Annotations.List {
		if a.Expr == "" {
			continue
		}
		if a.Datasource == nil || a.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("annotation %q: datasource %+v", a.Name, a.Datasource)
		}
		alerts = alerts || strings.HasPrefix(a.Expr, "ALERTS{")
		incidents = incidents || strings.HasPrefix(a.Expr, "anomaly_incident_open")
		exprs = append(exprs, a.Expr)
	}
	if !alerts || !incidents {
		t.Errorf("annotations: alerts %v, incidents %v: want both", alerts, incidents)
	}
	for _, m := range documentedMetrics {
		if !seen[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	checkPromQL(t, exprs)
}

// topkOverRange is the top table's query: the highest score of each series
// over the dashboard's range, not only now, for the chosen jobs.
const topkOverRange = `topk(20, max_over_time(anomaly_score{detector="combined", job=~"$job"}[$__range]))`

// alarmLevel is the one score threshold the dashboard draws: where the
// AnomalyDetected alert fires.
const alarmLevel = 2.0

// checkMetrics reports the metric names expr selects that anomalyd does not
// document, and returns the documented ones. `__name__="$metric"` (the chosen
// input metric) is allowed.
func checkMetrics(t *testing.T, where, expr string) []string {
	t.Helper()
	var ok []string
	for _, n := range metricNames(grafanaVars.Replace(expr)) {
		switch {
		case n == "$metric":
		case slices.Contains(documentedMetrics, n):
			ok = append(ok, n)
		default:
			t.Errorf("%s: %s queries %q, which is neither an anomalyd output series nor a documented self metric", where, expr, n)
		}
	}
	return ok
}

// checkPromQL has promtool parse every expression, as a recording rule.
func checkPromQL(t *testing.T, exprs []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(grafanaVars.Replace(e)) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: dashboard:expr%d:test\n        expr: %s\n", i, q)
	}
	p := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, ".", "check", "rules", p)
}

// promqlKeywords are identifiers that are never metric names outside braces.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
	"ignoring": true, "group_left": true, "group_right": true, "bool": true, "offset": true,
	"atan2": true, "sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true, "bottomk": true,
	"topk": true, "quantile": true, "inf": true, "nan": true,
}

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlToken matches one PromQL token: a string, an identifier, a number or
// duration, or one character.
var promqlToken = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`" +
	`|[a-zA-Z_:][a-zA-Z0-9_:]*|[0-9.]+[a-zA-Z0-9.]*|=~|!~|!=|\$\w+|\S`)

// metricNames returns the metric names a PromQL expression selects: bare
// identifiers that are not functions, keywords or label names, and the values
// of __name__="…" matchers. It is a lexer, not a parser; promtool checks the
// syntax.
func metricNames(expr string) []string {
	toks := promqlToken.FindAllString(expr, -1)
	var names []string
	braces, brackets := 0, 0
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		next := ""
		if i+1 < len(toks) {
			next = toks[i+1]
		}
		switch {
		case tok == "{":
			braces++
		case tok == "}":
			braces--
		case tok == "[":
			brackets++
		case tok == "]":
			brackets--
		case braces > 0:
			if tok == "__name__" && next == "=" && i+2 < len(toks) {
				names = append(names, strings.Trim(toks[i+2], "\"'`"))
				i += 2
			}
		case brackets > 0:
		case labelListKeywords[tok] && next == "(":
			for i < len(toks) && toks[i] != ")" {
				i++
			}
		case promqlKeywords[tok] || next == "(":
		case isIdent(tok):
			names = append(names, tok)
		}
	}
	return names
}

func isIdent(tok string) bool {
	c := tok[0]
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func TestMetricNames(t *testing.T) {
	f := func(expr string, want ...string) {
		t.Helper()
		got := metricNames(expr)
		if !slices.Equal(got, want) {
			t.Errorf("metricNames(%s): got %q want %q", expr, got, want)
		}
	}
	f(`up`, "up")
	f(`anomaly_score{detector="combined", metric="up"}`, "anomaly_score")
	f(`sum by (job, instance) (rate(foo_total{a="b"}[5m] offset 1m))`, "foo_total")
	f(`max(a) / on(job) group_left(instance) b > bool 1`, "a", "b")
	f(`{__name__="x", job=~"a|b"} and ignoring(metric) y{m="{"}`, "x", "y")
	f(`topk(20, anomaly_score{detector="combined"})`, "anomaly_score")
	f(`count by (job) (z > 1) or vector(0)`, "z")
}

// TestDashboardSeriesQueries evaluates the first panel's queries with
// promtool: with $series set to one output series' labels, they return its
// input series (as a per-second rate for a counter) and its band.
func TestDashboardSeriesQueries(t *testing.T) {
	var p *panel
	for _, q := range allPanels(loadDashboard(t).Panels) {
		if q.Title == "Value, expected and band" {
			p = &q
		}
	}
	if p == nil {
		t.Fatal(`no panel "Value, expected and band"`)
	}
	const (
		gaugeSeries   = `case="step",detector="combined",instance="x:1",job="app",metric="temperature"`
		counterSeries = `detector="combined",instance="x:1",job="app",metric="requests_total"`
	)
	// Per $series: the samples each target must return at 5m.
	want := map[string]map[string]string{
		gaugeSeries: {
			"value":              `{labels: 'temperature{case="step",instance="x:1",job="app"}', value: 20}`,
			"value (per second)": ``,
			"expected":           `{labels: 'anomaly_expected{` + gaugeSeries + `}', value: 21}`,
			"lower":              `{labels: 'anomaly_lower{` + gaugeSeries + `}', value: 19}`,
			"upper":              `{labels: 'anomaly_upper{` + gaugeSeries + `}', value: 23}`,
		},
		// A rate's band is clamped at 0, where a rate ends (clamp_min
		// drops the name; the panel names its lines).
		counterSeries: {
			"value":              ``,
			"value (per second)": `{labels: '{instance="x:1",job="app"}', value: 2}`,
			"expected":           `{labels: '{` + counterSeries + `}', value: 2}`,
			"lower":              `{labels: '{` + counterSeries + `}', value: 0}`,
			"upper":              `{labels: '{` + counterSeries + `}', value: 3}`,
		},
	}
	var b strings.Builder
	b.WriteString(`evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'temperature{case="step",instance="x:1",job="app"}', values: '20x10'}
      - {series: 'temperature{case="other",instance="x:1",job="app"}', values: '50x10'}
      - {series: 'requests_total{instance="x:1",job="app"}', values: '0+120x10'}
      - {series: 'requests_total{instance="x:2",job="app"}', values: '0+600x10'}
`)
	outputs := map[string][4]float64{ // score, expected, lower, upper
		gaugeSeries:   {0, 21, 19, 23},
		counterSeries: {0, 2, -1, 3},
	}
	for _, s := range []string{gaugeSeries, counterSeries} {
		for i, o := range []string{"score", "expected", "lower", "upper"} {
			fmt.Fprintf(&b, "      - {series: 'anomaly_%s{%s}', values: '%gx10'}\n", o, s, outputs[s][i])
		}
	}
	b.WriteString("    promql_expr_test:\n")
	for _, s := range []string{gaugeSeries, counterSeries} {
		metric := regexp.MustCompile(`metric="(\w+)"`).FindStringSubmatch(s)[1]
		vars := strings.NewReplacer("${series:raw}", s, "$metric", metric, "$__rate_interval", "2m")
		for _, tg := range p.Targets {
			legend := map[string]string{"A": "value", "B": "value (per second)", "C": "expected", "D": "lower", "E": "upper"}[tg.RefID]
			w, ok := want[s][legend]
			if !ok {
				t.Fatalf("target %s: unexpected refId", tg.RefID)
			}
			q, _ := json.Marshal(vars.Replace(tg.Expr))
			fmt.Fprintf(&b, "      - expr: %s\n        eval_time: 5m\n        exp_samples: [%s]\n", q, w)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.test.yml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "test", "rules", "dashboard.test.yml")
}
