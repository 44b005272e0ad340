package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/sink/wire"
)

var created = time.UnixMilli(1_700_000_000_123)

// encode is what a Writer writes, built from the format's description
// rather than from the Writer.
func encode(h header, records [][]byte) []byte {
	b := appendHeader(nil, h)
	var n uint64
	for _, r := range records {
		b = wire.AppendFrame(b, append([]byte{kindRecord}, r...))
		n += uint64(len(r))
	}
	trailer := []byte{kindTrailer}
	trailer = binary.BigEndian.AppendUint64(trailer, uint64(len(records)))
	trailer = binary.BigEndian.AppendUint64(trailer, n)
	return wire.AppendFrame(b, trailer)
}

// write commits a checkpoint of records.
func write(t *testing.T, dir string, shard, shards int, records [][]byte) Info {
	t.Helper()
	w, err := Create(dir, shard, shards, created)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, r := range records {
		if err := w.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	info, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// readAll returns the records read from r (copies) and its final error, nil
// on io.EOF.
func readAll(r *Reader) ([][]byte, error) {
	var records [][]byte
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return records, nil
		}
		if err != nil {
			return records, err
		}
		records = append(records, bytes.Clone(rec))
	}
}

// readBytes reads a checkpoint held in memory.
func readBytes(data []byte) (header, [][]byte, error) {
	r, h, err := newReader(bytes.NewReader(data), int64(len(data)), "mem")
	if err != nil {
		return header{}, nil, err
	}
	records, err := readAll(r)
	return h, records, err
}

// files lists dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + seed)
	}
	return b
}

// small is the file of the byte-by-byte tests: an empty record, one whose
// frame length takes two bytes, and a short one.
var small = [][]byte{{}, pattern(300, 1), []byte("state")}

// TestFormatGolden pins the header byte by byte, and the Writer to the
// format as described in the package doc.
func TestFormatGolden(t *testing.T) {
	h := appendHeader(nil, header{shard: 3, shards: 16, createdMs: created.UnixMilli()})
	want := []byte("ANOMALYD-CKPT\n" +
		"\x00\x01" + // version
		"\x00\x00\x00\x03" + "\x00\x00\x00\x10" + // shard 3 of 16
		"\x00\x00\x01\x8b\xcf\xe5\x68\x7b" + // 1700000000123 ms
		"\x7b\x92\x26\xd6") // CRC-32C, checked with an independent implementation
	if !bytes.Equal(h, want) {
		t.Fatalf("header\n got % x\nwant % x", h, want)
	}

	dir := t.TempDir()
	info := write(t, dir, 3, 16, small)
	got, err := os.ReadFile(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if want := encode(header{shard: 3, shards: 16, createdMs: created.UnixMilli()}, small); !bytes.Equal(got, want) {
		t.Fatalf("the Writer wrote\n% x\nthe format says\n% x", got, want)
	}
	if filepath.Base(info.Path) != "shard-003-of-016.0000000001.ckpt" || info.Records != 3 || info.Bytes != int64(len(got)) {
		t.Fatalf("got %+v, want shard-003-of-016.0000000001.ckpt, 3 records, %d bytes", info, len(got))
	}
}

func TestRoundTrip(t *testing.T) {
	many := make([][]byte, 10000)
	for i := range many {
		many[i] = pattern(i%97, i)
	}
	for _, tc := range []struct {
		name    string
		records [][]byte
	}{
		{"none", nil},
		{"one", [][]byte{[]byte("x")}},
		{"one empty", [][]byte{{}}},
		{"many", many},
		// Larger than the Writer's and the Reader's buffers.
		{"large", [][]byte{pattern(1<<20, 1), {}, pattern(5<<20+3, 2), pattern(writeBufferSize, 3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			info := write(t, dir, 2, 4, tc.records)
			if info.Records != len(tc.records) {
				t.Errorf("Info.Records %d, want %d", info.Records, len(tc.records))
			}
			if fi, err := os.Stat(info.Path); err != nil || fi.Size() != info.Bytes {
				t.Errorf("Info.Bytes %d, file: %v %v", info.Bytes, fi, err)
			}
			path, ok, err := Latest(dir, 2, 4)
			if err != nil || !ok || path != info.Path {
				t.Fatalf("Latest: %q %v %v, want %q", path, ok, err, info.Path)
			}
			r, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if !r.Created().Equal(created) {
				t.Errorf("Created %v, want %v", r.Created(), created)
			}
			got, err := readAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.records) {
				t.Fatalf("read %d records, want %d", len(got), len(tc.records))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.records[i]) {
					t.Fatalf("record %d: %d bytes differ from the %d written", i, len(got[i]), len(tc.records[i]))
				}
			}
			// io.EOF stays.
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after io.EOF: %v", err)
			}
		})
	}
}

