package window

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/checkpoint"
	"github.com/anomalyd/anomalyd/window/series"
)

// A checkpoint of the shards is one file per shard (window/checkpoint),
// one record per series (persist.go). A shard encodes its series in chunks
// of about chunkBytes, between batches, into one of ckptBuffers buffers
// that the checkpointing goroutine writes out and hands back: a shard
// never waits for the disk, ingestion goes on between chunks, and the
// memory a checkpoint takes is the buffers, whatever the number of series.
// A series' record is its state when its chunk was encoded; series created
// after the chunk that would have held them are not in the checkpoint.
const (
	chunkBytes  = 128 << 10
	ckptBuffers = 2
)

// ckptJob is a checkpoint in progress on one shard.
type ckptJob struct {
	free chan []byte // empty buffers: the shard encodes a chunk into each
	full chan []byte // encoded chunks, then nil once every slot is done
	next uint32      // the next slot to encode
}

func newCkptJob() *ckptJob {
	j := &ckptJob{free: make(chan []byte, ckptBuffers), full: make(chan []byte, ckptBuffers+1)}
	for range ckptBuffers {
		j.free <- make([]byte, 0, chunkBytes+8<<10)
	}
	return j
}

// encodeChunk encodes the next series of the shard into buf[:0], each
// record preceded by its length (u32), until buf holds chunkBytes or every
// slot is done; done reports the latter.
func (s *shard) encodeChunk(j *ckptJob, buf []byte) (_ []byte, done bool) {
	buf = buf[:0]
	for j.next < s.slots.n && len(buf) < chunkBytes {
		se := s.slots.at(j.next)
		j.next++
		if se.info == nil || se.flags&flagWarming != 0 {
			continue
		}
		at := len(buf)
		buf = append(buf, 0, 0, 0, 0)
		buf = s.appendSeries(buf, se)
		binary.LittleEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
	}
	return buf, j.next >= s.slots.n
}

// ckptStep is the shard goroutine's part of a checkpoint: one chunk into
// buf, handed to the checkpointing goroutine, and the end mark after the
// last. full has room for every buffer and the mark, so it never blocks.
func (s *shard) ckptStep(buf []byte) {
	j := s.job
	buf, done := s.encodeChunk(j, buf)
	j.full <- buf
	if done {
		j.full <- nil
		s.job = nil
	}
}

// CheckpointInfo describes a checkpoint of the shards.
type CheckpointInfo struct {
	Series int
	Bytes  int64
}

// Checkpoint writes a checkpoint of every shard into dir (which must
// exist), one shard after the other, stamped with now. The shards keep
// taking batches meanwhile; after Stop it reads their state directly (the
// checkpoint at shutdown). Once every shard's checkpoint is committed,
// the files of another shard count (an earlier run's) are removed. A
// shard whose checkpoint fails keeps its previous one; the error names it.
// ctx ends a checkpoint early: the shard in progress keeps its previous
// one, and the error says so. Checkpoint must not run twice at once.
func (s *Shards) Checkpoint(ctx context.Context, dir string, now time.Time) (CheckpointInfo, error) {
	var info CheckpointInfo
	var errs []error
	for i := range s.shards {
		if err := ctx.Err(); err != nil {
			return info, fmt.Errorf("checkpoint of shard %d not written: %w", i, err)
		}
		n, size, err := s.checkpointShard(ctx, i, dir, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("shard %d: %w", i, err))
			continue
		}
		info.Series += n
		info.Bytes += size
	}
	if len(errs) == 0 {
		if err := checkpoint.Prune(dir, len(s.shards)); err != nil {
			errs = append(errs, err)
		}
	}
	return info, errors.Join(errs...)
}

