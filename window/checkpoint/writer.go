package checkpoint

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anomalyd/anomalyd/sink/wire"
)

// writeBufferSize is the Writer's buffer: a write(2) per 256 KiB keeps the
// system-call cost per record small next to the copy, and 16 shards
// checkpointing at once hold 4 MiB.
const writeBufferSize = 256 << 10

// Writer writes one checkpoint of one shard to a temporary file, which
// Commit turns into the shard's checkpoint. A Writer is used by one
// goroutine at a time, and there is one Writer per shard at a time (see the
// package doc). After an error, call Abort.
type Writer struct {
	dir, tmp      string
	shard, shards int
	f             *os.File // nil once committed or aborted
	bw            *bufio.Writer
	fw            *wire.FrameWriter
	// frame holds the frame's data: the kind byte and a copy of the record,
	// because a frame's checksum covers both and FrameWriter takes one slice.
	// It grows to the largest record.
	frame          []byte
	records, bytes uint64 // for the trailer
	size           int64  // bytes written, header included
	start          time.Time
}

// Info describes a committed checkpoint.
type Info struct {
	Path     string
	Records  int
	Bytes    int64         // the file's size
	Duration time.Duration // from Create to the end of Commit
}

// Create starts a checkpoint of shard shard of shards in dir, stamped with
// now. dir must exist: the caller owns --storage.path, and creating and
// checking it at start makes a wrong path fail then rather than at the first
// checkpoint.
func Create(dir string, shard, shards int, now time.Time) (*Writer, error) {
	if shards < 1 || int64(shards) > math.MaxUint32 || shard < 0 || shard >= shards {
		return nil, fmt.Errorf("cannot create checkpoint: there is no shard %d of %d", shard, shards)
	}
	f, err := os.CreateTemp(dir, fmt.Sprintf("%s%03d.*%s", shardPrefix(shard), shards, tmpSuffix))
	if err != nil {
		return nil, fmt.Errorf("cannot create checkpoint: %w", err)
	}
	w := &Writer{
		dir: dir, tmp: f.Name(), shard: shard, shards: shards,
		f: f, bw: bufio.NewWriterSize(f, writeBufferSize),
		size: int64(headerSize), start: time.Now(),
	}
	w.fw = wire.NewFrameWriter(w.bw)
	// The buffer takes the header: no write(2) yet, no error to handle.
	w.bw.Write(appendHeader(make([]byte, 0, headerSize), header{
		shard: uint32(shard), shards: uint32(shards), createdMs: now.UnixMilli(),
	}))
	return w, nil
}

// Append adds a record to the checkpoint. record is not kept. It is at most
// MaxRecordSize bytes.
func (w *Writer) Append(record []byte) error {
	if w.f == nil {
		return fmt.Errorf("cannot append to checkpoint %s: already committed or aborted", w.tmp)
	}
	if len(record) > MaxRecordSize {
		return fmt.Errorf("cannot append to checkpoint %s: record of %d bytes exceeds the limit of %d bytes", w.tmp, len(record), MaxRecordSize)
	}
	w.frame = append(append(w.frame[:0], kindRecord), record...)
	if err := w.writeFrame(w.frame); err != nil {
		return err
	}
	w.records++
	w.bytes += uint64(len(record))
	return nil
}

func (w *Writer) writeFrame(data []byte) error {
	if err := w.fw.WriteFrame(data); err != nil {
		return fmt.Errorf("cannot write checkpoint %s: %w", w.tmp, err)
	}
	w.size += int64(frameSize(len(data)))
	return nil
}

// frameSize is the length of a frame of n bytes of data.
func frameSize(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n)) + 4 + n
}

// Commit finishes the checkpoint: trailer, flush, fsync, close, rename to
// the next sequence number, fsync of dir, then removal of the shard's older
// checkpoints and stale temporary files (see Durability in the package doc).
//
// Info.Path is set once the file has its final name: if the error is not
// nil then, the checkpoint is complete but its rename may not survive a
// crash (the directory fsync failed, and nothing was removed), or some older
// file could not be removed. With Info.Path empty, nothing changed but the
// temporary file being removed.
func (w *Writer) Commit() (Info, error) {
	if w.f == nil {
		return Info{}, fmt.Errorf("cannot commit checkpoint %s: already committed or aborted", w.tmp)
	}
	f := w.f
	w.f = nil
	var trailer [trailerSize]byte
	trailer[0] = kindTrailer
	binary.BigEndian.PutUint64(trailer[1:], w.records)
	binary.BigEndian.PutUint64(trailer[9:], w.bytes)
	err := w.writeFrame(trailer[:])
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var path string
	var old []string
	if err == nil {
		// The next sequence number, and what it replaces, from one listing.
		var seq uint64
		seq, old, err = w.scan()
		path = filepath.Join(w.dir, fileName(w.shard, w.shards, seq))
	}
	if err == nil {
		err = os.Rename(w.tmp, path)
	}
	if err != nil {
		os.Remove(w.tmp)
		return Info{}, fmt.Errorf("cannot commit checkpoint %s: %w", w.tmp, err)
	}
	info := Info{Path: path, Records: int(w.records), Bytes: w.size}
	if err := syncDir(w.dir); err != nil {
		info.Duration = time.Since(w.start)
		return info, fmt.Errorf("checkpoint %s written, but its rename may not survive a crash: %w", path, err)
	}
	var errs []error
	for _, name := range old {
		if err := os.Remove(filepath.Join(w.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	info.Duration = time.Since(w.start)
	if err := errors.Join(errs...); err != nil {
		return info, fmt.Errorf("checkpoint %s committed, but cannot remove older files: %w", path, err)
	}
	return info, nil
}

// scan lists dir for the shard's files: the sequence number of the next
// checkpoint, one above the highest of the shard index whatever its shard
// count, and the names to remove once it is committed: the older
// checkpoints and the temporary files other than w's, left by a crash.
func (w *Writer) scan() (seq uint64, old []string, err error) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return 0, nil, err
	}
	prefix, own := shardPrefix(w.shard), filepath.Base(w.tmp)
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !e.Type().IsRegular() {
			continue
		}
		if s, _, q, ok := parseName(name); ok && s == w.shard {
			seq = max(seq, q)
			old = append(old, name)
		} else if strings.HasSuffix(name, tmpSuffix) && name != own {
			old = append(old, name)
		}
	}
	if seq == math.MaxUint64 {
		return 0, nil, errors.New("sequence numbers exhausted")
	}
	return seq + 1, old, nil
}

// syncDir fsyncs a directory, making the renames in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Abort abandons the checkpoint and removes its temporary file. It is a
// no-op after Commit or Abort, so it may be deferred.
func (w *Writer) Abort() error {
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	f.Close()
	if err := os.Remove(w.tmp); err != nil {
		return fmt.Errorf("cannot remove unfinished checkpoint: %w", err)
	}
	return nil
}
