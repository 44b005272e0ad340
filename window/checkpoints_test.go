package window

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window/checkpoint"
	"github.com/anomalyd/anomalyd/window/series"
	"github.com/anomalyd/anomalyd/window/windowtest"
)

// testSeries is one input series of the restart tests.
type testSeries struct {
	pairs   []string
	counter bool
	samples []Sample
}

// restartLoad is a deterministic load of every kind of series a shard
// treats differently: gauges with noise and a season, counters (rates), a
// gauge that only grows (its trial makes it a rate of change), one that
// ends with a stale marker, constants (which sleep) that change after the
// restart point, and spikes after it so that alarms are compared too.
// 15 s samples.
func restartLoad(nSeries, n int) []testSeries {
	var out []testSeries
	x := uint64(7)
	noise := func() float64 {
		x = x*6364136223846793005 + 1442695040888963407
		return float64(x>>11)/(1<<53) - 0.5
	}
	for s := range nSeries {
		ts := testSeries{pairs: []string{"__name__", "g", "instance", fmt.Sprint("i", s%4), "job", "j", "s", fmt.Sprint(s)}}
		var total float64
		for i := range n {
			t := t0 + int64(i)*15_000
			var v float64
			switch s % 4 {
			case 0: // a noisy seasonal gauge, with a spike late
				v = 100 + 20*math.Sin(2*math.Pi*float64(i)/240) + 3*noise()
				if i == n-n/5 {
					v += 200
				}
			case 1: // a counter
				ts.counter = true
				ts.pairs[1] = "c_total"
				switch {
				case s%16 == 13: // a constant rate, which sleeps, changing after the restart
					total += 3
					if i > n-n/5 {
						total += 2
					}
				case s%8 == 1:
					total += 10 + 2*noise()
				case i > n-n/5: // counting events, whose rate falls late: the count test
					total += math.Round(4 + 4*noise())
				default:
					total += math.Round(10 + 6*noise())
				}
				v = total
			case 2: // a gauge that only grows
				ts.pairs[1] = "grows"
				total += 1 + noise()
				v = total
			case 3: // a gauge that shifts level after the restart
				v = 50 + noise()
				if s%8 == 7 { // a constant, which sleeps
					v = 50
				}
				if i > n-n/3 || s%8 == 7 && i > n-n/5 {
					v += 20
				}
			}
			ts.samples = append(ts.samples, Sample{T: t, V: v})
		}
		out = append(out, ts)
	}
	return out
}

// feed sends samples [from, to) of every series, one batch per series.
func (e *env) feed(t *testing.T, load []testSeries, from, to int) {
	t.Helper()
	for _, ts := range load {
		e.send(t, ts.counter, ts.samples[from:to], ts.pairs...)
	}
}

// recordsBySeries groups records by series and drops the Series pointer,
// which differs between processes, so that two runs compare with ==.
func recordsBySeries(recs []series.Record) map[string][]series.Record {
	m := map[string][]series.Record{}
	for _, r := range recs {
		k := r.Series.Labels
		r.Series = nil
		m[k] = append(m[k], r)
	}
	return m
}

func compareRuns(t *testing.T, got, want []series.Record) {
	t.Helper()
	g, w := recordsBySeries(got), recordsBySeries(want)
	if len(g) != len(w) {
		t.Fatalf("%d series have records, want %d", len(g), len(w))
	}
	alarms := 0
	for k, wr := range w {
		gr := g[k]
		if len(gr) != len(wr) {
			t.Fatalf("%s: %d records, want %d", series.Format(k), len(gr), len(wr))
		}
		for i := range wr {
			if gr[i] != wr[i] {
				t.Fatalf("%s record %d:\n got %+v\nwant %+v", series.Format(k), i, gr[i], wr[i])
			}
			if wr[i].Score >= 1 {
				alarms++
			}
		}
	}
	if alarms == 0 {
		t.Fatal("no record scored 1 or more: the load does not test that alarms resume")
	}
}

