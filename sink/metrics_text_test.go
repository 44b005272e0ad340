package sink

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/anomalyd/anomalyd/detectors"
)

func TestWriteScores(t *testing.T) {
	names := Names{Score: "anomaly_score", Expected: "anomaly_expected", Lower: "anomaly_lower", Upper: "anomaly_upper"}
	a := &SeriesInfo{Labels: "__name__\xffhttp_requests_total\xffjob\xffapi\xffmetric\xffm\xffquantile\xff0.5\xff", Name: "http_requests_total"}
	b := &SeriesInfo{Labels: "__name__\xffweird\xffmy.label\xffa\"b\\c\nd\xff", Name: "weird"}
	snaps := [][]Record{
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
anomaly_score{detector="ewma",metric="weird",my_label="a\"b\\c\nd"} 0
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
