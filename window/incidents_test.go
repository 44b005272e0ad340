package window

import (
	"fmt"
	"testing"

	"github.com/anomalyd/anomalyd/sink/selfmon"
	"github.com/anomalyd/anomalyd/window/incident"
)

// incidentRecorder is an IncidentAppender that keeps what it is handed.
type incidentRecorder struct{ calls []string }

func (r *incidentRecorder) AppendIncidents(t int64, groups []incident.GroupStatus, ended []string) {
	var gs []string
	for _, g := range groups {
		gs = append(gs, g.Group)
	}
	r.calls = append(r.calls, fmt.Sprintf("t=%d groups=%q ended=%q", t, gs, ended))
}

// TestIncidentStageAppends: each publication hands every group to the
// IncidentAppender at the publication's time, with the groups handed over
// before that are gone; a publication not after the previous one (the wall
// clock stepped back) is still published for /metrics but not handed over,
// and a group that ends meanwhile is reported by the next hand-over.
func TestIncidentStageAppends(t *testing.T) {
	rec := &incidentRecorder{}
	s := NewIncidents(incident.DefaultParams(), []string{"job"}, 10, rec, selfmon.NewRegistry())
	a, b, c := "job\xffa\xff", "job\xffb\xff", "job\xffc\xff"
	for _, g := range []string{a, b, c} {
		s.handle(incidentEvent{kind: eventJoin, group: g, t: 500})
	}
	s.publish(1000)
	s.handle(incidentEvent{kind: eventLeave, group: c, t: 1500})
	s.publish(2000)
	s.publish(1999) // the clock stepped back
	s.handle(incidentEvent{kind: eventLeave, group: b, t: 1500})
	s.publish(2000)
	if got := len(s.Status().Groups); got != 1 {
		t.Errorf("status after the step back has %d groups, want 1: /metrics still sees every publication", got)
	}
	s.publish(3000)
	s.publish(4000)
	want := []string{
		fmt.Sprintf("t=1000 groups=%q ended=[]", []string{a, b, c}),
		fmt.Sprintf("t=2000 groups=%q ended=%q", []string{a, b}, []string{c}),
		fmt.Sprintf("t=3000 groups=%q ended=%q", []string{a}, []string{b}),
		fmt.Sprintf("t=4000 groups=%q ended=[]", []string{a}),
	}
	if fmt.Sprint(rec.calls) != fmt.Sprint(want) {
		t.Errorf("hand-overs:\n got  %q\n want %q", rec.calls, want)
	}
}
