package window

import "math/bits"

// seriesTable maps a series hash to slot+1 of the first series with that
// hash (the others chain through seriesState.next). It is a flat
// open-addressing table with linear probing: a lookup of a present hash
// usually reads one 16-byte entry, one cache line, where a Go map of this
// size reads its control word, then the slot, then the value's group. The
// lookup is on every sample's path, and at 100k series per shard every
// one of those reads is a miss.
//
// The index is the top bits of the hash: the shard was picked by the
// hash modulo the shard count, so its low bits are the same for every
// series of a shard when the count is a power of two.
type seriesTable struct {
	entries []tableEntry // len a power of two, or 0
	shift   uint8        // 64 − log2(len(entries))
	n       int          // entries in use
}

// tableEntry is one hash and its value; ref 0 marks a free entry.
type tableEntry struct {
	hash uint64
	ref  uint32
}

// minTableSize is the smallest table allocated: 64 entries, 1 KiB.
const minTableSize = 64

// get returns the value of hash, 0 if absent.
func (t *seriesTable) get(hash uint64) uint32 {
	if t.n == 0 {
		return 0
	}
	mask := uint64(len(t.entries) - 1)
	for i := hash >> t.shift; ; i = (i + 1) & mask {
		e := &t.entries[i]
		if e.ref == 0 {
			return 0
		}
		if e.hash == hash {
			return e.ref
		}
	}
}

// set makes ref (≠ 0) the value of hash.
func (t *seriesTable) set(hash uint64, ref uint32) {
	if ref == 0 {
		panic("BUG: window: seriesTable.set with ref 0")
	}
	// Grow at a load of 3/4: linear probing stays short below it.
	if 4*(t.n+1) > 3*len(t.entries) {
		t.grow()
	}
	mask := uint64(len(t.entries) - 1)
	for i := hash >> t.shift; ; i = (i + 1) & mask {
		e := &t.entries[i]
		if e.ref == 0 {
			*e = tableEntry{hash: hash, ref: ref}
			t.n++
			return
		}
		if e.hash == hash {
			e.ref = ref
			return
		}
	}
}

// del removes hash, if present. The entries after it in its probe run
// move back (backward-shift deletion), so no tombstones are left and get
// stops at the first free entry.
func (t *seriesTable) del(hash uint64) {
	if t.n == 0 {
		return
	}
	mask := uint64(len(t.entries) - 1)
	i := hash >> t.shift
	for {
		e := &t.entries[i]
		if e.ref == 0 {
			return
		}
		if e.hash == hash {
			break
		}
		i = (i + 1) & mask
	}
	t.n--
	// Move each later entry of the run into the hole if its home is not
	// in the cyclic range (hole, j].
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := t.entries[j]
		if e.ref == 0 {
			break
		}
		home := e.hash >> t.shift
		if (j-home)&mask >= (j-i)&mask {
			t.entries[i] = e
			i = j
		}
	}
	t.entries[i] = tableEntry{}
}

// grow doubles the table (or allocates the first) and reinserts every entry.
func (t *seriesTable) grow() {
	old := t.entries
	size := max(minTableSize, 2*len(old))
	t.entries = make([]tableEntry, size)
	t.shift = uint8(64 - bits.TrailingZeros(uint(size)))
	t.n = 0
	for _, e := range old {
		if e.ref != 0 {
			t.set(e.hash, e.ref)
		}
	}
}
