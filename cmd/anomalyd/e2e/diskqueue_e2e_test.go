//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestDiskQueueRestart: the remote-write queue survives a restart of
// anomalyd while its store is down.
//
//	test ─remote_write─▶ anomalyd (--storage.path) ─remote_write─▶ Prometheus
//
// Phase 1 is scored and stored; then Prometheus stops, phase 2 is written,
// anomalyd gets SIGTERM and starts again on the same --storage.path, phase 3
// is written, and Prometheus starts again on its data: every input sample's
// score is in Prometheus once, at the input's timestamp, in order.
func TestDiskQueueRestart(t *testing.T) {
	env := e2eNewEnv(t)

	bDir := env.mkdir(t, "prometheus")
	env.write(t, bDir, "prometheus.yml", "global:\n  evaluation_interval: 1m\n")
	pb := e2eFreePort(t)
	env.bURL = "http://" + pb
	env.bArgs = []string{"--config.file=prometheus.yml", "--storage.tsdb.path=data", "--web.listen-address=" + pb,
		"--web.enable-remote-write-receiver", "--log.level=info"}
	env.b = env.start(t, "prometheus", bDir, env.prometheus, env.bArgs...)

	dDir := env.mkdir(t, "anomalyd")
	pd := e2eFreePort(t)
	env.dURL = "http://" + pd
	env.write(t, dDir, "anomalyd.yml", fmt.Sprintf(`remote_write:
  - url: %s/api/v1/write
    name: store
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s, max_samples_per_send: 500}
`, env.bURL))
	dArgs := []string{"--config.file=anomalyd.yml", "--web.listen-address=" + pd, "--storage.path=data", "--log.level=info"}
	env.d = env.start(t, "anomalyd", dDir, env.anomalydBin, dArgs...)
	env.waitReady(t, env.b, env.bURL)
	env.waitReady(t, env.d, env.dURL)

	// 20 series, one sample a second of input time, 60 seconds a phase,
	// ending a few minutes ago so that Prometheus takes every timestamp.
	const (
		nSeries  = 20
		perPhase = 60
	)
	t0 := (time.Now().Unix() - 4*perPhase) * 1000
	write := func(phase int) {
		t.Helper()
		for i := phase * perPhase; i < (phase+1)*perPhase; i += 10 { // 10 seconds a request
			var tss []prompb.TimeSeries
			for s := range nSeries {
				ts := prompb.TimeSeries{Labels: []prompb.Label{
					{Name: "__name__", Value: "e2e_dq_gauge"}, {Name: "job", Value: "dq"}, {Name: "instance", Value: fmt.Sprintf("s%02d", s)}}}
				for j := i; j < i+10; j++ {
					ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0 + int64(j)*1000, Value: float64(50 + (j*7+s)%13)})
				}
				tss = append(tss, ts)
			}
			wuPostSeries(t, env.dURL, tss)
		}
	}
	// check reports whether Prometheus holds every score of the first n
	// seconds of input, and nothing else; a sample out of place is fatal.
	check := func(n int) error {
		res, err := e2eQuery(env.bURL, `anomaly_score{metric="e2e_dq_gauge"}[10m]`, time.Time{})
		if err != nil {
			return err
		}
		if len(res) != nSeries {
			return fmt.Errorf("%d score series, want %d", len(res), nSeries)
		}
		for _, s := range res {
			for i, p := range s.Points {
				if want := t0 + int64(i)*1000; i >= n || p.T != want {
					return e2eFatal(fmt.Errorf("series %s: sample %d at %d, want %d of %d at 1s steps from %d", e2eFormat(s.Metric), i, p.T, want, n, t0))
				}
			}
			if len(s.Points) != n {
				return fmt.Errorf("series %s: %d samples, want %d", e2eFormat(s.Metric), len(s.Points), n)
			}
		}
		return nil
	}
	metric := func(name string) float64 {
		t.Helper()
		body, err := e2eGet(env.dURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := e2eParseText(body)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := e2eSum(lines, name)
		return v
	}

	write(0)
	if err := e2eEventually(30*time.Second, 500*time.Millisecond, func() error { return check(perPhase) }); err != nil {
		t.Fatalf("phase 1 with the store up: %v", err)
	}

	if err := env.b.stop(20 * time.Second); err != nil {
		t.Fatalf("stopping Prometheus: %v", err)
	}
	write(1)
	// The scores of phase 2 are queued, and anomalyd knows the store fails.
	err := e2eEventually(20*time.Second, 200*time.Millisecond, func() error {
		if v := metric("anomalyd_sink_queue_samples"); v < nSeries*perPhase {
			return fmt.Errorf("%g samples queued, want the %d scores of phase 2 at least", v, nSeries*perPhase)
		}
		if v := metric(`anomalyd_sink_disk_queue_blocks`); v == 0 {
			return errors.New("no block on disk while the store is down")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	if err := env.d.stop(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM with the store down: %v", err)
	}
	t.Logf("anomalyd exited %s after SIGTERM with the store down", time.Since(stopped).Round(time.Millisecond))

	env.d = env.start(t, "anomalyd", dDir, env.anomalydBin, dArgs...)
	env.waitReady(t, env.d, env.dURL)
	if v := metric("anomalyd_sink_disk_queue_blocks"); v == 0 {
		t.Fatalf("after the restart the disk queue is empty; phase 2 was lost")
	}
	write(2)
	time.Sleep(3 * time.Second) // anomalyd retries against the store that is down

	env.b = env.start(t, "prometheus", bDir, env.prometheus, env.bArgs...)
	env.waitReady(t, env.b, env.bURL)
	if err := e2eEventually(60*time.Second, time.Second, func() error { return check(3 * perPhase) }); err != nil {
		t.Fatalf("after the store came back: %v", err)
	}
	// Nothing dropped or rejected, and the queue is empty.
	for _, n := range []string{"anomalyd_sink_samples_dropped_total", "anomalyd_sink_samples_failed_total", "anomalyd_sink_disk_queue_blocks"} {
		if v := metric(n); v != 0 {
			t.Errorf("anomalyd: %s = %g, want 0", n, v)
		}
	}
	text := e2eTail(filepath.Join(dDir, "anomalyd.log"), 400)
	for _, msg := range []string{"remote write failing", "remote write recovered"} {
		if !strings.Contains(text, msg) {
			t.Errorf("anomalyd's log lacks %q", msg)
		}
	}
}
