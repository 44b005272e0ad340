// Package statecodec is the field encoding of the state anomalyd saves in
// its checkpoints: a detector Set's, an incident group's, the incident
// stage's. Fields are fixed little-endian, floats as their IEEE 754 bits
// (so every value, NaN payloads and −0 included, comes back exactly), a
// bool as one byte 0 or 1, a string as its u32 length and its bytes, with
// no padding.
//
// One Codec type encodes and decodes, so that a state's layout is written
// once, as a list of fields that a Codec walks in either direction:
//
//	func (s *state) fields(c *statecodec.Codec) {
//		c.I64(&s.start)
//		c.F64(&s.level)
//		c.Bool(&s.open)
//	}
//
// A decoder checks every length against the bytes left and keeps its
// first error: from then on every field decodes as zero and nothing is
// allocated, so a walk needs one error check at the end (Err), not one per
// field. The numeric methods are small enough for the compiler to inline,
// because a detector Set, a thousand bytes of them, is encoded for every
// series at every checkpoint.
//
// It is a leaf package under detectors, the lowest layer that keeps state;
// window imports it too.
package statecodec

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Codec appends fields to a byte slice (Encoder) or decodes them from the
// front of one (Decoder). The zero Codec is a decoder of nothing.
type Codec struct {
	b   []byte
	enc bool
	off int // offset of b[0] in the decoder's input
	// The first error of a decoder: err from Fail, or, if it came first, a
	// truncation (short bytes needed, left bytes left, at offset off),
	// which the numeric methods record without a call so that they stay
	// inlinable. Either empties b, so that every later field decodes as
	// zero.
	err         error
	short, left int
}

// Encoder returns a Codec that appends to dst.
func Encoder(dst []byte) Codec { return Codec{b: dst, enc: true} }

// Decoder returns a Codec that decodes src; base is the offset of src in
// what the caller read, so that errors give offsets in that.
func Decoder(src []byte, base int) Codec { return Codec{b: src, off: base} }

// Encoding reports whether c encodes.
func (c *Codec) Encoding() bool { return c.enc }

// Bytes returns an encoder's output, or what a decoder has not read (nil
// after an error).
func (c *Codec) Bytes() []byte { return c.b }

// Offset returns the offset of the next byte a decoder reads.
func (c *Codec) Offset() int { return c.off }

// Err returns a decoder's first error, or nil.
func (c *Codec) Err() error {
	if c.err == nil && c.short > 0 {
		c.err = fmt.Errorf("truncated at offset %d: %d bytes left, %d needed", c.off, c.left, c.short)
	}
	return c.err
}

// Fail records a decoded value the state cannot hold, as the decoder's
// error if it has none yet; an encoder ignores it. Decoders call it after
// decoding a field to check it.
func (c *Codec) Fail(format string, args ...any) {
	if c.enc || c.err != nil || c.short > 0 {
		return
	}
	c.err = fmt.Errorf(format, args...)
	c.b = nil
}

// Take returns the next n bytes of a decoder, or nil if fewer are left
// (an error).
func (c *Codec) Take(n int) []byte {
	if n >= 0 && len(c.b) >= n {
		b := c.b[:n:n]
		c.b, c.off = c.b[n:], c.off+n
		return b
	}
	if c.err == nil && c.short == 0 {
		c.short, c.left = max(n, 1), len(c.b)
	}
	c.b = nil
	return nil
}

// U8 encodes or decodes *x.
func (c *Codec) U8(x *uint8) {
	if c.enc {
		c.b = append(c.b, *x)
		return
	}
	if len(c.b) >= 1 {
		*x = c.b[0]
		c.b, c.off = c.b[1:], c.off+1
		return
	}
	if c.short == 0 {
		c.short, c.left = 1, 0
	}
	c.b, *x = nil, 0
}

