package sink

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/series"
)

// The shards take an Outputs as their Appender.
var _ window.Appender = (*Outputs)(nil)

// loadConfig loads the config text fmt.Sprintf(format, args...).
func loadConfig(t *testing.T, format string, args ...any) *config.Config {
	t.Helper()
	text := fmt.Sprintf(format, args...)
	cfg, err := config.Load([]byte(text))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return cfg
}

func newTestOutputs(t *testing.T, cfg *config.Config) (*Outputs, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	o, err := NewOutputs(cfg, "", prometheus.NewRegistry(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	return o, logs
}

func stopOutputs(o *Outputs) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o.Stop(ctx)
}

// received returns what rc decoded, under its lock.
func received(rc *sinktest.Receiver) sinktest.Oracle {
	rc.Mu.Lock()
	defer rc.Mu.Unlock()
	out := sinktest.Oracle{}
	for k, ss := range rc.Series {
		out[k] = append([]sinktest.Sample(nil), ss...)
	}
	return out
}

// TestOutputsAppend: every record reaches each remote_write store and the
// history, under the configured names.
func TestOutputsAppend(t *testing.T) {
	rcA, rcB := sinktest.NewReceiver(t), sinktest.NewReceiver(t)
	srvA, srvB := httptest.NewServer(rcA), httptest.NewServer(rcB)
	defer srvA.Close()
	defer srvB.Close()
	cfg := loadConfig(t, `
output: {score_name: s, expected_name: e, lower_name: l, upper_name: u}
history: {retention: 1h}
remote_write:
  - {url: %s, name: a}
  - {url: %s, name: b, protobuf_message: io.prometheus.write.v2.Request}
`, srvA.URL, srvB.URL)
	o, _ := newTestOutputs(t, cfg)
	o.Start()
	infos := sinktest.Infos(3)
	want := sinktest.Oracle{}
	for ts := int64(1000); ts <= 3000; ts += 1000 {
		recs := sinktest.Records(infos, ts)
		o.Append(recs)
		want.Add(o.Names(), recs...)
	}
	stopOutputs(o)
	if n := len(want); n != 12 {
		t.Fatalf("oracle of %d series, want 12", n)
	}
	sinktest.CompareOracles(t, received(rcA), want)
	sinktest.CompareOracles(t, received(rcB), want)
	sinktest.CompareOracles(t, readHistory(t, o), want)
}

// readHistory reads every output series back from o's history.
func readHistory(t *testing.T, o *Outputs) sinktest.Oracle {
	t.Helper()
	h := o.ReadHandler()
	if h == nil {
		t.Fatal("no read handler: history.retention is set")
	}
	q := sinktest.PBQuery(math.MinInt64, math.MaxInt64, sinktest.PBMatcher(prompb.LabelMatcher_RE, "__name__", ".+"))
	rec := sinktest.PostRead(h, sinktest.EncodeRead(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}, AcceptedResponseTypes: sinktest.SamplesOnly}), nil)
	return sinktest.ResultOracle(t, sinktest.DecodeSamplesResponse(t, rec).Results[0])
}

// TestOutputsNoHistory: history.retention 0 turns the history and its read
// handler off; records still reach remote write.
func TestOutputsNoHistory(t *testing.T) {
	rc := sinktest.NewReceiver(t)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	o, _ := newTestOutputs(t, loadConfig(t, "history: {retention: 0s}\nremote_write: [{url: %s}]\n", srv.URL))
	if h := o.ReadHandler(); h != nil {
		t.Fatalf("ReadHandler() = %#v with the history off, want nil", h)
	}
	o.Start()
	o.Append(sinktest.Records(sinktest.Infos(2), 1000))
	stopOutputs(o)
	if n := rc.CheckOrder(t); n != 8 {
		t.Errorf("store received %d samples, want 8", n)
	}
}

