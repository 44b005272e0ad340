package remotewrite

import (
	"math/bits"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/window/series"
)

// samplesOf is the number of output samples record r becomes: the score
// alone during warm-up, otherwise all four outputs, its driver series and
// its value series (stale markers included). See series.Record.Slots.
func samplesOf(r *series.Record) int64 {
	return int64(bits.OnesCount16(r.Slots()))
}

// queue is one send queue. Appenders copy records into buf, and incident
// samples into inc, under mu; the queue's sender swaps both for its own
// emptied slices and works from those, so the lock is held only to copy
// records in or to swap slice headers.
//
// pending counts the output samples the queue holds: in buf and inc and in
// the sender's hands (swapped out, in the batch, in flight). Appenders
// refuse a record that would take pending above the capacity, so memory is
// bounded by about two slices of capacity records each (≤ 2 × capacity × 64
// bytes, the size of a series.Record, in the worst case of warm-up records,
// 1 sample each; an incident sample is 40 bytes).
type queue struct {
	mu      sync.Mutex
	closed  bool
	buf     []series.Record
	inc     []incidentSample
	pending atomic.Int64
	// notify wakes the sender when pending reaches a full batch. Size 1: one
	// pending wake-up is enough, the sender takes everything queued.
	notify chan struct{}

	// disk is the queue's disk queue, nil when it has none. Only its
	// sender uses it; the sizes below are published for the metrics.
	disk       *diskQueue
	stored     atomic.Int64 // samples in encoded blocks, in memory or on disk
	diskBytes  atomic.Int64
	diskBlocks atomic.Int64
	_          [64]byte // keep neighbouring queues' locks off this cache line
}

func newQueue() *queue { return &queue{notify: make(chan struct{}, 1)} }

// push appends the records of recs that belong to queue qi of n. It returns
// the samples dropped because the queue was full and because it was closed.
func (q *queue) push(recs []series.Record, qi, n uint64, capacity, batch int64) (full, shutdown int64) {
	q.mu.Lock()
	p0 := q.pending.Load()
	p := p0
	for i := range recs {
		r := &recs[i]
		if n > 1 && r.Series.Hash%n != qi {
			continue
		}
		k := samplesOf(r)
		switch {
		case q.closed:
			shutdown += k
		case p+k > capacity:
			full += k
		default:
			p += k
			q.buf = append(q.buf, *r)
		}
	}
	q.commitUnlock(p0, p, batch)
	return full, shutdown
}

// commitUnlock adds the samples queued since pending was p0 (p now) to
// pending, unlocks q.mu (held by the caller) and wakes the sender once a
// full batch is pending.
func (q *queue) commitUnlock(p0, p, batch int64) {
	if p != p0 {
		p = q.pending.Add(p - p0)
	}
	q.mu.Unlock()
	if p >= batch && p != p0 {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
}

// close makes push drop everything from now on.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// drain empties buf and inc (when no sender runs) and returns the samples
// dropped.
func (q *queue) drain() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := int64(len(q.inc))
	for i := range q.buf {
		n += samplesOf(&q.buf[i])
	}
	clear(q.buf)
	q.buf = q.buf[:0]
	clear(q.inc)
	q.inc = q.inc[:0]
	q.pending.Add(-n)
	return n
}

// swap gives the queue the emptied slices empty and emptyInc and returns
// what was queued.
func (q *queue) swap(empty []series.Record, emptyInc []incidentSample) ([]series.Record, []incidentSample) {
	q.mu.Lock()
	full, fullInc := q.buf, q.inc
	q.buf, q.inc = empty, emptyInc
	q.mu.Unlock()
	return full, fullInc
}

