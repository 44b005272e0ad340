//go:build linux

// A Prometheus HA pair, end to end:
//
//	exporter ◀─scrape─ Prometheus a ─remote_write─▶ anomalyd (ha:)
//	exporter ◀─scrape─ Prometheus b ─remote_write─▶ anomalyd
//
// TestHAPairE2E runs two real Prometheus replicas with the external labels
// cluster="c1" and __replica__="a"/"b", both scraping the test exporter
// every second and remote-writing to anomalyd, whose ha.failover_timeout is
// 3s. It checks that anomalyd scores one replica's samples once (one
// output series per input series, without __replica__, every score at a
// timestamp of the elected replica, none lost, no ordering problems), then
// kills the elected replica (SIGKILL: no flush) and checks that the other
// takes over within the timeout and continues the same series: its scores
// follow with a gap of at most the timeout plus a scrape interval and a
// remote-write batch, from the detectors' state of before.
package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

const (
	haFailoverTimeout = 3 * time.Second
	haScrapeInterval  = time.Second
	haBatchDeadline   = time.Second
	// haMaxGap bounds the gap in the scores at a failover: the elected
	// replica's last request may have carried samples up to a batch
	// deadline old, the timeout runs from that request, and the next
	// replica's first request after it carries samples up to a batch
	// deadline old again, scraped at its own phase (a scrape interval);
	// one more second absorbs a slow machine.
	haMaxGap = haFailoverTimeout + haScrapeInterval + haBatchDeadline + time.Second
)

