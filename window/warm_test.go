package window

import (
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/prometheus/model/value"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// fakeWarmer records requests; the test answers them.
type fakeWarmer struct {
	mu     sync.Mutex
	reqs   []WarmRequest
	refuse bool
}

func (f *fakeWarmer) Warm(r WarmRequest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse {
		return false
	}
	f.reqs = append(f.reqs, r)
	return true
}

func (f *fakeWarmer) only(t *testing.T) WarmRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) != 1 {
		t.Fatalf("warmer got %d requests, want 1", len(f.reqs))
	}
	return f.reqs[0]
}

const (
	warmLookback = 25 * time.Hour
	warmTimeout  = 2 * time.Minute
)

func newWarmEnv(t *testing.T, maxBuffered int, mod func(*Options)) (*env, *fakeWarmer) {
	fw := &fakeWarmer{}
	e := newEnv(t, config.Default(), func(o *Options) {
		o.Warmup = WarmupOptions{Warmer: fw, Lookback: warmLookback, MaxBuffered: maxBuffered, Timeout: warmTimeout}
		if mod != nil {
			mod(o)
		}
	})
	return e, fw
}

// seasonal is a daily sine with a little deterministic noise, every minute;
// as a counter it grows at that rate per second.
func seasonal(start int64, n int, counter bool) []Sample {
	out := make([]Sample, n)
	var total float64
	for i := range out {
		t := start + int64(i)*60_000
		rate := 100 + 50*math.Sin(2*math.Pi*float64(t%86_400_000)/86_400_000) + float64(i*7919%13)/4
		v := rate
		if counter {
			total += rate * 60
			v = total
		}
		out[i] = Sample{T: t, V: v}
	}
	return out
}

// reference runs history (before the first live sample) and live through an
// Analyser: what a warmed series must emit for its live samples.
func reference(t *testing.T, counter bool, history, live []Sample) []series.Record {
	p, _ := CompileRules(config.Default()).ParamsFor(string(key("__name__", "w")))
	a := NewAnalyser(p, counter)
	for _, h := range history {
		if h.T < live[0].T {
			a.Observe(h.T, h.V)
		}
	}
	var out []series.Record
	for _, s := range live {
		if o, ok := a.Observe(s.T, s.V); ok {
			c := o.Combined
			out = append(out, series.Record{T: s.T, Detector: detectors.KindCombined, Warmup: !c.Ready,
				Score: c.Score, Expected: c.Expected, Lower: c.Lower, Upper: c.Upper})
		}
	}
	return out
}

func sameRecords(t *testing.T, got, want []series.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.T != w.T || g.Warmup != w.Warmup || g.Stale || g.Score != w.Score || g.Expected != w.Expected ||
			g.Lower != w.Lower || g.Upper != w.Upper {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
	}
}

// A warming series holds its live samples (emitting nothing), then emits
// for them exactly what a series that had seen its history all along would:
// no live sample is lost or counted twice, and a counter's rate continues
// from the history without a fake reset.
func TestWarmupMatchesAnalyser(t *testing.T) {
	for _, counter := range []bool{false, true} {
		name := "gauge"
		if counter {
			name = "counter"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e, fw := newWarmEnv(t, 64, nil)
				now := time.Now().UnixMilli() / 60_000 * 60_000
				all := seasonal(now-1440*60_000, 1440+12, counter)
				history, live := all[:1440], all[1440:]
				// Live input as a sender gives it: in two requests, with a
				// retried (duplicate) sample and one out of order.
				in1 := live[:5]
				in2 := append([]Sample{live[4], live[2]}, live[5:10]...)
				e.send(t, counter, in1, "__name__", "w")
				e.send(t, counter, in2, "__name__", "w")
				if recs := e.rec.Take(); len(recs) != 0 {
					t.Fatalf("a warming series emitted %d records", len(recs))
				}
				req := fw.only(t)
				if req.Labels != string(key("__name__", "w")) || req.End != live[0].T-1 ||
					req.Start != req.End-warmLookback.Milliseconds() {
					t.Fatalf("request %q [%d, %d], want [%d, %d]", req.Labels, req.Start, req.End,
						live[0].T-1-warmLookback.Milliseconds(), live[0].T-1)
				}
				// History reaching into the live range (it must be cut at the
				// first live sample) and with a different value there.
				h := append(append([]Sample{}, history...), Sample{T: live[0].T, V: -1}, Sample{T: live[1].T, V: -1})
				if !req.Deliver(t.Context(), h, nil) {
					t.Fatal("shard did not take the history")
				}
				synctest.Wait()
				e.send(t, counter, live[10:], "__name__", "w")
				got := e.rec.Take()
				want := reference(t, counter, history, append(append([]Sample{}, in1...), append(in2, live[10:]...)...))
				sameRecords(t, got, want)
				if got[0].Warmup {
					t.Fatal("the first live sample after a day of history is still in warm-up")
				}
				st := e.stats()
				if st.counterResets != 0 || st.duplicates != 1 || st.outOfOrder != 1 || st.warmed != 1 || st.warming != 0 {
					t.Fatalf("stats %+v: want no reset, 1 duplicate, 1 out of order, 1 warmed, 0 warming", st)
				}
				// A fake reset would make the first rate the whole counter value.
				if got[0].Score >= 1 {
					t.Fatalf("first live sample after history scored %+v", got[0])
				}
				if n := len(e.snapshot()); n != 1 {
					t.Fatalf("snapshot has %d records, want 1", n)
				}
			})
		})
	}
}

