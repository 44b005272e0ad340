package remotewrite

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
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
)

// testConfig is a config with the documented defaults applied.
func testConfig(url string) *config.RemoteWriteConfig {
	return &config.RemoteWriteConfig{
		HTTPClientConfig: config.HTTPClientConfig{URL: url, RemoteTimeout: model.Duration(30 * time.Second)},
		Name:             "test",
		QueueConfig: config.QueueConfig{
			Capacity:          100000,
			MaxShards:         4,
			MaxSamplesPerSend: 2000,
			BatchSendDeadline: model.Duration(5 * time.Second),
			MinBackoff:        model.Duration(30 * time.Millisecond),
			MaxBackoff:        model.Duration(5 * time.Second),
		},
		ProtobufMessage: wire.MessageWriteV1,
	}
}

// newTestWriter builds a writer with an observed logger. With h != nil
// requests go straight to h in the same process (no network), which
// testing/synctest needs: a real listener is not "durably blocked".
func newTestWriter(t *testing.T, cfg *config.RemoteWriteConfig, h http.Handler) (*RemoteWriter, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	w, err := NewRemoteWriter(cfg, sinktest.Names, "", prometheus.NewRegistry(), zap.New(core))
	if err != nil {
		t.Fatalf("NewRemoteWriter: %v", err)
	}
	w.jitter = func(d time.Duration) time.Duration { return d }
	if h != nil {
		w.client.Transport = handlerTransport{h} // keeps the real client's redirect policy
	}
	return w, logs
}

// handlerTransport serves requests with a handler in the calling goroutine.
// A handler that returns errTransport makes the round trip fail.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if rec.Code == codeTransportError {
		return nil, fmt.Errorf("connection reset by peer (test)")
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// codeTransportError, returned by a receiver's respond func, makes
// handlerTransport fail the request as a network error would.
const codeTransportError = 999

func counterValue(c prometheus.Counter) int64 { return int64(promreg.Value(c)) }
