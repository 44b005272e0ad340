package remotewrite

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.uber.org/zap"
)

// failingReminder is how often a failing store is logged again while it
// keeps failing: often enough to be in any log window someone looks at,
// rarely enough not to flood it.
const failingReminder = 5 * time.Minute

// remoteDirName is the directory of a remote's disk queue under the queue
// directory: its name when that is a safe file name, else a hash of it. The
// name is stable (config fills it in from a hash of the url when it is not
// set), so a restart finds the same directory.
func remoteDirName(name string) string {
	if safeName.MatchString(name) && name != "." && name != ".." {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "h-" + hex.EncodeToString(sum[:8])
}

var (
	safeName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	// layoutName is the directory of send queue i of n.
	layoutName = regexp.MustCompile(`^([0-9]+)-of-([0-9]+)$`)
)

func queueDirName(i, n int) string { return fmt.Sprintf("%d-of-%d", i, n) }

// openDisk opens the disk queue of every send queue, and finds the
// directories of an earlier max_shards whose blocks must be sent before
// any new one (a series may have moved to another queue).
func (w *RemoteWriter) openDisk() error {
	if err := os.MkdirAll(w.diskDir, 0o750); err != nil {
		return fmt.Errorf("remote_write %q: cannot create the disk queue: %w", w.name, err)
	}
	n := len(w.queues)
	ents, err := os.ReadDir(w.diskDir)
	if err != nil {
		return fmt.Errorf("remote_write %q: cannot list the disk queue: %w", w.name, err)
	}
	type old struct {
		dir   string
		mtime time.Time
	}
	var olds []old
	for _, e := range ents {
		m := layoutName.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		if on, _ := strconv.Atoi(m[2]); on == n {
			continue
		}
		var mt time.Time
		if fi, err := e.Info(); err == nil {
			mt = fi.ModTime()
		}
		olds = append(olds, old{filepath.Join(w.diskDir, e.Name()), mt})
	}
	// The older layout first: its blocks were written first.
	slices.SortStableFunc(olds, func(a, b old) int { return a.mtime.Compare(b.mtime) })
	for _, o := range olds {
		w.legacyDirs = append(w.legacyDirs, o.dir)
	}
	perQueue := w.maxDisk / int64(n)
	for i, q := range w.queues {
		d, err := openDiskQueue(filepath.Join(w.diskDir, queueDirName(i, n)), perQueue, w.corruptFunc())
		if err != nil {
			for _, q := range w.queues[:i] {
				q.disk.close()
				q.disk = nil
			}
			return fmt.Errorf("remote_write %q: cannot open the disk queue (--storage.path): %w", w.name, err)
		}
		q.disk = d
		q.updateDiskStats(nil)
	}
	if len(w.legacyDirs) > 0 {
		w.gate = make(chan struct{})
		w.logger.Warn("queue_config.max_shards changed while blocks waited on disk: sending those first, new scores wait behind them",
			zap.Strings("dirs", w.legacyDirs), zap.Int("max_shards", n))
	}
	return nil
}

// corruptFunc returns what a disk queue calls on a frame it cannot read.
func (w *RemoteWriter) corruptFunc() func(samples, bytes int64, err error) {
	return func(samples, bytes int64, err error) {
		w.m.droppedDisk.Add(float64(samples))
		w.logger.Warn("disk queue: dropping an unreadable frame and what follows it in its segment (a crash in the middle of a write leaves one)",
			zap.Int64("samples", samples), zap.Int64("bytes", bytes), zap.Error(err))
	}
}

// drainLegacy sends the blocks of the directories of an earlier
// max_shards, one directory after the other, then opens the gate of the
// send queues. It stops early when Stop is called; what is left stays on
// disk for the next start.
func (w *RemoteWriter) drainLegacy() {
	defer w.wg.Done()
	for _, dir := range w.legacyDirs {
		q := newQueue()
		q.closed = true
		d, err := openDiskQueue(dir, w.maxDisk/int64(len(w.queues)), w.corruptFunc())
		if err != nil {
			w.logger.Error("cannot open a disk queue of an earlier max_shards; its blocks stay there", zap.String("dir", dir), zap.Error(err))
			continue
		}
		q.disk = d
		q.updateDiskStats(nil)
		w.legacyQ.Store(q)
		s := newSender(w, q, -1)
		s.drainOnly = true
		done := s.runDisk()
		w.legacyQ.Store(nil)
		if !done {
			return // stopping: the rest is sent after the next start
		}
		if err := os.RemoveAll(dir); err != nil {
			w.logger.Warn("cannot remove a drained disk queue directory", zap.String("dir", dir), zap.Error(err))
		}
	}
	close(w.gate)
}

// updateDiskStats publishes the sizes of the queue's blocks for the
// metrics; mem holds the blocks in memory.
func (q *queue) updateDiskStats(s *sender) {
	blocks, samples := q.disk.pending()
	q.diskBytes.Store(q.disk.bytes)
	q.diskBlocks.Store(blocks)
	var memSamples int64
	if s != nil {
		memSamples = s.memSamples
	}
	q.stored.Store(samples + memSamples)
}

// runDisk is run for a queue with a disk queue: the sender encodes batches
// into blocks as they fill (or at batch_send_deadline), keeps them in memory
// while the store keeps up, and writes them to disk once anything is on
// disk, the store fails or the blocks in memory reach capacity samples; it
// sends the oldest block with one request in flight, so per-series order
// holds across restarts. On Stop it goes on sending while the store takes
// requests and Stop's context lasts, then writes what is left in memory to
// disk. It returns whether the queue was left empty (drainOnly: it returns
// once it is).
func (s *sender) runDisk() (drained bool) {
	w := s.w
	s.seq = s.q.disk.nextSeq()
	defer func() {
		if err := s.q.disk.close(); err != nil {
			w.logger.Error("cannot close the disk queue", zap.Error(err))
		}
		s.q.updateDiskStats(s)
	}()
	batchTimer := time.NewTimer(w.deadline)
	defer batchTimer.Stop()
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	results := make(chan storeResult, 1)
	stopCh := w.stopCh
	var hardDone <-chan struct{} // Stop's context, once stopping
	gate := (<-chan struct{})(w.gate)
	if s.drainOnly {
		gate = nil
	}
	var (
		stopping, due, waiting, inflight bool
		cur                              block
		curRW2                           bool
		attempt                          int
		backoff                          = w.minBackoff
	)
	for {
		for {
			s.fill()
			if s.batchN == 0 || !(s.batchN >= int64(w.maxSend) || due || stopping) {
				break
			}
			s.pushBatch()
		}
		due = false
		gateOpen := gate == nil || isClosed(gate)
		if stopping && !inflight {
			// Keep sending while the store takes it and Stop's context
			// lasts; on the first failure, or with nothing left, what is
			// in memory goes to disk.
			healthy := !s.failing && !waiting && gateOpen && w.hardCtx.Err() == nil
			if !healthy || (len(s.mem) == 0 && s.q.disk.empty()) {
				s.spillMem()
				s.q.updateDiskStats(s)
				return s.q.disk.empty()
			}
		}
		if !inflight && !waiting && gateOpen {
			b, ok, err := s.head()
			switch {
			case err != nil:
				w.logger.Error("cannot read the disk queue", zap.Error(err))
				waiting = true
				retryTimer.Reset(w.maxBackoff)
			case ok:
				body, rw2 := b.body, b.rw2
				if rw2 && w.rw1Only.Load() {
					if body, err = s.toRW1(b.body); err != nil {
						w.m.failed.Add(float64(b.samples))
						w.logger.Error("cannot re-encode a queued RW2 block as RW1, dropping it", zap.Int64("samples", b.samples), zap.Error(err))
						s.commit(b.seq)
						continue
					}
					rw2 = false
				}
				cur, curRW2, inflight = b, rw2, true
				go func(attempt int) { results <- w.store(body, rw2, attempt) }(attempt)
			case s.drainOnly:
				return true
			}
		}
		select {
		case <-s.q.notify:
		case <-batchTimer.C:
			due = true
			batchTimer.Reset(w.deadline)
		case <-retryTimer.C:
			waiting = false
		case <-gate:
			gate = nil
		case <-stopCh:
			stopping, stopCh = true, nil
			hardDone = w.hardCtx.Done()
		case <-hardDone:
			hardDone = nil
		case res := <-results:
			inflight = false
			s.countRequest(res.code)
			w.m.duration.Observe(res.dur.Seconds())
			n := cur.samples
			fn := float64(n)
			switch {
			case w.hardCtx.Err() != nil && (res.err != nil || res.code/100 != 2):
				// Aborted by Stop: the block stays queued, written to disk
				// on the way out.

			case res.err == nil && res.code/100 == 2:
				if curRW2 && !res.hasWritten {
					w.fallbackToRW1("store answered 2xx to a RW2 request without X-Prometheus-Remote-Write-Samples-Written; assuming it only knows RW1", res.code)
					continue // sent again at once, as RW1
				}
				if !s.commit(cur.seq) {
					break // dropped by max_disk_usage_bytes meanwhile, and counted so
				}
				if curRW2 && res.written < n {
					w.m.sent.Add(float64(res.written))
					w.m.failed.Add(float64(n - res.written))
					w.logger.Warn("store wrote only part of a RW2 batch", zap.Int64("samples", n), zap.Int64("written", res.written))
				} else {
					w.m.sent.Add(fn)
				}
				attempt, backoff = 0, w.minBackoff
				s.recovered()

			case res.err == nil && curRW2 && res.code == 415:
				w.fallbackToRW1("store answered 415 Unsupported Media Type to a RW2 request", res.code)

			case res.err != nil || res.code/100 == 5 || (res.code == 429 && w.retry429):
				w.m.retried.Add(fn)
				sleep := w.jitter(backoff)
				if res.retryAfter > 0 {
					sleep = res.retryAfter
				}
				s.failed(res, attempt, n, sleep)
				// Failing: what is in memory goes to disk now, so that a
				// crash loses none of it.
				s.spillMem()
				waiting = true
				retryTimer.Reset(sleep)
				backoff = min(2*backoff, w.maxBackoff)
				attempt++

			default: // 4xx, 3xx, 415 to RW1, 429 without retry_on_http_429
				if !s.commit(cur.seq) {
					break
				}
				var written int64
				if curRW2 && res.hasWritten {
					written = min(res.written, n)
				}
				w.m.sent.Add(float64(written))
				w.m.failed.Add(float64(n - written))
				w.logger.Error("store rejected batch, dropping it (not retried)",
					zap.Int("status", res.code), zap.String("body", res.msg), zap.Int64("samples", n), zap.Int64("written", written))
				attempt, backoff = 0, w.minBackoff
				s.recovered()
			}
			s.q.updateDiskStats(s)
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// pushBatch encodes the batch into a block and queues it: in memory while
// nothing is on disk, the store is not failing and the blocks in memory
// hold less than capacity samples; on disk otherwise, behind everything
// already there.
func (s *sender) pushBatch() {
	w := s.w
	n := s.batchN
	rw2 := w.rw2 && !w.rw1Only.Load()
	body, err := s.enc.encode(s.batch, s.batchInc, rw2)
	s.clearBatch()
	s.q.pending.Add(-n)
	if err != nil {
		// Cannot happen with valid records; do not retry for ever.
		w.m.failed.Add(float64(n))
		w.logger.Error("cannot encode batch, dropping it", zap.Int64("samples", n), zap.Error(err))
		return
	}
	b := block{seq: s.seq, samples: n, rw2: rw2}
	s.seq++
	if s.q.disk.empty() && !s.failing && s.memSamples+n <= w.capacity {
		b.body = bytes.Clone(body)
		s.mem = append(s.mem, b)
		s.memSamples += n
		s.q.updateDiskStats(s)
		return
	}
	s.spillMem()
	b.body = body
	s.writeDisk(&b)
	s.q.updateDiskStats(s)
}

// spillMem writes the blocks in memory to disk, oldest first.
func (s *sender) spillMem() {
	for i := range s.mem {
		s.writeDisk(&s.mem[i])
		s.mem[i] = block{}
	}
	s.mem = s.mem[:0]
	s.memSamples = 0
}

// writeDisk appends b to the disk queue, counting what the size limit
// drops and what cannot be written.
func (s *sender) writeDisk(b *block) {
	w := s.w
	dropped, err := s.q.disk.write(b)
	if dropped > 0 {
		w.m.droppedLimit.Add(float64(dropped))
		w.logEvery(&w.lastLimitLog, time.Minute, func() {
			w.logger.Warn("disk queue full, dropping its oldest scores; the store has been down long, or raise queue_config.max_disk_usage_bytes",
				zap.Int64("max_disk_usage_bytes", w.maxDisk), zap.Int64("samples", dropped))
		})
	}
	if err != nil {
		w.m.droppedDisk.Add(float64(b.samples))
		w.logEvery(&w.lastDiskErrLog, time.Minute, func() {
			w.logger.Error("cannot write the disk queue, dropping the block", zap.Int64("samples", b.samples), zap.Error(err))
		})
	}
}

// head returns the oldest block: in memory when there is any (then nothing
// is on disk), else the disk's.
func (s *sender) head() (block, bool, error) {
	if len(s.mem) > 0 {
		return s.mem[0], true, nil
	}
	return s.q.disk.peek(&s.readBuf)
}

// commit removes the block seq from the head of the queue; false when it
// is not there any more (dropped by max_disk_usage_bytes).
func (s *sender) commit(seq uint64) bool {
	if len(s.mem) > 0 {
		if s.mem[0].seq != seq {
			return false
		}
		s.memSamples -= s.mem[0].samples
		s.mem[0] = block{}
		s.mem = s.mem[1:]
		return true
	}
	return s.q.disk.commit(seq)
}

// toRW1 re-encodes a RW2 block as RW1, for a store that turned out to
// know only RW1 after the block was made. The result is valid until the
// next call.
func (s *sender) toRW1(body []byte) ([]byte, error) {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, fmt.Errorf("cannot decompress block: %w", err)
	}
	var req writev2.Request
	if err := req.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("cannot decode block: %w", err)
	}
	out := prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, len(req.Timeseries))}
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		var p prompb.TimeSeries
		for j := 0; j+1 < len(ts.LabelsRefs); j += 2 {
			a, b := ts.LabelsRefs[j], ts.LabelsRefs[j+1]
			if int(a) >= len(req.Symbols) || int(b) >= len(req.Symbols) {
				return nil, fmt.Errorf("cannot decode block: label reference out of range")
			}
			p.Labels = append(p.Labels, prompb.Label{Name: req.Symbols[a], Value: req.Symbols[b]})
		}
		for _, smp := range ts.Samples {
			p.Samples = append(p.Samples, prompb.Sample{Value: smp.Value, Timestamp: smp.Timestamp})
		}
		out.Timeseries = append(out.Timeseries, p)
	}
	pb, err := out.Marshal()
	if err != nil {
		return nil, fmt.Errorf("cannot encode block: %w", err)
	}
	s.conv = snappy.Encode(s.conv[:cap(s.conv)], pb)
	return s.conv, nil
}

