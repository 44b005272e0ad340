//go:build linux

// Scale-out behind vmagent (deploy/vmagent) with Debian's Prometheus and the
// vmagent that `make deps` builds into bin/vmagent:
//
//	exporter ─scrape 1s─▶ Prometheus ─remote_write─▶ vmagent ─shardByURL─▶ anomalyd 0, 1 (then 0, 1, 2)
//	(90 targets)              │   ▲                                          │
//	                          │   └──────── warm-up: remote read ────────────┘
//	                          └─remote_write─▶ anomalyd R (the reference: one instance, every series)
//
// vmagent runs with deploy/vmagent/vmagent.flags and every anomalyd with
// deploy/vmagent/anomalyd.yml, their addresses replaced. The test checks
// that every series is scored by exactly one instance, a target's series
// all by the same one; that the instances' output series together are the
// reference's, with the same values at the same timestamps; and that after
// vmagent restarts with a third instance, about a third of the targets move,
// each series is again scored by exactly one instance, and the series that
// moved are warmed from Prometheus's history on their new instance: they
// score out of warm-up from their first sample there, as the reference does.
//
// Its identifiers start with vm; the shared helpers are in e2e_test.go.
package e2e

import (
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// The targets: vmTargetsPerJob instances of each job, each serving
// vmSeriesPerTarget series. The share of targets that moves when a third
// instance joins is measured, not derived from vmagent's hash: 90 targets
// make it precise enough that a hash moving only the third the new
// instance must take passes with bounds more than 3 standard deviations of
// a binomial count away from 30, and one moving two thirds (a plain modulo)
// fails.
var vmJobs = []string{"api", "db", "cache"}

const (
	vmTargetsPerJob   = 30
	vmSeriesPerTarget = 2
	vmMinMoved        = 1.0 / 6 // share of targets that must move to a third instance, at least
	vmMaxMoved        = 1.0 / 2 // and at most
	vmMinSamples      = 20      // scores per series in the reference before the checks of each phase
)

// vmOutputs are the per-series output names whose values are compared.
var vmOutputs = []string{"anomaly_score", "anomaly_expected", "anomaly_lower", "anomaly_upper"}

func TestVmagentShardE2E(t *testing.T) {
	exp := vmNewExporter()
	t.Cleanup(exp.srv.Close) // after the processes stop
	env := e2eNewEnv(t)
	root := e2eRepoRoot(t)
	vmagent := vmagentBinary(t, root)
	expHost := strings.TrimPrefix(exp.srv.URL, "http://")

	promAddr := e2eFreePort(t)
	promURL := "http://" + promAddr
	shipped, err := os.ReadFile(filepath.Join(root, "deploy", "vmagent", "anomalyd.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := vmReplace(t, "anomalyd.yml", string(shipped), "http://prometheus:9090/api/v1/read", promURL+"/api/v1/read", 1)
	// Calibration off: a cold series then scores out of warm-up, with an
	// expected value and a band, after detectors.warmup (10) samples instead
	// of 110, which lets the test tell warm from cold and compare real
	// values within a minute. The live samples are a second apart: a
	// shorter publish interval lets /metrics follow them. The score history
	// on: the test reads every instance's scores back through it (vmRead).
	cfg += "detectors:\n  calibration:\n    enabled: false\nwindow:\n  publish_interval: 100ms\nhistory:\n  retention: 1h\n"
	startAnomalyd := func(name string) string {
		dir := env.mkdir(t, name)
		env.write(t, dir, "anomalyd.yml", cfg)
		addr := e2eFreePort(t)
		p := env.start(t, name, dir, env.anomalydBin, "--config.file=anomalyd.yml", "--web.listen-address="+addr, "--log.level=info")
		env.waitReady(t, p, "http://"+addr)
		return "http://" + addr
	}
	shards := []string{startAnomalyd("anomalyd-0"), startAnomalyd("anomalyd-1")}
	ref := startAnomalyd("anomalyd-reference")

	vmDir := env.mkdir(t, "vmagent")
	vmAddr := e2eFreePort(t)
	startVmagent := func(shards []string) *e2eProc {
		args := vmagentFlags(t, root, vmAddr, filepath.Join(vmDir, "queue"), shards)
		p := env.start(t, "vmagent", vmDir, vmagent, args...)
		env.waitReady(t, p, "http://"+vmAddr)
		return p
	}
	vm := startVmagent(shards)

	promDir := env.mkdir(t, "prometheus")
	env.write(t, promDir, "prometheus.yml", vmPrometheusConfig(expHost, "http://"+vmAddr, ref))
	env.a = env.start(t, "prometheus", promDir, env.prometheus, "--config.file=prometheus.yml",
		"--storage.tsdb.path=data", "--web.listen-address="+promAddr, "--log.level=info")
	env.waitReady(t, env.a, promURL)
	start := time.Now()

	nSeries := len(vmJobs) * vmTargetsPerJob * vmSeriesPerTarget
	vmWaitSamples(t, ref, nSeries, 0)
	t.Logf("every series has %d scores in the reference after %s", vmMinSamples, time.Since(start).Round(time.Second))

	var before map[string]int // series → index of its instance
	t.Run("each series is scored by exactly one instance, a target's series by the same", func(t *testing.T) {
		before = vmCheckOwners(t, shards, ref, nSeries, 0)
		perInstance := make([]int, len(shards))
		for _, i := range vmTargetOwners(t, before) {
			perInstance[i]++
		}
		t.Logf("targets per instance: %v", perInstance)
		for i, n := range perInstance {
			if total := len(vmJobs) * vmTargetsPerJob; n < total/4 || n > total*3/4 {
				t.Errorf("instance %d has %d of %d targets, want a quarter to three quarters", i, n, total)
			}
		}
	})
	if before == nil {
		t.FailNow()
	}
	t.Run("the instances' output series together are the reference's", func(t *testing.T) {
		vmCheckMetricsUnion(t, shards, ref)
	})
	t.Run("the instances score as the reference does", func(t *testing.T) {
		vmCheckValues(t, shards, ref, 0)
	})

	// A third instance: vmagent restarts with its URL after the others.
	shards = append(shards, startAnomalyd("anomalyd-2"))
	warmedBefore := make([]float64, len(shards))
	for i, s := range shards {
		warmedBefore[i] = wuMetrics(t, s)[`anomalyd_warmup_series_total{result="warmed"}`]
	}
	if err := vm.stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	startVmagent(shards)
	// Samples scraped before vmagent restarted may still reach their old
	// instance (from vmagent's queue) or their new one (from Prometheus's
	// retries); from cut on, each goes the new way.
	cut := time.Now().Add(2 * time.Second).UnixMilli()
	vmWaitSamples(t, ref, nSeries, cut)

	var after map[string]int
	t.Run("after a third instance joins, each series is still scored by exactly one", func(t *testing.T) {
		after = vmCheckOwners(t, shards, ref, nSeries, cut)
	})
	if after == nil {
		t.FailNow()
	}
	moved := map[string]int{} // series → its new instance
	for k, i := range after {
		if before[k] != i {
			moved[k] = i
		}
	}
	t.Run("about a third of the targets move", func(t *testing.T) {
		tb, ta := vmTargetOwners(t, before), vmTargetOwners(t, after)
		n := 0
		paths := map[string]int{}
		for g, i := range ta {
			if tb[g] != i {
				n++
				paths[fmt.Sprintf("%d→%d", tb[g], i)]++
			}
		}
		share := float64(n) / float64(len(ta))
		t.Logf("%d of %d targets moved (%.2f): %v", n, len(ta), share, paths)
		if share < vmMinMoved || share > vmMaxMoved {
			t.Errorf("%d of %d targets (%.2f) moved, want %.2f to %.2f", n, len(ta), share, vmMinMoved, vmMaxMoved)
		}
	})
	t.Run("the series that moved are warmed from remote read, not cold", func(t *testing.T) {
		arrived := make([]int, len(shards))
		for _, i := range moved {
			arrived[i]++
		}
		for i, s := range shards {
			got := wuMetrics(t, s)[`anomalyd_warmup_series_total{result="warmed"}`] - warmedBefore[i]
			if got != float64(arrived[i]) {
				t.Errorf("instance %d warmed %v series since the restart, want the %d that moved to it", i, got, arrived[i])
			}
		}
		t.Logf("series that moved, per new instance: %v", arrived)
		vmCheckWarmStart(t, shards, moved)
	})
	t.Run("after the move the instances score as the reference does", func(t *testing.T) {
		vmCheckValues(t, shards, ref, cut)
	})
	t.Run("the old instance keeps a moved target's last outputs on /metrics", func(t *testing.T) {
		// Its output series and its group's incident series, until
		// window.series_ttl forgets the series there: what
		// deploy/vmagent/README.md tells those who scrape every instance.
		lines := make([]map[string]bool, len(shards))
		for i, s := range shards {
			body, err := e2eGet(s + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			ls, err := e2eParseText(body)
			if err != nil {
				t.Fatal(err)
			}
			lines[i] = map[string]bool{}
			for _, l := range ls {
				if l.Name == "anomaly_incident_score" {
					lines[i]["target "+l.Labels["job"]+"/"+l.Labels["instance"]] = true
				}
				if l.Name == "anomaly_score" && l.Labels["detector"] == "combined" {
					delete(l.Labels, "detector")
					lines[i][e2eFormat(l.Labels)] = true
				}
			}
		}
		for k, i := range moved {
			for _, name := range []string{k, "target " + vmTargets[k]} {
				if old := before[k]; !lines[old][name] || !lines[i][name] {
					t.Errorf("outputs of %s on /metrics: old instance %d %v, new instance %d %v, want both",
						name, old, lines[old][name], i, lines[i][name])
				}
			}
		}
	})
}

// vmagentBinary returns bin/vmagent of the repository, which `make deps`
// builds: Debian's vmagent is too old for -remoteWrite.shardByURL.labels.
func vmagentBinary(t testing.TB, root string) string {
	t.Helper()
	p := filepath.Join(root, "bin", "vmagent")
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("%s is missing (%v): run `make deps`, which builds it (Debian's vmagent has no -remoteWrite.shardByURL)", p, err)
	}
	return p
}

// vmagentFlags returns deploy/vmagent/vmagent.flags with the listen
// address, the queue directory and one -remoteWrite.url per shard (in
// order) put in.
func vmagentFlags(t testing.TB, root, listen, queue string, shards []string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "vmagent", "vmagent.flags"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	urls := 0
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, _, _ := strings.Cut(l, "=")
		switch name {
		case "-httpListenAddr":
			l = name + "=" + listen
		case "-remoteWrite.tmpDataPath":
			l = name + "=" + queue
		case "-remoteWrite.url":
			if urls++; urls == 1 {
				for _, s := range shards {
					args = append(args, name+"="+s+"/api/v1/write")
				}
			}
			continue
		}
		args = append(args, l)
	}
	for _, want := range []string{"-remoteWrite.shardByURL", "-remoteWrite.shardByURL.labels=job,instance"} {
		if !slices.Contains(args, want) {
			t.Fatalf("deploy/vmagent/vmagent.flags has no %s line: the file changed, update the test", want)
		}
	}
	if urls < 2 {
		t.Fatalf("deploy/vmagent/vmagent.flags has %d -remoteWrite.url lines, want at least 2", urls)
	}
	return args
}

// vmReplace replaces old by new in the shipped file's text s and fails
// unless old occurs exactly n times.
func vmReplace(t testing.TB, file, s, old, new string, n int) string {
	t.Helper()
	if c := strings.Count(s, old); c != n {
		t.Fatalf("deploy/vmagent/%s has %q %d times, the test replaces it %d times: the file changed, update the test", file, old, c, n)
	}
	return strings.ReplaceAll(s, old, new)
}

// vmPrometheusConfig scrapes every target through the exporter at expHost
// (the target's name in the target parameter, as for a blackbox exporter)
// and remote-writes the exporter's series to vmagent and to the reference.
func vmPrometheusConfig(expHost, vmagent, ref string) string {
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n")
	for _, job := range vmJobs {
		var targets []string
		for i := range vmTargetsPerJob {
			targets = append(targets, fmt.Sprintf("%q", vmTargetName(job, i)))
		}
		fmt.Fprintf(&b, `  - job_name: %s
    static_configs: [{targets: [%s]}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_target}
      - {source_labels: [__address__], target_label: instance}
      - {target_label: __address__, replacement: %q}
`, job, strings.Join(targets, ", "), expHost)
	}
	b.WriteString("remote_write:\n")
	for _, rw := range []struct{ name, url string }{{"vmagent", vmagent}, {"reference", ref}} {
		fmt.Fprintf(&b, `  - name: %s
    url: %s/api/v1/write
    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}
    write_relabel_configs: [{source_labels: [__name__], regex: "vm_.+", action: keep}]
`, rw.name, rw.url)
	}
	return b.String()
}

func vmTargetName(job string, i int) string { return fmt.Sprintf("%s-%02d", job, i) }

// vmExporter serves each target's series at /metrics?target=NAME: a noisy
// gauge and a counter, different for every target.
type vmExporter struct {
	srv     *httptest.Server
	start   time.Time
	scrapes atomic.Int64
}

func vmNewExporter() *vmExporter {
	e := &vmExporter{start: time.Now()}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.scrapes.Add(1)
		name := r.URL.Query().Get("target")
		h := fnv.New64a()
		h.Write([]byte(name))
		seed := h.Sum64()
		el := time.Since(e.start).Seconds()
		noise := float64((seed^uint64(el*1000))*2654435761%1000) / 1000
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, `# TYPE vm_latency_seconds gauge
vm_latency_seconds{path="/"} %g
# TYPE vm_requests_total counter
vm_requests_total{code="200"} %g
`, 0.1+0.02*math.Sin(el/10+float64(seed%7))+0.01*noise, math.Floor(float64(5+seed%10)*el+3*noise))
	}))
	return e
}

