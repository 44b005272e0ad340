package window

import (
	"context"
	"math"
	"time"
)

// Warm-up: a series new to this process would start with empty
// detectors and score nothing useful for a day (the Holt-Winters season).
// With a Warmer, a new series is first "warming": its live samples are held
// in a small buffer while the Warmer reads its history (from Prometheus's
// remote read); when the history arrives, the shard feeds it through the
// series' normal per-sample path without emitting anything, then replays
// the held live samples as usual. A series that waits too long (buffer
// full, deadline passed, no history) replays its live samples cold.
//
// The shard goroutine stays the only writer of series state: histories come
// back over the shard's warmed channel and are applied between batches.
// Warming costs no memory per series that is not warming (one flag bit; the
// state sits in a per-shard map).

// Warmer reads the history of new series for the shards. It must be safe
// for concurrent use; shards call Warm on their own goroutine.
type Warmer interface {
	// Warm queues req and must not block. It returns false if it cannot
	// take req (queue full, stopping): the series then starts cold at
	// once. Otherwise it should call req.Deliver once, also on failure; a
	// series that gets no answer starts cold at req.Deadline.
	Warm(req WarmRequest) bool
}

// WarmupOptions turn warm-up on (config.WarmupConfig).
type WarmupOptions struct {
	Warmer      Warmer        // nil: warm-up off
	Lookback    time.Duration // history asked for, before the first live sample
	MaxBuffered int           // live samples held per warming series
	Timeout     time.Duration // how long a series waits for its history
}

func (o *WarmupOptions) enabled() bool { return o.Warmer != nil }

// WarmRequest asks for the history of one series. It is a value: the
// Warmer may keep it as long as it likes and call Deliver from any
// goroutine.
type WarmRequest struct {
	// Labels is the canonical label set (series.Info.Labels); it is
	// immutable and shared with the series.
	Labels string
	// Start and End bound the history in milliseconds, inclusive: End is
	// one millisecond before the first live sample, Start is Lookback
	// before End.
	Start, End int64
	// Deadline is when the series stops waiting; an answer after it is
	// ignored, so the Warmer may drop the request.
	Deadline time.Time

	sh   *shard
	slot uint32
	seq  uint64 // tells this request from an earlier one for a reused slot
}

