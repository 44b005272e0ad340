package incident

import (
	"encoding/binary"
	"math"
	"testing"
)

// FuzzGroup: any sequence of samples (any times, intervals and scores,
// NaN and ±Inf included) and evaluations leaves the group's score finite
// and not negative, and never panics.
func FuzzGroup(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25})
	f.Add(make([]byte, 100))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := DefaultParams()
		p.MaxMembers = 4
		g := NewGroup(&p)
		for len(b) >= 25 {
			op, key := b[0], string('a'+rune(b[0]%6))
			ts := int64(binary.LittleEndian.Uint64(b[1:]))
			dt := int64(binary.LittleEndian.Uint64(b[9:]))
			score := math.Float64frombits(binary.LittleEndian.Uint64(b[17:]))
			b = b[25:]
			if op%3 == 0 {
				st := g.Evaluate(ts, int(op), nil)
				if math.IsNaN(st.Score) || math.IsInf(st.Score, 0) || st.Score < 0 {
					t.Fatalf("score %v", st.Score)
				}
				continue
			}
			g.Observe(key, ts, dt, score)
		}
		var top []Contributor
		st := g.Evaluate(1, 3, &top)
		if math.IsNaN(st.Score) || math.IsInf(st.Score, 0) || st.Score < 0 {
			t.Fatalf("score %v", st.Score)
		}
	})
}
