package ingest

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/series"
)

func testHA() HAOptions {
	return HAOptions{Enabled: true, ClusterLabel: "cluster", ReplicaLabel: "__replica__",
		FailoverTimeout: 30 * time.Second, MaxClusters: 3}
}

// newTestTracker returns a tracker and the registry its metrics are in.
func newTestTracker(o HAOptions) (*haTracker, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return newHATracker(o, newMetrics(reg), zap.NewNop()), reg
}

// selfMetrics returns the text of reg's lines that start with prefix.
func selfMetrics(t *testing.T, reg *prometheus.Registry, prefix string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := promreg.WriteText(&buf, reg); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for l := range strings.Lines(buf.String()) {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l)
		}
	}
	return b.String()
}

func TestHATrackerElectionAndFailover(t *testing.T) {
	tr, reg := newTestTracker(testHA())
	sec := int64(time.Second)
	steps := []struct {
		what             string
		cluster, replica string
		at               int64 // seconds
		want             haVerdict
	}{
		{"the first replica seen is elected", "c1", "a", 0, haAnalyse},
		{"another replica is deduplicated", "c1", "b", 1, haDeduplicate},
		{"the elected replica goes on", "c1", "a", 10, haAnalyse},
		{"another cluster elects its own", "c2", "b", 10, haAnalyse},
		{"b is still deduplicated in c1", "c1", "b", 25, haDeduplicate},
		{"exactly failover_timeout of silence is not yet a failover", "c1", "b", 40, haDeduplicate},
		{"longer is: b takes over", "c1", "b", 41, haAnalyse},
		{"a is now deduplicated", "c1", "a", 42, haDeduplicate},
		{"b's requests keep it elected", "c1", "b", 70, haAnalyse},
		{"a within the timeout of b's last request", "c1", "a", 100, haDeduplicate},
	}
	for _, s := range steps {
		if got := tr.check([]byte(s.cluster), []byte(s.replica), s.at*sec); got != s.want {
			t.Fatalf("%s: check(%s, %s) at %ds = %d, want %d", s.what, s.cluster, s.replica, s.at, got, s.want)
		}
	}
	want := `anomalyd_ingest_ha_elected_replica{cluster="c1",replica="b"} 1
anomalyd_ingest_ha_elected_replica{cluster="c2",replica="b"} 1
anomalyd_ingest_ha_failovers_total 1
anomalyd_ingest_ha_samples_deduplicated_total 0
`
	if got := selfMetrics(t, reg, "anomalyd_ingest_ha_"); got != want {
		t.Fatalf("metrics:\n%s\nwant\n%s", got, want)
	}
}

func TestHATrackerBoundsClusters(t *testing.T) {
	o := testHA()
	o.MaxClusters = 2
	tr, reg := newTestTracker(o)
	sec := int64(time.Second)
	tr.check([]byte("c1"), []byte("a"), 0)
	tr.check([]byte("c2"), []byte("a"), 20*sec)
	if got := tr.check([]byte("c3"), []byte("a"), 25*sec); got != haTooManyClusters {
		t.Fatalf("a third cluster while two send: %d, want haTooManyClusters", got)
	}
	// c1 has been silent for longer than the timeout: forgotten for c3.
	if got := tr.check([]byte("c3"), []byte("a"), 31*sec); got != haAnalyse {
		t.Fatalf("a third cluster once c1 is silent: %d, want haAnalyse", got)
	}
	if n := len(tr.clusters); n != 2 {
		t.Fatalf("%d clusters tracked, want 2", n)
	}
	if got := selfMetrics(t, reg, "anomalyd_ingest_ha_elected"); strings.Contains(got, `"c1"`) || !strings.Contains(got, `"c3"`) {
		t.Fatalf("elected replicas after c1 was forgotten:\n%s", got)
	}
	// c1 comes back: it is new again, and c2 is silent by now.
	if got := tr.check([]byte("c1"), []byte("b"), 60*sec); got != haAnalyse {
		t.Fatalf("c1 again: %d, want haAnalyse", got)
	}
}

