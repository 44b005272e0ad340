package sink

import (
	"fmt"
	"math"
	"testing"

	"github.com/golang/snappy"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// benchBatch is one full default batch: 500 records × 4 outputs = 2000
// samples over 250 input series (two timestamps each), realistic labels.
func benchBatch() []series.Record {
	infos := make([]*series.Info, 250)
	for i := range infos {
		infos[i] = mkSeries("__name__", "node_network_receive_bytes_total", "job", "node-exporter",
			"instance", fmt.Sprintf("node-%03d.eu-west-1.example.com:9100", i), "device", "eth0", "cluster", "prod-eu")
	}
	batch := make([]series.Record, 0, 500)
	for t := int64(0); t < 2; t++ {
		for i, s := range infos {
			v := float64(i) * 1.5e6
			batch = append(batch, series.Record{Series: s, T: 1_700_000_000_000 + t*15_000, Detector: detectors.KindCombined,
				Score: 0.25 * float64(i%13), Expected: v, Lower: v * 0.9, Upper: v * 1.1})
		}
	}
	return batch
}

func BenchmarkRemoteWriterEncode(b *testing.B) {
	batch := benchBatch()
	for _, proto := range []string{"rw1", "rw2"} {
		b.Run(proto, func(b *testing.B) {
			e := newEncoder(&testNames)
			e.encode(batch, proto == "rw2") // grow the buffers; b.Loop resets the counters
			var size int
			b.ReportAllocs()
			for b.Loop() {
				out, err := e.encode(batch, proto == "rw2")
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
		batch := benchBatch()
		if drivers {
			for i := range batch {
				batch[i].Driver, batch[i].DriverSet = detectors.Kind(i%int(detectors.NumKinds)), drvAll
			}
		}
		for _, rw2 := range []bool{false, true} {
			e := newEncoder(&testNames)
			if _, err := e.encode(batch, rw2); err != nil {
				t.Fatal(err)
			}
			if n := testing.AllocsPerRun(20, func() { e.encode(batch, rw2) }); n != 0 {
				t.Errorf("drivers=%v rw2=%v: %v allocations per encode, want 0", drivers, rw2, n)
			}
		}
	}
}

// TestEncodeRoundTrip decodes both encodings of a mixed batch (samples of
// one series split by other series, a smaller batch after a larger one so
// reused structs must be truncated) and compares them with the records.
func TestEncodeRoundTrip(t *testing.T) {
	a := mkSeries("__name__", "up", "job", "a")
	b := mkSeries("__name__", "up", "job", "b", "AZ", "eu") // sorts before __name__
	big := benchBatch()
	small := []series.Record{
		{Series: a, T: 1, Detector: detectors.KindEWMA, Score: 1, Expected: 2, Lower: 3, Upper: 4},
		{Series: b, T: 1, Detector: detectors.KindEWMA, Warmup: true, Score: 0},
		{Series: a, T: 2, Detector: detectors.KindEWMA, Stale: true},
		{Series: b, T: 2, Detector: detectors.KindEWMA, Score: 5, Expected: 6, Lower: 7, Upper: 8},
	}
	stale := math.Float64frombits(0x7ff0000000000002)
	want := map[string][]sample{
		"__name__=anomaly_score,detector=ewma,job=a,metric=up":          {{1, 1}, {2, stale}},
		"__name__=anomaly_expected,detector=ewma,job=a,metric=up":       {{1, 2}, {2, stale}},
		"__name__=anomaly_lower,detector=ewma,job=a,metric=up":          {{1, 3}, {2, stale}},
		"__name__=anomaly_upper,detector=ewma,job=a,metric=up":          {{1, 4}, {2, stale}},
		"AZ=eu,__name__=anomaly_score,detector=ewma,job=b,metric=up":    {{1, 0}, {2, 5}},
		"AZ=eu,__name__=anomaly_expected,detector=ewma,job=b,metric=up": {{2, 6}},
		"AZ=eu,__name__=anomaly_lower,detector=ewma,job=b,metric=up":    {{2, 7}},
		"AZ=eu,__name__=anomaly_upper,detector=ewma,job=b,metric=up":    {{2, 8}},
	}
	for _, rw2 := range []bool{false, true} {
		e := newEncoder(&testNames)
		e.encode(big, rw2)
		out, err := e.encode(small, rw2)
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
			if !sameSamples(got[k], ws) {
				t.Errorf("rw2=%v: %s: got %v want %v", rw2, k, got[k], ws)
			}
		}
	}
}
