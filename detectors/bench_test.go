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
// Entropy, the costliest detector, off.
func BenchmarkSetUpdate(b *testing.B) {
	for _, ent := range []bool{true, false} {
		name := "defaults"
		if !ent {
			name = "entropy-off"
		}
		b.Run(name, func(b *testing.B) {
			p := DefaultParams()
			p.Entropy.Enabled = ent
			var s Set
			s.Init(&p)
			var sink Output
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				j := i & 4095
				sink = s.Update(&p, benchInput.t[j]+int64(i>>12)*benchLap, benchInput.v[j])
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
