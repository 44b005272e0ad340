package remotewrite

import (
	"bytes"
	"context"
	"encoding/pem"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/version"
	"github.com/prometheus/prometheus/model/value"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/zap"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/series"
)

func stopWithin(w interface{ Stop(context.Context) }, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	w.Stop(ctx)
}

// TestRemoteWriterWire checks labels and values exactly as a store decodes
// them, for both protocols: normal records (4 series), warm-up (score only),
// stale markers by bits, plain NaN and ±Inf as values, exported_* renaming,
// grouping of one series' samples, and the request headers.
func TestRemoteWriterWire(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	plainNaN := math.Float64frombits(0x7ff8000000000001)
	a := sinktest.Info("__name__", "http_requests", "job", "api", "instance", "x:1")
	b := sinktest.Info("__name__", "cpu", "metric", "m0", "detector", "d0", "zone", "eu")
	recs := []series.Record{
		{Series: a, T: 1000, Detector: detectors.KindEWMA, Score: 0.5, Expected: 10, Lower: 8, Upper: 12},
		{Series: b, T: 1000, Detector: detectors.KindCombined, Warmup: true},
		{Series: a, T: 2000, Detector: detectors.KindEWMA, Score: 1.5, Expected: 11, Lower: 9, Upper: 13},
		{Series: a, T: 2000, Detector: detectors.KindZScore, Score: plainNaN, Expected: math.Inf(1), Lower: math.Inf(-1), Upper: -0.25},
		{Series: b, T: 2000, Detector: detectors.KindCombined, Stale: true, Score: 3, Expected: 3, Lower: 3, Upper: 3},
	}
	aL := "detector=%s,instance=x:1,job=api,metric=http_requests"
	bL := "detector=combined,exported_detector=d0,exported_metric=m0,metric=cpu,zone=eu"
	key := func(name, rest string) string { return "__name__=" + name + "," + rest }
	ewma := strings.Replace(aL, "%s", "ewma", 1)
	zs := strings.Replace(aL, "%s", "zscore", 1)
	want := map[string][]sinktest.Sample{
		key("anomaly_score", ewma):    {{T: 1000, V: 0.5}, {T: 2000, V: 1.5}},
		key("anomaly_expected", ewma): {{T: 1000, V: 10}, {T: 2000, V: 11}},
		key("anomaly_lower", ewma):    {{T: 1000, V: 8}, {T: 2000, V: 9}},
		key("anomaly_upper", ewma):    {{T: 1000, V: 12}, {T: 2000, V: 13}},
		key("anomaly_score", zs):      {{T: 2000, V: plainNaN}},
		key("anomaly_expected", zs):   {{T: 2000, V: math.Inf(1)}},
		key("anomaly_lower", zs):      {{T: 2000, V: math.Inf(-1)}},
		key("anomaly_upper", zs):      {{T: 2000, V: -0.25}},
		key("anomaly_score", bL):      {{T: 1000, V: 0}, {T: 2000, V: stale}},
		key("anomaly_expected", bL):   {{T: 2000, V: stale}},
		key("anomaly_lower", bL):      {{T: 2000, V: stale}},
		key("anomaly_upper", bL):      {{T: 2000, V: stale}},
	}
	for _, tc := range []struct {
		proto, contentType, version string
	}{
		{wire.MessageWriteV1, "application/x-protobuf", "0.1.0"},
		{wire.MessageWriteV2, "application/x-protobuf;proto=io.prometheus.write.v2.Request", "2.0.0"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			rc := sinktest.NewReceiver(t)
			srv := httptest.NewServer(rc)
			defer srv.Close()
			cfg := testConfig(srv.URL)
			cfg.ProtobufMessage = tc.proto
			cfg.QueueConfig.MaxShards = 1 // one request carries everything
			cfg.QueueConfig.BatchSendDeadline = model.Duration(time.Hour)
			w, _ := newTestWriter(t, cfg, nil)
			w.Start()
			w.Append(recs[:2])
			w.Append(recs[2:])
			stopWithin(w, 10*time.Second)
			rc.Mu.Lock()
			defer rc.Mu.Unlock()

			if rc.N != 1 {
				t.Fatalf("got %d requests, want 1", rc.N)
			}
			if got := rc.TSCount[0]; got != len(want) {
				t.Errorf("got %d TimeSeries, want %d (one per output infos)", got, len(want))
			}
			for k, ws := range want {
				if got := rc.Series[k]; !sinktest.SameSamples(got, ws) {
					t.Errorf("series %s:\n got  %v\n want %v", k, got, ws)
				}
			}
			for k := range rc.Series {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected series %s", k)
				}
			}
			h := rc.Headers[0]
			for name, v := range map[string]string{
				"Content-Type":                      tc.contentType,
				"Content-Encoding":                  "snappy",
				"User-Agent":                        version.ComponentUserAgent("anomalyd"),
				"X-Prometheus-Remote-Write-Version": tc.version,
				"Retry-Attempt":                     "",
			} {
				if got := h.Get(name); got != v {
					t.Errorf("header %s: got %q want %q", name, got, v)
				}
			}
			if tc.proto == wire.MessageWriteV2 {
				for _, m := range rc.Meta {
					if m != writev2.Metadata_METRIC_TYPE_GAUGE {
						t.Errorf("RW2 metadata type %v, want GAUGE", m)
					}
				}
			}
			if got := counterValue(w.m.sent); got != 17 {
				t.Errorf("samples_sent_total %d, want 17", got)
			}
		})
	}
}