func (s *Shards) checkpointShard(ctx context.Context, i int, dir string, now time.Time) (series int, size int64, err error) {
	w, err := checkpoint.Create(dir, i, len(s.shards), now)
	if err != nil {
		return 0, 0, err
	}
	defer w.Abort()
	sh := s.shards[i]
	write := func(buf []byte) error {
		for len(buf) > 0 {
			n := binary.LittleEndian.Uint32(buf)
			if err := w.Append(buf[4 : 4+n]); err != nil {
				return err
			}
			buf = buf[4+n:]
			series++
		}
		return nil
	}
	j := newCkptJob()
	// direct: the shard's goroutine is not running (never started, or
	// stopped: the checkpoint at shutdown), so its state is quiescent and
	// this goroutine encodes it.
	direct := !s.started.Load() || !s.onShard(i, func() { sh.job = j })
	for !direct {
		var buf []byte
		select {
		case buf = <-j.full:
		case <-s.done[i]:
			// Stopped mid-checkpoint: take what it encoded, then the rest
			// directly.
			select {
			case buf = <-j.full:
			default:
				direct = true
				continue
			}
		case <-ctx.Done():
			s.onShard(i, func() { sh.job = nil })
			return 0, 0, fmt.Errorf("checkpoint not finished: %w", ctx.Err())
		}
		if buf == nil {
			break // the end mark
		}
		err := write(buf)
		j.free <- buf
		if err != nil {
			s.onShard(i, func() { sh.job = nil })
			return 0, 0, err
		}
	}
	if direct {
		sh.job = nil
		buf := <-j.free
		for done := j.next >= sh.slots.n; !done; {
			buf, done = sh.encodeChunk(j, buf)
			if err := write(buf); err != nil {
				return 0, 0, err
			}
		}
	}
	ci, err := w.Commit()
	if err != nil && ci.Path == "" {
		return 0, 0, err
	}
	return series, ci.Bytes, err
}

// running reports whether shard i's goroutine has not returned.
func (s *Shards) running(i int) bool {
	select {
	case <-s.done[i]:
		return false
	default:
		return true
	}
}

// RestoreInfo describes what Restore found.
type RestoreInfo struct {
	Files   int       // checkpoint files read in full
	Series  int       // series restored
	Skipped int       // series a rule now ignores, or beyond max_series
	Oldest  time.Time // creation time of the oldest file restored
	// Failed are the files that could not be restored: their series start
	// cold. Each error wraps checkpoint.ErrCorrupt, ErrTruncated,
	// ErrUnknownVersion, a *checkpoint.ShardMismatchError or an I/O error.
	Failed []error
}

// Restore loads the newest checkpoint in dir into the shards; call it
// before Start. The checkpoint may come from another shard count (an
// earlier run with other window.shards or GOMAXPROCS): each series goes to
// the shard its hash picks now. A file is restored whole or not at all:
// after an error in it, the series it gave are removed again and start
// cold. Series a rule now ignores are left out; a series whose rule's
// detector settings changed keeps its identity and last sample, its
// detectors start over. Every restored series is idle since now for the
// TTL, and joins its incident group. An empty or missing dir restores
// nothing.
func (s *Shards) Restore(dir string, now time.Time) RestoreInfo {
	var info RestoreInfo
	shards, ok, err := checkpoint.LatestSet(dir)
	if err != nil {
		info.Failed = append(info.Failed, err)
		return info
	}
	if !ok {
		return info
	}
	nowMs := now.UnixMilli()
	for i := range shards {
		path, ok, err := checkpoint.Latest(dir, i, shards)
		if err != nil {
			info.Failed = append(info.Failed, err)
			continue
		}
		if !ok {
			continue // that shard never checkpointed: nothing to lose
		}
		n, skipped, created, err := s.restoreFile(path, nowMs)
		if err != nil {
			info.Failed = append(info.Failed, err)
			continue
		}
		info.Files++
		info.Series += n
		info.Skipped += skipped
		if info.Oldest.IsZero() || created.Before(info.Oldest) {
			info.Oldest = created
		}
	}
	return info
}

// restoredSlot is a series restoreFile created, to join its group once the
// whole file is read, or to be forgotten if the file fails.
type restoredSlot struct {
	sh   *shard
	slot uint32
}

