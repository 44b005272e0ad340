//go:build linux

// TestDeploySetup runs the documented setup itself, for a few minutes of
// rule evaluations, and checks that it is healthy:
//
//	node-like exporter ─scrape 1s─▶ Prometheus ─remote_write─▶ anomalyd (built-in defaults)
//	(in-test HTTP)                  ▲  rules: deploy/'s          │
//	                                └── scrape 1s, honor_labels ─┘ /metrics
//
// Prometheus runs deploy/prometheus/prometheus.yml as shipped, changed only
// by exact substitutions (addresses, shorter intervals, one scrape job for
// the exporter), beside the two rule files copied unchanged; anomalyd runs
// as `make run` starts it. Prometheus's own series, the rules' products
// (ALERTS, ALERTS_FOR_STATE, recording rules) and anomalyd's scores all
// flow: the setup must not feed anomalyd its own results. Before the
// `exclude` default and the aggregated alert rules it did, and
// AnomalyDetected failed most evaluations with "vector contains metrics
// with the same labelset after applying alert labels".
//
// Two cases run in parallel, each with its own processes: the file as
// shipped, and the file without remote_write's write_relabel_configs (a
// user who copied only the url), where anomalyd's own exclusion has to do
// the work alone.
package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// deployStepAfter is how long the exporter's series are scraped at
	// their usual level before some of them step: warm-up and calibration
	// (110 samples) and a band to step out of.
	deployStepAfter = 135 * time.Second
	// deployRun is how long the setup runs, from Prometheus ready to the
	// final checks: with 1 s rule evaluations, ~230 evaluations of every
	// rule, ~90 of them while AnomalyDetected fires.
	deployRun = 230 * time.Second
	// deployMinEvals is the number of evaluations of every rule the final
	// check wants at least.
	deployMinEvals = 100
	// deployNoInputGrace: AnomalydNoInput may be pending until Prometheus
	// has scraped anomalyd's counter growing and evaluated the rule.
	deployNoInputGrace = 10 * time.Second
	// deployMaxReports caps the violations kept per kind.
	deployMaxReports = 10
)

// deployFedBack matches the metric label of an output series computed from
// a product of the setup itself: the rules' ALERTS and ALERTS_FOR_STATE,
// anomalyd's own output names and recording rules (level:metric:operations).
const deployFedBack = `ALERTS|ALERTS_FOR_STATE|anomaly_.*|.*:.*`

var deployFedBackRE = regexp.MustCompile(`^(?:` + deployFedBack + `)$`)

func TestDeploySetup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		relabel bool // keep remote_write's write_relabel_configs
	}{
		{"as shipped", true},
		{"without write_relabel_configs", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			deployRunSetup(t, tc.relabel)
		})
	}
}

// deployReplace replaces old by new in the prometheus.yml text s, and fails
// unless old occurs exactly n times: then the shipped file has changed and
// this test must be looked at.
func deployReplace(t *testing.T, s, old, new string, n int) string {
	t.Helper()
	if c := strings.Count(s, old); c != n {
		t.Fatalf("deploy/prometheus/prometheus.yml has %q %d times, this test replaces it %d times: the file changed, update the test", old, c, n)
	}
	return strings.ReplaceAll(s, old, new)
}

// deployDropRelabel removes remote_write's write_relabel_configs block (up
// to scrape_configs:) from the prometheus.yml text s.
func deployDropRelabel(t *testing.T, s string) string {
	t.Helper()
	const key, next = "    write_relabel_configs:\n", "\nscrape_configs:\n"
	i := strings.Index(s, key)
	j := strings.Index(s, next)
	if strings.Count(s, key) != 1 || strings.Count(s, next) != 1 || j < i {
		t.Fatalf("deploy/prometheus/prometheus.yml: no single %q block before %q: the file changed, update the test", key, next)
	}
	block := s[i : j+1]
	// The block must be write_relabel_configs and nothing else: every line
	// after the key is blank or indented deeper than the key.
	for _, l := range strings.Split(strings.TrimSuffix(block, "\n"), "\n")[1:] {
		if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "      ") {
			t.Fatalf("deploy/prometheus/prometheus.yml: line %q follows write_relabel_configs inside remote_write: the file changed, update the test", l)
		}
	}
	if !strings.Contains(block, "action: drop") {
		t.Fatalf("deploy/prometheus/prometheus.yml: write_relabel_configs drops nothing:\n%s", block)
	}
	return s[:i] + s[j+1:]
}

