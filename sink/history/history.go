package history

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/series"
)

const (
	// historyPartitions splits the history by series.Info.Hash, each
	// partition with its own lock. Shards own series by Hash % shards, so
	// when the shard count divides 64 (1, 2, 4, … 64) every partition is
	// written by one shard only and Append never waits for another shard;
	// otherwise two shards meet on a lock for the few microseconds an
	// Append holds it.
	historyPartitions = 64
	// samplesPerChunk is where a head chunk is cut, as Prometheus's head
	// does (tsdb.DefaultSamplesPerChunk): XOR compression has paid off by
	// then, and a query decodes at most 119 samples it does not need.
	samplesPerChunk = 120
	// chunkHeaderSize is the XOR chunk's sample count (chunkenc's
	// chunkHeaderSize, unexported there).
	chunkHeaderSize = 2
	// headChunkCap is the first allocation of a head chunk (chunkenc's
	// chunkAllocationSize); the buffer grows while the first chunk fills
	// and is then reused for every later head chunk of the series.
	headChunkCap = 128
	// sweepFraction: a partition drops expired chunks whenever the newest
	// sample time has advanced by retention/sweepFraction, so it holds at
	// most 1/16 of the retention more than it must (plus one chunk's span).
	sweepFraction = 16
)

// staleNaN is the stale marker value; compare it by bits, never with ==.
var staleNaN = math.Float64frombits(value.StaleNaN)

// History keeps the recent output samples of every output series in memory
// and answers remote-read queries over them (ReadHandler). It implements
// window.Appender: the shards' records go to it as they go to remote write.
//
// Each output series (input series × detector × output, and the driver
// series of a combined record) is a list of Gorilla XOR chunks
// (tsdb/chunkenc, as in Prometheus's head): closed chunks of 120 samples,
// never written again, and one head chunk being appended to. A sample of
// real detector output costs about 6.5 bytes instead of 16
// (TestHistoryMemoryPerSeries).
//
// Retention is by data time, not by the wall clock: a chunk is dropped when
// its newest sample is older than the newest sample appended to the History
// minus the retention, and a series when it has no chunk left. Data time
// makes eviction independent of clock skew between senders and anomalyd,
// keeps late data (a sender catching up) for the whole retention, and makes
// eviction deterministic in tests; Prometheus's head truncates by data time
// too. Ingest rejects samples more than max_future ahead, so a wild
// timestamp moves the cutoff by at most that. Each Append checks one
// partition in turn and sweeps it when the newest sample time has advanced
// by retention/16 since its last sweep. Chunks are dropped whole, so a
// series holds up to one chunk's span (30 min at a 15 s interval) plus
// 1/16 of the retention more than the retention. Nothing is dropped while
// nothing is appended.
//
// Output series are keyed by input labels, detector and output; the
// output names come from names() at query time, so after a reload that
// renames outputs the whole history answers under the new names.
//
// Append may be called by many goroutines at once, as may queries. Each
// takes the lock of one partition at a time and holds it for the records
// of that partition (Append) or for copying pointers and the head chunk's
// bytes (queries); no lock is held while matching labels or encoding a
// response.
type History struct {
	retention  int64 // ms
	sweepEvery int64 // ms of data time between two sweeps of a partition
	names      func() series.Names
	// maxT is the newest sample timestamp appended, in ms (MinInt64 before
	// the first); retention counts back from it.
	maxT      atomic.Int64
	sweepNext atomic.Uint32 // the partition maybeSweep looks at next
	// inputs counts the input series held, at most maxInputs: the memory
	// bound (history.max_series). Output series of input series beyond it
	// are not kept.
	inputs    atomic.Int64
	maxInputs int64
	parts     [historyPartitions]histPartition
}

