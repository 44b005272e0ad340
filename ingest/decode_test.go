package ingest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// decodedSeries is a decoder-independent view of one series for comparison.
type decodedSeries struct {
	labels     [][2]string
	samples    []sample
	hists      []histSample
	histograms int
	exemplars  int
	metricType uint8
}

func viewOf(r *request) []decodedSeries {
	var out []decodedSeries
	for _, s := range r.series {
		d := decodedSeries{histograms: int(s.histograms), exemplars: int(s.exemplars), metricType: s.metricType}
		for _, l := range r.labels[s.labelsStart:s.labelsEnd] {
			d.labels = append(d.labels, [2]string{string(r.str(l.name)), string(r.str(l.value))})
		}
		d.samples = append(d.samples, r.samples[s.samplesStart:s.samplesEnd]...)
		d.hists = append(d.hists, r.hists[s.histStart:s.histStart+s.histograms]...)
		out = append(out, d)
	}
	return out
}

func viewOfV1(wr *prompb.WriteRequest) []decodedSeries {
	var out []decodedSeries
	for _, ts := range wr.Timeseries {
		d := decodedSeries{histograms: len(ts.Histograms), exemplars: len(ts.Exemplars)}
		for _, l := range ts.Labels {
			d.labels = append(d.labels, [2]string{l.Name, l.Value})
		}
		for _, s := range ts.Samples {
			d.samples = append(d.samples, sample{t: s.Timestamp, v: s.Value})
		}
		for _, h := range ts.Histograms {
			hs := histSample{t: h.Timestamp, sum: h.Sum, gauge: h.ResetHint == prompb.Histogram_GAUGE}
			if h.IsFloatHistogram() {
				hs.count = h.GetCountFloat()
			} else {
				hs.count = float64(h.GetCountInt())
			}
			d.hists = append(d.hists, hs)
		}
		out = append(out, d)
	}
	return out
}

func viewOfV2(wr *writev2.Request) ([]decodedSeries, bool) {
	var out []decodedSeries
	for _, ts := range wr.Timeseries {
		d := decodedSeries{histograms: len(ts.Histograms), exemplars: len(ts.Exemplars), metricType: uint8(ts.Metadata.Type)}
		if len(ts.LabelsRefs)%2 != 0 {
			return nil, false
		}
		for i := 0; i < len(ts.LabelsRefs); i += 2 {
			n, v := ts.LabelsRefs[i], ts.LabelsRefs[i+1]
			if int(n) >= len(wr.Symbols) || int(v) >= len(wr.Symbols) {
				return nil, false
			}
			d.labels = append(d.labels, [2]string{wr.Symbols[n], wr.Symbols[v]})
		}
		for _, s := range ts.Samples {
			d.samples = append(d.samples, sample{t: s.Timestamp, v: s.Value})
		}
		for _, h := range ts.Histograms {
			hs := histSample{t: h.Timestamp, sum: h.Sum, gauge: h.ResetHint == writev2.Histogram_RESET_HINT_GAUGE}
			if h.IsFloatHistogram() {
				hs.count = h.GetCountFloat()
			} else {
				hs.count = float64(h.GetCountInt())
			}
			d.hists = append(d.hists, hs)
		}
		out = append(out, d)
	}
	return out, true
}

func equalViews(t *testing.T, got, want []decodedSeries) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d series, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if len(g.labels) != len(w.labels) {
			t.Fatalf("series %d: got labels %v, want %v", i, g.labels, w.labels)
		}
		for j := range g.labels {
			if g.labels[j] != w.labels[j] {
				t.Fatalf("series %d label %d: got %q, want %q", i, j, g.labels[j], w.labels[j])
			}
		}
		if len(g.samples) != len(w.samples) {
			t.Fatalf("series %d: got %d samples, want %d", i, len(g.samples), len(w.samples))
		}
		for j := range g.samples {
			if g.samples[j].t != w.samples[j].t || math.Float64bits(g.samples[j].v) != math.Float64bits(w.samples[j].v) {
				t.Fatalf("series %d sample %d: got %+v, want %+v", i, j, g.samples[j], w.samples[j])
			}
		}
		if len(g.hists) != len(w.hists) {
			t.Fatalf("series %d: got %d histograms, want %d", i, len(g.hists), len(w.hists))
		}
		for j := range g.hists {
			gh, wh := g.hists[j], w.hists[j]
			if gh.t != wh.t || gh.gauge != wh.gauge || math.Float64bits(gh.count) != math.Float64bits(wh.count) || math.Float64bits(gh.sum) != math.Float64bits(wh.sum) {
				t.Fatalf("series %d histogram %d: got %+v, want %+v", i, j, gh, wh)
			}
		}
		if g.histograms != w.histograms || g.exemplars != w.exemplars || g.metricType != w.metricType {
			t.Fatalf("series %d: got histograms/exemplars/type %d/%d/%d, want %d/%d/%d", i,
				g.histograms, g.exemplars, g.metricType, w.histograms, w.exemplars, w.metricType)
		}
	}
}

