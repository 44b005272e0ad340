package remotewrite

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// staleNaN is the stale marker value; compare it by bits, never with ==.
var staleNaN = math.Float64frombits(value.StaleNaN)

// seriesKey identifies the output series of one record (times its
// outputs, see series.Record.Slots). series.Info is immutable and unique per live
// series, so its pointer is its identity.
type seriesKey struct {
	s   *series.Info
	det detectors.Kind
}

// encoder turns a batch of records into a snappy-compressed RW1 or RW2
// request. It belongs to one sender goroutine and reuses every buffer: after
// warm-up an encode allocates nothing. The returned bytes are valid until the
// next call.
type encoder struct {
	names *series.Names

	// index maps a series to its slot; slot[o] is the index in Timeseries of
	// output o, or -1 until the batch has a sample for it.
	index map[seriesKey]int32
	slots [][series.NumSlots]int32
	// incIndex maps an incident series to its index in Timeseries.
	incIndex map[incidentKey]int32

	rw1     prompb.WriteRequest
	rw2     writev2.Request
	symbols writev2.SymbolsTable
	lbls    []prompb.Label // RW2 scratch

	raw  []byte // protobuf
	comp []byte // snappy block
}

// emptySlot is the slot of a series without any TimeSeries yet.
var emptySlot = func() (s [series.NumSlots]int32) {
	for o := range s {
		s[o] = -1
	}
	return s
}()

func newEncoder(names *series.Names) encoder {
	return encoder{names: names, index: map[seriesKey]int32{}, incIndex: map[incidentKey]int32{}, symbols: writev2.NewSymbolTable()}
}

// encode encodes batch and the incident samples inc as RW1 or RW2. Samples
// of one output series are grouped in one TimeSeries, in batch order (which
// is timestamp order).
func (e *encoder) encode(batch []series.Record, inc []incidentSample, rw2 bool) ([]byte, error) {
	clear(e.index)
	clear(e.incIndex)
	e.slots = e.slots[:0]
	if rw2 {
		e.symbols.Reset()
		e.rw2.Timeseries = e.rw2.Timeseries[:0]
	} else {
		e.rw1.Timeseries = e.rw1.Timeseries[:0]
	}
	for i := range batch {
		r := &batch[i]
		k := seriesKey{r.Series, r.Detector}
		si, ok := e.index[k]
		if !ok {
			si = int32(len(e.slots))
			e.slots = append(e.slots, emptySlot)
			e.index[k] = si
		}
		for m := r.Slots(); m != 0; m &= m - 1 {
			o := bits.TrailingZeros16(m)
			v := r.Value(o)
			if r.Stale {
				v = staleNaN
			}
			slot := &e.slots[si]
			idx := slot[o]
			if rw2 {
				if idx < 0 {
					idx = e.newRW2Series(r, o, slot)
					slot[o] = idx
				}
				ts := &e.rw2.Timeseries[idx]
				ts.Samples = append(ts.Samples, writev2.Sample{Value: v, Timestamp: r.T})
			} else {
				if idx < 0 {
					idx = e.newRW1Series(r, o, slot)
					slot[o] = idx
				}
				ts := &e.rw1.Timeseries[idx]
				ts.Samples = append(ts.Samples, prompb.Sample{Value: v, Timestamp: r.T})
			}
		}
	}
	e.encodeIncidents(inc, rw2)

	var n int
	var err error
	if rw2 {
		e.rw2.Symbols = e.symbols.Symbols()
		size := e.rw2.Size()
		e.raw = grow(e.raw, size)
		n, err = e.rw2.OptimizedMarshalToSizedBuffer(e.raw[:size])
	} else {
		size := e.rw1.Size()
		e.raw = grow(e.raw, size)
		n, err = e.rw1.MarshalToSizedBuffer(e.raw[:size])
	}
	if err != nil {
		return nil, fmt.Errorf("cannot marshal remote-write request: %w", err)
	}
	// MarshalToSizedBuffer writes backwards from the end of the buffer.
	pb := e.raw[len(e.raw)-n:]
	if n != len(e.raw) {
		panic(fmt.Sprintf("BUG: remotewrite: marshalled %d bytes, Size said %d", n, len(e.raw)))
	}
	e.comp = grow(e.comp, snappy.MaxEncodedLen(n))
	return snappy.Encode(e.comp, pb), nil
}