// deployRunSetup runs one case of TestDeploySetup.
func deployRunSetup(t *testing.T, relabel bool) {
	exp := deployNewExporter()
	t.Cleanup(exp.srv.Close) // after the processes stop
	env := e2eNewEnv(t)
	expHost := strings.TrimPrefix(exp.srv.URL, "http://")
	root := e2eRepoRoot(t)

	// anomalyd as `make run` starts it: built-in defaults, no config file.
	dDir := env.mkdir(t, "anomalyd")
	pd := e2eFreePort(t)
	env.dURL = "http://" + pd
	env.d = env.start(t, "anomalyd", dDir, env.anomalydBin, "--web.listen-address="+pd)

	// Prometheus with deploy/prometheus/ as shipped, but for addresses,
	// intervals and the exporter's scrape job.
	aDir := env.mkdir(t, "prometheus")
	pa := e2eFreePort(t)
	env.aURL = "http://" + pa
	src, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(src)
	cfg = deployReplace(t, cfg, "127.0.0.1:9700", pd, 2) // remote_write url, anomalyd scrape target
	cfg = deployReplace(t, cfg, "127.0.0.1:9090", pa, 1) // the prometheus job scrapes itself
	cfg = deployReplace(t, cfg, "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n",
		"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n", 1)
	cfg = deployReplace(t, cfg, "    honor_labels: true\n    scrape_interval: 15s\n",
		"    honor_labels: true\n    scrape_interval: 1s\n", 1)
	cfg = deployReplace(t, cfg, "      batch_send_deadline: 5s\n", "      batch_send_deadline: 1s\n", 1)
	cfg = deployReplace(t, cfg, "\nscrape_configs:\n", fmt.Sprintf(
		"\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [%q]\n\n", expHost), 1)
	if !relabel {
		cfg = deployDropRelabel(t, cfg)
	}
	env.write(t, aDir, "prometheus.yml", cfg)
	var ruleFiles []string
	for _, f := range []string{"anomalyd-alerts.yml", "anomalyd-recording.yml"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		env.write(t, aDir, f, string(b))
		ruleFiles = append(ruleFiles, f)
	}
	check := exec.Command(env.promtool, "check", "config", "prometheus.yml")
	check.Dir = aDir
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check config rejects the substituted prometheus.yml: %v\n%s\n--- prometheus.yml:\n%s", err, out, cfg)
	}

	env.waitReady(t, env.d, env.dURL)
	env.a = env.start(t, "prometheus", aDir, env.prometheus, "--config.file=prometheus.yml",
		"--storage.tsdb.path=data", "--web.listen-address="+pa, "--log.level=info")
	env.waitReady(t, env.a, env.aURL)
	runStart := time.Now()
	t.Logf("Prometheus %s (write_relabel_configs %v) → anomalyd %s; exporter %s with %d series; rule files %q",
		env.aURL, relabel, env.dURL, exp.srv.URL, len(exp.series), ruleFiles)

	// Poll every second until deployRun has passed.
	var (
		ruleErrs     = map[string]*deployReport{} // by rule and error
		rulesSeen    = map[string]bool{}
		fedBack      = deployReport{unit: "lines"}  // anomalyd /metrics: output series of fed-back input
		nested       = deployReport{unit: "lines"}  // label names exported_exported_…
		noInput      = deployReport{unit: "alerts"} // AnomalydNoInput active after input flowed
		inputSince   time.Time                      // anomalyd had received samples
		firstAlarm   time.Time                      // AnomalyDetected firing for a stepped series
		stepped      time.Time
		noInputQuery string
		polls        int
	)
	deadline := runStart.Add(deployRun)
	for polls = 0; polls < int(deployRun/time.Second)+10 && time.Now().Before(deadline); polls++ {
		time.Sleep(time.Second)
		now := time.Now()
		for _, p := range []*e2eProc{env.a, env.d} {
			if p.exited() {
				t.Fatalf("%s exited after %s: %v", p.name, now.Sub(runStart).Round(time.Second), p.waitErr)
			}
		}
		if first := exp.firstScrape.Load(); stepped.IsZero() && first != 0 && now.Sub(time.UnixMilli(first)) >= deployStepAfter {
			stepped = now
			exp.step.Store(true)
			t.Logf("at %s: stepped %q", now.Sub(runStart).Round(time.Second), exp.steppedNames())
		}

		// Every rule healthy at every poll ("unknown" only before its first
		// evaluation).
		rules, err := e2eRules(env.aURL)
		if err != nil {
			t.Logf("poll %d: rules: %v", polls, err)
		}
		for _, r := range rules {
			rulesSeen[r.Group+"/"+r.Name] = true
			if r.Name == "AnomalydNoInput" {
				noInputQuery = r.Query
			}
			if r.Health == "ok" || (r.Health == "unknown" && r.LastEvaluation.Year() <= 1) {
				continue
			}
			k := fmt.Sprintf("%s/%s: health %q: %s", r.Group, r.Name, r.Health, r.LastError)
			if ruleErrs[k] == nil {
				ruleErrs[k] = &deployReport{unit: "errors"}
			}
			ruleErrs[k].add(now.Sub(runStart), "")
		}

		// anomalyd's /metrics: no output series of a fed-back input, no
		// nested exported_ label.
		if body, err := e2eGet(env.dURL + "/metrics"); err != nil {
			t.Logf("poll %d: anomalyd /metrics: %v", polls, err)
		} else if lines, err := e2eParseText(body); err != nil {
			t.Errorf("poll %d: anomalyd /metrics does not parse: %v", polls, err)
		} else {
			for _, l := range lines {
				if deployIsOutput(l.Name) && deployFedBackRE.MatchString(l.Labels["metric"]) {
					fedBack.add(now.Sub(runStart), l.Line)
				}
				for n := range l.Labels {
					if strings.HasPrefix(n, "exported_exported_") {
						nested.add(now.Sub(runStart), l.Line)
					}
				}
			}
			if v, _ := e2eSum(lines, "anomalyd_ingest_samples_received_total"); v > 0 && inputSince.IsZero() {
				inputSince = now
			}
		}

		// Alerts: AnomalydNoInput quiet once input flows; when
		// AnomalyDetected first fires for a stepped series.
		alerts, err := e2eAlerts(env.aURL)
		if err != nil {
			t.Logf("poll %d: alerts: %v", polls, err)
		}
		for _, a := range alerts {
			switch a.Labels["alertname"] {
			case "AnomalydNoInput":
				if !inputSince.IsZero() && now.Sub(inputSince) > deployNoInputGrace {
					noInput.add(now.Sub(runStart), fmt.Sprintf("%s %s since %s", e2eFormat(a.Labels), a.State, a.ActiveAt))
				}
			case "AnomalyDetected":
				if !stepped.IsZero() && firstAlarm.IsZero() && a.State == "firing" && exp.isStepped(a.Labels["metric"]) {
					firstAlarm = now
					t.Logf("at %s (%s after the step): AnomalyDetected fires for %s", now.Sub(runStart).Round(time.Second),
						now.Sub(stepped).Round(time.Second), e2eFormat(a.Labels))
				}
			}
		}
	}
	if stepped.IsZero() {
		t.Fatalf("the exporter's series never stepped: scraped first at %v, %d polls", exp.firstScrape.Load(), polls)
	}
	t.Logf("%d polls over %s", polls, time.Since(runStart).Round(time.Second))

	t.Run("every rule evaluates without error", func(t *testing.T) {
		if len(rulesSeen) == 0 {
			t.Fatal("Prometheus has no rules loaded")
		}
		keys := make([]string, 0, len(ruleErrs))
		for k := range ruleErrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.Errorf("%s (%s)", k, ruleErrs[k])
		}
		failures := deployScalar(t, env.aURL, `sum(prometheus_rule_evaluation_failures_total)`)
		evals := deployScalar(t, env.aURL, `sum(prometheus_rule_evaluations_total)`)
		t.Logf("%d rules (%q): %g evaluations, %g failures", len(rulesSeen), slices.Sorted(maps.Keys(rulesSeen)), evals, failures)
		if failures != 0 {
			t.Errorf("sum(prometheus_rule_evaluation_failures_total) = %g, want 0", failures)
		}
		if want := float64(deployMinEvals * len(rulesSeen)); evals < want {
			t.Errorf("sum(prometheus_rule_evaluations_total) = %g, want at least %g (%d per rule)", evals, want, deployMinEvals)
		}
	})

	t.Run("AnomalyDetected fires, once for inputs that differ in alertname and severity", func(t *testing.T) {
		fired, err := e2eSeriesSince(env.aURL, `ALERTS{alertname="AnomalyDetected",alertstate="firing"}`, runStart)
		if err != nil {
			t.Fatal(err)
		}
		byMetric := map[string][]map[string]string{}
		for _, s := range fired {
			byMetric[s["metric"]] = append(byMetric[s["metric"]], s)
		}
		t.Logf("AnomalyDetected fired for %d series of %d metric names", len(fired), len(byMetric))
		// Every series that stepped alarmed: an alert carries its labels,
		// metric and detector renamed by anomalyd, alertname and severity
		// replaced by the rule's.
		for _, s := range exp.series {
			if s.step == 0 {
				continue
			}
			want := map[string]string{"metric": s.name, "job": "node"}
			for k, v := range s.labelMap(t) {
				switch k {
				case "alertname", "severity":
				case "metric", "detector":
					want["exported_"+k] = v
				default:
					want[k] = v
				}
			}
			if !slices.ContainsFunc(byMetric[s.name], func(a map[string]string) bool {
				for k, v := range want {
					if a[k] != v {
						return false
					}
				}
				return true
			}) {
				t.Errorf("AnomalyDetected never fired for %s{%s}, which stepped by %g %s into the run: no ALERTS series with %s; it fired for %d metric names: %s",
					s.name, s.labels, s.step, stepped.Sub(runStart).Round(time.Second), e2eFormat(want), len(byMetric), deployFirst(slices.Sorted(maps.Keys(byMetric))))
			}
		}
		// The two series of deployCollidingMetric differ only in alertname
		// and severity: one alert, with the rule's own alertname and
		// severity.
		if got := byMetric[deployCollidingMetric]; len(got) != 1 ||
			got[0]["alertname"] != "AnomalyDetected" || got[0]["severity"] != "info" {
			var s []string
			for _, l := range got {
				s = append(s, e2eFormat(l))
			}
			t.Errorf("ALERTS for %s: %q, want one series with alertname=\"AnomalyDetected\", severity=\"info\"", deployCollidingMetric, s)
		}
	})

	t.Run("AnomalyIncident pages for the node target", func(t *testing.T) {
		// Six of the exporter's metrics step at once: one target, one
		// incident, one page however many of its series alarm.
		fired, err := e2eSeriesSince(env.aURL, `ALERTS{alertname="AnomalyIncident",alertstate="firing"}`, runStart)
		if err != nil {
			t.Fatal(err)
		}
		var node []map[string]string
		for _, a := range fired {
			if a["job"] == "node" {
				node = append(node, a)
			}
			t.Logf("AnomalyIncident fired for %s", e2eFormat(a))
		}
		if len(node) != 1 || node[0]["instance"] != expHost || node[0]["severity"] != "critical" {
			var s []string
			for _, a := range fired {
				s = append(s, e2eFormat(a))
			}
			t.Errorf("AnomalyIncident alerts %q; want one for job=\"node\", instance=%q", s, expHost)
		}
	})

	t.Run("no output series of a fed-back input", func(t *testing.T) {
		if fedBack.n > 0 {
			t.Errorf("anomalyd /metrics had output series whose metric label matches %s: %s", deployFedBack, &fedBack)
		}
		sel := `{__name__=~"anomaly_.*",metric=~"` + deployFedBack + `"}`
		got, err := e2eSeriesSince(env.aURL, sel, runStart)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			t.Errorf("Prometheus stored %d series %s during the run, e.g. %s", len(got), sel, e2eFormat(got[0]))
		}
		// Not vacuous: the exporter's series have scores in both.
		n := deployScalar(t, env.aURL, `count(anomaly_score{job="node"})`)
		if n < float64(len(exp.series))/2 {
			t.Errorf(`count(anomaly_score{job="node"}) = %g in Prometheus, want most of the exporter's %d series`, n, len(exp.series))
		}
	})

	t.Run("every dashboard query answers", func(t *testing.T) {
		deployCheckDashboard(t, env.aURL, root, exp.steppedNames(), runStart)
	})

	t.Run("no nested exported_ labels", func(t *testing.T) {
		if nested.n > 0 {
			t.Errorf("anomalyd /metrics had label names exported_exported_…: %s", &nested)
		}
		names, err := e2eLabelNames(env.aURL)
		if err != nil {
			t.Fatal(err)
		}
		var bad []string
		for _, n := range names {
			if strings.HasPrefix(n, "exported_exported_") {
				bad = append(bad, n)
			}
		}
		if len(bad) > 0 {
			t.Errorf("Prometheus has %d label names exported_exported_…: %s", len(bad), deployFirst(bad))
		}
		// Not vacuous: the exporter's labels metric and detector came back
		// renamed once.
		for _, want := range []string{"exported_metric", "exported_detector", "alertname", "severity"} {
			if !slices.Contains(names, want) {
				t.Errorf("Prometheus has no label name %s: the exporter's labelled series did not come back", want)
			}
		}
	})

	t.Run("AnomalydNoInput is quiet while input flows", func(t *testing.T) {
		if inputSince.IsZero() {
			t.Fatal("anomalyd never received a sample")
		}
		if noInput.n > 0 {
			t.Errorf("AnomalydNoInput was active more than %s after anomalyd received samples: %s", deployNoInputGrace, &noInput)
		}
		if noInputQuery == "" {
			t.Fatal("no AnomalydNoInput rule in /api/v1/rules")
		}
		res, err := e2eQuery(env.aURL, noInputQuery, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) > 0 {
			t.Errorf("AnomalydNoInput's expression %s returns %s, want nothing", noInputQuery, e2eFormatAll(res))
		}
	})

	t.Run("excluded samples", func(t *testing.T) {
		body, err := e2eGet(env.dURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := e2eParseText(body)
		if err != nil {
			t.Fatal(err)
		}
		excluded, found := 0.0, false
		for _, l := range lines {
			if l.Name == "anomalyd_window_samples_not_analysed_total" && l.Labels["reason"] == "excluded" {
				excluded, found = l.Value, true
			}
		}
		t.Logf(`anomalyd_window_samples_not_analysed_total{reason="excluded"} = %g`, excluded)
		switch {
		case !found:
			t.Errorf(`anomalyd /metrics has no anomalyd_window_samples_not_analysed_total{reason="excluded"}:\n%s`,
				e2eGrep(body, "anomalyd_window_samples_not_analysed_total"))
		case relabel && excluded != 0:
			// write_relabel_configs drops what exclude selects: nothing is left to exclude.
			t.Errorf(`with write_relabel_configs, anomalyd excluded %g samples: want 0, Prometheus drops them`, excluded)
		case !relabel && !(excluded > 0):
			t.Errorf(`without write_relabel_configs, anomalyd excluded %g samples: want > 0 (ALERTS, recording rules and its scores arrive)`, excluded)
		}
	})
}

