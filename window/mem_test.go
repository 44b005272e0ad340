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
// default detectors (labels of ~150 bytes), measured after a GC: series
// whose values move, and constants, which sleep once their verdict settles
// (seriesState.hold).
func BenchmarkSeriesMemory(b *testing.B) {
	b.Run("moving", func(b *testing.B) { benchSeriesMemory(b, 100_000, 3, func(i, r int) float64 { return float64(i + r) }) })
	b.Run("constant", func(b *testing.B) { benchSeriesMemory(b, 100_000, 150, func(i, r int) float64 { return float64(i) }) })
}

// benchSeriesMemory feeds n series rounds samples each, value(series, round).
func benchSeriesMemory(b *testing.B, n, rounds int, value func(i, r int) float64) {
	keys, nameLens := make([][]byte, n), make([]uint32, n)
	for i := range n {
		name := fmt.Sprintf("http_request_duration_seconds_gauge_%d", i%40)
		keys[i] = key("__name__", name, "code", "200",
			"handler", fmt.Sprintf("/api/v1/items/%d", i%97), "instance", fmt.Sprintf("api-%04d.example.internal:8080", i/400),
			"job", "api", "method", "GET", "series", fmt.Sprint(i))
		nameLens[i] = uint32(len(name))
	}
	// The timer runs: b.Loop ends once a second of work has been timed,
	// after the first round here (with it stopped it never would).
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		opts := Options{Shards: 2, QueueSize: 64, MaxSeries: 2 * n, SeriesTTL: time.Hour, PublishInterval: time.Hour}
		s := New(opts, CompileRules(config.Default()), discard{}, prometheus.NewRegistry())
		s.Start()
		for r, start := 0, 0; r < rounds; r, start = r+(start+1000)/n, (start+1000)%n {
			// One sample of 1000 series a batch, as a scrape sends them.
			batches := make([]*Batch, s.N())
			for i := start; i < start+1000; i++ {
				k := keys[i]
				h := xxhash.Sum64(k)
				sh := int(h % uint64(s.N()))
				if batches[sh] == nil {
					batches[sh] = s.GetBatch()
				}
				bt := batches[sh]
				ks := uint32(len(bt.Keys))
				bt.Keys = append(bt.Keys, k...)
				ss := uint32(len(bt.Samples))
				bt.Samples = append(bt.Samples, Sample{T: t0 + int64(r)*15_000, V: value(i, r)})
				bt.Series = append(bt.Series, BatchSeries{Hash: h, KeyStart: ks, KeyEnd: uint32(len(bt.Keys)),
					NameStart: ks + 9, NameEnd: ks + 9 + nameLens[i],
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
		// Not the series': the batches the free list keeps, as many as
		// the feeding loop had in flight.
		for len(s.free) > 0 {
			<-s.free
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "heap-bytes/series")
		if rounds > 100 {
			b.ReportMetric(float64(s.asleep())/float64(n), "asleep/series")
		}
		s.Stop(b.Context())
	}
}

type discard struct{}

func (discard) Append([]series.Record) {}
