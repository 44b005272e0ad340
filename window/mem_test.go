package window

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window/series"
)

// BenchmarkSeriesMemory reports the live heap per tracked series with the
// default detectors (labels of ~150 bytes), measured after a GC.
func BenchmarkSeriesMemory(b *testing.B) {
	const n = 100_000
	// The timer runs: b.Loop ends once a second of work has been timed,
	// after the first round here (with it stopped it never would).
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		opts := Options{Shards: 2, QueueSize: 64, MaxSeries: 2 * n, SeriesTTL: time.Hour, PublishInterval: time.Hour}
		s := New(opts, CompileRules(config.Default()), discard{}, prometheus.NewRegistry())
		s.Start()
		for start := 0; start < n; start += 1000 {
			batches := make([]*Batch, s.N())
			for i := start; i < start+1000; i++ {
				k := key("__name__", fmt.Sprintf("http_request_duration_seconds_gauge_%d", i%40), "code", "200",
					"handler", fmt.Sprintf("/api/v1/items/%d", i%97), "instance", fmt.Sprintf("api-%04d.example.internal:8080", i/400),
					"job", "api", "method", "GET", "series", fmt.Sprint(i))
				h := xxhash.Sum64(k)
				sh := int(h % uint64(s.N()))
				if batches[sh] == nil {
					batches[sh] = s.GetBatch()
				}
				bt := batches[sh]
				ks := uint32(len(bt.Keys))
				bt.Keys = append(bt.Keys, k...)
				ss := uint32(len(bt.Samples))
				for r := range 3 {
					bt.Samples = append(bt.Samples, Sample{T: t0 + int64(r)*15_000, V: float64(i + r)})
				}
				bt.Series = append(bt.Series, BatchSeries{Hash: h, KeyStart: ks, KeyEnd: uint32(len(bt.Keys)),
					NameStart: ks + 9, NameEnd: ks + 9 + uint32(len(fmt.Sprintf("http_request_duration_seconds_gauge_%d", i%40))),
					SamplesStart: ss, SamplesEnd: uint32(len(bt.Samples))})
			}
			for i, bt := range batches {
				if bt != nil {
					for s.Enqueue(i, bt) != nil {
						time.Sleep(time.Millisecond)
					}
				}
			}
		}
		s.Sync()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/n, "heap-bytes/series")
		s.Stop(b.Context())
	}
}

type discard struct{}

func (discard) Append([]series.Record) {}
