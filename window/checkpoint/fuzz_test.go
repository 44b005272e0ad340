package checkpoint

import (
	"bytes"
	"testing"
)

// FuzzReader: no input panics the Reader, and every input it reads to
// io.EOF is exactly what a Writer writes for the header and records read.
// The allocation bound (a frame's buffer never outgrows the input) is
// TestBoundedAllocation's; here a breach would show as a slow or killed
// run.
func FuzzReader(f *testing.F) {
	h := header{shard: 1, shards: 4, createdMs: created.UnixMilli()}
	for _, records := range [][][]byte{nil, {{}}, small, {pattern(70000, 5)}} {
		full := encode(h, records)
		f.Add(full)
		f.Add(full[:len(full)-1])
		f.Add(full[:headerSize])
		f.Add(full[:headerSize+3])
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, records, err := readBytes(data)
		if err != nil {
			return
		}
		if got := encode(h, records); !bytes.Equal(got, data) {
			t.Fatalf("read %d records from %d bytes that a Writer writes as %d", len(records), len(data), len(got))
		}
	})
}
