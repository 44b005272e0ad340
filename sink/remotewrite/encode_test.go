package remotewrite

import (
	"math"
	"testing"

	"github.com/golang/snappy"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/series"
)

func BenchmarkRemoteWriterEncode(b *testing.B) {
	batch := sinktest.BenchBatch()
	for _, proto := range []string{"rw1", "rw2"} {
		b.Run(proto, func(b *testing.B) {
			e := newEncoder(&sinktest.Names)
			e.encode(batch, nil, proto == "rw2") // grow the buffers; b.Loop resets the counters
			var size int
			b.ReportAllocs()
			for b.Loop() {
				out, err := e.encode(batch, nil, proto == "rw2")
				if err != nil {
					b.Fatal(err)
				}
				size = len(out)
			}
			b.ReportMetric(float64(size), "snappy_bytes/op")
			b.ReportMetric(float64(len(e.raw)), "proto_bytes/op")
		})
	}
}

// TestEncodeNoAllocs: once its buffers have grown, encoding a batch
// allocates nothing (labels alias series.Info.Labels, structs are reused),
// with or without per-detector driver series.
func TestEncodeNoAllocs(t *testing.T) {
	for _, drivers := range []bool{false, true} {
		batch := sinktest.BenchBatch()
		if drivers {
			for i := range batch {
				batch[i].Driver, batch[i].DriverSet = detectors.Kind(i%int(detectors.NumKinds)), sinktest.DrvAll
			}
		}
		for _, rw2 := range []bool{false, true} {
			e := newEncoder(&sinktest.Names)
			if _, err := e.encode(batch, nil, rw2); err != nil {
				t.Fatal(err)
			}
			if n := testing.AllocsPerRun(20, func() { e.encode(batch, nil, rw2) }); n != 0 {
				t.Errorf("drivers=%v rw2=%v: %v allocations per encode, want 0", drivers, rw2, n)
			}
		}
	}
}

// TestEncodeRoundTrip decodes both encodings of a mixed batch (samples of
// one series split by other series, a smaller batch after a larger one so
// reused structs must be truncated) and compares them with the records.
func TestEncodeRoundTrip(t *testing.T) {
	a := sinktest.Info("__name__", "up", "job", "a")
	b := sinktest.Info("__name__", "up", "job", "b", "AZ", "eu") // sorts before __name__
	big := sinktest.BenchBatch()
	small := []series.Record{
		{Series: a, T: 1, Detector: detectors.KindEWMA, Score: 1, Expected: 2, Lower: 3, Upper: 4},
		{Series: b, T: 1, Detector: detectors.KindEWMA, Warmup: true, Score: 0},
		{Series: a, T: 2, Detector: detectors.KindEWMA, Stale: true},
		{Series: b, T: 2, Detector: detectors.KindEWMA, Score: 5, Expected: 6, Lower: 7, Upper: 8},
	}
	stale := math.Float64frombits(0x7ff0000000000002)
	want := map[string][]sinktest.Sample{
		"__name__=anomaly_score,detector=ewma,job=a,metric=up":          {{T: 1, V: 1}, {T: 2, V: stale}},
		"__name__=anomaly_expected,detector=ewma,job=a,metric=up":       {{T: 1, V: 2}, {T: 2, V: stale}},
		"__name__=anomaly_lower,detector=ewma,job=a,metric=up":          {{T: 1, V: 3}, {T: 2, V: stale}},
		"__name__=anomaly_upper,detector=ewma,job=a,metric=up":          {{T: 1, V: 4}, {T: 2, V: stale}},
		"AZ=eu,__name__=anomaly_score,detector=ewma,job=b,metric=up":    {{T: 1, V: 0}, {T: 2, V: 5}},
		"AZ=eu,__name__=anomaly_expected,detector=ewma,job=b,metric=up": {{T: 2, V: 6}},
		"AZ=eu,__name__=anomaly_lower,detector=ewma,job=b,metric=up":    {{T: 2, V: 7}},
		"AZ=eu,__name__=anomaly_upper,detector=ewma,job=b,metric=up":    {{T: 2, V: 8}},
	}
	for _, rw2 := range []bool{false, true} {
		e := newEncoder(&sinktest.Names)
		e.encode(big, nil, rw2)
		out, err := e.encode(small, nil, rw2)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeRW(t, out, rw2)
		if rw2 {
			raw, err := snappy.Decode(nil, out)
			if err != nil {
				t.Fatal(err)
			}
			var req writev2.Request
			if err := req.Unmarshal(raw); err != nil {
				t.Fatal(err)
			}
			if len(req.Symbols) > 20 {
				t.Errorf("symbols of the previous batch leaked: %d symbols", len(req.Symbols))
			}
		}
		if len(got) != len(want) {
			t.Errorf("rw2=%v: %d infos, want %d: %v", rw2, len(got), len(want), got)
		}
		for k, ws := range want {
			if !sinktest.SameSamples(got[k], ws) {
				t.Errorf("rw2=%v: %s: got %v want %v", rw2, k, got[k], ws)
			}
		}
	}
}