// vmKey is an input series as its output series name it: their labels
// without __name__ and detector. vmTarget is its target, job/instance.
func vmKey(ls []prompb.Label) (key, target string) {
	m := map[string]string{}
	for _, l := range ls {
		if l.Name != "__name__" && l.Name != "detector" {
			m[l.Name] = l.Value
		}
	}
	return e2eFormat(m), m["job"] + "/" + m["instance"]
}

// vmTargets maps each vmKey to its target.
var vmTargets = map[string]string{}

// vmRead returns the samples at or after since of the output series name
// (detector combined) in base's score history, by vmKey.
func vmRead(t *testing.T, base, name string, since int64) map[string][]prompb.Sample {
	t.Helper()
	q := rrQuery(since, time.Now().Add(time.Minute).UnixMilli(), "__name__", name, "detector", "combined")
	code, resp, text := rrRead(t, base, q)
	if code != http.StatusOK {
		t.Fatalf("%s/api/v1/read: %d %s", base, code, text)
	}
	out := map[string][]prompb.Sample{}
	for _, r := range resp.Results {
		for _, s := range r.Timeseries {
			if len(s.Samples) > 0 {
				k, target := vmKey(s.Labels)
				vmTargets[k] = target
				out[k] = s.Samples
			}
		}
	}
	return out
}

