package window

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/window/incident"
)

// The fields of the stage and of a group, pinned: a field added, removed
// or renamed fails here until State encodes it or says why not, this list
// is updated and incidentsStateVersion bumped. Encoded: nextID, recent,
// groups; of a group key, lastT, peak, series, open, g. Not: n (the
// shards' joins rebuild it), top (Evaluate refills it before each read),
// pending and pendingT (State flushes them), and the rest, which are
// the process's (queue, goroutine, publication, counters).
func TestIncidentsStateFields(t *testing.T) {
	for _, tc := range []struct {
		rt   reflect.Type
		want string
	}{
		{reflect.TypeFor[groupState](), "key g n lastT peak series open top pending pendingT"},
		{reflect.TypeFor[Incidents](), "p maxGroups in dropped quit done stopOnce started ctl direct " +
			"groups dirty nextID recent restoring out sent sentT status opened limit"},
	} {
		var fs []string
		for f := range tc.rt.Fields() {
			fs = append(fs, f.Name)
		}
		if got := strings.Join(fs, " "); got != tc.want {
			t.Errorf("%s has fields\n%s\nthe state was written for\n%s\nencode the change (or say why not), update this list and bump incidentsStateVersion",
				tc.rt, got, tc.want)
		}
	}
}

// Groups of the stage scenario: a and b have twelve series each and shift
// twice, c has four series that show no evidence.
const (
	groupA = "job\xffa\xff"
	groupB = "job\xffb\xff"
	groupC = "job\xffc\xff"
)

const scenarioT0, scenarioStep = int64(1_700_000_000_000), int64(15_000)

// stageScenario is the events the shards send for groups a, b and c, per
// step of 15 s: every series joins at step 0; then the evidence of each
// (a combined score of at least 1): now and then by chance, and ten series
// of a at once in steps 300-329 and 600-639, of b in 450-469 and 700-719.
type stageScenario struct{ events [][]incidentEvent }

func scenarioSeries(group string, k int) string {
	return fmt.Sprintf("{job=%q,s=\"%d\"}", group[4:5], k)
}

func newStageScenario(steps int) *stageScenario {
	rng := rand.New(rand.NewPCG(41, 42))
	sc := &stageScenario{events: make([][]incidentEvent, steps)}
	size := map[string]int{groupA: 12, groupB: 12, groupC: 4}
	for _, g := range []string{groupA, groupB, groupC} {
		for range size[g] {
			sc.events[0] = append(sc.events[0], incidentEvent{kind: eventJoin, group: g, t: scenarioT0})
		}
	}
	in := func(i int, spans ...int) bool {
		for j := 0; j < len(spans); j += 2 {
			if i >= spans[j] && i < spans[j+1] {
				return true
			}
		}
		return false
	}
	for i := range steps {
		t := scenarioT0 + int64(i)*scenarioStep
		for _, g := range []string{groupA, groupB} {
			shift := in(i, 300, 330, 600, 640) && g == groupA || in(i, 450, 470, 700, 720) && g == groupB
			for k := range size[g] {
				score := rng.Float64() * 0.8
				if rng.Float64() < 1.0/500 {
					score = 1 + rng.ExpFloat64()*0.5
				}
				if shift && k < 10 {
					score = 2 + float64(k%3)
				}
				if score < 1 {
					continue
				}
				d := incident.Detail{Series: scenarioSeries(g, k), Score: score, Value: float64(k)}
				sc.events[i] = append(sc.events[i], incidentEvent{kind: eventEvidence, group: g, t: t, dt: scenarioStep, detail: d})
			}
		}
	}
	return sc
}

// step hands s the events of step i, as its goroutine would (evaluating
// once its queue is empty), and publishes every fourth step.
func (sc *stageScenario) step(s *Incidents, i int) (published bool) {
	for _, e := range sc.events[i] {
		s.handle(e)
	}
	s.flush()
	if i%4 == 3 {
		s.publish(scenarioT0 + int64(i)*scenarioStep + 1)
		return true
	}
	return false
}

func newTestIncidents() *Incidents {
	return NewIncidents(incident.DefaultParams(), 10, nil, prometheus.NewRegistry())
}

