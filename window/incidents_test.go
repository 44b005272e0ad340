package window

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window/incident"
)

// drainMembers applies the join and leave events queued in inc, which is
// not started, to members: series per group key.
func drainMembers(inc *Incidents, members map[string]int) {
	for {
		select {
		case e := <-inc.in:
			switch e.kind {
			case eventJoin:
				members[e.group]++
			case eventLeave:
				if members[e.group]--; members[e.group] == 0 {
					delete(members, e.group)
				}
			}
		default:
			return
		}
	}
}

// groupRefs checks every shard's interned group keys against its live
// series: one key per group of a live series, counting the series in it,
// and the very string each of them holds. It returns the live series per
// group key, all shards together.
func (e *env) groupRefs(t *testing.T) map[string]int {
	t.Helper()
	all := map[string]int{}
	for i, sh := range e.s.shards {
		e.s.onShard(i, func() {
			live := map[string]int{}
			for j := range sh.slots.n {
				se := sh.slots.at(j)
				if se.info == nil || se.group == "" {
					continue
				}
				live[se.group]++
				if ref := sh.groups[se.group]; unsafe.StringData(ref.key) != unsafe.StringData(se.group) {
					t.Errorf("shard %d: series %q holds its own copy of group %q, not the interned one", i, se.info.Labels, se.group)
				}
			}
			counted := map[string]int{}
			for k, ref := range sh.groups {
				counted[k] = ref.n
			}
			if !maps.Equal(counted, live) {
				t.Errorf("shard %d interns groups %s; its live series are in %s", i, groups(counted), groups(live))
			}
			for k, n := range live {
				all[k] += n
			}
		})
	}
	return all
}

// groups shows series per group key, sorted, for messages.
func groups(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%q: %d", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// gk is the group key of name/value pairs (sorted).
func gk(pairs ...string) string { return string(key(pairs...)) }

// TestIncidentGroupByRule: a series' group is made of the group_by labels
// of the first rule it matches, else of the top-level ones; a group is its
// label set, whichever rules its series come from. A reload regroups
// series whose rule or group_by changed and removes the series a rule now
// ignores from their groups, keeping the detector state of those whose
// detector settings did not change.
func TestIncidentGroupByRule(t *testing.T) {
	inc := NewIncidents(incident.DefaultParams(), 10, nil, prometheus.NewRegistry())
	e := newEnv(t, loadConfig(t, `
rules:
  - match: '{job="api"}'
    incidents: {group_by: [namespace, service]}
  - match: '{job="web"}'
    incidents: {group_by: [service, namespace]}
  - match: '{job="batch"}'
    incidents: {group_by: [namespace]}
incidents: {group_by: [job, instance]}
`), func(o *Options) { o.Incidents = inc })
	all := [][]string{
		{"__name__", "m", "instance", "p1", "job", "api", "namespace", "shop", "service", "cart"},
		{"__name__", "m", "instance", "p2", "job", "api", "namespace", "shop", "service", "cart"},
		{"__name__", "m", "instance", "p3", "job", "api", "namespace", "shop"}, // no service label
		{"__name__", "m", "instance", "w1", "job", "web", "namespace", "shop", "service", "cart"},
		{"__name__", "m", "instance", "b1", "job", "batch", "namespace", "shop"},
		{"__name__", "m", "instance", "n1", "job", "node"},
		{"__name__", "lonely"}, // no group label at all: no group
	}
	for _, pairs := range all { // Ready: warm-up and calibration
		e.send(t, false, ramp(t0, 120, 1000, func(i int) float64 { return float64(i % 3) }), pairs...)
	}
	e.rec.Take()
	members := map[string]int{}
	drainMembers(inc, members)
	want := map[string]int{
		// api and web group by the same labels: one group.
		gk("namespace", "shop", "service", "cart"): 3,
		// The api series without a service label and the batch series
		// have the same group labels: one group too.
		gk("namespace", "shop"):             2,
		gk("instance", "n1", "job", "node"): 1,
	}
	if !maps.Equal(members, want) {
		t.Fatalf("groups %s, want %s", groups(members), groups(want))
	}
	if live := e.groupRefs(t); !maps.Equal(live, want) {
		t.Fatalf("series hold groups %s, want %s", groups(live), groups(want))
	}

	e.s.ApplyRules(CompileRules(loadConfig(t, `
rules:
  - match: '{job="api"}'
    incidents: {group_by: [namespace]}
  - match: '{job="web"}'
    incidents: {group_by: [service, namespace]}
  - match: '{job="batch"}'
    action: ignore
incidents: {group_by: [job]}
`)), false)
	drainMembers(inc, members)
	want = map[string]int{
		gk("namespace", "shop"):                    3, // the api series; batch's is ignored now
		gk("namespace", "shop", "service", "cart"): 1, // web
		gk("job", "node"):                          1, // the top-level group_by changed
	}
	if !maps.Equal(members, want) {
		t.Fatalf("after the reload: groups %s, want %s", groups(members), groups(want))
	}
	if live := e.groupRefs(t); !maps.Equal(live, want) {
		t.Fatalf("after the reload: series hold groups %s, want %s", groups(live), groups(want))
	}
	e.rec.Take() // the batch series' stale markers
	e.send(t, false, []Sample{{T: t0 + 120_000, V: 1}}, all[0]...)
	if recs := e.rec.Take(); len(recs) != 1 || recs[0].Warmup {
		t.Fatalf("regrouped series: got %+v, want one record past warm-up (its detector state kept)", recs)
	}
}

// TestGroupKeysFollowSeries: a shard's interned group keys go with the
// last series of their group, so that targets replaced under new labels
// (pods) do not grow the map: after each round of churn it holds the
// groups of the live series only, and nothing once every series is gone.
func TestGroupKeysFollowSeries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inc := NewIncidents(incident.DefaultParams(), 10, nil, prometheus.NewRegistry())
		e := newEnv(t, config.Default(), func(o *Options) {
			o.SeriesTTL, o.MaxSeries, o.Incidents = time.Minute, 1000, inc
		})
		node := gk("instance", "node-1", "job", "node")
		for round := range 5 {
			now := time.Now().UnixMilli()
			for pod := range 20 {
				for _, m := range []string{"a", "b"} { // two series a group
					e.send(t, false, []Sample{{T: now, V: 1}}, "__name__", m, "instance", fmt.Sprintf("pod-%d-%d", round, pod), "job", "app")
				}
			}
			if live := e.groupRefs(t); len(live) != 21 && round > 0 || len(live) != 20 && round == 0 {
				t.Fatalf("round %d: %d groups live, want the round's 20 pods and, after the first round, the node", round, len(live))
			}
			// The node's series stays; the pods' series are idle for
			// longer than the TTL and go.
			for range 4 {
				e.send(t, false, []Sample{{T: time.Now().UnixMilli(), V: 1}}, "__name__", "up", "instance", "node-1", "job", "node")
				time.Sleep(20 * time.Second)
				synctest.Wait()
			}
			if live := e.groupRefs(t); !maps.Equal(live, map[string]int{node: 1}) {
				t.Fatalf("round %d, pods evicted: series hold groups %s, want the node's only", round, groups(live))
			}
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if live := e.groupRefs(t); len(live) != 0 {
			t.Fatalf("every series evicted: series hold groups %s, want none", groups(live))
		}
		for i, sh := range e.s.shards {
			e.s.onShard(i, func() {
				if len(sh.groups) != 0 {
					t.Errorf("shard %d interns %d group keys with no series left", i, len(sh.groups))
				}
			})
		}
	})
}

