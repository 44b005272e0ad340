package sink

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/history"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/sink/metrics"
	"github.com/anomalyd/anomalyd/sink/remotewrite"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window/series"
)

// TestDriverSeriesAgree: /metrics, remote write and remote read show the
// same driver and value series, with the same labels and values, as they
// do the other outputs.
func TestDriverSeriesAgree(t *testing.T) {
	a := sinktest.Info("__name__", "cpu", "job", "a", "metric", "clash")
	b := sinktest.Info("__name__", "cpu", "job", "b")
	steps := sinktest.DriverRun(a, b)
	steps = steps[:len(steps)-1] // a stays live, for /metrics

	// Remote write: every step's batch, RW1 and RW2, as a store decodes it.
	written := [2]sinktest.Oracle{
		remoteWrite(t, wire.MessageWriteV1, steps),
		remoteWrite(t, wire.MessageWriteV2, steps),
	}
	sinktest.CompareOracles(t, written[1], written[0])

	// Remote read of the history, both response types.
	h := history.New(time.Hour, 1_000_000, func() series.Names { return sinktest.Names }, nil)
	for _, recs := range steps {
		h.Append(recs)
	}
	hcfg := config.DefaultHistoryConfig
	handler := history.NewReadHandler(h, &hcfg, nil, nil)
	q := sinktest.PBQuery(math.MinInt64, math.MaxInt64, sinktest.PBMatcher(prompb.LabelMatcher_RE, "__name__", "anomaly_.+"))
	rec := sinktest.PostRead(handler, sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: sinktest.SamplesOnly}), nil)
	sinktest.CompareOracles(t, sinktest.ResultOracle(t, sinktest.DecodeSamplesResponse(t, rec).Results[0]), written[0])
	rec = sinktest.PostRead(handler, sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: sinktest.StreamedPref}), nil)
	sinktest.CompareOracles(t, sinktest.StreamedOracles(t, sinktest.ReadFrames(t, rec.Body.Bytes()), []*prompb.Query{q})[0], written[0])

	// /metrics: the last step's records as a snapshot; each line is the last
	// sample of a written series that is not stale at that step.
	last := steps[len(steps)-1]
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := metrics.WriteScores(w, &sinktest.Names, [][]series.Record{last}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	scraped := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v := parseTextLine(t, line)
		scraped[k] = v
	}
	lastT := last[0].T
	live := map[string]float64{}
	for k, ss := range written[0] {
		if s := ss[len(ss)-1]; s.T == lastT && math.Float64bits(s.V) != math.Float64bits(sinktest.StaleNaN) {
			live[k] = s.V
		}
	}
	if fmt.Sprint(scraped) != fmt.Sprint(live) {
		t.Errorf("/metrics:\n%v\nremote write at the last step:\n%v", scraped, live)
	}
	if n := len(live); n != 4+4+1+4+2 {
		t.Errorf("%d live infos, want 15 (a: 4 + 4 drivers + value, b: 4 + ewma and slope drivers)", n)
	}
}

// remoteWrite sends each step's records through a RemoteWriter speaking msg
// and returns what the store decoded once Stop has flushed them.
func remoteWrite(t *testing.T, msg string, steps [][]series.Record) sinktest.Oracle {
	t.Helper()
	rc := sinktest.NewReceiver(t)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	cfg := config.DefaultRemoteWriteConfig
	cfg.URL, cfg.Name, cfg.ProtobufMessage = srv.URL, "test", msg
	w, err := remotewrite.NewRemoteWriter(&cfg, sinktest.Names, "", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	for _, recs := range steps {
		w.Append(recs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.Stop(ctx)
	rc.Mu.Lock()
	defer rc.Mu.Unlock()
	return rc.Series
}

// parseTextLine turns `name{l="v",…} value` (no escapes) into a labelKey
// with __name__ and the value.
func parseTextLine(t *testing.T, line string) (string, float64) {
	t.Helper()
	name, rest, ok := strings.Cut(line, "{")
	lbls, val, ok2 := strings.Cut(rest, "} ")
	if !ok || !ok2 {
		t.Fatalf("bad line %q", line)
	}
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for _, kv := range strings.Split(lbls, ",") {
		n, v, _ := strings.Cut(kv, "=")
		ls = append(ls, prompb.Label{Name: n, Value: strings.Trim(v, `"`)})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	f, err := strconv.ParseFloat(val, 64)
	if err != nil {
		t.Fatalf("bad value in %q: %v", line, err)
	}
	return sinktest.LabelKey(ls), f
}
