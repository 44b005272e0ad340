package incident

import (
	"bytes"
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

// FuzzRestoreGroup: RestoreGroup never panics; on error it returns no
// group and no rest; a state that restores encodes back to exactly the
// bytes it was read from, rest is the input's tail, and the group it gives
// can be fed and evaluated with scores that stay finite.
func FuzzRestoreGroup(f *testing.F) {
	p := DefaultParams()
	f.Add([]byte{})
	f.Add([]byte{stateVersion})
	f.Add(NewGroup(&p).AppendState(nil))
	e := newEvidence(12, 400, 300)
	g := NewGroup(&p)
	for i := range 400 {
		e.feed(g, i, nil)
		if i == 5 || i == 210 || i == 305 || i == 399 {
			st := g.AppendState(nil)
			f.Add(st)
			f.Add(st[:len(st)-3])
			f.Add(append(st, 1, 2, 3))
		}
	}
	inf := NewGroup(&p)
	inf.Observe("a", 15000, 15000, 1e200) // a chance that underflows: an infinite surprise
	f.Add(inf.AppendState(nil))

	f.Fuzz(func(t *testing.T, data []byte) {
		p := DefaultParams()
		g, rest, err := RestoreGroup(&p, data)
		if err != nil {
			if g != nil || rest != nil {
				t.Fatalf("error %v with a group or a rest", err)
			}
			return
		}
		if !bytes.HasSuffix(data, rest) {
			t.Fatal("rest is not the input's tail")
		}
		read := data[:len(data)-len(rest)]
		if got := g.AppendState(nil); !bytes.Equal(got, read) {
			t.Fatalf("restored state encodes to\n%x\nnot the bytes read\n%x", got, read)
		}
		var top []Contributor
		for i := range 8 {
			ts := g.first + int64(i)*15000
			g.ObserveDetail(string(rune('a'+i%3)), ts, 15000, float64(i), Detail{Record: float64(i % 2)})
			st := g.Evaluate(ts, 3, &top)
			if math.IsNaN(st.Score) || math.IsInf(st.Score, 0) || st.Score < 0 {
				t.Fatalf("score %v", st.Score)
			}
		}
	})
}