var specialValues = []float64{0, 1, -1, math.NaN(), math.Float64frombits(value.StaleNaN), math.Inf(1), math.Inf(-1), 1e308, -5e-324}

func randomV1(rng *rand.Rand, nSeries int) *prompb.WriteRequest {
	wr := &prompb.WriteRequest{}
	for i := range nSeries {
		ts := prompb.TimeSeries{Labels: []prompb.Label{
			{Name: "__name__", Value: "metric_" + string(rune('a'+i%26))},
			{Name: "instance", Value: "host:9100"},
			{Name: "job", Value: "node"},
		}}
		if rng.IntN(4) == 0 {
			ts.Labels = append(ts.Labels, prompb.Label{Name: "empty", Value: ""})
		}
		for j := range rng.IntN(4) {
			v := rng.NormFloat64() * 1e3
			if rng.IntN(5) == 0 {
				v = specialValues[rng.IntN(len(specialValues))]
			}
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: int64(1_700_000_000_000 + j*15_000 - rng.IntN(3)), Value: v})
		}
		if rng.IntN(6) == 0 {
			ts.Histograms = append(ts.Histograms, prompb.Histogram{Count: &prompb.Histogram_CountInt{CountInt: 3}, Timestamp: 5})
		}
		if i%7 == 3 { // not drawn from rng, which would change every other series
			ts.Histograms = append(ts.Histograms, prompb.Histogram{Count: &prompb.Histogram_CountFloat{CountFloat: 2.5}, Sum: float64(i) * 1.5,
				ResetHint: prompb.Histogram_ResetHint(i % 4), Timestamp: 1_700_000_000_000, Schema: 3,
				PositiveSpans: []prompb.BucketSpan{{Offset: -2, Length: 2}}, PositiveCounts: []float64{1, 1.5}})
		}
		if rng.IntN(6) == 0 {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 1, Timestamp: 7})
		}
		wr.Timeseries = append(wr.Timeseries, ts)
	}
	wr.Metadata = []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "metric_a", Help: "h"}}
	return wr
}

func randomV2(rng *rand.Rand, nSeries int) *writev2.Request {
	st := writev2.NewSymbolTable()
	wr := &writev2.Request{}
	for i := range nSeries {
		ts := writev2.TimeSeries{LabelsRefs: []uint32{
			st.Symbolize("__name__"), st.Symbolize("metric_" + string(rune('a'+i%26))),
			st.Symbolize("job"), st.Symbolize("api"),
		}}
		ts.Metadata.Type = writev2.Metadata_MetricType(rng.IntN(8))
		if rng.IntN(5) == 0 { // a native histogram series
			for j := range 1 + rng.IntN(2) {
				h := writev2.Histogram{Count: &writev2.Histogram_CountInt{CountInt: uint64(rng.IntN(1000))}, Sum: rng.NormFloat64() * 100,
					Schema: 1, ZeroThreshold: 1e-128, ZeroCount: &writev2.Histogram_ZeroCountInt{ZeroCountInt: 1},
					PositiveSpans: []writev2.BucketSpan{{Offset: 0, Length: 3}}, PositiveDeltas: []int64{1, 2, -1},
					ResetHint: writev2.Histogram_ResetHint(rng.IntN(4)), Timestamp: int64(1_700_000_000_000 + j*1000), StartTimestamp: 5}
				if rng.IntN(2) == 0 {
					h.Count = &writev2.Histogram_CountFloat{CountFloat: rng.Float64() * 10}
				}
				ts.Histograms = append(ts.Histograms, h)
			}
			wr.Timeseries = append(wr.Timeseries, ts)
			continue
		}
		for j := range 1 + rng.IntN(3) {
			v := rng.NormFloat64()
			if rng.IntN(5) == 0 {
				v = specialValues[rng.IntN(len(specialValues))]
			}
			ts.Samples = append(ts.Samples, writev2.Sample{Timestamp: int64(1_700_000_000_000 + j*1000), Value: v, StartTimestamp: 5})
		}
		if rng.IntN(5) == 0 {
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{LabelsRefs: []uint32{st.Symbolize("trace_id"), st.Symbolize("x")}, Value: 1})
		}
		wr.Timeseries = append(wr.Timeseries, ts)
	}
	wr.Symbols = st.Symbols()
	return wr
}

// The fast decoder must read exactly what prompb's gogo decoder reads.
func TestDecodeV1MatchesPrompb(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		wr := randomV1(rng, rng.IntN(20))
		b, err := wr.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var r request
		r.buf = b
		if err := r.decodeV1(); err != nil {
			t.Fatalf("decodeV1: %v", err)
		}
		equalViews(t, viewOf(&r), viewOfV1(wr))
		if len(r.metadata) != 1 || string(r.str(r.metadata[0].name)) != "metric_a" || r.metadata[0].metricType != metricTypeCounter {
			t.Fatalf("metadata: got %+v", r.metadata)
		}
	}
}

