//go:build linux

// End-to-end test with real Prometheus servers (Debian's package, 2.42):
//
//	exporter ─scrape 1s─▶ Prometheus A ─remote_write─▶ anomalyd ─remote_write─▶ Prometheus B
//	(in-test HTTP)                                       /metrics               rules: deploy/ alerts
//
// One set of processes serves three scenarios, run in sequence as subtests
// because each builds on the time the one before has let pass:
//  1. output series, and the incident series of each target, reach B and
//     anomalyd's /metrics, labelled as documented;
//  2. a step of e2e_step_gauge from 10 to 100 scores 2 or more and fires the
//     AnomalyDetected alert of deploy/prometheus/anomalyd-alerts.yml in B;
//  3. B stops for 30s and restarts on the same data: anomalyd's queue keeps
//     and then delivers the outage's scores and incident series, with no
//     gap.
//
// Everything listens on 127.0.0.1 on free ports and lives in t.TempDir().
// Each process logs to a file there; a failure prints the last lines of each.
// The anomalyd binary is built once per test binary, from the repository
// this file is in (whatever the working directory); set E2E_ANOMALYD_BINARY
// to test a prebuilt anomalyd instead.
//
// This file also holds the helpers of the package's other tests (free ports,
// processes, readiness, the Prometheus HTTP API, the text format); their
// identifiers start with e2e.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	e2eGaugeBefore = 10.0 // e2e_step_gauge until scenario 2
	e2eGaugeAfter  = 100.0
	e2eCounterRate = 5.0 // e2e_requests_total per second
	e2eMaxGap      = 3 * time.Second
	e2eOutage      = 30 * time.Second
	e2eLogLines    = 40 // lines of each log printed on failure
)

// e2eForwarded is what A remote-writes to anomalyd: the test exporter and a
// few dozen of A's own series, one classic histogram among them. A's whole
// self-scrape (about 1000 series) would only slow the 2-core machine down.
const e2eForwarded = `up|scrape_duration_seconds|scrape_samples_scraped|e2e_.+|go_goroutines|go_memstats_heap_.+|process_.+|prometheus_http_requests_total|prometheus_http_request_duration_seconds_.+|prometheus_tsdb_head_.+`

// TestMain removes the anomalyd binary built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if e2eBuild.dir != "" {
		os.RemoveAll(e2eBuild.dir)
	}
	os.Exit(code)
}

func TestE2E(t *testing.T) {
	env := e2eSetup(t)
	t.Run("scores reach the store and /metrics", env.scenarioOutputs)
	t.Run("a step fires the alert", env.scenarioStep)
	t.Run("a store outage leaves no gap", env.scenarioOutage)
}

// e2eEnv is the running system.
type e2eEnv struct {
	dir                                string
	prometheus, promtool, anomalydBin  string
	exp                                *e2eExporter
	procs                              []*e2eProc // in start order, restarts included
	a, b, d                            *e2eProc
	aURL, bURL, dURL                   string
	bArgs                              []string
	stepLabels, counterLabels          map[string]string // exact labels of two output series
	groupLabels                        map[string]string // the exporter's incident group
	gaugeScrapedSince, warmupCompleted time.Time
}

// e2eNewEnv returns an environment in a temporary directory with the
// prometheus and promtool binaries found and anomalyd built; the processes
// it starts are stopped when t ends.
func e2eNewEnv(t testing.TB) *e2eEnv {
	env := &e2eEnv{dir: t.TempDir()}
	env.prometheus = e2eLookPath(t, "prometheus")
	env.promtool = e2eLookPath(t, "promtool")
	env.anomalydBin = e2eAnomalyd(t)
	t.Cleanup(func() { env.cleanup(t) })
	return env
}

