package window

import (
	"math/rand/v2"
	"testing"
)

// TestSeriesTableAgainstMap runs random sets and deletes against a Go map.
// Half the hashes share their top bits with another (the same home entry)
// and every one of them has the same low bits, as the hashes of one shard
// do, so probe runs are long and backward-shift deletion is exercised
// across them and across the end of the table.
func TestSeriesTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tab seriesTable
	want := map[uint64]uint32{}
	pool := make([]uint64, 3000)
	for i := range pool {
		h := rng.Uint64() &^ 0xff // same low bits
		if i%2 == 1 {
			h = pool[i-1]&^(1<<40-1) | uint64(i)<<8 // the previous hash's top bits
		}
		pool[i] = h
	}
	check := func(step int) {
		t.Helper()
		for _, h := range pool {
			if got := tab.get(h); got != want[h] {
				t.Fatalf("step %d: get(%#x) = %d, want %d", step, h, got, want[h])
			}
		}
		if tab.n != len(want) {
			t.Fatalf("step %d: %d entries, want %d", step, tab.n, len(want))
		}
	}
	for step := range 40000 {
		h := pool[rng.IntN(len(pool))]
		if rng.IntN(3) == 0 {
			tab.del(h)
			delete(want, h)
		} else {
			v := uint32(rng.IntN(1000) + 1)
			tab.set(h, v)
			want[h] = v
		}
		if step%4000 == 0 {
			check(step)
		}
	}
	check(-1)
	for h := range want {
		tab.del(h)
	}
	if tab.n != 0 {
		t.Fatalf("%d entries after deleting every hash", tab.n)
	}
	for i, e := range tab.entries {
		if e != (tableEntry{}) {
			t.Fatalf("entry %d = %+v after deleting every hash, want free", i, e)
		}
	}
}

// TestSeriesTableEmpty: a zero table answers 0 and deletes nothing.
func TestSeriesTableEmpty(t *testing.T) {
	var tab seriesTable
	if got := tab.get(42); got != 0 {
		t.Errorf("get on an empty table = %d", got)
	}
	tab.del(42)
	tab.set(42, 7)
	if got := tab.get(42); got != 7 {
		t.Errorf("get after set = %d, want 7", got)
	}
	if len(tab.entries) != minTableSize {
		t.Errorf("first table of %d entries, want %d", len(tab.entries), minTableSize)
	}
}
