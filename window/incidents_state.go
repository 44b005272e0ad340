package window

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/anomalyd/anomalyd/detectors/statecodec"
	"github.com/anomalyd/anomalyd/window/checkpoint"
	"github.com/anomalyd/anomalyd/window/incident"
)

// incidentsStateVersion is the first byte of the state Incidents.State
// writes: the layout of what follows, not of the groups and incidents
// inside, which carry window/incident's own. Bump it whenever a field is
// added, removed, reordered or changes meaning: Restore refuses any other
// version and the stage starts cold, which is safe, whereas a state read
// under the wrong layout is wrong silently. TestIncidentsStateFields fails
// when a field is added to the stage or a group.
const incidentsStateVersion = 1

// minGroupState is the least a group's entry takes (key length, lastT,
// peak, series, the open flag, the Group's version byte): a count of
// groups is checked against the bytes left with it before anything is
// allocated.
const minGroupState = 4 + 3*8 + 1 + 1

// State returns the stage's whole state, which Restore reads back:
//
//	version u8 (incidentsStateVersion), nextID u64,
//	len(recent) u32, each closed incident (incident.Incident.AppendState),
//	len(groups) u32, each group, sorted by key:
//	  key (u32 length and bytes), lastT i64, peak f64, series i64,
//	  open u8 (0 or 1), the open incident if 1, the incident.Group
//	  (Group.AppendState)
//
// fixed little-endian. A group's n (its series) is left out: the shards'
// join events rebuild it after a restart (see RestoreDone). So is its top,
// Evaluate's output, which the stage reads only right after Evaluate
// refilled it.
//
// The state includes every event sent to the stage before State was
// called: State first handles the queued events, then evaluates the
// evidence they left pending (as the stage does whenever its queue is
// empty), so that no pending evidence, nor the order in which it would
// be evaluated, needs encoding. It runs on the stage's goroutine while
// the stage runs, and on the caller's before Start and after Stop (the
// final checkpoint, at shutdown). It must not race with Start or Restore,
// nor be called by the IncidentAppender, which the stage's goroutine runs.
//
// It fails when the state is larger than a checkpoint record can be.
func (s *Incidents) State() ([]byte, error) {
	var b []byte
	encode := func() {
		for n := len(s.in); n > 0; n-- {
			s.handle(<-s.in)
		}
		s.flush()
		b = s.appendState(nil)
	}
	ran := false
	if s.started.Load() {
		fin := make(chan struct{})
		select {
		case s.ctl <- func() { encode(); close(fin) }:
			<-fin
			ran = true
		case <-s.done: // stopped: the state is the caller's now
		}
	}
	if !ran {
		s.direct.Lock()
		encode()
		s.direct.Unlock()
	}
	if len(b) > checkpoint.MaxRecordSize {
		return nil, fmt.Errorf("the incident stage's state is %d bytes, more than the %d a checkpoint record can hold",
			len(b), checkpoint.MaxRecordSize)
	}
	return b, nil
}

// appendState appends the state (see State) to dst, in the encoding of
// detectors/statecodec that readState decodes.
func (s *Incidents) appendState(dst []byte) []byte {
	c := statecodec.Encoder(dst)
	version, nRecent := uint8(incidentsStateVersion), uint32(len(s.recent))
	c.U8(&version)
	c.U64(&s.nextID)
	c.U32(&nRecent)
	for i := range s.recent {
		c = statecodec.Encoder(s.recent[i].AppendState(c.Bytes()))
	}
	nGroups := uint32(len(s.groups))
	c.U32(&nGroups)
	for _, k := range slices.Sorted(maps.Keys(s.groups)) {
		gs := s.groups[k]
		lastT, series, open := gs.lastT, int64(gs.series), gs.open != nil
		c.Str(&k)
		c.I64(&lastT)
		c.F64(&gs.peak)
		c.I64(&series)
		c.Bool(&open)
		if open {
			c = statecodec.Encoder(gs.open.AppendState(c.Bytes()))
		}
		c = statecodec.Encoder(gs.g.AppendState(c.Bytes()))
	}
	return c.Bytes()
}

// Restore makes the stage's state the one State returned, before Start.
// Its groups have no series until the shards' join events come in; those
// none of whose series come back are removed by RestoreDone, and kept
// until then. The restored incidents keep their IDs and new ones go on
// from the highest, so /api/v1/incidents lists the same incidents after a
// restart (from the first publication, a second after Start), and each
// group's count of incidents opened goes on.
//
// On error the stage is left empty, as NewIncidents made it, and the
// error says what was wrong: an empty or truncated state, a layout
// version other than the one State writes, a count larger than the bytes
// left could hold, bytes after the state, a group or incident that
// window/incident refuses (RestoreGroup, RestoreIncident), or what no
// stage holds: groups out of key order, an incident ID of 0, above the
// last one given or given twice, an open incident of another group, a
// closed one marked open, more closed incidents than the stage keeps, a
// peak score that is NaN, ±Inf or negative, a negative series count.
// The groups' settings are the stage's (see incident.RestoreGroup);
// incidents.max_groups applies to new groups only.
func (s *Incidents) Restore(src []byte) error {
	if s.started.Load() {
		return errors.New("cannot restore the incident stage: it is running")
	}
	r := stateReader{statecodec.Decoder(src, 0)}
	groups, nextID, recent, err := s.readState(&r)
	if err != nil {
		s.groups, s.nextID, s.recent, s.dirty, s.restoring = map[string]*groupState{}, 0, nil, nil, false
		return fmt.Errorf("cannot restore the incident stage: %w", err)
	}
	s.groups, s.nextID, s.recent, s.dirty, s.restoring = groups, nextID, recent, nil, true
	return nil
}