type warmStats struct {
	counterResets, duplicates, outOfOrder, warmed, late, refused uint64
	gaveUp                                                       [numGaveUp]uint64
	warming                                                      int64
}

func (e *env) stats() warmStats {
	var w warmStats
	for _, sh := range e.s.shards {
		st := &sh.stats
		w.counterResets += st.counterResets.Load()
		w.duplicates += st.duplicates.Load()
		w.outOfOrder += st.outOfOrder.Load()
		w.warmed += st.warmed.Load()
		w.late += st.warmLate.Load()
		w.refused += st.warmRefused.Load()
		w.warming += st.warming.Load()
		for i := range w.gaveUp {
			w.gaveUp[i] += st.warmGaveUp[i].Load()
		}
	}
	return w
}

// Cold series are what a series without warm-up emits.
func coldReference(t *testing.T, live []Sample) []series.Record {
	return reference(t, false, nil, live)
}

// A full buffer stops the wait: the held samples are scored cold at once
// and the history that comes later is ignored.
func TestWarmupBufferFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, fw := newWarmEnv(t, 4, nil)
		live := seasonal(time.Now().UnixMilli(), 6, false)
		e.send(t, false, live[:4], "__name__", "w")
		if n := len(e.rec.Take()); n != 0 {
			t.Fatalf("%d records while warming", n)
		}
		e.send(t, false, live[4:], "__name__", "w")
		sameRecords(t, e.rec.Take(), coldReference(t, live))
		req := fw.only(t)
		req.Deliver(t.Context(), seasonal(live[0].T-100*60_000, 100, false), nil)
		synctest.Wait()
		if n := len(e.rec.Take()); n != 0 {
			t.Fatalf("late history emitted %d records", n)
		}
		if st := e.stats(); st.gaveUp[gaveUpBufferFull] != 1 || st.late != 1 || st.warmed != 0 || st.warming != 0 {
			t.Fatalf("stats %+v: want 1 buffer_full, 1 late, 0 warmed, 0 warming", st)
		}
	})
}

// A failed read, or a refused request, starts the series cold with every
// live sample.
func TestWarmupFailureAndRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, fw := newWarmEnv(t, 64, nil)
		live := seasonal(time.Now().UnixMilli(), 5, false)
		e.send(t, false, live[:3], "__name__", "w")
		fw.only(t).Deliver(t.Context(), nil, errors.New("prometheus is down"))
		synctest.Wait()
		e.send(t, false, live[3:], "__name__", "w")
		sameRecords(t, e.rec.Take(), coldReference(t, live))

		fw.mu.Lock()
		fw.refuse = true
		fw.mu.Unlock()
		e.send(t, false, live, "__name__", "refused")
		if n := len(e.rec.Take()); n != len(live) {
			t.Fatalf("refused series emitted %d records, want %d at once", n, len(live))
		}
		if st := e.stats(); st.refused != 1 || st.warming != 0 {
			t.Fatalf("stats %+v: want 1 refused, 0 warming", st)
		}
	})
}

