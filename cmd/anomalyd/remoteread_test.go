//go:build linux

// Remote read of the score history, in process: /api/v1/read is served when
// history.retention > 0 (the default), 404 otherwise, and a reload keeps the
// history. The end-to-end test with the anomalyd binary and Debian's
// Prometheus is TestRemoteReadE2E in ./e2e.
package main

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// rrRead posts a remote-read request and decodes a SAMPLES answer.
func rrRead(t *testing.T, base string, req *prompb.ReadRequest) (int, *prompb.ReadResponse, string) {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	code, text := httpDo(t, http.MethodPost, base+"/api/v1/read", snappy.Encode(nil, raw))
	if code != http.StatusOK {
		return code, nil, text
	}
	dec, err := snappy.Decode(nil, []byte(text))
	if err != nil {
		t.Fatalf("read response is not snappy: %v", err)
	}
	var resp prompb.ReadResponse
	if err := resp.Unmarshal(dec); err != nil {
		t.Fatalf("cannot unmarshal ReadResponse: %v", err)
	}
	return code, &resp, ""
}

func rrQuery(mint, maxt int64, kv ...string) *prompb.ReadRequest {
	q := &prompb.Query{StartTimestampMs: mint, EndTimestampMs: maxt}
	for i := 0; i < len(kv); i += 2 {
		q.Matchers = append(q.Matchers, &prompb.LabelMatcher{Type: prompb.LabelMatcher_EQ, Name: kv[i], Value: kv[i+1]})
	}
	return &prompb.ReadRequest{Queries: []*prompb.Query{q}}
}

func TestRemoteReadWiring(t *testing.T) {
	t.Run("on by default, kept across reloads", func(t *testing.T) {
		srv, base, file := startServer(t, "output: {score_name: anomaly_score}\n")
		t0 := time.Now().Add(-time.Minute).UnixMilli()
		vals := make([]float64, 20)
		for i := range vals {
			vals[i] = float64(10 + i%3)
		}
		writeGauge(t, base, "rr_gauge", t0, vals...)
		srv.shards.Sync()
		code, resp, body := rrRead(t, base, rrQuery(t0, t0+60_000, "metric", "rr_gauge", "__name__", "anomaly_score"))
		if code != 200 || len(resp.Results) != 1 || len(resp.Results[0].Timeseries) != 1 {
			t.Fatalf("read: %d %s %v, want one series", code, body, resp)
		}
		if n := len(resp.Results[0].Timeseries[0].Samples); n != 20 {
			t.Fatalf("read: %d samples, want 20", n)
		}
		if _, idx := httpDo(t, http.MethodGet, base+"/", nil); !strings.Contains(idx, "/api/v1/read") {
			t.Errorf("index does not list /api/v1/read:\n%s", idx)
		}

		// Renamed outputs: the history answers under the new name, whole.
		os.WriteFile(file, []byte("output: {score_name: renamed_score}\nhistory: {retention: 2h}\n"), 0o644)
		if code, body := httpDo(t, http.MethodPost, base+"/-/reload", nil); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
		writeGauge(t, base, "rr_gauge", t0+20_000, 11)
		srv.shards.Sync()
		_, resp, _ = rrRead(t, base, rrQuery(t0, t0+60_000, "metric", "rr_gauge", "__name__", "renamed_score"))
		if len(resp.Results[0].Timeseries) != 1 || len(resp.Results[0].Timeseries[0].Samples) != 21 {
			t.Fatalf("after reload: %v, want renamed_score with 21 samples", resp.Results[0])
		}
	})
	t.Run("off with retention 0s", func(t *testing.T) {
		_, base, _ := startServer(t, "history: {retention: 0s}\n")
		if code, _, body := rrRead(t, base, rrQuery(0, 1, "__name__", "anomaly_score")); code != 404 {
			t.Errorf("read with the history off: %d %s, want 404", code, body)
		}
	})
}
