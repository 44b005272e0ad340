package sink

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Driver sets: bit 1<<k per detector k.
const (
	drvAll  uint8 = 1<<detectors.KindEntropy - 1 // the four detectors enabled by default
	drvNoHW       = drvAll &^ (1 << detectors.KindHoltWinters)
)

// driverRecord is a ready combined record of s at t driven by drv, with
// the driver series in set; its values derive from t.
func driverRecord(s *series.Info, t int64, drv detectors.Kind, set uint8) series.Record {
	v := float64(t)
	return series.Record{Series: s, T: t, Detector: detectors.KindCombined, Driver: drv, DriverSet: set,
		Score: v / 1000, Expected: v, Lower: v - 1, Upper: v + 1}
}

// series.Record stays 56 bytes (doc.go's queue memory bound): the driver fields
// fill padding.
func TestRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(series.Record{}); n != 56 {
		t.Fatalf("series.Record is %d bytes, want 56", n)
	}
}

func TestRecordSlots(t *testing.T) {
	f := func(name string, r series.Record, want ...int) {
		t.Helper()
		var got []int
		for m := r.Slots(); m != 0; m &= m - 1 {
			got = append(got, bits.TrailingZeros16(m))
		}
		if !slices.Equal(got, want) || samplesOf(&r) != int64(len(want)) {
			t.Errorf("%s: outputs %v (%d samples), want %v", name, got, samplesOf(&r), want)
		}
	}
	d := series.OutDriver
	ewma, zs, hw, sl := d+int(detectors.KindEWMA), d+int(detectors.KindZScore), d+int(detectors.KindHoltWinters), d+int(detectors.KindSlope)
	f("ready", series.Record{}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper)
	f("warm-up", series.Record{Warmup: true}, series.OutScore)
	f("warm-up with drivers", series.Record{Warmup: true, DriverSet: drvAll}, series.OutScore)
	f("ready with drivers", series.Record{DriverSet: drvAll}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, zs, hw, sl)
	f("ready, holtwinters disabled", series.Record{DriverSet: drvNoHW}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, zs, sl)
	f("stale", series.Record{Stale: true, DriverSet: drvNoHW}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, zs, sl)
	f("stale in warm-up", series.Record{Stale: true, Warmup: true, DriverSet: 1 << detectors.KindZScore}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, zs)
	f("stale, drivers only", series.Record{Stale: true, OnlyDrivers: true, DriverSet: 1<<detectors.KindEWMA | 1<<detectors.KindSlope}, ewma, sl)

	r := series.Record{Detector: detectors.KindCombined, Driver: detectors.KindZScore, DriverSet: drvAll}
	for k := range detectors.NumKinds {
		want := 0.0
		if k == detectors.KindZScore {
			want = 1
		}
		if v := r.Value(series.OutDriver + int(k)); v != want {
			t.Errorf("driver series %s = %g, want %g", k, v, want)
		}
		if det := r.DetectorOf(series.OutDriver + int(k)); det != k {
			t.Errorf("driver series %s has detector %s", k, det)
		}
	}
	if n := testNames.Name(series.OutDriver + 2); n != "anomaly_driver" {
		t.Errorf("Name(series.OutDriver+2) = %q, want anomaly_driver", n)
	}
}

func TestWriteScoresDrivers(t *testing.T) {
	a := mkSeries("__name__", "api_latency", "job", "api")
	b := mkSeries("__name__", "q", "detector", "x") // the input's detector label is exported
	c := mkSeries("__name__", "warming")
	snaps := [][]series.Record{
		{
			{Series: a, Detector: detectors.KindCombined, Driver: detectors.KindHoltWinters, DriverSet: drvAll, Score: 2.5, Expected: 10, Lower: 8, Upper: 12},
			{Series: a, Detector: detectors.KindEWMA, Score: 0.5, Expected: 11, Lower: 9, Upper: 13},
		},
		{
			{Series: b, Detector: detectors.KindCombined, Driver: detectors.KindZScore, DriverSet: drvNoHW, Score: 0.25, Expected: 1, Lower: 0, Upper: 2},
			{Series: c, Detector: detectors.KindCombined, Warmup: true, DriverSet: drvAll},
		},
	}
	write := func(names series.Names, snaps [][]series.Record) string {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		if err := WriteScores(w, &names, snaps); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		return buf.String()
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
	if got := write(testNames, snaps); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}

	// A renamed family; and none at all when only warming series would
	// have driver series.
	names := testNames
	names.Driver = "which_detector"
	if got := write(names, snaps); !strings.Contains(got, "\n# TYPE which_detector gauge\nwhich_detector{detector=\"ewma\",job=\"api\",metric=\"api_latency\"} 0\n") {
		t.Errorf("renamed driver family missing:\n%s", got)
	}
	if got := write(testNames, [][]series.Record{snaps[1][1:]}); strings.Contains(got, "anomaly_driver") {
		t.Errorf("a warming series has driver series:\n%s", got)
	}
}