func e2eSetup(t *testing.T) *e2eEnv {
	exp := e2eNewExporter()
	t.Cleanup(exp.srv.Close) // after the processes stop (cleanups run last-in first-out)
	env := e2eNewEnv(t)
	env.exp = exp
	expHost := strings.TrimPrefix(env.exp.srv.URL, "http://")

	// B: the store, with deploy/'s alerts as they are.
	bDir := env.mkdir(t, "prometheus-b")
	rules, err := os.ReadFile(filepath.Join(e2eRepoRoot(t), "deploy", "prometheus", "anomalyd-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	env.write(t, bDir, "anomalyd-alerts.yml", string(rules))
	env.write(t, bDir, "prometheus.yml", "global:\n  evaluation_interval: 1s\nrule_files:\n  - anomalyd-alerts.yml\n")
	pb := e2eFreePort(t)
	env.bURL = "http://" + pb
	env.bArgs = []string{"--config.file=prometheus.yml", "--storage.tsdb.path=data", "--web.listen-address=" + pb,
		"--web.enable-remote-write-receiver", "--log.level=info"}
	env.b = env.start(t, "prometheus-b", bDir, env.prometheus, env.bArgs...)

	// anomalyd, writing to B.
	dDir := env.mkdir(t, "anomalyd")
	pd := e2eFreePort(t)
	env.dURL = "http://" + pd
	env.write(t, dDir, "anomalyd.yml", fmt.Sprintf(`remote_write:
  - url: %s/api/v1/write
    name: prometheus-b
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 2s, capacity: 100000}
window:
  publish_interval: 1s
`, env.bURL))
	env.d = env.start(t, "anomalyd", dDir, env.anomalydBin,
		"--config.file=anomalyd.yml", "--web.listen-address="+pd, "--log.level=info")

	// A: scrapes itself and the exporter every second, writes to anomalyd.
	aDir := env.mkdir(t, "prometheus-a")
	pa := e2eFreePort(t)
	env.aURL = "http://" + pa
	env.write(t, aDir, "prometheus.yml", fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prometheus-a
    static_configs: [{targets: [%q]}]
  - job_name: e2e
    static_configs: [{targets: [%q]}]
remote_write:
  - name: anomalyd
    url: %s/api/v1/write
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}
    write_relabel_configs:
      - source_labels: [__name__]
        regex: %q
        action: keep
`, pa, expHost, env.dURL, e2eForwarded))

	env.waitReady(t, env.b, env.bURL)
	env.waitReady(t, env.d, env.dURL)
	env.a = env.start(t, "prometheus-a", aDir, env.prometheus, "--config.file=prometheus.yml",
		"--storage.tsdb.path=data", "--web.listen-address="+pa, "--log.level=info")
	env.waitReady(t, env.a, env.aURL)

	err = e2eEventually(20*time.Second, 200*time.Millisecond, func() error {
		if env.exp.scrapes.Load() < 2 {
			return errors.New("the exporter has not been scraped twice")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Prometheus A does not scrape the test exporter at %s: %v", expHost, err)
	}
	env.gaugeScrapedSince = time.UnixMilli(env.exp.firstScrape.Load())
	env.stepLabels = map[string]string{"__name__": "anomaly_score", "case": "step", "detector": "combined",
		"instance": expHost, "job": "e2e", "metric": "e2e_step_gauge"}
	env.counterLabels = map[string]string{"__name__": "anomaly_score", "case": "counter", "detector": "combined",
		"instance": expHost, "job": "e2e", "metric": "e2e_requests_total"}
	env.groupLabels = map[string]string{"instance": expHost, "job": "e2e"}
	return env
}

// e2eIncidentNames are the incident series anomalyd writes per group.
var e2eIncidentNames = []string{"anomaly_incident_score", "anomaly_incident_series", "anomaly_incident_open", "anomaly_incidents_opened_total"}

// e2eCheckSpacing fails unless pts have strictly increasing timestamps at
// most e2eMaxGap apart; fatal, since stored samples never change.
func e2eCheckSpacing(what string, pts []e2ePoint) error {
	for i := 1; i < len(pts); i++ {
		if pts[i].T <= pts[i-1].T {
			return e2eFatal(fmt.Errorf("%s: timestamps not strictly increasing: %d then %d", what, pts[i-1].T, pts[i].T))
		}
		if gap := time.Duration(pts[i].T-pts[i-1].T) * time.Millisecond; gap > e2eMaxGap {
			return e2eFatal(fmt.Errorf("%s: gap of %s between samples at %s and %s", what, gap,
				time.UnixMilli(pts[i-1].T).Format(time.RFC3339Nano), time.UnixMilli(pts[i].T).Format(time.RFC3339Nano)))
		}
	}
	return nil
}

// scenarioOutputs: Prometheus A's series come out of anomalyd as scores in
// B and on /metrics, labelled and timestamped as documented.
func (env *e2eEnv) scenarioOutputs(t *testing.T) {
	aNames, err := e2eLabelValues(env.aURL, "__name__")
	if err != nil {
		t.Fatalf("cannot list A's metric names: %v", err)
	}

	// Within 180s every series of the exporter, `up` and a histogram's
	// _count have scores in B, and the exporter's series are past warm-up
	// (anomaly_expected exists). The histogram's _bucket series are ignored.
	required := []string{"e2e_step_gauge", "e2e_requests_total", "e2e_labelled_gauge", "up", "prometheus_http_request_duration_seconds_count"}
	var bNames []string
	// Ready takes warm-up and calibration: 110 samples at 1 s.
	err = e2eEventually(180*time.Second, time.Second, func() error {
		res, err := e2eQuery(env.bURL, "anomaly_score", time.Time{})
		if err != nil {
			return err
		}
		bNames = bNames[:0]
		for _, s := range res {
			m := s.Metric["metric"]
			if !slices.Contains(aNames, m) {
				// A may have a name that it had not yet when asked.
				if aNames, err = e2eLabelValues(env.aURL, "__name__"); err != nil || !slices.Contains(aNames, m) {
					return e2eFatal(fmt.Errorf("B has %s: its metric label names no series of A", e2eFormat(s.Metric)))
				}
			}
			if v := s.Points[0].V; math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return e2eFatal(fmt.Errorf("B has %s = %g: want a finite score >= 0", e2eFormat(s.Metric), v))
			}
			if strings.HasSuffix(m, "_bucket") {
				return e2eFatal(fmt.Errorf("B has %s: classic histogram buckets are ignored by default", e2eFormat(s.Metric)))
			}
			if s.Metric["detector"] != "combined" {
				return e2eFatal(fmt.Errorf("B has %s: want detector=\"combined\" (output.per_detector is off)", e2eFormat(s.Metric)))
			}
			if !slices.Contains(bNames, m) {
				bNames = append(bNames, m)
			}
		}
		for _, n := range required {
			if !slices.Contains(bNames, n) {
				return fmt.Errorf("B has no anomaly_score{metric=%q} yet; it has %d metric names: %q", n, len(bNames), bNames)
			}
		}
		return e2eHas(env.bURL, `anomaly_expected{metric=~"e2e_step_gauge|e2e_requests_total"}`, 2, "past warm-up")
	})
	if err != nil {
		t.Fatalf("within 180s: %v", err)
	}
	env.warmupCompleted = time.Now()
	sort.Strings(bNames)
	t.Logf("B holds anomaly_score for %d metric names of A: %q", len(bNames), bNames)

	t.Run("labels", func(t *testing.T) {
		for _, want := range []map[string]string{env.stepLabels, env.counterLabels} {
			sel := fmt.Sprintf(`anomaly_score{metric=%q}`, want["metric"])
			res, err := e2eQuery(env.bURL, sel, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 1 || !e2eEqualLabels(res[0].Metric, want) {
				t.Errorf("%s: got %s, want exactly %s", sel, e2eFormatAll(res), e2eFormat(want))
			}
		}
		// The exporter's series has a label called metric.
		res, err := e2eQuery(env.bURL, `anomaly_score{metric="e2e_labelled_gauge"}`, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].Metric["exported_metric"] != "clash" {
			t.Errorf(`anomaly_score{metric="e2e_labelled_gauge"}: got %s, want one series with exported_metric="clash"`, e2eFormatAll(res))
		}
	})

	t.Run("expected values and bands", func(t *testing.T) {
		// The gauge: expected 10 inside the band. The counter: analysed as a
		// per-second rate, so expected near 5/s and not the growing count.
		for _, c := range []struct {
			metric   string
			min, max float64
		}{
			{"e2e_step_gauge", e2eGaugeBefore - 0.5, e2eGaugeBefore + 0.5},
			{"e2e_requests_total", e2eCounterRate / 2, e2eCounterRate * 2},
		} {
			v := map[string]float64{}
			for _, o := range []string{"anomaly_expected", "anomaly_lower", "anomaly_upper"} {
				res, err := e2eQuery(env.bURL, fmt.Sprintf(`%s{metric=%q}`, o, c.metric), time.Time{})
				if err != nil {
					t.Fatal(err)
				}
				if len(res) != 1 {
					t.Fatalf("%s{metric=%q}: got %s, want one series", o, c.metric, e2eFormatAll(res))
				}
				v[o] = res[0].Points[0].V
			}
			exp, lo, up := v["anomaly_expected"], v["anomaly_lower"], v["anomaly_upper"]
			if !(c.min <= exp && exp <= c.max) {
				t.Errorf("anomaly_expected{metric=%q} = %g, want within [%g, %g]", c.metric, exp, c.min, c.max)
			}
			if !(lo <= exp && exp <= up) {
				t.Errorf("%s: lower %g, expected %g, upper %g: want lower <= expected <= upper", c.metric, lo, exp, up)
			}
		}
	})

	t.Run("output timestamps are input timestamps", func(t *testing.T) {
		at := time.Now().Add(-3 * time.Second) // both have their samples up to here
		in, err := e2eQuery(env.aURL, `e2e_step_gauge[1m]`, at)
		if err != nil || len(in) != 1 {
			t.Fatalf("A: e2e_step_gauge[1m]: %s, %v", e2eFormatAll(in), err)
		}
		out, err := e2eQuery(env.bURL, `anomaly_score{metric="e2e_step_gauge"}[15s]`, at)
		if err != nil || len(out) != 1 {
			t.Fatalf("B: anomaly_score{metric=\"e2e_step_gauge\"}[15s]: %s, %v", e2eFormatAll(out), err)
		}
		inTS := map[int64]bool{}
		for _, p := range in[0].Points {
			inTS[p.T] = true
		}
		for _, p := range out[0].Points {
			if !inTS[p.T] {
				t.Errorf("score sample at %d has no input sample at that timestamp (A has %d samples from %d to %d)",
					p.T, len(in[0].Points), in[0].Points[0].T, in[0].Points[len(in[0].Points)-1].T)
			}
		}
	})

	t.Run("anomalyd /metrics", func(t *testing.T) {
		// The same metric names as B holds; the sets may differ for a publish
		// interval after a series appears, hence the retry.
		var body []byte
		err := e2eEventually(20*time.Second, time.Second, func() error {
			var err error
			if body, err = e2eGet(env.dURL + "/metrics"); err != nil {
				return err
			}
			lines, err := e2eParseText(body)
			if err != nil {
				return err
			}
			var names []string
			for _, l := range lines {
				if l.HasTimestamp && strings.HasPrefix(l.Name, "anomaly_") {
					return e2eFatal(fmt.Errorf("/metrics line %q has a timestamp", l.Line))
				}
				if l.Name == "anomaly_score" && !slices.Contains(names, l.Labels["metric"]) {
					names = append(names, l.Labels["metric"])
				}
			}
			sort.Strings(names)
			if !slices.Equal(names, bNames) {
				return fmt.Errorf("/metrics has anomaly_score for metric names %q, B for %q", names, bNames)
			}
			// Self metrics that deploy/'s dashboard and alerts query and that
			// are non-zero by now.
			for _, n := range []string{"anomalyd_ingest_samples_received_total", "anomalyd_sink_samples_sent_total", "anomalyd_window_series_active"} {
				if v, ok := e2eSum(lines, n); !ok || v <= 0 {
					return fmt.Errorf("/metrics: %s = %g (present: %v), want > 0", n, v, ok)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		// promtool exits 1 when it cannot parse the input and 3 for lint
		// problems (naming, missing help): the first fails, the second is
		// printed.
		cmd := exec.Command(env.promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.ExitCode() == 3:
			t.Logf("promtool check metrics: lint problems (not errors):\n%s", out.String())
		default:
			t.Errorf("promtool check metrics rejects anomalyd's /metrics: %v\n%s", err, out.String())
		}
	})

	t.Run("incident series", func(t *testing.T) {
		// The exporter's target is one group (incidents.group_by: job and
		// instance): its four incident series reach B by remote write,
		// labelled with the group's labels alone, a sample each time the
		// stage publishes (once a second).
		for _, name := range e2eIncidentNames {
			want := map[string]string{"__name__": name}
			for k, v := range env.groupLabels {
				want[k] = v
			}
			sel := fmt.Sprintf(`%s{job="e2e"}`, name)
			err := e2eEventually(10*time.Second, time.Second, func() error {
				res, err := e2eQuery(env.bURL, sel+"[10s]", time.Time{})
				if err != nil {
					return err
				}
				if len(res) != 1 || !e2eEqualLabels(res[0].Metric, want) {
					return fmt.Errorf("%s in B: got %s, want exactly %s", sel, e2eFormatAll(res), e2eFormat(want))
				}
				pts := res[0].Points
				for _, p := range pts {
					if math.IsNaN(p.V) || math.IsInf(p.V, 0) || p.V < 0 {
						return e2eFatal(fmt.Errorf("%s in B = %g at %d: want finite and >= 0", sel, p.V, p.T))
					}
				}
				if len(pts) < 5 {
					return fmt.Errorf("%s in B: %d samples in the last 10s, want one a second", sel, len(pts))
				}
				return e2eCheckSpacing(sel+" in B", pts)
			})
			if err != nil {
				t.Error(err)
			}
		}
		// The same groups as anomalyd's /metrics: every target A forwards.
		err := e2eEventually(20*time.Second, time.Second, func() error {
			res, err := e2eQuery(env.bURL, "anomaly_incident_score", time.Time{})
			if err != nil {
				return err
			}
			var inB []string
			for _, r := range res {
				inB = append(inB, e2eFormat(r.Metric))
			}
			body, err := e2eGet(env.dURL + "/metrics")
			if err != nil {
				return err
			}
			lines, err := e2eParseText(body)
			if err != nil {
				return err
			}
			var scraped []string
			for _, l := range lines {
				if l.Name == "anomaly_incident_score" {
					l.Labels["__name__"] = l.Name
					scraped = append(scraped, e2eFormat(l.Labels))
				}
			}
			sort.Strings(inB)
			sort.Strings(scraped)
			if len(scraped) < 2 || !slices.Equal(inB, scraped) {
				return fmt.Errorf("anomaly_incident_score: B has %q, /metrics %q; want the same groups, at least A's and the exporter's", inB, scraped)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})

	t.Run("Prometheus A sends without failures", func(t *testing.T) {
		body, err := e2eGet(env.aURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := e2eParseText(body)
		if err != nil {
			t.Fatal(err)
		}
		sent, _ := e2eSum(lines, "prometheus_remote_storage_samples_total")
		failed, ok := e2eSum(lines, "prometheus_remote_storage_samples_failed_total")
		retried, _ := e2eSum(lines, "prometheus_remote_storage_samples_retried_total")
		t.Logf("A's remote write to anomalyd: %g samples sent, %g failed, %g retried", sent, failed, retried)
		if !ok || failed != 0 || sent == 0 {
			t.Errorf("A: prometheus_remote_storage_samples_total %g, _failed_total %g (present: %v): want > 0 and 0", sent, failed, ok)
		}
	})
}

// scenarioStep: e2e_step_gauge jumps from 10 to 100; its score goes above 1
// and B fires AnomalyDetected for it.
func (env *e2eEnv) scenarioStep(t *testing.T) {
	if env.warmupCompleted.IsZero() {
		t.Fatal("scenario 1 did not see the gauge past warm-up")
	}
	// At least 20s of the gauge at 10 before the step.
	if d := 20*time.Second - time.Since(env.gaugeScrapedSince); d > 0 {
		time.Sleep(d)
	}
	// A flat line is never anomalous.
	res, err := e2eQuery(env.bURL, `max_over_time(anomaly_score{metric="e2e_step_gauge"}[5m])`, time.Time{})
	if err != nil || len(res) != 1 {
		t.Fatalf("max_over_time(anomaly_score{metric=\"e2e_step_gauge\"}[5m]): %s, %v", e2eFormatAll(res), err)
	}
	if v := res[0].Points[0].V; v > 1 {
		env.logTrace(t, "e2e_step_gauge", 2*time.Minute)
		t.Fatalf("e2e_step_gauge at a constant %g scored %g before the step: want <= 1", e2eGaugeBefore, v)
	}

	// The band before the step: AnomalySustained fires when the expected
	// value leaves it for good (checked below).
	res, err = e2eQuery(env.bURL, `anomaly_upper{metric="e2e_step_gauge",detector="combined"}`, time.Time{})
	if err != nil || len(res) != 1 {
		t.Fatalf("anomaly_upper{metric=\"e2e_step_gauge\"} before the step: %s, %v", e2eFormatAll(res), err)
	}
	upperBefore := res[0].Points[0].V

	step := time.Now()
	env.exp.setGauge(e2eGaugeAfter)
	t.Logf("e2e_step_gauge: %g -> %g at %s, after %s at %g", e2eGaugeBefore, e2eGaugeAfter,
		step.Format(time.RFC3339Nano), step.Sub(env.gaugeScrapedSince).Round(time.Second), e2eGaugeBefore)

	var first e2ePoint
	err = e2eEventually(15*time.Second, 500*time.Millisecond, func() error {
		res, err := e2eQuery(env.bURL, `anomaly_score{metric="e2e_step_gauge"}[30s]`, time.Time{})
		if err != nil {
			return err
		}
		for _, s := range res {
			for _, p := range s.Points {
				if p.T >= step.Add(-time.Second).UnixMilli() && p.V >= 2 {
					first = p
					return nil
				}
			}
		}
		return errors.New("no score of 2 or more (an alarm) since the step")
	})
	if err != nil {
		env.logTrace(t, "e2e_step_gauge", time.Minute)
		t.Fatalf("within 15s of the step: %v", err)
	}
	t.Logf("first alarm score: %g at %s, %s after the step", first.V,
		time.UnixMilli(first.T).Format(time.RFC3339Nano), time.UnixMilli(first.T).Sub(step).Round(time.Millisecond))

	var alert e2eAlert
	err = e2eEventually(40*time.Second-time.Since(step), 500*time.Millisecond, func() error {
		alerts, err := e2eAlerts(env.bURL)
		if err != nil {
			return err
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == "AnomalyDetected" && a.Labels["metric"] == "e2e_step_gauge" {
				alert = a
				if a.State == "firing" {
					return nil
				}
				return fmt.Errorf("AnomalyDetected for e2e_step_gauge is %s since %s", a.State, a.ActiveAt)
			}
		}
		return errors.New("no AnomalyDetected alert for e2e_step_gauge")
	})
	if err != nil {
		env.logTrace(t, "e2e_step_gauge", time.Minute)
		t.Fatalf("within 40s of the step: %v", err)
	}
	t.Logf("B fires %s %s: %q", alert.Labels["alertname"], e2eFormat(alert.Labels), alert.Annotations["description"])
	want := map[string]string{"alertname": "AnomalyDetected", "severity": "info"}
	for k, v := range env.stepLabels {
		if k != "__name__" {
			want[k] = v
		}
	}
	if !e2eEqualLabels(alert.Labels, want) {
		t.Errorf("alert labels: got %s, want %s", e2eFormat(alert.Labels), e2eFormat(want))
	}
	// The description's template looks up anomaly_expected and the band for
	// the same labels: in B these came from anomalyd, not from a unit test.
	if d := alert.Annotations["description"]; !strings.Contains(d, "e2e_step_gauge scored ") || !strings.Contains(d, "expected ") || !strings.Contains(d, "band [") {
		t.Errorf("alert description %q: want the metric, its expected value and its band", d)
	}

	// AnomalySustained's premise: after a lasting shift the expected value
	// leaves the band it had before and stays out (its rule then needs 3
	// minutes of band history, longer than this test runs).
	err = e2eEventually(30*time.Second, 500*time.Millisecond, func() error {
		res, err := e2eQuery(env.bURL, `min_over_time(anomaly_expected{metric="e2e_step_gauge",detector="combined"}[5s])`, time.Time{})
		if err != nil || len(res) != 1 {
			return fmt.Errorf("anomaly_expected: %s, %v", e2eFormatAll(res), err)
		}
		if v := res[0].Points[0].V; !(v > upperBefore) {
			return fmt.Errorf("expected value over the last 5s at least %g, not above the band's upper edge %g before the step", v, upperBefore)
		}
		return nil
	})
	if err != nil {
		env.logTrace(t, "e2e_step_gauge", time.Minute)
		t.Errorf("within 30s of AnomalyDetected: %v", err)
	}
}

// scenarioOutage: B is down for 30s; anomalyd keeps its output and delivers
// it after B restarts on the same data directory and port.
func (env *e2eEnv) scenarioOutage(t *testing.T) {
	if env.warmupCompleted.IsZero() {
		t.Fatal("scenario 1 did not see scores in B; an outage would prove nothing")
	}
	stopped := time.Now()
	if err := env.b.stop(20 * time.Second); err != nil {
		t.Fatalf("stopping B: %v", err)
	}
	t.Logf("B stopped in %s (exit: %v); keeping A and anomalyd running for %s",
		time.Since(stopped).Round(time.Millisecond), env.b.waitErr, e2eOutage)
	time.Sleep(e2eOutage - time.Since(stopped))
	if body, err := e2eGet(env.dURL + "/metrics"); err == nil {
		t.Logf("anomalyd sink metrics at the end of the outage:\n%s", e2eGrep(body, "anomalyd_sink_"))
	}

	env.b = env.start(t, "prometheus-b", env.b.dir, env.prometheus, env.bArgs...)
	env.waitReady(t, env.b, env.bURL)
	restarted := time.Now()
	t.Logf("B ready again %s after it stopped", restarted.Sub(stopped).Round(time.Millisecond))

	// The outage's scores arrive: consecutive samples at most 3s apart from
	// before the stop until after the restart.
	var pts []e2ePoint
	err := e2eEventually(60*time.Second, time.Second, func() error {
		res, err := e2eQuery(env.bURL, `anomaly_score{metric="e2e_step_gauge"}[4m]`, time.Time{})
		if err != nil {
			return err
		}
		if len(res) != 1 {
			return fmt.Errorf("anomaly_score{metric=\"e2e_step_gauge\"}[4m]: got %s, want one series", e2eFormatAll(res))
		}
		pts = res[0].Points
		if len(pts) == 0 {
			return errors.New("no samples")
		}
		if first := time.UnixMilli(pts[0].T); first.After(stopped.Add(-10 * time.Second)) {
			return fmt.Errorf("first sample at %s: want one before %s (10s before B stopped)", first.Format(time.RFC3339Nano), stopped.Format(time.RFC3339Nano))
		}
		if last := time.UnixMilli(pts[len(pts)-1].T); last.Before(restarted) {
			return fmt.Errorf("last sample at %s, before B restarted at %s: backlog not delivered yet", last.Format(time.RFC3339Nano), restarted.Format(time.RFC3339Nano))
		}
		for i := 1; i < len(pts); i++ {
			if pts[i].T <= pts[i-1].T {
				return e2eFatal(fmt.Errorf("timestamps not strictly increasing: %d then %d", pts[i-1].T, pts[i].T))
			}
			// B (2.42) rejects out-of-order samples: a gap between two
			// stored samples is never filled.
			if gap := time.Duration(pts[i].T-pts[i-1].T) * time.Millisecond; gap > e2eMaxGap {
				return e2eFatal(fmt.Errorf("gap of %s between samples at %s and %s (B stopped %s, ready %s)", gap,
					time.UnixMilli(pts[i-1].T).Format(time.RFC3339Nano), time.UnixMilli(pts[i].T).Format(time.RFC3339Nano),
					stopped.Format(time.RFC3339Nano), restarted.Format(time.RFC3339Nano)))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("within 60s of B's restart: %v", err)
	}
	t.Logf("B holds %d anomaly_score samples of e2e_step_gauge from %s to %s, none more than %s apart",
		len(pts), time.UnixMilli(pts[0].T).Format(time.RFC3339), time.UnixMilli(pts[len(pts)-1].T).Format(time.RFC3339), e2eMaxGap)

	// The exporter's incident score, stamped by anomalyd's clock once a
	// second, arrives for the outage too.
	sel := `anomaly_incident_score{job="e2e"}`
	err = e2eEventually(30*time.Second, time.Second, func() error {
		res, err := e2eQuery(env.bURL, sel+"[4m]", time.Time{})
		if err != nil {
			return err
		}
		if len(res) != 1 || len(res[0].Points) == 0 {
			return fmt.Errorf("%s[4m]: got %s, want one series", sel, e2eFormatAll(res))
		}
		pts = res[0].Points
		if first := time.UnixMilli(pts[0].T); first.After(stopped.Add(-10 * time.Second)) {
			return fmt.Errorf("%s: first sample at %s: want one before %s (10s before B stopped)", sel, first.Format(time.RFC3339Nano), stopped.Format(time.RFC3339Nano))
		}
		if last := time.UnixMilli(pts[len(pts)-1].T); last.Before(restarted) {
			return fmt.Errorf("%s: last sample at %s, before B restarted at %s: backlog not delivered yet", sel, last.Format(time.RFC3339Nano), restarted.Format(time.RFC3339Nano))
		}
		return e2eCheckSpacing(sel, pts)
	})
	if err != nil {
		t.Errorf("within 30s of the scores: %v", err)
	} else {
		t.Logf("B holds %d samples of %s from %s to %s, none more than %s apart",
			len(pts), sel, time.UnixMilli(pts[0].T).Format(time.RFC3339), time.UnixMilli(pts[len(pts)-1].T).Format(time.RFC3339), e2eMaxGap)
	}

	body, err := e2eGet(env.dURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := e2eParseText(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"anomalyd_sink_samples_dropped_total", "anomalyd_sink_samples_failed_total"} {
		if v, _ := e2eSum(lines, n); v != 0 { // absent: nothing was ever dropped
			t.Errorf("anomalyd: %s = %g, want 0:\n%s", n, v, e2eGrep(body, n))
		}
	}
}

// logTrace prints the output series of one input metric over the last d.
func (env *e2eEnv) logTrace(t *testing.T, metric string, d time.Duration) {
	t.Helper()
	res, err := e2eQuery(env.bURL, fmt.Sprintf(`{__name__=~"anomaly_(score|expected|lower|upper)",metric=%q}[%ds]`, metric, int(d.Seconds())), time.Time{})
	if err != nil {
		t.Logf("cannot read the trace of %s: %v", metric, err)
		return
	}
	byT := map[int64]map[string]float64{}
	for _, s := range res {
		for _, p := range s.Points {
			if byT[p.T] == nil {
				byT[p.T] = map[string]float64{}
			}
			byT[p.T][strings.TrimPrefix(s.Metric["__name__"], "anomaly_")] = p.V
		}
	}
	ts := make([]int64, 0, len(byT))
	for k := range byT {
		ts = append(ts, k)
	}
	slices.Sort(ts)
	var b strings.Builder
	fmt.Fprintf(&b, "%-24s %10s %10s %10s %10s\n", "time", "score", "expected", "lower", "upper")
	for _, k := range ts {
		fmt.Fprintf(&b, "%-24s", time.UnixMilli(k).UTC().Format("15:04:05.000"))
		for _, o := range []string{"score", "expected", "lower", "upper"} {
			if v, ok := byT[k][o]; ok {
				fmt.Fprintf(&b, " %10.4g", v)
			} else {
				fmt.Fprintf(&b, " %10s", "-")
			}
		}
		b.WriteByte('\n')
	}
	t.Logf("output series of %s in B over the last %s:\n%s", metric, d, b.String())
}

// cleanup stops every process; on failure it first prints anomalyd's self
// metrics and afterwards the end of every log.
func (env *e2eEnv) cleanup(t testing.TB) {
	if t.Failed() && env.d != nil && !env.d.exited() {
		if body, err := e2eGet(env.dURL + "/metrics"); err == nil {
			t.Logf("anomalyd self metrics:\n%s", e2eGrep(body, "anomalyd_"))
		}
	}
	// In data-flow order, so that anomalyd can flush its queue to B: it
	// must exit on SIGTERM within 10s when its store is up.
	order := append([]*e2eProc{env.a, env.d}, env.procs...)
	for _, p := range order {
		if p != nil && !p.exited() {
			if err := p.stop(10 * time.Second); err != nil {
				t.Errorf("stopping %s: %v", p.name, err)
			}
		}
	}
	if t.Failed() {
		// A restarted process appends to its first log: print each log once,
		// with the latest process's exit status.
		latest := map[string]*e2eProc{}
		for _, p := range env.procs {
			latest[p.logPath] = p
		}
		for _, p := range env.procs {
			if latest[p.logPath] != p {
				continue
			}
			t.Logf("--- %s: %s %s\n--- exit: %v; last %d lines of %s:\n%s", p.name, p.bin, strings.Join(p.args, " "),
				p.waitErr, e2eLogLines, p.logPath, e2eTail(p.logPath, e2eLogLines))
		}
	}
}

func (env *e2eEnv) mkdir(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join(env.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (env *e2eEnv) write(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// e2eLookPath finds a binary of Debian's prometheus package or fails.
func e2eLookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH (%v): install it with `apt-get install -y prometheus` (make test does)", name, err)
	}
	return p
}

// e2eModule is the module of the repository under test.
const e2eModule = "github.com/anomalyd/anomalyd"

// e2eBuild is the anomalyd binary shared by every test of the test binary,
// built on first use.
var e2eBuild struct {
	once      sync.Once
	dir, path string // dir is removed by TestMain
	err       error
}

// e2eAnomalyd returns the anomalyd binary: $E2E_ANOMALYD_BINARY, or
// e2eModule/cmd/anomalyd built once per test binary in the repository's
// root, so the working directory does not matter.
func e2eAnomalyd(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("E2E_ANOMALYD_BINARY"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	b := &e2eBuild
	b.once.Do(func() {
		root, err := e2eFindRepoRoot()
		if err != nil {
			b.err = err
			return
		}
		goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first on PATH
		if err != nil {
			b.err = fmt.Errorf("cannot build anomalyd: %w", err)
			return
		}
		if b.dir, err = os.MkdirTemp("", "anomalyd-e2e-"); err != nil {
			b.err = err
			return
		}
		out := filepath.Join(b.dir, "anomalyd")
		start := time.Now()
		cmd := exec.Command(goBin, "build", "-o", out, e2eModule+"/cmd/anomalyd")
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build anomalyd in %s: %w\n%s", root, err, o)
			return
		}
		b.path = out
		t.Logf("built anomalyd in %s", time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// e2eRepoRoot returns the repository's root directory (where go.mod is).
func e2eRepoRoot(t testing.TB) string {
	t.Helper()
	root, err := e2eFindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// e2eFindRepoRoot looks for the go.mod of e2eModule above this source file
// (its path is compiled in unless -trimpath), then above the working
// directory.
func e2eFindRepoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if f := strings.Fields(l); len(f) == 2 && f[0] == "module" && f[1] == e2eModule {
						return dir, nil
					}
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("no go.mod of module %s above %q", e2eModule, starts)
}

// e2eProc is one child process logging to a file.
type e2eProc struct {
	name, bin, dir, logPath string
	args                    []string
	cmd                     *exec.Cmd
	done                    chan struct{} // closed when the process has exited
	waitErr                 error         // valid after done is closed
}

// start runs bin in dir; stdout and stderr are appended to dir/NAME.log, so
// a restart adds to the same log.
func (env *e2eEnv) start(t testing.TB, name, dir, bin string, args ...string) *e2eProc {
	t.Helper()
	p := &e2eProc{name: name, bin: bin, dir: dir, args: args, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = f, f
	// Kill the child if the test binary dies (go test -timeout panics).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("cannot start %s: %v", name, err)
	}
	env.procs = append(env.procs, p)
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

func (p *e2eProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the exit, then SIGKILLs.
func (p *e2eProc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, grace)
	}
}

// waitReady waits up to 30s for base/-/ready to answer 200, failing at once
// if the process exits.
func (env *e2eEnv) waitReady(t testing.TB, p *e2eProc, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("%s exited before it was ready: %v", p.name, p.waitErr)
		}
		_, last = e2eGet(base + "/-/ready")
		if last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s: %v", p.name, last)
}

// e2eExporter serves e2e_step_gauge (settable), e2e_requests_total (growing
// at e2eCounterRate per second) and e2e_labelled_gauge (with a label called
// metric).
type e2eExporter struct {
	srv         *httptest.Server
	start       time.Time
	gauge       atomic.Uint64 // float64 bits
	firstScrape atomic.Int64  // unix ms
	scrapes     atomic.Int64
}

func e2eNewExporter() *e2eExporter {
	e := &e2eExporter{start: time.Now()}
	e.setGauge(e2eGaugeBefore)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.firstScrape.CompareAndSwap(0, time.Now().UnixMilli())
		e.scrapes.Add(1)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, `# HELP e2e_step_gauge A gauge the test steps from %[1]g to %[2]g.
# TYPE e2e_step_gauge gauge
e2e_step_gauge{case="step"} %[3]g
# HELP e2e_requests_total A counter growing at %[4]g per second.
# TYPE e2e_requests_total counter
e2e_requests_total{case="counter"} %[5]g
# HELP e2e_labelled_gauge A gauge with a label called metric.
# TYPE e2e_labelled_gauge gauge
e2e_labelled_gauge{metric="clash"} 1
`, e2eGaugeBefore, e2eGaugeAfter, math.Float64frombits(e.gauge.Load()),
			e2eCounterRate, e2eCounterRate*time.Since(e.start).Seconds())
	}))
	return e
}

func (e *e2eExporter) setGauge(v float64) { e.gauge.Store(math.Float64bits(v)) }

// e2eFreePort returns 127.0.0.1:PORT with a port that was free just now.
func e2eFreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// e2eEventually calls f every interval until it returns nil, an error made
// by e2eFatal, or timeout has passed; it returns f's last error.
func e2eEventually(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		var fe e2eFatalError
		if errors.As(err, &fe) || time.Now().Add(interval).After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// e2eFatalError is an error that waiting longer cannot cure: a wrong value
// that is already stored.
type e2eFatalError struct{ error }

func e2eFatal(err error) error { return e2eFatalError{err} }

func (e e2eFatalError) Unwrap() error { return e.error }

var e2eClient = &http.Client{Timeout: 5 * time.Second}

// e2eDo sends a request with a snappy-compressed protobuf body (nil: none)
// and returns the status code and the body of the answer.
func e2eDo(t testing.TB, method, u string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
	}
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// e2eGet returns the body of a 200 answer.
func e2eGet(u string) ([]byte, error) {
	resp, err := e2eClient.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// e2eAPI GETs a Prometheus HTTP API path and decodes its data.
func e2eAPI(base, path string, params url.Values, data any) error {
	u := base + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	resp, err := e2eClient.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("GET %s: %s: %w", u, resp.Status, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s: %s", u, resp.Status, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

type e2ePoint struct {
	T int64 // ms
	V float64
}

type e2eSeries struct {
	Metric map[string]string
	Points []e2ePoint // one for an instant vector
}

// e2eQuery runs an instant query at `at` (zero: now).
func e2eQuery(base, expr string, at time.Time) ([]e2eSeries, error) {
	params := url.Values{"query": {expr}}
	if !at.IsZero() {
		params.Set("time", strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64))
	}
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string    `json:"metric"`
			Value  [2]json.RawMessage   `json:"value"`
			Values [][2]json.RawMessage `json:"values"`
		} `json:"result"`
	}
	if err := e2eAPI(base, "/api/v1/query", params, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" && data.ResultType != "matrix" {
		return nil, fmt.Errorf("query %s: result type %s", expr, data.ResultType)
	}
	out := make([]e2eSeries, 0, len(data.Result))
	for _, r := range data.Result {
		s := e2eSeries{Metric: r.Metric}
		pairs := r.Values
		if data.ResultType == "vector" {
			pairs = [][2]json.RawMessage{r.Value}
		}
		for _, p := range pairs {
			var ts float64
			var v string
			if err := json.Unmarshal(p[0], &ts); err != nil {
				return nil, fmt.Errorf("query %s: timestamp %s: %w", expr, p[0], err)
			}
			if err := json.Unmarshal(p[1], &v); err != nil {
				return nil, fmt.Errorf("query %s: value %s: %w", expr, p[1], err)
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("query %s: %w", expr, err)
			}
			s.Points = append(s.Points, e2ePoint{T: int64(math.Round(ts * 1000)), V: f})
		}
		out = append(out, s)
	}
	return out, nil
}

// e2eHas checks that expr returns at least n series.
func e2eHas(base, expr string, n int, what string) error {
	res, err := e2eQuery(base, expr, time.Time{})
	if err != nil {
		return err
	}
	if len(res) < n {
		return fmt.Errorf("%s: %d series (%s), want %d (%s)", expr, len(res), e2eFormatAll(res), n, what)
	}
	return nil
}

func e2eLabelValues(base, label string) ([]string, error) {
	var vs []string
	err := e2eAPI(base, "/api/v1/label/"+label+"/values", nil, &vs)
	return vs, err
}

type e2eAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    string            `json:"activeAt"`
	Value       string            `json:"value"`
}

func e2eAlerts(base string) ([]e2eAlert, error) {
	var data struct {
		Alerts []e2eAlert `json:"alerts"`
	}
	err := e2eAPI(base, "/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// e2eLabelNames lists every label name Prometheus has stored.
func e2eLabelNames(base string) ([]string, error) {
	var names []string
	err := e2eAPI(base, "/api/v1/labels", nil, &names)
	return names, err
}

// e2eSeriesSince lists the label sets of the series that match selector
// and had samples since start: also the series that are gone by now.
func e2eSeriesSince(base, selector string, start time.Time) ([]map[string]string, error) {
	var series []map[string]string
	params := url.Values{"match[]": {selector}, "start": {strconv.FormatInt(start.Unix(), 10)}}
	err := e2eAPI(base, "/api/v1/series", params, &series)
	return series, err
}

// e2eRule is a rule of /api/v1/rules with its latest evaluation.
type e2eRule struct {
	Group          string    `json:"-"`
	Name           string    `json:"name"`
	Query          string    `json:"query"`
	Type           string    `json:"type"` // alerting or recording
	Health         string    `json:"health"`
	LastError      string    `json:"lastError"`
	LastEvaluation time.Time `json:"lastEvaluation"`
}

func e2eRules(base string) ([]e2eRule, error) {
	var data struct {
		Groups []struct {
			Name  string    `json:"name"`
			Rules []e2eRule `json:"rules"`
		} `json:"groups"`
	}
	if err := e2eAPI(base, "/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var rules []e2eRule
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			r.Group = g.Name
			rules = append(rules, r)
		}
	}
	return rules, nil
}

func e2eEqualLabels(got, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

// e2eFormat writes a label set as name{a="b",…}.
func e2eFormat(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(m["__name__"])
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

func e2eFormatAll(res []e2eSeries) string {
	s := make([]string, len(res))
	for i, r := range res {
		s[i] = e2eFormat(r.Metric)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// e2eTextLine is one sample line of the Prometheus text format.
type e2eTextLine struct {
	Line, Name   string
	Labels       map[string]string
	Value        float64
	HasTimestamp bool
}

// e2eParseText parses the sample lines of the text format 0.0.4.
func e2eParseText(body []byte) ([]e2eTextLine, error) {
	var out []e2eTextLine
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		l := e2eTextLine{Line: line, Labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		l.Name, line = line[:i], line[i:]
		if line[0] == '{' {
			line = line[1:]
			for {
				line = strings.TrimLeft(line, " ,")
				if strings.HasPrefix(line, "}") {
					line = line[1:]
					break
				}
				eq := strings.Index(line, `="`)
				if eq <= 0 {
					return nil, fmt.Errorf("bad labels in %q", l.Line)
				}
				name := line[:eq]
				line = line[eq+2:]
				var v strings.Builder
				j := 0
				for ; j < len(line) && line[j] != '"'; j++ {
					if line[j] == '\\' && j+1 < len(line) {
						j++
						if line[j] == 'n' {
							v.WriteByte('\n')
							continue
						}
					}
					v.WriteByte(line[j])
				}
				if j == len(line) {
					return nil, fmt.Errorf("unterminated label value in %q", l.Line)
				}
				l.Labels[name] = v.String()
				line = line[j+1:]
			}
		}
		f := strings.Fields(line)
		if len(f) < 1 || len(f) > 2 {
			return nil, fmt.Errorf("bad value in %q", l.Line)
		}
		var err error
		if l.Value, err = strconv.ParseFloat(f[0], 64); err != nil {
			return nil, fmt.Errorf("bad value in %q: %w", l.Line, err)
		}
		l.HasTimestamp = len(f) == 2
		out = append(out, l)
	}
	return out, sc.Err()
}

// e2eSum adds up every line of metric name; ok says whether there was one.
func e2eSum(lines []e2eTextLine, name string) (sum float64, ok bool) {
	for _, l := range lines {
		if l.Name == name {
			sum += l.Value
			ok = true
		}
	}
	return sum, ok
}

// e2eGrep returns the lines of body that start with prefix.
func e2eGrep(body []byte, prefix string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(string(body), "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l)
		}
	}
	return b.String()
}

// e2eTail returns the last n lines of a file.
func e2eTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}
