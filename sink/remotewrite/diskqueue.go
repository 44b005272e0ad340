package remotewrite

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// block is one encoded remote-write request: a snappy-compressed RW1 or RW2
// protobuf of samples output samples. seq numbers the blocks of one send
// queue in the order they were made; it survives restarts, so that a sender
// can tell whether the block it sent is still the head of its queue.
type block struct {
	seq     uint64
	samples int64
	rw2     bool
	body    []byte
}

// The segment file format. A segment starts with segMagic; then frames, each
//
//	u32 payload length ‖ u32 samples ‖ u64 seq ‖ u8 flags ‖ 3 bytes zero ‖
//	u32 CRC32-Castagnoli of the 20 header bytes before it and of the payload ‖
//	payload
//
// little-endian. A frame is written with one write(2): a crash leaves at
// most the last frame of the last segment incomplete, which the checksum
// finds at the next open.
const (
	segMagic     = "ADQSEG1\n"
	frameHeader  = 24
	flagRW2      = 1
	segSuffix    = ".seg"
	headFile     = "head"
	maxFrameBody = 256 << 20 // far above any block (2000 samples ≈ 25 KiB); a larger length is garbage
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segment is one file of a disk queue. blocks and samples count the frames
// not yet sent (after the read offset when it is the head segment).
type segment struct {
	index   uint64
	size    int64
	blocks  int64
	samples int64
}

// diskQueue is the on-disk part of one send queue: append-only segment
// files in dir, read from the oldest. It belongs to the queue's sender
// goroutine; only the gauges may be read by others (they are atomics in the
// writer's metrics, updated through the stats callback).
//
// The head file records the segment and offset of the first unsent frame.
// It is rewritten (by rename) at most every headSyncBlocks commits and at
// close, so a crash can send again up to that many blocks; a store takes an
// exact duplicate (same series, timestamp and value) silently.
type diskQueue struct {
	dir      string
	maxBytes int64 // bound on the size of the segment files
	segBytes int64 // a new segment starts past this size

	segs  []segment // oldest first; segs[len-1] is written
	rf    *os.File  // segs[0], for reading
	rOff  int64     // offset in segs[0] of the first unsent frame
	wf    *os.File  // segs[len-1], for writing
	bytes int64     // sum of segs[].size
	next  uint64    // seq of the next block written

	// peeked is set while the frame at rOff has been read by peek and not
	// committed or dropped since.
	peeked      bool
	peekSeq     uint64
	peekLen     int64
	peekSamples int64
	uncommit    int // commits since the head file was written
	frame       []byte
	onCorrupt   func(samples int64, bytes int64, err error)
}

// headSyncBlocks is how many commits may pass without rewriting the head
// file: a rename per request would cost more than the request's own write.
const headSyncBlocks = 16

// minSegmentBytes is the smallest segment: a few blocks.
const minSegmentBytes = 64 << 10

// openDiskQueue opens (creating it if needed) the disk queue in dir,
// bounded by about maxBytes. It checks every frame; an incomplete or
// corrupt frame and everything after it in its segment is cut off and
// reported to onCorrupt (samples from the frame header when it is intact,
// else 0), as a crash in the middle of a write leaves it.
func openDiskQueue(dir string, maxBytes int64, onCorrupt func(samples, bytes int64, err error)) (*diskQueue, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("cannot create disk queue directory: %w", err)
	}
	d := &diskQueue{
		dir:       dir,
		maxBytes:  maxBytes,
		segBytes:  max(min(maxBytes/8, 64<<20), minSegmentBytes),
		onCorrupt: onCorrupt,
	}
	if d.onCorrupt == nil {
		d.onCorrupt = func(int64, int64, error) {}
	}
	if err := d.load(); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// load lists the segments, reads the head file and checks the frames.
func (d *diskQueue) load() error {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("cannot list disk queue directory: %w", err)
	}
	var idx []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			continue
		}
		idx = append(idx, n)
	}
	slices.Sort(idx)
	headSeg, headOff, headOK := d.readHead()
	for _, n := range idx {
		if headOK && n < headSeg { // sent before the last close
			if err := os.Remove(d.segPath(n)); err != nil {
				return fmt.Errorf("cannot remove sent segment: %w", err)
			}
			continue
		}
		from := int64(len(segMagic))
		if headOK && n == headSeg {
			from = headOff
		}
		s, err := d.scan(n, from)
		if err != nil {
			return err
		}
		d.segs = append(d.segs, s)
		d.bytes += s.size
	}
	if len(d.segs) > 0 && d.segs[0].index == headSeg && headOK {
		d.rOff = headOff
		if d.rOff > d.segs[0].size { // the segment was cut off behind the head
			d.rOff = d.segs[0].size
		}
	} else {
		d.rOff = int64(len(segMagic))
	}
	if len(d.segs) == 0 {
		return d.newSegment(headSeg + 1)
	}
	var err2 error
	if d.rf, err2 = os.Open(d.segPath(d.segs[0].index)); err2 != nil {
		return fmt.Errorf("cannot open segment: %w", err2)
	}
	last := d.segs[len(d.segs)-1]
	if d.wf, err2 = os.OpenFile(d.segPath(last.index), os.O_WRONLY|os.O_APPEND, 0); err2 != nil {
		return fmt.Errorf("cannot open segment: %w", err2)
	}
	return nil
}

