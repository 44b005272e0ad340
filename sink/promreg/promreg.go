// Package promreg registers anomalyd's own anomalyd_* metrics on a
// prometheus/client_golang registry and writes a registry in the text
// format. Each stage builds its metrics from an injected
// *prometheus.Registry; there is no global registry.
//
// A config reload rebuilds stages on the same registry, so registering a
// metric again must not fail: Register returns the collector registered
// first (the counters carry on across the reload), and GaugeFunc and
// CounterFunc swap the function of a metric computed at scrape time for
// the new one (it reads the rebuilt stage).
package promreg

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// DefBuckets suit request durations in seconds: from half a millisecond,
// where a local store answers, to 10 s.
var DefBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Register registers c in reg and returns it. When a collector with the same
// descriptors is registered already (a reload rebuilding a component), it
// returns that one, so that its values carry on. Any other clash (same name,
// other type, labels or help) is a bug and panics.
func Register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(T); ok {
			return old
		}
	}
	panic(fmt.Sprintf("BUG: promreg: %v", err))
}

// funcMetric is one metric whose value a function returns at scrape time.
// The function is swapped, not the collector, when a reloaded component
// registers it again, so that no scrape misses the metric.
type funcMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	f    atomic.Pointer[func() float64]
}

func (m *funcMetric) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

func (m *funcMetric) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.desc, m.typ, (*m.f.Load())())
}

// GaugeFunc registers a gauge whose value f returns at scrape time, with
// the given labels (nil for none). Labels distinguish the children of one
// family: every child of a name must have the same label names and help.
// Registering the same name and label values again replaces f.
func GaugeFunc(reg prometheus.Registerer, name, help string, labels prometheus.Labels, f func() float64) {
	registerFunc(reg, prometheus.GaugeValue, name, help, labels, f)
}

// CounterFunc is GaugeFunc for a counter.
func CounterFunc(reg prometheus.Registerer, name, help string, labels prometheus.Labels, f func() float64) {
	registerFunc(reg, prometheus.CounterValue, name, help, labels, f)
}

func registerFunc(reg prometheus.Registerer, typ prometheus.ValueType, name, help string, labels prometheus.Labels, f func() float64) {
	m := &funcMetric{desc: prometheus.NewDesc(name, help, nil, labels), typ: typ}
	m.f.Store(&f)
	if old := Register(reg, m); old != m {
		old.f.Store(&f)
	}
}

// UnregisterFunc removes the GaugeFunc or CounterFunc of name and label
// values, so that the series of a component that is gone stop being
// written. It reports whether there was one.
func UnregisterFunc(reg prometheus.Registerer, name string, labels prometheus.Labels) bool {
	// Unregister matches descriptors by name and label values only.
	return reg.Unregister(&funcMetric{desc: prometheus.NewDesc(name, "", nil, labels)})
}

// WriteText writes every family g gathers in the Prometheus text format
// 0.0.4, sorted by name. A gathering error is returned after writing what
// was gathered.
func WriteText(w io.Writer, g prometheus.Gatherer) error {
	mfs, gatherErr := g.Gather()
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return fmt.Errorf("cannot write metric family %s: %w", mf.GetName(), err)
		}
	}
	if gatherErr != nil {
		return fmt.Errorf("cannot gather the self metrics: %w", gatherErr)
	}
	return nil
}

// Value returns the value of a counter or gauge, or the observation count
// of a histogram. Tests read the metrics of a component with it.
func Value(m prometheus.Metric) float64 {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		panic(fmt.Sprintf("BUG: promreg: cannot read %v: %v", m.Desc(), err))
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	case pb.Histogram != nil:
		return float64(pb.Histogram.GetSampleCount())
	case pb.Untyped != nil:
		return pb.Untyped.GetValue()
	}
	panic(fmt.Sprintf("BUG: promreg: %v is no counter, gauge or histogram", m.Desc()))
}

// NewCounter registers a counter without labels (see Register).
func NewCounter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

// NewCounterVec registers a counter family (see Register). Callers on hot
// paths keep the children (WithLabelValues) instead of looking them up for
// each use.
func NewCounterVec(reg prometheus.Registerer, name, help string, labelNames ...string) *prometheus.CounterVec {
	return Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labelNames))
}

// NewGauge registers a gauge without labels (see Register).
func NewGauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	return Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

// NewGaugeVec registers a gauge family (see Register).
func NewGaugeVec(reg prometheus.Registerer, name, help string, labelNames ...string) *prometheus.GaugeVec {
	return Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labelNames))
}

// NewHistogram registers a histogram without labels (see Register).
func NewHistogram(reg prometheus.Registerer, name, help string, buckets []float64) prometheus.Histogram {
	return Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}))
}

// NewHistogramVec registers a histogram family (see Register).
func NewHistogramVec(reg prometheus.Registerer, name, help string, buckets []float64, labelNames ...string) *prometheus.HistogramVec {
	return Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labelNames))
}