// TestTruncatedEveryOffset: a file cut anywhere, at a frame boundary too,
// is truncated; never io.EOF.
func TestTruncatedEveryOffset(t *testing.T) {
	dir := t.TempDir()
	full, err := os.ReadFile(write(t, dir, 0, 1, small).Path)
	if err != nil {
		t.Fatal(err)
	}
	for cut := range len(full) {
		// A new file each time: rewriting one makes ext4 flush it
		// (auto_da_alloc), a hundred times slower.
		path := filepath.Join(dir, fileName(0, 1, uint64(2+cut)))
		if err := os.WriteFile(path, full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path)
		if err == nil {
			_, err = readAll(r)
			r.Close()
		}
		if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), path) {
			t.Fatalf("cut at %d of %d bytes: got %v, want ErrTruncated naming the file", cut, len(full), err)
		}
	}
}

// TestBitFlips: every single-bit flip is an error: ErrUnknownVersion in the
// version, ErrCorrupt elsewhere, but in a frame's length, which the frame's
// checksum does not cover: a longer length may run past the end of the
// file, which reads as truncated.
func TestBitFlips(t *testing.T) {
	full := encode(header{shard: 1, shards: 2, createdMs: created.UnixMilli()}, small)
	lengths := map[int]bool{} // offsets of the frames' length bytes
	at := headerSize
	for _, n := range []int{1, 301, 6, trailerSize} {
		for i := range frameSize(n) - 4 - n {
			lengths[at+i] = true
		}
		at += frameSize(n)
	}
	if at != len(full) {
		t.Fatalf("frames end at %d, file at %d", at, len(full))
	}
	for off := range full {
		for bit := range 8 {
			data := bytes.Clone(full)
			data[off] ^= 1 << bit
			_, _, err := readBytes(data)
			switch {
			case off >= len(magic) && off < len(magic)+2:
				if !errors.Is(err, ErrUnknownVersion) {
					t.Fatalf("bit %d of byte %d (version): got %v, want ErrUnknownVersion", bit, off, err)
				}
			case lengths[off]:
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
					t.Fatalf("bit %d of byte %d (length): got %v, want ErrCorrupt or ErrTruncated", bit, off, err)
				}
			default:
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("bit %d of byte %d: got %v, want ErrCorrupt", bit, off, err)
				}
			}
		}
	}
}

