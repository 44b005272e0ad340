package remotewrite

import (
	"math"
	"math/bits"
	"slices"
	"testing"
	"unsafe"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// series.Record stays 64 bytes (doc.go's queue memory bound): the driver fields
// fill padding.
func TestRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(series.Record{}); n != 64 {
		t.Fatalf("series.Record is %d bytes, want 64", n)
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
	f("warm-up with drivers", series.Record{Warmup: true, DriverSet: sinktest.DrvAll}, series.OutScore)
	f("ready with drivers", series.Record{DriverSet: sinktest.DrvAll}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, zs, hw, sl)
	f("ready, holtwinters disabled", series.Record{DriverSet: sinktest.DrvNoHW}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, zs, sl)
	f("stale", series.Record{Stale: true, DriverSet: sinktest.DrvNoHW}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, zs, sl)
	f("stale in warm-up", series.Record{Stale: true, Warmup: true, DriverSet: 1 << detectors.KindZScore}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, zs)
	f("stale, drivers only", series.Record{Stale: true, OnlyExtras: true, DriverSet: 1<<detectors.KindEWMA | 1<<detectors.KindSlope}, ewma, sl)
	v := series.OutValue
	f("ready with value", series.Record{HasValue: true}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, v)
	f("warm-up with value", series.Record{Warmup: true, HasValue: true}, series.OutScore)
	f("stale with value and drivers", series.Record{Stale: true, HasValue: true, DriverSet: 1 << detectors.KindEWMA}, series.OutScore, series.OutExpected, series.OutLower, series.OutUpper, ewma, v)
	f("stale, value only", series.Record{Stale: true, OnlyExtras: true, HasValue: true}, v)
	if r := (series.Record{Detector: detectors.KindCombined, Analysed: 7, HasValue: true}); r.Value(v) != 7 || r.DetectorOf(v) != detectors.KindCombined {
		t.Errorf("value series: %g, detector %s; want Analysed 7 and combined", r.Value(v), r.DetectorOf(v))
	}
	if n := sinktest.Names.Name(v); n != "anomaly_value" {
		t.Errorf("Name(series.OutValue) = %q, want anomaly_value", n)
	}

	r := series.Record{Detector: detectors.KindCombined, Driver: detectors.KindZScore, DriverSet: sinktest.DrvAll}
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
	if n := sinktest.Names.Name(series.OutDriver + 2); n != "anomaly_driver" {
		t.Errorf("Name(series.OutDriver+2) = %q, want anomaly_driver", n)
	}
}

// decodeRW decodes an RW1 or RW2 request into series → samples.
func decodeRW(t *testing.T, body []byte, rw2 bool) sinktest.Oracle {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	got := sinktest.Oracle{}
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
			want := writev2.Metadata_METRIC_TYPE_GAUGE // every output series but the incidents counter
			for _, l := range ls {
				if l.Name == "__name__" && l.Value == incident.OpenedName {
					want = writev2.Metadata_METRIC_TYPE_COUNTER
				}
			}
			if ts.Metadata.Type != want {
				t.Errorf("%s: metadata type %v, want %v", sinktest.LabelKey(ls), ts.Metadata.Type, want)
			}
			for _, s := range ts.Samples {
				got[sinktest.LabelKey(ls)] = append(got[sinktest.LabelKey(ls)], sinktest.Sample{T: s.Timestamp, V: s.Value})
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
			got[sinktest.LabelKey(ts.Labels)] = append(got[sinktest.LabelKey(ts.Labels)], sinktest.Sample{T: s.Timestamp, V: s.Value})
		}
	}
	return got
}

// TestEncodeDrivers: driver series in both encodings, their labels built
// or patched from a sibling (a band output, or another driver series),
// stale markers for every series of a stale record and for the driver
// series alone of an OnlyExtras one.
func TestEncodeDrivers(t *testing.T) {
	a := sinktest.Info("__name__", "up", "job", "a")
	b := sinktest.Info("__name__", "up", "job", "b")
	c := sinktest.Info("__name__", "up", "job", "c")
	d := sinktest.Info("__name__", "up", "detector", "x")
	batch := []series.Record{
		sinktest.DriverRecord(a, 1, detectors.KindHoltWinters, sinktest.DrvAll),
		{Series: b, T: 1, Detector: detectors.KindCombined, Stale: true, OnlyExtras: true, DriverSet: 1<<detectors.KindEWMA | 1<<detectors.KindSlope},
		{Series: c, T: 1, Detector: detectors.KindCombined, Warmup: true, DriverSet: sinktest.DrvAll},
		sinktest.DriverRecord(d, 1, detectors.KindEWMA, 1<<detectors.KindEWMA|1<<detectors.KindZScore),
		{Series: a, T: 2, Detector: detectors.KindCombined, Stale: true, DriverSet: sinktest.DrvAll},
	}
	stale := math.Float64frombits(0x7ff0000000000002)
	want := sinktest.Oracle{
		"__name__=anomaly_score,detector=combined,job=a,metric=up":                  {{T: 1, V: 0.001}, {T: 2, V: stale}},
		"__name__=anomaly_expected,detector=combined,job=a,metric=up":               {{T: 1, V: 1}, {T: 2, V: stale}},
		"__name__=anomaly_lower,detector=combined,job=a,metric=up":                  {{T: 1, V: 0}, {T: 2, V: stale}},
		"__name__=anomaly_upper,detector=combined,job=a,metric=up":                  {{T: 1, V: 2}, {T: 2, V: stale}},
		"__name__=anomaly_driver,detector=ewma,job=a,metric=up":                     {{T: 1, V: 0}, {T: 2, V: stale}},
		"__name__=anomaly_driver,detector=zscore,job=a,metric=up":                   {{T: 1, V: 0}, {T: 2, V: stale}},
		"__name__=anomaly_driver,detector=holtwinters,job=a,metric=up":              {{T: 1, V: 1}, {T: 2, V: stale}},
		"__name__=anomaly_driver,detector=slope,job=a,metric=up":                    {{T: 1, V: 0}, {T: 2, V: stale}},
		"__name__=anomaly_driver,detector=ewma,job=b,metric=up":                     {{T: 1, V: stale}},
		"__name__=anomaly_driver,detector=slope,job=b,metric=up":                    {{T: 1, V: stale}},
		"__name__=anomaly_score,detector=combined,job=c,metric=up":                  {{T: 1, V: 0}},
		"__name__=anomaly_score,detector=combined,exported_detector=x,metric=up":    {{T: 1, V: 0.001}},
		"__name__=anomaly_expected,detector=combined,exported_detector=x,metric=up": {{T: 1, V: 1}},
		"__name__=anomaly_lower,detector=combined,exported_detector=x,metric=up":    {{T: 1, V: 0}},
		"__name__=anomaly_upper,detector=combined,exported_detector=x,metric=up":    {{T: 1, V: 2}},
		"__name__=anomaly_driver,detector=ewma,exported_detector=x,metric=up":       {{T: 1, V: 1}},
		"__name__=anomaly_driver,detector=zscore,exported_detector=x,metric=up":     {{T: 1, V: 0}},
	}
	for _, rw2 := range []bool{false, true} {
		e := newEncoder(&sinktest.Names)
		e.encode(sinktest.BenchBatch(), nil, rw2) // reused structs must be reset
		out, err := e.encode(batch, nil, rw2)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeRW(t, out, rw2)
		sinktest.CompareOracles(t, got, want)
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

func sampleCount(o sinktest.Oracle) int {
	n := 0
	for _, ss := range o {
		n += len(ss)
	}
	return n
}
