package incident

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/anomalyd/anomalyd/detectors"
)

// The fields of every type the state holds, pinned: a field added,
// removed, renamed or retyped fails here until it is in the codec
// (Group.fields, member.fields, contributorFields, codec.detail,
// Incident.fields), this list is updated and stateVersion bumped — unless
// the codec reads every older state unchanged (Detail.Rate, a bit no
// older state sets).
func TestStateFieldsPinned(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{Group{}, "p *incident.Params, members map[string]*incident.member, dt int64, first int64, live []incident.Contributor, " +
			"open bool, start int64, end int64, peak float64, opened int, topAtPeak []incident.Contributor"},
		{member{}, "key string, dt int64, last int64, counts [7]float64, exposure float64, records float64, chained float64, " +
			"recT int64, links int, link [8]float32, since int64, live int64, surprise float64, best float64, score float64, " +
			"at int64, detail incident.Detail"},
		{Contributor{}, "Series string, T int64, Score float64, Surprise float64, Detail incident.Detail"},
		{Detail{}, "Series string, Value float64, Expected float64, Lower float64, Upper float64, Score float64, " +
			"Driver detectors.Kind, Rate bool, Record float64, Age uint32"},
		{Incident{}, "ID uint64, Group string, Start int64, End int64, Open bool, Peak float64, Series int, Top []incident.Contributor"},
	} {
		rt := reflect.TypeOf(tc.v)
		var fs []string
		for f := range rt.Fields() {
			fs = append(fs, f.Name+" "+f.Type.String())
		}
		if got := strings.Join(fs, ", "); got != tc.want {
			t.Errorf("%s has fields\n%s\nthe state encodes\n%s\nencode the change, update this list and bump stateVersion", rt, got, tc.want)
		}
	}
}