// vmScored returns the input series base has scored at or after since,
// with how many scores.
func vmScored(t *testing.T, base string, since int64) map[string]int {
	t.Helper()
	out := map[string]int{}
	for k, ss := range vmRead(t, base, "anomaly_score", since) {
		out[k] = len(ss)
	}
	return out
}

// vmWaitSamples waits until the reference has scored n series
// vmMinSamples times each at or after since.
func vmWaitSamples(t *testing.T, ref string, n int, since int64) {
	t.Helper()
	err := e2eEventually(90*time.Second, time.Second, func() error {
		scored := vmScored(t, ref, since)
		if len(scored) != n {
			return fmt.Errorf("the reference scored %d series, want %d", len(scored), n)
		}
		for k, c := range scored {
			if c < vmMinSamples {
				return fmt.Errorf("the reference scored %s %d times, want %d", k, c, vmMinSamples)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// vmCheckOwners checks that each of the reference's n series is scored at
// or after since by exactly one shard and returns the shard of each.
func vmCheckOwners(t *testing.T, shards []string, ref string, n int, since int64) map[string]int {
	t.Helper()
	want := vmScored(t, ref, since)
	if len(want) != n {
		t.Fatalf("the reference scored %d series, want %d", len(want), n)
	}
	owners := map[string][]int{}
	for i, s := range shards {
		for k := range vmScored(t, s, since) {
			owners[k] = append(owners[k], i)
		}
	}
	out := map[string]int{}
	for k := range want {
		switch o := owners[k]; len(o) {
		case 1:
			out[k] = o[0]
		case 0:
			t.Errorf("no instance scored %s", k)
		default:
			t.Errorf("instances %v all scored %s", o, k)
		}
	}
	for k := range owners {
		if _, ok := want[k]; !ok {
			t.Errorf("instances %v scored %s, which the reference did not", owners[k], k)
		}
	}
	if t.Failed() {
		return nil
	}
	vmTargetOwners(t, out)
	return out
}

// vmTargetOwners returns the shard of each target, failing when a target's
// series are on several.
func vmTargetOwners(t *testing.T, owners map[string]int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for k, i := range owners {
		g := vmTargets[k]
		if g == "" || strings.HasPrefix(g, "/") || strings.HasSuffix(g, "/") {
			t.Fatalf("series %s has no job or instance", k)
		}
		if j, ok := out[g]; ok && j != i {
			t.Errorf("the series of target %s are on instances %d and %d", g, i, j)
		}
		out[g] = i
	}
	return out
}

// vmCheckMetricsUnion compares the output and incident series on the
// shards' /metrics, together, with the reference's.
func vmCheckMetricsUnion(t *testing.T, shards []string, ref string) {
	t.Helper()
	series := func(base string) map[string]bool {
		body, err := e2eGet(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		lines, err := e2eParseText(body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, l := range lines {
			if strings.HasPrefix(l.Name, "anomaly_") {
				m := map[string]string{"__name__": l.Name}
				for k, v := range l.Labels {
					m[k] = v
				}
				out[e2eFormat(m)] = true
			}
		}
		return out
	}
	want := series(ref)
	got := map[string]bool{}
	for i, s := range shards {
		for k := range series(s) {
			if got[k] {
				t.Errorf("%s is on instance %d and another", k, i)
			}
			got[k] = true
		}
	}
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Errorf("the instances' /metrics lack %d of the reference's %d output series %q and have %d it does not have %q",
			len(missing), len(want), vmFirst(missing), len(extra), vmFirst(extra))
	}
	incidents := 0
	for k := range want {
		if strings.HasPrefix(k, "anomaly_incident_score{") {
			incidents++
		}
	}
	if incidents != len(vmJobs)*vmTargetsPerJob {
		t.Errorf("the reference has %d anomaly_incident_score series, want one per target, %d", incidents, len(vmJobs)*vmTargetsPerJob)
	}
	t.Logf("%d output and incident series on /metrics, the same on the instances together and on the reference", len(want))
}

func vmFirst(ss []string) []string {
	if len(ss) > 5 {
		return ss[:5]
	}
	return ss
}

// vmCheckValues compares every output sample of the shards at or after
// since with the reference's sample of the same series and timestamp: the
// same input samples in the same order give the same outputs.
func vmCheckValues(t *testing.T, shards []string, ref string, since int64) {
	t.Helper()
	differ := 0
	compared := map[string]int{}
	var first []string
	for _, name := range vmOutputs {
		want := vmRead(t, ref, name, since)
		got := map[string][]prompb.Sample{}
		for _, s := range shards {
			for k, v := range vmRead(t, s, name, since) {
				got[k] = append(got[k], v...)
			}
		}
		for k, ws := range want {
			at := map[int64]float64{}
			for _, s := range ws {
				at[s.Timestamp] = s.Value
			}
			for _, s := range got[k] {
				w, ok := at[s.Timestamp]
				if !ok {
					continue
				}
				compared[name]++
				if w != s.Value && !(math.IsNaN(w) && math.IsNaN(s.Value)) {
					differ++
					if len(first) < 5 {
						first = append(first, fmt.Sprintf("%s %s at %d: %v, reference %v", name, k, s.Timestamp, s.Value, w))
					}
				}
			}
		}
	}
	t.Logf("output samples compared with the reference's: %v; %d differ", compared, differ)
	if differ > 0 {
		// What each instance did with its input, to tell a sample lost or
		// reordered on the way from a different warm-up.
		for _, s := range append(slices.Clone(shards), ref) {
			body, err := e2eGet(s + "/metrics")
			if err != nil {
				t.Logf("%s: %v", s, err)
				continue
			}
			for _, l := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(l, "anomalyd_window_samples_not_analysed_total") || strings.HasPrefix(l, "anomalyd_warmup_series_total") ||
					strings.HasPrefix(l, "anomalyd_ingest_samples_received_total") {
					t.Logf("%s: %s", s, l)
				}
			}
		}
		t.Errorf("%d output samples differ from the reference's: %q", differ, first)
	}
	// Every series has vmMinSamples scores in the reference, the last
	// vmMinSamples-10 or more out of warm-up, with a band: most of them
	// must have been compared (not all: the reference may be ahead).
	nSeries := len(vmJobs) * vmTargetsPerJob * vmSeriesPerTarget
	for _, name := range vmOutputs {
		if min := nSeries * (vmMinSamples - 10) / 2; compared[name] < min {
			t.Errorf("only %d samples of %s compared, want at least %d", compared[name], name, min)
		}
	}
}

// vmCheckWarmStart checks that each moved series scored out of warm-up from
// its first sample on its new instance: its first score there comes with an
// expected value, which a cold series lacks for detectors.warmup samples.
func vmCheckWarmStart(t *testing.T, shards []string, moved map[string]int) {
	t.Helper()
	if len(moved) == 0 {
		t.Fatal("no series moved")
	}
	for i, s := range shards {
		scores := vmRead(t, s, "anomaly_score", 0)
		expected := vmRead(t, s, "anomaly_expected", 0)
		for k, j := range moved {
			if j != i {
				continue
			}
			ss := scores[k]
			if len(ss) == 0 {
				t.Errorf("instance %d has no scores of %s, which moved to it", i, k)
				continue
			}
			if es := expected[k]; len(es) == 0 || es[0].Timestamp != ss[0].Timestamp {
				t.Errorf("instance %d scored %s first at %d without an expected value: it started cold", i, k, ss[0].Timestamp)
			}
		}
	}
}
