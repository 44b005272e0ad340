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

func BenchmarkSetUpdate(b *testing.B) {
	p := DefaultParams()
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
}

// benchDetector measures one detector's concrete Update method.
func benchDetector(b *testing.B, update func(t int64, v float64) Result) {
	var sink Result
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		j := i & 4095
		sink = update(benchInput.t[j]+int64(i>>12)*benchLap, benchInput.v[j])
		i++
	}
	_ = sink
}

func BenchmarkEWMA(b *testing.B) {
	p := DefaultParams()
	var d EWMA
	d.Init(&p)
	benchDetector(b, d.Update)
}

func BenchmarkZScore(b *testing.B) {
	p := DefaultParams()
	var d ZScore
	d.Init(&p)
	benchDetector(b, d.Update)
}

func BenchmarkHoltWinters(b *testing.B) {
	p := DefaultParams()
	var d HoltWinters
	d.Init(&p)
	benchDetector(b, d.Update)
}

func BenchmarkSlope(b *testing.B) {
	p := DefaultParams()
	var d Slope
	d.Init(&p)
	benchDetector(b, d.Update)
}

func BenchmarkEntropy(b *testing.B) {
	p := DefaultParams()
	var d Entropy
	d.Init(&p)
	benchDetector(b, d.Update)
}
