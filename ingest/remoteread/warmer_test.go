package remoteread

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/windowtest"
)

// warmEnv is a Warmer reading from a fake Prometheus for real shards.
type warmEnv struct {
	prom   *fakeProm
	w      *Warmer
	shards *window.Shards
	rec    *windowtest.Recorder
	reg    *prometheus.Registry
}

func newWarmEnv(t *testing.T, mod func(*config.WarmupConfig)) *warmEnv {
	t.Helper()
	prom, srv := newFakeProm(t)
	cfg := config.DefaultWarmupConfig
	rr := config.DefaultWarmupRemoteRead
	rr.URL = srv.URL + "/api/v1/read"
	rr.RemoteTimeout = model.Duration(10 * time.Second)
	cfg.RemoteRead = &rr
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	w, err := NewWarmer(&cfg, "anomalyd/test", reg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	w.minBackoff = time.Millisecond
	rec := &windowtest.Recorder{}
	opts := window.Options{Shards: 2, QueueSize: 16, MaxSeries: 1000, SeriesTTL: time.Hour, PublishInterval: time.Nanosecond,
		Warmup: window.WarmupOptions{Warmer: w, Lookback: 25 * time.Hour, MaxBuffered: cfg.MaxBufferedSamples, Timeout: time.Minute}}
	shards := window.New(opts, window.CompileRules(config.Default()), rec, reg)
	shards.Start()
	t.Cleanup(func() {
		w.Stop(context.Background())
		shards.Stop(context.Background())
	})
	return &warmEnv{prom: prom, w: w, shards: shards, rec: rec, reg: reg}
}

// send writes samples of the series with canonical labels key to its shard.
func (e *warmEnv) send(t *testing.T, key string, samples []window.Sample) {
	t.Helper()
	h := xxhash.Sum64String(key)
	b := e.shards.GetBatch()
	b.Keys = append(b.Keys, key...)
	_, rest, _ := strings.Cut(key, "__name__\xff")
	name, _, _ := strings.Cut(rest, "\xff")
	ns := uint32(strings.Index(key, "__name__\xff") + len("__name__\xff"))
	b.Samples = append(b.Samples, samples...)
	b.Series = append(b.Series, window.BatchSeries{Hash: h, KeyStart: 0, KeyEnd: uint32(len(key)), NameStart: ns,
		NameEnd: ns + uint32(len(name)), SamplesStart: 0, SamplesEnd: uint32(len(samples))})
	if err := e.shards.Enqueue(int(h%uint64(e.shards.N())), b); err != nil {
		t.Fatal(err)
	}
	e.shards.Sync()
}

// metric returns the value of the sample line that starts with series
// (name and labels as written), or NaN.
func (e *warmEnv) metric(series string) float64 {
	var buf bytes.Buffer
	promreg.WriteText(&buf, e.reg)
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return math.NaN()
}

// waitFor polls until series has value want (10 s at most).
func (e *warmEnv) waitFor(t *testing.T, series string, want float64) {
	t.Helper()
	for range 2000 {
		if e.metric(series) == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s = %v, want %v", series, e.metric(series), want)
}

// settle waits until no series is warming and the shards have finished
// applying the last answer (the gauge drops before the held samples are
// replayed).
func (e *warmEnv) settle(t *testing.T) {
	t.Helper()
	e.waitFor(t, "anomalyd_window_series_warming", 0)
	e.shards.Sync()
}

func day(end int64) []window.Sample {
	return steps(end-1440*60_000, 1440, 60_000, func(i int) float64 { return 10 + math.Sin(float64(i)/100) })
}

// Series with history start warm, series without start cold; one request
// reads both (they were queued before the Warmer started).
func TestWarmerWarmsSeries(t *testing.T) {
	e := newWarmEnv(t, nil)
	now := time.Now().UnixMilli()
	a, b := lbls("__name__", "a", "job", "x"), lbls("__name__", "b", "job", "x")
	e.prom.add(a, day(now))
	e.send(t, a, steps(now, 3, 60_000, func(int) float64 { return 10 }))
	e.send(t, b, steps(now, 3, 60_000, func(int) float64 { return 10 }))
	if n := len(e.rec.Of("a")) + len(e.rec.Of("b")); n != 0 {
		t.Fatalf("%d records before the history was read", n)
	}
	e.w.Start()
	e.settle(t)
	ra, rb := e.rec.Of("a"), e.rec.Of("b")
	if len(ra) != 3 || ra[0].Warmup {
		t.Fatalf("series a: got %+v, want 3 records out of warm-up", ra)
	}
	if len(rb) != 3 || !rb[0].Warmup {
		t.Fatalf("series b: got %+v, want 3 records in warm-up", rb)
	}
	for series, want := range map[string]float64{
		`anomalyd_warmup_series_total{result="warmed"}`: 1,
		`anomalyd_warmup_series_total{result="empty"}`:  1,
		`anomalyd_warmup_requests_total{code="200"}`:    1,
		`anomalyd_warmup_samples_read_total`:            1440,
		`anomalyd_warmup_pending_series`:                0,
		`anomalyd_window_series_warmed_total`:           1,
	} {
		if got := e.metric(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// A 5xx is retried; a 4xx is not, and its series start cold.
func TestWarmerRetries(t *testing.T) {
	for _, tc := range []struct {
		code         int
		wantRequests float64
		wantResult   string
	}{
		{http.StatusServiceUnavailable, 2, "warmed"},
		{http.StatusBadRequest, 1, "failed"},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			e := newWarmEnv(t, nil)
			now := time.Now().UnixMilli()
			a := lbls("__name__", "a")
			e.prom.add(a, day(now))
			e.prom.fault = func(n int64, w http.ResponseWriter) bool {
				if n == 1 || tc.code/100 == 4 {
					http.Error(w, "no", tc.code)
					return true
				}
				return false
			}
			e.w.Start()
			e.send(t, a, steps(now, 3, 60_000, func(int) float64 { return 10 }))
			e.waitFor(t, fmt.Sprintf(`anomalyd_warmup_series_total{result=%q}`, tc.wantResult), 1)
			e.settle(t)
			if got := e.prom.requests.Load(); float64(got) != tc.wantRequests {
				t.Fatalf("Prometheus got %d requests, want %v", got, tc.wantRequests)
			}
			if got := e.metric(fmt.Sprintf(`anomalyd_warmup_requests_total{code="%d"}`, tc.code)); got != 1 {
				t.Fatalf("requests with code %d: %v, want 1", tc.code, got)
			}
			if recs := e.rec.Of("a"); len(recs) != 3 || recs[0].Warmup != (tc.wantResult == "failed") {
				t.Fatalf("got %+v: want 3 records, warm only if the history was read", recs)
			}
		})
	}
}

// Beyond max_pending, new series start cold at once.
func TestWarmerMaxPending(t *testing.T) {
	e := newWarmEnv(t, func(c *config.WarmupConfig) { c.MaxPending = 2 })
	now := time.Now().UnixMilli()
	for _, n := range []string{"a", "b", "c"} {
		e.send(t, lbls("__name__", n), steps(now, 2, 60_000, func(int) float64 { return 1 }))
	}
	if got := e.metric(`anomalyd_warmup_series_total{result="skipped"}`); got != 1 {
		t.Fatalf("skipped %v, want 1", got)
	}
	if got := e.metric(`anomalyd_warmup_pending_series`); got != 2 {
		t.Fatalf("pending %v, want 2", got)
	}
	if n := len(e.rec.Of("c")); n != 2 {
		t.Fatalf("the refused series emitted %d records, want 2 at once", n)
	}
	e.w.Start()
	e.waitFor(t, "anomalyd_warmup_pending_series", 0)
}

// A response over max_bytes is split until each part fits; a single series
// over it fails alone.
func TestWarmerSplitsLargeResponses(t *testing.T) {
	// One day at 60 s is 22.5 KiB of samples (16 B each) plus ~4 KiB of
	// chunks: 40 KiB holds one series, not two.
	e := newWarmEnv(t, func(c *config.WarmupConfig) { c.MaxBytes = 40 << 10; c.Concurrency = 1 })
	now := time.Now().UnixMilli()
	var keys []string
	for _, n := range []string{"a", "b", "c"} {
		k := lbls("__name__", n)
		keys = append(keys, k)
		// Small integers: XOR chunks of ~2 bytes a sample.
		e.prom.add(k, steps(now-1440*60_000, 1440, 60_000, func(i int) float64 { return float64(10 + i%5) }))
	}
	big := lbls("__name__", "big")
	e.prom.add(big, steps(now-86_400_000, 8640, 10_000, func(i int) float64 { return float64(i) }))
	for _, k := range append(keys, big) {
		e.send(t, k, steps(now, 2, 60_000, func(int) float64 { return 10 }))
	}
	e.w.Start()
	e.settle(t)
	for series, want := range map[string]float64{
		`anomalyd_warmup_series_total{result="warmed"}`: 3,
		`anomalyd_warmup_series_total{result="failed"}`: 1,
	} {
		if got := e.metric(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if e.metric(`anomalyd_warmup_errors_total{reason="too_large"}`) < 2 {
		t.Errorf("too_large errors: %v, want at least 2 (the batch, then the big series)", e.metric(`anomalyd_warmup_errors_total{reason="too_large"}`))
	}
	// The last request gives its bytes back just after its answers.
	used := func() int64 {
		e.w.budget.mu.Lock()
		defer e.w.budget.mu.Unlock()
		return e.w.budget.used
	}
	for i := 0; i < 1000 && used() != 0; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if n := used(); n != 0 {
		t.Errorf("budget holds %d bytes after every request ended", n)
	}
}

// Stop drops the queue, aborts reads and leaves no goroutine behind; the
// shards then score what their warming series hold.
func TestWarmerStop(t *testing.T) {
	before := runtime.NumGoroutine()
	e := newWarmEnv(t, nil)
	block := make(chan struct{})
	e.prom.fault = func(int64, http.ResponseWriter) bool { <-block; return false }
	e.w.Start()
	now := time.Now().UnixMilli()
	e.send(t, lbls("__name__", "a"), steps(now, 2, 60_000, func(int) float64 { return 1 }))
	e.waitFor(t, "anomalyd_warmup_pending_series", 1)
	if err := e.w.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if e.w.Warm(window.WarmRequest{}) {
		t.Fatal("Warm after Stop accepted a request")
	}
	if err := e.shards.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.rec.Of("a")); n != 2 {
		t.Fatalf("series a emitted %d records after Stop, want its 2 held samples", n)
	}
	close(block) // let the fake Prometheus's handler end, if the request got there
	for range 500 {
		if runtime.NumGoroutine() <= before+4 { // the test server's own
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+4 {
		t.Fatalf("%d goroutines after Stop, %d before", n, before)
	}
}

// The rate limit lets a request's worth through at once, then paces.
func TestTokenBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := newTokenBucket(100, 50)
		start := time.Now()
		for range 5 {
			if err := tb.wait(t.Context(), 50); err != nil {
				t.Fatal(err)
			}
		}
		// 250 series at 100/s with a burst of 50: 2 s.
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("250 series took %v of fake time, want 2s", d)
		}
	})
}

// The budget is FIFO: a large waiter is not overtaken by small ones, and a
// cancelled waiter leaves the line.
func TestBudgetFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &budget{max: 10}
		ctx := t.Context()
		if err := b.acquire(ctx, 6); err != nil {
			t.Fatal(err)
		}
		got := make(chan int64, 2)
		go func() { b.acquire(ctx, 8); got <- 8 }()
		synctest.Wait()
		if b.tryAcquire(1) {
			t.Fatal("tryAcquire overtook a waiter")
		}
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			if b.acquire(cctx, 2) == nil {
				got <- 2
			}
		}()
		synctest.Wait()
		cancel()
		synctest.Wait()
		b.release(6)
		if n := <-got; n != 8 {
			t.Fatalf("granted %d first, want the 8 that waited longest", n)
		}
		b.release(8)
		if b.used != 0 || len(b.waiters) != 0 {
			t.Fatalf("used %d, %d waiters: want 0, 0", b.used, len(b.waiters))
		}
	})
}