// histPartition holds the series whose Hash % historyPartitions is its
// index. Everything in it is guarded by mu.
type histPartition struct {
	mu        sync.Mutex
	series    map[uint64]*histInput // by series.Info.Hash; collisions chain through next
	nextSweep int64                 // data time (ms) of the next sweep

	// Statistics, summed over the partitions at scrape time.
	numSeries  int64 // output series held
	bytes      int64 // chunk bytes held (len, not cap)
	appended   int64 // samples appended
	outOfOrder int64 // samples dropped: not newer than the series' last
	overLimit  int64 // samples dropped: their input series would exceed maxInputs

	_ [64]byte // keeps neighbouring partitions' hot fields off one cache line
}

// histInput is one input series and its output series, per detector.
type histInput struct {
	// info is the series.Info of the first record seen. A series that ends
	// and comes back gets a new series.Info with the same Labels; it maps to
	// the same histInput.
	info *series.Info
	next *histInput // next input series with the same hash
	// dets holds the output series of each detector (KindCombined last);
	// nil until the detector's first record.
	dets [detectors.NumKinds + 1]*[series.NumOutputs]histSeries
	// drivers holds the driver series (output.driver), by detector; nil
	// until the first record with driver series.
	drivers *[detectors.NumKinds]histSeries
	// value is the value series (output.value); nil until the first
	// record with it.
	value *histSeries
}

// Output series of one input series, as bits of a uint32 (outputMask,
// histCandidate): det×series.NumOutputs + o for output o of detector det, then
// one per driver series, then the value series.
const (
	histBandBits = (int(detectors.NumKinds) + 1) * series.NumOutputs
	histValueBit = histBandBits + int(detectors.NumKinds)
	histBits     = histValueBit + 1
)

// The masks are uint32: this constant overflows (a compile error) if the
// output series of an input series outgrow them.
const _ = uint32(1 << (histBits - 1))

// histOutput returns the detector (label value) and the output of bit b.
func histOutput(b int) (detectors.Kind, int) {
	if b < histBandBits {
		return detectors.Kind(b / series.NumOutputs), b % series.NumOutputs
	}
	if b == histValueBit {
		return detectors.KindCombined, series.OutValue // only combined records have it
	}
	k := b - histBandBits
	return detectors.Kind(k), series.OutDriver + k
}

// series returns the output series of bit b, or nil if in has none.
func (in *histInput) series(b int) *histSeries {
	if b < histBandBits {
		if d := in.dets[b/series.NumOutputs]; d != nil {
			return &d[b%series.NumOutputs]
		}
		return nil
	}
	if b == histValueBit {
		return in.value
	}
	if in.drivers != nil {
		return &in.drivers[b-histBandBits]
	}
	return nil
}

// histSeries is one output series. It exists (has samples) when app != nil.
type histSeries struct {
	closed []histChunk // full chunks, oldest first; their bytes are immutable
	// head is the chunk being appended to: its bytes change in place, so
	// readers copy them under the partition lock.
	head     chunkenc.XORChunk
	app      chunkenc.Appender // head's appender; nil: the series is empty
	headMinT int64             // time of the head's first sample
	lastT    int64             // time of the newest sample
}

// histChunk is one XOR chunk and the times of its first and last samples.
type histChunk struct {
	b          []byte
	minT, maxT int64
}

