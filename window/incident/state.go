package incident

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/detectors/statecodec"
)

// stateVersion is the first byte of every state this package writes
// (Group.AppendState, Incident.AppendState): the layout of what follows.
// Bump it whenever a field is added, removed, reordered or resized, or
// changes meaning: a restore refuses any other version and the group
// starts cold, which is safe, whereas a state read under the wrong layout
// is wrong silently. TestGroupStateComplete fails when a field is added
// but not encoded.
const stateVersion = 1

// Fixed sizes of the encoding, in bytes, without their strings: the
// least a decoder must find left before it allocates for a count.
const (
	// detailSize: the series flag u8 (see codec.strOr), Value, Expected,
	// Lower, Upper, Score f64, Driver u8, Record f64, Age u32.
	detailSize = 1 + 5*8 + 1 + 8 + 4
	// contributorSize: Series (u32 length), T i64, Score, Surprise f64,
	// Detail.
	contributorSize = 4 + 3*8 + detailSize
	// memberSize: key (u32 length), dt, last i64, counts, exposure,
	// records, chained f64, recT, links i64, link f32 ring, since, live
	// i64, surprise, best, score f64, at i64, detail.
	memberSize = 4 + 2*8 + numBuckets*8 + 3*8 + 2*8 + maxLinks*4 + 2*8 + 3*8 + 8 + detailSize
	// incidentSize: version u8, ID u64, Group (u32 length), Start, End
	// i64, Open u8, Peak f64, Series i64, len(Top) u32.
	incidentSize = 1 + 8 + 4 + 2*8 + 1 + 8 + 8 + 4
)

// AppendState appends the complete state of g to dst and returns the
// extended slice; g is not changed. Everything of g is encoded but its
// Params (RestoreGroup is given them) and Evaluate's scratch space:
//
//	version u8 (stateVersion)
//	dt, first i64, open u8, start, end i64, peak f64, opened i64
//	len(topAtPeak) u32, each contributor (see contributorFields)
//	len(members) u32, each member (see memberFields), sorted by key
//
// Fixed little-endian, floats as their IEEE 754 bits, bools one byte 0 or
// 1, a string as its u32 length and bytes. The members are sorted so that
// the same group always encodes to the same bytes. A Detail's series is
// usually the key of the member or contributor holding it; it is then
// encoded as one byte, not twice (codec.strOr).
func (g *Group) AppendState(dst []byte) []byte {
	c := codec{statecodec.Encoder(append(dst, stateVersion))}
	g.fields(&c)
	return c.Bytes()
}

// RestoreGroup returns the Group that AppendState encoded at the start of
// src, to be used with p from then on, and the rest of src. A restored
// Group gives, sample for sample, the States the saved one would have
// given, as long as p is the Params it was saved with.
//
// It returns an error, and a nil Group and rest, for an empty or
// truncated src, a layout version other than stateVersion, a count
// larger than the bytes left could hold, and for what no Group can hold:
// members not in strictly increasing key order, a NaN or ±Inf where the
// group keeps values finite (the decayed counts and exposure, the peak),
// a negative count, interval or surprise, a NaN surprise or score, a
// detector kind that does not exist, a bool byte other than 0 or 1, a
// Detail series encoded in full where it equals the key. These checks
// keep a restored Group from panicking or scoring NaN; the rest is trusted
// (a checkpoint file's checksum protects the bytes). A Detail's values
// are what the group was given and only reported, so any value restores.
//
// Settings that changed since the state was saved are taken as they are,
// except incidents.max_members: a group with more members than
// p.MaxMembers keeps those of most recent evidence, as it would have
// evicted the others.
func RestoreGroup(p *Params, src []byte) (*Group, []byte, error) {
	if err := checkVersion(src); err != nil {
		return nil, nil, fmt.Errorf("cannot restore incident group: %w", err)
	}
	g := NewGroup(p)
	c := codec{statecodec.Decoder(src[1:], 1)}
	g.fields(&c)
	if c.Err() != nil {
		return nil, nil, fmt.Errorf("cannot restore incident group: %w", c.Err())
	}
	g.trim()
	return g, c.Bytes(), nil
}

func checkVersion(src []byte) error {
	switch {
	case len(src) == 0:
		return errors.New("empty input")
	case src[0] != stateVersion:
		return fmt.Errorf("layout version %d, want %d", src[0], stateVersion)
	}
	return nil
}

