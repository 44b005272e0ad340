package remotewrite

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/series"
)

// newDiskWriter is newTestWriter with its queues on disk under dir.
func newDiskWriter(t *testing.T, cfg *config.RemoteWriteConfig, h http.Handler, dir string) (*RemoteWriter, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	w, err := NewRemoteWriter(cfg, sinktest.Names, dir, prometheus.NewRegistry(), zap.New(core))
	if err != nil {
		t.Fatalf("NewRemoteWriter: %v", err)
	}
	w.jitter = func(d time.Duration) time.Duration { return d }
	w.client.Transport = handlerTransport{h}
	return w, logs
}

// diskConfig is a small, quick configuration for the disk-queue tests.
func diskConfig() *config.RemoteWriteConfig {
	cfg := testConfig("http://store.test/write")
	cfg.QueueConfig.MaxShards = 2
	cfg.QueueConfig.MaxSamplesPerSend = 100
	cfg.QueueConfig.BatchSendDeadline = model.Duration(time.Second)
	cfg.QueueConfig.MaxBackoff = model.Duration(time.Second)
	cfg.QueueConfig.MaxDiskUsageBytes = 64 << 20
	return cfg
}

// downReceiver is a receiver whose store fails every request with a
// network error while down is set, and otherwise takes 50 ms a request, so
// that a backlog takes time to send and new scores could overtake it.
func downReceiver(t *testing.T, down *atomic.Bool) *sinktest.Receiver {
	rc := sinktest.NewReceiver(t)
	rc.Respond = func(int, *http.Request) (int, map[string]string, string) {
		if down.Load() {
			return codeTransportError, nil, ""
		}
		time.Sleep(50 * time.Millisecond)
		return http.StatusNoContent, nil, ""
	}
	return rc
}

// appendRounds appends one record per series at t = from, from+1000, …
// (n rounds), a second apart.
func appendRounds(w *RemoteWriter, infos []*series.Info, from int64, n int) {
	for i := range n {
		w.Append(sinktest.Records(infos, from+int64(1000*i)))
		time.Sleep(time.Second)
	}
}

func diskBlocks(w *RemoteWriter) (n int64) {
	w.eachQueue(func(q *queue) { n += q.diskBlocks.Load() })
	return n
}

// checkAll fails unless the receiver holds every series with exactly the
// timestamps 1000, 2000, … rounds × 1000, in order, once each.
func checkAll(t *testing.T, rc *sinktest.Receiver, infos []*series.Info, rounds int) {
	t.Helper()
	total := rc.CheckOrder(t)
	if want := len(infos) * rounds * series.NumOutputs; total != want {
		t.Errorf("receiver has %d samples, want %d", total, want)
	}
	rc.Mu.Lock()
	defer rc.Mu.Unlock()
	for k, ss := range rc.Series {
		if len(ss) != rounds || ss[0].T != 1000 || ss[len(ss)-1].T != int64(1000*rounds) {
			t.Errorf("series %s: %d samples from %d to %d, want %d from 1000", k, len(ss), ss[0].T, ss[len(ss)-1].T, rounds)
		}
	}
}

