package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestFrameGolden pins the format to the spec rather than to the reader:
// CRC-32C of "123456789" is e3069283 (the check value of the Castagnoli
// polynomial), written big-endian after the uvarint length.
func TestFrameGolden(t *testing.T) {
	got := AppendFrame(nil, []byte("123456789"))
	want := []byte("\x09\xe3\x06\x92\x83123456789")
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x, want % x", got, want)
	}
	// A length of 300 takes a two-byte uvarint.
	got = AppendFrame(nil, make([]byte, 300))
	if !bytes.Equal(got[:2], []byte{0xac, 0x02}) || len(got) != 2+4+300 {
		t.Fatalf("frame of 300 bytes starts % x, is %d bytes", got[:6], len(got))
	}
}

// TestFrameRoundTrip: what FrameWriter writes, FrameReader reads back,
// frame by frame, then io.EOF; AppendFrame writes the same bytes.
func TestFrameRoundTrip(t *testing.T) {
	var frames [][]byte
	for _, n := range []int{0, 1, 127, 128, 300, 16383, 16384, 70000, 1 << 20} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		frames = append(frames, data)
	}
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 4096) // smaller than some frames
	fw := NewFrameWriter(bw)
	var appended []byte
	for _, f := range frames {
		if err := fw.WriteFrame(f); err != nil {
			t.Fatal(err)
		}
		appended = AppendFrame(appended, f)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), appended) {
		t.Fatal("FrameWriter and AppendFrame disagree")
	}

	var reserved []uint64
	fr := NewFrameReader(bufio.NewReader(&buf), 1<<20, func(size uint64) error {
		reserved = append(reserved, size)
		return nil
	})
	for i, want := range frames {
		got, err := fr.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %d bytes differ from the %d written", i, len(got), len(want))
		}
		if reserved[i] != uint64(len(want)) {
			t.Fatalf("frame %d: reserved %d bytes, want %d", i, reserved[i], len(want))
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestFrameReaderErrors(t *testing.T) {
	frame := AppendFrame(nil, []byte("some frame data"))
	errReserve := errors.New("over budget")
	f := func(name string, stream []byte, limit uint64, reserve func(uint64) error, check func(err error) bool, want string) {
		t.Helper()
		fr := NewFrameReader(bufio.NewReader(bytes.NewReader(stream)), limit, reserve)
		_, err := fr.Next()
		if err == nil || !check(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, want)
		}
	}
	is := func(target error) func(error) bool { return func(err error) bool { return errors.Is(err, target) } }
	anyErr := func(error) bool { return true }
	corrupt := bytes.Clone(frame)
	corrupt[len(corrupt)-1] ^= 1

	f("empty stream", nil, 100, nil, is(io.EOF), "EOF")
	f("cut in the length", []byte{0x80}, 100, nil, is(io.ErrUnexpectedEOF), "cannot read frame length")
	f("cut in the checksum", frame[:3], 100, nil, is(io.ErrUnexpectedEOF), "cannot read frame checksum")
	f("cut in the data", frame[:len(frame)-1], 100, nil, is(io.ErrUnexpectedEOF), "cannot read frame of 15 bytes")
	f("corrupted data", corrupt, 100, nil, anyErr, "corrupted frame of 15 bytes: CRC32")
	f("over the limit", frame, 14, nil, func(err error) bool {
		var fe *FrameSizeError
		return errors.As(err, &fe) && fe.Size == 15 && fe.Limit == 14
	}, "frame of 15 bytes exceeds the limit of 14 bytes")
	f("reserve refuses", frame, 100, func(uint64) error { return errReserve }, is(errReserve), "frame of 15 bytes: over budget")
}

// TestFrameReaderReservesFirst: a frame is charged before its buffer is
// grown, so a refused reservation allocates nothing for a huge frame.
func TestFrameReaderReservesFirst(t *testing.T) {
	stream := AppendFrame(nil, make([]byte, 1<<20))
	fr := NewFrameReader(bufio.NewReader(bytes.NewReader(stream)), 1<<30, func(uint64) error { return errors.New("no") })
	if _, err := fr.Next(); err == nil {
		t.Fatal("no error")
	}
	if cap(fr.buf) != 0 {
		t.Fatalf("buffer of %d bytes grown before the reservation", cap(fr.buf))
	}
}

// TestFrameNoAllocs: once the reader's buffer has grown, neither side
// allocates per frame.
func TestFrameNoAllocs(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 1000)
	fw := NewFrameWriter(bufio.NewWriterSize(io.Discard, 64<<10))
	if n := testing.AllocsPerRun(100, func() { fw.WriteFrame(data) }); n != 0 {
		t.Errorf("%v allocations per WriteFrame, want 0", n)
	}

	stream := AppendFrame(nil, data)
	src := bytes.NewReader(stream)
	br := bufio.NewReader(src)
	fr := NewFrameReader(br, 1<<20, nil)
	read := func() {
		src.Reset(stream)
		br.Reset(src)
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if n := testing.AllocsPerRun(100, read); n != 0 {
		t.Errorf("%v allocations per Next, want 0", n)
	}
}
