// Package sinktest holds the test helpers that more than one of sink's
// packages needs: input series and records, the oracle of what the output
// series should hold, the records of the driver series, a remote-write store
// that decodes what it gets (Receiver) and a remote-read client (read.go).
// One copy, so that remote write, the history and /metrics are checked
// against the same expectations.
//
// It is imported by tests only. It imports no sink package, so that each
// package's own (internal) tests can import it.
package sinktest

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Names are the default output names.
var Names = series.Names{Score: "anomaly_score", Expected: "anomaly_expected", Lower: "anomaly_lower", Upper: "anomaly_upper", Driver: "anomaly_driver", Value: "anomaly_value"}

// Step is the time between records in ms: a 15 s scrape interval.
const Step = 15_000

// StaleNaN is the stale marker value; compare it by bits, never with ==.
var StaleNaN = math.Float64frombits(value.StaleNaN)

// Info builds a series.Info from label pairs.
func Info(kv ...string) *series.Info {
	type lbl struct{ n, v string }
	ls := make([]lbl, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, lbl{kv[i], kv[i+1]})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].n < ls[j].n })
	var b strings.Builder
	name := ""
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(series.LabelSep)
		}
		b.WriteString(l.n)
		b.WriteByte(series.LabelSep)
		b.WriteString(l.v)
		if l.n == "__name__" {
			name = l.v
		}
	}
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return &series.Info{Labels: b.String(), Name: name, Hash: h.Sum64()}
}

// Group builds the canonical labels of an incident group from label pairs,
// as window.Incidents.GroupOf does.
func Group(kv ...string) string {
	type lbl struct{ n, v string }
	ls := make([]lbl, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, lbl{kv[i], kv[i+1]})
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].n < ls[j].n })
	var key []byte
	for _, l := range ls {
		key = series.AppendLabel(key, l.n, l.v)
	}
	return string(key)
}

// Infos returns n series of one metric that differ by instance.
func Infos(n int) []*series.Info {
	ss := make([]*series.Info, n)
	for i := range ss {
		ss[i] = Info("__name__", "http_requests_total", "job", "api", "instance", fmt.Sprintf("10.0.%d.%d:9100", i/256, i%256))
	}
	return ss
}

// Records makes one ready combined record per series at time t, values
// derived from t and the series' index so that they can be checked.
func Records(infos []*series.Info, t int64) []series.Record {
	recs := make([]series.Record, len(infos))
	for i, s := range infos {
		v := float64(t) + float64(i)/1000
		recs[i] = series.Record{Series: s, T: t, Detector: detectors.KindCombined, Score: v, Expected: v + 1, Lower: v - 1, Upper: v + 2}
	}
	return recs
}

// BenchBatch is one full default batch: 500 records × 4 outputs = 2000
// samples over 250 input series (two timestamps each), realistic labels.
func BenchBatch() []series.Record {
	infos := make([]*series.Info, 250)
	for i := range infos {
		infos[i] = Info("__name__", "node_network_receive_bytes_total", "job", "node-exporter",
			"instance", fmt.Sprintf("node-%03d.eu-west-1.example.com:9100", i), "device", "eth0", "cluster", "prod-eu")
	}
	batch := make([]series.Record, 0, 500)
	for t := int64(0); t < 2; t++ {
		for i, s := range infos {
			v := float64(i) * 1.5e6
			batch = append(batch, series.Record{Series: s, T: 1_700_000_000_000 + t*15_000, Detector: detectors.KindCombined,
				Score: 0.25 * float64(i%13), Expected: v, Lower: v * 0.9, Upper: v * 1.1})
		}
	}
	return batch
}

// Sample is one output sample as a store or a reader sees it.
type Sample struct {
	T int64
	V float64
}

func (s Sample) String() string {
	return fmt.Sprintf("%d:%s(%#x)", s.T, strconv.FormatFloat(s.V, 'g', -1, 64), math.Float64bits(s.V))
}

// SameSamples compares by value bits, so NaN, stale markers and ±Inf compare exactly.
func SameSamples(got, want []Sample) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].T != want[i].T || math.Float64bits(got[i].V) != math.Float64bits(want[i].V) {
			return false
		}
	}
	return true
}

// LabelKey writes a label set as n=v,n=v.
func LabelKey(ls []prompb.Label) string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
	}
	return b.String()
}

// Oracle is what the output series should hold: every output series'
// samples, by LabelKey.
type Oracle map[string][]Sample