// readHead reads the head file: the segment and offset of the first unsent
// frame. ok is false when there is none or it cannot be read; everything
// on disk is then unsent.
func (d *diskQueue) readHead() (seg uint64, off int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(d.dir, headFile))
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	seg, err1 := strconv.ParseUint(f[0], 10, 64)
	off, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || off < int64(len(segMagic)) {
		return 0, 0, false
	}
	return seg, off, true
}

// writeHead records the read position (write and rename: a crash leaves
// the old file or the new one).
func (d *diskQueue) writeHead() error {
	d.uncommit = 0
	seg := uint64(0)
	off := int64(len(segMagic))
	if len(d.segs) > 0 {
		seg, off = d.segs[0].index, d.rOff
	}
	tmp := filepath.Join(d.dir, headFile+".tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", seg, off)), 0o640); err != nil {
		return fmt.Errorf("cannot write disk queue head: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, headFile)); err != nil {
		return fmt.Errorf("cannot write disk queue head: %w", err)
	}
	return nil
}

func (d *diskQueue) segPath(n uint64) string {
	return filepath.Join(d.dir, fmt.Sprintf("%020d%s", n, segSuffix))
}

// scan checks the frames of segment n from offset from, counts those, and
// cuts the file at the first frame that is incomplete or fails its
// checksum. It also advances d.next past every seq seen.
func (d *diskQueue) scan(n uint64, from int64) (segment, error) {
	s := segment{index: n}
	path := d.segPath(n)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return s, fmt.Errorf("cannot open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return s, fmt.Errorf("cannot open segment: %w", err)
	}
	size := fi.Size()
	r := bufio.NewReaderSize(f, 1<<20)
	magic := make([]byte, len(segMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != segMagic {
		// A crash between creating the file and writing its magic, or not
		// ours: nothing in it can be read.
		d.onCorrupt(0, size, fmt.Errorf("segment %s has no valid header", filepath.Base(path)))
		if err := f.Truncate(0); err != nil {
			return s, fmt.Errorf("cannot cut corrupt segment: %w", err)
		}
		if _, err := f.WriteAt([]byte(segMagic), 0); err != nil {
			return s, fmt.Errorf("cannot cut corrupt segment: %w", err)
		}
		s.size = int64(len(segMagic))
		return s, nil
	}
	off := int64(len(segMagic))
	for off < size {
		b, err := readFrame(r, &d.frame)
		if err != nil {
			var samples int64
			if b.samples > 0 {
				samples = b.samples
			}
			d.onCorrupt(samples, size-off, fmt.Errorf("segment %s at offset %d: %w", filepath.Base(path), off, err))
			if err := f.Truncate(off); err != nil {
				return s, fmt.Errorf("cannot cut corrupt segment: %w", err)
			}
			size = off
			break
		}
		if off >= from {
			s.blocks++
			s.samples += b.samples
		}
		d.next = max(d.next, b.seq+1)
		off += frameHeader + int64(len(b.body))
	}
	s.size = size
	return s, nil
}

// errCorrupt marks a frame that is incomplete or fails its checksum.
var errCorrupt = errors.New("corrupt frame")

// readFrame reads one frame from r into *buf (grown as needed) and returns
// it; body aliases *buf. On a short or corrupt frame it returns an error
// wrapping errCorrupt, with b.samples set when the header's own fields are
// plausible (the samples the frame held), or an io error.
func readFrame(r io.Reader, buf *[]byte) (b block, err error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return b, fmt.Errorf("%w: incomplete header: %v", errCorrupt, err)
	}
	n := binary.LittleEndian.Uint32(h[0:])
	if n > maxFrameBody || h[16]&^flagRW2 != 0 || h[17] != 0 || h[18] != 0 || h[19] != 0 {
		return b, fmt.Errorf("%w: implausible header (length %d)", errCorrupt, n)
	}
	samples := int64(binary.LittleEndian.Uint32(h[4:]))
	b.seq = binary.LittleEndian.Uint64(h[8:])
	b.rw2 = h[16]&flagRW2 != 0
	*buf = grow(*buf, int(n))
	if _, err := io.ReadFull(r, *buf); err != nil {
		b.samples = samples
		return b, fmt.Errorf("%w: incomplete payload: %v", errCorrupt, err)
	}
	want := binary.LittleEndian.Uint32(h[20:])
	c := crc32.Update(crc32.Checksum(h[:20], castagnoli), castagnoli, *buf)
	if c != want {
		return block{}, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	b.samples = samples
	b.body = *buf
	return b, nil
}

// appendFrame appends the frame of b to dst.
func appendFrame(dst []byte, b *block) []byte {
	var h [frameHeader]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(b.body)))
	binary.LittleEndian.PutUint32(h[4:], uint32(b.samples))
	binary.LittleEndian.PutUint64(h[8:], b.seq)
	if b.rw2 {
		h[16] = flagRW2
	}
	c := crc32.Update(crc32.Checksum(h[:20], castagnoli), castagnoli, b.body)
	binary.LittleEndian.PutUint32(h[20:], c)
	dst = append(dst, h[:]...)
	return append(dst, b.body...)
}