// TestRemoteWriterRetry: a store fails (5xx, network error, timeout) for a
// while, then recovers. Nothing is lost or duplicated, every series stays in
// timestamp order, and retries carry Retry-Attempt.
func TestRemoteWriterRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := sinktest.NewReceiver(t)
		rc.Respond = func(n int, r *http.Request) (int, map[string]string, string) {
			switch {
			case n == 1:
				return codeTransportError, nil, ""
			case n == 2: // hang until remote_timeout
				<-r.Context().Done()
				return http.StatusServiceUnavailable, nil, ""
			case n < 12:
				return http.StatusServiceUnavailable + n%3, nil, "store is overloaded"
			}
			return http.StatusNoContent, nil, ""
		}
		cfg := testConfig("http://store.test/api/v1/write")
		cfg.RemoteTimeout = model.Duration(2 * time.Second)
		cfg.QueueConfig.MaxSamplesPerSend = 40
		cfg.QueueConfig.MaxBackoff = model.Duration(200 * time.Millisecond)
		w, logs := newTestWriter(t, cfg, rc)
		w.Start()
		infos := sinktest.Infos(50)
		const times = 20
		for i := range times {
			w.Append(sinktest.Records(infos, int64(1000*(i+1))))
			time.Sleep(500 * time.Millisecond)
		}
		stopWithin(w, time.Minute)

		total := int64(len(infos) * times * series.NumOutputs)
		if got := rc.CheckOrder(t); int64(got) != total {
			t.Errorf("receiver has %d samples, want %d", got, total)
		}
		for k, ss := range rc.Series {
			if len(ss) != times {
				t.Errorf("series %s: %d samples, want %d", k, len(ss), times)
			}
		}
		if got := counterValue(w.m.sent); got != total {
			t.Errorf("sent %d want %d", got, total)
		}
		if counterValue(w.m.retried) == 0 || counterValue(w.m.failed) != 0 || counterValue(w.m.droppedShutdown) != 0 || counterValue(w.m.droppedFull) != 0 {
			t.Errorf("retried %v failed %v dropped %v/%v", promreg.Value(w.m.retried), promreg.Value(w.m.failed), promreg.Value(w.m.droppedFull), promreg.Value(w.m.droppedShutdown))
		}
		retries := 0
		for _, h := range rc.Headers {
			if h.Get("Retry-Attempt") != "" {
				retries++
			}
		}
		if retries != 12 {
			t.Errorf("%d requests carry Retry-Attempt, want 12 (one per failure)", retries)
		}
		// One line when the writer starts failing, one when it recovers.
		failing := logs.FilterMessageSnippet("remote write failing").FilterLevelExact(zap.WarnLevel).Len()
		recovered := logs.FilterMessageSnippet("remote write recovered").FilterLevelExact(zap.InfoLevel).Len()
		if failing == 0 || failing != recovered {
			t.Errorf("%d failing and %d recovered log lines, want as many, at least one", failing, recovered)
		}
	})
}