// stateAt returns the scenario's stage after steps steps and its state.
func stateAt(t testing.TB, sc *stageScenario, steps int) (*Incidents, []byte) {
	t.Helper()
	s := newTestIncidents()
	for i := range steps {
		sc.step(s, i)
	}
	b, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

// A stage restored from its state, once its series have joined again,
// goes on as the saved one: the same groups, incidents, IDs and counts
// published at every step, a new incident taking the next ID, and the
// same state at the end. Group c, none of whose series come back, goes.
func TestIncidentsStateRoundTrip(t *testing.T) {
	const restart, steps = 610, 800
	sc := newStageScenario(steps)
	saved, state := stateAt(t, sc, restart)
	st := saved.Status()
	var open, closed []uint64
	for _, inc := range st.Incidents {
		if inc.Open {
			open = append(open, inc.ID)
		} else {
			closed = append(closed, inc.ID)
		}
	}
	if len(open) != 1 || len(closed) < 2 {
		t.Fatalf("at the restart the stage has open incidents %v, closed %v; the test needs one open and two closed", open, closed)
	}

	restored := newTestIncidents()
	if err := restored.Restore(state); err != nil {
		t.Fatal(err)
	}
	if b, err := restored.State(); err != nil || !bytes.Equal(b, state) {
		t.Fatalf("the restored stage's state differs from the one it was restored from (error %v)", err)
	}
	// The restart: the shards restore the series of a and b and join them
	// again; c's series are gone (for the saved stage, they leave).
	for _, g := range []string{groupA, groupB} {
		for range 12 {
			restored.handle(incidentEvent{kind: eventJoin, group: g, t: scenarioT0})
		}
	}
	restored.RestoreDone()
	restored.handle(<-restored.in)
	for range 4 {
		saved.handle(incidentEvent{kind: eventLeave, group: groupC, t: scenarioT0})
	}
	if _, ok := restored.groups[groupC]; ok {
		t.Fatal("group c, none of whose series came back, is still there after RestoreDone")
	}

	for i := restart; i < steps; i++ {
		sc.step(saved, i)
		if sc.step(restored, i) && !reflect.DeepEqual(saved.Status(), restored.Status()) {
			t.Fatalf("step %d: restored stage published\n%+v\nthe saved one\n%+v", i, restored.Status(), saved.Status())
		}
	}
	final := restored.Status()
	var ids []uint64
	for _, inc := range final.Incidents {
		ids = append(ids, inc.ID)
	}
	next := slices.Max(append(open, closed...)) + 1
	if !slices.Contains(ids, open[0]) || !slices.Contains(ids, closed[0]) || !slices.Contains(ids, next) {
		t.Errorf("incidents after the restart %v; want the restored %v and %v and a new one, %d", ids, open, closed, next)
	}
	if restored.opened.Load() == 0 || restored.opened.Load() >= uint64(len(ids)) {
		t.Errorf("anomalyd_incidents_opened_total %d after the restart; want those this process opened only", restored.opened.Load())
	}
	a, _ := saved.State()
	b, _ := restored.State()
	if !bytes.Equal(a, b) {
		t.Error("the states differ at the end")
	}
}

// checkEmpty fails unless s is the empty stage NewIncidents makes.
func checkEmpty(t *testing.T, what string, s *Incidents) {
	t.Helper()
	if len(s.groups) != 0 || s.nextID != 0 || s.recent != nil || s.dirty != nil || s.restoring {
		t.Fatalf("%s: the stage keeps %d groups, next ID %d, %d closed incidents, restoring %v; want it empty",
			what, len(s.groups), s.nextID, len(s.recent), s.restoring)
	}
}

// Every proper prefix of a state, and a state with bytes after it, is
// refused, leaving the stage empty; a stage then restored from a good
// state, or run cold, works.
func TestIncidentsRestoreTruncated(t *testing.T) {
	sc := newStageScenario(620)
	_, state := stateAt(t, sc, 620)
	s := newTestIncidents()
	for n := range len(state) {
		if err := s.Restore(state[:n]); err == nil {
			t.Fatalf("%d of %d bytes restored", n, len(state))
		}
		checkEmpty(t, fmt.Sprintf("%d of %d bytes", n, len(state)), s)
	}
	if err := s.Restore(append(state, 0)); err == nil || err.Error() != "cannot restore the incident stage: 1 bytes after the state" {
		t.Errorf("a byte after the state: error %v", err)
	}
	checkEmpty(t, "a byte after the state", s)
	if err := s.Restore(state); err != nil {
		t.Fatalf("after the errors: %v", err)
	}
	if b, _ := s.State(); !bytes.Equal(b, state) {
		t.Error("restored after the errors: the state differs")
	}
}

// A state no stage holds is refused with what is wrong, leaving the stage
// empty; a cold stage then numbers incidents from 1.
func TestIncidentsRestoreInvalid(t *testing.T) {
	p := incident.DefaultParams()
	build := func() *Incidents {
		s := newTestIncidents()
		s.nextID = 3
		s.recent = []incident.Incident{{ID: 1, Group: groupA, Start: 1, End: 2, Peak: 1.5}}
		for _, k := range []string{groupA, groupB} {
			s.groups[k] = &groupState{key: k, g: incident.NewGroup(&p), lastT: 5, peak: 0.5, series: 1}
		}
		s.groups[groupB].open = &incident.Incident{ID: 3, Group: groupB, Start: 4, End: 5, Open: true, Peak: 2}
		return s
	}
	f := func(name string, mod func(s *Incidents) []byte, want string) {
		t.Helper()
		s := build()
		state := mod(s)
		if state == nil {
			state = s.appendState(nil)
		}
		r := newTestIncidents()
		err := r.Restore(state)
		if err == nil || err.Error() != "cannot restore the incident stage: "+want {
			t.Errorf("%s: error\n%v\nwant\n%s", name, err, want)
		}
		checkEmpty(t, name, r)
	}
	f("empty", func(*Incidents) []byte { return []byte{} }, "empty input")
	f("version", func(s *Incidents) []byte { b := s.appendState(nil); b[0] = 2; return b }, "layout version 2, want 1")
	f("ID 0", func(s *Incidents) []byte { s.recent[0].ID = 0; return nil }, "incident ID 0 outside 1 to the last one given, 3")
	f("ID beyond", func(s *Incidents) []byte { s.nextID = 2; return nil }, `group "job\xffb\xff": incident ID 3 outside 1 to the last one given, 2`)
	f("ID twice", func(s *Incidents) []byte { s.recent[0].ID = 3; return nil }, `group "job\xffb\xff": incident ID 3 given twice`)
	f("closed marked open", func(s *Incidents) []byte { s.recent[0].Open = true; return nil }, "closed incident 1 marked open")
	f("too many closed", func(s *Incidents) []byte {
		for range maxRecent {
			s.recent = append(s.recent, s.recent[0])
		}
		return nil
	}, "101 closed incidents, the stage keeps 100")
	f("open of another group", func(s *Incidents) []byte { s.groups[groupB].open.Group = groupA; return nil },
		`group "job\xffb\xff": its open incident 3 is of group "job\xffa\xff", open true`)
	f("open incident closed", func(s *Incidents) []byte { s.groups[groupB].open.Open = false; return nil },
		`group "job\xffb\xff": its open incident 3 is of group "job\xffb\xff", open false`)
	f("peak NaN", func(s *Incidents) []byte { s.groups[groupA].peak = math.NaN(); return nil }, `group "job\xffa\xff": peak score NaN`)
	f("negative series", func(s *Incidents) []byte { s.groups[groupA].series = -1; return nil }, `group "job\xffa\xff": -1 series live`)
	f("incident peak", func(s *Incidents) []byte { s.recent[0].Peak = math.Inf(1); return nil },
		"cannot restore incident: incident 1: peak score is +Inf")
	// Where a's key lies in the groups (it names the closed incident too).
	keyA := func(b []byte) int { return bytes.LastIndex(b, []byte(groupA)) }
	good := build().appendState(nil)
	f("groups out of order", func(s *Incidents) []byte {
		b := s.appendState(nil)
		i, j := keyA(b), bytes.Index(b, []byte(groupB))
		b[i+4], b[j+4] = 'b', 'a'
		return b
	}, `group "job\xffa\xff" after "job\xffb\xff": keys not in strictly increasing order`)
	f("open flag", func(s *Incidents) []byte {
		b := s.appendState(nil)
		b[keyA(b)+len(groupA)+3*8] = 2
		return b
	}, `group "job\xffa\xff": open flag 2, want 0 or 1`)
	f("absurd group count", func(s *Incidents) []byte {
		b := s.appendState(nil)
		i := keyA(b) - 8 // the count, then a's key length
		binary.LittleEndian.PutUint32(b[i:], 1<<31)
		return b
	}, fmt.Sprintf("2147483648 groups need at least %d bytes, %d left", (1<<31)*minGroupState, len(good)-keyA(good)+4))
	f("group state", func(s *Incidents) []byte {
		b := s.appendState(nil)
		b[keyA(b)+len(groupA)+3*8+1] = 9 // a's incident.Group version
		return b
	}, `group "job\xffa\xff": cannot restore incident group: layout version 9, want 1`)

	// Cold after an error: incidents are numbered from 1.
	s := newTestIncidents()
	if err := s.Restore([]byte{1, 2}); err == nil {
		t.Fatal("restored 2 bytes")
	}
	sc := newStageScenario(340)
	for i := range 340 {
		sc.step(s, i)
	}
	if incs := s.Status().Incidents; len(incs) == 0 || incs[len(incs)-1].ID != 1 {
		t.Errorf("a cold stage after a failed restore published incidents %+v; want the first numbered 1", incs)
	}

	// Restore refuses to run with the stage.
	s.Start()
	defer s.Stop()
	if err := s.Restore(good); err == nil || err.Error() != "cannot restore the incident stage: it is running" {
		t.Errorf("restore while running: error %v", err)
	}
}

// RestoreDone removes the restored groups none of whose series joined
// again, unless an incident of theirs is open, which closes as usual;
// until then no restored group goes for want of series.
func TestIncidentsRestoreDone(t *testing.T) {
	sc := newStageScenario(610)
	saved, state := stateAt(t, sc, 610)
	if saved.groups[groupA].open == nil || saved.groups[groupB].open != nil {
		t.Fatal("the test needs an incident of group a open, none of b")
	}
	s := newTestIncidents()
	if err := s.Restore(state); err != nil {
		t.Fatal(err)
	}
	quiet := int64(incident.DefaultParams().Quiet) * scenarioStep
	later := scenarioT0 + 610*scenarioStep + 2*quiet
	// Before RestoreDone: a's incident closes for lack of evidence, and
	// the group stays although it has no series yet; so does b, though a
	// series of b left (the shards saw it go while restoring).
	s.publish(later)
	s.handle(incidentEvent{kind: eventJoin, group: groupB, t: later})
	s.handle(incidentEvent{kind: eventLeave, group: groupB, t: later})
	if len(s.groups) != 3 || s.groups[groupA].open != nil {
		t.Fatalf("before RestoreDone: %d groups, a's incident open %v; want all 3, a's closed", len(s.groups), s.groups[groupA].open != nil)
	}
	s.handle(incidentEvent{kind: eventJoin, group: groupC, t: later})
	s.RestoreDone()
	s.handle(<-s.in)
	if len(s.groups) != 1 || s.groups[groupC] == nil || s.groups[groupC].n != 1 {
		t.Fatalf("after RestoreDone: groups %v; want c alone, with its series", slices.Sorted(maps.Keys(s.groups)))
	}
	// A group with an open incident and no series stays until it closes.
	s = newTestIncidents()
	if err := s.Restore(state); err != nil {
		t.Fatal(err)
	}
	s.RestoreDone()
	s.handle(<-s.in)
	if len(s.groups) != 1 || s.groups[groupA] == nil {
		t.Fatalf("after RestoreDone: groups %v; want a, whose incident is open", slices.Sorted(maps.Keys(s.groups)))
	}
	s.publish(later)
	if len(s.groups) != 0 {
		t.Fatalf("a's incident closed: groups %v; want none", slices.Sorted(maps.Keys(s.groups)))
	}
	if incs := s.Status().Incidents; len(incs) == 0 || incs[0].ID != saved.groups[groupA].open.ID || incs[0].Open {
		t.Errorf("published %+v; want a's incident first, closed, with its ID %d", incs, saved.groups[groupA].open.ID)
	}
}

// While the stage runs, State runs on its goroutine and includes every
// event sent before it; after Stop it includes those still queued, and
// gives the same bytes each time. In each case it is the state of a stage
// handed the same events in order.
func TestIncidentsStateRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One group, one evidence event a timestamp: the evaluations do
		// not depend on when the running stage finds its queue empty.
		var events []incidentEvent
		for k := range 3 {
			events = append(events, incidentEvent{kind: eventJoin, group: groupA, t: scenarioT0 + int64(k)})
		}
		rng := rand.New(rand.NewPCG(5, 6))
		for i := range 400 {
			k, score := i%3, 1+rng.ExpFloat64()
			if i == 300 {
				score = 200 // opens an incident alone
			}
			if i%5 != 0 && i != 300 {
				continue
			}
			d := incident.Detail{Series: fmt.Sprint(k), Score: score}
			events = append(events, incidentEvent{kind: eventEvidence, group: groupA, t: scenarioT0 + int64(i)*scenarioStep, dt: scenarioStep, detail: d})
		}
		ref := newTestIncidents()
		check := func(what string, got []byte, err error, upTo int) {
			t.Helper()
			for _, e := range events[:upTo] {
				ref.handle(e)
			}
			events = events[upTo:]
			ref.flush()
			if want := ref.appendState(nil); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: State gave %d bytes, error %v; a stage handed the same events %d", what, len(got), err, len(want))
			}
		}
		s := newTestIncidents()
		s.Start()
		for _, e := range events[:50] {
			s.send(e)
		}
		b, err := s.State()
		check("running", b, err, 50)
		for _, e := range events {
			s.send(e)
		}
		s.Stop()
		b, err = s.State()
		check("stopped", b, err, len(events))
		if ref.nextID != 1 {
			t.Fatalf("%d incidents opened; the test needs one", ref.nextID)
		}
		again, err := s.State()
		if err != nil || !bytes.Equal(again, b) {
			t.Errorf("State after Stop, again: %d bytes, error %v; want the same %d bytes", len(again), err, len(b))
		}
	})
}