// New returns an empty history keeping retention of output samples
// for at most maxSeries input series (the first seen; others are counted
// and not kept until some expire). names is called by queries for the
// current output names. It registers the anomalyd_history_* families in reg
// (nil: a private registry).
func New(retention time.Duration, maxSeries int, names func() series.Names, reg *prometheus.Registry) *History {
	if retention < time.Millisecond || maxSeries < 1 {
		panic(fmt.Sprintf("BUG: history: New with retention %s, max series %d", retention, maxSeries))
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &History{retention: retention.Milliseconds(), maxInputs: int64(maxSeries), names: names}
	h.sweepEvery = max(h.retention/sweepFraction, 1)
	h.maxT.Store(math.MinInt64)
	for i := range h.parts {
		h.parts[i].series = map[uint64]*histInput{}
		h.parts[i].nextSweep = math.MinInt64
	}
	sum := func(f func(p *histPartition) int64) func() float64 {
		return func() float64 {
			var n int64
			for i := range h.parts {
				p := &h.parts[i]
				p.mu.Lock()
				n += f(p)
				p.mu.Unlock()
			}
			return float64(n)
		}
	}
	promreg.GaugeFunc(reg, "anomalyd_history_series",
		"Output series held in the remote-read history.", nil, sum(func(p *histPartition) int64 { return p.numSeries }))
	promreg.GaugeFunc(reg, "anomalyd_history_bytes",
		"Bytes of XOR chunks held in the remote-read history (encoded samples only, without per-series overhead).", nil,
		sum(func(p *histPartition) int64 { return p.bytes }))
	promreg.CounterFunc(reg, "anomalyd_history_samples_appended_total",
		"Output samples appended to the remote-read history.", nil, sum(func(p *histPartition) int64 { return p.appended }))
	promreg.CounterFunc(reg, "anomalyd_history_samples_out_of_order_total",
		"Output samples not appended to the remote-read history because they were not newer than their series' last sample.", nil,
		sum(func(p *histPartition) int64 { return p.outOfOrder }))
	promreg.CounterFunc(reg, "anomalyd_history_samples_over_limit_total",
		"Output samples not kept in the remote-read history because their input series would exceed history.max_series.", nil,
		sum(func(p *histPartition) int64 { return p.overLimit }))
	promreg.GaugeFunc(reg, "anomalyd_history_input_series",
		"Input series whose output series the remote-read history holds (at most history.max_series).", nil,
		func() float64 { return float64(h.inputs.Load()) })
	return h
}

// Append appends the output samples of recs: 4 per record and its driver
// series, the score only for a warm-up record, and stale markers for a
// stale one (to the output series that exist; a series made of one stale
// marker would be invisible to PromQL anyway). It takes each partition's
// lock once per run of records in that partition, and allocates only when a
// series is new, a head chunk grows its buffer or a chunk is cut (every 120
// samples). recs is not kept.
func (h *History) Append(recs []series.Record) {
	if len(recs) == 0 {
		return
	}
	maxT := h.advance(recs)
	var p *histPartition
	for i := range recs {
		r := &recs[i]
		q := &h.parts[r.Series.Hash%historyPartitions]
		if q != p {
			if p != nil {
				p.mu.Unlock()
			}
			p = q
			p.mu.Lock()
		}
		p.append(r, h)
	}
	p.mu.Unlock()
	h.maybeSweep(maxT)
}

// maybeSweep sweeps the next partition in turn if it is due. One partition
// per Append, round robin, rather than the partitions the records touch: a
// partition whose series have all stopped still gets swept, and no Append
// pays for more than one partition's sweep.
func (h *History) maybeSweep(maxT int64) {
	p := &h.parts[h.sweepNext.Add(1)%historyPartitions]
	p.mu.Lock()
	if maxT >= p.nextSweep {
		h.inputs.Add(-p.sweep(maxT - h.retention))
		p.nextSweep = maxT + h.sweepEvery
	}
	p.mu.Unlock()
}

// advance raises h.maxT to the newest timestamp in recs and returns it.
func (h *History) advance(recs []series.Record) int64 {
	newest := recs[0].T
	for i := 1; i < len(recs); i++ {
		newest = max(newest, recs[i].T)
	}
	for {
		cur := h.maxT.Load()
		if newest <= cur {
			return cur
		}
		if h.maxT.CompareAndSwap(cur, newest) {
			return newest
		}
	}
}

// append appends the output samples of r. p.mu is held.
func (p *histPartition) append(r *series.Record, h *History) {
	m := r.Slots()
	in, over := p.input(r.Series, !r.Stale, h)
	if over {
		p.overLimit += int64(bits.OnesCount16(m))
	}
	if in == nil {
		return // a stale record for a series never seen, or over the limit
	}
	if bands := m & series.BandSlots; bands != 0 {
		d := in.dets[r.Detector]
		if d == nil && !r.Stale {
			d = new([series.NumOutputs]histSeries)
			in.dets[r.Detector] = d
		}
		if d != nil {
			for ; bands != 0; bands &= bands - 1 {
				o := bits.TrailingZeros16(bands)
				p.appendOutput(&d[o], r, o)
			}
		}
	}
	if m&(1<<series.OutValue) != 0 {
		if in.value == nil && !r.Stale {
			in.value = new(histSeries)
		}
		if in.value != nil {
			p.appendOutput(in.value, r, series.OutValue)
		}
	}
	if drv := m >> series.OutDriver & (1<<detectors.NumKinds - 1); drv != 0 {
		d := in.drivers
		if d == nil && !r.Stale {
			d = new([detectors.NumKinds]histSeries)
			in.drivers = d
		}
		if d != nil {
			for ; drv != 0; drv &= drv - 1 {
				k := bits.TrailingZeros16(drv)
				p.appendOutput(&d[k], r, series.OutDriver+k)
			}
		}
	}
}

// appendOutput appends output o of r to s: a stale marker only if s exists.
func (p *histPartition) appendOutput(s *histSeries, r *series.Record, o int) {
	v := r.Value(o)
	if r.Stale {
		if s.app == nil {
			return
		}
		v = staleNaN
	}
	p.appendSample(s, r.T, v)
}

// input returns the input series with si's labels, creating it if create
// and h holds fewer than its maximum; over reports that it was not created
// because of the maximum.
func (p *histPartition) input(si *series.Info, create bool, h *History) (_ *histInput, over bool) {
	first := p.series[si.Hash]
	for in := first; in != nil; in = in.next {
		if in.info == si || in.info.Labels == si.Labels {
			return in, false
		}
	}
	if !create {
		return nil, false
	}
	if h.inputs.Add(1) > h.maxInputs {
		h.inputs.Add(-1)
		return nil, true
	}
	in := &histInput{info: si, next: first}
	p.series[si.Hash] = in
	return in, false
}

// appendSample appends (t, v) to s, cutting the head chunk when it is full.
func (p *histPartition) appendSample(s *histSeries, t int64, v float64) {
	before := len(s.head.Bytes())
	switch {
	case s.app == nil:
		s.head.Reset(make([]byte, chunkHeaderSize, headChunkCap))
		s.app = headAppender(&s.head)
		s.headMinT = t
		p.numSeries++
		before = 0
	case t <= s.lastT:
		p.outOfOrder++
		return
	case s.head.NumSamples() >= samplesPerChunk:
		p.cut(s, t)
		before = chunkHeaderSize
	}
	s.app.Append(0, t, v)
	s.lastT = t
	p.bytes += int64(len(s.head.Bytes()) - before)
	p.appended++
}

// cut closes s's full head chunk and starts an empty one at time t in the
// same buffer: the closed chunk gets an exact-size copy.
func (p *histPartition) cut(s *histSeries, t int64) {
	b := s.head.Bytes()
	s.closed = append(s.closed, histChunk{b: slices.Clone(b), minT: s.headMinT, maxT: s.lastT})
	b = b[:chunkHeaderSize]
	clear(b)
	s.head.Reset(b)
	s.app = headAppender(&s.head)
	s.headMinT = t
	p.bytes += chunkHeaderSize // the closed copy keeps the old head's bytes
}

// headAppender returns the appender of an empty chunk.
func headAppender(c *chunkenc.XORChunk) chunkenc.Appender {
	app, err := c.Appender()
	if err != nil {
		panic("BUG: history: appender of an empty XOR chunk: " + err.Error())
	}
	return app
}

// sweep drops the chunks whose newest sample is older than cutoff, then
// the series, detectors and input series left empty, and returns how many
// input series it dropped. p.mu is held.
func (p *histPartition) sweep(cutoff int64) (dropped int64) {
	for hash, first := range p.series {
		var prev *histInput
		for in := first; in != nil; in = in.next {
			if !p.sweepInput(in, cutoff) {
				prev = in
				continue
			}
			dropped++
			switch {
			case prev != nil:
				prev.next = in.next
			case in.next != nil:
				p.series[hash] = in.next
			default:
				delete(p.series, hash)
			}
		}
	}
	return dropped
}

// sweepInput sweeps in's series and reports whether none is left.
func (p *histPartition) sweepInput(in *histInput, cutoff int64) (empty bool) {
	empty = true
	for k, d := range in.dets {
		if d == nil {
			continue
		}
		if p.sweepSet(d[:], cutoff) {
			empty = false
		} else {
			in.dets[k] = nil
		}
	}
	if in.drivers != nil {
		if p.sweepSet(in.drivers[:], cutoff) {
			empty = false
		} else {
			in.drivers = nil
		}
	}
	if in.value != nil {
		if p.sweepSeries(in.value, cutoff) {
			empty = false
		} else {
			in.value = nil
		}
	}
	return empty
}

// sweepSet sweeps the series of ss and reports whether any is left.
func (p *histPartition) sweepSet(ss []histSeries, cutoff int64) (live bool) {
	for i := range ss {
		if p.sweepSeries(&ss[i], cutoff) {
			live = true
		}
	}
	return live
}

// sweepSeries drops s's expired chunks and reports whether s still exists.
func (p *histPartition) sweepSeries(s *histSeries, cutoff int64) bool {
	if s.app == nil {
		return false
	}
	if s.lastT < cutoff { // the head, and so every chunk, has expired
		for _, c := range s.closed {
			p.bytes -= int64(len(c.b))
		}
		p.bytes -= int64(len(s.head.Bytes()))
		p.numSeries--
		*s = histSeries{}
		return false
	}
	k := 0
	for k < len(s.closed) && s.closed[k].maxT < cutoff {
		p.bytes -= int64(len(s.closed[k].b))
		k++
	}
	if k > 0 {
		n := copy(s.closed, s.closed[k:])
		clear(s.closed[n:])
		s.closed = s.closed[:n]
	}
	return true
}

// histMatch is an output series selected by a query: its labels (sorted by
// name) and its chunks overlapping the query's range, oldest first. The
// chunk bytes are immutable (closed chunks) or a private copy (the head).
type histMatch struct {
	labels []prompb.Label
	chunks []histChunk
}

// histCandidate is an input series seen by a query, with a bit per output
// series (see histBits) that exists and overlaps the range.
type histCandidate struct {
	in   *histInput
	mask uint32
}

// query returns the output series that match every matcher and have
// samples in [mint, maxt], sorted by labels. Per partition it collects
// candidates under the lock, matches labels without it, and takes the lock
// again to copy the matches' chunks: regular expressions never run while a
// shard waits.
func (h *History) query(ms []*labels.Matcher, mint, maxt int64) []histMatch {
	if mint > maxt {
		return nil
	}
	names := h.names()
	allowed := outputMask(ms, &names)
	if allowed == 0 {
		return nil
	}
	var (
		out   []histMatch
		cands []histCandidate
		sel   []histSelected
		lbls  []prompb.Label
	)
	for i := range h.parts {
		p := &h.parts[i]
		p.mu.Lock()
		cands = p.candidates(cands[:0], allowed, mint, maxt)
		p.mu.Unlock()

		sel = sel[:0]
		for _, c := range cands {
			for bit := uint32(0); c.mask>>bit != 0; bit++ {
				if c.mask&(1<<bit) == 0 {
					continue
				}
				det, o := histOutput(int(bit))
				lbls = series.AppendOutputLabels(lbls[:0], c.in.info, names.Name(o), det)
				if matchLabels(ms, lbls) {
					sel = append(sel, histSelected{in: c.in, bit: int(bit), labels: slices.Clone(lbls)})
				}
			}
		}
		if len(sel) == 0 {
			continue
		}

		p.mu.Lock()
		for _, s := range sel {
			if chunks := s.chunks(mint, maxt); len(chunks) > 0 {
				out = append(out, histMatch{labels: s.labels, chunks: chunks})
			}
		}
		p.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b histMatch) int { return compareLabels(a.labels, b.labels) })
	return out
}