// fillState sets every field under v (settable, at path) to a
// pseudo-random value that is not zero and that a restore accepts:
// numbers positive and finite, bools true, strings and slices not empty,
// detector kinds valid. A Group's Params and scratch space are left alone,
// its members are filled by the caller.
func fillState(t *testing.T, rng *rand.Rand, v reflect.Value, path string) {
	t.Helper()
	if v.Type() == reflect.TypeFor[detectors.Kind]() {
		v.SetUint(1 + rng.Uint64N(uint64(detectors.KindCombined)))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			name := path + "." + v.Type().Field(i).Name
			switch name {
			case "Group.p", "Group.live", "Group.members":
				continue
			}
			f := v.Field(i)
			fillState(t, rng, reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem(), name)
		}
	case reflect.Array:
		for i := range v.Len() {
			fillState(t, rng, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Slice:
		n := 1 + rng.IntN(MaxTop)
		v.Set(reflect.MakeSlice(v.Type(), n, n))
		for i := range v.Len() {
			fillState(t, rng, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		v.SetString(fmt.Sprintf("{job=%q}", fmt.Sprint(rng.Uint32())))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Float32, reflect.Float64:
		v.SetFloat((1 + rng.Float64()) * math.Pow(10, float64(rng.IntN(13)-6)))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(rng.Uint64()>>(65-v.Type().Bits())) + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(rng.Uint64()>>(64-v.Type().Bits()) | 1)
	default:
		t.Fatalf("%s is a %s: encode it in the codec and teach this test", path, v.Type())
	}
}

// randomGroup is a Group with p whose every field is filled (fillState)
// and n members, half of whose Detail names their own series.
func randomGroup(t *testing.T, rng *rand.Rand, p *Params, n int) *Group {
	g := NewGroup(p)
	fillState(t, rng, reflect.ValueOf(g).Elem(), "Group")
	for i := range n {
		m := new(member)
		fillState(t, rng, reflect.ValueOf(m).Elem(), "member")
		m.key = fmt.Sprintf("{__name__=\"m%d\"}", i)
		if i%2 == 0 {
			m.detail.Series = m.key
		}
		g.members[m.key] = m
	}
	return g
}

// Every field of a Group, of its members and contributors, whatever its
// value, survives AppendState and RestoreGroup: a field added but not
// encoded keeps its random value here and comes back zero.
func TestGroupStateComplete(t *testing.T) {
	p := DefaultParams()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		g := randomGroup(t, rng, &p, round%5)
		b := g.AppendState(nil)
		next := []byte("next")
		r, rest, err := RestoreGroup(&p, append(b, next...))
		if err != nil || !bytes.Equal(rest, next) {
			t.Fatalf("round %d: rest %q, error %v", round, rest, err)
		}
		if !reflect.DeepEqual(r, g) {
			t.Fatalf("round %d: restored group differs:\n%+v\nsaved\n%+v\na field is missing from the codec (and stateVersion needs a bump)", round, r, g)
		}
		for k, m := range g.members {
			if !reflect.DeepEqual(r.members[k], m) {
				t.Fatalf("round %d: member %s restored as\n%+v\nsaved\n%+v", round, k, r.members[k], m)
			}
		}
		if again := r.AppendState(nil); !bytes.Equal(again, b) {
			t.Fatalf("round %d: the restored group encodes differently", round)
		}
	}
}

// evidence is a realistic stream for a group of n series: quiet noise,
// a series setting new highs now and then (three in a row once), and at
// shift ten series moving together for 30 samples.
type evidence struct {
	n     int
	score [][]float64
	rec   [][]float64
}

func newEvidence(n, steps, shift int) *evidence {
	rng := rand.New(rand.NewPCG(21, 22))
	e := &evidence{n: n}
	for i := range steps {
		sc, rec := make([]float64, n), make([]float64, n)
		for k := range n {
			sc[k] = noise(rng, 1.0/500)
			switch {
			case k < 10 && i >= shift && i < shift+30:
				sc[k] = 2 + float64(k%3)
			case k == n-1 && (i%(day/3) == 7 || i >= shift/2 && i < shift/2+3):
				sc[k], rec[k] = 20, 1.3
			}
		}
		e.score, e.rec = append(e.score, sc), append(e.rec, rec)
	}
	return e
}

// feed gives g step i of e and evaluates it.
func (e *evidence) feed(g *Group, i int, top *[]Contributor) State {
	t := 1 + int64(i)*step
	for k := range e.n {
		d := Detail{Series: fmt.Sprintf("s%03d", k), Score: e.score[i][k], Value: float64(k), Record: e.rec[i][k], Age: uint32(i)}
		g.ObserveDetail(d.Series, t, step, d.Score, d)
	}
	return g.Evaluate(t, e.n, top)
}

// A Group restored from a snapshot goes on exactly as the one saved:
// every later State and every contributor list is identical, whenever the
// snapshot is taken (before any evidence, quiet, in a chain of records,
// during an incident, as it closes).
func TestGroupStateResume(t *testing.T) {
	p := DefaultParams()
	const n, shift = 16, day + day/2
	steps := 2 * day
	e := newEvidence(n, steps, shift)
	saved := NewGroup(&p)
	var openedAt []int
	snapshots := map[int][]byte{}
	at := []int{0, 50, shift / 2, shift/2 + 1, day, shift + 2, shift + 35, shift + 100}
	for i := range steps {
		if slices.Contains(at, i) {
			snapshots[i] = saved.AppendState(nil)
		}
		if st := e.feed(saved, i, nil); st.Opened {
			openedAt = append(openedAt, i)
		}
	}
	if !slices.Contains(openedAt, shift) {
		t.Fatalf("incidents opened at %v; the test needs one at the shift, step %d", openedAt, shift)
	}
	for _, from := range at {
		a, _, err := RestoreGroup(&p, snapshots[from]) // the saved group, at from
		if err != nil {
			t.Fatal(err)
		}
		b, rest, err := RestoreGroup(&p, a.AppendState(nil))
		if err != nil || len(rest) != 0 {
			t.Fatalf("snapshot at %d: %d bytes left, error %v", from, len(rest), err)
		}
		var topA, topB []Contributor
		for i := from; i < steps; i++ {
			sa, sb := e.feed(a, i, &topA), e.feed(b, i, &topB)
			if sa != sb || !reflect.DeepEqual(topA, topB) {
				t.Fatalf("snapshot at %d, step %d: restored %+v %+v, saved %+v %+v", from, i, sb, topB, sa, topA)
			}
		}
		if a.Opened() != len(openedAt) || b.Opened() != a.Opened() {
			t.Errorf("snapshot at %d: opened %d restored, %d saved, want %d", from, b.Opened(), a.Opened(), len(openedAt))
		}
		if !bytes.Equal(a.AppendState(nil), b.AppendState(nil)) {
			t.Errorf("snapshot at %d: the states differ at the end", from)
		}
	}
}

// The size of a group's state: the encoding's fixed sizes are what
// AppendState writes.
func TestGroupStateSize(t *testing.T) {
	p := DefaultParams()
	g := NewGroup(&p)
	if got := len(g.AppendState(nil)); got != 1+6*8+1+4+4 {
		t.Errorf("an empty group takes %d bytes, want %d", got, 1+6*8+1+4+4)
	}
	g.Observe("k", 1, 15000, 3) // a Detail{} with no series: encoded in full
	if got, want := len(g.AppendState(nil)), 1+6*8+1+4+4+memberSize+1+4; got != want {
		t.Errorf("a group of one member with key \"k\" takes %d bytes, want %d", got, want)
	}
	inc := Incident{Group: "g", Top: make([]Contributor, 2)}
	for i := range inc.Top {
		inc.Top[i].Series = "s"
		inc.Top[i].Detail.Series = "s"
	}
	if got, want := len(inc.AppendState(nil)), incidentSize+1+2*(contributorSize+1); got != want {
		t.Errorf("an incident of two contributors takes %d bytes, want %d", got, want)
	}
}

// Every proper prefix of a state is refused, without a panic.
func TestRestoreGroupTruncated(t *testing.T) {
	p := DefaultParams()
	e := newEvidence(12, 300, 200)
	g := NewGroup(&p)
	for i := range 220 {
		e.feed(g, i, nil)
	}
	state := g.AppendState(nil)
	for n := range len(state) {
		r, rest, err := RestoreGroup(&p, state[:n])
		if err == nil || r != nil || rest != nil {
			t.Fatalf("%d of %d bytes: group %v, rest %d bytes, error %v, want an error", n, len(state), r != nil, len(rest), err)
		}
	}
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "cannot restore incident group: empty input"},
		{10, "cannot restore incident group: truncated at offset 9: 1 bytes left, 8 needed"},
	} {
		if _, _, err := RestoreGroup(&p, state[:tc.n]); err == nil || err.Error() != tc.want {
			t.Errorf("%d bytes: error %v, want %s", tc.n, err, tc.want)
		}
	}
}