// deployIsOutput says whether name is one of anomalyd's output series (not
// one of its anomalyd_ self metrics).
func deployIsOutput(name string) bool {
	return strings.HasPrefix(name, "anomaly_")
}

// deployFirst quotes the first deployMaxReports strings of ss.
func deployFirst(ss []string) string {
	if len(ss) > deployMaxReports {
		return fmt.Sprintf("%q…", ss[:deployMaxReports])
	}
	return fmt.Sprintf("%q", ss)
}

// deployScalar runs a query that returns one series and returns its value.
func deployScalar(t *testing.T, base, expr string) float64 {
	t.Helper()
	res, err := e2eQuery(base, expr, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("%s: %s, want one series", expr, e2eFormatAll(res))
	}
	return res[0].Points[0].V
}

// deployReport counts violations of one kind, seen by the polls, and keeps
// the first few.
type deployReport struct {
	unit        string        // what a violation is, for String
	n, polls    int           // violations, polls that saw one
	first, last time.Duration // of the polls that saw one, since the run started
	examples    []string
}

func (r *deployReport) add(at time.Duration, example string) {
	if r.n == 0 {
		r.first = at
	}
	if r.n == 0 || at != r.last {
		r.polls++
	}
	r.last = at
	r.n++
	if example != "" && len(r.examples) < deployMaxReports && !slices.Contains(r.examples, example) {
		r.examples = append(r.examples, example)
	}
}

