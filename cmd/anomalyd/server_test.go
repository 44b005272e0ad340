package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/common/version"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
)

// startServer runs the real server on a loopback port.
func startServer(t *testing.T, cfgText string) (*server, string, string) {
	t.Helper()
	return startServerAt(t, cfgText, "")
}

// startServerAt is startServer with --storage.path data ("": a new
// temporary directory) and --web.enable-lifecycle, which the reload tests
// need.
func startServerAt(t *testing.T, cfgText, data string) (*server, string, string) {
	t.Helper()
	srv, addr, file := startServerWith(t, cfgText, serverOptions{storagePath: data, enableLifecycle: true})
	return srv, "http://" + addr, file
}

// startServerWith runs the real server, serve included, with opts on a
// loopback port and returns it, its host:port and its config file.
// opts.configFile is set to a file holding cfgText; an empty
// opts.storagePath is a new temporary directory.
func startServerWith(t *testing.T, cfgText string, opts serverOptions) (*server, string, string) {
	t.Helper()
	dir := t.TempDir()
	if opts.storagePath == "" {
		opts.storagePath = filepath.Join(dir, "data")
	}
	opts.configFile = filepath.Join(dir, "anomalyd.yml")
	if err := os.WriteFile(opts.configFile, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(opts.configFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := newServer(cfg, opts, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.serve(ln)
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.shutdown(ctx)
	})
	return srv, ln.Addr().String(), opts.configFile
}

func httpDo(t *testing.T, method, url string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if body != nil {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// writeGauge sends n samples of a gauge at 1 s spacing starting at t0.
func writeGauge(t *testing.T, url, name string, t0 int64, values ...float64) {
	t.Helper()
	ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "t"}}}
	for i, v := range values {
		ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0 + int64(i)*1000, Value: v})
	}
	b, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ts}}).Marshal()
	if code, body := httpDo(t, http.MethodPost, url+"/api/v1/write", snappy.Encode(nil, b)); code != 204 {
		t.Fatalf("write: %d %s", code, body)
	}
}

func TestManagementEndpoints(t *testing.T) {
	_, url, _ := startServer(t, "")
	for path, want := range map[string]int{"/-/healthy": 200, "/-/ready": 200, "/": 200, "/nope": 404} {
		if code, _ := httpDo(t, http.MethodGet, url+path, nil); code != want {
			t.Errorf("GET %s: got %d, want %d", path, code, want)
		}
	}
	if code, _ := httpDo(t, http.MethodGet, url+"/-/reload", nil); code != 405 {
		t.Errorf("GET /-/reload: got %d, want 405", code)
	}
}

// TestOneVersion: /metrics build info and the warm-up's User-Agent carry
// the same version as --version (github.com/prometheus/common/version).
func TestOneVersion(t *testing.T) {
	uas := make(chan string, 16)
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case uas <- r.UserAgent():
		default:
		}
		http.Error(w, "no history here", http.StatusBadRequest)
	}))
	defer prom.Close()
	_, url, _ := startServer(t, "warmup: {remote_read: {url: "+prom.URL+"/api/v1/read}}\n")
	_, body := httpDo(t, http.MethodGet, url+"/metrics", nil)
	// The text format sorts label names.
	want := fmt.Sprintf(`anomalyd_build_info{branch=%q,goarch=%q,goos=%q,goversion=%q,revision=%q,tags=%q,version=%q} 1`,
		version.Branch, runtime.GOARCH, runtime.GOOS, runtime.Version(), version.GetRevision(), version.GetTags(), version.Version)
	if !strings.Contains(body, want+"\n") {
		t.Errorf("/metrics lacks %s:\n%s", want, firstLines(body, 5))
	}
	writeGauge(t, url, "g", time.Now().UnixMilli(), 1)
	select {
	case ua := <-uas:
		if ua != version.ComponentUserAgent("anomalyd") {
			t.Errorf("warm-up User-Agent %q, want %q", ua, version.ComponentUserAgent("anomalyd"))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no warm-up request reached the remote-read endpoint in 10 s")
	}
}

