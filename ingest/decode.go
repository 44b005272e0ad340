package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// span is a byte range of request.buf: an alias, never a copy.
type span struct{ off, len uint32 }

// labelRef is one label of a decoded series, as spans into request.buf.
type labelRef struct{ name, value span }

// sample is one float sample.
type sample struct {
	t int64
	v float64
}

// histSample is what anomalyd reads of one native histogram sample: its
// time, count and sum. Buckets, schema and zero bucket are skipped.
type histSample struct {
	t          int64
	count, sum float64
	// gauge: reset_hint is GAUGE, a gauge histogram whose count and sum
	// may go down.
	gauge bool
}

// The Histogram message fields anomalyd reads; RW1 and RW2 share them.
const (
	histCountInt   = 1
	histCountFloat = 2
	histSum        = 3
	histResetHint  = 14
	histTimestamp  = 15

	resetHintGauge = 3
)

// series is one decoded TimeSeries; its labels, samples and histograms are
// ranges of request.labels, request.samples and request.hists
// (histStart, histStart+histograms).
type wireSeries struct {
	labelsStart, labelsEnd   int32
	samplesStart, samplesEnd int32
	histStart                int32
	histograms, exemplars    int32
	// metricType is the RW2 per-series metadata type (0 = unspecified).
	metricType uint8
	// badRef says which RW2 reference does not index into symbols (or that
	// labels_refs has odd length); such a series is invalid. badRefValue is
	// the first offending reference.
	badRef      refFault
	badRefValue uint64
}

// refFault is what is wrong with an RW2 series' symbol references.
type refFault uint8

const (
	refOK        refFault = iota
	refLabelsOdd          // labels_refs has odd length
	refLabels             // a labels_refs entry is beyond symbols
	refHelp               // metadata.help_ref is beyond symbols
	refUnit               // metadata.unit_ref is beyond symbols
)

// metadata is one RW1 MetricMetadata entry.
type metadata struct {
	name       span
	metricType uint8
}

// request is one decoded remote-write request. Every span aliases buf, so
// nothing decoded may outlive the request: callers copy what they keep.
// A request is part of a reqState, reused through Handler.getState and
// putState; it is not safe for concurrent use.
type request struct {
	buf      []byte
	labels   []labelRef
	samples  []sample
	hists    []histSample
	series   []wireSeries
	symbols  []span // RW2 only
	metadata []metadata
	// symbolsUTF8: every RW2 symbol is valid UTF-8, so labels need no check.
	symbolsUTF8 bool
}

func (r *request) reset() {
	r.labels = r.labels[:0]
	r.samples = r.samples[:0]
	r.hists = r.hists[:0]
	r.series = r.series[:0]
	r.symbols = r.symbols[:0]
	r.metadata = r.metadata[:0]
	r.symbolsUTF8 = false
}

// str returns the bytes of s (aliasing r.buf).
func (r *request) str(s span) []byte { return r.buf[s.off : s.off+s.len] }

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

var errTruncated = errors.New("truncated message")

// MetricType values shared by RW1 and RW2 (prompb.MetricMetadata_COUNTER = 1).
const metricTypeCounter = 1

// field reads one field header and its payload from b at i. For
// length-delimited fields payload is the bytes; for numeric ones val holds
// the value. It returns the index after the field.
func field(b []byte, i int) (num int, typ int, val uint64, payload []byte, next int, err error) {
	key, n := binary.Uvarint(b[i:])
	if n <= 0 {
		return 0, 0, 0, nil, 0, errTruncated
	}
	i += n
	num, typ = int(key>>3), int(key&7)
	if num == 0 || key>>3 > math.MaxInt32 {
		return 0, 0, 0, nil, 0, fmt.Errorf("invalid field number %d", key>>3)
	}
	switch typ {
	case wireVarint:
		val, n = binary.Uvarint(b[i:])
		if n <= 0 {
			return 0, 0, 0, nil, 0, errTruncated
		}
		return num, typ, val, nil, i + n, nil
	case wireFixed64:
		if len(b)-i < 8 {
			return 0, 0, 0, nil, 0, errTruncated
		}
		return num, typ, binary.LittleEndian.Uint64(b[i:]), nil, i + 8, nil
	case wireFixed32:
		if len(b)-i < 4 {
			return 0, 0, 0, nil, 0, errTruncated
		}
		return num, typ, uint64(binary.LittleEndian.Uint32(b[i:])), nil, i + 4, nil
	case wireBytes:
		l, n := binary.Uvarint(b[i:])
		if n <= 0 {
			return 0, 0, 0, nil, 0, errTruncated
		}
		i += n
		if l > uint64(len(b)-i) {
			return 0, 0, 0, nil, 0, errTruncated
		}
		return num, typ, 0, b[i : i+int(l)], i + int(l), nil
	default:
		return 0, 0, 0, nil, 0, fmt.Errorf("unsupported wire type %d for field %d", typ, num)
	}
}

