package main

import "fmt"

// baselineScores returns the anomaly scores of one of NAB's two trivial
// detectors for every file of c:
//
//   - "null": the constant 0.5 (nab/detectors/null). Any constant scores the
//     same: the best threshold is then "never fire", −FN per window, which
//     is the null score of the normalisation.
//   - "random": uniform in [0, 1) from CPython's Mersenne Twister seeded
//     with seed at the start of every file (nab/detectors/random calls
//     random.seed(42) in initialize(), once per file), so with seed 42 the
//     scores are those of NAB's published results/random/*.csv.
func baselineScores(name string, c *Corpus, seed uint32) ([][]float64, error) {
	scores := make([][]float64, len(c.Files))
	for k, f := range c.Files {
		s := make([]float64, len(f.Times))
		switch name {
		case "null":
			for i := range s {
				s[i] = 0.5
			}
		case "random":
			r := newPyRandom(seed)
			for i := range s {
				s[i] = r.Float64()
			}
		default:
			return nil, fmt.Errorf("unknown baseline %q: want null or random", name)
		}
		scores[k] = s
	}
	return scores, nil
}

// pyRandom is CPython's random.Random: MT19937 (Matsumoto & Nishimura 1998)
// seeded as random.seed(n) seeds it for 0 ≤ n < 2³² (init_by_array with the
// key [n]), and random() built from two outputs as a 53-bit float
// (Modules/_randommodule.c). Not safe for concurrent use.
type pyRandom struct {
	mt [624]uint32
	i  int
}

func newPyRandom(seed uint32) *pyRandom {
	r := &pyRandom{}
	const n = len(r.mt)
	// init_genrand(19650218)
	r.mt[0] = 19650218
	for i := 1; i < n; i++ {
		r.mt[i] = 1812433253*(r.mt[i-1]^(r.mt[i-1]>>30)) + uint32(i)
	}
	// init_by_array([seed]): the key has one word, so j is always 0.
	i := 1
	for range n {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1664525)) + seed
		if i++; i >= n {
			r.mt[0], i = r.mt[n-1], 1
		}
	}
	for range n - 1 {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		if i++; i >= n {
			r.mt[0], i = r.mt[n-1], 1
		}
	}
	r.mt[0] = 0x80000000
	r.i = n
	return r
}

// uint32 is genrand_uint32.
func (r *pyRandom) uint32() uint32 {
	const n, m = 624, 397
	if r.i >= n {
		for k := range n {
			y := r.mt[k]&0x80000000 | r.mt[(k+1)%n]&0x7fffffff
			v := r.mt[(k+m)%n] ^ y>>1
			if y&1 != 0 {
				v ^= 0x9908b0df
			}
			r.mt[k] = v
		}
		r.i = 0
	}
	y := r.mt[r.i]
	r.i++
	y ^= y >> 11
	y ^= y << 7 & 0x9d2c5680
	y ^= y << 15 & 0xefc60000
	y ^= y >> 18
	return y
}

// Float64 is random.random(): (a·2²⁶ + b)/2⁵³ with a, b the top 27 and 26
// bits of two outputs.
func (r *pyRandom) Float64() float64 {
	a, b := r.uint32()>>5, r.uint32()>>6
	return (float64(a)*67108864 + float64(b)) * (1.0 / 9007199254740992)
}