// histSelected is an output series whose labels matched a query.
type histSelected struct {
	in     *histInput
	bit    int // see histBits
	labels []prompb.Label
}

// outputMask returns a bit per output series kind (see histBits) whose
// __name__ and detector labels satisfy the matchers on those two labels: a
// query for anomaly_score never builds the labels of the other outputs.
func outputMask(ms []*labels.Matcher, names *series.Names) uint32 {
	var mask uint32
	for b := range histBits {
		det, o := histOutput(b)
		ok := true
		for _, m := range ms {
			switch m.Name {
			case "__name__":
				ok = ok && m.Matches(names.Name(o))
			case "detector":
				ok = ok && m.Matches(det.String())
			}
		}
		if ok {
			mask |= 1 << b
		}
	}
	return mask
}

// candidates appends the partition's input series with output series that
// are in allowed (see outputMask) and have samples in [mint, maxt]. p.mu is
// held.
func (p *histPartition) candidates(dst []histCandidate, allowed uint32, mint, maxt int64) []histCandidate {
	for _, first := range p.series {
		for in := first; in != nil; in = in.next {
			var mask uint32
			for m := allowed; m != 0; m &= m - 1 {
				b := bits.TrailingZeros32(m)
				if s := in.series(b); s != nil && s.overlaps(mint, maxt) {
					mask |= 1 << b
				}
			}
			if mask != 0 {
				dst = append(dst, histCandidate{in: in, mask: mask})
			}
		}
	}
	return dst
}

