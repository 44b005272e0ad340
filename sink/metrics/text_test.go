package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

func TestWriteScores(t *testing.T) {
	names := series.Names{Score: "anomaly_score", Expected: "anomaly_expected", Lower: "anomaly_lower", Upper: "anomaly_upper"}
	a := &series.Info{Labels: "__name__\xffhttp_requests_total\xffjob\xffapi\xffmetric\xffm\xffquantile\xff0.5\xff", Name: "http_requests_total"}
	b := &series.Info{Labels: "__name__\xffweird\xffmy.label\xffa\"b\\c\nd\xff", Name: "weird"}
	snaps := [][]series.Record{
		{{Series: a, T: 1, Detector: detectors.KindCombined, Score: 1.5, Expected: 10, Lower: 8, Upper: 12}},
		{{Series: b, T: 1, Detector: detectors.KindEWMA, Warmup: true}},
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := WriteScores(w, &names, snaps); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	want := `# HELP anomaly_score Anomaly score of the input series: 0 as expected, 1 on the band edge, above 1 anomalous.
# TYPE anomaly_score gauge
anomaly_score{detector="combined",exported_metric="m",exported_quantile="0.5",job="api",metric="http_requests_total"} 1.5
anomaly_score{detector="ewma",metric="weird",U__my_2e_label="a\"b\\c\nd"} 0
# HELP anomaly_expected Value the detector expected for the input series.
# TYPE anomaly_expected gauge
anomaly_expected{detector="combined",exported_metric="m",exported_quantile="0.5",job="api",metric="http_requests_total"} 10
# HELP anomaly_lower Lower edge of the expected band.
# TYPE anomaly_lower gauge
anomaly_lower{detector="combined",exported_metric="m",exported_quantile="0.5",job="api",metric="http_requests_total"} 8
# HELP anomaly_upper Upper edge of the expected band.
# TYPE anomaly_upper gauge
anomaly_upper{detector="combined",exported_metric="m",exported_quantile="0.5",job="api",metric="http_requests_total"} 12
`
	if got := buf.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(buf.String(), "anomaly_expected{detector=\"ewma\"") {
		t.Fatal("a warming-up series must only have a score")
	}
}

// TestWriteScoresValue: the value series of a record with HasValue is its
// own family after the driver series, with the labels of its expected
// value; records without it add no family.
func TestWriteScoresValue(t *testing.T) {
	names := series.Names{Score: "s", Expected: "e", Lower: "l", Upper: "u", Driver: "d", Value: "v"}
	c := &series.Info{Labels: "__name__\xffreqs_total\xffjob\xffapi\xff", Name: "reqs_total"}
	g := &series.Info{Labels: "__name__\xfftemp\xffjob\xffapi\xff", Name: "temp"}
	got := writeScores(t, names, [][]series.Record{
		{{Series: g, Detector: detectors.KindCombined, Score: 0.5, Expected: 20, Lower: 19, Upper: 21, Analysed: 20.5}},
		{{Series: c, Detector: detectors.KindCombined, Score: 3, Expected: 4, Lower: 3, Upper: 5, Analysed: 9, HasValue: true,
			Driver: detectors.KindZScore, DriverSet: 1<<detectors.KindEWMA | 1<<detectors.KindZScore}},
	})
	lines := strings.Split(strings.TrimSpace(got), "\n")
	var samples []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "#") && (strings.HasPrefix(l, "d{") || strings.HasPrefix(l, "v{")) {
			samples = append(samples, l)
		}
	}
	want := []string{
		`d{detector="ewma",job="api",metric="reqs_total"} 0`,
		`d{detector="zscore",job="api",metric="reqs_total"} 1`,
		`v{detector="combined",job="api",metric="reqs_total"} 9`,
	}
	if strings.Join(samples, "\n") != strings.Join(want, "\n") {
		t.Fatalf("driver and value lines:\n%s\nwant:\n%s\nwhole output:\n%s", strings.Join(samples, "\n"), strings.Join(want, "\n"), got)
	}
	if !strings.Contains(got, "# TYPE v gauge\n") || strings.Index(got, "# TYPE v") < strings.Index(got, "# TYPE d") {
		t.Errorf("the value family lacks its header or precedes the driver family:\n%s", got)
	}

	got = writeScores(t, names, [][]series.Record{{{Series: g, Detector: detectors.KindCombined, Score: 0.5, Expected: 20, Lower: 19, Upper: 21, Analysed: 20.5}}})
	if strings.Contains(got, "# HELP v") || strings.Contains(got, "# HELP d") {
		t.Errorf("a gauge without driver series wrote their families:\n%s", got)
	}
}

// writeScores returns what WriteScores writes of snaps.
func writeScores(t *testing.T, names series.Names, snaps [][]series.Record) string {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := WriteScores(w, &names, snaps); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	return buf.String()
}

// BenchmarkWriteScores writes 1M series' outputs (4M lines), as a scrape of a
// fully loaded anomalyd does.
func BenchmarkWriteScores(b *testing.B) {
	names := series.Names{Score: "anomaly_score", Expected: "anomaly_expected", Lower: "anomaly_lower", Upper: "anomaly_upper"}
	const n = 1_000_000
	infos := make([]series.Info, n)
	recs := make([]series.Record, n)
	for i := range infos {
		infos[i].Labels = fmt.Sprintf("__name__\xffnode_cpu_seconds_total\xffcpu\xff%d\xffinstance\xffnode-%04d.example.internal:9100\xffjob\xffnode\xffmode\xffuser\xff", i%64, i/64)
		infos[i].Name = "node_cpu_seconds_total"
		recs[i] = series.Record{Series: &infos[i], Detector: detectors.KindCombined, Score: 0.5, Expected: 1234.5, Lower: 1000, Upper: 1500}
	}
	snaps := [][]series.Record{recs}
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteScores(w, &names, snaps); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(4*n), "ns/line")
}

func TestEscapedLabelNamesDoNotCollide(t *testing.T) {
	esc := func(n string) string {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		writeLabelName(w, n)
		w.Flush()
		return b.String()
	}
	f := func(in, want string) {
		t.Helper()
		if got := esc(in); got != want {
			t.Fatalf("escape(%q) = %q, want %q", in, got, want)
		}
	}
	f("job", "job")
	f("my.label", "U__my_2e_label")
	f("my_label", "my_label")
	f("my_.label", "U__my___2e_label")
	f("1abc", "U___31_abc")
	f("ünï", "U___fc_n_ef_")
	if esc("a.b") == esc("a_b") || esc("a.b") == esc("a/b") {
		t.Fatal("distinct names collide")
	}
}
