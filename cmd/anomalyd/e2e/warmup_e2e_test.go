//go:build linux

// End-to-end test of warm-up (issue 5) with Debian's Prometheus:
//
//	promtool ─create-blocks─▶ Prometheus (a day of history) ◀─remote read─ anomalyd W
//	test ─remote write (live samples)─▶ anomalyd W (warm-up on)
//	                                    anomalyd C (no warm-up)
//	                                    anomalyd D (warm-up from a Prometheus that is down)
//
// The history is a daily sine with a little noise, one sample a minute,
// ending 10 minutes ago; the live samples continue it. W must score them
// out of warm-up and below 1 from the first one, and a spike right after
// start above 1; C scores the same samples as warm-up (0, no band); D scores
// them cold and counts the failed warm-up.
//
// BenchmarkWarmupThroughput (make bench-warmup) measures how fast warm-up
// reads 1000 series × 1 day from the same Prometheus.
//
// Its identifiers start with wu; the shared helpers are in e2e_test.go.
package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

const (
	wuMetric    = "warmup_e2e_seasonal"
	wuStep      = time.Minute
	wuHistory   = 1440 // samples: one day
	wuSpikeSize = 300.0
)

// wuValue is the series at t: a daily sine around 100 with ±50, plus up to
// 1 of deterministic noise. Its phase is counted from wuOrigin, not from
// midnight, so that the live samples after the history fall at the same
// point of the cycle whatever the time of day the test runs at.
func wuValue(t time.Time, i int) float64 {
	day := int64(24 * time.Hour / time.Millisecond)
	phase := float64(((t.UnixMilli()-wuOrigin.UnixMilli())%day+day)%day) / float64(day)
	return 100 + 50*math.Sin(2*math.Pi*phase) + float64(uint32(i)*2654435761%1000)/1000
}

// wuOrigin is the start of wuValue's cycle (wuHistEnd sets it).
var wuOrigin time.Time

// wuHistEnd returns the end of the history, ten steps ago, and starts the
// cycle five hours of it before: the live samples then lie a little past
// the first quarter of a cycle, on the sine's flat top, a phase the
// history has seen. At some other phases of this perfectly periodic
// series a day of history is not enough for the regime detector, which
// would make the test depend on the time of day.
func wuHistEnd() time.Time {
	end := time.Now().Truncate(wuStep).Add(-10 * wuStep)
	wuOrigin = end.Add(-5 * time.Hour)
	return end
}

