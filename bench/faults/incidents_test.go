package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/ui"
	"github.com/anomalyd/anomalyd/window/incident"
	wseries "github.com/anomalyd/anomalyd/window/series"
)

var (
	nodeT = target{"node", "n:1"}
	promT = target{"prometheus", "p:1"}
	shopT = target{"shop", "s:1"}
)

// The schedule of the incident tests: a machine fault on node at 1000-1060
// and a service fault on shop at 1240-1300, 60 s of recovery, settled at
// 100, over at 1500: quiet [100,1000) [1120,1240) [1360,1500).
func incidentSchedule() ([]fault, []span) {
	faults := []fault{
		{Name: "cpu", Start: at(1000), End: at(1060), Target: nodeT},
		{Name: "latency", Start: at(1240), End: at(1300), Target: shopT},
	}
	return faults, quietSpans(at(100), at(1500), faults, 60*time.Second)
}

func TestAnalyseOpenings(t *testing.T) {
	faults, quiet := incidentSchedule()
	op := func(id string, tg target, from, to float64) opening {
		return opening{ID: id, Target: tg, Start: at(from), End: at(to)}
	}
	ops := []opening{
		op("1", nodeT, 50, 70),     // settling: not counted
		op("2", nodeT, 500, 520),   // quiet: false
		op("3", nodeT, 1003, 1080), // cpu, 3 samples after its start: caught
		op("4", promT, 1010, 1030), // another target during cpu: not quiet, not cpu's
		op("5", shopT, 1230, 1250), // open when latency starts (in quiet: false)
		op("6", shopT, 1244, 1320), // latency, 4 samples after its start: too late
		op("7", shopT, 1400, 1420), // quiet: false
	}
	r := analyseOpenings("test", ops, []target{shopT, nodeT, promT}, quiet, faults, 60*time.Second, time.Second, 3)
	if r.Openings != 7 || r.Caught != 1 {
		t.Errorf("%d openings, %d caught; want 7, 1", r.Openings, r.Caught)
	}
	if len(r.Faults) != 2 {
		t.Fatalf("%d faults, want 2", len(r.Faults))
	}
	cpu, lat := r.Faults[0], r.Faults[1]
	if cpu.Opened == nil || cpu.Opened.ID != "3" || cpu.DelaySeconds != 3 || cpu.DelaySamples != 3 || !cpu.Caught || cpu.OpenAtStart != nil {
		t.Errorf("cpu: %+v; want incident 3 after 3 s, caught", cpu)
	}
	if !reflect.DeepEqual(cpu.Elsewhere, []target{promT}) || cpu.Target != nodeT {
		t.Errorf("cpu on %v, elsewhere %v; want on node, elsewhere prometheus", cpu.Target, cpu.Elsewhere)
	}
	if lat.Opened == nil || lat.Opened.ID != "6" || lat.DelaySeconds != 4 || lat.Caught {
		t.Errorf("latency: %+v; want incident 6 after 4 s, not caught", lat)
	}
	if lat.OpenAtStart == nil || lat.OpenAtStart.ID != "5" {
		t.Errorf("latency: open at start %v, want incident 5", lat.OpenAtStart)
	}
	q := r.Quiet
	if want := (900 + 120 + 140) / 60.0; math.Abs(q.Minutes-want) > 1e-9 {
		t.Errorf("quiet %v min, want %v", q.Minutes, want)
	}
	if q.Targets != 3 || math.Abs(q.TargetHours-3*q.Minutes/60) > 1e-9 {
		t.Errorf("%d targets, %v target-hours; want 3, %v", q.Targets, q.TargetHours, 3*q.Minutes/60)
	}
	if q.Openings != 3 || math.Abs(q.PerTargetHour-3/q.TargetHours) > 1e-9 {
		t.Errorf("%d false, %v per target-hour; want 3, %v", q.Openings, q.PerTargetHour, 3/q.TargetHours)
	}
	var got []string
	for _, o := range q.List {
		got = append(got, o.ID)
	}
	if want := []string{"2", "5", "7"}; !reflect.DeepEqual(got, want) {
		t.Errorf("false incidents %v, want %v", got, want)
	}
	h := q.Minutes / 60
	wantBy := []targetOpenings{{nodeT, 1, 1 / h}, {promT, 0, 0}, {shopT, 2, 2 / h}}
	if !reflect.DeepEqual(q.ByTarget, wantBy) {
		t.Errorf("by target %+v, want %+v", q.ByTarget, wantBy)
	}

	// An opening on a target the series did not name adds a target.
	r = analyseOpenings("test", []opening{op("8", target{"other", "o:1"}, 200, 210)}, []target{nodeT}, quiet, faults, 60*time.Second, time.Second, 3)
	if r.Quiet.Targets != 2 || r.Quiet.Openings != 1 || r.Faults[0].Opened != nil || r.Faults[0].DelaySeconds != -1 {
		t.Errorf("unknown target: %+v", r)
	}
	// Delays count in scrape intervals: 3 s is 0.2 samples at 15 s.
	r = analyseOpenings("test", ops, []target{nodeT}, quiet, faults, 60*time.Second, 15*time.Second, 3)
	if f := r.Faults[1]; f.DelaySamples != 4.0/15 || !f.Caught || r.Caught != 2 {
		t.Errorf("15 s: latency %+v, %d caught; want 4/15 samples, caught, 2", f, r.Caught)
	}
}

