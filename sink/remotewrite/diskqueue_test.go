package remotewrite

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// testBlock is block seq with a body that names it, of size bytes.
func testBlock(seq uint64, size int) block {
	body := bytes.Repeat([]byte{byte(seq)}, size)
	copy(body, fmt.Sprintf("block %d;", seq))
	return block{seq: seq, samples: int64(seq%7 + 1), rw2: seq%2 == 1, body: body}
}

// corruptLog records what a disk queue reports as unreadable.
type corruptLog struct {
	samples, bytes int64
	calls          int
}

func (c *corruptLog) fn(samples, bytes int64, _ error) {
	c.samples += samples
	c.bytes += bytes
	c.calls++
}

func openTestQueue(t *testing.T, dir string, maxBytes int64, c *corruptLog) *diskQueue {
	t.Helper()
	var fn func(int64, int64, error)
	if c != nil {
		fn = c.fn
	}
	d, err := openDiskQueue(dir, maxBytes, fn)
	if err != nil {
		t.Fatalf("openDiskQueue: %v", err)
	}
	return d
}

func writeBlocks(t *testing.T, d *diskQueue, from, to uint64, size int) (dropped int64) {
	t.Helper()
	for seq := from; seq < to; seq++ {
		b := testBlock(seq, size)
		n, err := d.write(&b)
		if err != nil {
			t.Fatalf("write %d: %v", seq, err)
		}
		dropped += n
	}
	return dropped
}

