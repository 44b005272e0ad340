package main

import (
	"encoding/binary"
	"math"
	"math/bits"
	"runtime"
	"sync"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// Request is one encoded remote-write request: snappy block format over the
// protobuf. Body is read-only once built and may be sent many times (retries).
type Request struct {
	Body    []byte
	Samples int
}

// Round is one round's requests, by connection: Conns[c] holds the series
// i with i % C == c, in order of i, SamplesPerRequest a request (the last
// request of a connection holds the remainder).
type Round struct {
	Index int
	Conns [][]Request
}

// Bytes is the encoded size of the round.
func (r *Round) Bytes() int {
	n := 0
	for _, reqs := range r.Conns {
		for _, q := range reqs {
			n += len(q.Body)
		}
	}
	return n
}

// Requests counts the round's requests.
func (r *Round) Requests() int {
	n := 0
	for _, reqs := range r.Conns {
		n += len(reqs)
	}
	return n
}

// encoder holds scratch memory for encoding; one per goroutine.
type encoder struct {
	w2    writev2.Request
	syms  writev2.SymbolsTable
	refs  []uint32
	s2    []writev2.Sample
	raw   []byte
	comp  []byte
	arena []byte
}

func newEncoder() *encoder { return &encoder{syms: writev2.NewSymbolTable()} }

// encodeConn encodes round r for connection c. All request bodies share one
// exactly sized allocation.
func (g *Generator) encodeConn(e *encoder, r, c int) []Request {
	idx := g.byConn[c]
	spr := g.cfg.SamplesPerRequest
	ts := g.Timestamp(r)
	arena := e.arena[:0]
	var reqs []Request
	var ends []int
	for start := 0; start < len(idx); start += spr {
		chunk := idx[start:min(start+spr, len(idx))]
		var n int
		if g.cfg.Protocol == 2 {
			n = g.marshalV2(e, chunk, r, ts)
		} else {
			n = g.marshalV1(e, chunk, r, ts)
		}
		if m := snappy.MaxEncodedLen(n); cap(e.comp) < m {
			e.comp = make([]byte, m)
		}
		enc := snappy.Encode(e.comp[:cap(e.comp)], e.raw[:n])
		arena = append(arena, enc...)
		ends = append(ends, len(arena))
		reqs = append(reqs, Request{Samples: len(chunk)})
	}
	e.arena = arena
	arena = append([]byte(nil), arena...) // one exactly sized copy; the scratch is reused
	prev := 0
	for k := range reqs {
		reqs[k].Body = arena[prev:ends[k]:ends[k]]
		prev = ends[k]
	}
	return reqs
}

// marshalV1 writes a prometheus.WriteRequest by hand into e.raw: each
// series' labels were marshalled once (series.wire), so a round only adds
// the samples. The bytes are those prompb's Marshal gives (a test checks).
func (g *Generator) marshalV1(e *encoder, chunk []int32, r int, ts int64) int {
	n := 0
	for _, i := range chunk {
		m := len(g.series[i].wire) + 2 + 20 // labels, sample key+len, sample
		n += 1 + varintLen(uint64(m)) + m
	}
	if cap(e.raw) < n {
		e.raw = make([]byte, n)
	}
	b := e.raw[:0]
	for _, i := range chunk {
		s := &g.series[i]
		var smp [20]byte // Sample: value (fixed64, field 1), timestamp (varint, field 2)
		sm := 0
		if v := g.Value(int(i), r); v != 0 { // proto3: zero values are left out
			smp[0] = 0x09
			binary.LittleEndian.PutUint64(smp[1:], math.Float64bits(v))
			sm = 9
		}
		if ts != 0 {
			smp[sm] = 0x10
			sm += binary.PutUvarint(smp[sm+1:], uint64(ts)) + 1
		}
		tsLen := len(s.wire) + 1 + varintLen(uint64(sm)) + sm
		b = append(b, 0x0a) // WriteRequest.timeseries, field 1
		b = binary.AppendUvarint(b, uint64(tsLen))
		b = append(b, s.wire...)
		b = append(b, 0x12) // TimeSeries.samples, field 2
		b = binary.AppendUvarint(b, uint64(sm))
		b = append(b, smp[:sm]...)
	}
	if len(b) > cap(e.raw) {
		panic("BUG: marshalV1 outgrew its size estimate")
	}
	e.raw = b[:0]
	return len(b)
}

// appendLabelsWire appends lbls as the repeated field 1 (labels) of a
// prometheus.TimeSeries.
func appendLabelsWire(b []byte, lbls []prompb.Label) []byte {
	for _, l := range lbls {
		m := 0
		if l.Name != "" {
			m += 1 + varintLen(uint64(len(l.Name))) + len(l.Name)
		}
		if l.Value != "" {
			m += 1 + varintLen(uint64(len(l.Value))) + len(l.Value)
		}
		b = append(b, 0x0a)
		b = binary.AppendUvarint(b, uint64(m))
		if l.Name != "" {
			b = append(b, 0x0a)
			b = binary.AppendUvarint(b, uint64(len(l.Name)))
			b = append(b, l.Name...)
		}
		if l.Value != "" {
			b = append(b, 0x12)
			b = binary.AppendUvarint(b, uint64(len(l.Value)))
			b = append(b, l.Value...)
		}
	}
	return b
}

func varintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

func (g *Generator) marshalV2(e *encoder, chunk []int32, r int, ts int64) int {
	e.syms.Reset()
	e.w2.Timeseries = e.w2.Timeseries[:0]
	if cap(e.s2) < len(chunk) {
		e.s2 = make([]writev2.Sample, len(chunk))
	}
	nrefs := 0
	for _, i := range chunk {
		nrefs += 2 * len(g.series[i].labels)
	}
	if cap(e.refs) < nrefs {
		e.refs = make([]uint32, 0, nrefs)
	}
	refs := e.refs[:0]
	for j, i := range chunk {
		s := &g.series[i]
		from := len(refs)
		for _, l := range s.labels {
			refs = append(refs, e.syms.Symbolize(l.Name), e.syms.Symbolize(l.Value))
		}
		e.s2[j] = writev2.Sample{Value: g.Value(int(i), r), Timestamp: ts}
		typ := writev2.Metadata_METRIC_TYPE_GAUGE
		if s.kind == kindCounter {
			typ = writev2.Metadata_METRIC_TYPE_COUNTER
		}
		e.w2.Timeseries = append(e.w2.Timeseries, writev2.TimeSeries{
			LabelsRefs: refs[from:len(refs):len(refs)],
			Samples:    e.s2[j : j+1 : j+1],
			Metadata:   writev2.Metadata{Type: typ},
		})
	}
	e.w2.Symbols = e.syms.Symbols()
	n := e.w2.Size()
	if cap(e.raw) < n {
		e.raw = make([]byte, n)
	}
	if _, err := e.w2.MarshalToSizedBuffer(e.raw[:n]); err != nil {
		panic("BUG: cannot marshal a generated v2 Request: " + err.Error())
	}
	return n
}

// EncodeRound encodes round r on the calling goroutine.
func (g *Generator) EncodeRound(r int) *Round {
	e := newEncoder()
	rd := &Round{Index: r, Conns: make([][]Request, g.cfg.Concurrency)}
	for c := range rd.Conns {
		rd.Conns[c] = g.encodeConn(e, r, c)
	}
	return rd
}

// EncodeRounds encodes rounds [from, to) on up to workers goroutines (0:
// GOMAXPROCS). The result does not depend on workers.
func (g *Generator) EncodeRounds(from, to, workers int) []*Round {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	out := make([]*Round, to-from)
	for k := range out {
		out[k] = &Round{Index: from + k, Conns: make([][]Request, g.cfg.Concurrency)}
	}
	type job struct{ k, c int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			e := newEncoder()
			for j := range jobs {
				out[j.k].Conns[j.c] = g.encodeConn(e, from+j.k, j.c)
			}
		})
	}
	for k := range out {
		for c := range g.cfg.Concurrency {
			jobs <- job{k, c}
		}
	}
	close(jobs)
	wg.Wait()
	return out
}