// TestRemoteWriterBackoff pins the backoff sequence (jitter off): doubling
// from min_backoff, capped at max_backoff, restarting for the next batch.
func TestRemoteWriterBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := sinktest.NewReceiver(t)
		rc.Respond = func(n int, _ *http.Request) (int, map[string]string, string) {
			if n < 6 || (n >= 7 && n < 9) {
				return http.StatusInternalServerError, nil, ""
			}
			return http.StatusNoContent, nil, ""
		}
		cfg := testConfig("http://store.test/write")
		cfg.QueueConfig.MaxShards = 1
		cfg.QueueConfig.MaxBackoff = model.Duration(200 * time.Millisecond)
		w, _ := newTestWriter(t, cfg, rc)
		w.Start()
		w.Append(sinktest.Records(sinktest.Infos(1), 1000))
		time.Sleep(10 * time.Second)
		w.Append(sinktest.Records(sinktest.Infos(1), 2000))
		stopWithin(w, time.Minute)

		var gaps []time.Duration
		for i := 1; i < len(rc.Times); i++ {
			gaps = append(gaps, rc.Times[i].Sub(rc.Times[i-1]))
		}
		want := []time.Duration{30, 60, 120, 200, 200, 200}
		for i := range want {
			want[i] *= time.Millisecond
		}
		if len(gaps) < 9 {
			t.Fatalf("got %d requests, want 10", len(rc.Times))
		}
		for i, d := range want {
			if gaps[i] != d {
				t.Errorf("gap before request %d: %v, want %v (all gaps %v)", i+1, gaps[i], d, gaps)
			}
		}
		if gaps[7] != 30*time.Millisecond || gaps[8] != 60*time.Millisecond {
			t.Errorf("backoff did not restart at min_backoff for the next batch: %v", gaps[7:])
		}
		for i, h := range rc.Headers {
			want := ""
			switch {
			case i >= 1 && i <= 6:
				want = strconv.Itoa(i)
			case i >= 8:
				want = strconv.Itoa(i - 7)
			}
			if got := h.Get("Retry-Attempt"); got != want {
				t.Errorf("request %d: Retry-Attempt %q want %q", i, got, want)
			}
		}
	})
}

// TestRemoteWriterRetryAfter: Retry-After in seconds and as an HTTP-date
// replaces the backoff.
func TestRemoteWriterRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := sinktest.NewReceiver(t)
		rc.Respond = func(n int, _ *http.Request) (int, map[string]string, string) {
			switch n {
			case 0:
				return http.StatusServiceUnavailable, map[string]string{"Retry-After": "7"}, ""
			case 1:
				at := time.Now().Add(4 * time.Second).UTC().Format(http.TimeFormat)
				return http.StatusTooManyRequests, map[string]string{"Retry-After": at}, ""
			case 2:
				return http.StatusBadGateway, map[string]string{"Retry-After": "soon"}, "" // unparsable: backoff
			}
			return http.StatusNoContent, nil, ""
		}
		cfg := testConfig("http://store.test/write")
		cfg.QueueConfig.MaxShards = 1
		cfg.QueueConfig.RetryOnRateLimit = true
		w, _ := newTestWriter(t, cfg, rc)
		w.Start()
		w.Append(sinktest.Records(sinktest.Infos(3), 1000))
		stopWithin(w, time.Minute)

		if len(rc.Times) != 4 {
			t.Fatalf("got %d requests, want 4", len(rc.Times))
		}
		if d := rc.Times[1].Sub(rc.Times[0]); d != 7*time.Second {
			t.Errorf("Retry-After: 7 waited %v", d)
		}
		// An HTTP-date has whole seconds: the wait is in (3s, 4s].
		if d := rc.Times[2].Sub(rc.Times[1]); d <= 3*time.Second || d > 4*time.Second {
			t.Errorf("Retry-After: <date 4s ahead> waited %v", d)
		}
		// Backoff went on doubling under the Retry-After waits: 30ms, 60ms, now 120ms.
		if d := rc.Times[3].Sub(rc.Times[2]); d != 120*time.Millisecond {
			t.Errorf("unparsable Retry-After waited %v, want the backoff 120ms", d)
		}
		if got := counterValue(w.m.sent); got != 12 {
			t.Errorf("sent %d want 12", got)
		}
	})
}