// An alert's steps become firings per target: a gap of more than 1.5
// steps ends one.
func TestFirings(t *testing.T) {
	holds := map[string]heldSeries{
		`{instance="n:1", job="node"}`: {map[string]string{"job": "node", "instance": "n:1"}, []float64{10, 11, 12, 20, 21}},
		`{instance="s:1", job="shop"}`: {map[string]string{"job": "shop", "instance": "s:1"}, []float64{11}},
	}
	got := firings(holds, time.Second)
	want := []opening{
		{Target: nodeT, Start: fromUnix(10), End: fromUnix(12)},
		{Target: shopT, Start: fromUnix(11), End: fromUnix(11)},
		{Target: nodeT, Start: fromUnix(20), End: fromUnix(21)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// At 15 s steps, 20 s apart is one firing, 30 s two.
	holds = map[string]heldSeries{`{}`: {map[string]string{"job": "node", "instance": "n:1"}, []float64{0, 15, 35, 50, 80}}}
	if got := firings(holds, 15*time.Second); len(got) != 2 || !got[0].End.Equal(fromUnix(50)) || !got[1].Start.Equal(fromUnix(80)) {
		t.Errorf("15 s steps: %+v, want firings 0-50 and from 80", got)
	}
}

// fakeIncidents serves a fixed list through anomalyd's own handler.
type fakeIncidents struct{ list []incident.Incident }

func (f *fakeIncidents) IncidentGroups() []incident.GroupStatus { return nil }
func (f *fakeIncidents) IncidentList() []incident.Incident      { return f.list }

func canonical(kv ...string) string {
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		b = wseries.AppendLabel(b, kv[i], kv[i+1])
	}
	return string(b)
}

// The harness reads what anomalyd's GET /api/v1/incidents writes, and
// keeps every incident over polls although the API forgets closed ones.
func TestIncidentLog(t *testing.T) {
	group := canonical("instance", "n:1", "job", "node")
	load := canonical("__name__", "node_load1", "instance", "n:1", "job", "node")
	cpu := canonical("__name__", "node_cpu_seconds_total", "cpu", "0", "instance", "n:1", "job", "node", "mode", "user")
	src := &fakeIncidents{list: []incident.Incident{
		{ID: 2, Group: group, Start: 1_000_000, End: 1_003_000, Open: true, Peak: 1.5, Series: 2, Top: []incident.Contributor{
			{Series: load, T: 1_002_000, Score: 25, Detail: incident.Detail{Series: load, Value: 3, Expected: 0.5, Lower: 0, Upper: 1, Score: 25, Driver: detectors.KindEntropy}},
			{Series: cpu, T: 1_001_000, Score: 4, Detail: incident.Detail{Series: cpu, Value: 1, Expected: 0.1, Lower: 0, Upper: 0.2, Score: 4, Driver: detectors.KindEWMA}},
		}},
		{ID: 1, Group: canonical("instance", "s:1", "job", "shop"), Start: 500_000, End: 520_000, Peak: 1.1, Series: 1},
	}}
	srv := httptest.NewServer(ui.IncidentsHandler(src))
	defer srv.Close()
	ctx := context.Background()

	l := newIncidentLog()
	list, err := fetchIncidents(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	l.add(list)
	// Incident 2 closes later with a higher peak; incident 1 has left the
	// API's list.
	src.list = []incident.Incident{{ID: 2, Group: group, Start: 1_000_000, End: 1_030_000, Peak: 2.5, Series: 3, Top: src.list[0].Top}}
	if list, err = fetchIncidents(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	l.add(list)
	ops := openingsOf(l.all())
	if len(ops) != 2 {
		t.Fatalf("%d incidents, want 2: %+v", len(ops), ops)
	}
	if o := ops[0]; o.ID != "1" || o.Target != shopT || !o.Start.Equal(time.UnixMilli(500_000)) {
		t.Errorf("first: %+v, want incident 1 on shop from 500 s", o)
	}
	o := ops[1]
	if o.ID != "2" || o.Target != nodeT || o.Open || o.Peak != 2.5 || o.Series != 3 || !o.End.Equal(time.UnixMilli(1_030_000)) {
		t.Errorf("second: %+v, want incident 2 on node, closed at 1030 s, peak 2.5, 3 series", o)
	}
	wantTop := []string{"node_load1 25.0 (new high beyond everything seen)", `node_cpu_seconds_total{cpu="0", mode="user"} 4.0 (spike above the expected band)`}
	if !reflect.DeepEqual(o.Top, wantTop) {
		t.Errorf("top %q, want %q", o.Top, wantTop)
	}
	if l.gaps != 0 {
		t.Errorf("%d gaps, want 0", l.gaps)
	}

	// A full list of closed incidents none of which was seen before: some
	// may have been lost between polls.
	var full []apiIncident
	for i := range apiClosedKept {
		full = append(full, apiIncident{ID: strconv.Itoa(100 + i)})
	}
	l.add(full)
	if l.gaps != 1 || len(l.all()) != 2+apiClosedKept {
		t.Errorf("%d gaps, %d incidents; want 1, %d", l.gaps, len(l.all()), 2+apiClosedKept)
	}
	l.add(full)
	if l.gaps != 1 {
		t.Errorf("the same list again: %d gaps, want 1", l.gaps)
	}

	nf := httptest.NewServer(http.NotFoundHandler())
	defer nf.Close()
	if _, err := fetchIncidents(ctx, nf.URL); err == nil || !strings.Contains(err.Error(), "404 Not Found") {
		t.Errorf("a 404: got %v, want an error saying 404 Not Found", err)
	}
}

func TestAnalyseScores(t *testing.T) {
	faults, quiet := incidentSchedule()
	scores := map[target][]point{
		nodeT: {{500, 0.2}, {600, 0.7}, {700, 0.1}, {1001, 0.4}, {1003, 0.9}, {1004, 1.3}, {1100, 5}},
		shopT: {{200, 0.1}},
	}
	got := analyseScores(scores, []target{nodeT, shopT}, quiet, faults, 60*time.Second, time.Second, 3)
	want := incidentScores{
		Faults: []faultScore{{"cpu", nodeT, 0.9, 5}, {"latency", shopT, -1, -1}},
		Quiet:  []targetScore{{Target: nodeT, Samples: 3, Peak: 0.7, P99: 0.2, AtLeastHalf: 1}, {Target: shopT, Samples: 1, Peak: 0.1, P99: 0.1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestTargetsOf(t *testing.T) {
	all := []*series{
		{lset: map[string]string{"job": "shop", "instance": "s:1"}},
		{lset: map[string]string{"job": "node", "instance": "n:1"}},
		{lset: map[string]string{"job": "shop", "instance": "s:1", "handler": "cart"}},
	}
	if got, want := targetsOf(all), []target{nodeT, shopT}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// The run's prometheus.yml is one Prometheus accepts, scrapes anomalyd's
// incident series with their groups' job and instance, and sends nothing of
// anomalyd's back to it.
func TestPrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (apt-get install -y prometheus): %v", err)
	}
	o := options{scrape: time.Second, anomalydAddr: "127.0.0.1:1", promAddr: "127.0.0.1:2", nodeAddr: "127.0.0.1:3", shopAddr: "127.0.0.1:4"}
	cfg := o.prometheusConfig()
	p := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", p).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s\n%s", err, out, cfg)
	}
	for _, want := range []string{"job_name: anomalyd\n    honor_labels: true\n    static_configs: [{targets: ['127.0.0.1:1']}]",
		"source_labels: [job]\n        regex: anomalyd\n        action: drop"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}

// The shipped rules file's incident group: AnomalyIncident over
// anomaly_incident_open.
func TestLoadIncidentAlerts(t *testing.T) {
	rs, err := loadAlerts(filepath.Join("..", "..", "deploy", "prometheus", "anomalyd-alerts.yml"), incidentGroup)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Alert != "AnomalyIncident" || !strings.Contains(rs[0].Expr, "anomaly_incident_open") {
		t.Errorf("got %+v, want AnomalyIncident over anomaly_incident_open", rs)
	}
}