// RestoreDone tells the stage that the shards have sent the join events of
// every series they restored: once the stage has handled those (they are
// queued before this), it removes the restored groups none of whose
// series came back and that have no open incident; one that has keeps it
// until it closes, as a group whose last series left does. It is called
// once, after Restore; it waits while the stage's queue is full, until the
// stage takes the event or stops.
func (s *Incidents) RestoreDone() { s.sendWait(incidentEvent{kind: eventRestored}) }

// restored handles RestoreDone's event on the stage's goroutine.
func (s *Incidents) restored() {
	s.flush()
	s.restoring = false
	for k, gs := range s.groups {
		if gs.n <= 0 && gs.open == nil {
			delete(s.groups, k)
		}
	}
}

// readState decodes and checks what appendState wrote.
func (s *Incidents) readState(r *stateReader) (map[string]*groupState, uint64, []incident.Incident, error) {
	if len(r.Bytes()) == 0 {
		return nil, 0, nil, errors.New("empty input")
	}
	if v := r.u8(); v != incidentsStateVersion {
		return nil, 0, nil, fmt.Errorf("layout version %d, want %d", v, incidentsStateVersion)
	}
	nextID := r.u64()
	ids := map[uint64]bool{}
	checkID := func(inc *incident.Incident) error {
		switch {
		case inc.ID == 0 || inc.ID > nextID:
			return fmt.Errorf("incident ID %d outside 1 to the last one given, %d", inc.ID, nextID)
		case ids[inc.ID]:
			return fmt.Errorf("incident ID %d given twice", inc.ID)
		}
		ids[inc.ID] = true
		return nil
	}
	n := r.u32()
	if r.Err() == nil && n > maxRecent {
		return nil, 0, nil, fmt.Errorf("%d closed incidents, the stage keeps %d", n, maxRecent)
	}
	var recent []incident.Incident
	for range n {
		inc, err := r.incident()
		if err != nil {
			return nil, 0, nil, err
		}
		if inc.Open {
			return nil, 0, nil, fmt.Errorf("closed incident %d marked open", inc.ID)
		}
		if err := checkID(&inc); err != nil {
			return nil, 0, nil, err
		}
		recent = append(recent, inc)
	}
	n = r.u32()
	if r.Err() == nil && uint64(n)*minGroupState > uint64(len(r.Bytes())) {
		return nil, 0, nil, fmt.Errorf("%d groups need at least %d bytes, %d left", n, uint64(n)*minGroupState, len(r.Bytes()))
	}
	groups := make(map[string]*groupState, n)
	prev := ""
	for i := range n {
		gs := &groupState{key: r.str(), lastT: int64(r.u64()), peak: math.Float64frombits(r.u64()), series: int(int64(r.u64()))}
		open := r.u8()
		switch {
		case r.Err() != nil:
			return nil, 0, nil, r.Err()
		case i > 0 && gs.key <= prev:
			return nil, 0, nil, fmt.Errorf("group %q after %q: keys not in strictly increasing order", gs.key, prev)
		case !(gs.peak >= 0 && gs.peak <= math.MaxFloat64):
			return nil, 0, nil, fmt.Errorf("group %q: peak score %g", gs.key, gs.peak)
		case gs.series < 0:
			return nil, 0, nil, fmt.Errorf("group %q: %d series live", gs.key, gs.series)
		case open > 1:
			return nil, 0, nil, fmt.Errorf("group %q: open flag %d, want 0 or 1", gs.key, open)
		}
		prev = gs.key
		if open == 1 {
			inc, err := r.incident()
			if err != nil {
				return nil, 0, nil, fmt.Errorf("group %q: %w", gs.key, err)
			}
			if !inc.Open || inc.Group != gs.key {
				return nil, 0, nil, fmt.Errorf("group %q: its open incident %d is of group %q, open %v", gs.key, inc.ID, inc.Group, inc.Open)
			}
			if err := checkID(&inc); err != nil {
				return nil, 0, nil, fmt.Errorf("group %q: %w", gs.key, err)
			}
			inc.Group = gs.key // one copy of the key
			gs.open = &inc
		}
		g, rest, err := incident.RestoreGroup(&s.p, r.Bytes())
		if err != nil {
			return nil, 0, nil, fmt.Errorf("group %q: %w", gs.key, err)
		}
		gs.g = g
		r.skipTo(rest)
		groups[gs.key] = gs
	}
	if err := r.Err(); err != nil {
		return nil, 0, nil, err
	}
	if len(r.Bytes()) != 0 {
		return nil, 0, nil, fmt.Errorf("%d bytes after the state", len(r.Bytes()))
	}
	return groups, nextID, recent, nil
}

// stateReader decodes the stage's fields: the shared state codec, and the
// incidents and groups window/incident encodes in between.
type stateReader struct{ statecodec.Codec }

func (r *stateReader) u8() (x uint8)   { r.U8(&x); return x }
func (r *stateReader) u32() (x uint32) { r.U32(&x); return x }
func (r *stateReader) u64() (x uint64) { r.U64(&x); return x }
func (r *stateReader) str() (x string) { r.Str(&x); return x }

// skipTo moves past what a window/incident restore read, rest being what
// it left of r.Bytes().
func (r *stateReader) skipTo(rest []byte) { r.Take(len(r.Bytes()) - len(rest)) }

func (r *stateReader) incident() (incident.Incident, error) {
	if err := r.Err(); err != nil {
		return incident.Incident{}, err
	}
	inc, rest, err := incident.RestoreIncident(r.Bytes())
	if err != nil {
		return incident.Incident{}, err
	}
	r.skipTo(rest)
	return inc, nil
}