// decodeRW decodes an RW1 or RW2 request into series → samples.
func decodeRW(t *testing.T, body []byte, rw2 bool) histOracle {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	got := histOracle{}
	if rw2 {
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			t.Fatal(err)
		}
		for _, ts := range req.Timeseries {
			var ls []prompb.Label
			for i := 0; i < len(ts.LabelsRefs); i += 2 {
				ls = append(ls, prompb.Label{Name: req.Symbols[ts.LabelsRefs[i]], Value: req.Symbols[ts.LabelsRefs[i+1]]})
			}
			if ts.Metadata.Type != writev2.Metadata_METRIC_TYPE_GAUGE {
				t.Errorf("%s: metadata type %v, want gauge", labelKey(ls), ts.Metadata.Type)
			}
			for _, s := range ts.Samples {
				got[labelKey(ls)] = append(got[labelKey(ls)], sample{s.Timestamp, s.Value})
			}
		}
		return got
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	for _, ts := range req.Timeseries {
		for _, s := range ts.Samples {
			got[labelKey(ts.Labels)] = append(got[labelKey(ts.Labels)], sample{s.Timestamp, s.Value})
		}
	}
	return got
}

// TestEncodeDrivers: driver series in both encodings, their labels built
// or patched from a sibling (a band output, or another driver series),
// stale markers for every series of a stale record and for the driver
// series alone of an OnlyDrivers one.
func TestEncodeDrivers(t *testing.T) {
	a := mkSeries("__name__", "up", "job", "a")
	b := mkSeries("__name__", "up", "job", "b")
	c := mkSeries("__name__", "up", "job", "c")
	d := mkSeries("__name__", "up", "detector", "x")
	batch := []series.Record{
		driverRecord(a, 1, detectors.KindHoltWinters, drvAll),
		{Series: b, T: 1, Detector: detectors.KindCombined, Stale: true, OnlyDrivers: true, DriverSet: 1<<detectors.KindEWMA | 1<<detectors.KindSlope},
		{Series: c, T: 1, Detector: detectors.KindCombined, Warmup: true, DriverSet: drvAll},
		driverRecord(d, 1, detectors.KindEWMA, 1<<detectors.KindEWMA|1<<detectors.KindZScore),
		{Series: a, T: 2, Detector: detectors.KindCombined, Stale: true, DriverSet: drvAll},
	}
	stale := math.Float64frombits(0x7ff0000000000002)
	want := histOracle{
		"__name__=anomaly_score,detector=combined,job=a,metric=up":                  {{1, 0.001}, {2, stale}},
		"__name__=anomaly_expected,detector=combined,job=a,metric=up":               {{1, 1}, {2, stale}},
		"__name__=anomaly_lower,detector=combined,job=a,metric=up":                  {{1, 0}, {2, stale}},
		"__name__=anomaly_upper,detector=combined,job=a,metric=up":                  {{1, 2}, {2, stale}},
		"__name__=anomaly_driver,detector=ewma,job=a,metric=up":                     {{1, 0}, {2, stale}},
		"__name__=anomaly_driver,detector=zscore,job=a,metric=up":                   {{1, 0}, {2, stale}},
		"__name__=anomaly_driver,detector=holtwinters,job=a,metric=up":              {{1, 1}, {2, stale}},
		"__name__=anomaly_driver,detector=slope,job=a,metric=up":                    {{1, 0}, {2, stale}},
		"__name__=anomaly_driver,detector=ewma,job=b,metric=up":                     {{1, stale}},
		"__name__=anomaly_driver,detector=slope,job=b,metric=up":                    {{1, stale}},
		"__name__=anomaly_score,detector=combined,job=c,metric=up":                  {{1, 0}},
		"__name__=anomaly_score,detector=combined,exported_detector=x,metric=up":    {{1, 0.001}},
		"__name__=anomaly_expected,detector=combined,exported_detector=x,metric=up": {{1, 1}},
		"__name__=anomaly_lower,detector=combined,exported_detector=x,metric=up":    {{1, 0}},
		"__name__=anomaly_upper,detector=combined,exported_detector=x,metric=up":    {{1, 2}},
		"__name__=anomaly_driver,detector=ewma,exported_detector=x,metric=up":       {{1, 1}},
		"__name__=anomaly_driver,detector=zscore,exported_detector=x,metric=up":     {{1, 0}},
	}
	for _, rw2 := range []bool{false, true} {
		e := newEncoder(&testNames)
		e.encode(benchBatch(), rw2) // reused structs must be reset
		out, err := e.encode(batch, rw2)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeRW(t, out, rw2)
		compareOracle(t, got, want)
		// Also what the history and the queue count.
		var n int64
		for i := range batch {
			n += samplesOf(&batch[i])
		}
		if total := sampleCount(got); int64(total) != n {
			t.Errorf("rw2=%v: %d samples encoded, samplesOf says %d", rw2, total, n)
		}
	}
}