// TestRemoteWriterRejected: 4xx drops the batch, counts it in failed_total,
// logs the first line of the body once, and is not retried; 429 is retried
// only with retry_on_http_429.
func TestRemoteWriterRejected(t *testing.T) {
	long := strings.Repeat("x", 3000)
	for _, tc := range []struct {
		name     string
		code     int
		retry429 bool
		body     string
		wantLog  string // "" = nothing logged at error level
		wantReqs int
		sent     int64
		failed   int64
	}{
		{"400", 400, false, "out of order sample\nsecond line", "out of order sample", 1, 0, 4},
		{"413", 413, false, "too big", "too big", 1, 0, 4},
		{"long body cut at 1KiB", 400, false, long, long[:1024], 1, 0, 4},
		{"429 dropped", 429, false, "slow down", "slow down", 1, 0, 4},
		{"429 retried", 429, true, "slow down", "", 2, 4, 0},
		{"3xx not followed", 308, false, "", "", 1, 0, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rc := sinktest.NewReceiver(t)
				rc.Respond = func(n int, _ *http.Request) (int, map[string]string, string) {
					if n == 0 {
						return tc.code, map[string]string{"Location": "http://elsewhere.test/"}, tc.body
					}
					return http.StatusNoContent, nil, ""
				}
				cfg := testConfig("http://store.test/write")
				cfg.QueueConfig.RetryOnRateLimit = tc.retry429
				w, logs := newTestWriter(t, cfg, rc)
				w.Start()
				w.Append(sinktest.Records(sinktest.Infos(1), 1000))
				time.Sleep(time.Minute) // any retry would have happened
				stopWithin(w, time.Minute)

				if rc.N != tc.wantReqs {
					t.Errorf("%d requests, want %d", rc.N, tc.wantReqs)
				}
				if got := counterValue(w.m.sent); got != tc.sent {
					t.Errorf("sent %d want %d", got, tc.sent)
				}
				if got := counterValue(w.m.failed); got != tc.failed {
					t.Errorf("failed %d want %d", got, tc.failed)
				}
				errs := logs.FilterLevelExact(zap.ErrorLevel).All()
				if tc.failed == 0 {
					if len(errs) != 0 {
						t.Errorf("unexpected error logs: %v", errs)
					}
					return
				}
				if len(errs) != 1 {
					t.Fatalf("%d error log entries, want 1", len(errs))
				}
				f := errs[0].ContextMap()
				if f["status"] != int64(tc.code) || f["body"] != tc.wantLog {
					t.Errorf("log fields %v, want status %d body %q", f, tc.code, tc.wantLog)
				}
			})
		})
	}
}

// TestRemoteWriterQueueFull: a full queue drops the new records, counts
// them, and memory stays bounded; Append never waits for the store.
func TestRemoteWriterQueueFull(t *testing.T) {
	t.Run("not started", func(t *testing.T) {
		cfg := testConfig("http://store.test/write")
		cfg.QueueConfig.MaxShards = 1
		cfg.QueueConfig.Capacity = 100
		w, logs := newTestWriter(t, cfg, nil)
		infos := sinktest.Infos(30)
		w.Append(sinktest.Records(infos, 1000)) // 120 samples: 25 records fit
		if got := counterValue(w.m.droppedFull); got != 20 {
			t.Errorf("dropped %d want 20", got)
		}
		w.Append([]series.Record{{Series: infos[0], T: 2000, Warmup: true}}) // 1 sample, no room
		for i := range 1000 {
			w.Append(sinktest.Records(infos, int64(3000+i)))
		}
		q := w.queues[0]
		if q.pending.Load() != 100 || len(q.buf) != 25 || cap(q.buf) > 2*25 {
			t.Errorf("pending %d, %d records queued (cap %d): want 100 samples in 25 records", q.pending.Load(), len(q.buf), cap(q.buf))
		}
		if got, want := counterValue(w.m.droppedFull), int64(20+1+1000*120); got != want {
			t.Errorf("dropped %d want %d", got, want)
		}
		if n := logs.FilterMessageSnippet("send queue full").Len(); n != 1 {
			t.Errorf("queue-full logged %d times, want once a minute", n)
		}
		reg := prometheus.NewRegistry()
		sm := newSinkMetrics(reg)
		sm.forRemote("x", w)
		var buf bytes.Buffer
		promreg.WriteText(&buf, reg)
		for _, line := range []string{`anomalyd_sink_queue_samples{remote="x"} 100`, `anomalyd_sink_queue_capacity_samples{remote="x"} 100`} {
			if !strings.Contains(buf.String(), line+"\n") {
				t.Errorf("metrics lack %q:\n%s", line, buf.String())
			}
		}
		stopWithin(w, 0)
		if got := counterValue(w.m.droppedShutdown); got != 100 {
			t.Errorf("dropped at shutdown %d want 100", got)
		}
		w.Append(sinktest.Records(infos[:1], 9999))
		if got := counterValue(w.m.droppedShutdown); got != 104 {
			t.Errorf("append after Stop: dropped at shutdown %d want 104", got)
		}
	})

	t.Run("store stuck, concurrent appenders", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rc := sinktest.NewReceiver(t)
			rc.Respond = func(_ int, r *http.Request) (int, map[string]string, string) {
				<-r.Context().Done() // never answers
				return 503, nil, ""
			}
			cfg := testConfig("http://store.test/write")
			cfg.RemoteTimeout = model.Duration(time.Hour)
			cfg.QueueConfig.Capacity = 1000
			cfg.QueueConfig.MaxSamplesPerSend = 100
			w, _ := newTestWriter(t, cfg, rc)
			w.Start()
			infos := sinktest.Infos(200)
			start := time.Now()
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 50 {
						w.Append(sinktest.Records(infos[g*50:(g+1)*50], int64(1000+i)))
					}
				})
			}
			wg.Wait()
			if d := time.Since(start); d != 0 {
				t.Errorf("Append waited %v for a stuck store", d)
			}
			var pending int64
			for _, q := range w.queues {
				p := q.pending.Load()
				if p > 1000 {
					t.Errorf("queue holds %d samples, capacity 1000", p)
				}
				pending += p
			}
			total := int64(200 * 50 * series.NumOutputs)
			if got := counterValue(w.m.droppedFull); got != total-pending {
				t.Errorf("dropped %d, want %d - %d pending", got, total, pending)
			}
			stopWithin(w, time.Second) // the stuck request is aborted
			if got := counterValue(w.m.droppedShutdown); got != pending {
				t.Errorf("dropped at shutdown %d, want the %d pending", got, pending)
			}
			if counterValue(w.m.sent) != 0 {
				t.Errorf("sent %v", promreg.Value(w.m.sent))
			}
		})
	})
}