func TestHAPairE2E(t *testing.T) {
	exp := e2eNewExporter()
	t.Cleanup(exp.srv.Close)
	env := e2eNewEnv(t)
	expHost := strings.TrimPrefix(exp.srv.URL, "http://")

	dDir := env.mkdir(t, "anomalyd")
	pd := e2eFreePort(t)
	env.dURL = "http://" + pd
	// detectors.warmup 5 without calibration: past warm-up (anomaly_expected
	// written) within seconds, so the test can see that the detectors keep
	// their state across the failover. The score history on: the test reads
	// the outputs back through it (haScores).
	env.write(t, dDir, "anomalyd.yml", fmt.Sprintf(`ha:
  enabled: true
  failover_timeout: %s
window:
  publish_interval: 1s
detectors:
  warmup: 5
  calibration: {enabled: false}
history:
  retention: 1h
`, haFailoverTimeout))
	env.d = env.start(t, "anomalyd", dDir, env.anomalydBin, "--config.file=anomalyd.yml", "--web.listen-address="+pd, "--log.level=info")
	env.waitReady(t, env.d, env.dURL)

	type replica struct {
		name, url string
		p         *e2eProc
	}
	replicas := map[string]*replica{}
	for _, name := range []string{"a", "b"} {
		dir := env.mkdir(t, "prometheus-"+name)
		port := e2eFreePort(t)
		env.write(t, dir, "prometheus.yml", fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: 1s
  external_labels:
    cluster: c1
    __replica__: %s
scrape_configs:
  - job_name: e2e
    static_configs: [{targets: [%q]}]
remote_write:
  - url: %s/api/v1/write
    queue_config: {batch_send_deadline: %s, min_backoff: 100ms, max_backoff: 1s}
    write_relabel_configs:
      - source_labels: [__name__]
        regex: 'e2e_.+|up'
        action: keep
`, haScrapeInterval, name, expHost, env.dURL, haBatchDeadline))
		r := &replica{name: name, url: "http://" + port}
		r.p = env.start(t, "prometheus-"+name, dir, env.prometheus, "--config.file=prometheus.yml",
			"--storage.tsdb.path=data", "--web.listen-address="+port, "--log.level=info")
		replicas[name] = r
	}
	// Stop the replicas while anomalyd still runs (cleanups run last
	// first): a Prometheus flushes its remote-write queue on SIGTERM and
	// would retry against a stopped anomalyd until its flush deadline.
	t.Cleanup(func() {
		for _, r := range replicas {
			if err := r.p.stop(10 * time.Second); err != nil {
				t.Errorf("stopping %s: %v", r.p.name, err)
			}
		}
	})
	for _, r := range replicas {
		env.waitReady(t, r.p, r.url)
	}

	// Scores of e2e_step_gauge past warm-up, and one replica elected.
	var elected, other *replica
	err := e2eEventually(60*time.Second, 500*time.Millisecond, func() error {
		m, err := haSelfMetrics(env.dURL)
		if err != nil {
			return err
		}
		for name, r := range replicas {
			if m[`anomalyd_ingest_ha_elected_replica{cluster="c1",replica="`+name+`"}`] == 1 {
				elected = r
			}
		}
		if elected == nil {
			return fmt.Errorf("no replica elected: %v", m)
		}
		exp, _ := haScores(t, env.dURL, "anomaly_expected")
		if len(exp) < 10 {
			return fmt.Errorf("%d anomaly_expected samples of e2e_step_gauge, want 10", len(exp))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("within 60s: %v", err)
	}
	for _, r := range replicas {
		if r != elected {
			other = r
		}
	}
	t.Logf("replica %s elected", elected.name)

	before, err := haSelfMetrics(env.dURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{
		`anomalyd_window_samples_not_analysed_total{reason="out_of_order"}`,
		`anomalyd_window_samples_not_analysed_total{reason="duplicate_timestamp"}`,
	} {
		if before[k] != 0 {
			t.Errorf("%s = %g before the failover, want 0: one replica's samples are analysed", k, before[k])
		}
	}
	if before["anomalyd_ingest_ha_samples_deduplicated_total"] == 0 || before[`anomalyd_ingest_samples_received_total{protocol="1.0"}`] == 0 {
		t.Errorf("received %g, deduplicated %g: want both replicas' samples, one analysed and one deduplicated",
			before[`anomalyd_ingest_samples_received_total{protocol="1.0"}`], before["anomalyd_ingest_ha_samples_deduplicated_total"])
	}

	// What the elected replica scraped, up to its end.
	tsElected := haInputTimestamps(t, elected.url)
	killedAt := time.Now()
	if err := elected.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-elected.p.done

	// The other replica takes over within the timeout (plus the time to its
	// next request), and its scores follow.
	err = e2eEventually(haFailoverTimeout+5*time.Second, 200*time.Millisecond, func() error {
		m, err := haSelfMetrics(env.dURL)
		if err != nil {
			return err
		}
		if m[`anomalyd_ingest_ha_elected_replica{cluster="c1",replica="`+other.name+`"}`] != 1 || m["anomalyd_ingest_ha_failovers_total"] != 1 {
			return fmt.Errorf("replica %s not elected: %v", other.name, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("within %s of the kill: %v", haFailoverTimeout+5*time.Second, err)
	}
	t.Logf("replica %s elected %s after the kill", other.name, time.Since(killedAt).Round(10*time.Millisecond))
	time.Sleep(5 * time.Second) // scores of the new replica
	tsOther := haInputTimestamps(t, other.url)

	scores, labels := haScores(t, env.dURL, "anomaly_score")
	t.Run("one series without the replica label", func(t *testing.T) {
		if len(labels) != 1 {
			t.Fatalf("%d anomaly_score series of e2e_step_gauge, want 1: %v", len(labels), labels)
		}
		want := map[string]string{"__name__": "anomaly_score", "case": "step", "cluster": "c1", "detector": "combined",
			"instance": expHost, "job": "e2e", "metric": "e2e_step_gauge"}
		if !e2eEqualLabels(labels[0], want) {
			t.Fatalf("labels %s, want %s", e2eFormat(labels[0]), e2eFormat(want))
		}
	})

	t.Run("scores of the elected replica, then of the other", func(t *testing.T) {
		// Every score before the kill is at a timestamp of the elected
		// replica's samples, and every one of those samples it sent has a
		// score (its last second or two may have died unsent).
		var pre, post []int64
		for _, s := range scores {
			if s.Timestamp <= killedAt.UnixMilli() {
				pre = append(pre, s.Timestamp)
			} else {
				post = append(post, s.Timestamp)
			}
		}
		if len(pre) < 10 || len(post) < 3 {
			t.Fatalf("%d scores before the kill and %d after, want at least 10 and 3", len(pre), len(post))
		}
		for _, ts := range pre {
			if !slices.Contains(tsElected, ts) {
				t.Fatalf("score at %d before the kill: not a timestamp of replica %s's samples %v", ts, elected.name, tsElected)
			}
		}
		for _, ts := range tsElected {
			if ts >= pre[0] && ts < killedAt.Add(-2*haBatchDeadline).UnixMilli() && !slices.Contains(pre, ts) {
				t.Fatalf("replica %s's sample at %d has no score", elected.name, ts)
			}
		}
		// After the gap, the other replica's timestamps.
		lastPre := pre[len(pre)-1]
		gapEnd := post[0]
		for _, ts := range post {
			if !slices.Contains(tsOther, ts) && !slices.Contains(tsElected, ts) {
				t.Fatalf("score at %d after the kill: not a timestamp of either replica's samples", ts)
			}
		}
		if !slices.Contains(tsOther, post[len(post)-1]) {
			t.Fatalf("the last score (%d) is not at a timestamp of replica %s", post[len(post)-1], other.name)
		}
		maxGap := time.Duration(0)
		for i := 1; i < len(scores); i++ {
			maxGap = max(maxGap, time.Duration(scores[i].Timestamp-scores[i-1].Timestamp)*time.Millisecond)
		}
		t.Logf("last score from %s at %s, first after the kill at %s; largest gap between scores %s (limit %s)",
			elected.name, time.UnixMilli(lastPre).Format("15:04:05.000"), time.UnixMilli(gapEnd).Format("15:04:05.000"), maxGap, haMaxGap)
		if maxGap > haMaxGap {
			t.Fatalf("largest gap between scores %s, want at most %s (ha.failover_timeout %s + a scrape + a batch + 1s)",
				maxGap, haMaxGap, haFailoverTimeout)
		}
	})

	t.Run("the detectors keep their state", func(t *testing.T) {
		// Still past warm-up at the other replica's first samples: the
		// same series went on, it did not start again.
		expected, _ := haScores(t, env.dURL, "anomaly_expected")
		var first int64
		for _, s := range scores {
			if s.Timestamp > killedAt.UnixMilli() && slices.Contains(tsOther, s.Timestamp) {
				first = s.Timestamp
				break
			}
		}
		if !slices.ContainsFunc(expected, func(s prompb.Sample) bool { return s.Timestamp == first }) {
			t.Errorf("no anomaly_expected at %d, the other replica's first scored sample: its detectors started over", first)
		}
		after, err := haSelfMetrics(env.dURL)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := after["anomalyd_window_series_created_total"], before["anomalyd_window_series_created_total"]; a != b {
			t.Errorf("anomalyd_window_series_created_total went from %g to %g at the failover: want the same series", b, a)
		}
		if n := after[`anomalyd_window_samples_not_analysed_total{reason="duplicate_timestamp"}`]; n != 0 {
			t.Errorf("duplicate_timestamp = %g after the failover, want 0", n)
		}
		// The new replica's first request may repeat a few samples from
		// before the old one's last: at most one per series and scrape.
		if n := after[`anomalyd_window_samples_not_analysed_total{reason="out_of_order"}`]; n > 4*(float64(haBatchDeadline/haScrapeInterval)+1) {
			t.Errorf("out_of_order = %g after the failover, want at most a batch's worth", n)
		}
	})

	// Never a warning about several senders: anomalyd deduplicated them.
	log, err := os.ReadFile(env.d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "several senders") {
		t.Errorf("anomalyd warned about several senders with ha on")
	}
	if !strings.Contains(string(log), "another replica takes over") {
		t.Errorf("anomalyd did not log the failover")
	}
}

// haSelfMetrics returns anomalyd's anomalyd_* samples by name{labels} as
// written.
func haSelfMetrics(base string) (map[string]float64, error) {
	body, err := e2eGet(base + "/metrics")
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range strings.Split(e2eGrep(body, "anomalyd_"), "\n") {
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad line %q: %w", l, err)
		}
		m[l[:i]] = v
	}
	return m, nil
}

// haScores reads the output series name of e2e_step_gauge from anomalyd's
// history (remote read): the samples of the first series and the label
// sets of all.
func haScores(t *testing.T, base, name string) ([]prompb.Sample, []map[string]string) {
	t.Helper()
	now := time.Now().UnixMilli()
	code, resp, body := rrRead(t, base, rrQuery(now-10*60_000, now, "__name__", name, "metric", "e2e_step_gauge"))
	if code != 200 {
		t.Fatalf("remote read of %s: %d %s", name, code, body)
	}
	var samples []prompb.Sample
	var labels []map[string]string
	for _, res := range resp.Results {
		for _, s := range res.Timeseries {
			m := map[string]string{}
			for _, l := range s.Labels {
				m[l.Name] = l.Value
			}
			labels = append(labels, m)
			if samples == nil {
				samples = s.Samples
			}
		}
	}
	return samples, labels
}

// haInputTimestamps returns the timestamps of e2e_step_gauge in the
// Prometheus at base, over the last 10 minutes.
func haInputTimestamps(t *testing.T, base string) []int64 {
	t.Helper()
	res, err := e2eQuery(base, `e2e_step_gauge[10m]`, time.Time{})
	if err != nil || len(res) != 1 {
		t.Fatalf("%s: e2e_step_gauge[10m]: %s, %v", base, e2eFormatAll(res), err)
	}
	var ts []int64
	for _, p := range res[0].Points {
		ts = append(ts, p.T)
	}
	return ts
}