func TestHATrackerLabels(t *testing.T) {
	tr, _ := newTestTracker(testHA())
	long := strings.Repeat("x", 300)
	f := func(lbls []prompb.Label, wantCluster, wantReplica string) {
		t.Helper()
		var r request
		r.buf = encodeRaw(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			{Labels: lbls, Samples: []prompb.Sample{{Timestamp: 1, Value: 1}}},
			{Labels: []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "cluster", Value: "other"}, {Name: "__replica__", Value: "z"}}},
		}})
		if err := r.decodeV1(); err != nil {
			t.Fatal(err)
		}
		c, rep := tr.labels(&r, 256)
		if string(c) != wantCluster || string(rep) != wantReplica || (wantCluster == "") != (c == nil) || (wantReplica == "") != (rep == nil) {
			t.Fatalf("labels(%v) = %q, %q; want %q, %q", lbls, c, rep, wantCluster, wantReplica)
		}
	}
	name := prompb.Label{Name: "__name__", Value: "up"}
	f([]prompb.Label{name, {Name: "cluster", Value: "c1"}, {Name: "__replica__", Value: "a"}}, "c1", "a")
	f([]prompb.Label{{Name: "__replica__", Value: "a"}, name, {Name: "cluster", Value: "c1"}}, "c1", "a") // unsorted
	f([]prompb.Label{name, {Name: "cluster", Value: "c1"}}, "c1", "")
	f([]prompb.Label{name, {Name: "__replica__", Value: "a"}}, "", "a")
	f([]prompb.Label{name, {Name: "cluster", Value: ""}, {Name: "__replica__", Value: "a"}}, "", "a") // empty = absent
	f([]prompb.Label{name, {Name: "cluster", Value: "c1"}, {Name: "__replica__", Value: "bad\xff"}}, "c1", "")
	f([]prompb.Label{name, {Name: "cluster", Value: long}, {Name: "__replica__", Value: "a"}}, "", "a")
	f([]prompb.Label{name, {Name: "Cluster", Value: "c1"}, {Name: "replica", Value: "a"}}, "", "")
}

// encodeRaw marshals wr without snappy, as request.buf holds it.
func encodeRaw(t *testing.T, wr *prompb.WriteRequest) []byte {
	t.Helper()
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// haSeries is a gauge with the external labels of replica of cluster
// ("" leaves a label out).
func haSeries(name, cluster, replica string, ts int64, v float64) prompb.TimeSeries {
	ls := []prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "test"}}
	if cluster != "" {
		ls = append(ls, prompb.Label{Name: "cluster", Value: cluster})
	}
	if replica != "" {
		ls = append(ls, prompb.Label{Name: "__replica__", Value: replica})
	}
	return prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Timestamp: ts, Value: v}}}
}

// newHAEnv is newEnv (queues of 64) with a handler with ha set to ha.
func newHAEnv(t *testing.T, ha HAOptions) *testEnv {
	t.Helper()
	env := newEnv(t, 64, true)
	o := testOptions()
	o.HA = ha
	env.reg = prometheus.NewRegistry()
	env.h = NewHandler(o, env.shards, env.reg, zap.NewNop())
	return env
}

func TestHAHandler(t *testing.T) {
	env := newHAEnv(t, testHA())
	ts := now() - 60_000
	postReplica := func(replica string, ts int64) *httptestResult {
		t.Helper()
		w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			haSeries("g", "c1", replica, ts, float64(ts%7)), haSeries("h", "c1", replica, ts, 1),
		}}), nil)
		return &httptestResult{w.Code, w.Body.String()}
	}
	for i := range 5 {
		for _, r := range []string{"a", "b"} {
			if got := postReplica(r, ts+int64(i)*1000); got.code != http.StatusNoContent {
				t.Fatalf("replica %s: %d %s, want 204", r, got.code, got.body)
			}
		}
	}
	env.shards.Sync()
	// One series per metric, without __replica__, with cluster, 5 samples
	// each: b's 10 samples were neither analysed nor ordering problems.
	stripped := "__name__\xffg\xffcluster\xffc1\xffjob\xfftest\xff"
	got := env.rec.Series()
	if len(got) != 2 || got[stripped] != 5 || got["__name__\xffh\xffcluster\xffc1\xffjob\xfftest\xff"] != 5 {
		t.Fatalf("series analysed: %q; want g and h with cluster and without __replica__, 5 records each", keys(got))
	}
	for _, rec := range env.rec.Of("g") {
		if rec.Series.Hash != series.Hash([]byte(stripped)) {
			t.Fatalf("hash %x is not the hash of the key without the replica label", rec.Series.Hash)
		}
	}
	if got := promreg.Value(env.h.m.haDeduplicated); got != 10 {
		t.Fatalf("deduplicated samples: %g, want 10", got)
	}
	if got := promreg.Value(env.h.m.received[protocolLabel(protoV1)]); got != 10 {
		t.Fatalf("samples received (handed to the shards): %g, want 10", got)
	}
}

type httptestResult struct {
	code int
	body string
}