// Deliver hands the history of the series to its shard: samples sorted by
// time, one per timestamp (the shard owns the slice afterwards), or err if
// it could not be read (the series starts cold). It waits until the shard
// takes it, the shard has stopped or ctx ends, and reports whether the shard
// took it.
func (r WarmRequest) Deliver(ctx context.Context, history []Sample, err error) bool {
	select {
	case r.sh.warmed <- warmReply{slot: r.slot, seq: r.seq, history: history, err: err}:
		return true
	case <-r.sh.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// warmedQueue is the capacity of a shard's warmed channel: enough for a
// Warmer to hand over a whole request's answers (100 series by default)
// without waiting for the shard after each one; the shard drains it between
// batches.
const warmedQueue = 128

type warmReply struct {
	slot    uint32
	seq     uint64
	history []Sample
	err     error
}

// warmState is a warming series' state, in the shard's warming map.
type warmState struct {
	seq      uint64
	deadline int64    // unix ms: the series stops waiting then
	buf      []Sample // live samples held, in arrival order
}

// Reasons a warming series stopped waiting (shardStats.warmGaveUp).
const (
	gaveUpBufferFull = iota
	gaveUpTimeout
	gaveUpEvicted
	numGaveUp
)

// startWarming asks the Warmer for the history of the new series se, whose
// first live sample is at firstT. If the Warmer refuses, se stays cold.
func (s *shard) startWarming(slot uint32, se *seriesState, firstT, nowMs int64) {
	o := &s.set.opts.Warmup
	s.warmSeq++
	end := firstT - 1
	req := WarmRequest{Labels: se.info.Labels, Start: end - o.Lookback.Milliseconds(), End: end,
		Deadline: time.UnixMilli(nowMs).Add(o.Timeout), sh: s, slot: slot, seq: s.warmSeq}
	if !o.Warmer.Warm(req) {
		s.stats.warmRefused.Add(1)
		return
	}
	se.flags |= flagWarming
	s.warming[slot] = &warmState{seq: s.warmSeq, deadline: nowMs + o.Timeout.Milliseconds(),
		buf: make([]Sample, 0, min(o.MaxBuffered, 16))}
	s.stats.warming.Add(1)
}

// hold keeps the live samples of a warming series until its history comes,
// or gives up waiting (deadline passed, buffer full) and processes them.
func (s *shard) hold(slot uint32, se *seriesState, samples []Sample, nowMs int64) {
	w := s.warming[slot]
	if nowMs >= w.deadline {
		s.finishWarming(slot, se, w, nil)
		s.stats.warmGaveUp[gaveUpTimeout].Add(1)
		for _, smp := range samples {
			s.sample(se, smp.T, smp.V)
		}
		return
	}
	for i, smp := range samples {
		if len(w.buf) == s.set.opts.Warmup.MaxBuffered {
			s.finishWarming(slot, se, w, nil)
			s.stats.warmGaveUp[gaveUpBufferFull].Add(1)
			for _, smp := range samples[i:] {
				s.sample(se, smp.T, smp.V)
			}
			return
		}
		w.buf = append(w.buf, smp)
	}
}

// onWarmed applies a Warmer's answer, unless the series stopped waiting
// (it gave up, was evicted, or its slot now holds another series).
func (s *shard) onWarmed(r warmReply) {
	w := s.warming[r.slot]
	if w == nil || w.seq != r.seq {
		s.stats.warmLate.Add(1)
		return
	}
	history := r.history
	if r.err != nil {
		history = nil
	}
	s.finishWarming(r.slot, s.slots.at(r.slot), w, history)
	s.flushOut()
	s.commitStats()
}

// finishWarming ends the warming of se: it feeds history (nil: none) to
// the detectors without emitting anything (history is not re-scored into
// the outputs), then replays the held live samples through the normal path,
// which emits their outputs. History at or after the first held sample is
// dropped: the live samples are the truth there.
func (s *shard) finishWarming(slot uint32, se *seriesState, w *warmState, history []Sample) {
	delete(s.warming, slot)
	se.flags &^= flagWarming
	s.stats.warming.Add(-1)
	if len(history) > 0 {
		cutoff := int64(math.MaxInt64)
		if len(w.buf) > 0 {
			cutoff = w.buf[0].T
		}
		p := s.rules.rules[se.rule].params
		// History's own ordering problems and stale markers are not live
		// input: they are kept out of the window stats.
		var st localStats
		for _, h := range history {
			if h.T >= cutoff {
				continue
			}
			if res, o, x := se.observe(p, h.T, h.V, &st, &s.counts, false); res == outcomeAnalysed {
				// What maySleep compares with, and what a series that
				// sleeps in its history emits for the live samples. Shown:
				// no history score is carried to /metrics as a peak.
				se.last = verdict(h.T, x, &o)
				se.last.shown = true
			}
		}
		s.local.slept += st.slept
		s.local.woken += st.woken
		// Nothing was emitted: no stale markers are owed for the history.
		se.flags &^= flagHasOutput
		s.stats.warmHistorySamples.Add(st.samples)
		s.stats.warmed.Add(1)
	}
	for _, smp := range w.buf {
		s.sample(se, smp.T, smp.V)
	}
}

// expireWarming gives up on the warming series whose deadline has passed
// and that got no sample since (hold checks those that do).
func (s *shard) expireWarming(now time.Time) {
	nowMs := now.UnixMilli()
	for slot, w := range s.warming {
		if nowMs >= w.deadline {
			s.finishWarming(slot, s.slots.at(slot), w, nil)
			s.stats.warmGaveUp[gaveUpTimeout].Add(1)
		}
	}
	if len(s.warming) == 0 {
		// A map never shrinks: drop the buckets a burst of new series grew.
		s.warming = map[uint32]*warmState{}
	}
	s.flushOut()
	s.commitStats()
}

// finishAllWarming replays every warming series cold: the shard is stopping
// and no history will come.
func (s *shard) finishAllWarming() {
	for slot, w := range s.warming {
		s.finishWarming(slot, s.slots.at(slot), w, nil)
	}
	s.commitStats()
}

// warmTick is how often a shard looks for warming series past their
// deadline: a quarter of the timeout, so a series waits at most 25% longer
// than warmup allows even when no new sample arrives.
func warmTick(timeout time.Duration) time.Duration { return max(timeout/4, time.Second) }
