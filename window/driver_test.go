package window

import (
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/prometheus/model/value"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Driver sets: bit 1<<k per detector k.
const (
	setAll    = 1<<detectors.KindEWMA | 1<<detectors.KindZScore | 1<<detectors.KindHoltWinters | 1<<detectors.KindSlope | 1<<detectors.KindEntropy
	setNoHW   = setAll &^ (1 << detectors.KindHoltWinters)
	setLevels = setAll &^ (1<<detectors.KindSlope | 1<<detectors.KindEntropy)
)

func loadConfig(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Load([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// driverValues returns the values of r's driver series, by detector, and
// how many it has.
func driverValues(r *series.Record) (v [detectors.NumKinds]float64, n int) {
	for k := range detectors.NumKinds {
		if r.DriverSet&(1<<k) != 0 {
			v[k] = r.Value(series.OutDriver + int(k))
			n++
		} else {
			v[k] = math.NaN()
		}
	}
	return v, n
}

// hourlySine is 1-minute samples of 100 + 50·sin over a 1h period (plus
// ±0.5 of deterministic noise) for the first `swing` samples, then flat.
func hourlySine(n, swing int) []Sample {
	out := make([]Sample, n)
	x := uint64(1)
	for i := range out {
		x = x*6364136223846793005 + 1442695040888963407 // an LCG: noise in [-0.5, 0.5)
		v := 100 + float64(x>>11)/(1<<53) - 0.5
		if i < swing {
			v += 50 * math.Sin(2*math.Pi*float64(i)/60)
		}
		out[i] = Sample{T: t0 + int64(i)*60_000, V: v}
	}
	return out
}

// TestDriverSeries: with output.driver, each combined record names the
// detector that drove its score, and the state set over the rule's enabled
// detectors is 1 for it and 0 for the others. On an hourly sine that
// Holt-Winters (1h season) has learnt, Holt-Winters drives; once the swing
// stops, Holt-Winters still expects it and the EWMA or the z-score drives.
func TestDriverSeries(t *testing.T) {
	// Raw scores (no calibration), no slope (which would drive on the
	// sine's steep parts) and no entropy: the level detectors alone decide.
	cfg := loadConfig(t, `
output: {driver: true}
detectors:
  calibration: {enabled: false}
  slope: {enabled: false}
  entropy: {enabled: false}
  holt_winters: {season: 1h, season_buckets: 12}
`)
	e := newEnv(t, cfg, nil)
	const swing, n = 480, 600 // 8 seasons of sine, then 2 hours flat
	samples := hourlySine(n, swing)
	e.send(t, false, samples, "__name__", "g")
	recs := e.rec.Take()
	if len(recs) != n {
		t.Fatalf("got %d records for %d samples, want one each (combined only)", len(recs), n)
	}

	p, _ := CompileRules(cfg).ParamsFor(string(key("__name__", "g")))
	a := NewAnalyser(p, false)
	var hwSwing, hwFlat, levelFlat int
	for i, r := range recs {
		o, _ := a.Observe(samples[i].T, samples[i].V)
		if r.Detector != detectors.KindCombined || r.DriverSet != setLevels {
			t.Fatalf("record %d: detector %s, driver set %05b; want combined, %05b (slope and entropy disabled)", i, r.Detector, r.DriverSet, setLevels)
		}
		if r.Warmup {
			continue
		}
		if r.Driver != o.Driver {
			t.Fatalf("record %d: driver %s, the detectors say %s", i, r.Driver, o.Driver)
		}
		v, nd := driverValues(&r)
		if nd != 3 {
			t.Fatalf("record %d: %d driver series, want 3", i, nd)
		}
		for k := range detectors.KindSlope {
			want := 0.0
			if k == o.Driver {
				want = 1
			}
			if v[k] != want {
				t.Fatalf("record %d: driver{detector=%q} = %g, want %g (driver %s)", i, k, v[k], want, o.Driver)
			}
		}
		switch {
		case i >= 2*60 && i < swing && r.Driver == detectors.KindHoltWinters:
			hwSwing++
		case i >= swing+60 && r.Driver == detectors.KindHoltWinters:
			hwFlat++
		case i >= swing+60:
			levelFlat++
		}
	}
	// Seasons 3 to 8: Holt-Winters has learnt the sine and drives.
	if hwSwing < (swing-2*60)*3/4 {
		t.Errorf("Holt-Winters drove %d of %d samples of the learnt sine, want ≥ 3/4", hwSwing, swing-2*60)
	}
	// The last hour is flat: Holt-Winters expects the swing and never drives.
	if hwFlat != 0 || levelFlat != n-swing-60 {
		t.Errorf("flat hour: Holt-Winters drove %d samples, EWMA or z-score %d; want 0 and %d", hwFlat, levelFlat, n-swing-60)
	}

	// /metrics shows the latest record's state set.
	snap := e.snapshot()
	if len(snap) != 1 || snap[0].DriverSet != setLevels || snap[0].Driver != recs[n-1].Driver || snap[0].Warmup {
		t.Fatalf("snapshot %+v; want the last record's driver %s and set %05b", snap, recs[n-1].Driver, setLevels)
	}
}

// TestDriverSeriesFollowRules: the driver set is the detectors the
// series' rule enables; without output.driver there is none.
func TestDriverSeriesFollowRules(t *testing.T) {
	const rules = `
rules:
  - match: '{__name__="no_hw"}'
    detectors: {holt_winters: {enabled: false}}
`
	for _, tc := range []struct {
		name       string
		cfg        string
		noHW, dflt uint8
	}{
		{"off", rules, 0, 0},
		{"on", rules + "output: {driver: true}\n", setNoHW, setAll},
		{"on, per detector", rules + "output: {driver: true, per_detector: true}\n", setNoHW, setAll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadConfig(t, tc.cfg)
			e := newEnv(t, cfg, func(o *Options) { o.PerDetector = cfg.Output.PerDetector })
			for _, name := range []string{"no_hw", "all"} {
				e.send(t, false, ramp(t0, 20, 15_000, func(i int) float64 { return float64(i % 4) }), "__name__", name)
			}
			recs := e.rec.Take()
			if len(recs) == 0 {
				t.Fatal("no records")
			}
			for _, r := range append(recs, e.snapshot()...) {
				want := tc.dflt
				if r.Series.Name == "no_hw" {
					want = tc.noHW
				}
				if r.Detector != detectors.KindCombined {
					want = 0 // a single detector's record has no driver series
				}
				if r.DriverSet != want {
					t.Fatalf("%s %s record at %d: driver set %05b, want %05b", r.Series.Name, r.Detector, r.T, r.DriverSet, want)
				}
			}
		})
	}
}

// TestDriverSeriesStale: when the input series ends, by a stale marker or
// by TTL eviction, the stale record covers the driver series too.
func TestDriverSeriesStale(t *testing.T) {
	cfg := loadConfig(t, "output: {driver: true}\n")
	e := newEnv(t, cfg, nil)
	e.send(t, false, ramp(t0, 20, 1000, func(i int) float64 { return float64(i % 3) }), "__name__", "g")
	e.rec.Take()
	e.send(t, false, []Sample{{T: t0 + 20_000, V: math.Float64frombits(value.StaleNaN)}}, "__name__", "g")
	recs := e.rec.Take()
	if len(recs) != 1 || !recs[0].Stale || recs[0].OnlyExtras || recs[0].DriverSet != setAll || recs[0].T != t0+20_000 {
		t.Fatalf("got %+v, want one stale record for every output and driver series", recs)
	}
	if n := len(e.snapshot()); n != 0 {
		t.Fatalf("a stale series is still on /metrics (%d records)", n)
	}

	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, cfg, func(o *Options) { o.SeriesTTL = time.Minute })
		now := time.Now().UnixMilli()
		e.send(t, false, ramp(now, 20, 1000, func(i int) float64 { return float64(i % 3) }), "__name__", "idle")
		e.rec.Take()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		recs := e.rec.Take()
		if len(recs) != 1 || !recs[0].Stale || recs[0].DriverSet != setAll {
			t.Fatalf("got %+v, want one stale record with every driver series for the evicted series", recs)
		}
	})
}