// TestRemoteWriterRW2Fallback: a store that refuses RW2 (415) or does not
// confirm it (2xx without Samples-Written) gets the same batch again as RW1,
// and RW1 from then on; the switch is logged once.
func TestRemoteWriterRW2Fallback(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(rc *sinktest.Receiver)
		wantMsg string
	}{
		{"415", func(rc *sinktest.Receiver) {
			rc.Respond = func(_ int, r *http.Request) (int, map[string]string, string) {
				if strings.Contains(r.Header.Get("Content-Type"), "v2") {
					return http.StatusUnsupportedMediaType, nil, "unsupported proto"
				}
				return http.StatusNoContent, nil, ""
			}
		}, "415"},
		{"2xx without written header", func(rc *sinktest.Receiver) { rc.KnowsRW1Only = true }, "without X-Prometheus-Remote-Write-Samples-Written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rc := sinktest.NewReceiver(t)
				tc.setup(rc)
				cfg := testConfig("http://store.test/write")
				cfg.ProtobufMessage = wire.MessageWriteV2
				cfg.QueueConfig.MaxShards = 2
				w, logs := newTestWriter(t, cfg, rc)
				w.Start()
				infos := sinktest.Infos(20)
				for i := range 5 {
					w.Append(sinktest.Records(infos, int64(1000*(i+1))))
					time.Sleep(6 * time.Second)
				}
				stopWithin(w, time.Minute)

				total := int64(20 * 5 * series.NumOutputs)
				if got := rc.CheckOrder(t); int64(got) != total {
					t.Errorf("receiver has %d samples want %d", got, total)
				}
				if got := counterValue(w.m.sent); got != total {
					t.Errorf("sent %d want %d", got, total)
				}
				if counterValue(w.m.failed) != 0 || counterValue(w.m.retried) != 0 {
					t.Errorf("failed %v retried %v, want 0", promreg.Value(w.m.failed), promreg.Value(w.m.retried))
				}
				// The first round (both queues at the same instant) may send
				// RW2 once per queue; everything later is RW1.
				rw2 := 0
				for i, p := range rc.Protos {
					if p == "rw2" {
						rw2++
						if rc.Times[i].After(rc.Times[0]) {
							t.Errorf("request %d is RW2 after the fallback (%v)", i, rc.Protos)
						}
					}
				}
				if rw2 == 0 || rw2 > 2 {
					t.Errorf("%d RW2 requests (%v), want 1 or 2 (one per queue at most)", rw2, rc.Protos)
				}
				fb := logs.FilterMessageSnippet("falling back to remote-write 1.0").All()
				if len(fb) != 1 || !strings.Contains(fb[0].Message, tc.wantMsg) {
					t.Errorf("fallback logs %v, want one mentioning %q", fb, tc.wantMsg)
				}
			})
		})
	}
}

