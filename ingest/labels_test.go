package ingest

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestCanonicalKeyMatchesGeneralPath: for random label sets, in order or
// not, valid or not (empty names and values, duplicates, long names and
// values, invalid UTF-8, the HA replica label, too many labels, no name),
// canonicalKey answers as canonicalise followed by appendKey: the same
// reason, detail and key.
func TestCanonicalKeyMatchesGeneralPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"", "__name__", "a", "ab", "b", "instance", "job", "replica", "zz", "\xffbad", "long_name_that_exceeds_the_limit"}
	values := []string{"", "x", "v1", "node-1:9100", "\xc3\x28", "é", "a_value_longer_than_the_limit_of_sixteen"}
	o := testOptions()
	o.MaxLabelsPerSeries, o.MaxLabelNameLength, o.MaxLabelValueLength = 5, 20, 16
	h := &Handler{}
	sorted, unsorted := 0, 0
	for iter := range 20000 {
		// Build the request buffer: names and values back to back.
		var buf []byte
		type lv struct{ n, v string }
		k := 1 + rng.IntN(7)
		ls := make([]lv, k)
		for i := range ls {
			ls[i] = lv{names[rng.IntN(len(names))], values[rng.IntN(len(values))]}
		}
		if rng.IntN(2) == 0 {
			ls[0] = lv{"__name__", "m"}
		}
		if rng.IntN(3) > 0 { // mostly in order, as senders send them
			slices.SortStableFunc(ls, func(a, b lv) int { return bytes.Compare([]byte(a.n), []byte(b.n)) })
		}
		if slices.IsSortedFunc(ls, func(a, b lv) int { return bytes.Compare([]byte(a.n), []byte(b.n)) }) {
			sorted++
		} else {
			unsorted++
		}
		var refs []labelRef
		for _, l := range ls {
			no := len(buf)
			buf = append(buf, l.n...)
			vo := len(buf)
			buf = append(buf, l.v...)
			refs = append(refs, labelRef{name: span{uint32(no), uint32(len(l.n))}, value: span{uint32(vo), uint32(len(l.v))}})
		}
		for _, proto := range []string{protoV1, protoV2} {
			skip := ""
			if rng.IntN(2) == 0 {
				skip = "replica"
			}
			s := wireSeries{labelsStart: 0, labelsEnd: int32(len(refs)), samplesEnd: int32(rng.IntN(2))}
			a := request{buf: buf, labels: slices.Clone(refs), symbolsUTF8: rng.IntN(2) == 0}
			b := request{buf: buf, labels: slices.Clone(refs), symbolsUTF8: a.symbolsUTF8}
			key, why, detail := h.canonicalKey([]byte("junk"), &a, &s, proto, &o, skip)
			wantWhy, wantDetail := h.canonicalise(&b, &s, proto, &o)
			if why != wantWhy || detail != wantDetail {
				t.Fatalf("iter %d %s %q: canonicalKey says %d %q, canonicalise %d %q", iter, proto, ls, why, detail, wantWhy, wantDetail)
			}
			if why != reasonOK {
				continue
			}
			if want := appendKey([]byte("junk"), &b, &s, skip, ""); !bytes.Equal(key, want) {
				t.Fatalf("iter %d %s %q: key %q, want %q", iter, proto, ls, key, want)
			}
			if !slices.Equal(a.labels, b.labels) {
				t.Fatalf("iter %d: labels left in another order than canonicalise's", iter)
			}
		}
	}
	if sorted < 1000 || unsorted < 1000 {
		t.Fatalf("%d sorted and %d unsorted label sets: the test covers too few of one", sorted, unsorted)
	}
}