func sampleCount(o histOracle) int {
	n := 0
	for _, ss := range o {
		n += len(ss)
	}
	return n
}

// driverRun is the records of two input series over 30 steps: a with every
// detector (5 of warm-up, a driver that moves, then stale), b without
// Holt-Winters, whose zscore driver series a reload ends at step 20.
func driverRun(a, b *series.Info) [][]series.Record {
	var steps [][]series.Record
	for i := range 30 {
		ts := int64(1_700_000_000_000 + i*testStep)
		drv := detectors.KindHoltWinters
		if i%3 == 1 {
			drv = detectors.KindEWMA
		}
		ra := driverRecord(a, ts, drv, drvAll)
		switch {
		case i < 5:
			ra = series.Record{Series: a, T: ts, Detector: detectors.KindCombined, Warmup: true, DriverSet: drvAll}
		case i == 29:
			ra = series.Record{Series: a, T: ts, Detector: detectors.KindCombined, Stale: true, DriverSet: drvAll}
		}
		recs := []series.Record{ra}
		if i == 20 {
			recs = append(recs, series.Record{Series: b, T: ts, Detector: detectors.KindCombined, Stale: true, OnlyDrivers: true, DriverSet: 1 << detectors.KindZScore})
		} else {
			set := drvNoHW
			if i > 20 {
				set &^= 1 << detectors.KindZScore
			}
			drv := detectors.KindEWMA
			if i%2 == 1 {
				drv = detectors.KindSlope
			}
			recs = append(recs, driverRecord(b, ts, drv, set))
		}
		steps = append(steps, recs)
	}
	return steps
}

// TestHistoryDrivers: the history keeps driver series like the others:
// queried by name and detector, stale markers where they end, none for a
// disabled detector or during warm-up, dropped after the retention.
func TestHistoryDrivers(t *testing.T) {
	h, reg := newTestHistory(time.Hour)
	a := mkSeries("__name__", "cpu", "job", "a")
	b := mkSeries("__name__", "cpu", "job", "b")
	oracle := histOracle{}
	for _, recs := range driverRun(a, b) {
		h.Append(recs)
		oracle.add(testNames, recs...)
	}
	got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64)
	compareOracle(t, got, oracle)
	if n := len(got); n != 4+4+4+3 {
		t.Errorf("%d infos, want 15: 4 outputs and 4 driver series of a, 4 outputs and 3 driver series of b", n)
	}
	base := int64(1_700_000_000_000)
	hwA := got["__name__=anomaly_driver,detector=holtwinters,job=a,metric=cpu"]
	if len(hwA) != 25 || hwA[0].T != base+5*testStep || hwA[0].V != 1 || hwA[2].V != 0 ||
		math.Float64bits(hwA[24].V) != math.Float64bits(staleNaN) {
		t.Errorf("a's holtwinters driver series: %v; want 1 from the end of warm-up, 0 when EWMA drives, then a stale marker", hwA)
	}
	if _, ok := got["__name__=anomaly_driver,detector=holtwinters,job=b,metric=cpu"]; ok {
		t.Error("b has a holtwinters driver series; its rule disables Holt-Winters")
	}
	zsB := got["__name__=anomaly_driver,detector=zscore,job=b,metric=cpu"]
	if len(zsB) != 21 || zsB[20].T != base+20*testStep || math.Float64bits(zsB[20].V) != math.Float64bits(staleNaN) {
		t.Errorf("b's zscore driver series: %v; want 20 samples then a stale marker at step 20", zsB)
	}
	if sc := got["__name__=anomaly_score,detector=combined,job=b,metric=cpu"]; len(sc) != 29 {
		t.Errorf("b's score has %d samples, want 29: an OnlyDrivers record leaves it alone", len(sc))
	}

	// Matchers on the name and on detector select driver series.
	for _, tc := range []struct {
		ms   []*labels.Matcher
		want int
	}{
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "anomaly_driver")}, 7},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "detector", "slope")}, 2},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "anomaly_driver"), labels.MustNewMatcher(labels.MatchEqual, "job", "a")}, 4},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "detector", "combined")}, 8},
	} {
		got, _ := queryAll(t, h, math.MinInt64, math.MaxInt64, tc.ms...)
		compareOracle(t, got, oracle.match(tc.ms...))
		if len(got) != tc.want {
			t.Errorf("%v: %d infos, want %d", tc.ms, len(got), tc.want)
		}
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 15 {
		t.Errorf("anomalyd_history_series = %g, want 15", v)
	}

	// After the retention, with every partition swept, only c is left.
	c := mkSeries("__name__", "c")
	for i := range 2 * historyPartitions {
		h.Append([]series.Record{driverRecord(c, base+time.Hour.Milliseconds()+int64(i+30)*testStep, detectors.KindEWMA, 1<<detectors.KindEWMA)})
	}
	got, _ = queryAll(t, h, math.MinInt64, math.MaxInt64)
	if len(got) != 5 {
		t.Errorf("%d series after the retention, want the 5 of c: %v", len(got), keys(got))
	}
	if v := metricValue(t, reg, "anomalyd_history_series"); v != 5 {
		t.Errorf("anomalyd_history_series = %g, want 5", v)
	}
}