// readAll peeks and commits every block, checking each against testBlock,
// and returns their seqs.
func readAll(t *testing.T, d *diskQueue) []uint64 {
	t.Helper()
	var seqs []uint64
	var buf []byte
	for {
		b, ok, err := d.peek(&buf)
		if err != nil {
			t.Fatalf("peek: %v", err)
		}
		if !ok {
			return seqs
		}
		want := testBlock(b.seq, len(b.body))
		if !bytes.Equal(b.body, want.body) || b.samples != want.samples || b.rw2 != want.rw2 {
			t.Fatalf("block %d read back differs: %d samples rw2 %v, want %d %v", b.seq, b.samples, b.rw2, want.samples, want.rw2)
		}
		if !d.commit(b.seq) {
			t.Fatalf("commit %d: not the head", b.seq)
		}
		seqs = append(seqs, b.seq)
	}
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// TestDiskQueueReopen: blocks come back in the order written, across
// closes and segment boundaries, without those committed before the close;
// seqs continue after the last one on disk.
func TestDiskQueueReopen(t *testing.T) {
	dir := t.TempDir()
	const limit = 512 << 10 // segments of 64 KiB
	d := openTestQueue(t, dir, limit, nil)
	writeBlocks(t, d, 0, 40, 5000) // 200 KB: 4 segments
	if len(d.segs) < 3 {
		t.Fatalf("%d segments, want several", len(d.segs))
	}
	var buf []byte
	for seq := range uint64(10) {
		b, ok, err := d.peek(&buf)
		if err != nil || !ok || b.seq != seq {
			t.Fatalf("peek: %v %v seq %d, want %d", err, ok, b.seq, seq)
		}
		if d.commit(seq + 1) {
			t.Fatalf("commit of a seq that is not the head succeeded")
		}
		d.commit(seq)
	}
	if blocks, _ := d.pending(); blocks != 30 {
		t.Errorf("%d blocks pending, want 30", blocks)
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}

	d = openTestQueue(t, dir, limit, nil)
	if got := d.nextSeq(); got != 40 {
		t.Errorf("next seq %d, want 40", got)
	}
	writeBlocks(t, d, 40, 45, 5000)
	if got := readAll(t, d); !slices.Equal(got, seqRange(10, 45)) {
		t.Errorf("read %v, want 10..44", got)
	}
	if !d.empty() {
		t.Errorf("not empty after reading everything")
	}
	d.close()

	d = openTestQueue(t, dir, limit, nil)
	if got := readAll(t, d); len(got) != 0 {
		t.Errorf("read %v after everything was committed, want nothing", got)
	}
	ents, _ := os.ReadDir(dir)
	if n := len(ents); n > 3 { // the segment written, head, maybe head.tmp
		t.Errorf("%d files left after everything was sent, want the last segment and head", n)
	}
	d.close()
}

// TestDiskQueueTruncated: a crash in the middle of a write leaves the last
// frame short or with a bad checksum: open drops it, reports its samples,
// keeps every frame before it, and writes continue behind them.
func TestDiskQueueTruncated(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(b []byte) []byte
		samples int64 // reported: the frame's, when its header survived
	}{
		{"payload cut", func(b []byte) []byte { return b[:len(b)-100] }, testBlock(4, 1).samples},
		{"header cut", func(b []byte) []byte { return b[:len(b)-1000-frameHeader+10] }, 0},
		{"bit flip", func(b []byte) []byte { b[len(b)-3] ^= 0x40; return b }, 0},
		{"garbage appended", func(b []byte) []byte { return append(b, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"...) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := openTestQueue(t, dir, 64<<20, nil)
			writeBlocks(t, d, 0, 5, 1000)
			seg := d.segPath(d.segs[0].index)
			d.close()
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(seg, tc.damage(b), 0o640); err != nil {
				t.Fatal(err)
			}
			var c corruptLog
			d = openTestQueue(t, dir, 64<<20, &c)
			want := seqRange(0, 4)
			if tc.name == "garbage appended" {
				want = seqRange(0, 5)
			}
			if c.calls != 1 || c.samples != tc.samples {
				t.Errorf("corrupt reported %d times, %d samples; want once, %d", c.calls, c.samples, tc.samples)
			}
			writeBlocks(t, d, 10, 12, 1000)
			if got := readAll(t, d); !slices.Equal(got, append(want, 10, 11)) {
				t.Errorf("read %v, want %v then 10, 11", got, want)
			}
			d.close()
		})
	}
}

// TestDiskQueueLimit: past maxBytes the oldest segments go, their unsent
// samples are returned as dropped, and what stays is the newest blocks, in
// order, within about one segment of the limit.
func TestDiskQueueLimit(t *testing.T) {
	dir := t.TempDir()
	const limit = 1 << 20 // segments of 128 KiB
	d := openTestQueue(t, dir, limit, nil)
	var buf []byte
	if b, ok, _ := d.peek(&buf); ok {
		t.Fatalf("peek on an empty queue gave block %d", b.seq)
	}
	writeBlocks(t, d, 0, 1, 10000)
	inflight, _, _ := d.peek(&buf) // block 0 is being sent while the disk fills
	dropped := writeBlocks(t, d, 1, 400, 10000)
	if d.bytes > limit+d.segBytes {
		t.Errorf("%d bytes on disk, limit %d", d.bytes, limit)
	}
	if d.commit(inflight.seq) {
		t.Errorf("commit of a block dropped by the limit succeeded")
	}
	got := readAll(t, d)
	if len(got) == 0 || got[len(got)-1] != 399 || !slices.Equal(got, seqRange(got[0], 400)) {
		t.Fatalf("read %v, want the newest blocks up to 399 in order", got)
	}
	var want int64
	for seq := range got[0] {
		want += testBlock(seq, 1).samples
	}
	if dropped != want {
		t.Errorf("dropped %d samples, want %d (blocks 0..%d)", dropped, want, got[0]-1)
	}
	d.close()
}

// FuzzDiskQueueOpen: whatever a segment file holds, open neither fails
// nor panics, and every block it then keeps reads back with its checksum.
func FuzzDiskQueueOpen(f *testing.F) {
	var seg []byte
	seg = append(seg, segMagic...)
	for seq := range uint64(3) {
		b := testBlock(seq, 50)
		seg = appendFrame(seg, &b)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add(seg[:len(segMagic)+5])
	f.Add([]byte(segMagic))
	f.Add([]byte{})
	f.Add([]byte("not a segment at all"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d%s", 1, segSuffix)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		var c corruptLog
		d, err := openDiskQueue(dir, 64<<20, c.fn)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer d.close()
		blocks, _ := d.pending()
		var buf []byte
		var n int64
		for {
			b, ok, err := d.peek(&buf)
			if err != nil {
				t.Fatalf("peek: %v", err)
			}
			if !ok {
				break
			}
			if !d.commit(b.seq) {
				t.Fatalf("commit of the head failed")
			}
			n++
		}
		if n != blocks || c.calls > 1 {
			t.Fatalf("read %d blocks, %d pending; %d corrupt reports", n, blocks, c.calls)
		}
	})
}

// BenchmarkDiskQueue writes blocks of a default request's size (2000
// samples, ~23 KiB after snappy) to a disk queue and reads them back, as
// an outage and the catch-up after it do.
func BenchmarkDiskQueue(b *testing.B) {
	d, err := openDiskQueue(b.TempDir(), 1<<30, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	blk := testBlock(0, 23<<10)
	var buf []byte
	b.SetBytes(int64(len(blk.body)))
	b.ReportAllocs()
	for b.Loop() {
		blk.seq = d.nextSeq()
		if _, err := d.write(&blk); err != nil {
			b.Fatal(err)
		}
		got, ok, err := d.peek(&buf)
		if err != nil || !ok || !d.commit(got.seq) {
			b.Fatalf("read back: %v %v", err, ok)
		}
	}
}