// failed notes a failed attempt: the first failure of a healthy writer is
// logged as a state change, then a reminder every failingReminder.
func (s *sender) failed(res storeResult, attempt int, n int64, sleep time.Duration) {
	w := s.w
	fields := []zap.Field{zap.Int("attempt", attempt+1), zap.Int64("samples", n), zap.Duration("retry_in", sleep)}
	if res.err != nil {
		fields = append(fields, zap.Error(res.err))
	} else {
		fields = append(fields, zap.Int("status", res.code), zap.String("body", res.msg))
	}
	w.noteFailure(!s.failing, fields)
	s.failing = true
	w.logger.Debug("cannot send batch, retrying", fields...)
}

// recovered notes a request the store answered (taken or rejected): the
// queue is not failing any more.
func (s *sender) recovered() {
	if s.failing {
		s.failing = false
		s.w.noteRecovered()
	}
}

// noteFailure counts a failing queue (first: it was not failing) and logs
// the writer's change to failing, or a reminder while it stays failing.
func (w *RemoteWriter) noteFailure(first bool, fields []zap.Field) {
	w.health.Lock()
	defer w.health.Unlock()
	now := time.Now()
	if first {
		w.failingQueues++
		if w.failingQueues == 1 {
			w.failingSince, w.failingLogged = now, now
			w.logger.Warn("remote write failing: cannot send to the store, retrying; scores wait in the queue", w.queueFields(fields)...)
			return
		}
	}
	if now.Sub(w.failingLogged) >= failingReminder {
		w.failingLogged = now
		w.logger.Warn("remote write still failing", w.queueFields(append(fields, zap.Duration("failing_for", now.Sub(w.failingSince).Round(time.Second))))...)
	}
}

// noteRecovered counts a queue that is not failing any more and logs the
// writer's recovery when it was the last one.
func (w *RemoteWriter) noteRecovered() {
	w.health.Lock()
	defer w.health.Unlock()
	w.failingQueues--
	if w.failingQueues == 0 {
		w.logger.Info("remote write recovered: the store takes requests again",
			w.queueFields([]zap.Field{zap.Duration("failed_for", time.Since(w.failingSince).Round(time.Millisecond))})...)
	}
}

// queueFields adds the size of the queue to fields.
func (w *RemoteWriter) queueFields(fields []zap.Field) []zap.Field {
	fields = append(fields, zap.Int64("queued_samples", int64(w.queuedSamples())))
	if w.diskDir != "" {
		fields = append(fields, zap.Int64("disk_bytes", int64(w.diskBytes())))
	}
	return fields
}