// TestCheckpointResume: a run checkpointed and restored produces, for the
// same continued input, exactly the records of a run that never stopped,
// per-detector outputs included, whether the checkpoint was taken while
// the shards ran or after they stopped, and into another shard count.
func TestCheckpointResume(t *testing.T) {
	t.Run("per-detector outputs", func(t *testing.T) { testCheckpointResume(t, true) })
	// Without them, constant series sleep and are saved asleep.
	t.Run("combined only", func(t *testing.T) { testCheckpointResume(t, false) })
}

func testCheckpointResume(t *testing.T, perDetector bool) {
	cfg := loadConfig(t, fmt.Sprintf("output: {per_detector: %v, driver: true}\n", perDetector))
	const nSeries, n, cut = 24, 1200, 900
	load := restartLoad(nSeries, n)
	ref := newEnv(t, cfg, func(o *Options) { o.PerDetector = perDetector })
	ref.feed(t, load, 0, n)
	want := ref.rec.Take()
	refSnap := ref.snapshot()
	var wantAfter []series.Record
	for _, r := range want {
		if r.T >= load[0].samples[cut].T {
			wantAfter = append(wantAfter, r)
		}
	}

	for _, tc := range []struct {
		name         string
		live         bool // checkpoint while the shards run
		shardsBefore int
		shardsAfter  int
	}{
		{"at shutdown", false, 2, 2},
		{"while running", true, 2, 2},
		{"into more shards", false, 2, 3},
		{"into fewer shards", true, 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newEnv(t, cfg, func(o *Options) { o.Shards, o.PerDetector = tc.shardsBefore, perDetector })
			a.feed(t, load, 0, cut)
			if asleep := a.s.asleep(); asleep == 0 == !perDetector {
				t.Fatalf("%d series asleep at the checkpoint", asleep)
			}
			if tc.live {
				info, err := a.s.Checkpoint(t.Context(), dir, time.Now())
				if err != nil || info.Series != nSeries {
					t.Fatalf("live checkpoint: %+v %v, want %d series", info, err, nSeries)
				}
			}
			if err := a.s.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if !tc.live {
				info, err := a.s.Checkpoint(t.Context(), dir, time.Now())
				if err != nil || info.Series != nSeries {
					t.Fatalf("checkpoint after Stop: %+v %v, want %d series", info, err, nSeries)
				}
			}
			b := newStoppedEnv(t, cfg, tc.shardsAfter)
			ri := b.s.Restore(dir, time.Now())
			if ri.Series != nSeries || ri.Files != tc.shardsBefore || len(ri.Failed) > 0 {
				t.Fatalf("restore: %+v, want %d series from %d files", ri, nSeries, tc.shardsBefore)
			}
			b.s.Start()
			b.feed(t, load, cut, n)
			compareRuns(t, b.rec.Take(), wantAfter)
			// A snapshot's score is the highest since the previous one,
			// which neither run took: the restored run must remember the
			// peaks from before the checkpoint.
			g, w := recordsBySeries(b.snapshot()), recordsBySeries(refSnap)
			if len(g) != len(w) {
				t.Fatalf("snapshot: %d series, want %d", len(g), len(w))
			}
			for k := range w {
				if !slices.Equal(g[k], w[k]) {
					t.Fatalf("snapshot of %s:\n got %+v\nwant %+v", series.Format(k), g[k], w[k])
				}
			}
			if _, err := b.s.Checkpoint(t.Context(), dir, time.Now()); err != nil {
				t.Fatal(err)
			}
			if n, ok, _ := checkpoint.LatestSet(dir); !ok || n != tc.shardsAfter {
				t.Fatalf("after the next checkpoint the newest set has %d shards, want %d", n, tc.shardsAfter)
			}
			if got := ckptFiles(t, dir); len(got) != tc.shardsAfter {
				t.Fatalf("after the next checkpoint: files %q, want %d (one per shard, the old count's pruned)", got, tc.shardsAfter)
			}
		})
	}
}

