package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Errors of a checkpoint that cannot be restored, wrapped with the file's
// path and what was wrong where. Each one means: start the shard cold.
var (
	// ErrCorrupt: the bytes are not a checkpoint, or were damaged (a
	// checksum mismatch, an impossible field), or could not be read.
	ErrCorrupt = errors.New("corrupt")
	// ErrTruncated: the file ends before its trailer, or holds fewer
	// records than its trailer counts.
	ErrTruncated = errors.New("truncated")
	// ErrUnknownVersion: the header names a format version this build does
	// not read (written by a newer anomalyd, or a damaged version field:
	// the version is read before the header's checksum, whose extent a
	// future version may change).
	ErrUnknownVersion = errors.New("unknown format version")
)

// ShardMismatchError is the error of a checkpoint written for another shard
// than the one asked for. Latest returns it when the newest checkpoint of a
// shard index was written with another shard count (the series of shard i
// of 8 are not those of shard i of 16: start cold), Open when a file's
// header disagrees with its name.
type ShardMismatchError struct {
	Path                  string
	Shard, Shards         int // of the checkpoint
	WantShard, WantShards int // asked for
}

func (e *ShardMismatchError) Error() string {
	return fmt.Sprintf("checkpoint %s holds shard %d of %d, want shard %d of %d", e.Path, e.Shard, e.Shards, e.WantShard, e.WantShards)
}

const (
	magic = "ANOMALYD-CKPT\n"
	// version is the format written, and the only one read. A change of
	// the header, the frames or the trailer takes a new version.
	version = 1
	// headerSize: magic, version, shard, shard count, creation time, CRC.
	headerSize = len(magic) + 2 + 4 + 4 + 8 + 4

	// Kinds: the first byte of every frame's data. Neither is 0, so that
	// zero-filled bytes (an empty frame with a valid CRC) are no frame.
	kindRecord  = 0x01
	kindTrailer = 0x02
	// trailerSize: kind, record count, record bytes.
	trailerSize = 1 + 8 + 8

	// MaxRecordSize is the longest record, in bytes. Append refuses longer
	// ones, so that a Reader can refuse a longer frame as corrupt before
	// allocating for it. 64 MiB is far above one series' state (a week of
	// 15 s samples is 320 KiB of float64) and far below what a damaged
	// length may claim.
	MaxRecordSize = 64 << 20
)

// castagnoli is the table of the header's CRC-32C, the frames' checksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the fixed start of a checkpoint.
type header struct {
	shard, shards uint32
	createdMs     int64
}