// grow returns b with length n, reusing its array when it is big enough.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n, n+n/4)
	}
	return b[:n]
}

// sibling returns the index of a TimeSeries already made for another output
// of the same record, and that output; -1 if there is none. The label sets
// of a record's outputs differ only in the values of __name__ and detector
// (which differs between a driver series and the others), which sit at the
// same positions in all of them (sorting depends on names only), so a
// sibling's labels are copied and patched instead of built and sorted again.
func sibling(slot *[series.NumSlots]int32) (idx int32, o int) {
	for o, idx := range slot {
		if idx >= 0 {
			return idx, o
		}
	}
	return -1, 0
}

// newRW1Series adds the TimeSeries of output o of r, reusing the label and
// sample slices of an earlier batch, and returns its index.
func (e *encoder) newRW1Series(r *series.Record, o int, slot *[series.NumSlots]int32) int32 {
	tss := e.rw1.Timeseries
	idx := len(tss)
	if idx < cap(tss) {
		tss = tss[:idx+1]
	} else {
		tss = append(tss, prompb.TimeSeries{})
	}
	ts := &tss[idx]
	name, det := e.names.Name(o), r.DetectorOf(o)
	if sib, so := sibling(slot); sib >= 0 {
		ts.Labels = append(ts.Labels[:0], tss[sib].Labels...)
		setLabel(ts.Labels, "__name__", name)
		if det != r.DetectorOf(so) {
			setLabel(ts.Labels, "detector", det.String())
		}
	} else {
		ts.Labels = series.AppendOutputLabels(ts.Labels[:0], r.Series, name, det)
	}
	ts.Samples = ts.Samples[:0]
	e.rw1.Timeseries = tss
	return int32(idx)
}

// setLabel sets the value of the label called name in ls.
func setLabel(ls []prompb.Label, name, value string) {
	for i := range ls {
		if ls[i].Name == name {
			ls[i].Value = value
			return
		}
	}
}

// newRW2Series is newRW1Series for RW2: labels become symbol references, and
// the metadata says gauge (every output series is one).
func (e *encoder) newRW2Series(r *series.Record, o int, slot *[series.NumSlots]int32) int32 {
	tss := e.rw2.Timeseries
	idx := len(tss)
	if idx < cap(tss) {
		tss = tss[:idx+1]
	} else {
		tss = append(tss, writev2.TimeSeries{})
	}
	ts := &tss[idx]
	name, det := e.names.Name(o), r.DetectorOf(o)
	refs := ts.LabelsRefs[:0]
	if sib, so := sibling(slot); sib >= 0 {
		refs = append(refs, tss[sib].LabelsRefs...)
		e.setRef(refs, "__name__", name)
		if det != r.DetectorOf(so) {
			e.setRef(refs, "detector", det.String())
		}
	} else {
		e.lbls = series.AppendOutputLabels(e.lbls[:0], r.Series, name, det)
		for _, l := range e.lbls {
			refs = append(refs, e.symbols.Symbolize(l.Name), e.symbols.Symbolize(l.Value))
		}
	}
	ts.LabelsRefs = refs
	ts.Samples = ts.Samples[:0]
	ts.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE}
	e.rw2.Timeseries = tss
	return int32(idx)
}

// setRef sets the value of the label called name in refs (name, value
// symbol reference pairs).
func (e *encoder) setRef(refs []uint32, name, value string) {
	nameRef := e.symbols.Symbolize(name)
	for i := 0; i < len(refs); i += 2 {
		if refs[i] == nameRef {
			refs[i+1] = e.symbols.Symbolize(value)
			return
		}
	}
}