func (s *Shards) restoreFile(path string, nowMs int64) (n, skipped int, created time.Time, err error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	defer r.Close()
	var slots []restoredSlot
	for {
		rec, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			for _, rs := range slots {
				rs.sh.forget(rs.slot)
			}
			return 0, 0, time.Time{}, err
		}
		sv, err := parseSeries(rec)
		if err == nil {
			sh := s.shards[series.Hash([]byte(sv.labels))%uint64(len(s.shards))]
			var slot uint32
			var res restoreResult
			slot, res, err = sh.restoreSeries(&sv, nowMs)
			switch res {
			case restoreCreated:
				slots = append(slots, restoredSlot{sh, slot})
				n++
			case restoreSkipped:
				skipped++
			}
		}
		if err != nil {
			for _, rs := range slots {
				rs.sh.forget(rs.slot)
			}
			return 0, 0, time.Time{}, fmt.Errorf("checkpoint %s: %w: %w", path, checkpoint.ErrCorrupt, err)
		}
	}
	for _, rs := range slots {
		rs.sh.rejoin(rs.slot, nowMs)
	}
	return n, skipped, r.Created(), nil
}

type restoreResult uint8

const (
	restoreSkipped  restoreResult = iota // a rule ignores it, or max_series is reached
	restoreCreated                       // a new series
	restoreReplaced                      // a series the same file held before: the later record wins
)

// restoreSeries adds the series of sv to the shard, which is not running,
// without joining its incident group (rejoin). A series the shard already
// has (a checkpoint holds a series twice when it was evicted and came
// back while its shard was being encoded) takes the later state.
func (s *shard) restoreSeries(sv *savedSeries, nowMs int64) (uint32, restoreResult, error) {
	key := []byte(sv.labels)
	hash := series.Hash(key)
	ri := s.rules.match(sv.labels)
	r := &s.rules.rules[ri]
	if r.ignore {
		return 0, restoreSkipped, nil
	}
	slot, ok := s.lookup(hash, key)
	res := restoreReplaced
	if !ok {
		if s.set.active.Load() >= int64(s.set.opts.MaxSeries) {
			return 0, restoreSkipped, nil
		}
		res = restoreCreated
		slot = s.place(&series.Info{Labels: sv.labels, Name: sv.labels[sv.nameStart:sv.ne], Hash: hash}, ri)
	}
	se := s.slots.at(slot)
	se.rule = uint16(ri)
	se.flags, se.trial = sv.flags, sv.trial
	se.lastT, se.lastV = sv.lastT, sv.lastV
	se.seen = nowMs
	se.last = sv.last
	se.dropCount(&s.counts)
	if sv.hasCount {
		se.count = s.counts.get()
		*se.count = sv.count
	}
	se.per = nil
	if s.set.opts.PerDetector {
		se.per = new([detectors.NumKinds]lastOut)
		if sv.hasPer {
			*se.per = sv.per
		}
	}
	if se.asleep {
		s.local.woken++
	}
	se.runN, se.runV, se.runT0, se.asleep = sv.runN, sv.runV, sv.runT0, false
	switch {
	case sv.params == r.paramsKey && sv.asleep:
		se.det = nil
		se.asleep = true
		s.local.slept++
	case sv.params == r.paramsKey:
		rest, err := se.detSet().RestoreState(r.params, sv.det)
		if err == nil && len(rest) > 0 {
			err = fmt.Errorf("%d bytes after the detector state", len(rest))
		}
		if err != nil {
			if res == restoreCreated {
				s.forget(slot)
			}
			return 0, restoreSkipped, fmt.Errorf("series %s: %w", series.Format(sv.labels), err)
		}
	default:
		// Saved under other detector settings: as on a reload that changes
		// them, the detectors start over and a rate starts from the next
		// sample.
		se.restart(r.params, &s.local)
		se.flags &^= flagPrimed
	}
	return slot, res, nil
}

// forget removes a series restoreSeries created, before it joined a group:
// no stale markers (it emitted nothing in this process), nothing counted.
func (s *shard) forget(i uint32) { s.unlink(i) }

// rejoin puts a restored series into its incident group.
func (s *shard) rejoin(i uint32, nowMs int64) {
	if s.set.opts.Incidents == nil {
		return
	}
	se := s.slots.at(i)
	s.groupBuf = s.rules.rules[se.rule].groupKey(se.info.Labels, s.groupBuf)
	se.group = s.joinGroup(s.groupBuf, nowMs, true)
}
