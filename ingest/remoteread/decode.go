package remoteread

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/series"
)

// appendChunk appends the float samples of c within [mint, maxt] to dst.
// Histogram chunks are skipped: anomalyd analyses float samples only.
func appendChunk(dst []window.Sample, c *prompb.Chunk, mint, maxt int64) ([]window.Sample, error) {
	if c.MaxTimeMs < mint || c.MinTimeMs > maxt {
		return dst, nil
	}
	var enc chunkenc.Encoding
	switch c.Type {
	case prompb.Chunk_XOR:
		enc = chunkenc.EncXOR
	case prompb.Chunk_XOR2:
		enc = chunkenc.EncXOR2
	case prompb.Chunk_HISTOGRAM, prompb.Chunk_FLOAT_HISTOGRAM, prompb.Chunk_HISTOGRAM_ST, prompb.Chunk_FLOAT_HISTOGRAM_ST:
		return dst, nil
	default:
		return dst, fmt.Errorf("unknown chunk encoding %d", c.Type)
	}
	if len(c.Data) < 2 {
		return dst, fmt.Errorf("chunk of %d bytes has no header", len(c.Data))
	}
	ch, err := chunkenc.FromData(enc, c.Data)
	if err != nil {
		return dst, err
	}
	it := ch.Iterator(nil)
	for it.Next() == chunkenc.ValFloat {
		t, v := it.At()
		if t > maxt {
			break
		}
		if t >= mint {
			dst = append(dst, window.Sample{T: t, V: v})
		}
	}
	return dst, it.Err()
}

// appendKey appends the canonical form of ls (series.Info.Labels:
// sorted by name, empty values dropped) to dst, without the label called
// skip ("" skips none).
func appendKey(dst []byte, ls []prompb.Label, skip string) []byte {
	if !slices.IsSortedFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
		slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	}
	for _, l := range ls {
		if l.Value == "" || (skip != "" && l.Name == skip) {
			continue
		}
		dst = append(dst, l.Name...)
		dst = append(dst, series.LabelSep)
		dst = append(dst, l.Value...)
		dst = append(dst, series.LabelSep)
	}
	return dst
}

// sortUnique sorts s by time (stable) and keeps the first sample of each
// timestamp. Responses are almost always sorted already (one pass); chunks
// of one series may overlap when Prometheus holds out-of-order data.
func sortUnique(s []window.Sample) []window.Sample {
	sorted := true
	for i := 1; i < len(s); i++ {
		if s[i].T <= s[i-1].T {
			sorted = false
			break
		}
	}
	if sorted {
		return s
	}
	slices.SortStableFunc(s, func(a, b window.Sample) int {
		switch {
		case a.T < b.T:
			return -1
		case a.T > b.T:
			return 1
		}
		return 0
	})
	return slices.CompactFunc(s, func(a, b window.Sample) bool { return a.T == b.T })
}