func (r *deployReport) String() string {
	s := fmt.Sprintf("%d %s at %d polls from %s to %s into the run", r.n, r.unit, r.polls, r.first.Round(time.Second), r.last.Round(time.Second))
	if len(r.examples) > 0 {
		s += ", e.g.:\n  " + strings.Join(r.examples, "\n  ")
	}
	return s
}

// deployCollidingMetric has two series that differ only in the labels
// alertname and severity, which the alert rules set.
const deployCollidingMetric = "node_textfile_check_failures"

// deploySeries is one series of the node-like exporter.
type deploySeries struct {
	name, labels string  // labels as in the text format, without braces
	counter      bool    // a counter growing at level per second, else a gauge at level
	level, noise float64 // noise: relative standard deviation per scrape
	step         float64 // factor applied to level once the exporter steps (0: none)
	clock        bool    // a gauge that only grows: the time of the scrape, in seconds
}

// deployNodeSeries are node_exporter-like series: counters and gauges with
// noise, textfile-collector series with the labels alertname, severity,
// metric, detector and exported_metric, and a few that step by a large
// factor in the middle of the run.
func deployNodeSeries() []deploySeries {
	var ss []deploySeries
	for _, cpu := range []string{"0", "1"} {
		for _, m := range []struct {
			mode string
			rate float64
		}{{"idle", 0.85}, {"user", 0.08}, {"system", 0.04}, {"iowait", 0.01}, {"irq", 0.001}, {"softirq", 0.005}, {"steal", 0}, {"nice", 0.002}} {
			s := deploySeries{name: "node_cpu_seconds_total", labels: fmt.Sprintf(`cpu=%q,mode=%q`, cpu, m.mode),
				counter: true, level: m.rate, noise: 0.05}
			if cpu == "0" && m.mode == "user" {
				s.step = 8 // a busy process: user time 0.08 → 0.64 s/s
			}
			ss = append(ss, s)
		}
	}
	return append(ss,
		deploySeries{name: "node_context_switches_total", counter: true, level: 2500, noise: 0.08},
		deploySeries{name: "node_disk_io_time_seconds_total", labels: `device="sda"`, counter: true, level: 0.03, noise: 0.2},
		deploySeries{name: "node_filesystem_avail_bytes", labels: `device="/dev/sda1",fstype="ext4",mountpoint="/"`, level: 4.1e10, noise: 1e-4},
		deploySeries{name: "node_filesystem_avail_bytes", labels: `device="/dev/sdb1",fstype="xfs",mountpoint="/data"`, level: 2.3e11, noise: 1e-4},
		deploySeries{name: "node_filesystem_size_bytes", labels: `device="/dev/sda1",fstype="ext4",mountpoint="/"`, level: 6.2e10},
		deploySeries{name: "node_filesystem_size_bytes", labels: `device="/dev/sdb1",fstype="xfs",mountpoint="/data"`, level: 5e11},
		deploySeries{name: "node_load1", level: 0.4, noise: 0.1, step: 15},
		deploySeries{name: "node_load15", level: 0.3, noise: 0.01},
		deploySeries{name: "node_load5", level: 0.35, noise: 0.03},
		deploySeries{name: "node_memory_Buffers_bytes", level: 1.5e8, noise: 0.01},
		deploySeries{name: "node_memory_Cached_bytes", level: 2.1e9, noise: 0.003},
		deploySeries{name: "node_memory_MemAvailable_bytes", level: 5.2e9, noise: 0.005, step: 0.25},
		deploySeries{name: "node_memory_MemTotal_bytes", level: 8e9},
		deploySeries{name: "node_network_receive_bytes_total", labels: `device="eth0"`, counter: true, level: 1.2e5, noise: 0.15},
		deploySeries{name: "node_network_transmit_bytes_total", labels: `device="eth0"`, counter: true, level: 4e4, noise: 0.15},
		deploySeries{name: "node_procs_running", level: 3, noise: 0.2},
		// anomalyd analyses a gauge that only grows as its rate; the
		// dashboard must plot that rate, not 1.8e9 against a band near 1.
		deploySeries{name: "node_time_seconds", clock: true},
		// The alert rules set alertname and severity: these two collide
		// after the rule applies its labels unless it aggregates them away.
		deploySeries{name: deployCollidingMetric, labels: `alertname="BackupLate",severity="warning"`, level: 2, noise: 0.02, step: 20},
		deploySeries{name: deployCollidingMetric, labels: `alertname="BackupStale",severity="critical"`, level: 2, noise: 0.02, step: 20},
		// anomalyd renames metric and detector to exported_metric and
		// exported_detector; an input already called exported_metric keeps
		// its name.
		deploySeries{name: "node_textfile_probe_seconds", labels: `detector="blackbox",metric="latency"`, level: 0.05, noise: 0.03, step: 16},
		deploySeries{name: "node_textfile_queue_length", labels: `exported_metric="orders"`, level: 100, noise: 0.03, step: 20},
	)
}

