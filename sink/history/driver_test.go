package history

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/series"
)

// TestHistoryDrivers: the history keeps driver and value series like the others:
// queried by name and detector, stale markers where they end, none for a
// disabled detector or during warm-up, dropped after the retention.
func TestHistoryDrivers(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	a := sinktest.Info("__name__", "cpu", "job", "a")
	b := sinktest.Info("__name__", "cpu", "job", "b")
	oracle := sinktest.Oracle{}
	for _, recs := range sinktest.DriverRun(a, b) {
		h.Append(recs)
		oracle.Add(sinktest.Names, recs...)
	}
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	sinktest.CompareOracles(t, got, oracle)
	if n := len(got); n != 4+4+1+4+3 {
		t.Errorf("%d infos, want 16: 4 outputs, 4 driver series and the value series of a, 4 outputs and 3 driver series of b", n)
	}
	base := int64(1_700_000_000_000)
	hwA := got["__name__=anomaly_driver,detector=holtwinters,job=a,metric=cpu"]
	if len(hwA) != 25 || hwA[0].T != base+5*sinktest.Step || hwA[0].V != 1 || hwA[2].V != 0 ||
		math.Float64bits(hwA[24].V) != math.Float64bits(staleNaN) {
		t.Errorf("a's holtwinters driver series: %v; want 1 from the end of warm-up, 0 when EWMA drives, then a stale marker", hwA)
	}
	if _, ok := got["__name__=anomaly_driver,detector=holtwinters,job=b,metric=cpu"]; ok {
		t.Error("b has a holtwinters driver series; its rule disables Holt-Winters")
	}
	zsB := got["__name__=anomaly_driver,detector=zscore,job=b,metric=cpu"]
	if len(zsB) != 21 || zsB[20].T != base+20*sinktest.Step || math.Float64bits(zsB[20].V) != math.Float64bits(staleNaN) {
		t.Errorf("b's zscore driver series: %v; want 20 samples then a stale marker at step 20", zsB)
	}
	valA := got["__name__=anomaly_value,detector=combined,job=a,metric=cpu"]
	if len(valA) != 25 || valA[0].V != float64(base+5*sinktest.Step)/2 || math.Float64bits(valA[24].V) != math.Float64bits(staleNaN) {
		t.Errorf("a's value series: %v; want the analysed value from the end of warm-up, then a stale marker", valA)
	}
	if sc := got["__name__=anomaly_score,detector=combined,job=b,metric=cpu"]; len(sc) != 29 {
		t.Errorf("b's score has %d samples, want 29: an OnlyExtras record leaves it alone", len(sc))
	}

	// Matchers on the name and on detector select driver series.
	for _, tc := range []struct {
		ms   []*labels.Matcher
		want int
	}{
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "anomaly_driver")}, 7},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "detector", "slope")}, 2},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "anomaly_driver"), labels.MustNewMatcher(labels.MatchEqual, "job", "a")}, 4},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "detector", "combined")}, 9},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "anomaly_value")}, 1},
	} {
		got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64, tc.ms...)
		sinktest.CompareOracles(t, got, matchOracle(oracle, tc.ms...))
		if len(got) != tc.want {
			t.Errorf("%v: %d infos, want %d", tc.ms, len(got), tc.want)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 16 {
		t.Errorf("anomalyd_history_series = %g, want 16", v)
	}

	// After the retention, with every partition swept, only c is left.
	c := sinktest.Info("__name__", "c")
	for i := range 2 * historyPartitions {
		h.Append([]series.Record{sinktest.DriverRecord(c, base+time.Hour.Milliseconds()+int64(i+30)*sinktest.Step, detectors.KindEWMA, 1<<detectors.KindEWMA)})
	}
	got, _ = queryAll(t, h, math.MinInt64, math.MaxInt64)
	if len(got) != 5 {
		t.Errorf("%d series after the retention, want the 5 of c: %v", len(got), keys(got))
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 5 {
		t.Errorf("anomalyd_history_series = %g, want 5", v)
	}
}
