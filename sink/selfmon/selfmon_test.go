package selfmon

import (
	"bytes"
	"math"
	"testing"
)

func TestWriteText(t *testing.T) {
	r := NewRegistry()
	r.NewCounterVec("b_total", "B things.", "reason").With("x\"y").Add(2)
	g := r.NewGauge("a_gauge", "A gauge\nwith newline.")
	g.Set(math.Inf(1))
	h := r.NewHistogram("c_seconds", "C.", []float64{0.1, 1})
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	r.NewCounterFunc("d_total", "D.", func() float64 { return 7 })
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	want := `# HELP a_gauge A gauge\nwith newline.
# TYPE a_gauge gauge
a_gauge +Inf
# HELP b_total B things.
# TYPE b_total counter
b_total{reason="x\"y"} 2
# HELP c_seconds C.
# TYPE c_seconds histogram
c_seconds_bucket{le="0.1"} 1
c_seconds_bucket{le="1"} 2
c_seconds_bucket{le="+Inf"} 3
c_seconds_sum 5.55
c_seconds_count 3
# HELP d_total D.
# TYPE d_total counter
d_total 7
`
	if got := buf.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// A reloaded component registers its metrics again: same name and type
// returns the existing family, and scrape-time functions are replaced.
func TestReRegistration(t *testing.T) {
	r := NewRegistry()
	c1 := r.NewCounterVec("x_total", "X.", "remote").With("a")
	c1.Inc()
	c2 := r.NewCounterVec("x_total", "X.", "remote").With("a")
	if c1 != c2 || c2.Value() != 1 {
		t.Fatal("re-registration did not return the existing counter")
	}
	r.NewGaugeFunc("f", "F.", func() float64 { return 1 })
	r.NewGaugeFunc("f", "F.", func() float64 { return 2 })
	var buf bytes.Buffer
	r.WriteText(&buf)
	if !bytes.Contains(buf.Bytes(), []byte("\nf 2\n")) {
		t.Fatalf("function not replaced:\n%s", buf.String())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering a name with another type must panic")
		}
	}()
	r.NewGauge("x_total", "X.")
}

func TestGaugeVecDelete(t *testing.T) {
	r := NewRegistry()
	v := r.NewGaugeVec("g", "G.", "cluster", "replica")
	v.With("c1", "a").Set(1)
	v.With("c2", "b").Set(1)
	v.With("c3", "a").Set(1)
	v.Delete("c2", "b")
	v.Delete("c9", "x") // absent: nothing happens
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	want := "# HELP g G.\n# TYPE g gauge\ng{cluster=\"c1\",replica=\"a\"} 1\ng{cluster=\"c3\",replica=\"a\"} 1\n"
	if got := buf.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	v.Delete("c1", "a")
	v.Delete("c3", "a")
	buf.Reset()
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Fatalf("a family without children wrote %q", buf.String())
	}
}