// newStoppedEnv is newEnv with shards shards, not started: what a
// restart has before Restore.
func newStoppedEnv(t testing.TB, cfg *config.Config, shards int) *env {
	t.Helper()
	opts := Options{Shards: shards, QueueSize: 16, MaxSeries: 100, SeriesTTL: 15 * time.Minute, PublishInterval: time.Nanosecond,
		PerDetector: cfg.Output.PerDetector}
	rec := &windowtest.Recorder{}
	reg := prometheus.NewRegistry()
	s := New(opts, CompileRules(cfg), rec, reg)
	t.Cleanup(func() { s.Stop(context.Background()) })
	return &env{s: s, rec: rec, reg: reg}
}

func ckptFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestCheckpointWhileIngesting: a checkpoint taken while batches keep
// arriving holds every series that existed when it started, and the shard
// goroutine and the checkpointing one share nothing unsafely (make test
// runs it under -race). Whether ingestion waits meanwhile is measured under
// load in docs/performance.md, not here.
func TestCheckpointWhileIngesting(t *testing.T) {
	cfg := config.Default()
	const nSeries = 3000 // several chunks per shard
	e := newEnv(t, cfg, func(o *Options) { o.MaxSeries = 10_000; o.QueueSize = 64 })
	load := restartLoad(nSeries, 40)
	e.feed(t, load, 0, 20)
	dir := t.TempDir()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sent int
	wg.Go(func() {
		for i := 20; i < 40; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, ts := range load[:100] {
				b := e.s.GetBatch()
				k := key(ts.pairs...)
				b.Keys = append(b.Keys, k...)
				b.Samples = append(b.Samples, ts.samples[i])
				h := series.Hash(k)
				b.Series = append(b.Series, BatchSeries{Hash: h, KeyEnd: uint32(len(k)), SamplesEnd: 1, Counter: ts.counter})
				for e.s.Enqueue(int(h%uint64(e.s.N())), b) != nil {
					time.Sleep(time.Millisecond)
				}
				sent++
			}
		}
	})
	info, err := e.s.Checkpoint(t.Context(), dir, time.Now())
	close(stop)
	wg.Wait()
	if err != nil || info.Series != nSeries {
		t.Fatalf("checkpoint: %+v %v, want %d series", info, err, nSeries)
	}
	if sent == 0 {
		t.Fatal("nothing sent during the checkpoint")
	}
}

// TestRestoreDamaged: a corrupt or truncated shard file is reported with
// its cause and that shard's series start cold, while the other shard's
// are restored; a cancelled checkpoint keeps the previous one.
func TestRestoreDamaged(t *testing.T) {
	cfg := config.Default()
	const nSeries = 40
	load := restartLoad(nSeries, 200)
	for _, tc := range []struct {
		name  string
		harm  func(path string) error
		cause error
	}{
		{"bit flip", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 0x10
			return os.WriteFile(p, b, 0o644)
		}, checkpoint.ErrCorrupt},
		{"truncated", func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Truncate(p, fi.Size()*2/3)
		}, checkpoint.ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := newEnv(t, cfg, nil)
			a.feed(t, load, 0, 200)
			a.s.Stop(t.Context())
			if _, err := a.s.Checkpoint(t.Context(), dir, time.Now()); err != nil {
				t.Fatal(err)
			}
			path, ok, err := checkpoint.Latest(dir, 1, 2)
			if !ok || err != nil {
				t.Fatal(ok, err)
			}
			if err := tc.harm(path); err != nil {
				t.Fatal(err)
			}
			var inShard1 int
			for _, ts := range load {
				if series.Hash(key(ts.pairs...))%2 == 1 {
					inShard1++
				}
			}
			b := newStoppedEnv(t, cfg, 2)
			ri := b.s.Restore(dir, time.Now())
			if len(ri.Failed) != 1 || !errors.Is(ri.Failed[0], tc.cause) || ri.Series != nSeries-inShard1 || ri.Files != 1 {
				t.Fatalf("restore: %+v, want shard 1 (%d series) failed with %v and the others restored", ri, inShard1, tc.cause)
			}
			if got := b.s.active.Load(); got != int64(nSeries-inShard1) {
				t.Fatalf("%d series active after the restore, want %d: a failed file must leave none of its series", got, nSeries-inShard1)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		dir := t.TempDir()
		a := newEnv(t, cfg, nil)
		a.feed(t, load, 0, 100)
		if _, err := a.s.Checkpoint(t.Context(), dir, time.Now()); err != nil {
			t.Fatal(err)
		}
		before := ckptFiles(t, dir)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := a.s.Checkpoint(ctx, dir, time.Now()); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled checkpoint: %v", err)
		}
		if got := ckptFiles(t, dir); !slices.Equal(got, before) {
			t.Fatalf("after a cancelled checkpoint: %q, want %q", got, before)
		}
	})
}