// overlaps reports whether s has samples in [mint, maxt].
func (s *histSeries) overlaps(mint, maxt int64) bool {
	if s.app == nil || s.lastT < mint {
		return false
	}
	first := s.headMinT
	if len(s.closed) > 0 {
		first = s.closed[0].minT
	}
	return first <= maxt
}

// chunks returns the chunks of the selected series that overlap
// [mint, maxt]: closed chunks shared, the head copied. The partition's lock
// is held; the series may have been swept since it was selected.
func (s *histSelected) chunks(mint, maxt int64) []histChunk {
	hs := s.in.series(s.bit)
	if hs == nil || hs.app == nil {
		return nil
	}
	var out []histChunk
	for _, c := range hs.closed {
		if c.maxT >= mint && c.minT <= maxt {
			out = append(out, c)
		}
	}
	if hs.lastT >= mint && hs.headMinT <= maxt {
		out = append(out, histChunk{b: slices.Clone(hs.head.Bytes()), minT: hs.headMinT, maxT: hs.lastT})
	}
	return out
}

// matchLabels reports whether lbls satisfies every matcher; a label that
// lbls lacks has the empty value, as in PromQL.
func matchLabels(ms []*labels.Matcher, lbls []prompb.Label) bool {
	for _, m := range ms {
		v := ""
		for _, l := range lbls {
			if l.Name == m.Name {
				v = l.Value
				break
			}
		}
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

// compareLabels orders label sets as Prometheus's labels.Compare does:
// pairwise by name then value, a prefix first.
func compareLabels(a, b []prompb.Label) int {
	for i := range min(len(a), len(b)) {
		if c := strings.Compare(a[i].Name, b[i].Name); c != 0 {
			return c
		}
		if c := strings.Compare(a[i].Value, b[i].Value); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}