// TestReaderErrors: files a Writer never writes.
func TestReaderErrors(t *testing.T) {
	h := header{shard: 0, shards: 1, createdMs: 1}
	f := func(name string, data []byte, target error, want string) {
		t.Helper()
		_, records, err := readBytes(data)
		if !errors.Is(err, target) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v (after %d records), want %v with %q", name, err, len(records), target, want)
		}
	}
	trailer := func(records, bytes uint64) []byte {
		b := binary.BigEndian.AppendUint64([]byte{kindTrailer}, records)
		return wire.AppendFrame(nil, binary.BigEndian.AppendUint64(b, bytes))
	}
	hdr := appendHeader(nil, h)
	valid := encode(h, [][]byte{[]byte("a")})
	cat := func(parts ...[]byte) []byte { return slices.Concat(parts...) }

	f("empty", nil, ErrTruncated, "header of 0 bytes, want 36")
	f("not a checkpoint", []byte("# HELP"), ErrCorrupt, `not a checkpoint: starts with "# HELP"`)
	f("zero-filled", make([]byte, 100), ErrCorrupt, "not a checkpoint")
	f("zero-filled after the header", cat(hdr, make([]byte, 64)), ErrCorrupt, "empty frame at byte 36")
	f("shard beyond the count", appendHeader(nil, header{shard: 2, shards: 2}), ErrCorrupt, "header names shard 2 of 2")
	f("header only", hdr, ErrTruncated, "the file ends at byte 36, after 0 records, without a trailer")
	f("bytes after the trailer", cat(valid, []byte{0}), ErrCorrupt, "1 bytes after the trailer")
	f("a frame after the trailer", cat(valid, valid[len(hdr):]), ErrCorrupt, "bytes after the trailer")
	f("a record missing", cat(hdr, trailer(1, 1)), ErrTruncated, "the trailer counts 1 records of 1 bytes, the file holds 0 of 0")
	f("bytes missing", cat(hdr, wire.AppendFrame(nil, []byte{kindRecord}), trailer(1, 5)), ErrTruncated, "the trailer counts 1 records of 5 bytes")
	f("short trailer", cat(hdr, wire.AppendFrame(nil, []byte{kindTrailer, 0})), ErrCorrupt, "trailer at byte 36 is 2 bytes, want 17")
	f("unknown kind", cat(hdr, wire.AppendFrame(nil, []byte{3, 1})), ErrCorrupt, "frame at byte 36 is of unknown kind 0x03")
	f("overlong length", cat(hdr, []byte{0x82, 0x00}, valid[len(hdr)+1:]), ErrCorrupt, "frame at byte 36 has an overlong length")
	f("varint overflow", cat(hdr, bytes.Repeat([]byte{0xff}, 12)), ErrCorrupt, "frame at byte 36: cannot read frame length")
	f("length over the limit", cat(hdr, binary.AppendUvarint(nil, 1<<40), make([]byte, 8)), ErrCorrupt,
		fmt.Sprintf("frame of 1099511627776 bytes exceeds the limit of %d bytes", MaxRecordSize+1))
	f("length past the end", cat(hdr, binary.AppendUvarint(nil, 100), make([]byte, 50)), ErrTruncated,
		"frame of 100 bytes: longer than the rest of the file (46 bytes)")

	v2 := bytes.Clone(hdr)
	v2[len(magic)+1] = 2
	binary.BigEndian.PutUint32(v2[headerSize-4:], crc32.Checksum(v2[:headerSize-4], castagnoli))
	f("version 2", v2, ErrUnknownVersion, "unknown format version: version 2, this build reads 1")
}

// TestBoundedAllocation: a damaged length allocates nothing for its frame,
// whether over the limit or past the end of the file.
func TestBoundedAllocation(t *testing.T) {
	hdr := appendHeader(nil, header{shard: 0, shards: 1})
	for _, size := range []uint64{1 << 62, MaxRecordSize + 1, MaxRecordSize} {
		data := slices.Concat(hdr, binary.AppendUvarint(nil, size), make([]byte, 1000))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := readBytes(data)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("frame of %d bytes: no error", size)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("frame of %d bytes: %d bytes allocated", size, n)
		}
	}
}

