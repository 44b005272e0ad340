package window

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window/series"
)

// BenchmarkCheckpoint writes a checkpoint of n series (default settings,
// each series past its first samples, node_exporter-sized labels) while
// the shards run, and restores it into fresh shards: time per checkpoint
// and per restore, bytes per series.
//
//	go test ./window -run '^$' -bench BenchmarkCheckpoint -benchtime 3x
func BenchmarkCheckpoint(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) {
			cfg := config.Default()
			opts := Options{Shards: 2, QueueSize: 64, MaxSeries: n, SeriesTTL: time.Hour, PublishInterval: time.Second}
			s := New(opts, CompileRules(cfg), discard{}, prometheus.NewRegistry())
			s.Start()
			defer s.Stop(b.Context())
			fillSeries(b, s, n)
			dir := b.TempDir()
			var info CheckpointInfo
			b.Run("write", func(b *testing.B) {
				for b.Loop() {
					var err error
					if info, err = s.Checkpoint(b.Context(), dir, time.Now()); err != nil || info.Series != n {
						b.Fatal(info, err)
					}
				}
				b.ReportMetric(float64(info.Bytes)/float64(n), "bytes/series")
				b.ReportMetric(float64(info.Bytes)/(1<<20), "MiB")
			})
			b.Run("restore", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					r := New(opts, CompileRules(cfg), discard{}, prometheus.NewRegistry())
					b.StartTimer()
					if ri := r.Restore(dir, time.Now()); ri.Series != n || len(ri.Failed) > 0 {
						b.Fatal(ri)
					}
				}
			})
			os.RemoveAll(dir)
		})
	}
}

// fillSeries creates n series in s, 8 samples each.
func fillSeries(b *testing.B, s *Shards, n int) {
	b.Helper()
	const per = 500
	for start := 0; start < n; start += per {
		bt := s.GetBatch()
		for i := start; i < min(start+per, n); i++ {
			k := key("__name__", "node_network_receive_bytes_total", "device", fmt.Sprintf("eth%d", i%8),
				"instance", fmt.Sprintf("host-%05d.example.com:9100", i/8), "job", "node")
			ks := uint32(len(bt.Keys))
			bt.Keys = append(bt.Keys, k...)
			ss := uint32(len(bt.Samples))
			for j := range 8 {
				bt.Samples = append(bt.Samples, Sample{T: t0 + int64(j)*15_000, V: float64(i + j*j)})
			}
			bt.Series = append(bt.Series, BatchSeries{Hash: series.Hash(k), KeyStart: ks, KeyEnd: uint32(len(bt.Keys)),
				NameStart: ks + 9, NameEnd: ks + 9 + 32, SamplesStart: ss, SamplesEnd: uint32(len(bt.Samples))})
		}
		// One batch per shard is simplest: a batch goes to one shard, so
		// split it by hash.
		for sh := range s.N() {
			part := s.GetBatch()
			part.Keys = append(part.Keys, bt.Keys...)
			part.Samples = append(part.Samples, bt.Samples...)
			for _, bs := range bt.Series {
				if int(bs.Hash%uint64(s.N())) == sh {
					part.Series = append(part.Series, bs)
				}
			}
			for s.Enqueue(sh, part) != nil {
				time.Sleep(time.Millisecond)
			}
		}
		s.PutBatch(bt)
	}
	s.Sync()
	if got := s.active.Load(); got != int64(n) {
		b.Fatalf("%d series active, want %d", got, n)
	}
}