// U16 encodes or decodes *x.
func (c *Codec) U16(x *uint16) {
	if c.enc {
		c.b = binary.LittleEndian.AppendUint16(c.b, *x)
		return
	}
	if len(c.b) >= 2 {
		*x = binary.LittleEndian.Uint16(c.b)
		c.b, c.off = c.b[2:], c.off+2
		return
	}
	if c.short == 0 {
		c.short, c.left = 2, len(c.b)
	}
	c.b, *x = nil, 0
}

// U32 encodes or decodes *x.
func (c *Codec) U32(x *uint32) {
	if c.enc {
		c.b = binary.LittleEndian.AppendUint32(c.b, *x)
		return
	}
	if len(c.b) >= 4 {
		*x = binary.LittleEndian.Uint32(c.b)
		c.b, c.off = c.b[4:], c.off+4
		return
	}
	if c.short == 0 {
		c.short, c.left = 4, len(c.b)
	}
	c.b, *x = nil, 0
}

// U64 encodes or decodes *x.
func (c *Codec) U64(x *uint64) {
	if c.enc {
		c.b = binary.LittleEndian.AppendUint64(c.b, *x)
		return
	}
	if len(c.b) >= 8 {
		*x = binary.LittleEndian.Uint64(c.b)
		c.b, c.off = c.b[8:], c.off+8
		return
	}
	if c.short == 0 {
		c.short, c.left = 8, len(c.b)
	}
	c.b, *x = nil, 0
}

// I64 encodes or decodes *x as its two's complement u64.
func (c *Codec) I64(x *int64) {
	u := uint64(*x)
	c.U64(&u)
	*x = int64(u)
}

// Int encodes or decodes *x as an I64.
func (c *Codec) Int(x *int) {
	u := uint64(*x)
	c.U64(&u)
	*x = int(int64(u))
}

// F64 encodes or decodes the bits of *x.
func (c *Codec) F64(x *float64) {
	if c.enc {
		c.b = binary.LittleEndian.AppendUint64(c.b, math.Float64bits(*x))
		return
	}
	if len(c.b) >= 8 {
		*x = math.Float64frombits(binary.LittleEndian.Uint64(c.b))
		c.b, c.off = c.b[8:], c.off+8
		return
	}
	if c.short == 0 {
		c.short, c.left = 8, len(c.b)
	}
	c.b, *x = nil, 0
}

// F32 encodes or decodes the bits of *x.
func (c *Codec) F32(x *float32) {
	if c.enc {
		c.b = binary.LittleEndian.AppendUint32(c.b, math.Float32bits(*x))
		return
	}
	if len(c.b) >= 4 {
		*x = math.Float32frombits(binary.LittleEndian.Uint32(c.b))
		c.b, c.off = c.b[4:], c.off+4
		return
	}
	if c.short == 0 {
		c.short, c.left = 4, len(c.b)
	}
	c.b, *x = nil, 0
}

// F32s is F32 over every element of xs, in one loop; a decoder fills xs.
func (c *Codec) F32s(xs []float32) {
	if c.enc {
		for _, x := range xs {
			c.b = binary.LittleEndian.AppendUint32(c.b, math.Float32bits(x))
		}
		return
	}
	src := c.Take(4 * len(xs))
	if src == nil {
		clear(xs)
		return
	}
	for i := range xs {
		xs[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// Bool encodes or decodes *x as one byte, 0 or 1. A decoder refuses any
// other byte, so that every state that decodes encodes back to the same
// bytes.
func (c *Codec) Bool(x *bool) {
	var u uint8
	if *x {
		u = 1
	}
	c.U8(&u)
	if u > 1 {
		c.Fail("bool byte %d at offset %d, want 0 or 1", u, c.off-1)
	}
	*x = u == 1
}

// Str encodes or decodes *x as its u32 length and its bytes. A decoder
// checks the length against the bytes left before it allocates.
func (c *Codec) Str(x *string) {
	n := uint32(len(*x))
	c.U32(&n)
	if c.enc {
		c.b = append(c.b, *x...)
		return
	}
	*x = string(c.Take(int(n)))
}
