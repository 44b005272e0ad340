//go:build linux

package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestKillRestart: anomalyd killed with SIGKILL comes back with the state of
// its last checkpoint, at most one checkpoint interval old, and a quiet
// input that went on meanwhile raises no alarm after the restart: the
// detectors resume where they were, across the gap, counters included.
//
//	test ─remote_write─▶ anomalyd (--storage.path, checkpoint every 1s) ─ kill -9 ─ anomalyd
func TestKillRestart(t *testing.T) {
	env := e2eNewEnv(t)
	dir := env.mkdir(t, "anomalyd")
	addr := e2eFreePort(t)
	base := "http://" + addr
	const interval = time.Second
	args := []string{"--web.listen-address=" + addr, "--storage.path=data", "--storage.checkpoint-interval=" + interval.String(), "--log.level=debug"}
	d := env.start(t, "anomalyd", dir, env.anomalydBin, args...)
	env.waitReady(t, d, base)

	// 20 gauges on a 15-minute cycle and 20 counters at a steady rate, with
	// a little noise, one sample per 15 s of input time ending well in the
	// past: 400 samples (100 min, the cycle 6 times) before the kill, then
	// 4 samples lost in the gap, then 120 more. Run without a restart, the
	// detectors raise no alarm on it after the first 400 samples, with the
	// gap or without (checked with window.Analyser over 100 such series).
	const (
		nSeries     = 40
		before, gap = 400, 4
		after       = 120
		step        = 15_000
	)
	t0 := time.Now().Add(-3*time.Hour).UnixMilli() / step * step
	noise := func(s, i int) float64 { // deterministic, in [-0.5, 0.5)
		x := uint64(s)*0x9e3779b97f4a7c15 + uint64(i)*0xbf58476d1ce4e5b9
		x ^= x >> 31
		x *= 0x94d049bb133111eb
		x ^= x >> 29
		return float64(x>>11)/(1<<53) - 0.5
	}
	value := func(s, i int) float64 {
		if s%2 == 0 {
			return 100 + 10*math.Sin(2*math.Pi*float64(i)/60) + noise(s, i)
		}
		return float64(i)*150 + 5*noise(s, i) // a counter: 10/s
	}
	write := func(from, to int) {
		t.Helper()
		for i := from; i < to; i += 40 {
			var tss []prompb.TimeSeries
			for s := range nSeries {
				name := "e2e_restart_gauge"
				if s%2 == 1 {
					name = "e2e_restart_total"
				}
				ts := prompb.TimeSeries{Labels: []prompb.Label{
					{Name: "__name__", Value: name}, {Name: "instance", Value: fmt.Sprintf("s%02d", s)}, {Name: "job", Value: "restart"}}}
				for j := i; j < min(i+40, to); j++ {
					ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0 + int64(j)*step, Value: value(s, j)})
				}
				tss = append(tss, ts)
			}
			wuPostSeries(t, base, tss)
		}
	}
	metrics := func() []e2eTextLine {
		t.Helper()
		body, err := e2eGet(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := e2eParseText(body)
		if err != nil {
			t.Fatal(err)
		}
		return lines
	}
	metric := func(lines []e2eTextLine, name string) float64 {
		v, ok := e2eSum(lines, name)
		if !ok {
			t.Fatalf("/metrics has no %s", name)
		}
		return v
	}

	write(0, before)
	// Scrape (a scrape takes each series' highest score since the last
	// one), then wait for a checkpoint that follows the scrape and holds
	// every series.
	metrics()
	scraped := float64(time.Now().UnixMilli()) / 1000
	if err := e2eEventually(15*time.Second, 100*time.Millisecond, func() error {
		lines := metrics()
		if last := metric(lines, "anomalyd_checkpoint_last_success_timestamp_seconds"); last <= scraped {
			return fmt.Errorf("last checkpoint at %.3f, not after the scrape at %.3f", last, scraped)
		}
		if n := metric(lines, "anomalyd_checkpoint_series"); n != nSeries {
			return fmt.Errorf("last checkpoint holds %g series, want %d", n, nSeries)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done

	d = env.start(t, "anomalyd", dir, env.anomalydBin, args...)
	env.waitReady(t, d, base)
	lines := metrics()
	if n := metric(lines, "anomalyd_checkpoint_restored_series"); n != nSeries {
		t.Fatalf("restored %g series, want %d", n, nSeries)
	}
	// The file restored was written at most one interval before the kill;
	// the restart itself takes well under a second more.
	if age := metric(lines, "anomalyd_checkpoint_restore_age_seconds"); age > (interval + 3*time.Second).Seconds() {
		t.Fatalf("restored state is %.1fs old, want at most the interval (%s) and the restart", age, interval)
	}
	if v, ok := e2eSum(lines, "anomalyd_checkpoint_restore_failures_total"); ok && v > 0 {
		t.Fatalf("%g checkpoint files failed to restore", v)
	}

	write(before+gap, before+gap+after)
	// Writes are answered once enqueued: wait until the shards analysed
	// them all. Every sample after the gap is analysed, a counter's first
	// one as a rate over the gap rather than a new start.
	if err := e2eEventually(15*time.Second, 100*time.Millisecond, func() error {
		lines = metrics()
		if n := metric(lines, "anomalyd_window_samples_analysed_total"); n != nSeries*after {
			return fmt.Errorf("%g samples analysed after the restart, want %d", n, nSeries*after)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var n int
	for _, l := range lines {
		if l.Name != "anomaly_score" || l.Labels["detector"] != "combined" || !strings.HasPrefix(l.Labels["metric"], "e2e_restart_") {
			continue
		}
		n++
		if l.Value >= 2 {
			t.Errorf("%s: alarm after the restart (the highest score since it is %g); the quiet input should raise none", l.Line, l.Value)
		}
	}
	if n != nSeries {
		t.Fatalf("%d score series on /metrics after the restart, want %d", n, nSeries)
	}
	log, err := os.ReadFile(filepath.Join(dir, "anomalyd.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "panic") {
		t.Fatalf("anomalyd panicked:\n%s", log)
	}
}
