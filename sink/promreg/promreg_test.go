package promreg

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func writeText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteText(&b, reg); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteText(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewCounterVec(reg, "b_total", "Help with \\ and\nnewline.", "code").WithLabelValues(`x"y`).Add(2)
	NewGauge(reg, "a", "A gauge.").Set(math.Inf(-1))
	h := NewHistogram(reg, "c_seconds", "A histogram.", []float64{.5, 1})
	h.Observe(.25)
	h.Observe(3)
	NewGaugeVec(reg, "d", "No child yet, so not written.", "x")
	GaugeFunc(reg, "e", "Per shard.", prometheus.Labels{"shard": "1"}, func() float64 { return 7 })
	GaugeFunc(reg, "e", "Per shard.", prometheus.Labels{"shard": "0"}, func() float64 { return 6 })
	want := `# HELP a A gauge.
# TYPE a gauge
a -Inf
# HELP b_total Help with \\ and\nnewline.
# TYPE b_total counter
b_total{code="x\"y"} 2
# HELP c_seconds A histogram.
# TYPE c_seconds histogram
c_seconds_bucket{le="0.5"} 1
c_seconds_bucket{le="1"} 1
c_seconds_bucket{le="+Inf"} 2
c_seconds_sum 3.25
c_seconds_count 2
# HELP e Per shard.
# TYPE e gauge
e{shard="0"} 6
e{shard="1"} 7
`
	if got := writeText(t, reg); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A reload registers the same metrics again on the same registry: the
// collectors registered first stay, with their values, and the functions
// read the rebuilt component.
func TestRegisterAgain(t *testing.T) {
	reg := prometheus.NewRegistry()
	c1 := NewCounterVec(reg, "x_total", "X.", "remote").WithLabelValues("a")
	c1.Inc()
	CounterFunc(reg, "f_total", "F.", nil, func() float64 { return 1 })
	GaugeFunc(reg, "g", "G.", prometheus.Labels{"remote": "a"}, func() float64 { return 1 })

	c2 := NewCounterVec(reg, "x_total", "X.", "remote").WithLabelValues("a")
	c2.Inc()
	CounterFunc(reg, "f_total", "F.", nil, func() float64 { return 2 })
	GaugeFunc(reg, "g", "G.", prometheus.Labels{"remote": "a"}, func() float64 { return 2 })
	if v := Value(c1); v != 2 {
		t.Errorf("x_total = %v after a second registration, want 2 (one counter)", v)
	}
	text := writeText(t, reg)
	for _, line := range []string{"f_total 2\n", "g{remote=\"a\"} 2\n", "x_total{remote=\"a\"} 2\n"} {
		if !strings.Contains(text, line) {
			t.Errorf("lacks %q:\n%s", line, text)
		}
	}

	if !UnregisterFunc(reg, "g", prometheus.Labels{"remote": "a"}) {
		t.Error("UnregisterFunc found no g{remote=\"a\"}")
	}
	if UnregisterFunc(reg, "g", prometheus.Labels{"remote": "b"}) {
		t.Error("UnregisterFunc removed a g{remote=\"b\"} never registered")
	}
	if text := writeText(t, reg); strings.Contains(text, "\ng") {
		t.Errorf("g still written after UnregisterFunc:\n%s", text)
	}
	GaugeFunc(reg, "g", "G.", prometheus.Labels{"remote": "a"}, func() float64 { return 3 })
	if text := writeText(t, reg); !strings.Contains(text, "g{remote=\"a\"} 3\n") {
		t.Errorf("g not back after registering it again:\n%s", text)
	}
}

func TestRegisterClash(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewCounter(reg, "x_total", "X.")
	defer func() {
		if recover() == nil {
			t.Error("registering x_total as a gauge after a counter did not panic")
		}
	}()
	NewGaugeVec(reg, "x_total", "X.", "l")
}

func TestValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewCounter(reg, "c_total", "C.")
	c.Add(1.5)
	g := NewGauge(reg, "g", "G.")
	g.Set(-3)
	h := NewHistogramVec(reg, "h", "H.", DefBuckets, "x").WithLabelValues("y")
	h.Observe(1)
	h.Observe(2)
	if v := Value(c); v != 1.5 {
		t.Errorf("counter: %v", v)
	}
	if v := Value(g); v != -3 {
		t.Errorf("gauge: %v", v)
	}
	if v := Value(h.(prometheus.Metric)); v != 2 {
		t.Errorf("histogram count: %v", v)
	}
}