// labelMap returns the series' labels.
func (s deploySeries) labelMap(t *testing.T) map[string]string {
	t.Helper()
	l, err := e2eParseText([]byte(s.name + "{" + s.labels + "} 0\n"))
	if err != nil || len(l) != 1 {
		t.Fatalf("labels of %s{%s}: %v", s.name, s.labels, err)
	}
	return l[0].Labels
}

// deployExporter serves deployNodeSeries in the text format, with fresh
// noise at every scrape; after step is set the stepping series move.
type deployExporter struct {
	srv         *httptest.Server
	series      []deploySeries
	step        atomic.Bool
	firstScrape atomic.Int64 // unix ms

	mu     sync.Mutex
	rng    *rand.Rand
	last   time.Time
	counts []float64 // counter values
}

func deployNewExporter() *deployExporter {
	e := &deployExporter{series: deployNodeSeries(), rng: rand.New(rand.NewPCG(1, 2))}
	e.counts = make([]float64, len(e.series))
	for i, s := range e.series {
		if s.counter {
			e.counts[i] = s.level * 1e5 // up for a day or so
		}
	}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	return e
}

func (e *deployExporter) serve(w http.ResponseWriter, r *http.Request) {
	e.firstScrape.CompareAndSwap(0, time.Now().UnixMilli())
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	dt := 1.0
	if !e.last.IsZero() {
		dt = now.Sub(e.last).Seconds()
	}
	e.last = now
	stepped := e.step.Load()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	var b strings.Builder
	for i, s := range e.series {
		if i == 0 || e.series[i-1].name != s.name {
			typ := "gauge"
			if s.counter {
				typ = "counter"
			}
			fmt.Fprintf(&b, "# HELP %s A node_exporter-like series of TestDeploySetup.\n# TYPE %s %s\n", s.name, s.name, typ)
		}
		level := s.level
		if stepped && s.step != 0 {
			level *= s.step
		}
		v := math.Max(0, level*(1+s.noise*e.rng.NormFloat64()))
		if s.clock {
			v = float64(now.UnixMilli()) / 1000
		}
		if s.counter {
			e.counts[i] += v * dt
			v = e.counts[i]
		}
		if s.labels == "" {
			fmt.Fprintf(&b, "%s %g\n", s.name, v)
		} else {
			fmt.Fprintf(&b, "%s{%s} %g\n", s.name, s.labels, v)
		}
	}
	fmt.Fprint(w, b.String())
}

