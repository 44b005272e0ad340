package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestRemoteReadWiring: the anomalyd binary serves /api/v1/read when
// history.retention > 0 and 404 otherwise (the default), and a reload keeps
// the history, answering under renamed outputs. TestRemoteReadE2E reads it
// through a real Prometheus.
func TestRemoteReadWiring(t *testing.T) {
	env := e2eNewEnv(t)
	t.Run("on with a retention, kept across reloads", func(t *testing.T) {
		base := wuStartAnomalyd(t, env, "anomalyd-rr-on", "output: {score_name: anomaly_score}\nhistory: {retention: 1h}\n")
		labels := map[string]string{"__name__": "rr_gauge", "job": "t"}
		t0 := time.Now().Add(-time.Minute).UnixMilli()
		var samples []prompb.Sample
		for i := range 20 {
			samples = append(samples, prompb.Sample{Timestamp: t0 + int64(i)*1000, Value: float64(10 + i%3)})
		}
		wuPost(t, base, labels, samples)
		// readScores waits (bounded) until the history holds n samples of
		// the score series called name: the shards score asynchronously.
		readScores := func(name string, n int) {
			t.Helper()
			err := e2eEventually(10*time.Second, 50*time.Millisecond, func() error {
				code, resp, body := rrRead(t, base, rrQuery(t0, t0+60_000, "metric", "rr_gauge", "__name__", name))
				if code != 200 {
					return e2eFatal(fmt.Errorf("read: %d %s", code, body))
				}
				if len(resp.Results) != 1 || len(resp.Results[0].Timeseries) != 1 {
					return fmt.Errorf("read %s: %v, want one series", name, resp.Results)
				}
				if got := len(resp.Results[0].Timeseries[0].Samples); got != n {
					return fmt.Errorf("read %s: %d samples, want %d", name, got, n)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		readScores("anomaly_score", 20)
		if _, idx := e2eDo(t, http.MethodGet, base+"/api", nil); !strings.Contains(idx, "/api/v1/read") {
			t.Errorf("the endpoint list does not name /api/v1/read:\n%s", idx)
		}

		// Renamed outputs: the history answers under the new name, whole.
		cfg := filepath.Join(env.dir, "anomalyd-rr-on", "anomalyd.yml")
		if err := os.WriteFile(cfg, []byte("window:\n  publish_interval: 100ms\noutput: {score_name: renamed_score}\nhistory: {retention: 2h}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, body := e2eDo(t, http.MethodPost, base+"/-/reload", nil); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
		wuPost(t, base, labels, []prompb.Sample{{Timestamp: t0 + 20_000, Value: 11}})
		readScores("renamed_score", 21)
	})
	t.Run("off by default", func(t *testing.T) {
		base := wuStartAnomalyd(t, env, "anomalyd-rr-off", "")
		if code, _, body := rrRead(t, base, rrQuery(0, 1, "__name__", "anomaly_score")); code != 404 {
			t.Errorf("read with the history off: %d %s, want 404", code, body)
		}
	})
}