// TestOutputsReload: a reload that keeps remote_write and output keeps the
// writers; one that renames an output applies the names at once, to the
// history's past too, and replaces the writers after the old ones have
// flushed; one that moves remote_write sends to the new store only; a
// failed one keeps what runs; history changes are logged and wait for a
// restart.
func TestOutputsReload(t *testing.T) {
	rcA, rcB := sinktest.NewReceiver(t), sinktest.NewReceiver(t)
	srvA, srvB := httptest.NewServer(rcA), httptest.NewServer(rcB)
	defer srvA.Close()
	defer srvB.Close()
	const text = "output: {score_name: %s}\nhistory: {retention: 1h}\nremote_write: [{url: %s, queue_config: {batch_send_deadline: 1h}}]\n"
	o, logs := newTestOutputs(t, loadConfig(t, text, "first_score", srvA.URL))
	o.Start()
	defer stopOutputs(o)
	x := sinktest.Info("__name__", "x")
	score := func(name string) string { return "__name__=" + name + ",detector=combined,metric=x" }
	o.Append(sinktest.Records([]*series.Info{x}, 1000))

	fan := o.fanout
	if err := o.Reload(loadConfig(t, text, "first_score", srvA.URL)); err != nil {
		t.Fatal(err)
	}
	if o.fanout != fan {
		t.Error("a reload without changes rebuilt the remote writers")
	}

	if err := o.Reload(loadConfig(t, text, "renamed_score", srvA.URL)); err != nil {
		t.Fatal(err)
	}
	if o.fanout == fan {
		t.Error("a reload that renames an output kept the remote writers")
	}
	if got := o.Names().Score; got != "renamed_score" {
		t.Errorf("Names().Score = %q after the reload, want renamed_score", got)
	}
	// The old writer flushed what it held, under the old name, although its
	// batch deadline is an hour away.
	if got := received(rcA)[score("first_score")]; !sinktest.SameSamples(got, []sinktest.Sample{{T: 1000, V: 1000}}) {
		t.Errorf("old writer flushed %v, want the sample at 1000", got)
	}
	o.Append(sinktest.Records([]*series.Info{x}, 2000))
	if got := readHistory(t, o)[score("renamed_score")]; !sinktest.SameSamples(got, []sinktest.Sample{{T: 1000, V: 1000}, {T: 2000, V: 2000}}) {
		t.Errorf("history under the new name: %v, want both samples", got)
	}

	if err := o.Reload(loadConfig(t, text, "renamed_score", srvB.URL)); err != nil {
		t.Fatal(err)
	}
	o.Append(sinktest.Records([]*series.Info{x}, 3000))

	// A remote_write that cannot be set up fails the reload and keeps B.
	bad := loadConfig(t, text, "renamed_score", srvB.URL)
	bad.RemoteWrite[0].URL = "ftp://store.test/write"
	fan = o.fanout
	if err := o.Reload(bad); err == nil || !strings.Contains(err.Error(), "cannot set up remote_write") {
		t.Errorf("reload with an ftp:// url: got %v", err)
	}
	if o.fanout != fan {
		t.Error("a failed reload replaced the remote writers")
	}

	// History settings wait for a restart, and the history stays.
	read := o.ReadHandler()
	if err := o.Reload(loadConfig(t, strings.Replace(text, "retention: 1h", "retention: 2h", 1), "renamed_score", srvB.URL)); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("history settings changed").Len() != 1 {
		t.Error("a history change was not logged")
	}
	if o.ReadHandler() != read {
		t.Error("a reload replaced the history's read handler")
	}

	stopOutputs(o)
	if got := received(rcA)[score("renamed_score")]; !sinktest.SameSamples(got, []sinktest.Sample{{T: 2000, V: 2000}}) {
		t.Errorf("store A got %v under the new name, want the sample at 2000 only", got)
	}
	if got := received(rcB)[score("renamed_score")]; !sinktest.SameSamples(got, []sinktest.Sample{{T: 3000, V: 3000}}) {
		t.Errorf("store B got %v, want the sample at 3000 only", got)
	}
	if err := o.Reload(loadConfig(t, text, "renamed_score", srvB.URL)); err == nil {
		t.Error("Reload after Stop succeeded")
	}
}

// TestOutputsReloadConcurrent: shards keep appending while reloads swap the
// writers (run with -race). Order is not checked: the old writers flush
// while the new ones send (see doc.go).
func TestOutputsReloadConcurrent(t *testing.T) {
	rc := sinktest.NewReceiver(t)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	const text = "output: {score_name: %s}\nremote_write: [{url: %s}]\n"
	o, _ := newTestOutputs(t, loadConfig(t, text, "s0", srv.URL))
	o.Start()
	var wg sync.WaitGroup
	for g := range 4 {
		infos := sinktest.Infos(50)[g*10 : (g+1)*10]
		wg.Go(func() {
			for i := range 200 {
				o.Append(sinktest.Records(infos, int64(1000+i)))
			}
		})
	}
	for i := range 5 {
		if err := o.Reload(loadConfig(t, text, fmt.Sprintf("s%d", i+1), srv.URL)); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	stopOutputs(o)
	if n := len(received(rc)); n == 0 {
		t.Error("the store received nothing")
	}
}

// TestOutputsAppendNoAllocs: the swap costs Append no allocation: with no
// remote_write and the history's head chunks grown, an Append allocates
// nothing (as History.Append alone, TestHistoryAppendNoAllocs).
func TestOutputsAppendNoAllocs(t *testing.T) {
	for _, text := range []string{"history: {retention: 0s}\n", ""} {
		o, _ := newTestOutputs(t, loadConfig(t, "%s", text))
		o.Start()
		infos := sinktest.Infos(64)
		ts := int64(0)
		for range 121 { // the history's first chunk of 120 samples, and its cut
			o.Append(sinktest.Records(infos, ts))
			ts += sinktest.Step
		}
		recs := sinktest.Records(infos, ts)
		if n := testing.AllocsPerRun(50, func() {
			for i := range recs {
				recs[i].T = ts
			}
			o.Append(recs)
			ts += sinktest.Step
		}); n != 0 {
			t.Errorf("config %q: %v allocations per Append, want 0", text, n)
		}
		stopOutputs(o)
	}
}