// A state no Group can hold is refused; values a Group can hold (an
// infinite surprise, any Detail value) restore as they are.
func TestRestoreGroupInvalid(t *testing.T) {
	p := DefaultParams()
	base := NewGroup(&p)
	base.ObserveDetail("a", 15000, 15000, 3, Detail{Series: "x", Score: 3, Record: 2})
	base.ObserveDetail("b", 15000, 15000, 2, Detail{Series: "b", Score: 2})
	base.Evaluate(15000, 2, nil)
	base.topAtPeak = []Contributor{{Series: "a", Surprise: 3}}
	clone := func() *Group {
		r, _, err := RestoreGroup(&p, base.AppendState(nil))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f := func(name string, mod func(g *Group) []byte, want string) {
		t.Helper()
		g := clone()
		state := mod(g)
		if state == nil {
			state = g.AppendState(nil)
		}
		r, rest, err := RestoreGroup(&p, state)
		if want == "" {
			if err != nil || len(rest) != 0 {
				t.Fatalf("%s: %d bytes left, error %v", name, len(rest), err)
			}
			if !bytes.Equal(r.AppendState(nil), state) {
				t.Fatalf("%s: restored state encodes differently", name)
			}
			return
		}
		if err == nil || err.Error() != "cannot restore incident group: "+want || r != nil || rest != nil {
			t.Errorf("%s: group %v, rest %q, error\n%v\nwant\n%s", name, r != nil, rest, err, want)
		}
	}
	staleNaN := math.Float64frombits(0x7ff0000000000002)
	f("exposure NaN", func(g *Group) []byte { g.members["a"].exposure = staleNaN; return nil }, "exposure is NaN")
	f("count +Inf", func(g *Group) []byte { g.members["b"].counts[3] = math.Inf(1); return nil }, "evidence count is +Inf")
	f("negative records", func(g *Group) []byte { g.members["a"].records = -1; return nil }, "record count is -1")
	f("chained NaN", func(g *Group) []byte { g.members["a"].chained = math.NaN(); return nil }, "chained record count is NaN")
	f("negative chain", func(g *Group) []byte { g.members["a"].links = -1; return nil }, "chain length is -1")
	f("link NaN", func(g *Group) []byte { g.members["a"].link[5] = float32(math.NaN()); return nil }, "chain link surprise is NaN")
	f("negative surprise", func(g *Group) []byte { g.members["a"].surprise = -0.5; return nil }, "surprise is -0.5")
	f("best -Inf", func(g *Group) []byte { g.members["a"].best = math.Inf(-1); return nil }, "best surprise is -Inf")
	f("score NaN", func(g *Group) []byte { g.members["b"].score = math.NaN(); return nil }, `member "b": score is NaN`)
	f("negative member interval", func(g *Group) []byte { g.members["b"].dt = -15000; return nil }, "member interval is -15000")
	f("negative group interval", func(g *Group) []byte { g.dt = -1; return nil }, "group interval is -1")
	f("peak +Inf", func(g *Group) []byte { g.peak = math.Inf(1); return nil }, "peak score is +Inf")
	f("negative opened", func(g *Group) []byte { g.opened = -2; return nil }, "incidents opened is -2")
	f("contributor surprise NaN", func(g *Group) []byte { g.topAtPeak[0].Surprise = math.NaN(); return nil }, "contributor surprise is NaN")
	f("detector kind", func(g *Group) []byte { g.members["a"].detail.Driver = 9; return nil }, `series "a": detector kind 9`)
	f("version 0", func(g *Group) []byte { b := g.AppendState(nil); b[0] = 0; return b }, "layout version 0, want 1")
	f("version 2", func(g *Group) []byte { b := g.AppendState(nil); b[0] = 2; return b }, "layout version 2, want 1")
	f("bool byte", func(g *Group) []byte { b := g.AppendState(nil); b[17] = 2; return b }, "bool byte 2 at offset 17, want 0 or 1")
	f("absurd member count", func(g *Group) []byte {
		b := g.AppendState(nil)
		i := bytes.LastIndex(b, []byte{2, 0, 0, 0}) // the member count, before member a
		copy(b[i:], []byte{0xff, 0xff, 0xff, 0xff})
		return b
	}, fmt.Sprintf("4294967295 members need at least %d bytes, %d left", 4294967295*memberSize, 2*memberSize+1+1+5))
	// Where member keys and Detail series lie: a's Detail names x, b's
	// names b (one flag byte).
	keyA := func(b []byte) int { return bytes.LastIndex(b, []byte{1, 0, 0, 0, 'a'}) }
	keyB := func(b []byte) int { return bytes.LastIndex(b, []byte{1, 0, 0, 0, 'b'}) }
	f("keys out of order", func(g *Group) []byte {
		b := g.AppendState(nil)
		b[keyA(b)+4], b[keyB(b)+4] = 'b', 'a'
		return b
	}, `member "a" after "b": keys not in strictly increasing order`)
	f("duplicate key", func(g *Group) []byte {
		b := g.AppendState(nil)
		b[keyB(b)+4] = 'a'
		return b
	}, `member "a" after "a": keys not in strictly increasing order`)
	b := base.AppendState(nil)
	flagB := keyB(b) + 1 + memberSize - detailSize
	f("series flag", func(g *Group) []byte {
		b := g.AppendState(nil)
		b[flagB] = 7
		return b
	}, fmt.Sprintf("series flag 7 at offset %d, want 0 or 1", flagB))
	flagA := bytes.Index(b, []byte{1, 1, 0, 0, 0, 'x'})
	f("series in full equal to the key", func(g *Group) []byte {
		b := g.AppendState(nil)
		b[flagA+5] = 'a'
		return b
	}, fmt.Sprintf(`series "a" at offset %d encoded in full, where it is the key`, flagA))
	f("infinite surprise", func(g *Group) []byte {
		g.members["a"].surprise, g.members["a"].link[0] = math.Inf(1), float32(math.Inf(1))
		return nil
	}, "")
	f("detail values", func(g *Group) []byte {
		g.members["a"].detail.Value, g.members["a"].detail.Expected = math.NaN(), math.Inf(-1)
		return nil
	}, "")
}

// A group saved with more members than incidents.max_members now allows
// keeps those of the most recent evidence.
func TestRestoreGroupMaxMembers(t *testing.T) {
	p := DefaultParams()
	g := NewGroup(&p)
	for k := range 10 {
		g.Observe(fmt.Sprintf("s%d", k), 1+int64(k)*step, step, 2)
	}
	state := g.AppendState(nil)
	q := p
	q.MaxMembers = 4
	r, _, err := RestoreGroup(&q, state)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range r.members {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"s6", "s7", "s8", "s9"}; !slices.Equal(keys, want) {
		t.Errorf("members %v, want the newest %v", keys, want)
	}
}

// An Incident survives its encoding; one with more contributors than an
// incident keeps is refused.
func TestIncidentState(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 10 {
		var inc Incident
		fillState(t, rng, reflect.ValueOf(&inc).Elem(), "Incident")
		if round%2 == 0 {
			inc.Top = nil
		}
		b := inc.AppendState(nil)
		r, rest, err := RestoreIncident(append(b, 9))
		if err != nil || !bytes.Equal(rest, []byte{9}) || !reflect.DeepEqual(r, inc) {
			t.Fatalf("round %d: restored %+v, rest %v, error %v; saved %+v", round, r, rest, err, inc)
		}
	}
	inc := Incident{ID: 7, Top: make([]Contributor, MaxTop+1)}
	if _, _, err := RestoreIncident(inc.AppendState(nil)); err == nil ||
		err.Error() != "cannot restore incident: incident 7: 11 contributors, at most 10 are kept" {
		t.Errorf("error %v", err)
	}
}

// BenchmarkGroupState: AppendState and RestoreGroup of a target's group
// after a day: 200 series with node_exporter's label sets, each of which
// showed evidence by chance (so all are members), with an incident at the
// end. Reports the state's size per group and per member.
func BenchmarkGroupState(b *testing.B) {
	p := DefaultParams()
	g := NewGroup(&p)
	rng := rand.New(rand.NewPCG(51, 52))
	const n = 200
	keys := make([]string, n)
	for k := range keys {
		keys[k] = fmt.Sprintf(`{__name__="node_cpu_seconds_total",cpu="%d",instance="host-17.example.com:9100",job="node",mode="idle"}`, k)
	}
	for i := range day {
		t := 1 + int64(i)*step
		for k, key := range keys {
			score := noise(rng, 1.0/500)
			if i >= day-20 && k < 20 {
				score = 3
			}
			if score >= p.MinScore {
				g.ObserveDetail(key, t, step, score, Detail{Series: key, Score: score, Value: float64(k), Age: uint32(i)})
			}
		}
		g.Evaluate(t, n, nil)
	}
	state := g.AppendState(nil)
	if len(g.members) != n || !g.open {
		b.Fatalf("%d members, incident open %v; the benchmark wants %d and one", len(g.members), g.open, n)
	}
	b.Run("append", func(b *testing.B) {
		dst := make([]byte, 0, len(state))
		for b.Loop() {
			dst = g.AppendState(dst[:0])
		}
		b.ReportMetric(float64(len(state)), "B/group")
		b.ReportMetric(float64(len(state))/n, "B/member")
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := RestoreGroup(&p, state); err != nil {
				b.Fatal(err)
			}
		}
	})
}
