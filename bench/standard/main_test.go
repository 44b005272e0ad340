package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestStatOf(t *testing.T) {
	f := func(v []float64, med, lo, hi float64) {
		t.Helper()
		s := statOf(v)
		if s.Median != med || s.Min != lo || s.Max != hi {
			t.Fatalf("statOf(%v) = %+v, want median %v, min %v, max %v", v, s, med, lo, hi)
		}
	}
	f([]float64{3, 1, 2}, 2, 1, 3)
	f([]float64{4, 1, 2, 3}, 2.5, 1, 4)
	f([]float64{7}, 7, 7, 7)
}

func TestSummariseAndPrint(t *testing.T) {
	var r result
	for _, c := range []float64{0.8, 0.7, 0.9} {
		rep := &loadReport{}
		rep.CPU.PerMillionSamples = c
		r.add("anomalyd", rep)
	}
	for _, c := range []float64{0.2, 0.1, 0.3} {
		rep := &loadReport{}
		rep.CPU.PerMillionSamples = c
		r.add("floor", rep)
	}
	r.summarise()
	if got := r.Summary["anomalyd"]["CPU per million samples"].Median; got != 0.8 {
		t.Fatalf("median CPU: got %v, want 0.8", got)
	}
	if r.CPURatio != 4 {
		t.Fatalf("ratio: got %v, want 4", r.CPURatio)
	}
	var b bytes.Buffer
	r.print(&b)
	if !strings.Contains(b.String(), "0.8 (0.7–0.9)") || !strings.Contains(b.String(), "4.00×") {
		t.Fatalf("table:\n%s", b.String())
	}
}

func TestBadFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-runs", "0"}, &out, &errOut); code != 2 {
		t.Fatalf("-runs 0: exit %d, want 2", code)
	}
}