// fields walks every field of g in the order of the encoding, appending
// (c.Encoding()) or decoding and checking each. One list serves both directions,
// so they cannot disagree.
func (g *Group) fields(c *codec) {
	c.I64(&g.dt)
	c.nonNegative("group interval", g.dt)
	c.I64(&g.first)
	c.Bool(&g.open)
	c.I64(&g.start)
	c.I64(&g.end)
	c.F64(&g.peak)
	if !c.Encoding() && !(g.peak >= 0 && g.peak <= math.MaxFloat64) {
		c.Fail("peak score is %g", g.peak)
	}
	c.Int(&g.opened)
	c.nonNegative("incidents opened", int64(g.opened))
	c.contributors(&g.topAtPeak, "contributor at the peak")

	n := len(g.members)
	c.count(&n, memberSize, "members")
	if c.Encoding() {
		for _, k := range slices.Sorted(maps.Keys(g.members)) {
			g.members[k].fields(c)
		}
		return
	}
	prev := ""
	for i := range n {
		m := new(member)
		m.fields(c)
		if c.Err() != nil {
			return
		}
		if i > 0 && m.key <= prev {
			c.Fail("member %q after %q: keys not in strictly increasing order", m.key, prev)
			return
		}
		prev = m.key
		g.members[m.key] = m
	}
}

// fields walks every field of m; see Group.fields.
func (m *member) fields(c *codec) {
	c.Str(&m.key)
	c.I64(&m.dt)
	c.nonNegative("member interval", m.dt)
	c.I64(&m.last)
	// Decayed counts of samples: finite and not negative.
	for b := range m.counts {
		c.F64(&m.counts[b])
		c.count64(m.counts[b], "evidence count")
	}
	c.F64(&m.exposure)
	c.count64(m.exposure, "exposure")
	c.F64(&m.records)
	c.count64(m.records, "record count")
	c.F64(&m.chained)
	c.count64(m.chained, "chained record count")
	c.I64(&m.recT)
	c.Int(&m.links)
	// Not negative: the ring is indexed links mod its length.
	c.nonNegative("chain length", int64(m.links))
	for i := range m.link {
		c.F32(&m.link[i])
		c.surprise(float64(m.link[i]), "chain link surprise")
	}
	c.I64(&m.since)
	c.I64(&m.live)
	// A surprise is a logarithm floored at 0; +Inf when a score lies so
	// far out that its chance underflows, which the group can hold.
	c.F64(&m.surprise)
	c.surprise(m.surprise, "surprise")
	c.F64(&m.best)
	c.surprise(m.best, "best surprise")
	c.F64(&m.score)
	if !c.Encoding() && math.IsNaN(m.score) {
		c.Fail("member %q: score is NaN", m.key)
	}
	c.I64(&m.at)
	c.detail(&m.detail, m.key)
}

// contributorFields walks every field of x.
func contributorFields(c *codec, x *Contributor) {
	c.Str(&x.Series)
	c.I64(&x.T)
	c.F64(&x.Score)
	c.F64(&x.Surprise)
	c.surprise(x.Surprise, "contributor surprise")
	c.detail(&x.Detail, x.Series)
}

// AppendState appends inc to dst and returns the extended slice:
//
//	version u8 (stateVersion), ID u64, Group str, Start, End i64, Open u8,
//	Peak f64, Series i64, len(Top) u32, each contributor
//
// in the encoding of Group.AppendState.
func (inc *Incident) AppendState(dst []byte) []byte {
	c := codec{statecodec.Encoder(append(dst, stateVersion))}
	inc.fields(&c)
	return c.Bytes()
}

// RestoreIncident returns the Incident that Incident.AppendState encoded
// at the start of src and the rest of src. Errors are those of
// RestoreGroup, and a Peak that is NaN, ±Inf or negative, a negative
// Series or more than MaxTop contributors (what Evaluate never gives).
func RestoreIncident(src []byte) (Incident, []byte, error) {
	var inc Incident
	if err := checkVersion(src); err != nil {
		return Incident{}, nil, fmt.Errorf("cannot restore incident: %w", err)
	}
	c := codec{statecodec.Decoder(src[1:], 1)}
	inc.fields(&c)
	if c.Err() != nil {
		return Incident{}, nil, fmt.Errorf("cannot restore incident: %w", c.Err())
	}
	return inc, c.Bytes(), nil
}