// TestSamplePathAllocs: with the incident stage on and every ready sample
// evidence, a sample of a known series allocates nothing in its shard.
func TestSamplePathAllocs(t *testing.T) {
	p := incident.DefaultParams()
	p.MinScore = 1e-9 // every ready sample is evidence: the send runs
	inc := NewIncidents(p, 10, nil, prometheus.NewRegistry())
	opts := Options{Shards: 1, QueueSize: 4, MaxSeries: 100, SeriesTTL: time.Hour, PublishInterval: time.Hour, Incidents: inc}
	// Not started: the test goroutine is the shard's.
	s := New(opts, CompileRules(config.Default()), discard{}, prometheus.NewRegistry())
	sh := s.shards[0]
	var keys [][]byte
	for i := range 8 {
		keys = append(keys, key("__name__", fmt.Sprintf("m%d", i), "instance", fmt.Sprintf("i%d", i%2), "job", "app"))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	ts := t0
	round := func() {
		b := s.GetBatch()
		for _, k := range keys {
			ks, ss := uint32(len(b.Keys)), uint32(len(b.Samples))
			b.Keys = append(b.Keys, k...)
			b.Samples = append(b.Samples, Sample{T: ts, V: 10 + rng.NormFloat64()})
			b.Series = append(b.Series, BatchSeries{Hash: xxhash.Sum64(k), KeyStart: ks, KeyEnd: uint32(len(b.Keys)),
				NameStart: ks + 9, NameEnd: ks + 11, SamplesStart: ss, SamplesEnd: ss + 1})
		}
		sh.process(b)
		ts += 1000
	}
	for range 50 { // create the series and pass their warm-up
		round()
	}
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Fatalf("%v allocations per batch of known series, want 0", n)
	}
	if len(inc.in) == 0 {
		t.Fatal("no evidence sent: the test does not cover the send")
	}
}

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
	s := NewIncidents(incident.DefaultParams(), 10, rec, prometheus.NewRegistry())
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