// TestRemoteWriterAuth: basic auth, authorization and custom headers arrive
// (files read by the client, trailing newline trimmed), over plain HTTP and
// TLS with a private CA.
func TestRemoteWriterAuth(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(pwFile, []byte("s3cret\n"), 0o600)
	os.WriteFile(tokFile, []byte("tok-from-file\n"), 0o600)
	for _, tc := range []struct {
		name   string
		tls    bool
		mod    func(c *config.RemoteWriteConfig)
		header string
		want   string
	}{
		{"basic password", false, func(c *config.RemoteWriteConfig) {
			c.Client.BasicAuth = &promcfg.BasicAuth{Username: "u", Password: "p"}
		}, "Authorization", "Basic dTpw"},
		{"basic password_file", false, func(c *config.RemoteWriteConfig) {
			c.Client.BasicAuth = &promcfg.BasicAuth{Username: "u", PasswordFile: pwFile}
		}, "Authorization", "Basic dTpzM2NyZXQ="},
		{"bearer", false, func(c *config.RemoteWriteConfig) {
			c.Client.Authorization = &promcfg.Authorization{Credentials: "abc"}
		}, "Authorization", "Bearer abc"},
		{"credentials_file and type", false, func(c *config.RemoteWriteConfig) {
			c.Client.Authorization = &promcfg.Authorization{Type: "Token", CredentialsFile: tokFile}
		}, "Authorization", "Token tok-from-file"},
		{"custom header", false, func(c *config.RemoteWriteConfig) {
			c.Headers = map[string]string{"X-Scope-OrgID": "tenant-1"}
		}, "X-Scope-OrgID", "tenant-1"},
		{"tls ca_file server_name", true, func(c *config.RemoteWriteConfig) {
			c.Client.Authorization = &promcfg.Authorization{Credentials: "abc"}
		}, "Authorization", "Bearer abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := sinktest.NewReceiver(t)
			var srv *httptest.Server
			if tc.tls {
				srv = httptest.NewTLSServer(rc)
			} else {
				srv = httptest.NewServer(rc)
			}
			defer srv.Close()
			cfg := testConfig(srv.URL)
			tc.mod(cfg)
			if tc.tls {
				ca := filepath.Join(dir, "ca.pem")
				os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
				cfg.Client.TLSConfig = promcfg.TLSConfig{CAFile: ca, ServerName: "example.com"}
			}
			w, logs := newTestWriter(t, cfg, nil)
			w.Start()
			w.Append(sinktest.Records(sinktest.Infos(1), 1000))
			stopWithin(w, 10*time.Second)
			if rc.Requests() != 1 {
				t.Fatalf("%d requests, want 1; logs %v", rc.Requests(), logs.All())
			}
			rc.Mu.Lock()
			defer rc.Mu.Unlock()
			if got := rc.Headers[0].Get(tc.header); got != tc.want {
				t.Errorf("%s: got %q want %q", tc.header, got, tc.want)
			}
			if got := counterValue(w.m.sent); got != 4 {
				t.Errorf("sent %d want 4", got)
			}
		})
	}
}