func TestLatestAndCommit(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := Latest(filepath.Join(dir, "missing"), 0, 4); ok || err != nil {
		t.Fatalf("missing directory: %v %v, want nothing", ok, err)
	}
	if _, ok, err := Latest(dir, 0, 4); ok || err != nil {
		t.Fatalf("empty directory: %v %v, want nothing", ok, err)
	}
	// Files that are not shard 0's, or not checkpoints: left alone.
	keep := []string{"README", fileName(1, 4, 7), "shard-001-of-004.123.tmp", "shard-0-of-4.9.ckpt"}
	for _, name := range keep {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A crash left a temporary file of shard 0 (of another shard count too).
	stale := []string{"shard-000-of-004.555.tmp", "shard-000-of-002.556.tmp"}
	for _, name := range stale {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := Latest(dir, 0, 4); ok || err != nil {
		t.Fatalf("only a temporary file: %v %v, want nothing", ok, err)
	}

	for seq := 1; seq <= 3; seq++ {
		info := write(t, dir, 0, 4, [][]byte{{byte(seq)}})
		if want := filepath.Join(dir, fileName(0, 4, uint64(seq))); info.Path != want {
			t.Fatalf("commit %d: %s, want %s", seq, info.Path, want)
		}
		if got, want := files(t, dir), slices.Sorted(slices.Values(append([]string{filepath.Base(info.Path)}, keep...))); !slices.Equal(got, want) {
			t.Fatalf("commit %d: directory holds %q, want %q", seq, got, want)
		}
		path, ok, err := Latest(dir, 0, 4)
		if err != nil || !ok || path != info.Path {
			t.Fatalf("commit %d: Latest %q %v %v", seq, path, ok, err)
		}
	}

	// A crash after the rename and before the removal: both remain, the
	// higher sequence number wins, compared as a number.
	os.WriteFile(filepath.Join(dir, fileName(0, 4, 12345678901)), nil, 0o600)
	if path, _, _ := Latest(dir, 0, 4); filepath.Base(path) != "shard-000-of-004.12345678901.ckpt" {
		t.Fatalf("Latest %s, want sequence number 12345678901", path)
	}
	if info := write(t, dir, 0, 4, nil); filepath.Base(info.Path) != "shard-000-of-004.12345678902.ckpt" {
		t.Fatalf("committed %s, want sequence number 12345678902", info.Path)
	}
}

// TestCrashBeforeCommit: an unfinished checkpoint is never Latest, and the
// previous one stands.
func TestCrashBeforeCommit(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, 0, 1, created)
	if err != nil {
		t.Fatal(err)
	}
	w.Append([]byte("lost"))
	w.bw.Flush() // what reached the file before the crash
	if _, ok, err := Latest(dir, 0, 1); ok || err != nil {
		t.Fatalf("no commit yet: %v %v", ok, err)
	}
	info := write(t, dir, 0, 1, [][]byte{[]byte("kept")})
	// The crashed writer's file went with that Commit; a second crash
	// leaves another.
	w2, err := Create(dir, 0, 1, created)
	if err != nil {
		t.Fatal(err)
	}
	w2.Append([]byte("lost too"))
	w2.bw.Flush()
	if path, ok, err := Latest(dir, 0, 1); path != info.Path || !ok || err != nil {
		t.Fatalf("Latest %q %v %v, want %s", path, ok, err, info.Path)
	}
	if got := files(t, dir); len(got) != 2 || !strings.HasSuffix(got[1], ".tmp") {
		t.Fatalf("directory holds %q, want the checkpoint and one .tmp", got)
	}
	// Abort removes it.
	if err := w2.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); len(got) != 1 {
		t.Fatalf("after Abort, directory holds %q", got)
	}
	w.f.Close()
}