// TestDriverSeriesAgree: /metrics, remote write and remote read show the
// same driver series, with the same labels and values, as they do the
// other outputs.
func TestDriverSeriesAgree(t *testing.T) {
	a := mkSeries("__name__", "cpu", "job", "a", "metric", "clash")
	b := mkSeries("__name__", "cpu", "job", "b")
	steps := driverRun(a, b)
	steps = steps[:len(steps)-1] // a stays live, for /metrics

	// Remote write: every step's batch, RW1 and RW2.
	written := [2]histOracle{{}, {}}
	for i, rw2 := range []bool{false, true} {
		e := newEncoder(&testNames)
		for _, recs := range steps {
			out, err := e.encode(recs, rw2)
			if err != nil {
				t.Fatal(err)
			}
			for k, ss := range decodeRW(t, out, rw2) {
				written[i][k] = append(written[i][k], ss...)
			}
		}
	}
	compareOracle(t, written[1], written[0])

	// Remote read of the history, both response types.
	h, _ := newTestHistory(time.Hour)
	for _, recs := range steps {
		h.Append(recs)
	}
	handler, _ := newTestReadHandler(h, nil)
	q := pbQuery(math.MinInt64, math.MaxInt64, pbMatcher(prompb.LabelMatcher_RE, "__name__", "anomaly_.+"))
	rec := postRead(handler, encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: samplesOnly}), nil)
	compareOracle(t, resultOracle(t, decodeSamplesResponse(t, rec).Results[0]), written[0])
	rec = postRead(handler, encodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: streamedPref}), nil)
	compareOracle(t, streamedOracles(t, readFrames(t, rec.Body.Bytes()), []*prompb.Query{q})[0], written[0])

	// /metrics: the last step's records as a snapshot; each line is the last
	// sample of a written series that is not stale at that step.
	last := steps[len(steps)-1]
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := WriteScores(w, &testNames, [][]series.Record{last}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	scraped := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v := parseTextLine(t, line)
		scraped[k] = v
	}
	lastT := last[0].T
	live := map[string]float64{}
	for k, ss := range written[0] {
		if s := ss[len(ss)-1]; s.T == lastT && math.Float64bits(s.V) != math.Float64bits(staleNaN) {
			live[k] = s.V
		}
	}
	if fmt.Sprint(scraped) != fmt.Sprint(live) {
		t.Errorf("/metrics:\n%v\nremote write at the last step:\n%v", scraped, live)
	}
	if n := len(live); n != 4+4+4+2 {
		t.Errorf("%d live infos, want 14 (a: 4 + 4 drivers, b: 4 + ewma and slope drivers)", n)
	}
}

// parseTextLine turns `name{l="v",…} value` (no escapes) into a labelKey
// with __name__ and the value.
func parseTextLine(t *testing.T, line string) (string, float64) {
	t.Helper()
	name, rest, ok := strings.Cut(line, "{")
	lbls, val, ok2 := strings.Cut(rest, "} ")
	if !ok || !ok2 {
		t.Fatalf("bad line %q", line)
	}
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for _, kv := range strings.Split(lbls, ",") {
		n, v, _ := strings.Cut(kv, "=")
		ls = append(ls, prompb.Label{Name: n, Value: strings.Trim(v, `"`)})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	f, err := strconv.ParseFloat(val, 64)
	if err != nil {
		t.Fatalf("bad value in %q: %v", line, err)
	}
	return labelKey(ls), f
}
