package sink

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/sink/metrics"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/incident"
)

// The incident stage takes an Outputs as its IncidentAppender.
var _ window.IncidentAppender = (*Outputs)(nil)

// TestIncidentSeriesAgree: every remote_write store receives the incident
// series that /metrics shows, with the same labels and values, at the
// publication's time; a group that ended gets stale markers and leaves
// /metrics.
func TestIncidentSeriesAgree(t *testing.T) {
	rcA, rcB := sinktest.NewReceiver(t), sinktest.NewReceiver(t)
	srvA, srvB := httptest.NewServer(rcA), httptest.NewServer(rcB)
	defer srvA.Close()
	defer srvB.Close()
	o, _ := newTestOutputs(t, loadConfig(t, `
remote_write:
  - {url: %s, name: a}
  - {url: %s, name: b, protobuf_message: io.prometheus.write.v2.Request}
`, srvA.URL, srvB.URL))
	o.Start()
	node, db := sinktest.Group("job", "node", "instance", "a:1"), sinktest.Group("job", "db", "instance", "b:2")
	first := []incident.GroupStatus{
		{Group: db, Score: 0.25, Series: 1},
		{Group: node, Score: 3.5, Open: true, Series: 4, Opened: 2},
	}
	last := []incident.GroupStatus{{Group: node, Score: 1.25, Open: true, Series: 5, Opened: 2}}
	o.AppendIncidents(1000, first, nil)
	o.AppendIncidents(2000, last, []string{db})
	stopOutputs(o)

	// /metrics of the last publication.
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := metrics.WriteIncidents(w, last); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	scraped := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if !strings.HasPrefix(line, "#") {
			k, v := parseTextLine(t, line)
			scraped[k] = v
		}
	}
	if len(scraped) != len(incident.Names) {
		t.Fatalf("/metrics has %d incident series, want %d:\n%s", len(scraped), len(incident.Names), buf.String())
	}

	for name, rc := range map[string]*sinktest.Receiver{"rw1": rcA, "rw2": rcB} {
		got := received(rc)
		if n := rc.CheckOrder(t); n != 2*4+4+4 {
			t.Errorf("%s: store received %d samples, want 16", name, n)
		}
		live := map[string]float64{}
		for k, ss := range got {
			s := ss[len(ss)-1]
			ended := strings.Contains(k, "job=db")
			switch {
			case s.T != 2000:
				t.Errorf("%s: %s: last sample at %d, want 2000 (the last publication)", name, k, s.T)
			case ended && math.Float64bits(s.V) != math.Float64bits(sinktest.StaleNaN):
				t.Errorf("%s: %s ends with %v, want a stale marker: its group ended", name, k, s.V)
			case !ended:
				live[k] = s.V
			}
		}
		if fmt.Sprint(live) != fmt.Sprint(scraped) {
			t.Errorf("%s: remote write at the last publication:\n%v\n/metrics:\n%v", name, live, scraped)
		}
	}
}

// TestOutputsIncidentsReload: after a reload that moves remote_write, the
// incident series go to the new store only.
func TestOutputsIncidentsReload(t *testing.T) {
	rcA, rcB := sinktest.NewReceiver(t), sinktest.NewReceiver(t)
	srvA, srvB := httptest.NewServer(rcA), httptest.NewServer(rcB)
	defer srvA.Close()
	defer srvB.Close()
	o, _ := newTestOutputs(t, loadConfig(t, "remote_write: [{url: %s}]\n", srvA.URL))
	o.Start()
	groups := []incident.GroupStatus{{Group: sinktest.Group("job", "node")}}
	o.AppendIncidents(1000, groups, nil)
	if err := o.Reload(loadConfig(t, "remote_write: [{url: %s}]\n", srvB.URL)); err != nil {
		t.Fatal(err)
	}
	o.AppendIncidents(2000, groups, nil)
	stopOutputs(o)
	for _, c := range []struct {
		name string
		rc   *sinktest.Receiver
		t    int64
	}{{"old store", rcA, 1000}, {"new store", rcB, 2000}} {
		got := received(c.rc)
		if len(got) != len(incident.Names) {
			t.Errorf("%s: %d series, want %d", c.name, len(got), len(incident.Names))
		}
		for k, ss := range got {
			if len(ss) != 1 || ss[0].T != c.t {
				t.Errorf("%s: %s: %v, want one sample at %d", c.name, k, ss, c.t)
			}
		}
	}
}