func appendHeader(dst []byte, h header) []byte {
	start := len(dst)
	dst = append(dst, magic...)
	dst = binary.BigEndian.AppendUint16(dst, version)
	dst = binary.BigEndian.AppendUint32(dst, h.shard)
	dst = binary.BigEndian.AppendUint32(dst, h.shards)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.createdMs))
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// parseHeader parses the first n bytes of a file, n ≤ headerSize. Its
// errors carry no path.
func parseHeader(b []byte) (header, error) {
	m := min(len(b), len(magic))
	if string(b[:m]) != magic[:m] {
		return header{}, fmt.Errorf("%w: not a checkpoint: starts with %q", ErrCorrupt, b[:m])
	}
	if len(b) < headerSize {
		return header{}, fmt.Errorf("%w: header of %d bytes, want %d", ErrTruncated, len(b), headerSize)
	}
	if v := binary.BigEndian.Uint16(b[len(magic):]); v != version {
		return header{}, fmt.Errorf("%w: version %d, this build reads %d", ErrUnknownVersion, v, version)
	}
	body, sum := b[:headerSize-4], binary.BigEndian.Uint32(b[headerSize-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return header{}, fmt.Errorf("%w: header CRC32 %08x, header says %08x", ErrCorrupt, got, sum)
	}
	h := header{
		shard:     binary.BigEndian.Uint32(b[len(magic)+2:]),
		shards:    binary.BigEndian.Uint32(b[len(magic)+6:]),
		createdMs: int64(binary.BigEndian.Uint64(b[len(magic)+10:])),
	}
	if h.shard >= h.shards {
		return header{}, fmt.Errorf("%w: header names shard %d of %d", ErrCorrupt, h.shard, h.shards)
	}
	return h, nil
}

// fileName is the name of a committed checkpoint. The widths only make
// listings line up; parseName compares numbers, not strings.
func fileName(shard, shards int, seq uint64) string {
	return fmt.Sprintf("shard-%03d-of-%03d.%010d.ckpt", shard, shards, seq)
}

// shardPrefix starts the name of every file of shard index shard, committed
// or not, whatever its shard count.
func shardPrefix(shard int) string { return fmt.Sprintf("shard-%03d-of-", shard) }

// tmpSuffix ends the name of every unfinished checkpoint; parseName never
// accepts it.
const tmpSuffix = ".tmp"

// parseName parses the name of a committed checkpoint. Only the exact
// output of fileName is one: anything else in the directory is not ours.
func parseName(name string) (shard, shards int, seq uint64, ok bool) {
	rest, ok1 := strings.CutPrefix(name, "shard-")
	rest, ok2 := strings.CutSuffix(rest, ".ckpt")
	s, rest, ok3 := strings.Cut(rest, "-of-")
	n, q, ok4 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return 0, 0, 0, false
	}
	s64, err1 := strconv.ParseUint(s, 10, 32)
	n64, err2 := strconv.ParseUint(n, 10, 32)
	seq, err3 := strconv.ParseUint(q, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || s64 >= n64 {
		return 0, 0, 0, false
	}
	shard, shards = int(s64), int(n64)
	return shard, shards, seq, fileName(shard, shards, seq) == name
}

// Latest returns the path of the newest checkpoint of shard index shard in
// dir: ok is false, with a nil error, if there is none (a first start). If
// the newest was written with another shard count than shards, the error is
// a *ShardMismatchError: the shard starts cold. Latest looks at names only;
// Open validates the contents.
func Latest(dir string, shard, shards int) (path string, ok bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("cannot list checkpoints: %w", err)
	}
	var (
		best       string
		bestSeq    uint64
		bestShards int
	)
	for _, e := range entries {
		s, n, seq, ok := parseName(e.Name())
		if !ok || s != shard || !e.Type().IsRegular() {
			continue
		}
		// On a tie (only a copied file can make one), this shard count's
		// file wins.
		if best == "" || seq > bestSeq || seq == bestSeq && n == shards {
			best, bestSeq, bestShards = e.Name(), seq, n
		}
	}
	if best == "" {
		return "", false, nil
	}
	path = filepath.Join(dir, best)
	if bestShards != shards {
		return "", false, &ShardMismatchError{Path: path, Shard: shard, Shards: bestShards, WantShard: shard, WantShards: shards}
	}
	return path, true, nil
}

// LatestSet returns the shard count of the newest checkpoints in dir: that
// of the committed checkpoint with the highest sequence number. Every
// round of checkpoints raises each shard's number by one, and a checkpoint
// written after a change of the shard count numbers itself above every
// file of its shard index, so the newest round's files carry the highest
// numbers. ok is false, with a nil error, if dir holds none.
func LatestSet(dir string) (shards int, ok bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cannot list checkpoints: %w", err)
	}
	var best uint64
	for _, e := range entries {
		_, n, seq, ok := parseName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if shards == 0 || seq > best {
			shards, best = n, seq
		}
	}
	return shards, shards > 0, nil
}

// Prune removes from dir the checkpoints, committed or not, of a shard
// count other than shards: once every shard has committed one under the
// current count, an earlier run's files of shard indexes beyond it would
// otherwise stay for ever.
func Prune(dir string, shards int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("cannot list checkpoints: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		_, n, _, ok := parseName(name)
		if !ok {
			// An unfinished one: shard-SSS-of-NNN.<random>.tmp.
			rest, ok1 := strings.CutPrefix(name, "shard-")
			_, rest, ok2 := strings.Cut(rest, "-of-")
			count, _, ok3 := strings.Cut(rest, ".")
			c, err := strconv.ParseUint(count, 10, 32)
			if !ok1 || !ok2 || !ok3 || err != nil || !strings.HasSuffix(name, tmpSuffix) {
				continue
			}
			n = int(c)
		}
		if n == shards || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cannot remove checkpoints of another shard count: %w", err)
	}
	return nil
}
