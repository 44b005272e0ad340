package statecodec

import (
	"math"
	"strings"
	"testing"
)

// rec is one value of every kind the codec has.
type rec struct {
	a uint8
	b uint16
	c uint32
	d uint64
	e int64
	f int
	g float64
	h float32
	i [3]float32
	j bool
	k string
}

func (r *rec) fields(c *Codec) {
	c.U8(&r.a)
	c.U16(&r.b)
	c.U32(&r.c)
	c.U64(&r.d)
	c.I64(&r.e)
	c.Int(&r.f)
	c.F64(&r.g)
	c.F32(&r.h)
	c.F32s(r.i[:])
	c.Bool(&r.j)
	c.Str(&r.k)
}

func sample() rec {
	return rec{a: 0xfe, b: 0xbeef, c: 0xdeadbeef, d: 1<<63 + 5, e: -7, f: -1 << 40,
		g: math.Float64frombits(0x7ff8000000000123), h: float32(math.Copysign(0, -1)),
		i: [3]float32{1.5, float32(math.Inf(-1)), 3}, j: true, k: "héllo"}
}

// size of sample's encoding: 1+2+4+8+8+8+8+4+12+1+4+6.
const sampleSize = 66

// Every field comes back bit for bit (a NaN payload, −0, ±Inf), and the
// layout is the documented one: little-endian, no padding.
func TestRoundTrip(t *testing.T) {
	in := sample()
	enc := Encoder([]byte("x"))
	in.fields(&enc)
	b := enc.Bytes()
	if len(b) != 1+sampleSize {
		t.Fatalf("encoded %d bytes, want %d", len(b)-1, sampleSize)
	}
	if b[1] != 0xfe || b[2] != 0xef || b[3] != 0xbe {
		t.Fatalf("not little-endian: % x", b[:4])
	}
	var out rec
	dec := Decoder(b[1:], 1)
	out.fields(&dec)
	if err := dec.Err(); err != nil || len(dec.Bytes()) != 0 || dec.Offset() != 1+sampleSize {
		t.Fatalf("decode: error %v, %d bytes left, offset %d", err, len(dec.Bytes()), dec.Offset())
	}
	if math.Float64bits(out.g) != math.Float64bits(in.g) || math.Float32bits(out.h) != math.Float32bits(in.h) {
		t.Fatalf("float bits changed: %x %x", math.Float64bits(out.g), math.Float32bits(out.h))
	}
	out.g, in.g = 0, 0
	if out != in {
		t.Fatalf("decoded\n%+v\nencoded\n%+v", out, in)
	}
}

// A decoder cut anywhere reports the first field it could not read, with
// its offset, and decodes everything after it as zero.
func TestTruncated(t *testing.T) {
	in := sample()
	enc := Encoder(nil)
	in.fields(&enc)
	full := enc.Bytes()
	for n := range len(full) {
		out := sample() // non-zero, so that zeroing is seen
		dec := Decoder(full[:n], 10)
		out.fields(&dec)
		err := dec.Err()
		if err == nil || !strings.HasPrefix(err.Error(), "truncated at offset ") {
			t.Fatalf("cut at %d: error %v", n, err)
		}
		if out.k != "" || (n <= sampleSize-11 && out.j) || (n < 8 && out.e != 0) {
			t.Fatalf("cut at %d: fields after the cut not zero: %+v", n, out)
		}
	}
	dec := Decoder(full[:5], 10)
	var out rec
	out.fields(&dec)
	if got, want := dec.Err().Error(), "truncated at offset 13: 2 bytes left, 4 needed"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A string's length is checked against the bytes left before anything is
// allocated; a bool byte other than 0 or 1 is refused; the first error
// stays, whether a truncation or a value the caller refused.
func TestErrors(t *testing.T) {
	dec := Decoder([]byte{0xff, 0xff, 0xff, 0x7f, 'a'}, 0)
	var s string
	dec.Str(&s)
	if err := dec.Err(); err == nil || s != "" {
		t.Fatalf("a 2 GB string in 1 byte: %q, %v", s, err)
	}

	dec = Decoder([]byte{0, 2, 1}, 0)
	var a, b, c bool
	dec.Bool(&a)
	dec.Bool(&b)
	dec.Bool(&c)
	if got, want := dec.Err(), "bool byte 2 at offset 1, want 0 or 1"; got == nil || got.Error() != want || c {
		t.Fatalf("got %v and %v after it, want %q and false", got, c, want)
	}

	dec = Decoder([]byte{1}, 0)
	var x uint8
	dec.U8(&x)
	dec.Fail("first %d", 1)
	dec.Fail("second")
	dec.U8(&x)
	if got := dec.Err(); got == nil || got.Error() != "first 1" {
		t.Fatalf("got %v, want the first Fail", got)
	}

	dec = Decoder(nil, 0)
	dec.U8(&x)
	dec.Fail("after the truncation")
	if got := dec.Err(); got == nil || !strings.HasPrefix(got.Error(), "truncated") {
		t.Fatalf("got %v, want the truncation, which came first", got)
	}

	enc := Encoder(nil)
	enc.Fail("ignored")
	if enc.Err() != nil {
		t.Fatalf("an encoder kept an error: %v", enc.Err())
	}
}

// Decoding allocates nothing but strings, and encoding into a large
// enough buffer nothing at all: a detector Set is encoded for every series
// at every checkpoint.
func TestAllocs(t *testing.T) {
	in := sample()
	in.k = ""
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() {
		enc := Encoder(buf[:0])
		in.fields(&enc)
		var out rec
		dec := Decoder(enc.Bytes(), 0)
		out.fields(&dec)
	}); n != 0 {
		t.Fatalf("%v allocations per round trip", n)
	}
}