// TestRemoteWriterDiskRestart: the store is down across two restarts of
// the writer; once it is back, the third writer delivers every score once,
// in order, and nothing is dropped. The writer logs when it starts failing
// and reminds every 5 minutes while it stays so.
func TestRemoteWriterDiskRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var down atomic.Bool
		down.Store(true)
		rc := downReceiver(t, &down)
		infos := sinktest.Infos(50)

		w1, logs1 := newDiskWriter(t, diskConfig(), rc, dir)
		w1.Start()
		appendRounds(w1, infos, 1000, 30)
		stopWithin(w1, 10*time.Second)
		if n := logs1.FilterMessageSnippet("remote write failing").Len(); n != 1 {
			t.Errorf("failing logged %d times, want once", n)
		}
		if diskBlocks(w1) == 0 || w1.diskBytes() == 0 {
			t.Errorf("nothing on disk after a stop while the store is down")
		}

		w2, logs2 := newDiskWriter(t, diskConfig(), rc, dir)
		w2.Start()
		appendRounds(w2, infos, 31000, 10)
		time.Sleep(6 * time.Minute)
		stopWithin(w2, 10*time.Second)
		if n := logs2.FilterMessageSnippet("remote write still failing").Len(); n != 1 {
			t.Errorf("reminder logged %d times in 6 minutes of failing, want once", n)
		}

		down.Store(false)
		w3, logs3 := newDiskWriter(t, diskConfig(), rc, dir)
		w3.Start()
		appendRounds(w3, infos, 41000, 10)
		time.Sleep(10 * time.Second)
		stopWithin(w3, 10*time.Second)

		checkAll(t, rc, infos, 50)
		total := int64(len(infos) * 50 * series.NumOutputs)
		if got := counterValue(w3.m.sent); got != total {
			t.Errorf("third writer sent %d, want %d", got, total)
		}
		for i, w := range []*RemoteWriter{w1, w2, w3} {
			if d := counterValue(w.m.droppedFull) + counterValue(w.m.droppedShutdown) + counterValue(w.m.droppedLimit) + counterValue(w.m.droppedDisk); d != 0 {
				t.Errorf("writer %d dropped %d samples", i+1, d)
			}
		}
		if diskBlocks(w3) != 0 || w3.queuedSamples() != 0 {
			t.Errorf("%d blocks, %v samples still queued", diskBlocks(w3), w3.queuedSamples())
		}
		if n := logs3.FilterMessageSnippet("remote write").Len(); n != 0 {
			t.Errorf("a healthy writer logged failing or recovered %d times", n)
		}
	})
}

// TestRemoteWriterDiskShutdown: while the store keeps up, blocks stay in
// memory and nothing is written to disk; Stop sends what is queued to a
// store that takes it, and writes it to disk when the store fails, for the
// next start to send first.
func TestRemoteWriterDiskShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var down atomic.Bool
		rc := downReceiver(t, &down)
		infos := sinktest.Infos(100)
		cfg := diskConfig()
		cfg.QueueConfig.MaxSamplesPerSend = 2000
		w1, _ := newDiskWriter(t, cfg, rc, dir)
		w1.Start()
		appendRounds(w1, infos, 1000, 10) // a batch due every second
		if b := w1.diskBytes(); b != 2*float64(len(segMagic)) {
			t.Errorf("%v bytes on disk while the store keeps up, want two empty segments", b)
		}
		cfg.QueueConfig.BatchSendDeadline = model.Duration(time.Hour)
		w1.Append(sinktest.Records(infos, 11000)) // no batch full
		stopWithin(w1, time.Minute)
		if got := rc.CheckOrder(t); got != 11*100*series.NumOutputs {
			t.Errorf("received %d samples after Stop, want %d", got, 11*100*series.NumOutputs)
		}

		w2, _ := newDiskWriter(t, cfg, rc, dir)
		w2.Start()
		appendRounds(w2, infos, 12000, 3) // 1200 samples: no batch full
		down.Store(true)
		stopWithin(w2, time.Minute)
		if diskBlocks(w2) == 0 || counterValue(w2.m.sent) != 0 {
			t.Errorf("%v sent, %d blocks on disk; want none sent, all on disk", promreg.Value(w2.m.sent), diskBlocks(w2))
		}
		down.Store(false)
		w3, _ := newDiskWriter(t, cfg, rc, dir)
		w3.Start()
		time.Sleep(time.Second)
		stopWithin(w3, time.Second)
		checkAll(t, rc, infos, 14)
	})
}

// TestRemoteWriterDiskLimit: past max_disk_usage_bytes the oldest scores
// are dropped and counted; what is left is delivered in order, and
// delivered plus dropped is everything.
func TestRemoteWriterDiskLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		rc := downReceiver(t, &down)
		cfg := diskConfig()
		cfg.QueueConfig.MaxShards = 1
		cfg.QueueConfig.MaxSamplesPerSend = 2000
		cfg.QueueConfig.MaxDiskUsageBytes = config.MinDiskUsageBytes
		w, logs := newDiskWriter(t, cfg, rc, t.TempDir())
		w.Start()
		infos := sinktest.Infos(500)
		const rounds = 300 // 600 000 samples, several MB of blocks
		appendRounds(w, infos, 1000, rounds)
		if b := w.diskBytes(); b > float64(cfg.QueueConfig.MaxDiskUsageBytes+w.queues[0].disk.segBytes) {
			t.Errorf("%v bytes on disk, limit %d", b, cfg.QueueConfig.MaxDiskUsageBytes)
		}
		down.Store(false)
		time.Sleep(time.Minute)
		stopWithin(w, time.Second)

		got := int64(rc.CheckOrder(t))
		dropped := counterValue(w.m.droppedLimit)
		if total := int64(len(infos) * rounds * series.NumOutputs); dropped == 0 || got+dropped != total {
			t.Errorf("received %d + dropped %d, want %d with some dropped", got, dropped, total)
		}
		for k, ss := range rc.Series { // the newest survive
			if ss[len(ss)-1].T != 1000*rounds || int64(len(ss)) != (ss[len(ss)-1].T-ss[0].T)/1000+1 {
				t.Errorf("series %s: %d samples from %d to %d, want the newest without gaps", k, len(ss), ss[0].T, ss[len(ss)-1].T)
			}
		}
		if logs.FilterMessageSnippet("disk queue full").Len() == 0 {
			t.Errorf("dropping at the limit is not logged")
		}
	})
}