// newSegment creates segment n and makes it the one written.
func (d *diskQueue) newSegment(n uint64) error {
	f, err := os.OpenFile(d.segPath(n), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("cannot create segment: %w", err)
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		f.Close()
		return fmt.Errorf("cannot write segment: %w", err)
	}
	if d.wf != nil {
		d.wf.Close()
	}
	d.wf = f
	d.segs = append(d.segs, segment{index: n, size: int64(len(segMagic))})
	d.bytes += int64(len(segMagic))
	if len(d.segs) == 1 {
		if d.rf != nil {
			d.rf.Close()
		}
		if d.rf, err = os.Open(d.segPath(n)); err != nil {
			return fmt.Errorf("cannot open segment: %w", err)
		}
		d.rOff = int64(len(segMagic))
	}
	return nil
}

// nextSeq returns the seq the next block written should carry.
func (d *diskQueue) nextSeq() uint64 { return d.next }

// write appends b behind everything queued. When the segments then exceed
// maxBytes it removes the oldest ones, never the one written, and returns
// the samples they still held (dropped unsent). On an error nothing of b
// stays on disk.
func (d *diskQueue) write(b *block) (dropped int64, err error) {
	tail := &d.segs[len(d.segs)-1]
	if tail.size+frameHeader+int64(len(b.body)) > d.segBytes && tail.size > int64(len(segMagic)) {
		if err := d.newSegment(tail.index + 1); err != nil {
			return 0, err
		}
		tail = &d.segs[len(d.segs)-1]
	}
	d.frame = appendFrame(d.frame[:0], b)
	if _, err := d.wf.Write(d.frame); err != nil {
		// Cut what was written of the frame, so that the next frame follows
		// the last whole one.
		_ = d.wf.Truncate(tail.size)
		return 0, fmt.Errorf("cannot write disk queue: %w", err)
	}
	n := int64(len(d.frame))
	tail.size += n
	tail.blocks++
	tail.samples += b.samples
	d.bytes += n
	d.next = max(d.next, b.seq+1)
	for d.bytes > d.maxBytes && len(d.segs) > 1 {
		dropped += d.segs[0].samples
		if err := d.dropHead(); err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// dropHead removes the oldest segment, sent or not.
func (d *diskQueue) dropHead() error {
	s := d.segs[0]
	d.segs = d.segs[1:]
	d.bytes -= s.size
	d.peeked = false
	d.rf.Close()
	d.rf = nil
	if err := os.Remove(d.segPath(s.index)); err != nil {
		return fmt.Errorf("cannot remove segment: %w", err)
	}
	d.rOff = int64(len(segMagic))
	var err error
	if d.rf, err = os.Open(d.segPath(d.segs[0].index)); err != nil {
		return fmt.Errorf("cannot open segment: %w", err)
	}
	return d.writeHead()
}

// empty reports whether every block written has been committed.
func (d *diskQueue) empty() bool {
	for _, s := range d.segs {
		if s.blocks > 0 {
			return false
		}
	}
	return true
}

// pending returns the blocks and samples not yet committed.
func (d *diskQueue) pending() (blocks, samples int64) {
	for _, s := range d.segs {
		blocks += s.blocks
		samples += s.samples
	}
	return blocks, samples
}

// peek returns the oldest block not yet committed, reading it into buf
// (grown as needed; the block's body aliases it). ok is false when the
// queue is empty. A frame that fails its checksum now (the disk changed it
// since open) is skipped with the rest of its segment, reported to
// onCorrupt.
func (d *diskQueue) peek(buf *[]byte) (b block, ok bool, err error) {
	for {
		if d.rOff >= d.segs[0].size {
			if len(d.segs) == 1 {
				return b, false, nil
			}
			if err := d.dropHead(); err != nil { // wholly sent
				return b, false, err
			}
			continue
		}
		r := io.NewSectionReader(d.rf, d.rOff, d.segs[0].size-d.rOff)
		b, err = readFrame(r, buf)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				return b, false, fmt.Errorf("cannot read disk queue: %w", err)
			}
			s := &d.segs[0]
			d.onCorrupt(s.samples, s.size-d.rOff, fmt.Errorf("segment %s at offset %d: %w", filepath.Base(d.segPath(s.index)), d.rOff, err))
			s.blocks, s.samples = 0, 0
			d.rOff = s.size
			continue
		}
		d.peeked, d.peekSeq, d.peekLen, d.peekSamples = true, b.seq, frameHeader+int64(len(b.body)), b.samples
		return b, true, nil
	}
}

