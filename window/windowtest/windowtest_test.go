package windowtest

import (
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/anomalyd/anomalyd/window/series"
)

func TestRecorder(t *testing.T) {
	a := &series.Info{Labels: "\xff__name__\xffa", Name: "a"}
	b := &series.Info{Labels: "\xff__name__\xffb", Name: "b"}
	var r Recorder
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { r.Append([]series.Record{{Series: a, T: int64(i)}, {Series: b, T: int64(i)}}) })
	}
	wg.Wait()
	if got := len(r.Of("a")); got != 4 {
		t.Fatalf("Of(a): %d records, want 4", got)
	}
	if got, want := r.Series(), map[string]int{a.Labels: 4, b.Labels: 4}; !maps.Equal(got, want) {
		t.Fatalf("Series() = %v, want %v", got, want)
	}
	recs := r.Records()
	recs[0].T = -1
	if slices.ContainsFunc(r.Records(), func(x series.Record) bool { return x.T == -1 }) {
		t.Fatal("Records() shares its slice with the recorder")
	}
	if got := len(r.Take()); got != 8 {
		t.Fatalf("Take(): %d records, want 8", got)
	}
	if got := len(r.Take()); got != 0 {
		t.Fatalf("Take() after Take(): %d records, want 0", got)
	}
}
