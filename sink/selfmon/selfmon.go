// Package selfmon is a small, allocation-free metrics registry for
// anomalyd's own anomalyd_* metrics, written in the Prometheus text format.
// Each package builds its metrics struct from an injected *Registry; there
// is no global registry. Metric values are atomics, safe for concurrent use.
package selfmon

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families and writes them sorted by name.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{families: map[string]*family{}} }

type family struct {
	name, help, typ string
	labelNames      []string

	mu       sync.Mutex
	children map[string]child // key: label values joined by 0xff
	order    []string
}

type child interface {
	write(w *bufio.Writer, name, labels string)
}

// family returns the family called name, creating it. Registering the same
// name again with the same type and label names returns the existing family
// (a config reload rebuilds components on the same registry); any other
// clash is a bug.
func (r *Registry) family(name, help, typ string, labelNames []string) *family {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.families[name]; ok {
		if f.typ != typ || strings.Join(f.labelNames, ",") != strings.Join(labelNames, ",") {
			panic("BUG: selfmon: metric " + name + " registered twice with different type or labels")
		}
		return f
	}
	f := &family{name: name, help: help, typ: typ, labelNames: labelNames, children: map[string]child{}}
	r.families[name] = f
	return f
}

func (f *family) child(values []string, mk func() child) child {
	return f.childReplace(values, mk, false)
}

// childReplace is child; with replace, an existing child is replaced by mk's
// (scrape-time functions re-registered by a reloaded component).
func (f *family) childReplace(values []string, mk func() child, replace bool) child {
	if len(values) != len(f.labelNames) {
		panic(fmt.Sprintf("BUG: selfmon: %s wants %d label values, got %d", f.name, len(f.labelNames), len(values)))
	}
	key := strings.Join(values, "\xff")
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.children[key]
	if !ok || replace {
		c = mk()
		if !ok {
			f.order = append(f.order, key)
			sort.Strings(f.order)
		}
		f.children[key] = c
	}
	return c
}

func (f *family) delete(values []string) {
	key := strings.Join(values, "\xff")
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.children[key]; !ok {
		return
	}
	delete(f.children, key)
	i := sort.SearchStrings(f.order, key)
	f.order = append(f.order[:i], f.order[i+1:]...)
}

// Counter is a monotonically increasing float64.
type Counter struct{ bits atomic.Uint64 }