// TestStatusConfig: the effective configuration, defaults included (the
// exclude list a user may want to extend), in Prometheus's JSON shape,
// without secrets.
func TestStatusConfig(t *testing.T) {
	_, url, _ := startServer(t, "remote_write: [{url: 'http://127.0.0.1:1/w', basic_auth: {username: u, password: hunter2}}]\n")
	code, body := httpDo(t, http.MethodGet, url+"/api/v1/status/config", nil)
	var resp struct {
		Status string
		Data   struct{ YAML string }
	}
	if err := json.Unmarshal([]byte(body), &resp); code != 200 || err != nil || resp.Status != "success" {
		t.Fatalf("GET /api/v1/status/config: %d %v %q", code, err, body)
	}
	for _, want := range []string{`ALERTS|ALERTS_FOR_STATE`, `anomaly_score|anomaly_expected`, "url: http://127.0.0.1:1/w", "password: <secret>"} {
		if !strings.Contains(resp.Data.YAML, want) {
			t.Errorf("effective config lacks %q:\n%s", want, resp.Data.YAML)
		}
	}
	if strings.Contains(body, "hunter2") {
		t.Errorf("the effective config shows a password")
	}
	if _, err := config.Load([]byte(resp.Data.YAML)); err != nil {
		t.Errorf("the effective config does not load: %v", err)
	}
}

func TestReload(t *testing.T) {
	srv, url, file := startServer(t, "output: {score_name: anomaly_score}\n")
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	vals := make([]float64, 120) // Ready: warm-up and calibration
	for i := range vals {
		vals[i] = float64(10 + i%3)
	}
	writeGauge(t, url, "kept_gauge", t0, vals...)
	srv.shards.Sync()

	// A bad config is refused and the old one stays.
	os.WriteFile(file, []byte("output: {score_nme: x}\n"), 0o644)
	code, body := httpDo(t, http.MethodPost, url+"/-/reload", nil)
	if code != 500 || !strings.Contains(body, "field score_nme not found") {
		t.Fatalf("bad reload: got %d %q", code, body)
	}
	// A good one renames the outputs and turns the driver series on; the
	// series keeps its detector state (its rule did not change), so its next
	// sample is past warm-up.
	os.WriteFile(file, []byte("output: {score_name: renamed_score, driver: true}\n"), 0o644)
	if code, body := httpDo(t, http.MethodPost, url+"/-/reload", nil); code != 200 {
		t.Fatalf("reload: got %d %q", code, body)
	}
	writeGauge(t, url, "kept_gauge", t0+120_000, 11)
	srv.shards.Sync()
	_, metrics := httpDo(t, http.MethodGet, url+"/metrics", nil)
	if !strings.Contains(metrics, `renamed_score{detector="combined",job="t",metric="kept_gauge"}`) {
		t.Fatalf("/metrics after reload lacks renamed_score:\n%s", firstLines(metrics, 20))
	}
	if !strings.Contains(metrics, `anomaly_expected{detector="combined",job="t",metric="kept_gauge"}`) {
		t.Fatalf("series lost its detector state on reload (no expected value):\n%s", firstLines(metrics, 20))
	}
	if !strings.Contains(metrics, `anomaly_driver{detector="holtwinters",job="t",metric="kept_gauge"} `) {
		t.Fatalf("/metrics after reload lacks the driver series:\n%s", firstLines(metrics, 40))
	}
	if !strings.Contains(metrics, "anomalyd_config_last_reload_successful 1") {
		t.Fatal("anomalyd_config_last_reload_successful is not 1")
	}
}