// sender is the goroutine of one queue. Everything in it is owned by that
// goroutine.
type sender struct {
	w  *RemoteWriter
	q  *queue
	qi int

	local    []series.Record // swapped out of q.buf; local[li:] still to batch
	li       int
	localInc []incidentSample // swapped out of q.inc; localInc[ii:] still to batch
	ii       int
	batch    []series.Record
	batchInc []incidentSample
	batchN   int64 // output samples in batch and batchInc

	enc   encoder
	codes map[int]prometheus.Counter // requests_total children by status code

	// failing is set while the queue's last request failed and is retried.
	failing bool

	// With a disk queue (runDisk): blocks encoded but not sent, in memory
	// while nothing is on disk, their samples, and the seq of the next.
	mem        []block
	memSamples int64
	seq        uint64
	readBuf    []byte // body of the head block read from disk
	conv       []byte // its RW1 re-encoding (toRW1)
	// drainOnly: runDisk returns once the disk queue is empty (a queue of
	// an earlier max_shards).
	drainOnly bool
}

func newSender(w *RemoteWriter, q *queue, qi int) *sender {
	return &sender{
		w:     w,
		q:     q,
		qi:    qi,
		enc:   newEncoder(&w.names),
		codes: map[int]prometheus.Counter{},
	}
}

// run batches and sends until Stop: a batch goes when it holds
// max_samples_per_send samples, or batch_send_deadline after the previous
// send, or at once while flushing for Stop.
func (s *sender) run() {
	w := s.w
	defer w.wg.Done()
	timer := time.NewTimer(w.deadline)
	defer timer.Stop()
	flushing, due := false, false
	for {
		s.fill()
		if s.batchN > 0 && (s.batchN >= int64(w.maxSend) || due || flushing) {
			if !s.sendBatch() {
				s.dropRest()
				return
			}
			timer.Reset(w.deadline)
			due = false
			continue
		}
		if due { // the deadline passed with nothing to send
			timer.Reset(w.deadline)
			due = false
		}
		if flushing { // queue closed and empty
			return
		}
		select {
		case <-s.q.notify:
		case <-timer.C:
			due = true
		case <-w.stopCh:
			flushing = true
		case <-w.hardCtx.Done():
			s.dropRest()
			return
		}
	}
}

// fill moves records and incident samples into the batch until it holds
// max_samples_per_send samples or nothing is queued. A record is never
// split; a batch holds at least one record even if max_samples_per_send is
// below its sample count.
func (s *sender) fill() {
	max := int64(s.w.maxSend)
	for s.batchN < max {
		if s.li == len(s.local) && s.ii == len(s.localInc) {
			clear(s.local) // drop references to series the batch no longer needs
			clear(s.localInc)
			s.local, s.localInc = s.q.swap(s.local[:0], s.localInc[:0])
			s.li, s.ii = 0, 0
			if len(s.local) == 0 && len(s.localInc) == 0 {
				return
			}
		}
		if s.li == len(s.local) {
			s.batchInc = append(s.batchInc, s.localInc[s.ii])
			s.batchN++
			s.ii++
			continue
		}
		r := &s.local[s.li]
		k := samplesOf(r)
		if s.batchN > 0 && s.batchN+k > max {
			return
		}
		s.batch = append(s.batch, *r)
		s.batchN += k
		s.li++
	}
}

// dropRest counts everything still held as dropped at shutdown: the
// partial batch, the swapped-out records and the queue.
func (s *sender) dropRest() {
	n := s.batchN
	s.clearBatch()
	for i := s.li; i < len(s.local); i++ {
		n += samplesOf(&s.local[i])
	}
	n += int64(len(s.localInc) - s.ii)
	clear(s.local)
	s.local, s.li = s.local[:0], 0
	clear(s.localInc)
	s.localInc, s.ii = s.localInc[:0], 0
	s.q.pending.Add(-n)
	n += s.q.drain()
	s.w.m.droppedShutdown.Add(float64(n))
}

