package ui

import (
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/series"
)

// clock is a settable wall clock for a Store.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestStore(opts Options) (*Store, *clock, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	s := NewStore(opts, reg)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s.now = c.now
	return s, c, reg
}

func rec(info *series.Info, t int64, score, v float64) series.Record {
	return series.Record{Series: info, T: t, Detector: detectors.KindCombined, Score: score, Analysed: v,
		Expected: 10, Lower: 8, Upper: 12, Driver: detectors.KindEWMA}
}

func points(t *testing.T, s *Store, info *series.Info) []Point {
	t.Helper()
	pts, ok := s.Lookup(info.Labels)
	if !ok {
		return nil
	}
	return pts
}

// A series is kept from its first score of 1 or more, with every combined
// sample after it, oldest first, at most Points of them.
func TestStoreKeepsFromFirstAlarm(t *testing.T) {
	s, _, _ := newTestStore(Options{MaxSeries: 10, Points: 5, Retention: time.Hour})
	a, b := sinktest.Info("__name__", "a"), sinktest.Info("__name__", "b")
	s.Append([]series.Record{rec(a, 1, 0.5, 10), rec(b, 1, 0.2, 10)})
	if pts := points(t, s, a); pts != nil {
		t.Fatalf("a kept before it alarmed: %v", pts)
	}
	// Warm-up and stale records do not admit, nor do single detectors'.
	w := rec(a, 2, 5, 10)
	w.Warmup = true
	single := rec(a, 2, 5, 10)
	single.Detector = detectors.KindEWMA
	s.Append([]series.Record{w, single, {Series: a, T: 2, Detector: detectors.KindCombined, Stale: true}})
	if pts := points(t, s, a); pts != nil {
		t.Fatalf("a kept after a warm-up, a single detector's and a stale record: %v", pts)
	}
	s.Append([]series.Record{rec(a, 3, 1.5, 30), rec(b, 3, 0.1, 10)})
	for i := int64(4); i < 10; i++ {
		s.Append([]series.Record{rec(a, i, 0.1, float64(i)), single})
	}
	pts := points(t, s, a)
	if len(pts) != 5 || pts[0].T != 5 || pts[4].T != 9 || pts[4].Value != 9 || pts[4].Expected != 10 || pts[4].Driver != detectors.KindEWMA {
		t.Fatalf("a's points %+v: want the last 5 (t 5–9), oldest first", pts)
	}
	if points(t, s, b) != nil {
		t.Fatal("b kept without an alarm")
	}
	if got := s.Series(nil); len(got) != 1 || got[0].Info != a {
		t.Fatalf("Series(nil) = %+v, want a only", got)
	}
}

// Full, an alarm evicts a watched series first, then the series whose last
// alarm is oldest, if over a minute old; else it is refused and counted.
func TestStoreEviction(t *testing.T) {
	s, c, reg := newTestStore(Options{MaxSeries: 3, Points: 4, Retention: time.Hour})
	infos := sinktest.Infos(6)
	s.Append([]series.Record{rec(infos[0], 1, 2, 1)})
	c.t = c.t.Add(30 * time.Second)
	s.Append([]series.Record{rec(infos[1], 2, 2, 1)})
	s.Watch([]*series.Info{infos[2]})
	c.t = c.t.Add(20 * time.Second)
	// Full: the watched series goes.
	s.Append([]series.Record{rec(infos[3], 3, 2, 1)})
	if _, ok := s.Lookup(infos[2].Labels); ok {
		t.Fatal("the watched series stayed, an alarmed one came in: want it evicted first")
	}
	// Full of series alarmed within the last minute: refused.
	s.Append([]series.Record{rec(infos[4], 4, 2, 1)})
	if _, ok := s.Lookup(infos[4].Labels); ok {
		t.Fatal("admitted over series alarmed within a minute")
	}
	if n := promreg.Value(s.refused); n != 1 {
		t.Fatalf("refused %v, want 1", n)
	}
	// A watch never displaces an alarmed series.
	s.Watch([]*series.Info{infos[5]})
	if _, ok := s.Lookup(infos[5].Labels); ok {
		t.Fatal("a watch displaced an alarmed series")
	}
	// 40 s later series 0's alarm is 90 s old: it goes.
	c.t = c.t.Add(40 * time.Second)
	s.Append([]series.Record{rec(infos[4], 5, 2, 1)})
	if _, ok := s.Lookup(infos[0].Labels); ok {
		t.Fatal("series 0 (oldest alarm) stayed")
	}
	for _, i := range []int{1, 3, 4} {
		if _, ok := s.Lookup(infos[i].Labels); !ok {
			t.Fatalf("series %d gone", i)
		}
	}
	if n := promreg.Value(s.evicted); n != 2 {
		t.Fatalf("evicted %v, want 2", n)
	}
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 3 {
		t.Fatalf("registered %d metric families (%v), want 3", len(mfs), err)
	}
	if n := promreg.Value(s.kept); n != 3 {
		t.Fatalf("anomalyd_ui_series %v, want 3", n)
	}
}