// spanOf returns the span of sub, which must be a subslice of r.buf.
func (r *request) spanOf(sub []byte) span {
	if len(sub) == 0 {
		return span{}
	}
	off := cap(r.buf) - cap(sub)
	return span{uint32(off), uint32(len(sub))}
}

// decodeV1 decodes a prometheus.WriteRequest held in r.buf.
func (r *request) decodeV1() error {
	b := r.buf
	for i := 0; i < len(b); {
		num, typ, _, p, next, err := field(b, i)
		if err != nil {
			return fmt.Errorf("cannot decode WriteRequest: %w", err)
		}
		i = next
		switch {
		case num == 1 && typ == wireBytes:
			if err := r.decodeSeriesV1(p); err != nil {
				return fmt.Errorf("cannot decode WriteRequest.timeseries[%d]: %w", len(r.series), err)
			}
		case num == 3 && typ == wireBytes:
			if err := r.decodeMetadataV1(p); err != nil {
				return fmt.Errorf("cannot decode WriteRequest.metadata: %w", err)
			}
		case num == 1 || num == 3:
			return fmt.Errorf("cannot decode WriteRequest: field %d has wire type %d", num, typ)
		}
	}
	return nil
}

func (r *request) decodeSeriesV1(b []byte) error {
	s := wireSeries{labelsStart: int32(len(r.labels)), samplesStart: int32(len(r.samples)), histStart: int32(len(r.hists))}
	for i := 0; i < len(b); {
		// Fast path: a label (field 1, length-delimited: tag 0x0a) shorter
		// than 128 bytes, a one-byte length: nearly every field of a series.
		if b[i] == 0x0a && i+1 < len(b) && b[i+1] < 0x80 {
			if end := i + 2 + int(b[i+1]); end <= len(b) {
				if err := r.appendLabel(b[i+2 : end]); err != nil {
					return err
				}
				i = end
				continue
			}
		}
		num, typ, _, p, next, err := field(b, i)
		if err != nil {
			return err
		}
		i = next
		switch num {
		case 1: // labels
			if typ != wireBytes {
				return fmt.Errorf("labels: wire type %d", typ)
			}
			if err := r.appendLabel(p); err != nil {
				return err
			}
		case 2: // samples
			if err := r.appendSample(typ, p); err != nil {
				return err
			}
		case 3:
			s.exemplars++
		case 4:
			if err := r.appendHistogram(typ, p); err != nil {
				return err
			}
			s.histograms++
		}
	}
	s.labelsEnd, s.samplesEnd = int32(len(r.labels)), int32(len(r.samples))
	r.series = append(r.series, s)
	return nil
}