// sendBatch sends the batch until the store takes or rejects it, retrying
// the same batch (so per-series order holds) on network errors, 5xx and,
// when configured, 429. It returns false if Stop's deadline ended first; the
// batch is then counted as dropped.
func (s *sender) sendBatch() bool {
	w := s.w
	n := s.batchN
	defer func() {
		s.clearBatch()
		s.q.pending.Add(-n)
	}()
	fn := float64(n)
	backoff := w.minBackoff
	attempt := 0
	var body []byte
	encoded, bodyRW2 := false, false
	for {
		if w.hardCtx.Err() != nil {
			w.m.droppedShutdown.Add(fn)
			return false
		}
		rw2 := w.rw2 && !w.rw1Only.Load()
		if !encoded || bodyRW2 != rw2 {
			var err error
			if body, err = s.enc.encode(s.batch, s.batchInc, rw2); err != nil {
				// Cannot happen with valid records; do not retry for ever.
				w.m.failed.Add(fn)
				w.logger.Error("cannot encode batch, dropping it", zap.Int64("samples", n), zap.Error(err))
				return true
			}
			encoded, bodyRW2 = true, rw2
		}
		res := w.store(body, rw2, attempt)
		s.countRequest(res.code)
		w.m.duration.Observe(res.dur.Seconds())

		switch {
		case res.err == nil && res.code/100 == 2:
			if rw2 && !res.hasWritten {
				w.fallbackToRW1("store answered 2xx to a RW2 request without X-Prometheus-Remote-Write-Samples-Written; assuming it only knows RW1", res.code)
				continue
			}
			if rw2 && res.written < n {
				w.m.sent.Add(float64(res.written))
				w.m.failed.Add(float64(n - res.written))
				w.logger.Warn("store wrote only part of a RW2 batch", zap.Int64("samples", n), zap.Int64("written", res.written))
				return true
			}
			w.m.sent.Add(fn)
			s.recovered()
			return true

		case res.err == nil && rw2 && res.code == 415:
			w.fallbackToRW1("store answered 415 Unsupported Media Type to a RW2 request", res.code)
			continue

		case res.err != nil || res.code/100 == 5 || (res.code == 429 && w.retry429):
			if w.hardCtx.Err() != nil { // the request was aborted by Stop
				w.m.droppedShutdown.Add(fn)
				return false
			}
			w.m.retried.Add(fn)
			sleep := w.jitter(backoff)
			if res.retryAfter > 0 {
				sleep = res.retryAfter
			}
			s.failed(res, attempt, n, sleep)
			if !w.sleep(sleep) {
				w.m.droppedShutdown.Add(fn)
				return false
			}
			backoff = min(2*backoff, w.maxBackoff)
			attempt++

		default: // 4xx, 3xx, 415 to RW1, 429 without retry_on_http_429
			// A RW2 store says how much of a rejected request it wrote anyway.
			var written int64
			if rw2 && res.hasWritten {
				written = min(res.written, n)
			}
			w.m.sent.Add(float64(written))
			w.m.failed.Add(float64(n - written))
			w.logger.Error("store rejected batch, dropping it (not retried)",
				zap.Int("status", res.code), zap.String("body", res.msg), zap.Int64("samples", n), zap.Int64("written", written))
			s.recovered()
			return true
		}
	}
}

// clearBatch empties the batch, dropping its references to series.
func (s *sender) clearBatch() {
	clear(s.batch)
	clear(s.batchInc)
	s.batch, s.batchInc, s.batchN = s.batch[:0], s.batchInc[:0], 0
}

func (s *sender) countRequest(code int) {
	c := s.codes[code]
	if c == nil {
		label := "error"
		if code != 0 {
			label = strconv.Itoa(code)
		}
		c = s.w.m.sm.requests.WithLabelValues(s.w.m.remote, label)
		s.codes[code] = c
	}
	c.Inc()
}

// fallbackToRW1 switches the writer to RW1 for good and logs it once.
func (w *RemoteWriter) fallbackToRW1(why string, code int) {
	if w.rw1Only.CompareAndSwap(false, true) {
		w.logger.Warn("falling back to remote-write 1.0 (prometheus.WriteRequest) for this store: "+why, zap.Int("status", code))
	}
}

// sleep waits d, or until Stop's deadline ends (false).
func (w *RemoteWriter) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.hardCtx.Done():
		return false
	}
}

// addJitter spreads retries of many queues and instances: d plus up to 25 %.
func addJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d + rand.N(d/4+1)
}