// A series is dropped a retention after its last alarm; a later alarm
// renews it, and a new life of the series (a new series.Info with the same
// labels) continues its track.
func TestStoreRetention(t *testing.T) {
	s, c, _ := newTestStore(Options{MaxSeries: 10, Points: 8, Retention: 10 * time.Minute})
	a := sinktest.Info("__name__", "a")
	s.Append([]series.Record{rec(a, 1, 3, 1)})
	c.t = c.t.Add(8 * time.Minute)
	s.Append([]series.Record{rec(a, 2, 1.2, 1)}) // renews
	c.t = c.t.Add(8 * time.Minute)
	s.Append([]series.Record{rec(a, 3, 0.1, 1)})
	if pts := points(t, s, a); len(pts) != 3 {
		t.Fatalf("points %+v, want 3: the alarm at 8 min renewed the series", pts)
	}
	a2 := sinktest.Info("__name__", "a") // the series came back after it ended
	s.Append([]series.Record{rec(a2, 4, 0.1, 1)})
	if pts := points(t, s, a); len(pts) != 3 {
		t.Fatal("a new life kept before it alarmed")
	}
	s.Append([]series.Record{rec(a2, 5, 2, 1), rec(a2, 6, 0.1, 1)})
	if pts := points(t, s, a); len(pts) != 5 || pts[4].T != 6 {
		t.Fatalf("points %+v: want the new life's alarm and what follows it added", pts)
	}
	c.t = c.t.Add(11 * time.Minute)
	s.Append(nil)
	if _, ok := s.Lookup(a.Labels); ok {
		t.Fatal("kept 11 min after its last alarm with a retention of 10")
	}
	if n := len(s.index.Load().m); n != 0 {
		t.Fatalf("index holds %d series after the sweep", n)
	}
}

// Append reads the index without a lock and does not allocate for series
// it does not keep.
func TestStoreAppendAllocs(t *testing.T) {
	s, _, _ := newTestStore(DefaultOptions)
	infos := sinktest.Infos(500)
	recs := sinktest.Records(infos, 1)
	for i := range recs {
		recs[i].Score = 0.5
	}
	s.Append([]series.Record{rec(infos[0], 1, 3, 1)})
	if n := testing.AllocsPerRun(100, func() { s.Append(recs) }); n != 0 {
		t.Fatalf("Append allocates %v times a batch", n)
	}
}

// The store's memory is bounded by MaxSeries × Points points whatever the
// traffic: filled to the brim with DefaultOptions, its live heap stays
// within 10 % of MaxSeries × Points × 48 bytes plus a small allowance a series.
func TestStoreMemoryBound(t *testing.T) {
	infos := sinktest.Infos(3 * DefaultOptions.MaxSeries)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, c, _ := newTestStore(DefaultOptions)
	for round := range 2 * DefaultOptions.Points {
		c.t = c.t.Add(2 * time.Minute) // every kept series may be evicted
		recs := sinktest.Records(infos, int64(round))
		for i := range recs {
			recs[i].Score = 2
		}
		s.Append(recs)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := len(s.index.Load().m); n != DefaultOptions.MaxSeries {
		t.Fatalf("%d series kept, want %d", n, DefaultOptions.MaxSeries)
	}
	points := DefaultOptions.MaxSeries * DefaultOptions.Points * pointSize
	perSeries := 400 // track, map entries, index entry
	grown := int(after.HeapAlloc) - int(before.HeapAlloc)
	t.Logf("store: %d bytes live, %.0f a kept series", grown, float64(grown)/float64(DefaultOptions.MaxSeries))
	if limit := points*11/10 + perSeries*DefaultOptions.MaxSeries; grown > limit {
		t.Fatalf("store holds %d bytes, want at most %d", grown, limit)
	}
	runtime.KeepAlive(s)
	runtime.KeepAlive(infos)
}

// BenchmarkStoreAppend: what every combined record costs the store, with
// 100 series kept (one record in 20 theirs) and with the store full (one
// in 10).
func BenchmarkStoreAppend(b *testing.B) {
	for _, c := range []struct {
		name        string
		kept, every int
	}{{"kept=100", 100, 20}, {"full", DefaultOptions.MaxSeries, 10}} {
		b.Run(c.name, func(b *testing.B) {
			s, _, _ := newTestStore(DefaultOptions)
			infos := sinktest.Infos(c.kept * c.every)
			recs := sinktest.Records(infos, 1)
			for i := range recs {
				recs[i].Score = 0.5
			}
			for i := range c.kept {
				s.Append([]series.Record{rec(infos[i*c.every], 1, 3, 1)})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s.Append(recs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
		})
	}
}

// An alarm storm in one batch: the store keeps as many as it may, each with
// the batch's later points, refuses the rest, and indexes them all at the
// end of the batch.
func TestStoreStorm(t *testing.T) {
	s, _, _ := newTestStore(Options{MaxSeries: 100, Points: 8, Retention: time.Hour})
	infos := sinktest.Infos(300)
	var batch []series.Record
	for round := range 3 {
		for _, info := range infos {
			batch = append(batch, rec(info, int64(round), 2, float64(round)))
		}
	}
	s.Append(batch)
	if n := len(s.index.Load().m); n != 100 {
		t.Fatalf("%d series indexed, want 100", n)
	}
	for _, k := range s.Series(nil) {
		if len(k.Points) != 3 {
			t.Fatalf("%s kept %d points of its 3 in the batch", k.Info.Labels, len(k.Points))
		}
	}
	if n := promreg.Value(s.refused); n != 3*200 {
		t.Fatalf("refused %v, want 600 (200 series, 3 alarms each)", n)
	}
}