// A remote write 2.0 answer to a deduplicated request says its samples
// and histograms were written: with 0, Prometheus would take it for a
// failure.
func TestHADeduplicatedRW2Written(t *testing.T) {
	env := newHAEnv(t, testHA())
	rw2 := func(replica string) *writev2.Request {
		st := writev2.NewSymbolTable()
		ls := []uint32{st.Symbolize("__name__"), st.Symbolize("up"), st.Symbolize("cluster"), st.Symbolize("c1"),
			st.Symbolize("__replica__"), st.Symbolize(replica)}
		hs := []uint32{st.Symbolize("__name__"), st.Symbolize("h"), ls[2], ls[3], ls[4], ls[5]}
		return &writev2.Request{Timeseries: []writev2.TimeSeries{
			{LabelsRefs: ls, Samples: []writev2.Sample{{Value: 1, Timestamp: now()}, {Value: 1, Timestamp: now() + 1}}},
			{LabelsRefs: hs, Histograms: []writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 1}, Sum: 1, Timestamp: now()}}},
		}, Symbols: st.Symbols()}
	}
	ct := map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}
	for _, r := range []string{"a", "b"} {
		w := post(env.h, encodeV2(t, rw2(r)), ct)
		samples, hists := w.Header().Get("X-Prometheus-Remote-Write-Samples-Written"), w.Header().Get("X-Prometheus-Remote-Write-Histograms-Written")
		if w.Code != 204 || samples != "2" || hists != "1" {
			t.Fatalf("replica %s: %d, Samples-Written %q, Histograms-Written %q; want 204, 2 and 1", r, w.Code, samples, hists)
		}
	}
	if got := promreg.Value(env.h.m.haDeduplicated); got != 3 {
		t.Fatalf("deduplicated: %g, want 3 (2 samples, 1 histogram)", got)
	}
}

// Requests without both labels are analysed as they are, replica label
// and all, and elect nothing; so is everything with ha off.
func TestHAWithoutLabelsOrConfig(t *testing.T) {
	ts := now()
	reqs := []prompb.TimeSeries{
		haSeries("only_replica", "", "a", ts, 1),
		haSeries("only_cluster", "c1", "", ts, 1),
		haSeries("neither", "", "", ts, 1),
	}
	for _, tc := range []struct {
		name string
		ha   HAOptions
	}{{"ha on", testHA()}, {"ha off", HAOptions{}}} {
		t.Run(tc.name, func(t *testing.T) {
			env := newHAEnv(t, tc.ha)
			for _, s := range reqs {
				if w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}}), nil); w.Code != 204 {
					t.Fatalf("%d %s", w.Code, w.Body)
				}
			}
			env.shards.Sync()
			want := map[string]int{
				"__name__\xffonly_replica\xff__replica__\xffa\xffjob\xfftest\xff": 1,
				"__name__\xffonly_cluster\xffcluster\xffc1\xffjob\xfftest\xff":    1,
				"__name__\xffneither\xffjob\xfftest\xff":                          1,
			}
			got := env.rec.Series()
			for k, n := range want {
				if got[k] != n {
					t.Fatalf("series %q: %d records, want %d (all: %q)", k, got[k], n, keys(got))
				}
			}
			if tr := env.h.ha.Load(); tr != nil && len(tr.clusters) != 0 {
				t.Fatalf("%d clusters elected from requests without both labels", len(tr.clusters))
			}
		})
	}
	// With ha off, the two replicas of a pair are two series each.
	env := newHAEnv(t, HAOptions{})
	for _, r := range []string{"a", "b"} {
		post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{haSeries("g", "c1", r, ts, 1)}}), nil)
	}
	env.shards.Sync()
	if got := env.rec.Series(); len(got) != 2 {
		t.Fatalf("ha off: %d series from two replicas, want 2: %q", len(got), keys(got))
	}
}

func TestHATooManyClustersIs400(t *testing.T) {
	o := testHA()
	o.MaxClusters = 1
	env := newHAEnv(t, o)
	ts := now()
	send := func(cluster string) (int, string) {
		w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{haSeries("g", cluster, "a", ts, 1)}}), nil)
		return w.Code, w.Body.String()
	}
	if code, body := send("c1"); code != 204 {
		t.Fatalf("first cluster: %d %s", code, body)
	}
	code, body := send("c2")
	if code != 400 || !strings.Contains(body, `HA cluster "c2"`) || !strings.Contains(body, "ha.max_clusters") {
		t.Fatalf("second cluster: %d %q; want 400 naming the cluster and ha.max_clusters", code, body)
	}
	if got := promreg.Value(env.h.m.haTooMany); got != 1 {
		t.Fatalf("rejected too_many_ha_clusters: %g, want 1", got)
	}
}

