package window

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/value"

	"github.com/anomalyd/anomalyd/window/series"
)

// TestValueSeries: a series analysed as a per-second rate (a counter, or a
// gauge that only grows) has the value series, carrying the rate its band
// bounds; a plain gauge has none, its analysed value being its input. The
// /metrics snapshot and the stale record carry it too.
func TestValueSeries(t *testing.T) {
	e := newEnv(t, loadConfig(t, ""), nil)
	const n = 200
	// A counter rising by 2 to 4 a second, a gauge swinging, and a clock.
	counter := ramp(t0, n, 1000, func(i int) float64 { return float64(3*i + i%3) })
	e.send(t, true, counter, "__name__", "c_total")
	e.send(t, false, ramp(t0, n, 1000, func(i int) float64 { return float64(i % 5) }), "__name__", "g")
	clock := ramp(t0, n, 1000, func(i int) float64 { return float64(t0/1000+int64(i)) + float64(i%4)/8 })
	e.send(t, false, clock, "__name__", "time_seconds")

	var counterValues, clockValues int
	firstClock := -1
	for _, r := range e.rec.Take() {
		i := int((r.T - t0) / 1000)
		switch r.Series.Name {
		case "g":
			if r.HasValue || r.Slots()&(1<<series.OutValue) != 0 {
				t.Fatalf("gauge record at %d has the value series", i)
			}
		case "c_total":
			if !r.HasValue {
				t.Fatalf("counter record at %d has no value series", i)
			}
			if r.Warmup {
				continue
			}
			want := counter[i].V - counter[i-1].V
			if got := r.Value(series.OutValue); got != want || r.Slots()&(1<<series.OutValue) == 0 {
				t.Fatalf("counter record at %d: value %g (slots %b), want its rate %g", i, got, r.Slots(), want)
			}
			counterValues++
		case "time_seconds":
			if !r.HasValue {
				continue // still judged as a gauge
			}
			if firstClock < 0 {
				firstClock = i
			}
			if !r.Warmup {
				want := clock[i].V - clock[i-1].V
				if got := r.Value(series.OutValue); math.Abs(got-want) > 1e-9 {
					t.Fatalf("clock record at %d: value %g, want its rate %g", i, got, want)
				}
				clockValues++
			}
		}
	}
	if counterValues == 0 || clockValues == 0 {
		t.Fatalf("%d counter and %d clock records past warm-up with a value; want some of each", counterValues, clockValues)
	}
	// The clock is judged a growing gauge after its trial, not before.
	if firstClock < 32 {
		t.Errorf("the clock had the value series from sample %d, before its trial could end", firstClock)
	}

	for _, r := range e.snapshot() {
		if want := r.Series.Name != "g"; r.HasValue != want {
			t.Errorf("/metrics snapshot of %s: HasValue %v, want %v", r.Series.Name, r.HasValue, want)
		}
	}

	e.send(t, true, []Sample{{T: t0 + n*1000, V: math.Float64frombits(value.StaleNaN)}}, "__name__", "c_total")
	recs := e.rec.Take()
	if len(recs) != 1 || !recs[0].Stale || !recs[0].HasValue || recs[0].OnlyExtras {
		t.Fatalf("got %+v, want one stale record for every output series, the value series included", recs)
	}
}

// TestValueSeriesOff: output.value false gives no value series.
func TestValueSeriesOff(t *testing.T) {
	e := newEnv(t, loadConfig(t, "output: {value: false}\n"), nil)
	e.send(t, true, ramp(t0, 150, 1000, func(i int) float64 { return float64(3*i + i%3) }), "__name__", "c_total")
	for _, r := range append(e.rec.Take(), e.snapshot()...) {
		if r.HasValue {
			t.Fatalf("record at %d has the value series with output.value off", r.T)
		}
	}
}

// TestValueSeriesEnds: a reload that turns output.value off, and metadata
// that makes a counter a gauge, end the value series with a stale marker
// and nothing else; turning it on ends nothing.
func TestValueSeriesEnds(t *testing.T) {
	e := newEnv(t, loadConfig(t, ""), nil)
	const n = 150
	send := func(from int, counter bool, name string) {
		e.send(t, counter, ramp(t0+int64(from)*1000, n, 1000, func(i int) float64 { return float64(3*(from+i) + i%3) }), "__name__", name)
	}
	send(0, true, "c_total")
	e.send(t, false, ramp(t0, n, 1000, func(i int) float64 { return float64(i % 5) }), "__name__", "g")
	e.rec.Take()

	e.s.ApplyRules(CompileRules(loadConfig(t, "output: {value: false}\n")), false)
	recs := e.rec.Take()
	if len(recs) != 1 || recs[0].Series.Name != "c_total" || !recs[0].Stale || !recs[0].OnlyExtras ||
		recs[0].Slots() != 1<<series.OutValue {
		t.Fatalf("got %+v, want one stale record of the counter's value series alone", recs)
	}
	e.s.ApplyRules(CompileRules(loadConfig(t, "")), false)
	if recs := e.rec.Take(); len(recs) != 0 {
		t.Fatalf("turning the value series on emitted %+v", recs)
	}

	// Metadata says "m" is a counter, then a gauge.
	send(0, true, "m")
	// A counter's first sample only primes its rate.
	if recs := e.rec.Take(); len(recs) != n-1 || !recs[n-2].HasValue {
		t.Fatalf("counter m: %d records, the last with value series %v; want %d, true", len(recs), len(recs) > 0 && recs[len(recs)-1].HasValue, n-1)
	}
	e.send(t, false, ramp(t0+n*1000, n, 1000, func(i int) float64 { return float64(i % 5) }), "__name__", "m")
	recs = e.rec.Take()
	if len(recs) == 0 || !recs[0].Stale || !recs[0].OnlyExtras || recs[0].Slots() != 1<<series.OutValue {
		t.Fatalf("m became a gauge: first record %+v, want the stale marker of its value series alone", recs[:min(len(recs), 1)])
	}
	for _, r := range recs[1:] {
		if r.HasValue || r.Stale {
			t.Fatalf("gauge m: record at %d with value series %v, stale %v", r.T, r.HasValue, r.Stale)
		}
	}

	// A gauge analysed as its rate because it only grows, then called a
	// counter by metadata: still a rate, so its value series goes on.
	clock := func(from int) []Sample {
		return ramp(t0+int64(from)*1000, n, 1000, func(i int) float64 { return float64(from+i) + float64(i%4)/8 })
	}
	e.send(t, false, clock(0), "__name__", "clock_seconds")
	if recs := e.rec.Take(); !recs[len(recs)-1].HasValue {
		t.Fatal("the clock is not analysed as its rate after its trial")
	}
	e.send(t, true, clock(n), "__name__", "clock_seconds")
	for _, r := range e.rec.Take() {
		if r.Stale {
			t.Fatalf("the clock, now a counter, ended its value series: %+v", r)
		}
	}
}
