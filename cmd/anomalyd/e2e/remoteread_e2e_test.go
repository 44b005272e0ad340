//go:build linux

// Remote read of the score history, end to end:
//
//	test ─remote_write─▶ anomalyd (history) ◀─remote_read, read_recent─ Prometheus ◀─query_range─ test
//
// TestRemoteReadE2E runs the anomalyd binary and Debian's Prometheus on
// 127.0.0.1 (helpers from e2e_test.go) and checks that what Prometheus
// answers for the score series is what anomalyd computed, and that bad
// reads get a 4xx without hurting the server. TestRemoteReadWiring
// (remoteread_wiring_test.go) checks the endpoint's wiring alone.
package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
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
	return rrPost(t, base, snappy.Encode(nil, raw))
}

// rrPost posts body to /api/v1/read; a 200 is decoded as SAMPLES.
func rrPost(t *testing.T, base string, body []byte) (int, *prompb.ReadResponse, string) {
	t.Helper()
	code, text := e2eDo(t, http.MethodPost, base+"/api/v1/read", body)
	if code != http.StatusOK {
		return code, nil, text
	}
	raw, err := snappy.Decode(nil, []byte(text))
	if err != nil {
		t.Fatalf("read response is not snappy: %v", err)
	}
	var resp prompb.ReadResponse
	if err := resp.Unmarshal(raw); err != nil {
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

// rrLabels formats labels as {a="b", …}.
func rrLabels(ls []prompb.Label) string {
	m := map[string]string{}
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return e2eFormat(m)
}

// rrPoint is one point of a range query.
type rrPoint struct {
	T int64 // ms
	V float64
}

// rrQueryRange runs a range query on Prometheus and fails on warnings (a
// failed remote read is a warning, not an error, in Prometheus).
func rrQueryRange(base, expr string, start, end int64, step time.Duration) (map[string][]rrPoint, error) {
	params := url.Values{
		"query": {expr},
		"start": {strconv.FormatFloat(float64(start)/1000, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end)/1000, 'f', 3, 64)},
		"step":  {step.String()},
	}
	resp, err := e2eClient.Get(base + "/api/v1/query_range?" + params.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status   string   `json:"status"`
		Error    string   `json:"error"`
		Warnings []string `json:"warnings"`
		Data     struct {
			Result []struct {
				Metric map[string]string    `json:"metric"`
				Values [][2]json.RawMessage `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("query_range %s: %s: %w", expr, resp.Status, err)
	}
	if r.Status != "success" || len(r.Warnings) > 0 {
		return nil, fmt.Errorf("query_range %s: %s %s, warnings %q", expr, r.Status, r.Error, r.Warnings)
	}
	out := map[string][]rrPoint{}
	for _, s := range r.Data.Result {
		k := e2eFormat(s.Metric)
		for _, p := range s.Values {
			var ts float64
			var v string
			if err := json.Unmarshal(p[0], &ts); err != nil {
				return nil, err
			}
			if err := json.Unmarshal(p[1], &v); err != nil {
				return nil, err
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, err
			}
			out[k] = append(out[k], rrPoint{int64(math.Round(ts * 1000)), f})
		}
	}
	return out, nil
}

func TestRemoteReadE2E(t *testing.T) {
	env := e2eNewEnv(t)

	// anomalyd: no store at all, only the history.
	dDir := env.mkdir(t, "anomalyd")
	pd := e2eFreePort(t)
	env.dURL = "http://" + pd
	env.write(t, dDir, "anomalyd.yml", "window:\n  publish_interval: 1s\nhistory:\n  retention: 1h\n  max_samples_per_query: 300\n")
	env.d = env.start(t, "anomalyd", dDir, env.anomalydBin, "--config.file=anomalyd.yml", "--web.listen-address="+pd, "--log.level=info")

	// Prometheus reads anomalyd's recent data (its own head is empty).
	aDir := env.mkdir(t, "prometheus")
	pa := e2eFreePort(t)
	env.aURL = "http://" + pa
	env.write(t, aDir, "prometheus.yml", fmt.Sprintf(`global:
  scrape_interval: 15s
remote_read:
  - url: %s/api/v1/read
    read_recent: true
`, env.dURL))
	env.a = env.start(t, "prometheus", aDir, env.prometheus, "--config.file=prometheus.yml",
		"--storage.tsdb.path=data", "--web.listen-address="+pa, "--log.level=info")
	env.waitReady(t, env.d, env.dURL)
	env.waitReady(t, env.a, env.aURL)

	// 240 samples at 1 s ending 10 s ago: a noisy level with a step once
	// the detectors are Ready (warm-up and calibration, 110 samples), on
	// whole seconds so a 1 s query step lands on every sample.
	const n = 240
	t0 := (time.Now().Unix() - n - 10) * 1000
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = 50 + 3*math.Sin(float64(i)/3) + float64(i%7)/2
		if i >= 200 {
			vals[i] += 40
		}
	}
	ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "e2e_rr_gauge"}, {Name: "job", Value: "rr"}}}
	for i, v := range vals {
		ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0 + int64(i)*1000, Value: v})
	}
	raw, _ := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ts}}).Marshal()
	if code, body := e2eDo(t, http.MethodPost, env.dURL+"/api/v1/write", snappy.Encode(nil, raw)); code != 204 {
		t.Fatalf("remote write to anomalyd: %d %s", code, body)
	}
	tEnd := t0 + (n-1)*1000

	// The history, read directly: all four outputs, the score for every
	// sample (the band once Ready). One query per output:
	// max_samples_per_query is per query.
	outputs := []string{"anomaly_score", "anomaly_expected", "anomaly_lower", "anomaly_upper"}
	req := &prompb.ReadRequest{}
	for _, name := range outputs {
		req.Queries = append(req.Queries, rrQuery(t0, tEnd, "metric", "e2e_rr_gauge", "__name__", name).Queries...)
	}
	history := map[string][]prompb.Sample{} // by __name__
	histLabels := map[string]string{}
	err := e2eEventually(20*time.Second, 200*time.Millisecond, func() error {
		code, resp, body := rrRead(t, env.dURL, req)
		if code != 200 {
			return e2eFatal(fmt.Errorf("read: %d %s", code, body))
		}
		clear(history)
		for i, res := range resp.Results {
			for _, s := range res.Timeseries {
				history[outputs[i]] = s.Samples
				histLabels[outputs[i]] = rrLabels(s.Labels)
			}
		}
		if len(history["anomaly_score"]) != n || len(history["anomaly_upper"]) == 0 {
			return fmt.Errorf("history has %d scores and %d upper samples, want %d and some", len(history["anomaly_score"]), len(history["anomaly_upper"]), n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("anomalyd's history: %v", err)
	}
	if len(history) != 4 {
		t.Fatalf("history has %d output series, want 4: %v", len(history), histLabels)
	}
	if peak := maxValue(history["anomaly_score"][200:]); peak <= 1 {
		t.Errorf("the step of +40 scores %g at most, want > 1", peak)
	}

	// Prometheus answers from anomalyd's history with the same labels,
	// timestamps and values.
	for name, want := range history {
		got, err := rrQueryRange(env.aURL, name+`{metric="e2e_rr_gauge"}`, t0, tEnd, time.Second)
		if err != nil {
			t.Fatalf("Prometheus: %v", err)
		}
		if len(got) != 1 {
			t.Fatalf("Prometheus has %d series for %s, want 1: %v", len(got), name, got)
		}
		pts, ok := got[histLabels[name]]
		if !ok {
			t.Fatalf("Prometheus's series for %s is not labelled %s: %v", name, histLabels[name], got)
		}
		if len(pts) != len(want) {
			t.Errorf("%s: Prometheus has %d points, the history %d", name, len(pts), len(want))
			continue
		}
		for i, p := range pts {
			if p.T != want[i].Timestamp || p.V != want[i].Value {
				t.Errorf("%s point %d: Prometheus (%d, %g), history (%d, %g)", name, i, p.T, p.V, want[i].Timestamp, want[i].Value)
				break
			}
		}
	}

	// /metrics shows the latest value of each output series, except the
	// combined score: the highest since the previous snapshot, here the
	// first (of every sample, the earlier ones held as float32).
	err = e2eEventually(10*time.Second, 200*time.Millisecond, func() error {
		body, err := e2eGet(env.dURL + "/metrics")
		if err != nil {
			return err
		}
		lines, err := e2eParseText(body)
		if err != nil {
			return e2eFatal(err)
		}
		for name, want := range history {
			found := false
			for _, l := range lines {
				if l.Name == name && l.Labels["metric"] == "e2e_rr_gauge" {
					found = true
					last := want[len(want)-1].Value
					if name == "anomaly_score" {
						for _, p := range want[:len(want)-1] {
							last = max(last, float64(float32(p.Value)))
						}
					}
					if l.Value != last {
						return fmt.Errorf("/metrics %s = %g, history's last (highest, for the score) %g", l.Line, l.Value, last)
					}
				}
			}
			if !found {
				return fmt.Errorf("/metrics has no %s for e2e_rr_gauge", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// Bad reads get a 4xx and the server carries on.
	bomb := snappy.Encode(nil, make([]byte, 40<<20)) // 40 MiB decoded, over the 32 MiB default
	fake := append(binary.AppendUvarint(nil, 1<<31), 0, 0, 0)
	unknown, _ := (&prompb.ReadRequest{Queries: rrQuery(t0, tEnd).Queries,
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{9}}).Marshal()
	huge, _ := (&prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "__name__", Value: ".+"}}}}}).Marshal()
	for _, tc := range []struct {
		name string
		body []byte
		code int
		msg  string
	}{
		{"garbage", []byte("not snappy, not protobuf"), 400, "snappy"},
		{"snappy bomb", bomb, 400, "history.max_decoded_bytes"},
		{"snappy length lie", fake, 400, "history.max_decoded_bytes"},
		{"unknown response type", snappy.Encode(nil, unknown), 400, "response types"},
		{"huge range", snappy.Encode(nil, huge), 400, "history.max_samples_per_query"},
	} {
		code, _, body := rrPost(t, env.dURL, tc.body)
		if code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, code, body, tc.code, tc.msg)
		}
		if code, _, body := rrRead(t, env.dURL, rrQuery(t0, tEnd, "__name__", "anomaly_score")); code != 200 {
			t.Fatalf("after %s: good read got %d %s", tc.name, code, body)
		}
	}
	if env.d.exited() {
		t.Fatalf("anomalyd exited: %v", env.d.waitErr)
	}
}

func maxValue(ss []prompb.Sample) float64 {
	m := math.Inf(-1)
	for _, s := range ss {
		m = max(m, s.Value)
	}
	return m
}