func TestShardMismatch(t *testing.T) {
	dir := t.TempDir()
	info := write(t, dir, 3, 16, nil)
	_, ok, err := Latest(dir, 3, 8)
	var se *ShardMismatchError
	if ok || !errors.As(err, &se) || se.Path != info.Path || se.Shards != 16 || se.WantShards != 8 {
		t.Fatalf("Latest with another shard count: %v %v, want a *ShardMismatchError", ok, err)
	}
	if _, ok, err := Latest(dir, 4, 16); ok || err != nil {
		t.Fatalf("another shard: %v %v, want nothing", ok, err)
	}
	// The shard count changed: the new count's first commit replaces the
	// old count's file, and a return to the old count finds it out of date.
	info8 := write(t, dir, 3, 8, nil)
	if got := files(t, dir); !slices.Equal(got, []string{filepath.Base(info8.Path)}) {
		t.Fatalf("directory holds %q, want %s alone", got, info8.Path)
	}
	if _, _, err := Latest(dir, 3, 16); !errors.As(err, &se) || se.Shards != 8 {
		t.Fatalf("back to 16 shards: %v, want a *ShardMismatchError", err)
	}

	// A file whose header disagrees with its name.
	renamed := filepath.Join(dir, fileName(4, 8, 1))
	if err := os.Rename(info8.Path, renamed); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(renamed); !errors.As(err, &se) || se.Shard != 3 || se.WantShard != 4 ||
		err.Error() != "checkpoint "+renamed+" holds shard 3 of 8, want shard 4 of 8" {
		t.Fatalf("renamed: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "copy.ckpt")); err == nil || !strings.Contains(err.Error(), "not a checkpoint's name") {
		t.Fatalf("other name: %v", err)
	}
}

func TestParseName(t *testing.T) {
	f := func(name string, shard, shards int, seq uint64, ok bool) {
		t.Helper()
		s, n, q, k := parseName(name)
		if k != ok || k && (s != shard || n != shards || q != seq) {
			t.Errorf("%q: got %d %d %d %v, want %d %d %d %v", name, s, n, q, k, shard, shards, seq, ok)
		}
	}
	f("shard-003-of-016.0000000042.ckpt", 3, 16, 42, true)
	f("shard-1000-of-1024.12345678901.ckpt", 1000, 1024, 12345678901, true)
	f("shard-3-of-16.42.ckpt", 0, 0, 0, false) // not as fileName writes it
	f("shard-003-of-016.0000000042.tmp", 0, 0, 0, false)
	f("shard-003-of-016.123456.tmp", 0, 0, 0, false)
	f("shard-016-of-016.0000000001.ckpt", 0, 0, 0, false)
	f("shard-000-of-000.0000000001.ckpt", 0, 0, 0, false)
	f("shard-+03-of-016.0000000001.ckpt", 0, 0, 0, false)
	f("shard-003-of-016.0000000001.ckpt.bak", 0, 0, 0, false)
	f("shard-003-of-016.ckpt", 0, 0, 0, false)
}

func TestWriterMisuse(t *testing.T) {
	dir := t.TempDir()
	for _, s := range [][2]int{{0, 0}, {-1, 4}, {4, 4}} {
		if _, err := Create(dir, s[0], s[1], created); err == nil {
			t.Errorf("Create shard %d of %d: no error", s[0], s[1])
		}
	}
	if _, err := Create(filepath.Join(dir, "missing"), 0, 1, created); err == nil {
		t.Error("Create in a missing directory: no error")
	}
	w, err := Create(dir, 0, 1, created)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(make([]byte, MaxRecordSize+1)); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Errorf("record over the limit: %v", err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	if err := w.Append(nil); err == nil {
		t.Error("Append after Commit: no error")
	}
	if _, err := w.Commit(); err == nil {
		t.Error("second Commit: no error")
	}
}

// BenchmarkWrite: 100k records of 1 KiB, committed (fsync included).
func BenchmarkWrite(b *testing.B) {
	dir := b.TempDir()
	record := pattern(1024, 0)
	const records = 100_000
	b.SetBytes(records * int64(len(record)))
	b.ReportAllocs()
	for b.Loop() {
		w, err := Create(dir, 0, 1, created)
		if err != nil {
			b.Fatal(err)
		}
		for range records {
			if err := w.Append(record); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead: restoring what BenchmarkWrite writes.
func BenchmarkRead(b *testing.B) {
	dir := b.TempDir()
	record := pattern(1024, 0)
	const records = 100_000
	w, err := Create(dir, 0, 1, created)
	if err != nil {
		b.Fatal(err)
	}
	for range records {
		w.Append(record)
	}
	info, err := w.Commit()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(records * int64(len(record)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := Open(info.Path)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		r.Close()
		if n != records {
			b.Fatalf("%d records", n)
		}
	}
}

// TestLatestSetAndPrune: after a change of the shard count, LatestSet names
// the new count once its first file is committed, and Prune removes the
// old count's files, unfinished ones included, and nothing else.
func TestLatestSetAndPrune(t *testing.T) {
	dir := t.TempDir()
	if n, ok, err := LatestSet(dir); ok || err != nil || n != 0 {
		t.Fatalf("empty dir: %d %v %v", n, ok, err)
	}
	if n, ok, err := LatestSet(filepath.Join(dir, "missing")); ok || err != nil || n != 0 {
		t.Fatalf("missing dir: %d %v %v", n, ok, err)
	}
	for round := 0; round < 2; round++ {
		for i := range 4 {
			write(t, dir, i, 4, nil)
		}
	}
	if n, ok, err := LatestSet(dir); !ok || err != nil || n != 4 {
		t.Fatalf("four shards: %d %v %v", n, ok, err)
	}
	stale := filepath.Join(dir, "shard-003-of-004.123.tmp")
	other := filepath.Join(dir, "notes.txt")
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Two shards now: shard 0's file is numbered above every file of index 0.
	write(t, dir, 0, 2, nil)
	if n, ok, err := LatestSet(dir); !ok || err != nil || n != 2 {
		t.Fatalf("after re-sharding: %d %v %v, want 2", n, ok, err)
	}
	write(t, dir, 1, 2, nil)
	if err := Prune(dir, 2); err != nil {
		t.Fatal(err)
	}
	got := files(t, dir)
	want := []string{"notes.txt", fileName(0, 2, 3), fileName(1, 2, 3)}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after Prune: %q, want %q", got, want)
	}
}