// steppedNames returns the metric names of the series that step.
func (e *deployExporter) steppedNames() []string {
	var names []string
	for _, s := range e.series {
		if s.step != 0 && !slices.Contains(names, s.name) {
			names = append(names, s.name)
		}
	}
	return names
}

func (e *deployExporter) isStepped(name string) bool {
	return slices.Contains(e.steppedNames(), name)
}

// deployPanel is a dashboard panel as far as the checks need it: its title
// and queries, and the panels of a row.
type deployPanel struct {
	Title   string         `json:"title"`
	Targets []deployTarget `json:"targets"`
	Panels  []deployPanel  `json:"panels"`
}

type deployTarget struct {
	Expr string `json:"expr"`
}

// deployDashboardVars replaces the dashboard's variables as Grafana does
// with the series chosen (its anomaly_score labels) over [since, end].
func deployDashboardVars(chosen map[string]string, since, end time.Time) *strings.Replacer {
	var matchers []string
	for _, k := range slices.Sorted(maps.Keys(chosen)) {
		if k != "__name__" {
			matchers = append(matchers, fmt.Sprintf("%s=%q", k, chosen[k]))
		}
	}
	// As Grafana formats a variable for a regex matcher: the value
	// regex-escaped, the escapes escaped again inside the PromQL string.
	instance := strings.ReplaceAll(regexp.QuoteMeta(chosen["instance"]), `\`, `\\`)
	return strings.NewReplacer("${series:raw}", strings.Join(matchers, ","), "$metric", chosen["metric"],
		"$job", "node", "$instance", instance, "$__rate_interval", "5s",
		"$__interval", "5s", "$__range", fmt.Sprintf("%ds", int(end.Sub(since).Seconds())))
}

// deployCheckRatePlot checks the value panel on node_time_seconds, a gauge
// anomalyd analyses as its rate once its trial has shown that it only
// grows: from then on every line the panel draws (value, expected, band)
// is near 1 s/s, and the value and the band are both there.
func deployCheckRatePlot(t *testing.T, promURL string, panels []deployPanel, since, end time.Time) {
	t.Helper()
	res, err := e2eQuery(promURL, `anomaly_expected{job="node", detector="combined", metric="node_time_seconds"}`, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("anomaly_expected of node_time_seconds: %d series, want 1 (a band once its trial and warm-up are over)", len(res))
	}
	var first struct {
		Result []struct {
			Values [][2]any `json:"values"`
		} `json:"result"`
	}
	params := url.Values{"query": {`anomaly_value{job="node", metric="node_time_seconds"}`}, "start": {strconv.FormatInt(since.Unix(), 10)},
		"end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"1"}}
	if err := e2eAPI(promURL, "/api/v1/query_range", params, &first); err != nil {
		t.Fatal(err)
	}
	if len(first.Result) != 1 || len(first.Result[0].Values) == 0 {
		t.Fatalf("anomaly_value of node_time_seconds: %d series over the run, want 1", len(first.Result))
	}
	from, _ := first.Result[0].Values[0][0].(float64)
	since = time.Unix(int64(from)+1, 0)
	vars := deployDashboardVars(res[0].Metric, since, end)
	i := slices.IndexFunc(panels, func(p deployPanel) bool { return p.Title == `panel "Value, expected and band"` })
	if i < 0 {
		t.Fatal(`the dashboard has no panel "Value, expected and band"`)
	}
	lines, highest := 0, 0.0
	for _, tg := range panels[i].Targets {
		expr := vars.Replace(tg.Expr)
		var data struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		}
		params := url.Values{"query": {expr}, "start": {strconv.FormatInt(since.Unix(), 10)},
			"end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"5"}}
		if err := e2eAPI(promURL, "/api/v1/query_range", params, &data); err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		lines += len(data.Result)
		for _, r := range data.Result {
			for _, p := range r.Values {
				str, _ := p[1].(string)
				v, err := strconv.ParseFloat(str, 64)
				if err != nil {
					t.Fatalf("%s: value %v: %v", expr, p[1], err)
				}
				highest = max(highest, math.Abs(v))
			}
		}
	}
	t.Logf("node_time_seconds: the value panel draws %d lines, the highest |value| %g", lines, highest)
	if lines < 4 || highest > 100 {
		t.Errorf("node_time_seconds, analysed as its rate: the value panel draws %d lines up to %g; want value, expected and band (4), all near 1 s/s", lines, highest)
	}
}

// deployCheckDashboard runs every query of deploy/grafana/anomalyd.json,
// panels and annotations, against the setup's real Prometheus over the
// run, once for each stepped metric of the exporter with the variables set
// to that series. Each panel must show data for each series, and each
// query must return data for some series (the value panel's two queries
// take turns: one for gauges, one for counters' rates). The remote-write
// panels are the exception: `make run`'s anomalyd has no store to send to.
func deployCheckDashboard(t *testing.T, promURL, root string, stepped []string, since time.Time) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "anomalyd.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels      []deployPanel `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	// A panel is its queries; an annotation is a panel of one query.
	var panels []deployPanel
	var walk func(ps []deployPanel)
	walk = func(ps []deployPanel) {
		for _, p := range ps {
			if len(p.Targets) > 0 {
				panels = append(panels, deployPanel{Title: "panel " + strconv.Quote(p.Title), Targets: p.Targets})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			panels = append(panels, deployPanel{Title: "annotation " + strconv.Quote(a.Name), Targets: []deployTarget{{a.Expr}}})
		}
	}
	end := time.Now()
	answered := map[string]bool{} // by query as in the file
	runs := 0
	for _, name := range stepped {
		res, err := e2eQuery(promURL, fmt.Sprintf(`anomaly_score{job="node", detector="combined", metric=%q}`, name), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) == 0 {
			continue
		}
		chosen := res[0].Metric
		runs++
		vars := deployDashboardVars(chosen, since, end)
		for _, p := range panels {
			shows, sink := false, false
			for _, tg := range p.Targets {
				expr := vars.Replace(tg.Expr)
				var data struct {
					Result []json.RawMessage `json:"result"`
				}
				params := url.Values{"query": {expr}, "start": {strconv.FormatInt(since.Unix(), 10)},
					"end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"5"}}
				if err := e2eAPI(promURL, "/api/v1/query_range", params, &data); err != nil {
					t.Errorf("%s: %s: %v", p.Title, expr, err)
					continue
				}
				if len(data.Result) > 0 {
					shows, answered[tg.Expr] = true, true
				}
				sink = sink || strings.Contains(expr, "anomalyd_sink_")
			}
			if !shows && !sink {
				t.Errorf("%s shows nothing over the run for %s", p.Title, e2eFormat(chosen))
			}
		}
	}
	if runs == 0 {
		t.Fatalf("no anomaly_score of a stepped series (%q) in Prometheus", stepped)
	}
	deployCheckRatePlot(t, promURL, panels, since, end)
	n := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			n++
			switch {
			case answered[tg.Expr]:
			case strings.Contains(tg.Expr, "anomalyd_sink_"):
				t.Logf("%s: %s: nothing, as expected without a remote_write store", p.Title, tg.Expr)
			default:
				t.Errorf("%s: %s returned nothing for any of %d stepped series", p.Title, tg.Expr, runs)
			}
		}
	}
	t.Logf("%d of %d dashboard queries answered with data, over %d stepped series", len(answered), n, runs)
}