// waitGoroutines waits up to 5 s for the goroutine count to fall to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, want <= %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRemoteWriterStop: Stop flushes what is queued; with a context already
// ended it sends nothing and counts the drop; against a dead store it gives
// up when the context ends. No goroutine is left behind.
func TestRemoteWriterStop(t *testing.T) {
	t.Run("flushes", func(t *testing.T) {
		rc := sinktest.NewReceiver(t)
		srv := httptest.NewServer(rc)
		defer srv.Close()
		before := runtime.NumGoroutine()
		cfg := testConfig(srv.URL)
		cfg.QueueConfig.BatchSendDeadline = model.Duration(time.Hour)
		cfg.QueueConfig.MaxSamplesPerSend = 100
		w, _ := newTestWriter(t, cfg, nil)
		w.Start()
		infos := sinktest.Infos(100)
		for i := range 10 {
			w.Append(sinktest.Records(infos, int64(1000+i)))
		}
		stopWithin(w, 10*time.Second)
		if got := rc.CheckOrder(t); got != 4000 {
			t.Errorf("received %d samples want 4000", got)
		}
		if got := counterValue(w.m.sent); got != 4000 {
			t.Errorf("sent %d want 4000", got)
		}
		waitGoroutines(t, before)
	})

	t.Run("context already done", func(t *testing.T) {
		rc := sinktest.NewReceiver(t)
		srv := httptest.NewServer(rc)
		defer srv.Close()
		before := runtime.NumGoroutine()
		cfg := testConfig(srv.URL)
		cfg.QueueConfig.BatchSendDeadline = model.Duration(time.Hour)
		w, _ := newTestWriter(t, cfg, nil)
		w.Start()
		w.Append(sinktest.Records(sinktest.Infos(100), 1000))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w.Stop(ctx)
		if rc.Requests() != 0 || counterValue(w.m.sent) != 0 {
			t.Errorf("%d requests, %v sent; want none", rc.Requests(), promreg.Value(w.m.sent))
		}
		if got := counterValue(w.m.droppedShutdown); got != 400 {
			t.Errorf("dropped at shutdown %d want 400", got)
		}
		if p := w.queues[0].pending.Load() + w.queues[1].pending.Load() + w.queues[2].pending.Load() + w.queues[3].pending.Load(); p != 0 {
			t.Errorf("%d samples still pending", p)
		}
		w.Stop(ctx) // idempotent
		waitGoroutines(t, before)
	})

	t.Run("dead store", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rc := sinktest.NewReceiver(t)
			rc.Respond = func(int, *http.Request) (int, map[string]string, string) { return 503, nil, "" }
			w, _ := newTestWriter(t, testConfig("http://store.test/write"), rc)
			w.Start()
			w.Append(sinktest.Records(sinktest.Infos(100), 1000))
			time.Sleep(6 * time.Second)
			start := time.Now()
			stopWithin(w, 10*time.Second)
			if d := time.Since(start); d != 10*time.Second {
				t.Errorf("Stop took %v, want the 10s of its context", d)
			}
			if got := counterValue(w.m.droppedShutdown); got != 400 {
				t.Errorf("dropped at shutdown %d want 400", got)
			}
			if counterValue(w.m.retried) == 0 {
				t.Errorf("no retries during the flush")
			}
		})
		// synctest.Test itself fails if a goroutine of the bubble is left.
	})

	t.Run("before start", func(t *testing.T) {
		w, _ := newTestWriter(t, testConfig("http://store.test/write"), nil)
		w.Append(sinktest.Records(sinktest.Infos(10), 1000))
		stopWithin(w, time.Second)
		w.Start() // no-op after Stop
		if got := counterValue(w.m.droppedShutdown); got != 40 {
			t.Errorf("dropped at shutdown %d want 40", got)
		}
	})
}

