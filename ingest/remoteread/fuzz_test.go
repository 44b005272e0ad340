package remoteread

import (
	"bytes"
	"math"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window"
)

// fuzzSeries holds StaleNaN, NaN and ±Inf among ordinary values.
func fuzzSeries() []window.Sample {
	s := steps(t0, 300, 15_000, func(i int) float64 { return math.Sin(float64(i)) })
	s[10].V = math.Float64frombits(value.StaleNaN)
	s[11].V = math.NaN()
	s[12].V = math.Inf(1)
	s[13].V = math.Inf(-1)
	return s
}

var fuzzQueries = []Query{
	{Labels: lbls("__name__", "x"), Start: t0 + 1000, End: t0 + 200*15_000},
	{Labels: lbls("__name__", "y", "job", "j"), Start: math.MinInt64, End: math.MaxInt64},
}

// checkDecoded: whatever the input, a decoder that returns no error gives
// sorted, unique samples within each query's range.
func checkDecoded(t *testing.T, out [][]window.Sample) {
	for i, s := range out {
		for j := range s {
			if s[j].T < fuzzQueries[i].Start || s[j].T > fuzzQueries[i].End {
				t.Fatalf("query %d: sample %v outside [%d, %d]", i, s[j], fuzzQueries[i].Start, fuzzQueries[i].End)
			}
			if j > 0 && s[j].T <= s[j-1].T {
				t.Fatalf("query %d: samples %v %v not sorted and unique", i, s[j-1], s[j])
			}
		}
	}
}

// FuzzDecodeStreamed feeds arbitrary bodies to the streamed decoder. With
// frame set, data is one frame's payload and gets a valid length and CRC, so
// the fuzzer reaches the protobuf and XOR-chunk decoding behind the CRC.
func FuzzDecodeStreamed(f *testing.F) {
	resp := prompb.ChunkedReadResponse{QueryIndex: 0, ChunkedSeries: []*prompb.ChunkedSeries{
		{Labels: toProm(fuzzQueries[0].Labels), Chunks: xorChunks(fuzzSeries(), 120)}}}
	payload, _ := resp.Marshal()
	resp2 := prompb.ChunkedReadResponse{QueryIndex: 1, ChunkedSeries: []*prompb.ChunkedSeries{
		{Labels: toProm(fuzzQueries[1].Labels), Chunks: xorChunks(fuzzSeries()[:3], 120)}}}
	payload2, _ := resp2.Marshal()
	body := wire.AppendFrame(wire.AppendFrame(nil, payload), payload2)
	f.Add(payload, true)
	f.Add(payload2, true)
	f.Add(body, false)
	f.Add(body[:len(body)/2], false) // truncated
	f.Add([]byte{}, false)
	f.Add([]byte{}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, false) // huge length
	f.Fuzz(func(t *testing.T, data []byte, frame bool) {
		if frame {
			data = wire.AppendFrame(nil, data)
		}
		out := make([][]window.Sample, len(fuzzQueries))
		err := decodeStreamed(bytes.NewReader(data), fuzzQueries, out, &reservation{limit: 4 << 20}, 1<<20, "", &ReadStats{})
		if err == nil {
			checkDecoded(t, out)
		}
	})
}

// FuzzDecodeSamples feeds arbitrary bodies to the SAMPLES decoder; with
// compress set, data is the ReadResponse and gets snappy-compressed.
func FuzzDecodeSamples(f *testing.F) {
	var ts []prompb.Sample
	for _, s := range fuzzSeries() {
		ts = append(ts, prompb.Sample{Timestamp: s.T, Value: s.V})
	}
	resp := prompb.ReadResponse{Results: []*prompb.QueryResult{
		{Timeseries: []*prompb.TimeSeries{{Labels: toProm(fuzzQueries[0].Labels), Samples: ts}}},
		{},
	}}
	raw, _ := resp.Marshal()
	f.Add(raw, true)
	f.Add(snappy.Encode(nil, raw), false)
	f.Add([]byte{}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, false) // snappy header claiming 4 GiB
	f.Fuzz(func(t *testing.T, data []byte, compress bool) {
		if compress {
			data = snappy.Encode(nil, data)
		}
		out := make([][]window.Sample, len(fuzzQueries))
		err := decodeSamples(bytes.NewReader(data), fuzzQueries, out, &reservation{limit: 4 << 20}, "", &ReadStats{})
		if err == nil {
			checkDecoded(t, out)
		}
	})
}