// appendLabel decodes a Label message onto r.labels.
func (r *request) appendLabel(p []byte) error {
	// Fast path: name then value, each with a one-byte length, as every
	// sender encodes a Label. Anything else takes the general walk.
	if n := len(p); n >= 4 && p[0] == 0x0a && p[1] < 0x80 {
		nl := int(p[1])
		if v := 2 + nl; v+2 <= n && p[v] == 0x12 && p[v+1] < 0x80 && v+2+int(p[v+1]) == n {
			r.labels = append(r.labels, labelRef{name: r.spanOf(p[2:v]), value: r.spanOf(p[v+2:])})
			return nil
		}
	}
	var l labelRef
	for j := 0; j < len(p); {
		n, t, _, q, nx, err := field(p, j)
		if err != nil {
			return fmt.Errorf("label: %w", err)
		}
		j = nx
		if (n == 1 || n == 2) && t != wireBytes {
			return fmt.Errorf("label field %d: wire type %d", n, t)
		}
		switch n {
		case 1:
			l.name = r.spanOf(q)
		case 2:
			l.value = r.spanOf(q)
		}
	}
	r.labels = append(r.labels, l)
	return nil
}

// appendSample decodes a Sample message (field wire type typ) onto r.samples.
func (r *request) appendSample(typ int, p []byte) error {
	if typ != wireBytes {
		return fmt.Errorf("samples: wire type %d", typ)
	}
	smp, err := decodeSample(p)
	if err != nil {
		return err
	}
	r.samples = append(r.samples, smp)
	return nil
}

// appendHistogram decodes a Histogram message (field wire type typ) onto
// r.hists.
func (r *request) appendHistogram(typ int, p []byte) error {
	if typ != wireBytes {
		return fmt.Errorf("histograms: wire type %d", typ)
	}
	var h histSample
	for j := 0; j < len(p); {
		n, t, v, _, nx, err := field(p, j)
		if err != nil {
			return fmt.Errorf("histogram: %w", err)
		}
		j = nx
		switch {
		case n == histCountInt && t == wireVarint:
			h.count = float64(v)
		case n == histCountFloat && t == wireFixed64:
			h.count = math.Float64frombits(v)
		case n == histSum && t == wireFixed64:
			h.sum = math.Float64frombits(v)
		case n == histResetHint && t == wireVarint:
			h.gauge = int32(v) == resetHintGauge // an enum is an int32 on the wire
		case n == histTimestamp && t == wireVarint:
			h.t = int64(v)
		case n == histCountInt || n == histCountFloat || n == histSum || n == histResetHint || n == histTimestamp:
			return fmt.Errorf("histogram field %d: wire type %d", n, t)
		}
	}
	r.hists = append(r.hists, h)
	return nil
}

// decodeSample decodes a Sample message; RW1 and RW2 share its first two
// fields (value fixed64 = 1, timestamp varint = 2). RW2's start_timestamp
// (3) is skipped.
func decodeSample(p []byte) (sample, error) {
	// Fast path: value then timestamp filling p, as every sender writes it.
	if len(p) >= 11 && p[0] == 0x09 && p[9] == 0x10 {
		if ts, n := binary.Uvarint(p[10:]); n > 0 && 10+n == len(p) {
			return sample{t: int64(ts), v: math.Float64frombits(binary.LittleEndian.Uint64(p[1:9]))}, nil
		}
	}
	var smp sample
	for j := 0; j < len(p); {
		n, t, v, _, nx, err := field(p, j)
		if err != nil {
			return smp, fmt.Errorf("sample: %w", err)
		}
		j = nx
		switch {
		case n == 1 && t == wireFixed64:
			smp.v = math.Float64frombits(v)
		case n == 2 && t == wireVarint:
			smp.t = int64(v)
		case n == 1 || n == 2:
			return smp, fmt.Errorf("sample field %d: wire type %d", n, t)
		}
	}
	return smp, nil
}

func (r *request) decodeMetadataV1(b []byte) error {
	var m metadata
	for i := 0; i < len(b); {
		num, typ, v, p, next, err := field(b, i)
		if err != nil {
			return err
		}
		i = next
		switch {
		case num == 1 && typ == wireVarint:
			m.metricType = uint8(min(v, 255))
		case num == 2 && typ == wireBytes:
			m.name = r.spanOf(p)
		}
	}
	r.metadata = append(r.metadata, m)
	return nil
}