// TestFanout: every store gets every record; the metric families are shared
// with one child per remote; zero stores is a no-op; names must be unique.
func TestFanout(t *testing.T) {
	rcA, rcB := sinktest.NewReceiver(t), sinktest.NewReceiver(t)
	srvA, srvB := httptest.NewServer(rcA), httptest.NewServer(rcB)
	defer srvA.Close()
	defer srvB.Close()
	cfgA, cfgB := testConfig(srvA.URL), testConfig(srvB.URL)
	cfgA.Name = "a"
	cfgB.Name = ""
	cfgB.ProtobufMessage = wire.MessageWriteV2
	reg := prometheus.NewRegistry()
	f, err := NewFanout([]*config.RemoteWriteConfig{cfgA, cfgB}, sinktest.Names, "", reg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	f.Append(sinktest.Records(sinktest.Infos(10), 1000))
	stopWithin(f, 10*time.Second)
	if a, b := rcA.CheckOrder(t), rcB.CheckOrder(t); a != 40 || b != 40 {
		t.Errorf("stores got %d and %d samples, want 40 each", a, b)
	}
	var buf bytes.Buffer
	promreg.WriteText(&buf, reg)
	nameB := strings.TrimPrefix(srvB.URL, "http://")
	for _, line := range []string{
		`anomalyd_sink_samples_sent_total{remote="a"} 40`,
		`anomalyd_sink_samples_sent_total{remote="` + nameB + `"} 40`,
		`anomalyd_sink_requests_total{code="204",remote="a"} `,
		`anomalyd_sink_request_duration_seconds_count{remote="a"} `,
		`anomalyd_sink_queue_capacity_samples{remote="a"} 400000`,
		`anomalyd_sink_queue_samples{remote="a"} 0`,
	} {
		if !strings.Contains(buf.String(), line) {
			t.Errorf("metrics lack %q:\n%s", line, buf.String())
		}
	}

	empty, err := NewFanout(nil, sinktest.Names, "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	empty.Start()
	empty.Append(sinktest.Records(sinktest.Infos(1), 1))
	stopWithin(empty, time.Second)

	_, err = NewFanout([]*config.RemoteWriteConfig{testConfig("http://x/a"), testConfig("http://y/b")}, sinktest.Names, "", nil, nil)
	if err == nil || !strings.Contains(err.Error(), `same name "test"`) {
		t.Errorf("duplicate names: got error %v", err)
	}
}

func TestNewRemoteWriterErrors(t *testing.T) {
	f := func(mod func(c *config.RemoteWriteConfig), want string) {
		t.Helper()
		cfg := testConfig("http://store.test/write")
		mod(cfg)
		_, err := NewRemoteWriter(cfg, sinktest.Names, "", nil, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got error %v, want one containing %q", err, want)
		}
	}
	f(func(c *config.RemoteWriteConfig) { c.URL = "ftp://x/" }, "must be http:// or https://")
	f(func(c *config.RemoteWriteConfig) { c.ProtobufMessage = "v3" }, `unknown protobuf_message "v3"`)
	f(func(c *config.RemoteWriteConfig) { c.QueueConfig.MaxShards = 0 }, "queue_config.max_shards must be > 0")
	f(func(c *config.RemoteWriteConfig) {
		c.Client.BasicAuth = &promcfg.BasicAuth{Username: "u", PasswordFile: "/nonexistent"}
	}, "cannot read basic_auth.password_file")
	f(func(c *config.RemoteWriteConfig) {
		c.Client.Authorization = &promcfg.Authorization{CredentialsFile: "/nonexistent"}
	}, "cannot read authorization.credentials_file")
	f(func(c *config.RemoteWriteConfig) { c.Client.TLSConfig.CertFile = "/c.pem" }, "tls_config: cert_file and key_file must be set together")
	f(func(c *config.RemoteWriteConfig) { c.Client.TLSConfig.CAFile = "/nonexistent" }, "cannot read tls_config.ca_file")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	f := func(v string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := parseRetryAfter(v, now)
		if got != want || ok != wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", v, got, ok, want, wantOK)
		}
	}
	f("", 0, false)
	f("120", 2*time.Minute, true)
	f(" 3 ", 3*time.Second, true)
	f("0", 0, true)
	f("-1", 0, false)
	f("1.5", 0, false)
	f("99999999999999999", time.Duration(1<<63-1)/time.Second*time.Second, true)
	f(now.Add(90*time.Second).Format(http.TimeFormat), 90*time.Second, true)
	f("Thu, 02 Jan 2025 03:05:05 GMT", time.Minute, true)
	f(now.Add(-time.Hour).Format(http.TimeFormat), 0, true)
	f("tomorrow", 0, false)
}

func TestFirstLine(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := firstLine([]byte(in)); got != want {
			t.Errorf("firstLine(%q) = %q want %q", in, got, want)
		}
	}
	f("", "")
	f("one", "one")
	f("one\ntwo", "one")
	f("one\r\ntwo", "one")
	f("bad \xff utf8", "bad \uFFFD utf8")
}

// TestRemoteWriterRW2Rejected: a RW2 store that rejects a request but says
// it wrote part of it: the written part counts as sent, the rest as failed.
func TestRemoteWriterRW2Rejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := sinktest.NewReceiver(t)
		rc.Respond = func(int, *http.Request) (int, map[string]string, string) {
			return http.StatusBadRequest, map[string]string{wire.HeaderSamplesWritten: "3"}, "out of bounds"
		}
		cfg := testConfig("http://store.test/write")
		cfg.ProtobufMessage = wire.MessageWriteV2
		w, _ := newTestWriter(t, cfg, rc)
		w.Start()
		w.Append(sinktest.Records(sinktest.Infos(1), 1000))
		stopWithin(w, time.Minute)
		if s, f := counterValue(w.m.sent), counterValue(w.m.failed); s != 3 || f != 1 {
			t.Errorf("sent %d failed %d, want 3 and 1", s, f)
		}
	})
}

// TestAppendNoAllocs: once the queues have grown, Append allocates nothing.
func TestAppendNoAllocs(t *testing.T) {
	w, _ := newTestWriter(t, testConfig("http://store.test/write"), nil)
	recs := sinktest.Records(sinktest.Infos(100), 1)
	cycle := func() {
		w.Append(recs)
		for _, q := range w.queues {
			q.drain()
		}
	}
	cycle()
	if n := testing.AllocsPerRun(50, cycle); n != 0 {
		t.Errorf("%v allocations per Append, want 0", n)
	}
	stopWithin(w, 0)
}
