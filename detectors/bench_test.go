package detectors

import (
	"math"
	"testing"
)

// benchInput is 4096 samples of a noisy sine every 15 s; benchmarks cycle
// through it with the timestamps moved on each lap.
var benchInput = func() series {
	nz := noise(99, 1)
	s := series{t: make([]int64, 4096), v: make([]float64, 4096)}
	for i := range s.t {
		s.t[i] = 1_700_000_000_000 + int64(i)*15000
		s.v[i] = 100 + 50*math.Sin(float64(i)/300) + nz()
	}
	return s
}()

const benchLap = 4096 * 15000

// BenchmarkSetUpdate measures Set.Update with DefaultParams and with
// Entropy, the costliest detector, off, and Set.UpdateCombined (what a
// shard runs without per-detector outputs) with DefaultParams.
func BenchmarkSetUpdate(b *testing.B) {
	for _, tc := range []struct {
		name          string
		ent, combined bool
	}{{"defaults", true, false}, {"entropy-off", false, false}, {"combined", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			p := DefaultParams()
			p.Entropy.Enabled = tc.ent
			var s Set
			s.Init(&p)
			update := s.Update
			if tc.combined {
				update = s.UpdateCombined
			}
			var sink Output
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				j := i & 4095
				sink = update(&p, benchInput.t[j]+int64(i>>12)*benchLap, benchInput.v[j])
				i++
			}
			_ = sink
		})
	}
}

// BenchmarkDetector measures each detector's Update on its own.
func BenchmarkDetector(b *testing.B) {
	for k := KindEWMA; k < KindCombined; k++ {
		b.Run(k.String(), func(b *testing.B) {
			p := DefaultParams()
			update := New(k, &p).Update
			var sink Result
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				j := i & 4095
				sink = update(benchInput.t[j]+int64(i>>12)*benchLap, benchInput.v[j])
				i++
			}
			_ = sink
		})
	}
}

// BenchmarkSetState measures AppendState and RestoreState of one Set with
// DefaultParams (StateSize 979 bytes) that has seen 4096 samples.
func BenchmarkSetState(b *testing.B) {
	p := DefaultParams()
	var s Set
	s.Init(&p)
	for i := range benchInput.t {
		s.Update(&p, benchInput.t[i], benchInput.v[i])
	}
	state := s.AppendState(nil)
	b.Run("append", func(b *testing.B) {
		dst := make([]byte, 0, s.StateSize())
		b.SetBytes(int64(len(state)))
		b.ReportAllocs()
		for b.Loop() {
			dst = s.AppendState(dst[:0])
		}
	})
	b.Run("restore", func(b *testing.B) {
		var r Set
		b.SetBytes(int64(len(state)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.RestoreState(&p, state); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkInitConstant is what waking a sleeping series costs: rebuilding
// the state of a day-long constant at a 15 s interval (WarmUp samples
// replayed). Its allocation is reused here, as a slot's is.
func BenchmarkInitConstant(b *testing.B) {
	p := DefaultParams()
	var s Set
	const n = 5760
	for b.Loop() {
		s.InitConstant(&p, 42, n, 1_700_000_000_000, 1_700_000_000_000+(n-1)*15_000)
	}
}