func TestDecodeV2MatchesWritev2(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		wr := randomV2(rng, rng.IntN(20))
		b, err := wr.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var r request
		r.buf = b
		if err := r.decodeV2(); err != nil {
			t.Fatalf("decodeV2: %v", err)
		}
		want, _ := viewOfV2(wr)
		equalViews(t, viewOf(&r), want)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	f := func(name string, b []byte, v2 bool) {
		t.Helper()
		r := request{buf: b}
		var err error
		if v2 {
			err = r.decodeV2()
		} else {
			err = r.decodeV1()
		}
		if err == nil {
			t.Fatalf("%s: decoded %x without error", name, b)
		}
	}
	f("truncated varint", []byte{0x0a, 0x80}, false)
	f("length beyond end", []byte{0x0a, 0x05, 0x01}, false)
	f("field number 0", []byte{0x02, 0x00}, false)
	f("group wire type", []byte{0x0b}, false)
	f("timeseries as varint", []byte{0x08, 0x01}, false)
	f("symbols[0] not empty", []byte{0x22, 0x01, 'x'}, true)
	f("truncated v2", []byte{0x2a, 0x03, 0x0a}, true)
}

func TestDecodeV2BadRefs(t *testing.T) {
	wr := &writev2.Request{Symbols: []string{"", "__name__", "x"}, Timeseries: []writev2.TimeSeries{
		{LabelsRefs: []uint32{1, 2, 1}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}},
		{LabelsRefs: []uint32{1, 9}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}},
		{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}},
		{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}, Metadata: writev2.Metadata{HelpRef: 3}},
		{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}, Metadata: writev2.Metadata{UnitRef: 1 << 20}},
		{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}, Metadata: writev2.Metadata{Type: 1, HelpRef: 2, UnitRef: 1}},
	}}
	b, _ := wr.Marshal()
	r := request{buf: b}
	if err := r.decodeV2(); err != nil {
		t.Fatal(err)
	}
	want := []refFault{refLabelsOdd, refLabels, refOK, refHelp, refUnit, refOK}
	wantValue := []uint64{3, 9, 0, 3, 1 << 20, 0}
	for i, s := range r.series {
		if s.badRef != want[i] || s.badRefValue != wantValue[i] {
			t.Errorf("series %d: got fault %d (ref %d), want %d (ref %d)", i, s.badRef, s.badRefValue, want[i], wantValue[i])
		}
	}
	if r.series[5].metricType != metricTypeCounter {
		t.Errorf("metadata type: got %d, want %d", r.series[5].metricType, metricTypeCounter)
	}
}

func FuzzDecodeV1(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		b, _ := randomV1(rng, 3).Marshal()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := request{buf: b}
		err := r.decodeV1()
		var wr prompb.WriteRequest
		if gerr := wr.Unmarshal(b); gerr == nil && err == nil {
			equalViews(t, viewOf(&r), viewOfV1(&wr))
		}
	})
}

func FuzzDecodeV2(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 8 {
		b, _ := randomV2(rng, 3).Marshal()
		f.Add(b)
	}
	f.Add([]byte{})
	// Metadata references beyond symbols, an exemplar-only series.
	b, _ := (&writev2.Request{Symbols: []string{"", "__name__", "x"}, Timeseries: []writev2.TimeSeries{
		{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}, Metadata: writev2.Metadata{Type: 1, HelpRef: 9, UnitRef: 2}},
		{LabelsRefs: []uint32{1, 2}, Exemplars: []writev2.Exemplar{{LabelsRefs: []uint32{1, 2}, Value: 1, Timestamp: 1}}},
	}}).Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := request{buf: b}
		err := r.decodeV2()
		var wr writev2.Request
		if gerr := wr.Unmarshal(b); gerr == nil && err == nil {
			if want, ok := viewOfV2(&wr); ok {
				for i := range r.series {
					if r.series[i].badRef != refOK {
						return
					}
				}
				equalViews(t, viewOf(&r), want)
			}
		}
	})
}

func BenchmarkDecodeV1(b *testing.B) {
	buf, _ := randomV1(rand.New(rand.NewPCG(9, 9)), 2000).Marshal()
	var r request
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		r.reset()
		r.buf = buf
		if err := r.decodeV1(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeV1Prompb(b *testing.B) {
	buf, _ := randomV1(rand.New(rand.NewPCG(9, 9)), 2000).Marshal()
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var wr prompb.WriteRequest
		if err := wr.Unmarshal(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeV2(b *testing.B) {
	buf, _ := randomV2(rand.New(rand.NewPCG(9, 9)), 2000).Marshal()
	var r request
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		r.reset()
		r.buf = buf
		if err := r.decodeV2(); err != nil {
			b.Fatal(err)
		}
	}
}