// commit removes the head block if its seq is seq, and reports whether it
// did: the size limit may have dropped that block since it was read.
func (d *diskQueue) commit(seq uint64) bool {
	for d.rOff >= d.segs[0].size && len(d.segs) > 1 {
		if err := d.dropHead(); err != nil { // wholly sent
			return false
		}
	}
	if !d.peeked {
		var h [frameHeader]byte
		if _, err := d.rf.ReadAt(h[:], d.rOff); err != nil {
			return false
		}
		d.peekSeq = binary.LittleEndian.Uint64(h[8:])
		d.peekLen = frameHeader + int64(binary.LittleEndian.Uint32(h[0:]))
		d.peekSamples = int64(binary.LittleEndian.Uint32(h[4:]))
	}
	if d.peekSeq != seq {
		return false
	}
	d.peeked = false
	s := &d.segs[0]
	d.rOff += d.peekLen
	s.blocks--
	s.samples -= d.peekSamples
	d.uncommit++
	if d.rOff >= s.size && len(d.segs) > 1 {
		_ = d.dropHead() // writes the head file
	} else if d.uncommit >= headSyncBlocks {
		_ = d.writeHead()
	}
	return true
}

// close writes the head file and closes the files.
func (d *diskQueue) close() error {
	var err error
	if d.wf != nil && len(d.segs) > 0 {
		err = d.writeHead()
	}
	if d.rf != nil {
		d.rf.Close()
		d.rf = nil
	}
	if d.wf != nil {
		if e := d.wf.Close(); e != nil && err == nil {
			err = fmt.Errorf("cannot close segment: %w", e)
		}
		d.wf = nil
	}
	return err
}