func TestWarmupE2E(t *testing.T) {
	env := e2eNewEnv(t)

	histEnd := wuHistEnd()
	promURL := wuStartPrometheus(t, env, histEnd, []string{`case="normal"`})

	// Nothing listens there: warm-up of D fails (fast: a 2s timeout gives
	// a 4s deadline).
	down := "http://" + e2eFreePort(t) + "/api/v1/read"
	w := wuStartAnomalyd(t, env, "anomalyd-warm", "warmup:\n  remote_read:\n    url: "+promURL+"/api/v1/read\n    remote_timeout: 10s\n")
	env.d = env.procs[len(env.procs)-1] // its self metrics are printed on failure
	c := wuStartAnomalyd(t, env, "anomalyd-cold", "")
	d := wuStartAnomalyd(t, env, "anomalyd-down", "warmup:\n  remote_read:\n    url: "+down+"\n    remote_timeout: 2s\n")

	labels := map[string]string{"__name__": wuMetric, "case": "normal"}
	var live []prompb.Sample
	for i := 1; i <= 5; i++ {
		ts := histEnd.Add(time.Duration(i) * wuStep)
		live = append(live, prompb.Sample{Timestamp: ts.UnixMilli(), Value: wuValue(ts, wuHistory+i)})
	}
	for _, base := range []string{w, c, d} {
		wuPost(t, base, labels, live)
	}

	t.Run("with warm-up the first live samples score out of warm-up, below 1", func(t *testing.T) {
		score, expected := wuWaitScore(t, w, 5, true)
		if !(score < 1) {
			t.Fatalf("score %v after a day of normal history, want < 1", score)
		}
		t.Logf("warm anomalyd: score %.3f, expected %.2f for value %.2f", score, expected, live[len(live)-1].Value)
		m := wuMetrics(t, w)
		for _, name := range []string{`anomalyd_warmup_series_total{result="warmed"}`, `anomalyd_window_series_warmed_total`} {
			if v, ok := m[name]; !ok || v != 1 {
				t.Errorf("%s = %v, want 1", name, v)
			}
		}
		if v := m["anomalyd_warmup_samples_read_total"]; v != wuHistory {
			t.Errorf("anomalyd_warmup_samples_read_total = %v, want %d", v, wuHistory)
		}
	})
	t.Run("without warm-up the same samples are in warm-up", func(t *testing.T) {
		if score, _ := wuWaitScore(t, c, 5, false); score != 0 {
			t.Fatalf("cold score %v, want 0 (warm-up)", score)
		}
	})
	t.Run("with Prometheus down, warm-up fails and the series starts cold", func(t *testing.T) {
		err := e2eEventually(20*time.Second, 200*time.Millisecond, func() error {
			if v := wuMetrics(t, d)[`anomalyd_warmup_series_total{result="failed"}`]; v != 1 {
				return fmt.Errorf(`anomalyd_warmup_series_total{result="failed"} = %v, want 1`, v)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if score, _ := wuWaitScore(t, d, 5, false); score != 0 {
			t.Fatalf("cold score %v, want 0 (warm-up)", score)
		}
	})
	t.Run("a spike right after start scores above 1 only with warm-up", func(t *testing.T) {
		ts := histEnd.Add(6 * wuStep)
		spike := []prompb.Sample{{Timestamp: ts.UnixMilli(), Value: wuValue(ts, wuHistory+6) + wuSpikeSize}}
		wuPost(t, w, labels, spike)
		wuPost(t, c, labels, spike)
		score, expected := wuWaitScore(t, w, 6, true)
		if !(score > 1) {
			t.Fatalf("spike of +%g over expected %.2f scored %v with warm-up, want > 1", wuSpikeSize, expected, score)
		}
		t.Logf("warm anomalyd: spike scored %.3f", score)
		if score, _ := wuWaitScore(t, c, 6, false); score != 0 {
			t.Fatalf("cold anomalyd scored the spike %v, want 0 (still in warm-up)", score)
		}
	})
}

// wuStartPrometheus writes a day of history ending at end for each series
// (label matchers of wuMetric, e.g. `case="normal"`) in OpenMetrics, turns
// it into TSDB blocks with promtool and serves them with Prometheus. It
// returns Prometheus's base URL once the history is queryable.
func wuStartPrometheus(t testing.TB, env *e2eEnv, end time.Time, series []string) string {
	t.Helper()
	dir := env.mkdir(t, "prometheus")
	var om bytes.Buffer
	fmt.Fprintf(&om, "# HELP %s A daily sine with noise.\n# TYPE %s gauge\n", wuMetric, wuMetric)
	for _, s := range series {
		for i := range wuHistory {
			ts := end.Add(-time.Duration(wuHistory-1-i) * wuStep)
			fmt.Fprintf(&om, "%s{%s} %.4f %d\n", wuMetric, s, wuValue(ts, i), ts.Unix())
		}
	}
	om.WriteString("# EOF\n")
	env.write(t, dir, "history.om", om.String())
	start := time.Now()
	out, err := exec.Command(env.promtool, "tsdb", "create-blocks-from", "openmetrics",
		filepath.Join(dir, "history.om"), filepath.Join(dir, "data")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb create-blocks-from openmetrics: %v\n%s", err, out)
	}
	t.Logf("promtool wrote %d series × %d samples in %s", len(series), wuHistory, time.Since(start).Round(time.Millisecond))
	os.Remove(filepath.Join(dir, "history.om"))
	env.write(t, dir, "prometheus.yml", "global: {}\n")
	addr := e2eFreePort(t)
	base := "http://" + addr
	p := env.start(t, "prometheus", dir, env.prometheus, "--config.file=prometheus.yml", "--storage.tsdb.path=data",
		"--storage.tsdb.retention.time=30d", "--web.listen-address="+addr, "--log.level=info")
	env.waitReady(t, p, base)
	// The backfilled blocks must be loaded and queryable before anomalyd asks.
	err = e2eEventually(20*time.Second, 200*time.Millisecond, func() error {
		var data struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		}
		params := url.Values{"query": {fmt.Sprintf("count_over_time(%s[1d])", wuMetric)},
			"start": {strconv.FormatInt(end.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"60"}}
		if err := e2eAPI(base, "/api/v1/query_range", params, &data); err != nil {
			return err
		}
		if len(data.Result) != len(series) {
			return fmt.Errorf("history: %d series queryable, want %d", len(data.Result), len(series))
		}
		for _, r := range data.Result {
			if len(r.Values) != 1 || r.Values[0][1] != strconv.Itoa(wuHistory) {
				return fmt.Errorf("history: count_over_time = %v, want %d", r.Values, wuHistory)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Prometheus does not serve the backfilled history: %v", err)
	}
	return base
}

// wuStartAnomalyd starts an anomalyd with extra config and returns its base
// URL; --web.enable-lifecycle lets tests reload it with POST /-/reload.
func wuStartAnomalyd(t testing.TB, env *e2eEnv, name, extra string) string {
	t.Helper()
	dir := env.mkdir(t, name)
	env.write(t, dir, "anomalyd.yml", "window:\n  publish_interval: 100ms\n"+extra)
	addr := e2eFreePort(t)
	p := env.start(t, name, dir, env.anomalydBin, "--config.file=anomalyd.yml", "--web.listen-address="+addr, "--log.level=debug", "--web.enable-lifecycle")
	env.waitReady(t, p, "http://"+addr)
	return "http://" + addr
}

// wuPost remote-writes (1.0) samples of one series.
func wuPost(t *testing.T, base string, labels map[string]string, samples []prompb.Sample) {
	t.Helper()
	wuPostSeries(t, base, []prompb.TimeSeries{wuSeries(labels, samples)})
}

func wuSeries(labels map[string]string, samples []prompb.Sample) prompb.TimeSeries {
	ts := prompb.TimeSeries{Samples: samples}
	for k, v := range labels {
		ts.Labels = append(ts.Labels, prompb.Label{Name: k, Value: v})
	}
	return ts
}

func wuPostSeries(t testing.TB, base string, series []prompb.TimeSeries) {
	t.Helper()
	req := prompb.WriteRequest{Timeseries: series}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequest(http.MethodPost, base+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Encoding", "snappy")
	hr.Header.Set("Content-Type", "application/x-protobuf")
	hr.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := e2eClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST %s/api/v1/write: %s", base, resp.Status)
	}
}

// wuMetrics returns anomalyd's /metrics as "name{labels}" → value, labels as written.
func wuMetrics(t testing.TB, base string) map[string]float64 {
	t.Helper()
	body, err := e2eGet(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m
}

// wuWaitScore waits until anomalyd at base has analysed n samples and its
// combined output for the test series is on /metrics, in warm-up or not as
// wantReady says, and returns its score and expected value.
func wuWaitScore(t *testing.T, base string, n int, wantReady bool) (score, expected float64) {
	t.Helper()
	err := e2eEventually(20*time.Second, 100*time.Millisecond, func() error {
		v, ok := wuMetrics(t, base)["anomalyd_window_samples_analysed_total"]
		if !ok || v != float64(n) {
			return fmt.Errorf("%v samples analysed, want %d", v, n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", base, err)
	}
	// /metrics shows snapshots at most publish_interval (100ms) old: wait
	// for one taken after the last sample.
	time.Sleep(300 * time.Millisecond)
	err = e2eEventually(5*time.Second, 100*time.Millisecond, func() error {
		body, err := e2eGet(base + "/metrics")
		if err != nil {
			return err
		}
		lines, err := e2eParseText(body)
		if err != nil {
			return e2eFatal(err)
		}
		var hasScore, hasExpected bool
		for _, l := range lines {
			if l.Labels["metric"] != wuMetric || l.Labels["detector"] != "combined" {
				continue
			}
			switch l.Name {
			case "anomaly_score":
				score, hasScore = l.Value, true
			case "anomaly_expected":
				expected, hasExpected = l.Value, true
			}
		}
		if !hasScore {
			return errors.New("no anomaly_score for the series yet")
		}
		// Outputs in warm-up carry the score (0) only, no band.
		if hasExpected != wantReady {
			return e2eFatal(fmt.Errorf("anomaly_expected present = %v (score %v), want %v: %s", hasExpected, score, wantReady,
				e2eGrep(body, "anomaly_")))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", base, err)
	}
	return score, expected
}

// BenchmarkWarmupThroughput measures warm-up against the real Prometheus:
// 1000 series × 1 day at 60 s, read as the series first appear, without the
// rate limit unless ANOMALYD_WARMUP_BENCH_RATE sets max_series_per_second.
// One measurement per run (make bench-warmup uses -benchtime 1x); setting up
// the history (promtool, ~1.5M lines) dominates, so it is not repeated b.N
// times. It reports series/s, samples/s and MB/s.
func BenchmarkWarmupThroughput(b *testing.B) {
	if b.N > 1 {
		b.Fatal("run with -benchtime 1x: one warm-up of 1000 series is one measurement")
	}
	t := b
	const nSeries = 1000
	env := e2eNewEnv(t)
	histEnd := wuHistEnd()
	var series []string
	for i := range nSeries {
		series = append(series, fmt.Sprintf(`case="s%04d"`, i))
	}
	promURL := wuStartPrometheus(t, env, histEnd, series)
	rate := os.Getenv("ANOMALYD_WARMUP_BENCH_RATE") // warmup.max_series_per_second; default: unlimited
	if rate == "" {
		rate = "1e9"
	}
	w := wuStartAnomalyd(t, env, "anomalyd-warm", "warmup:\n  remote_read:\n    url: "+promURL+"/api/v1/read\n  max_series_per_second: "+rate+"\n")
	env.d = env.procs[len(env.procs)-1]
	ts := histEnd.Add(wuStep)
	var in []prompb.TimeSeries
	for i := range nSeries {
		in = append(in, wuSeries(map[string]string{"__name__": wuMetric, "case": fmt.Sprintf("s%04d", i)},
			[]prompb.Sample{{Timestamp: ts.UnixMilli(), Value: wuValue(ts, wuHistory+1)}}))
	}
	start := time.Now()
	wuPostSeries(t, w, in)
	var m map[string]float64
	err := e2eEventually(5*time.Minute, 20*time.Millisecond, func() error {
		m = wuMetrics(t, w)
		if v := m[`anomalyd_window_series_warmed_total`]; v != nSeries {
			return fmt.Errorf("%v of %d series warmed", v, nSeries)
		}
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	samples, bytesRead := m["anomalyd_warmup_samples_read_total"], m["anomalyd_warmup_bytes_read_total"]
	t.Logf("warm-up of %d series × %d samples: %s, %.1f MB decoded, %v requests, max_series_per_second %s",
		nSeries, wuHistory, elapsed.Round(time.Millisecond), bytesRead/1e6, m[`anomalyd_warmup_requests_total{code="200"}`], rate)
	b.ReportMetric(nSeries/elapsed.Seconds(), "series/s")
	b.ReportMetric(samples/elapsed.Seconds(), "samples/s")
	b.ReportMetric(bytesRead/1e6/elapsed.Seconds(), "MB/s")
	if samples != nSeries*wuHistory {
		t.Errorf("read %v samples, want %d", samples, nSeries*wuHistory)
	}
}