// TestDriverSeriesReload: a reload that turns output.driver off, or
// disables a detector, ends the driver series it no longer produces with
// stale markers (and only those); turning it on ends nothing.
func TestDriverSeriesReload(t *testing.T) {
	cfg := loadConfig(t, "output: {driver: true}\n")
	e := newEnv(t, cfg, nil)
	// Enough samples for a series to be Ready again after a reset:
	// warm-up and calibration.
	const n = 120
	send := func(from int) {
		e.send(t, false, ramp(t0+int64(from)*1000, n, 1000, func(i int) float64 { return float64(i % 3) }), "__name__", "g")
	}
	send(0)
	e.rec.Take()

	// Holt-Winters off for this series: its driver series ends.
	e.s.ApplyRules(CompileRules(loadConfig(t, `
output: {driver: true}
rules: [{match: g, detectors: {holt_winters: {enabled: false}}}]
`)), false)
	recs := e.rec.Take()
	if len(recs) != 1 || !recs[0].Stale || !recs[0].OnlyExtras || recs[0].DriverSet != 1<<detectors.KindHoltWinters {
		t.Fatalf("got %+v, want one stale record for the holtwinters driver series only", recs)
	}
	send(n)
	for _, r := range e.rec.Take() {
		if r.DriverSet != setNoHW {
			t.Fatalf("after the reload: driver set %05b, want %05b", r.DriverSet, setNoHW)
		}
	}

	// output.driver off: the remaining four end.
	e.s.ApplyRules(CompileRules(config.Default()), false)
	recs = e.rec.Take()
	if len(recs) != 1 || !recs[0].Stale || !recs[0].OnlyExtras || recs[0].DriverSet != setNoHW {
		t.Fatalf("got %+v, want one stale record for the four remaining driver series", recs)
	}

	// On again: nothing to end; the next records carry every driver series.
	e.s.ApplyRules(CompileRules(cfg), false)
	if recs := e.rec.Take(); len(recs) != 0 {
		t.Fatalf("turning driver series on emitted %+v", recs)
	}
	send(2 * n)
	recs = e.rec.Take()
	if len(recs) == 0 || recs[len(recs)-1].DriverSet != setAll || recs[len(recs)-1].Warmup {
		t.Fatalf("after turning it on again: %+v, want ready records with every driver series", recs)
	}
}