// The replica that takes over continues the same series: its state (here
// the number of outputs) goes on across the failover.
func TestHAHandlerFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := testHA()
		o.FailoverTimeout = 5 * time.Second
		env := newHAEnv(t, o)
		send := func(replica string) int {
			ts := time.Now().UnixMilli()
			w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{haSeries("g", "c1", replica, ts, float64(ts%5))}}), nil)
			return w.Code
		}
		for range 4 { // 0s to 3s: a elected, b deduplicated
			send("a")
			send("b")
			time.Sleep(time.Second)
		}
		for range 5 { // 4s to 8s: a is gone; b is deduplicated up to 5s after a's last request
			send("b")
			time.Sleep(time.Second)
		}
		for range 3 { // 9s to 11s: b is elected; a, back, is deduplicated
			send("b")
			send("a")
			time.Sleep(time.Second)
		}
		env.shards.Sync()
		got := env.rec.Series()
		if k := "__name__\xffg\xffcluster\xffc1\xffjob\xfftest\xff"; len(got) != 1 || got[k] != 7 {
			t.Fatalf("series: %q; want one, with 7 outputs (4 from a, 3 from b)", keys(got))
		}
		if got := promreg.Value(env.h.m.haFailovers); got != 1 {
			t.Fatalf("failovers: %g, want 1", got)
		}
		if got := promreg.Value(env.h.m.haDeduplicated); got != 4+5+3 {
			t.Fatalf("deduplicated: %g, want 12", got)
		}
	})
}

// A reload keeps the elections unless ha.enabled or a label changes.
func TestHASetOptions(t *testing.T) {
	env := newHAEnv(t, testHA())
	ts := now()
	send := func(replica string, ts int64) {
		t.Helper()
		if w := post(env.h, encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{haSeries("g", "c1", replica, ts, 1)}}), nil); w.Code != 204 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	send("a", ts)
	o := testOptions()
	o.HA = testHA()
	o.HA.FailoverTimeout = time.Hour
	env.h.SetOptions(o)
	tr := env.h.ha.Load()
	if tr.timeout.Load() != int64(time.Hour) || tr.clusters["c1"] == nil || tr.clusters["c1"].replica != "a" {
		t.Fatal("a reload of failover_timeout alone forgot the election or kept the old timeout")
	}
	o.HA.ReplicaLabel = "replica"
	env.h.SetOptions(o)
	if tr2 := env.h.ha.Load(); tr2 == tr || len(tr2.clusters) != 0 {
		t.Fatal("a reload of replica_label kept the elections of the old label")
	}
	if got := selfMetrics(t, env.reg, "anomalyd_ingest_ha_elected"); got != "" {
		t.Fatalf("the old tracker's gauges are left:\n%s", got)
	}
	o.HA = HAOptions{}
	env.h.SetOptions(o)
	if env.h.ha.Load() != nil {
		t.Fatal("ha.enabled: false left a tracker")
	}
}

// keys lists a Recorder.Series result readably.
func keys(m map[string]int) []string {
	var out []string
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s: %d", strings.ReplaceAll(k, "\xff", " "), n))
	}
	slices.Sort(out)
	return out
}

// haBenchRequest decodes a request of 2000 series of replica a of c1, as
// BenchmarkIngestHA sends.
func haBenchRequest(b *testing.B) *request {
	b.Helper()
	wr := &prompb.WriteRequest{}
	for _, ls := range withReplica(benchSeries(2000), "a") {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Timestamp: 1, Value: 1}}})
	}
	raw, err := wr.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	r := &request{buf: raw}
	if err := r.decodeV1(); err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkHACheck is the whole per-request cost of ha for a request of
// the elected replica: finding the two labels in the first series and
// the election check. One op is one request.
func BenchmarkHACheck(b *testing.B) {
	tr, _ := newTestTracker(testHA())
	r := haBenchRequest(b)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		c, rep := tr.labels(r, 4096)
		if tr.check(c, rep, now) != haAnalyse {
			b.Fatal("not elected")
		}
	}
}

// BenchmarkAppendKey builds the keys of a request of 2000 series, without
// and with the replica label left out. One op is one request.
func BenchmarkAppendKey(b *testing.B) {
	r := haBenchRequest(b)
	env := newEnv(b, 1, false)
	for i := range r.series {
		env.h.canonicalise(r, &r.series[i], protoV1, &Options{MaxLabelsPerSeries: 64, MaxLabelNameLength: 1024, MaxLabelValueLength: 4096})
	}
	for _, skip := range []string{"", "__replica__"} {
		b.Run("skip="+skip, func(b *testing.B) {
			var key []byte
			b.ReportAllocs()
			for b.Loop() {
				for i := range r.series {
					key = appendKey(key[:0], r, &r.series[i], skip, "")
				}
			}
		})
	}
}
