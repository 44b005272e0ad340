package window

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Top ranks live series by their latest combined score over every shard,
// filters before it ranks, counts the anomalous ones, and takes nothing
// from /metrics: a spike read by Top still reaches the next snapshot.
func TestTop(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	noise := func(i int) float64 { return 10 + float64((i*7919)%13)/13 }
	const n = 12
	for s := range n {
		e.send(t, false, ramp(t0, 400, 1000, noise), "__name__", "g", "i", fmt.Sprint(s))
	}
	// Series 3, 7 and 9 jump, by different amounts; series 11 gets a
	// counter that is still warming up and must not be listed.
	spikeT := t0 + 400_000
	for s, v := range map[int]float64{3: 1000, 7: 100, 9: 40} {
		e.send(t, false, []Sample{{T: spikeT, V: v}}, "__name__", "g", "i", fmt.Sprint(s))
	}
	e.send(t, true, ramp(t0, 5, 1000, func(i int) float64 { return float64(i) }), "__name__", "c_total")
	latest := map[string]series.Record{}
	for _, r := range e.rec.Take() {
		if r.Detector == detectors.KindCombined && !r.Stale {
			latest[r.Series.Labels] = r
		}
	}

	top, live, anomalous := e.s.Top(4, nil)
	if live != n {
		t.Errorf("live %d, want %d (the warming counter left out)", live, n)
	}
	if len(top) != 4 {
		t.Fatalf("got %d series, want 4", len(top))
	}
	for i, r := range top {
		want := latest[r.Series.Labels]
		if r.Score != want.Score || r.T != want.T || r.Analysed != want.Analysed || r.Expected != want.Expected {
			t.Errorf("top[%d] %+v, want the latest record %+v", i, r, want)
		}
		if i > 0 && r.Score > top[i-1].Score {
			t.Errorf("top[%d] scores %v above top[%d] %v", i, r.Score, i-1, top[i-1].Score)
		}
	}
	wantOrder := []string{"3", "7", "9"}
	for i, w := range wantOrder {
		if got := series.LabelValue(top[i].Series.Labels, "i"); got != w {
			t.Errorf("top[%d] is series %s, want %s (the biggest jump first)", i, got, w)
		}
	}
	if top[0].Analysed != 1000 || !(top[0].Score >= 1) {
		t.Errorf("top series %+v: want value 1000 scoring 1 or more", top[0])
	}
	if anomalous < 2 {
		t.Errorf("%d anomalous, want at least series 3 and 7", anomalous)
	}
	var all int
	for _, r := range latest {
		if r.Score >= 1 && !r.Warmup {
			all++
		}
	}
	if anomalous != all {
		t.Errorf("%d anomalous, want %d (the latest records scoring 1 or more)", anomalous, all)
	}

	// A filter is applied before ranking: the best of the even series.
	even := func(info *series.Info) bool {
		v := series.LabelValue(info.Labels, "i")
		return v != "" && (v[len(v)-1]-'0')%2 == 0
	}
	top, _, anomalous = e.s.Top(2, even)
	for _, r := range top {
		if !even(r.Series) {
			t.Errorf("filtered top has %s", r.Series.Labels)
		}
	}
	if len(top) != 2 || anomalous != 0 {
		t.Errorf("even series: %d listed, %d anomalous; want 2 and 0 (none jumped)", len(top), anomalous)
	}

	// /metrics still sees the spike of series 3 after Top read it.
	for _, r := range e.snapshot() {
		if strings.Contains(r.Series.Labels, "i\xff3\xff") && !(r.Score >= 1) {
			t.Errorf("snapshot of series 3 scores %v after Top: want the spike's peak", r.Score)
		}
	}
	if top, _, _ := e.s.Top(0, nil); top != nil {
		t.Errorf("Top(0) = %v, want nothing", top)
	}
}