// TestRemoteWriterDiskShardsChange: blocks queued under another
// max_shards are sent before anything new (a series may now use another
// queue), then their directories go.
func TestRemoteWriterDiskShardsChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var down atomic.Bool
		down.Store(true)
		rc := downReceiver(t, &down)
		infos := sinktest.Infos(50)
		cfg := diskConfig()
		cfg.QueueConfig.MaxShards = 4
		w1, _ := newDiskWriter(t, cfg, rc, dir)
		w1.Start()
		appendRounds(w1, infos, 1000, 20)
		stopWithin(w1, time.Second)

		down.Store(false)
		rc.Respond = func(int, *http.Request) (int, map[string]string, string) {
			time.Sleep(100 * time.Millisecond) // the old blocks take seconds to send
			return http.StatusNoContent, nil, ""
		}
		cfg.QueueConfig.MaxShards = 3
		w2, logs := newDiskWriter(t, cfg, rc, dir)
		w2.Start()
		appendRounds(w2, infos, 21000, 10)
		time.Sleep(10 * time.Second)
		stopWithin(w2, time.Second)
		checkAll(t, rc, infos, 30)
		if logs.FilterMessageSnippet("max_shards changed").Len() != 1 {
			t.Errorf("the layout change is not logged")
		}
		ents, err := os.ReadDir(w2.diskDir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if want := []string{"0-of-3", "1-of-3", "2-of-3"}; !slices.Equal(names, want) {
			t.Errorf("queue directories %v, want %v", names, want)
		}
	})
}

// TestRemoteWriterDiskRW2Fallback: blocks written to disk as RW2 reach a
// store that turns out to know RW1 only, re-encoded.
func TestRemoteWriterDiskRW2Fallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		var down atomic.Bool
		down.Store(true)
		rc := downReceiver(t, &down)
		infos := sinktest.Infos(20)
		cfg := diskConfig()
		cfg.ProtobufMessage = wire.MessageWriteV2
		w1, _ := newDiskWriter(t, cfg, rc, dir)
		w1.Start()
		appendRounds(w1, infos, 1000, 10)
		stopWithin(w1, time.Second)

		down.Store(false)
		rc.KnowsRW1Only = true
		w2, _ := newDiskWriter(t, cfg, rc, dir)
		w2.Start()
		appendRounds(w2, infos, 11000, 5)
		time.Sleep(5 * time.Second)
		stopWithin(w2, time.Second)
		checkAll(t, rc, infos, 15)
		if counterValue(w2.m.failed) != 0 {
			t.Errorf("failed %v", promreg.Value(w2.m.failed))
		}
	})
}

// TestFanoutDiskOrphans: a queue directory of a remote that is no longer
// configured is reported at start, not sent and not removed.
func TestFanoutDiskOrphans(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(dir+"/gone/0-of-4", 0o750); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := diskConfig()
	cfg.Name = "kept"
	f, err := NewFanout([]*config.RemoteWriteConfig{cfg}, sinktest.Names, dir, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	stopWithin(f, time.Second)
	got := logs.FilterMessageSnippet("not configured").All()
	if len(got) != 1 || !strings.HasSuffix(got[0].ContextMap()["dir"].(string), "/gone") {
		t.Errorf("orphan warnings %v, want one for gone", got)
	}
	if _, err := os.Stat(dir + "/gone/0-of-4"); err != nil {
		t.Errorf("the orphan directory was touched: %v", err)
	}
}
