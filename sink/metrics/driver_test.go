package metrics

import (
	"strings"
	"testing"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/series"
)

func TestWriteScoresDrivers(t *testing.T) {
	a := sinktest.Info("__name__", "api_latency", "job", "api")
	b := sinktest.Info("__name__", "q", "detector", "x") // the input's detector label is exported
	c := sinktest.Info("__name__", "warming")
	snaps := [][]series.Record{
		{
			{Series: a, Detector: detectors.KindCombined, Driver: detectors.KindHoltWinters, DriverSet: sinktest.DrvAll, Score: 2.5, Expected: 10, Lower: 8, Upper: 12},
			{Series: a, Detector: detectors.KindEWMA, Score: 0.5, Expected: 11, Lower: 9, Upper: 13},
		},
		{
			{Series: b, Detector: detectors.KindCombined, Driver: detectors.KindZScore, DriverSet: sinktest.DrvNoHW, Score: 0.25, Expected: 1, Lower: 0, Upper: 2},
			{Series: c, Detector: detectors.KindCombined, Warmup: true, DriverSet: sinktest.DrvAll},
		},
	}
	want := `# HELP anomaly_score Anomaly score of the input series: 0 as expected, 1 on the band edge, above 1 anomalous.
# TYPE anomaly_score gauge
anomaly_score{detector="combined",job="api",metric="api_latency"} 2.5
anomaly_score{detector="ewma",job="api",metric="api_latency"} 0.5
anomaly_score{detector="combined",exported_detector="x",metric="q"} 0.25
anomaly_score{detector="combined",metric="warming"} 0
# HELP anomaly_expected Value the detector expected for the input series.
# TYPE anomaly_expected gauge
anomaly_expected{detector="combined",job="api",metric="api_latency"} 10
anomaly_expected{detector="ewma",job="api",metric="api_latency"} 11
anomaly_expected{detector="combined",exported_detector="x",metric="q"} 1
# HELP anomaly_lower Lower edge of the expected band.
# TYPE anomaly_lower gauge
anomaly_lower{detector="combined",job="api",metric="api_latency"} 8
anomaly_lower{detector="ewma",job="api",metric="api_latency"} 9
anomaly_lower{detector="combined",exported_detector="x",metric="q"} 0
# HELP anomaly_upper Upper edge of the expected band.
# TYPE anomaly_upper gauge
anomaly_upper{detector="combined",job="api",metric="api_latency"} 12
anomaly_upper{detector="ewma",job="api",metric="api_latency"} 13
anomaly_upper{detector="combined",exported_detector="x",metric="q"} 2
# HELP anomaly_driver Detector that drove the combined score (a state set): 1 for it, 0 for the other enabled detectors.
# TYPE anomaly_driver gauge
anomaly_driver{detector="ewma",job="api",metric="api_latency"} 0
anomaly_driver{detector="zscore",job="api",metric="api_latency"} 0
anomaly_driver{detector="holtwinters",job="api",metric="api_latency"} 1
anomaly_driver{detector="slope",job="api",metric="api_latency"} 0
anomaly_driver{detector="ewma",exported_detector="x",metric="q"} 0
anomaly_driver{detector="zscore",exported_detector="x",metric="q"} 1
anomaly_driver{detector="slope",exported_detector="x",metric="q"} 0
`
	if got := writeScores(t, sinktest.Names, snaps); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}

	// A renamed family; and none at all when only warming series would
	// have driver series.
	names := sinktest.Names
	names.Driver = "which_detector"
	if got := writeScores(t, names, snaps); !strings.Contains(got, "\n# TYPE which_detector gauge\nwhich_detector{detector=\"ewma\",job=\"api\",metric=\"api_latency\"} 0\n") {
		t.Errorf("renamed driver family missing:\n%s", got)
	}
	if got := writeScores(t, sinktest.Names, [][]series.Record{snaps[1][1:]}); strings.Contains(got, "anomaly_driver") {
		t.Errorf("a warming series has driver series:\n%s", got)
	}
}