// Recent gives a series' rolling window of analysed values (a counter's
// rates), a sleeping series its run, and a series that is gone nothing.
func TestRecent(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	p, _ := CompileRules(config.Default()).ParamsFor(string(key("__name__", "g")))
	e.send(t, false, ramp(t0, 50, 1000, func(i int) float64 { return float64(i) }), "__name__", "g")
	e.send(t, true, ramp(t0, 50, 1000, func(i int) float64 { return 3 * float64(i) }), "__name__", "c_total")
	e.send(t, false, ramp(t0, 900, 1000, func(int) float64 { return 7 }), "__name__", "k")
	infos := map[string]*series.Info{}
	for _, r := range e.rec.Take() {
		infos[r.Series.Name] = r.Series
	}
	gone := &series.Info{Labels: string(key("__name__", "nope")), Hash: series.Hash(key("__name__", "nope"))}
	got := make([][]Sample, 4)
	e.s.Recent([]*series.Info{infos["g"], infos["c_total"], infos["k"], gone}, func(i int, t int64, v float64) {
		got[i] = append(got[i], Sample{T: t, V: v})
	})
	if g := got[0]; len(g) != p.Window || g[0] != (Sample{T: t0 + int64(50-p.Window)*1000, V: float64(50 - p.Window)}) || g[len(g)-1] != (Sample{T: t0 + 49_000, V: 49}) {
		t.Errorf("gauge: %v, want its last %d samples", g, p.Window)
	}
	if c := got[1]; len(c) != p.Window || c[len(c)-1] != (Sample{T: t0 + 49_000, V: 3}) {
		t.Errorf("counter: %v, want its last %d rates (3/s)", c, p.Window)
	}
	if k := got[2]; len(k) != 2 || k[0] != (Sample{T: t0, V: 7}) || k[1] != (Sample{T: t0 + 899_000, V: 7}) {
		t.Errorf("sleeping constant: %v, want its run's first and latest sample", k)
	}
	if got[3] != nil {
		t.Errorf("a series that is not there: %v", got[3])
	}
}

// Detail keeps every detector's verdict for the series a reader asks
// about, from its next sample on, until nobody asked for detailTTL.
func TestDetail(t *testing.T) {
	e := newEnv(t, config.Default(), nil)
	noise := func(i int) float64 { return 10 + float64((i*7919)%13)/13 }
	e.send(t, false, ramp(t0, 400, 1000, noise), "__name__", "g")
	var info *series.Info
	for _, r := range e.rec.Take() {
		info = r.Series
	}
	if _, _, _, ok := e.s.Detail(info); ok {
		t.Fatal("a detail before anyone asked")
	}
	e.send(t, false, []Sample{{T: t0 + 400_000, V: 50}}, "__name__", "g")
	recs := e.rec.Take()
	dt, d, asleep, ok := e.s.Detail(info)
	if !ok || dt != t0+400_000 || asleep {
		t.Fatalf("detail at %d %+v asleep %v ok %v: want the sample at %d", dt, d, asleep, ok, t0+400_000)
	}
	last := recs[len(recs)-1]
	if d.Combined.Score != last.Score || d.Combined.Expected != last.Expected || d.Driver != last.Driver {
		t.Errorf("combined %+v driver %s, want the record's %+v", d.Combined, d.Driver, last)
	}
	for k := range detectors.NumKinds {
		// The slope judges where the window was heading, not the sample.
		if r := d.Per[k]; !r.Ready || !(r.Score > 1) && detectors.Kind(k) != detectors.KindSlope {
			t.Errorf("%s: %+v, want a Ready score above 1 for a jump from 10 to 50", detectors.Kind(k), r)
		}
	}
	sh := e.s.shards[int(info.Hash%uint64(e.s.N()))]
	var n int
	e.s.onShard(sh.id, func() {
		sh.expireDetail(time.Now().Add(detailTTL + time.Minute).UnixMilli())
		n = len(sh.detail)
	})
	if n != 0 {
		t.Fatalf("%d details kept after detailTTL", n)
	}

	// A series nobody asked about that alarms has its detail at once: the
	// page opens alarmed series.
	e.send(t, false, ramp(t0, 400, 1000, noise), "__name__", "h")
	e.send(t, false, []Sample{{T: t0 + 400_000, V: 50}}, "__name__", "h")
	recs = e.rec.Take()
	h := recs[len(recs)-1]
	if h.Series.Name != "h" || h.Score < 1 {
		t.Fatalf("h's jump scored %+v, want an alarm", h)
	}
	if dt, d, _, ok := e.s.Detail(h.Series); !ok || dt != t0+400_000 || d.Combined.Score != h.Score {
		t.Fatalf("detail of an alarmed series on the first ask: at %d ok %v %+v; want its alarm", dt, ok, d.Combined)
	}

	gone := &series.Info{Labels: string(key("__name__", "nope")), Hash: series.Hash(key("__name__", "nope"))}
	gsh := e.s.shards[int(gone.Hash%uint64(e.s.N()))]
	var before int
	e.s.onShard(gsh.id, func() { before = len(gsh.detail) })
	if _, _, _, ok := e.s.Detail(gone); ok {
		t.Fatal("a detail of a series that is not there")
	}
	e.s.onShard(gsh.id, func() { n = len(gsh.detail) })
	if n != before {
		t.Fatalf("asking about a series that is not there: %d entries, %d before", n, before)
	}
}
