package main

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCountEvidence: the evidence of a count of 15 a second falling is the
// likelihood ratio of its best start, worked by hand; a counter of
// fractional increments does not count events.
func TestCountEvidence(t *testing.T) {
	var ts, vs []float64
	v := 0.0
	for i := range 700 { // 15 a second, alternating 14 and 16
		ts = append(ts, float64(i))
		vs = append(vs, v)
		v += float64(14 + 2*(i%2))
	}
	for _, d := range []float64{17, 6, 8, 3} {
		ts = append(ts, ts[len(ts)-1]+1)
		v += d
		vs = append(vs, v)
	}
	start := ts[699] + 0.5
	ev, ok := countEvidenceOf(ts, vs, start, 3)
	if !ok {
		t.Fatal("a whole-number counter does not count events")
	}
	// From the second sample: 6 + 8 = 14 events where 30 were expected,
	// 14·ln(14/30) + 16 = 5.330 nats; from the first, 2.45; the last, 1.97.
	if math.Abs(ev.Nats-5.330) > 0.001 || math.Abs(ev.Lambda-15) > 0.05 || len(ev.Counts) != 3 || ev.Counts[1] != 6 {
		t.Errorf("got %+v, want 5.330 nats at λ 15 over [17 6 8]", ev)
	}
	frac := append([]float64(nil), vs...)
	frac[300] += 0.5
	if _, ok := countEvidenceOf(ts, frac, start, 3); ok {
		t.Error("a counter with a fractional increment counts events")
	}
	if _, ok := countEvidenceOf(ts[:701], vs[:701], start, 3); ok {
		t.Error("evidence from fewer samples than asked")
	}
	if g := poissonGLR(0, 0); g != 0 {
		t.Errorf("no event where none was expected: %g nats, want 0", g)
	}
}

// TestFaultCountEvidence reads an export: a fault's signal series that are
// counters, selected by its signals, and nothing else.
func TestFaultCountEvidence(t *testing.T) {
	dir := t.TempDir()
	job := filepath.Join(dir, "shop")
	if err := os.MkdirAll(job, 0o755); err != nil {
		t.Fatal(err)
	}
	csv := func(name string, incs func(i int) float64) {
		var b strings.Builder
		b.WriteString("timestamp,value\n")
		v := 0.0
		for i := range 800 {
			if i > 0 {
				v += incs(i)
			}
			b.WriteString(strconv.FormatFloat(float64(1000+i), 'f', -1, 64) + "," + strconv.FormatFloat(v, 'f', -1, 64) + "\n")
		}
		if err := os.WriteFile(filepath.Join(job, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cart := func(i int) float64 {
		if i >= 700 {
			return 4
		}
		return 15
	}
	csv("a.csv", cart)
	csv("b.csv", cart)
	csv("c.csv", func(int) float64 { return 3 })
	index := "a.csv\t{__name__=\"req_total\", handler=\"cart\", job=\"shop\"}\n" +
		"b.csv\t{__name__=\"req_total\", handler=\"search\", job=\"shop\"}\n" +
		"c.csv\t{__name__=\"in_flight\", handler=\"cart\", job=\"shop\"}\n"
	if err := os.WriteFile(filepath.Join(job, "series.txt"), []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := &report{}
	rep.Faults = []faultResult{{fault: fault{Name: "traffic", Start: time.Unix(1699, 500e6), Target: target{Job: "shop"},
		Signals: []selector{{Metric: "req_total", Label: "handler", Value: "cart"}, {Metric: "in_flight"}}}}}
	evs, err := faultCountEvidence(dir, rep, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Fault != "traffic" || !strings.Contains(evs[0].Series, `handler="cart"`) || evs[0].Counts[0] != 4 {
		t.Fatalf("got %+v, want the cart counter alone (the gauge in_flight and the search counter are not its signal counters)", evs)
	}
	// 12 events where 45 were expected: 12·ln(12/45) + 33.
	if want := 12*math.Log(12.0/45) + 33; math.Abs(evs[0].Nats-want) > 1e-9 {
		t.Errorf("%g nats, want %g", evs[0].Nats, want)
	}
}