func (inc *Incident) fields(c *codec) {
	c.U64(&inc.ID)
	c.Str(&inc.Group)
	c.I64(&inc.Start)
	c.I64(&inc.End)
	c.Bool(&inc.Open)
	c.F64(&inc.Peak)
	if !c.Encoding() && !(inc.Peak >= 0 && inc.Peak <= math.MaxFloat64) {
		c.Fail("incident %d: peak score is %g", inc.ID, inc.Peak)
	}
	c.Int(&inc.Series)
	c.nonNegative("incident series", int64(inc.Series))
	c.contributors(&inc.Top, "incident contributor")
	if len(inc.Top) > MaxTop {
		c.Fail("incident %d: %d contributors, at most %d are kept", inc.ID, len(inc.Top), MaxTop)
	}
}

// codec is the shared state codec with the decoders' checks of this
// package's states.
type codec struct{ statecodec.Codec }

// strOr is str for a string that usually equals ref: one byte 0 then,
// else 1 and the string. A 1 followed by ref is refused, so that a
// restored state encodes back to the same bytes.
func (c *codec) strOr(x *string, ref string) {
	var full uint8
	if *x != ref {
		full = 1
	}
	off := c.Offset()
	c.U8(&full)
	switch {
	case c.Err() != nil:
	case full == 0:
		*x = ref
	case full == 1:
		c.Str(x)
		if *x == ref {
			c.Fail("series %q at offset %d encoded in full, where it is the key", ref, off)
		}
	default:
		c.Fail("series flag %d at offset %d, want 0 or 1", full, off)
	}
}

// count is a u32 number of elements of at least size bytes each; a
// decoder refuses more than the bytes left can hold, before anything is
// allocated for them.
func (c *codec) count(n *int, size int, what string) {
	u := uint32(*n)
	c.U32(&u)
	if !c.Encoding() && c.Err() == nil && uint64(u)*uint64(size) > uint64(len(c.Bytes())) {
		c.Fail("%d %s need at least %d bytes, %d left", u, what, uint64(u)*uint64(size), len(c.Bytes()))
	}
	*n = int(u)
}

func (c *codec) contributors(xs *[]Contributor, what string) {
	n := len(*xs)
	c.count(&n, contributorSize, what+"s")
	if !c.Encoding() {
		if c.Err() != nil || n == 0 {
			return
		}
		*xs = make([]Contributor, n)
	}
	for i := range *xs {
		contributorFields(c, &(*xs)[i])
	}
}

// detailRateBit marks Detail.Rate in a Detail's driver byte.
const detailRateBit = 0x80

func (c *codec) detail(d *Detail, key string) {
	c.strOr(&d.Series, key)
	c.F64(&d.Value)
	c.F64(&d.Expected)
	c.F64(&d.Lower)
	c.F64(&d.Upper)
	c.F64(&d.Score)
	// Rate rides in the driver byte's top bit, which a kind never sets, so
	// states written before it restore as Rate false.
	drv := uint8(d.Driver)
	if d.Rate {
		drv |= detailRateBit
	}
	c.U8(&drv)
	d.Driver, d.Rate = detectors.Kind(drv&^detailRateBit), drv&detailRateBit != 0
	if d.Driver > detectors.KindCombined {
		c.Fail("series %q: detector kind %d", key, d.Driver)
	}
	c.F64(&d.Record)
	c.U32(&d.Age)
}

// nonNegative refuses a negative decoded integer.
func (c *codec) nonNegative(what string, x int64) {
	if x < 0 {
		c.Fail("%s is %d", what, x)
	}
}

// count64 refuses a decoded decayed count that is not finite and ≥ 0.
func (c *codec) count64(x float64, what string) {
	if !(x >= 0 && x <= math.MaxFloat64) {
		c.Fail("%s is %g", what, x)
	}
}

// surprise refuses a decoded surprise that is NaN or negative (+Inf is one
// a group can hold).
func (c *codec) surprise(x float64, what string) {
	if !(x >= 0) {
		c.Fail("%s is %g", what, x)
	}
}

// trim evicts the members of oldest evidence beyond p.MaxMembers, as join
// does one at a time (ties by key, so that it is deterministic).
func (g *Group) trim() {
	if len(g.members) <= g.p.MaxMembers {
		return
	}
	ms := slices.Collect(maps.Values(g.members))
	slices.SortFunc(ms, func(a, b *member) int {
		return cmp.Or(cmp.Compare(b.last, a.last), strings.Compare(a.key, b.key)) // newest first
	})
	for _, m := range ms[max(g.p.MaxMembers, 0):] {
		delete(g.members, m.key)
	}
}