// TestRestoreChangedSettings: a series whose rule's detector settings
// changed between checkpoint and restore keeps its identity but starts its
// detectors over (warm-up outputs), as on a reload; the others resume.
func TestRestoreChangedSettings(t *testing.T) {
	const nSeries = 8
	load := restartLoad(nSeries, 300)
	dir := t.TempDir()
	a := newEnv(t, config.Default(), nil)
	a.feed(t, load, 0, 280)
	a.s.Stop(t.Context())
	if _, err := a.s.Checkpoint(t.Context(), dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, `
rules:
  - match: '{s="0"}'
    detectors: {ewma: {alpha: 0.2}}
`)
	b := newStoppedEnv(t, cfg, 2)
	if ri := b.s.Restore(dir, time.Now()); ri.Series != nSeries || len(ri.Failed) > 0 {
		t.Fatalf("restore: %+v", ri)
	}
	b.s.Start()
	b.feed(t, load, 280, 281)
	for _, r := range b.rec.Take() {
		changed := r.Series.Labels == string(key(load[0].pairs...))
		if r.Warmup != changed {
			t.Errorf("%s: warm-up %v after the restore, want %v", series.Format(r.Series.Labels), r.Warmup, changed)
		}
	}
}

// loadedShard runs restartLoad(nSeries, n) through one shard under cfg
// and returns the stopped shard, to read its series' records.
func loadedShard(tb testing.TB, cfg *config.Config, nSeries, n int) *shard {
	a := newStoppedEnv(tb, cfg, 1)
	a.s.Start()
	for _, ts := range restartLoad(nSeries, n) {
		a.send(tb, ts.counter, ts.samples, ts.pairs...)
	}
	a.s.Stop(context.Background())
	return a.s.shards[0]
}

// FuzzRestoreSeries: no record, however damaged, panics the shard that
// restores it, and a record it takes encodes back to one that restores to
// the same series.
func FuzzRestoreSeries(f *testing.F) {
	cfg := config.Default()
	sh := loadedShard(f, cfg, 16, 300) // 16: sleeping series among them
	for i := range sh.slots.n {
		if se := sh.slots.at(i); se.info != nil {
			f.Add(sh.appendSeries(nil, se))
		}
	}
	b := newStoppedEnv(f, cfg, 1)
	s := b.s.shards[0]
	f.Fuzz(func(t *testing.T, rec []byte) {
		sv, err := parseSeries(rec)
		if err != nil {
			return
		}
		slot, res, err := s.restoreSeries(&sv, t0)
		if err != nil || res == restoreSkipped {
			if got := b.s.active.Load(); got != 0 {
				t.Fatalf("a refused record left %d series", got)
			}
			return
		}
		again := s.appendSeries(nil, s.slots.at(slot))
		sv2, err := parseSeries(again)
		if err != nil {
			t.Fatalf("re-encoded record does not parse: %v", err)
		}
		// Saved under other settings, the detectors restart and the rate
		// base is dropped (flagPrimed); everything else is kept.
		if sv2.labels != sv.labels || sv2.flags|flagPrimed != sv.flags|flagPrimed || sv2.lastT != sv.lastT || sv2.trial != sv.trial {
			t.Fatalf("re-encoded record differs: %+v vs %+v", sv2, sv)
		}
		if _, res, err := s.restoreSeries(&sv2, t0); err != nil || res != restoreReplaced {
			t.Fatalf("re-encoded record: %v %v", res, err)
		}
		s.forget(slot)
	})
}