// Add adds d (which must not be negative).
func (c *Counter) Add(d float64) {
	for {
		old := c.bits.Load()
		if c.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Inc adds 1.
func (c *Counter) Inc() { c.Add(1) }

// Value returns the current value.
func (c *Counter) Value() float64 { return math.Float64frombits(c.bits.Load()) }

func (c *Counter) write(w *bufio.Writer, name, labels string) {
	writeSample(w, name, labels, c.Value())
}

// Gauge is a float64 that goes up and down.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the value.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds d (may be negative).
func (g *Gauge) Add(d float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// Value returns the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

func (g *Gauge) write(w *bufio.Writer, name, labels string) { writeSample(w, name, labels, g.Value()) }

type funcMetric func() float64

func (f funcMetric) write(w *bufio.Writer, name, labels string) { writeSample(w, name, labels, f()) }

// Histogram counts observations in cumulative buckets.
type Histogram struct {
	upper  []float64
	counts []atomic.Uint64
	count  atomic.Uint64
	sum    Counter
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.upper, v)
	if i < len(h.counts) {
		h.counts[i].Add(1)
	}
	h.count.Add(1)
	h.sum.Add(v)
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.count.Load() }

func (h *Histogram) write(w *bufio.Writer, name, labels string) {
	var cum uint64
	for i, u := range h.upper {
		cum += h.counts[i].Load()
		writeSample(w, name+"_bucket", joinLabels(labels, `le="`+strconv.FormatFloat(u, 'g', -1, 64)+`"`), float64(cum))
	}
	n := h.count.Load()
	writeSample(w, name+"_bucket", joinLabels(labels, `le="+Inf"`), float64(n))
	writeSample(w, name+"_sum", labels, h.sum.Value())
	writeSample(w, name+"_count", labels, float64(n))
}

// DefBuckets suit request durations in seconds.
var DefBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewCounter registers a counter without labels.
func (r *Registry) NewCounter(name, help string) *Counter {
	return r.NewCounterVec(name, help).With()
}

// NewGauge registers a gauge without labels.
func (r *Registry) NewGauge(name, help string) *Gauge { return r.NewGaugeVec(name, help).With() }

// NewGaugeFunc registers a gauge whose value f returns at scrape time.
func (r *Registry) NewGaugeFunc(name, help string, f func() float64) {
	r.family(name, help, "gauge", nil).childReplace(nil, func() child { return funcMetric(f) }, true)
}

// NewCounterFunc registers a counter whose value f returns at scrape time.
func (r *Registry) NewCounterFunc(name, help string, f func() float64) {
	r.family(name, help, "counter", nil).childReplace(nil, func() child { return funcMetric(f) }, true)
}

// NewHistogram registers a histogram without labels.
func (r *Registry) NewHistogram(name, help string, buckets []float64) *Histogram {
	return r.NewHistogramVec(name, help, buckets).With()
}

// CounterVec is a counter family with labels.
type CounterVec struct{ f *family }

// NewCounterVec registers a counter family.
func (r *Registry) NewCounterVec(name, help string, labelNames ...string) *CounterVec {
	return &CounterVec{r.family(name, help, "counter", labelNames)}
}

// With returns the counter for the label values, creating it. Callers on hot
// paths keep the result instead of calling With each time.
func (v *CounterVec) With(values ...string) *Counter {
	return v.f.child(values, func() child { return new(Counter) }).(*Counter)
}

// GaugeVec is a gauge family with labels.
type GaugeVec struct{ f *family }

// NewGaugeVec registers a gauge family.
func (r *Registry) NewGaugeVec(name, help string, labelNames ...string) *GaugeVec {
	return &GaugeVec{r.family(name, help, "gauge", labelNames)}
}

// With returns the gauge for the label values, creating it.
func (v *GaugeVec) With(values ...string) *Gauge {
	return v.f.child(values, func() child { return new(Gauge) }).(*Gauge)
}

// Delete removes the gauge for the label values, if any, so that a label
// set that is gone (a forgotten HA cluster) stops being written.
func (v *GaugeVec) Delete(values ...string) { v.f.delete(values) }

// Func registers, for label values, a child computed at scrape time.
func (v *GaugeVec) Func(f func() float64, values ...string) {
	v.f.childReplace(values, func() child { return funcMetric(f) }, true)
}

// FuncVec is a family whose children are computed at scrape time.
type FuncVec struct{ f *family }

// NewCounterFuncVec registers a counter family of scrape-time functions.
func (r *Registry) NewCounterFuncVec(name, help string, labelNames ...string) *FuncVec {
	return &FuncVec{r.family(name, help, "counter", labelNames)}
}

// NewGaugeFuncVec registers a gauge family of scrape-time functions.
func (r *Registry) NewGaugeFuncVec(name, help string, labelNames ...string) *FuncVec {
	return &FuncVec{r.family(name, help, "gauge", labelNames)}
}

// Add registers f as the child with the given label values.
func (v *FuncVec) Add(f func() float64, values ...string) {
	v.f.childReplace(values, func() child { return funcMetric(f) }, true)
}

// HistogramVec is a histogram family with labels.
type HistogramVec struct {
	f       *family
	buckets []float64
}

// NewHistogramVec registers a histogram family.
func (r *Registry) NewHistogramVec(name, help string, buckets []float64, labelNames ...string) *HistogramVec {
	return &HistogramVec{r.family(name, help, "histogram", labelNames), buckets}
}

// With returns the histogram for the label values, creating it.
func (v *HistogramVec) With(values ...string) *Histogram {
	return v.f.child(values, func() child {
		return &Histogram{upper: v.buckets, counts: make([]atomic.Uint64, len(v.buckets))}
	}).(*Histogram)
}

// WriteText writes every family in the Prometheus text format 0.0.4.
func (r *Registry) WriteText(out io.Writer) error {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	w := bufio.NewWriterSize(out, 16<<10)
	for _, f := range fams {
		f.mu.Lock()
		keys := append([]string(nil), f.order...)
		children := make([]child, len(keys))
		for i, k := range keys {
			children[i] = f.children[k]
		}
		f.mu.Unlock()
		if len(children) == 0 {
			continue
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.typ)
		for i, c := range children {
			c.write(w, f.name, f.labelString(keys[i]))
		}
	}
	return w.Flush()
}

func (f *family) labelString(key string) string {
	if len(f.labelNames) == 0 {
		return ""
	}
	values := strings.Split(key, "\xff")
	var b strings.Builder
	for i, n := range f.labelNames {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(EscapeLabelValue(values[i]))
		b.WriteByte('"')
	}
	return b.String()
}

func joinLabels(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

func writeSample(w *bufio.Writer, name, labels string, v float64) {
	w.WriteString(name)
	if labels != "" {
		w.WriteByte('{')
		w.WriteString(labels)
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.Write(AppendFloat(w.AvailableBuffer(), v))
	w.WriteByte('\n')
}

// AppendFloat appends v as the text format writes it (NaN, +Inf, -Inf).
func AppendFloat(dst []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(dst, "NaN"...)
	case math.IsInf(v, 1):
		return append(dst, "+Inf"...)
	case math.IsInf(v, -1):
		return append(dst, "-Inf"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

var labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// EscapeLabelValue escapes a label value for the text format.
func EscapeLabelValue(s string) string { return labelValueEscaper.Replace(s) }

func escapeHelp(s string) string { return helpEscaper.Replace(s) }