// A series whose history never comes stops waiting at its deadline, even
// when no further sample arrives.
func TestWarmupTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, _ := newWarmEnv(t, 64, nil)
		live := seasonal(time.Now().UnixMilli(), 3, false)
		e.send(t, false, live, "__name__", "w")
		time.Sleep(warmTimeout + warmTick(warmTimeout))
		synctest.Wait()
		sameRecords(t, e.rec.Take(), coldReference(t, live))
		if st := e.stats(); st.gaveUp[gaveUpTimeout] != 1 || st.warming != 0 {
			t.Fatalf("stats %+v: want 1 timeout", st)
		}
	})
}

// Eviction while warming scores the held samples, then ends the series; an
// answer for it that comes later is ignored, also when its slot already
// holds a new series that is warming itself.
func TestWarmupEvictedWhileWarming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, fw := newWarmEnv(t, 64, func(o *Options) {
			o.Shards = 1
			o.SeriesTTL = time.Minute
			o.Warmup.Timeout = time.Hour
		})
		live := seasonal(time.Now().UnixMilli(), 3, false)
		e.send(t, false, live, "__name__", "w")
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		recs := e.rec.Take()
		if len(recs) != len(live)+1 || !recs[len(recs)-1].Stale {
			t.Fatalf("got %d records (%+v), want %d scores then a stale marker", len(recs), recs, len(live))
		}
		sameRecords(t, recs[:len(live)], coldReference(t, live))
		// A new series takes the freed slot and warms.
		e.send(t, false, seasonal(time.Now().UnixMilli(), 2, false), "__name__", "other")
		fw.mu.Lock()
		old, cur := fw.reqs[0], fw.reqs[1]
		fw.mu.Unlock()
		if old.slot != cur.slot {
			t.Fatalf("the new series got slot %d, not the freed %d; the test needs a reused slot", cur.slot, old.slot)
		}
		old.Deliver(t.Context(), seasonal(live[0].T-3_600_000, 60, false), nil)
		synctest.Wait()
		if n := len(e.rec.Take()); n != 0 {
			t.Fatalf("a late answer for an evicted series emitted %d records", n)
		}
		if st := e.stats(); st.gaveUp[gaveUpEvicted] != 1 || st.late != 1 || st.warming != 1 {
			t.Fatalf("stats %+v: want 1 evicted, 1 late, 1 warming", st)
		}
	})
}

// A reload that makes a rule ignore a warming series drops it; Stop scores
// what the other warming series hold.
func TestWarmupReloadAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, fw := newWarmEnv(t, 64, nil)
		live := seasonal(time.Now().UnixMilli(), 3, false)
		e.send(t, false, live, "__name__", "ignored_soon")
		e.send(t, false, live, "__name__", "kept")
		cfg, err := config.Load([]byte("rules:\n  - match: '{__name__=\"ignored_soon\"}'\n    action: ignore\n"))
		if err != nil {
			t.Fatal(err)
		}
		e.s.ApplyRules(CompileRules(cfg), false)
		fw.mu.Lock()
		first := fw.reqs[0]
		fw.mu.Unlock()
		first.Deliver(t.Context(), seasonal(live[0].T-3_600_000, 60, false), nil)
		synctest.Wait()
		if st := e.stats(); st.late != 1 || st.warming != 1 {
			t.Fatalf("stats %+v: want the ignored series' answer late, 1 still warming", st)
		}
		if n := len(e.rec.Take()); n != 0 {
			t.Fatalf("%d records before Stop", n)
		}
		if err := e.s.Stop(t.Context()); err != nil {
			t.Fatal(err)
		}
		recs := e.rec.Take()
		sameRecords(t, recs, coldReference(t, live))
		for _, r := range recs {
			if r.Series.Name != "kept" {
				t.Fatalf("record for %s after it was ignored", r.Series.Name)
			}
		}
	})
}

// History emits nothing, and so owes no stale markers: a series whose only
// live sample is a stale marker emits nothing at all.
func TestWarmupHistoryEmitsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, fw := newWarmEnv(t, 64, nil)
		now := time.Now().UnixMilli()
		e.send(t, false, []Sample{{T: now, V: math.Float64frombits(value.StaleNaN)}}, "__name__", "w")
		fw.only(t).Deliver(t.Context(), seasonal(now-100*60_000, 100, false), nil)
		synctest.Wait()
		if recs := e.rec.Take(); len(recs) != 0 {
			t.Fatalf("got %+v, want no records", recs)
		}
		if n := len(e.snapshot()); n != 0 {
			t.Fatalf("snapshot has %d records, want none", n)
		}
		if st := e.stats(); st.warmed != 1 {
			t.Fatalf("stats %+v: want 1 warmed", st)
		}
	})
}
