package wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// A STREAMED_XOR_CHUNKS response is a sequence of frames, each
//
//	uvarint(len(data)) ‖ big-endian CRC-32C(data) ‖ data
//
// where data is one marshalled ChunkedReadResponse (Prometheus's
// storage/remote/chunked.go, ChunkedWriter and ChunkedReader). The stream
// ends between two frames; the checksum is CRC-32 with the Castagnoli
// polynomial.

// maxFrameHeader is the longest frame header: a 64-bit uvarint and the CRC.
const maxFrameHeader = binary.MaxVarintLen64 + 4

// castagnoli is the CRC-32 table of frames. Built at init, as Prometheus
// does, so that no first request races to build it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendFrame appends data as one frame to dst and returns the extended
// slice.
func AppendFrame(dst, data []byte) []byte {
	return append(appendFrameHeader(dst, data), data...)
}

func appendFrameHeader(dst, data []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(data)))
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(data, castagnoli))
}

// FrameWriter writes frames to a bufio.Writer. It allocates nothing per
// frame. A FrameWriter is used by one goroutine at a time.
type FrameWriter struct {
	w *bufio.Writer
	// hdr holds the header being written: a field, not a local, because the
	// slice passed to bufio.Writer.Write escapes (it may reach the
	// underlying io.Writer) and a local would be allocated per frame.
	hdr [maxFrameHeader]byte
}

// NewFrameWriter returns a FrameWriter that writes to w. Flushing w is the
// caller's business.
func NewFrameWriter(w *bufio.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes data as one frame. data is not kept.
func (f *FrameWriter) WriteFrame(data []byte) error {
	if _, err := f.w.Write(appendFrameHeader(f.hdr[:0], data)); err != nil {
		return err
	}
	_, err := f.w.Write(data)
	return err
}

// FrameSizeError is the error of a frame longer than the reader's limit. The
// same response would carry the same frame: retrying cannot help.
type FrameSizeError struct {
	Size, Limit uint64
}

func (e *FrameSizeError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d bytes", e.Size, e.Limit)
}

// FrameReader reads frames from a bufio.Reader. It reuses one buffer for
// every frame, grown to the largest frame read. A FrameReader is used by one
// goroutine at a time.
type FrameReader struct {
	r       *bufio.Reader
	buf     []byte
	sum     [4]byte // a field for the reason FrameWriter.hdr is one
	limit   uint64
	reserve func(size uint64) error
}

// NewFrameReader returns a FrameReader of r that refuses frames longer than
// limit bytes with a *FrameSizeError. reserve, if not nil, is called with
// each frame's length before the frame's buffer is grown and its data read,
// so that a caller can charge the memory to a budget first; its error ends
// the read.
func NewFrameReader(r *bufio.Reader, limit uint64, reserve func(size uint64) error) *FrameReader {
	return &FrameReader{r: r, limit: limit, reserve: reserve}
}

// Next returns the next frame's data, valid until the next call, or io.EOF
// when the stream ends between two frames. A stream that ends inside a frame
// is io.ErrUnexpectedEOF: Prometheus aborts the connection on a mid-stream
// error, so a short frame is a failure, not the end. A frame whose checksum
// does not match its data is an error.
func (f *FrameReader) Next() ([]byte, error) {
	size, err := binary.ReadUvarint(f.r)
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read frame length: %w", err)
	}
	if size > f.limit {
		return nil, &FrameSizeError{Size: size, Limit: f.limit}
	}
	if f.reserve != nil {
		if err := f.reserve(size); err != nil {
			return nil, fmt.Errorf("frame of %d bytes: %w", size, err)
		}
	}
	if _, err := io.ReadFull(f.r, f.sum[:]); err != nil {
		return nil, fmt.Errorf("cannot read frame checksum: %w", unexpectedEOF(err))
	}
	if uint64(cap(f.buf)) < size {
		f.buf = make([]byte, size)
	}
	f.buf = f.buf[:size]
	if _, err := io.ReadFull(f.r, f.buf); err != nil {
		return nil, fmt.Errorf("cannot read frame of %d bytes: %w", size, unexpectedEOF(err))
	}
	if got, want := crc32.Checksum(f.buf, castagnoli), binary.BigEndian.Uint32(f.sum[:]); got != want {
		return nil, fmt.Errorf("corrupted frame of %d bytes: CRC32 %08x, header says %08x", size, got, want)
	}
	return f.buf, nil
}

// unexpectedEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
