package checkpoint

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/anomalyd/anomalyd/sink/wire"
)

// readBufferSize is the Reader's buffer, for the reason of writeBufferSize
// and smaller: a restore reads each file once.
const readBufferSize = 64 << 10

// Reader reads the records of one checkpoint in order. A Reader is used by
// one goroutine at a time. See the package doc for what to do on an error.
type Reader struct {
	path           string
	file           *os.File // nil when reading from memory (tests)
	src            *countingReader
	br             *bufio.Reader
	fr             *wire.FrameReader
	size           int64 // of the file, from its Stat at Open
	created        time.Time
	records, bytes uint64 // read so far, for the trailer
	err            error  // the first error, or io.EOF after the trailer
}

// countingReader counts the bytes read from the file, so that the Reader
// knows its offset (bytes read minus bytes still buffered).
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// errPastEnd is the error of a frame longer than the rest of the file, found
// before its buffer is grown.
var errPastEnd = errors.New("longer than the rest of the file")

// Open opens the checkpoint at path, which must have a checkpoint's name
// (Latest returns one), and validates its header: the header's shard must
// be the one its name says, else the error is a *ShardMismatchError. The
// records are validated as Next reads them; see the package doc.
func Open(path string) (*Reader, error) {
	shard, shards, _, ok := parseName(filepath.Base(path))
	if !ok {
		return nil, fmt.Errorf("cannot open checkpoint %s: not a checkpoint's name (shard-SSS-of-NNN.QQQQQQQQQQ.ckpt)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open checkpoint: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot open checkpoint: %w", err)
	}
	r, h, err := newReader(f, fi.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.file = f
	if int(h.shard) != shard || int(h.shards) != shards {
		f.Close()
		return nil, &ShardMismatchError{Path: path, Shard: int(h.shard), Shards: int(h.shards), WantShard: shard, WantShards: shards}
	}
	return r, nil
}

// newReader reads the header of a checkpoint of size bytes from src.
func newReader(src io.Reader, size int64, path string) (*Reader, header, error) {
	r := &Reader{path: path, src: &countingReader{r: src}, size: size}
	r.br = bufio.NewReaderSize(r.src, readBufferSize)
	var b [headerSize]byte
	n, err := io.ReadFull(r.br, b[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, header{}, r.wrap(fmt.Errorf("%w: cannot read header: %w", ErrCorrupt, err))
	}
	h, err := parseHeader(b[:n])
	if err != nil {
		return nil, header{}, r.wrap(err)
	}
	r.created = time.UnixMilli(h.createdMs)
	// The limit refuses a corrupt length over the largest frame a Writer
	// writes; reserve one longer than the rest of the file. The frame's
	// buffer is grown only after both.
	r.fr = wire.NewFrameReader(r.br, 1+MaxRecordSize, r.reserve)
	return r, h, nil
}

func (r *Reader) wrap(err error) error {
	return fmt.Errorf("cannot read checkpoint %s: %w", r.path, err)
}

// offset is the offset in the file of the next byte to read.
func (r *Reader) offset() int64 { return r.src.n - int64(r.br.Buffered()) }

// reserve refuses a frame of size bytes that the file cannot hold. It is
// called between the frame's length and its 4-byte checksum.
func (r *Reader) reserve(size uint64) error {
	if left := r.size - r.offset() - 4; left < 0 || size > uint64(left) {
		return fmt.Errorf("%w (%d bytes)", errPastEnd, max(left, 0))
	}
	return nil
}

// Created returns the time the checkpoint was created, from its header.
func (r *Reader) Created() time.Time { return r.created }

// Next returns the next record, valid until the next call. After the last
// record it returns io.EOF, once the trailer has shown the checkpoint
// complete. Any other error means the checkpoint cannot be restored (see the
// package doc); it is wrapped with the path and is ErrCorrupt or
// ErrTruncated. Once Next has returned an error, it returns it again.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	at := r.offset()
	data, err := r.fr.Next()
	switch {
	case err == io.EOF:
		return nil, r.fail(fmt.Errorf("%w: the file ends at byte %d, after %d records, without a trailer", ErrTruncated, at, r.records))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errPastEnd):
		return nil, r.fail(fmt.Errorf("%w: frame at byte %d: %w", ErrTruncated, at, err))
	case err != nil:
		// Everything else is in the bytes (a checksum mismatch, a length
		// over the limit, an overlong varint) or the disk failed.
		return nil, r.fail(fmt.Errorf("%w: frame at byte %d: %w", ErrCorrupt, at, err))
	case len(data) == 0:
		return nil, r.fail(fmt.Errorf("%w: empty frame at byte %d", ErrCorrupt, at))
	case r.offset()-at != int64(frameSize(len(data))):
		// A length in more bytes than needed (0x80 0x00 is 0 to
		// binary.ReadUvarint). Refused so that the files read are exactly
		// those a Writer writes.
		return nil, r.fail(fmt.Errorf("%w: frame at byte %d has an overlong length", ErrCorrupt, at))
	}
	switch data[0] {
	case kindRecord:
		r.records++
		r.bytes += uint64(len(data) - 1)
		return data[1:], nil
	case kindTrailer:
		if len(data) != trailerSize {
			return nil, r.fail(fmt.Errorf("%w: trailer at byte %d is %d bytes, want %d", ErrCorrupt, at, len(data), trailerSize))
		}
		records, bytes := binary.BigEndian.Uint64(data[1:]), binary.BigEndian.Uint64(data[9:])
		if records != r.records || bytes != r.bytes {
			return nil, r.fail(fmt.Errorf("%w: the trailer counts %d records of %d bytes, the file holds %d of %d",
				ErrTruncated, records, bytes, r.records, r.bytes))
		}
		if end := r.offset(); end != r.size {
			return nil, r.fail(fmt.Errorf("%w: %d bytes after the trailer", ErrCorrupt, r.size-end))
		}
		r.err = io.EOF
		return nil, io.EOF
	default:
		return nil, r.fail(fmt.Errorf("%w: frame at byte %d is of unknown kind %#02x", ErrCorrupt, at, data[0]))
	}
}

func (r *Reader) fail(err error) error {
	r.err = r.wrap(err)
	return r.err
}

// Close closes the file.
func (r *Reader) Close() error {
	if r.file == nil {
		return nil
	}
	f := r.file
	r.file = nil
	return f.Close()
}