// FuzzIncidentsRestore: Restore never panics; on error the stage is
// empty; a state that restores is the one the stage then gives, byte for
// byte, and the stage runs on it (RestoreDone, evidence, publication).
func FuzzIncidentsRestore(f *testing.F) {
	sc := newStageScenario(620)
	for _, steps := range []int{0, 1, 320, 620} {
		_, state := stateAt(f, sc, steps)
		f.Add(state)
		f.Add(state[:len(state)/2])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// NewIncidents' but with a queue of one event, not 64k: one a run.
		s := &Incidents{p: incident.DefaultParams(), maxGroups: 10, in: make(chan incidentEvent, 1), quit: make(chan struct{}),
			done: make(chan struct{}), ctl: make(chan func()), groups: map[string]*groupState{}}
		s.status.Store(&IncidentStatus{})
		if err := s.Restore(data); err != nil {
			checkEmpty(t, err.Error(), s)
			return
		}
		if b, err := s.State(); err != nil || !bytes.Equal(b, data) {
			t.Fatalf("restored state gives\n%x\nerror %v, not the bytes read\n%x", b, err, data)
		}
		s.handle(incidentEvent{kind: eventJoin, group: groupA, t: scenarioT0})
		s.RestoreDone()
		s.handle(<-s.in)
		for i := range 8 {
			d := incident.Detail{Series: fmt.Sprint(i % 3), Score: float64(i)}
			s.handle(incidentEvent{kind: eventEvidence, group: groupA, t: scenarioT0 + int64(i)*scenarioStep, dt: scenarioStep, detail: d})
			s.publish(scenarioT0 + int64(i)*scenarioStep)
		}
	})
}