// Add adds the output samples of recs by the documented rules: the outputs
// of Record.Slots, stale markers only for series that exist, samples not
// newer than a series' last dropped (the history's rule; remote write never
// sees them).
func (o Oracle) Add(names series.Names, recs ...series.Record) {
	for _, r := range recs {
		for m := r.Slots(); m != 0; m &= m - 1 {
			out := bits.TrailingZeros16(m)
			lbls := series.AppendOutputLabels(nil, r.Series, names.Name(out), r.DetectorOf(out))
			k := LabelKey(lbls)
			v := r.Value(out)
			if r.Stale {
				if len(o[k]) == 0 {
					continue // no series to end
				}
				v = StaleNaN
			}
			if n := len(o[k]); n > 0 && o[k][n-1].T >= r.T {
				continue // out of order
			}
			o[k] = append(o[k], Sample{T: r.T, V: v})
		}
	}
}

// In returns the oracle restricted to [mint, maxt], series without samples
// left out.
func (o Oracle) In(mint, maxt int64) Oracle {
	out := Oracle{}
	for k, ss := range o {
		for _, s := range ss {
			if s.T >= mint && s.T <= maxt {
				out[k] = append(out[k], s)
			}
		}
	}
	return out
}

// CompareOracles fails for every series that got and want disagree on.
func CompareOracles(t testing.TB, got, want Oracle) {
	t.Helper()
	for k, w := range want {
		if !SameSamples(got[k], w) {
			t.Errorf("series %s:\n got %v\nwant %v", k, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected series %s: %v", k, got[k])
		}
	}
}

// DecodeChunk decodes an XOR chunk with chunkenc.
func DecodeChunk(t testing.TB, b []byte) []Sample {
	t.Helper()
	c, err := chunkenc.FromData(chunkenc.EncXOR, b)
	if err != nil {
		t.Fatalf("chunk: %v", err)
	}
	var out []Sample
	it := c.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		ts, v := it.At()
		out = append(out, Sample{T: ts, V: v})
	}
	if err := it.Err(); err != nil {
		t.Fatalf("chunk: %v", err)
	}
	if len(out) != c.NumSamples() {
		t.Fatalf("chunk decodes to %d samples, header says %d", len(out), c.NumSamples())
	}
	return out
}

// Driver sets: bit 1<<k per detector k.
const (
	DrvAll  uint8 = 1<<detectors.KindEntropy - 1 // ewma, zscore, holtwinters and slope
	DrvNoHW       = DrvAll &^ (1 << detectors.KindHoltWinters)
)

// DriverRecord is a ready combined record of s at t driven by drv, with
// the driver series in set; its values derive from t.
func DriverRecord(s *series.Info, t int64, drv detectors.Kind, set uint8) series.Record {
	v := float64(t)
	return series.Record{Series: s, T: t, Detector: detectors.KindCombined, Driver: drv, DriverSet: set,
		Score: v / 1000, Expected: v, Lower: v - 1, Upper: v + 1, Analysed: v / 2}
}

// DriverRun is the records of two input series over 30 steps: a with every
// detector and the value series (5 of warm-up, a driver that moves, then
// stale), b without Holt-Winters, whose zscore driver series a reload ends
// at step 20.
func DriverRun(a, b *series.Info) [][]series.Record {
	var steps [][]series.Record
	for i := range 30 {
		ts := int64(1_700_000_000_000 + i*Step)
		drv := detectors.KindHoltWinters
		if i%3 == 1 {
			drv = detectors.KindEWMA
		}
		ra := DriverRecord(a, ts, drv, DrvAll)
		switch {
		case i < 5:
			ra = series.Record{Series: a, T: ts, Detector: detectors.KindCombined, Warmup: true, DriverSet: DrvAll}
		case i == 29:
			ra = series.Record{Series: a, T: ts, Detector: detectors.KindCombined, Stale: true, DriverSet: DrvAll}
		}
		ra.HasValue = true
		recs := []series.Record{ra}
		if i == 20 {
			recs = append(recs, series.Record{Series: b, T: ts, Detector: detectors.KindCombined, Stale: true, OnlyExtras: true, DriverSet: 1 << detectors.KindZScore})
		} else {
			set := DrvNoHW
			if i > 20 {
				set &^= 1 << detectors.KindZScore
			}
			drv := detectors.KindEWMA
			if i%2 == 1 {
				drv = detectors.KindSlope
			}
			recs = append(recs, DriverRecord(b, ts, drv, set))
		}
		steps = append(steps, recs)
	}
	return steps
}