// A reload that removes a remote_write entry removes every series labelled
// with it from /metrics; the series of the entry it keeps stay.
func TestReloadRemovesRemoteMetrics(t *testing.T) {
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer store.Close()
	remote := func(name string) string {
		return "  - {name: " + name + ", url: '" + store.URL + "/" + name + "', queue_config: {batch_send_deadline: 10ms}}\n"
	}
	srv, url, file := startServer(t, "remote_write:\n"+remote("kept")+remote("gone"))
	// Both send a request, so that every family labelled remote has them.
	writeGauge(t, url, "g", time.Now().Add(-time.Minute).UnixMilli(), 1, 2)
	srv.shards.Sync()
	var metrics string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics = httpDo(t, http.MethodGet, url+"/metrics", nil)
		if strings.Contains(metrics, `anomalyd_sink_requests_total{code="204",remote="kept"}`) &&
			strings.Contains(metrics, `anomalyd_sink_requests_total{code="204",remote="gone"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request of both remotes in 10 s:\n%s", grepLines(metrics, "anomalyd_sink_"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	families := func(metrics, remote string) map[string]bool {
		fams := map[string]bool{}
		for _, l := range strings.Split(metrics, "\n") {
			if strings.Contains(l, `remote="`+remote+`"`) && !strings.HasPrefix(l, "#") {
				fams[l[:strings.IndexByte(l, '{')]] = true
			}
		}
		return fams
	}
	before := families(metrics, "gone")
	for _, f := range []string{"anomalyd_sink_samples_sent_total", "anomalyd_sink_samples_dropped_total", "anomalyd_sink_requests_total",
		"anomalyd_sink_request_duration_seconds_count", "anomalyd_sink_queue_samples", "anomalyd_sink_queue_capacity_samples",
		"anomalyd_sink_disk_queue_bytes", "anomalyd_sink_disk_queue_blocks", "anomalyd_sink_disk_queue_max_bytes"} {
		if !before[f] {
			t.Errorf("before the reload, /metrics lacks %s{remote=\"gone\"}", f)
		}
	}

	os.WriteFile(file, []byte("remote_write:\n"+remote("kept")), 0o644)
	if code, body := httpDo(t, http.MethodPost, url+"/-/reload", nil); code != 200 {
		t.Fatalf("reload: got %d %q", code, body)
	}
	_, metrics = httpDo(t, http.MethodGet, url+"/metrics", nil)
	if gone := families(metrics, "gone"); len(gone) != 0 {
		t.Errorf("after the reload, /metrics still has series of the removed remote:\n%s", grepLines(metrics, `remote="gone"`))
	}
	if kept := families(metrics, "kept"); !maps.Equal(kept, before) {
		t.Errorf("after the reload, the kept remote has the families %v, want %v", slices.Sorted(maps.Keys(kept)), slices.Sorted(maps.Keys(before)))
	}
	if !strings.Contains(metrics, `anomalyd_sink_requests_total{code="204",remote="kept"}`) {
		t.Errorf("the kept remote's requests_total went:\n%s", grepLines(metrics, "anomalyd_sink_requests_total"))
	}
}

// A reload that fails while it builds the remote writers (here the second
// entry's password_file cannot be read) leaves the running writers' series
// as they were: the queue gauge of the remote it kept still reads the
// running writer, and the entry it would have added has no series.
func TestFailedReloadKeepsRemoteMetrics(t *testing.T) {
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable) // the samples stay queued
	}))
	defer store.Close()
	kept := "  - {name: kept, url: '" + store.URL + "/kept', queue_config: {batch_send_deadline: 10ms, min_backoff: 1s, max_backoff: 1s}}\n"
	srv, url, file := startServer(t, "remote_write:\n"+kept)
	writeGauge(t, url, "g", time.Now().Add(-time.Minute).UnixMilli(), 1, 2)
	srv.shards.Sync()
	queued := func() string {
		_, metrics := httpDo(t, http.MethodGet, url+"/metrics", nil)
		return grepLines(metrics, `anomalyd_sink_queue_samples{remote="kept"}`)
	}
	var before string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		before = queued()
		if before != "" && !strings.HasSuffix(before, " 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no samples queued for the failing store in 10 s: %q", before)
		}
	}

	added := "  - {name: added, url: '" + store.URL + "/added', basic_auth: {username: u, password_file: " + filepath.Join(t.TempDir(), "missing") + "}}\n"
	os.WriteFile(file, []byte("remote_write:\n"+kept+added), 0o644)
	if code, body := httpDo(t, http.MethodPost, url+"/-/reload", nil); code == 200 {
		t.Fatalf("reload with an unreadable password_file succeeded: %q", body)
	}
	if after := queued(); after != before {
		t.Errorf("after the failed reload the kept remote's queue reads %q, before %q", after, before)
	}
	_, metrics := httpDo(t, http.MethodGet, url+"/metrics", nil)
	if l := grepLines(metrics, `remote="added"`); l != "" {
		t.Errorf("after the failed reload /metrics has series of the entry it did not add:\n%s", l)
	}
}

// ha applies on reload: off, the two replicas of a pair are two series;
// on, the first to send is analysed without its replica label and the
// other is deduplicated.
func TestReloadHA(t *testing.T) {
	// publish_interval 1ms: /metrics shows a write 1 ms after the previous scrape.
	srv, url, file := startServer(t, "window: {publish_interval: 1ms}\n")
	send := func(replica string, ts int64) {
		t.Helper()
		s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "pair_gauge"}, {Name: "__replica__", Value: replica},
			{Name: "cluster", Value: "c1"}}, Samples: []prompb.Sample{{Timestamp: ts, Value: 1}}}
		b, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}}).Marshal()
		if code, body := httpDo(t, http.MethodPost, url+"/api/v1/write", snappy.Encode(nil, b)); code != 204 {
			t.Fatalf("write of replica %s: %d %s", replica, code, body)
		}
		srv.shards.Sync()
	}
	t0 := time.Now().Add(-time.Minute).UnixMilli()
	send("a", t0)
	send("b", t0)
	_, metrics := httpDo(t, http.MethodGet, url+"/metrics", nil)
	for _, r := range []string{"a", "b"} {
		if !strings.Contains(metrics, `anomaly_score{__replica__="`+r+`",cluster="c1",detector="combined",metric="pair_gauge"}`) {
			t.Fatalf("ha off: no score of replica %s's series:\n%s", r, firstLines(metrics, 20))
		}
	}
	os.WriteFile(file, []byte("window: {publish_interval: 1ms}\nha: {enabled: true}\n"), 0o644)
	if code, body := httpDo(t, http.MethodPost, url+"/-/reload", nil); code != 200 {
		t.Fatalf("reload: got %d %q", code, body)
	}
	send("b", t0+1000)
	send("a", t0+1000)
	// publish_interval is the least time between two snapshots: a scrape
	// within 1 ms of the previous one shows that one's, so give it time.
	time.Sleep(2 * time.Millisecond)
	_, metrics = httpDo(t, http.MethodGet, url+"/metrics", nil)
	for _, want := range []string{
		`anomaly_score{cluster="c1",detector="combined",metric="pair_gauge"}`,
		`anomalyd_ingest_ha_elected_replica{cluster="c1",replica="b"} 1`,
		"anomalyd_ingest_ha_samples_deduplicated_total 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("ha on after reload: /metrics lacks %s:\n%s", want, metrics)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// On shutdown the server refuses writes with 503 and flushes what the
// shards produced to the remote-write store before returning.
func TestShutdownFlushesSink(t *testing.T) {
	var mu sync.Mutex
	var received int
	store := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		d, _ := snappy.Decode(nil, b)
		var wr prompb.WriteRequest
		if err := wr.Unmarshal(d); err != nil {
			t.Errorf("store got a bad request: %v", err)
		}
		mu.Lock()
		for _, ts := range wr.Timeseries {
			// The scores of g; the incident series of its target
			// (job="t") go out once a second besides.
			for _, l := range ts.Labels {
				if l.Name == "metric" && l.Value == "g" {
					received += len(ts.Samples)
				}
			}
		}
		mu.Unlock()
		w.WriteHeader(204)
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go store.Serve(ln)
	defer store.Close()

	srv, url, _ := startServer(t, "remote_write:\n  - url: http://"+ln.Addr().String()+"/api/v1/write\n    queue_config: {batch_send_deadline: 1h}\n")
	writeGauge(t, url, "g", time.Now().Add(-time.Minute).UnixMilli(), 1, 2, 3)
	srv.shards.Sync()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := received
	mu.Unlock()
	// 3 samples, all in warm-up: a score each; the hour-long batch deadline
	// means only the shutdown flush can have sent them.
	if got != 3 {
		t.Fatalf("store received %d samples, want 3 flushed at shutdown", got)
	}
}

// TestRestartRestoresState: a server started on the storage path of one
// that shut down has its series back before any new sample, their latest
// scores on /metrics, and says so in its checkpoint metrics; a second
// server on a path in use refuses to start.
func TestRestartRestoresState(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	a, url, file := startServerAt(t, "", data)
	values := make([]float64, 60)
	for i := range values {
		values[i] = float64(i % 7)
	}
	writeGauge(t, url, "g", time.Now().Add(-2*time.Minute).UnixMilli(), values...)
	a.shards.Sync()
	cfg, _ := config.LoadFile(file)
	if _, err := newServer(cfg, serverOptions{storagePath: data}, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "in use by another anomalyd") {
		t.Fatalf("second server on the same storage path: %v, want refused", err)
	}
	_, before := httpDo(t, http.MethodGet, url+"/metrics", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	_, url2, _ := startServerAt(t, "", data)
	_, after := httpDo(t, http.MethodGet, url2+"/metrics", nil)
	for _, want := range []string{"anomalyd_checkpoint_restored_series 1\n", "anomalyd_checkpoint_restore_failures_total"} {
		if want == "anomalyd_checkpoint_restore_failures_total" {
			if strings.Contains(after, want) {
				t.Errorf("restore failures reported:\n%s", grepLines(after, want))
			}
			continue
		}
		if !strings.Contains(after, want) {
			t.Errorf("/metrics after the restart lacks %q:\n%s", want, grepLines(after, "anomalyd_checkpoint"))
		}
	}
	// The series' outputs are back as they were, before any new sample.
	score := grepLines(before, `anomaly_score{`)
	if score == "" || grepLines(after, `anomaly_score{`) != score {
		t.Errorf("score lines before the restart:\n%s\nafter:\n%s", score, grepLines(after, `anomaly_score{`))
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	bad := filepath.Join(dir, "bad.yml")
	os.WriteFile(good, []byte("window: {max_series: 10}\n"), 0o644)
	os.WriteFile(bad, []byte("window: {max_series: 0}\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "config", good}, &out, &errOut); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"check", "config", good, bad}, &out, &errOut); code != 1 {
		t.Fatalf("bad config: exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "window.max_series must be positive, got 0") {
		t.Fatalf("stderr %q lacks the validation error", errOut.String())
	}
	if strings.Contains(out.String(), "WARNING") {
		t.Errorf("a config with the default exclude list got a warning:\n%s", out.String())
	}

	// Valid but a likely mistake: success, with the warning.
	risky := filepath.Join(dir, "risky.yml")
	os.WriteFile(risky, []byte("exclude: ['{__name__=\"ALERTS\"}']\n"), 0o644)
	out.Reset()
	if code := run([]string{"check", "config", risky}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "  WARNING: exclude does not select the output series anomaly_score,") {
		t.Fatalf("risky config: exit %d, stdout %q; want 0 and the exclude warning", code, out.String())
	}
}

func TestFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "anomalyd, version "+version.Version+" ") {
		t.Fatalf("--version: exit %d, %q", code, out.String())
	}
	if code := run([]string{"--log.level=loud"}, &out, &errOut); code != 2 {
		t.Fatalf("bad --log.level: exit %d, want 2", code)
	}
	if code := run([]string{"--no-such-flag"}, &out, &errOut); code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
}

// writeRetrying remote-writes wr to the anomalyd at url, retrying on 503,
// its back-pressure, as Prometheus does (bounded).
func writeRetrying(t *testing.T, url string, wr *prompb.WriteRequest) {
	t.Helper()
	b, _ := wr.Marshal()
	for try := 0; ; try++ {
		code, body := httpDo(t, http.MethodPost, url+"/api/v1/write", snappy.Encode(nil, b))
		if code == 204 {
			return
		}
		if code != 503 || try == 100 {
			t.Fatalf("write: %d %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestartNoIncident: a target whose process restarts resets all its
// counters at once, part-way through a scrape interval. That is no
// incident: the increase across a reset is unknown, and the rates before
// and after it are as usual.
func TestRestartNoIncident(t *testing.T) {
	_, url, _ := startServerAt(t, "", filepath.Join(t.TempDir(), "data"))
	const n, before, after = 20, 300, 20
	t0 := time.Now().Add(-(before + after) * time.Second).UnixMilli()
	rng := rand.New(rand.NewPCG(3, 4))
	var counts [n]float64
	for i := range before + after {
		var wr prompb.WriteRequest
		for k := range n {
			inc := math.Round(100 + 10*rng.NormFloat64())
			if i == before {
				// The restart came half-way through the interval: the new
				// process has counted half of one.
				counts[k], inc = 0, math.Round(0.5*inc)
			}
			counts[k] += inc
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: fmt.Sprintf("c%02d_total", k)}, {Name: "job", Value: "t"}},
				Samples: []prompb.Sample{{Timestamp: t0 + int64(i)*1000, Value: counts[k]}},
			})
		}
		writeRetrying(t, url, &wr)
	}
	// The incident stage publishes once a second: give it two.
	time.Sleep(2 * time.Second)
	code, body := httpDo(t, http.MethodGet, url+"/api/v1/incidents", nil)
	if code != 200 || !strings.Contains(body, `"incidents":[]`) {
		t.Errorf("GET /api/v1/incidents after a restart: %d %s; want no incident", code, body)
	}
	_, body = httpDo(t, http.MethodGet, url+"/metrics", nil)
	for _, want := range []string{"anomalyd_window_rate_resets_total " + strconv.Itoa(n) + "\n",
		`anomalyd_window_samples_not_analysed_total{reason="counter_reset"} ` + strconv.Itoa(n) + "\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, grepLines(body, "anomalyd_window_"))
		}
	}
}

// TestIncidents: ten series of one target that shift together open one
// incident, on /api/v1/incidents with the series that explain it (the
// counters' values per second), and on /metrics and by remote write as the
// target's incident series.
func TestIncidents(t *testing.T) {
	store := newSeriesStore(t)
	cfgText := "remote_write: [{url: '" + store.URL + "', queue_config: {batch_send_deadline: 100ms}}]\n"
	data := filepath.Join(t.TempDir(), "data")
	srv, url, _ := startServerAt(t, cfgText, data)
	const n, quiet, shifted = 10, 300, 10
	// The shift is at about now: the incident stays open (12 samples of
	// 1 s after its last evidence, by the wall clock) while the test looks.
	t0 := time.Now().Add(-quiet * time.Second).UnixMilli()
	// As a scrape delivers them: every series' sample of one time in one
	// request.
	// Half are gauges (gNN), half counters (gNN_total) whose rate shifts.
	rng := rand.New(rand.NewPCG(1, 2))
	var counts [n]float64
	for i := range quiet + shifted {
		var wr prompb.WriteRequest
		for k := range n {
			v := 100 + rng.NormFloat64()
			if i >= quiet {
				v += 60
			}
			name := fmt.Sprintf("g%02d", k)
			if k%2 == 1 {
				counts[k] += v
				v, name = counts[k], name+"_total"
			}
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "t"}},
				Samples: []prompb.Sample{{Timestamp: t0 + int64(i)*1000, Value: v}},
			})
		}
		writeRetrying(t, url, &wr)
	}
	var resp struct {
		Status string
		Data   struct {
			Incidents []struct {
				ID        string
				Group     map[string]string
				Open      bool
				Peak      float64 `json:"peak_score"`
				Series    int
				TopSeries []struct {
					Labels    map[string]string
					Score     float64
					Value     float64
					Reason    string
					PerSecond bool `json:"per_second"`
				} `json:"top_series"`
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpDo(t, http.MethodGet, url+"/api/v1/incidents", nil)
		if err := json.Unmarshal([]byte(body), &resp); code != 200 || err != nil {
			t.Fatalf("GET /api/v1/incidents: %d %v %q", code, err, body)
		}
		if len(resp.Data.Incidents) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(resp.Data.Incidents) != 1 {
		t.Fatalf("incidents %+v; want one", resp.Data.Incidents)
	}
	inc := resp.Data.Incidents[0]
	if !inc.Open || inc.Group["job"] != "t" || inc.Peak < 1 || inc.Series < 2 || len(inc.TopSeries) < 2 {
		t.Errorf("incident %+v; want an open one of job t, peak >= 1, several series", inc)
	}
	var rates int
	for _, c := range inc.TopSeries {
		if !strings.HasPrefix(c.Labels["__name__"], "g") || c.Score < 1 || c.Reason == "" {
			t.Errorf("contributor %+v; want one of the shifted series with its score and a reason", c)
		}
		// Gauges and counters' rates are both near 160 after the shift.
		if counter := strings.HasSuffix(c.Labels["__name__"], "_total"); c.PerSecond != counter || c.Value < 150 || c.Value > 170 {
			t.Errorf("contributor %+v; want its value near 160, per second exactly for a counter", c)
		} else if counter {
			rates++
		}
	}
	if rates == 0 || rates == len(inc.TopSeries) {
		t.Errorf("%d of %d contributors are counters; want both kinds", rates, len(inc.TopSeries))
	}
	_, body := httpDo(t, http.MethodGet, url+"/metrics", nil)
	for _, want := range []string{`anomaly_incident_open{job="t"} 1`, `anomaly_incidents_opened_total{job="t"} 1`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(body, "anomaly_incident"))
		}
	}
	// The store: the same series, labelled with the group's labels alone.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		open := store.last(`anomaly_incident_open{job="t"}`)
		opened := store.last(`anomaly_incidents_opened_total{job="t"}`)
		if open == 1 && opened == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote write: anomaly_incident_open{job=\"t\"} = %g, anomaly_incidents_opened_total{job=\"t\"} = %g, want 1 and 1 (NaN: none)", open, opened)
		}
	}

	// A restart keeps the incident: the same ID, still open (it closes 12
	// samples after its last evidence), and the group's count of incidents
	// goes on rather than starting over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, url2, _ := startServerAt(t, cfgText, data)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, body := httpDo(t, http.MethodGet, url2+"/api/v1/incidents", nil)
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.Data.Incidents) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(resp.Data.Incidents) != 1 || resp.Data.Incidents[0].ID != inc.ID || !resp.Data.Incidents[0].Open {
		t.Fatalf("after the restart: incidents %+v, want incident %s still open", resp.Data.Incidents, inc.ID)
	}
	_, body = httpDo(t, http.MethodGet, url2+"/metrics", nil)
	for _, want := range []string{`anomaly_incident_open{job="t"} 1`, `anomaly_incidents_opened_total{job="t"} 1`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics after the restart lacks %s:\n%s", want, grepLines(body, "anomaly_incident"))
		}
	}
}

// seriesStore is a remote-write 1.0 store that keeps the last sample of
// every series, by its labels in the text format.
type seriesStore struct {
	*httptest.Server
	mu   sync.Mutex
	vals map[string]float64
}

func newSeriesStore(t *testing.T) *seriesStore {
	s := &seriesStore{vals: map[string]float64{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		d, _ := snappy.Decode(nil, b)
		var wr prompb.WriteRequest
		if err := wr.Unmarshal(d); err != nil {
			t.Errorf("store got a bad request: %v", err)
		}
		s.mu.Lock()
		for _, ts := range wr.Timeseries {
			var name string
			var ls []string
			for _, l := range ts.Labels {
				if l.Name == "__name__" {
					name = l.Value
				} else {
					ls = append(ls, fmt.Sprintf("%s=%q", l.Name, l.Value))
				}
			}
			if n := len(ts.Samples); n > 0 {
				s.vals[name+"{"+strings.Join(ls, ",")+"}"] = ts.Samples[n-1].Value
			}
		}
		s.mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(s.Close)
	return s
}

// last returns the last value of a series, NaN if it has none.
func (s *seriesStore) last(series string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.vals[series]; ok {
		return v
	}
	return math.NaN()
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