// decodeV2 decodes an io.prometheus.write.v2.Request held in r.buf. Symbols
// may come after the series on the wire, so it walks the message twice.
func (r *request) decodeV2() error {
	b := r.buf
	for i := 0; i < len(b); {
		num, typ, _, p, next, err := field(b, i)
		if err != nil {
			return fmt.Errorf("cannot decode Request: %w", err)
		}
		i = next
		if num == 4 {
			if typ != wireBytes {
				return fmt.Errorf("cannot decode Request: symbols has wire type %d", typ)
			}
			r.symbols = append(r.symbols, r.spanOf(p))
		}
	}
	if len(r.symbols) > 0 && r.symbols[0].len != 0 {
		return errors.New("cannot decode Request: symbols[0] must be the empty string")
	}
	// Check every symbol once here rather than every label of every series.
	r.symbolsUTF8 = true
	for _, sym := range r.symbols {
		if !utf8.Valid(r.str(sym)) {
			r.symbolsUTF8 = false
			break
		}
	}
	for i := 0; i < len(b); {
		num, typ, _, p, next, _ := field(b, i) // errors were caught above
		i = next
		if num == 5 {
			if typ != wireBytes {
				return fmt.Errorf("cannot decode Request: timeseries has wire type %d", typ)
			}
			if err := r.decodeSeriesV2(p); err != nil {
				return fmt.Errorf("cannot decode Request.timeseries[%d]: %w", len(r.series), err)
			}
		}
	}
	return nil
}

func (r *request) decodeSeriesV2(b []byte) error {
	s := wireSeries{labelsStart: int32(len(r.labels)), samplesStart: int32(len(r.samples)), histStart: int32(len(r.hists))}
	nrefs := 0
	var pending span // name waiting for its value
	addRef := func(ref uint64) {
		var sym span // an invalid ref reads as "" and marks the series bad
		if ref < uint64(len(r.symbols)) {
			sym = r.symbols[ref]
		} else if s.badRef == refOK {
			s.badRef, s.badRefValue = refLabels, ref
		}
		if nrefs%2 == 0 {
			pending = sym
		} else {
			r.labels = append(r.labels, labelRef{name: pending, value: sym})
		}
		nrefs++
	}
	for i := 0; i < len(b); {
		num, typ, v, p, next, err := field(b, i)
		if err != nil {
			return err
		}
		i = next
		switch num {
		case 1: // labels_refs, packed or not
			switch typ {
			case wireVarint:
				addRef(v)
			case wireBytes:
				for j := 0; j < len(p); {
					ref, n := binary.Uvarint(p[j:])
					if n <= 0 {
						return fmt.Errorf("labels_refs: %w", errTruncated)
					}
					j += n
					addRef(ref)
				}
			default:
				return fmt.Errorf("labels_refs: wire type %d", typ)
			}
		case 2: // samples
			if err := r.appendSample(typ, p); err != nil {
				return err
			}
		case 3:
			if err := r.appendHistogram(typ, p); err != nil {
				return err
			}
			s.histograms++
		case 4:
			s.exemplars++
		case 5: // metadata
			if typ != wireBytes {
				return fmt.Errorf("metadata: wire type %d", typ)
			}
			for j := 0; j < len(p); {
				n, t, v, _, nx, err := field(p, j)
				if err != nil {
					return fmt.Errorf("metadata: %w", err)
				}
				j = nx
				if t != wireVarint {
					continue
				}
				switch n {
				case 1:
					s.metricType = uint8(min(v, 255))
				case 3, 4:
					// help and unit are not used, but a reference beyond
					// symbols is a malformed series all the same, as the
					// spec says and Prometheus's receiver answers (400).
					if v >= uint64(len(r.symbols)) && s.badRef == refOK {
						s.badRef, s.badRefValue = refHelp, v
						if n == 4 {
							s.badRef = refUnit
						}
					}
				}
			}
		}
	}
	if nrefs%2 != 0 && s.badRef == refOK {
		s.badRef, s.badRefValue = refLabelsOdd, uint64(nrefs)
	}
	s.labelsEnd, s.samplesEnd = int32(len(r.labels)), int32(len(r.samples))
	r.series = append(r.series, s)
	return nil
}