// TestRestoreVersion1Record: a record written before the count test
// (version 1, no count field) or before series slept (versions 1 and 2, no
// run fields) still restores, with the count test to learn again and the
// run broken, and a record of the count test keeps its state.

// runFieldsLen is the size of a record's run fields: runN, runV, runT0, asleep.
const runFieldsLen = 4 + 8 + 8 + 1

// lastOutLen is the size of an encoded lastOut (lastOut.fields).
const lastOutLen = 8 + 4*8 + 1 + 1 + 1 + 4

// uvarintLen is the size of n as a uvarint.
func uvarintLen(n int) int { return len(binary.AppendUvarint(nil, uint64(n))) }

func TestRestoreVersion1Record(t *testing.T) {
	sh := loadedShard(t, config.Default(), 8, 300)
	var counted, valued int
	for i := range sh.slots.n {
		se := sh.slots.at(i)
		if se.info == nil {
			continue
		}
		rec := sh.appendSeries(nil, se)
		sv, err := parseSeries(rec)
		if err != nil {
			t.Fatalf("%s: %v", series.Format(se.info.Labels), err)
		}
		if sv.hasCount != (se.count != nil) || se.count != nil && sv.count != *se.count {
			t.Fatalf("%s: count test read back as %v %+v, saved %+v", series.Format(se.info.Labels), sv.hasCount, sv.count, se.count)
		}
		if se.count != nil {
			counted++
			continue
		}
		if sv.last != se.last {
			t.Fatalf("%s: latest output read back as %+v, saved %+v (with its analysed value)", series.Format(se.info.Labels), sv.last, se.last)
		}
		if se.last.value != 0 {
			valued++
		}
		// The version 3 layout: the same record without the analysed
		// value after the latest output; it reads as 0.
		valueAt := 1 + uvarintLen(len(se.info.Labels)) + len(se.info.Labels) + 8 + 1 + 1 + 8 + 8 + lastOutLen
		v3 := append(append([]byte{3}, rec[1:valueAt]...), rec[valueAt+8:]...)
		old3, err := parseSeries(v3)
		if err != nil || old3.last.value != 0 || old3.last.t != sv.last.t || old3.runN != sv.runN || string(old3.det) != string(sv.det) {
			t.Fatalf("%s: version 3 record read as %+v (%v), want %+v without the value", series.Format(se.info.Labels), old3, err, sv)
		}
		if sv.asleep {
			continue // versions 1 and 2 have no sleeping series
		}
		// The version 1 layout: version 3's without the count byte and
		// the run fields (21 bytes), which come right before the detector
		// state; version 2 has the count byte.
		at := len(v3) - len(sv.det) - runFieldsLen
		v2 := append(append([]byte{2}, v3[1:at]...), v3[at+runFieldsLen:]...)
		v1 := append(append([]byte{1}, v3[1:at-1]...), v3[at+runFieldsLen:]...)
		for v, r := range [][]byte{v1, v2} {
			old, err := parseSeries(r)
			if err != nil {
				t.Fatalf("%s: version %d record: %v", series.Format(se.info.Labels), v+1, err)
			}
			if old.hasCount || old.labels != sv.labels || old.lastT != sv.lastT || string(old.det) != string(sv.det) || old.runN != runBroken {
				t.Fatalf("%s: version %d record read as %+v, want %+v", series.Format(se.info.Labels), v+1, old, sv)
			}
		}
	}
	if counted == 0 {
		t.Fatal("no series of whole increments has a count test: the load does not exercise it")
	}
	if valued == 0 {
		t.Fatal("no series has an analysed value to save: the load does not exercise it")
	}
}
