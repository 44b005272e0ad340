package main

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

func testConfig(protocol int) GenConfig {
	return GenConfig{Seed: 7, Series: 3001, SamplesPerRequest: 400, Concurrency: 3, Protocol: protocol,
		StartMs: 1_700_000_000_000, IntervalMs: 15_000, DayMs: 600_000}
}

// decoded is one sample of a decoded request.
type decoded struct {
	labels string
	t      int64
	v      float64
}

// decodeRequest decodes body with prompb's gogo decoders.
func decodeRequest(t *testing.T, protocol int, body []byte) []decoded {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatalf("snappy: %v", err)
	}
	var out []decoded
	if protocol == 2 {
		var req writev2.Request
		if err := req.Unmarshal(raw); err != nil {
			t.Fatalf("writev2.Request.Unmarshal: %v", err)
		}
		if len(req.Symbols) == 0 || req.Symbols[0] != "" {
			t.Fatalf("symbols[0] must be \"\", got %q", req.Symbols[:min(1, len(req.Symbols))])
		}
		for _, ts := range req.Timeseries {
			var lbls []prompb.Label
			for k := 0; k+1 < len(ts.LabelsRefs); k += 2 {
				lbls = append(lbls, prompb.Label{Name: req.Symbols[ts.LabelsRefs[k]], Value: req.Symbols[ts.LabelsRefs[k+1]]})
			}
			if ts.Metadata.Type == writev2.Metadata_METRIC_TYPE_UNSPECIFIED {
				t.Fatalf("series %s has no metric type", labelsString(lbls))
			}
			for _, s := range ts.Samples {
				out = append(out, decoded{labelsString(lbls), s.Timestamp, s.Value})
			}
		}
		return out
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		t.Fatalf("prompb.WriteRequest.Unmarshal: %v", err)
	}
	for _, ts := range req.Timeseries {
		for _, s := range ts.Samples {
			out = append(out, decoded{labelsString(ts.Labels), s.Timestamp, s.Value})
		}
	}
	return out
}

func TestGeneratorDeterministic(t *testing.T) {
	for _, protocol := range []int{1, 2} {
		cfg := testConfig(protocol)
		a := NewGenerator(cfg)
		a.PlaceAnomalies(20, 1, 4)
		b := NewGenerator(cfg)
		b.PlaceAnomalies(20, 1, 4)
		ra := a.EncodeRounds(0, 4, 1)
		rb := b.EncodeRounds(0, 4, 3) // the worker count must not matter
		for k := range ra {
			for c := range ra[k].Conns {
				for q := range ra[k].Conns[c] {
					if !bytes.Equal(ra[k].Conns[c][q].Body, rb[k].Conns[c][q].Body) {
						t.Fatalf("protocol %d: round %d connection %d request %d differs for the same seed", protocol, k, c, q)
					}
				}
			}
		}
		cfg.Seed++
		d := NewGenerator(cfg)
		d.PlaceAnomalies(20, 1, 4)
		rd := d.EncodeRounds(0, 1, 2)
		if bytes.Equal(ra[0].Conns[0][0].Body, rd[0].Conns[0][0].Body) {
			t.Fatalf("protocol %d: seeds %d and %d give the same first request", protocol, cfg.Seed-1, cfg.Seed)
		}
	}
}

func TestLabelSets(t *testing.T) {
	g := NewGenerator(GenConfig{Seed: 3, Series: 20_000, SamplesPerRequest: 2000, Concurrency: 4, Protocol: 1,
		StartMs: 1, IntervalMs: 15_000, DayMs: 600_000})
	seen := map[string]bool{}
	for i := range g.series {
		lbls := g.series[i].labels
		if n := len(lbls); n < 3+3 || n > 3+6 {
			t.Fatalf("series %d has %d labels, want __name__, job, instance + 3 to 6: %s", i, n, labelsString(lbls))
		}
		if !slices.IsSortedFunc(lbls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("series %d labels not sorted: %s", i, labelsString(lbls))
		}
		for k := 1; k < len(lbls); k++ {
			if lbls[k].Name == lbls[k-1].Name {
				t.Fatalf("series %d has label %s twice", i, lbls[k].Name)
			}
		}
		for _, must := range []string{"__name__", "job", "instance"} {
			if !slices.ContainsFunc(lbls, func(l prompb.Label) bool { return l.Name == must && l.Value != "" }) {
				t.Fatalf("series %d lacks %s: %s", i, must, labelsString(lbls))
			}
		}
		if n := labelBytes(lbls); n < 80 || n > 260 {
			t.Fatalf("series %d has %d label bytes, want 80..260: %s", i, n, labelsString(lbls))
		}
		s := labelsString(lbls)
		if seen[s] {
			t.Fatalf("series %d duplicates %s", i, s)
		}
		seen[s] = true
	}
	mean, _, _ := g.LabelBytes()
	if mean < 130 || mean > 170 {
		t.Fatalf("mean label bytes %.1f, want about 150 (130..170)", mean)
	}
	kinds := g.KindCounts()
	if kinds["counter"] < len(g.series)/2 {
		t.Fatalf("counters %d of %d, want most", kinds["counter"], len(g.series))
	}
	for _, k := range kindNames {
		if kinds[k] == 0 {
			t.Fatalf("no %s series: %v", k, kinds)
		}
	}
}

// TestRequests decodes every request of a few rounds: sample counts,
// timestamps, connection membership, and per-series order across rounds.
func TestRequests(t *testing.T) {
	for _, protocol := range []int{1, 2} {
		cfg := testConfig(protocol)
		g := NewGenerator(cfg)
		index := map[string]int{}
		for i := range g.series {
			index[labelsString(g.series[i].labels)] = i
		}
		last := map[string]int64{}
		for _, rd := range g.EncodeRounds(0, 4, 2) {
			total := 0
			for c, reqs := range rd.Conns {
				for q, req := range reqs {
					smp := decodeRequest(t, protocol, req.Body)
					want := cfg.SamplesPerRequest
					if q == len(reqs)-1 {
						want = len(g.byConn[c]) - q*cfg.SamplesPerRequest
					}
					if len(smp) != want || req.Samples != want {
						t.Fatalf("protocol %d round %d conn %d request %d: %d samples decoded, %d recorded, want %d",
							protocol, rd.Index, c, q, len(smp), req.Samples, want)
					}
					for _, s := range smp {
						i, ok := index[s.labels]
						if !ok {
							t.Fatalf("unknown series %s", s.labels)
						}
						if i%cfg.Concurrency != c {
							t.Fatalf("series %d sent on connection %d, want %d", i, c, i%cfg.Concurrency)
						}
						if s.t != g.Timestamp(rd.Index) {
							t.Fatalf("round %d timestamp %d, want %d", rd.Index, s.t, g.Timestamp(rd.Index))
						}
						if v := g.Value(i, rd.Index); math.Float64bits(v) != math.Float64bits(s.v) {
							t.Fatalf("series %d round %d value %v, want %v", i, rd.Index, s.v, v)
						}
						if p, ok := last[s.labels]; ok && s.t <= p {
							t.Fatalf("series %s: timestamp %d after %d on its connection", s.labels, s.t, p)
						}
						last[s.labels] = s.t
					}
					total += len(smp)
				}
			}
			if total != cfg.Series {
				t.Fatalf("round %d carries %d samples, want %d", rd.Index, total, cfg.Series)
			}
		}
		if len(last) != cfg.Series {
			t.Fatalf("%d series seen, want %d", len(last), cfg.Series)
		}
	}
}

func TestCountersAndResets(t *testing.T) {
	g := NewGenerator(GenConfig{Seed: 11, Series: 20_000, SamplesPerRequest: 2000, Concurrency: 4, Protocol: 1,
		StartMs: 1_700_000_000_000, IntervalMs: 15_000, DayMs: 600_000})
	const rounds = 60
	resets := 0
	for i := range g.series {
		if g.series[i].kind != kindCounter {
			continue
		}
		prev := g.Value(i, 0)
		for r := 1; r < rounds; r++ {
			v := g.Value(i, r)
			if v < prev {
				tg := &g.targets[g.series[i].target]
				if tg.resetPeriod == 0 || (r+tg.resetPhase)%tg.resetPeriod != 0 {
					t.Fatalf("counter %s decreased from %v to %v in round %d without a restart", labelsString(g.series[i].labels), prev, v, r)
				}
				resets++
			}
			prev = v
		}
	}
	if want := g.CounterResets(0, rounds); resets == 0 || resets > want {
		t.Fatalf("%d counter decreases in %d rounds, want 1..%d (CounterResets)", resets, rounds, want)
	}
}

func TestAnomalies(t *testing.T) {
	cfg := testConfig(1)
	g := NewGenerator(cfg)
	plain := NewGenerator(cfg)
	as := g.PlaceAnomalies(30, 10, 40)
	if len(as) != 30 {
		t.Fatalf("%d anomalies recorded, want 30", len(as))
	}
	kinds := map[AnomalyKind]int{}
	for _, a := range as {
		kinds[a.Kind]++
		if a.StartRound < 10 || a.StartRound >= 40 || a.EndRound <= a.StartRound || a.EndRound > 40 {
			t.Fatalf("anomaly %+v outside rounds [10, 40)", a)
		}
		if a.StartMs != g.Timestamp(a.StartRound) || a.Labels != labelsString(g.series[a.Series].labels) || a.Connection != a.Series%cfg.Concurrency {
			t.Fatalf("anomaly %+v: wrong timestamp, labels or connection", a)
		}
		if g.targets[g.series[a.Series].target].resetPeriod != 0 {
			t.Fatalf("anomaly %+v on a series whose target restarts", a)
		}
		for r := 0; r < a.StartRound; r++ {
			if g.Value(a.Series, r) != plain.Value(a.Series, r) {
				t.Fatalf("anomaly %+v changes round %d, before it starts", a, r)
			}
		}
		// Whole-number counters may hide a small extra in the floor; the
		// magnitudes (>= 2 rounds' worth) never do for one round.
		if g.Value(a.Series, a.EndRound-1) == plain.Value(a.Series, a.EndRound-1) && g.series[a.Series].unit >= 1 {
			t.Fatalf("anomaly %+v does not change its last round", a)
		}
	}
	for _, k := range anomalyKinds {
		if kinds[k] != 10 {
			t.Fatalf("anomaly kinds %v, want 10 of each", kinds)
		}
	}
	// Placing again replaces; the same arguments give the same anomalies.
	again := slices.Clone(g.PlaceAnomalies(30, 10, 40))
	if !slices.Equal(as, again) {
		t.Fatalf("PlaceAnomalies is not deterministic")
	}
	if n := len(g.PlaceAnomalies(0, 10, 40)); n != 0 {
		t.Fatalf("%d anomalies after placing none", n)
	}
	for i := range g.series {
		if g.series[i].anomaly != -1 {
			t.Fatalf("series %d still has an anomaly", i)
		}
	}
}

// TestMarshalV1MatchesPrompb pins the hand-written encoder to prompb's.
func TestMarshalV1MatchesPrompb(t *testing.T) {
	cfg := testConfig(1)
	g := NewGenerator(cfg)
	g.series[0].base, g.series[0].kind = 0, kindConstant // a zero value is left out
	e := newEncoder()
	for _, ts := range []int64{g.Timestamp(3), 0, -5} {
		chunk := g.byConn[0][:50]
		n := g.marshalV1(e, chunk, 3, ts)
		var wr prompb.WriteRequest
		for _, i := range chunk {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: g.series[i].labels,
				Samples: []prompb.Sample{{Value: g.Value(int(i), 3), Timestamp: ts}}})
		}
		want, err := wr.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.raw[:n], want) {
			t.Fatalf("timestamp %d: marshalV1 differs from prompb.WriteRequest.Marshal", ts)
		}
	}
}

func TestFamilySizes(t *testing.T) {
	f := func(fams []family, wantSeries, wantCounters int) {
		t.Helper()
		n, c := 0, 0
		for _, fam := range fams {
			k := 1
			for _, d := range fam.dims {
				k *= len(d.values)
			}
			n += k
			if fam.kind == kindCounter {
				c += k
			}
		}
		if n != wantSeries || c != wantCounters {
			t.Fatalf("got %d series, %d counters; want %d, %d", n, c, wantSeries, wantCounters)
		}
	}
	f(nodeFamilies, 66, 49)
	f(serviceFamilies, 90, 81)
}

// A target-wide fault shifts two thirds of one target's series together,
// on a target that never restarts; faults go round the targets, and a
// series in two faults (or a fault and an anomaly) carries both.
func TestFaults(t *testing.T) {
	cfg := testConfig(1)
	g := NewGenerator(cfg)
	plain := NewGenerator(cfg)
	single := len(g.PlaceAnomalies(5, 10, 40))
	var starts []int
	for k := range 2*len(g.targets) + 1 {
		starts = append(starts, 20+10*k)
	}
	fs := g.PlaceFaults(starts, 10)
	if len(g.anomalies) != single+len(fs) {
		t.Fatalf("%d anomalies after placing faults, want %d + %d", len(g.anomalies), single, len(fs))
	}
	perFault := map[int]map[int32]int{} // fault → target → series
	for _, a := range fs {
		if a.Kind != AnomalyLevelShift || a.StartRound != starts[a.Fault] || a.EndRound != a.StartRound+10 {
			t.Fatalf("fault anomaly %+v", a)
		}
		tg := g.series[a.Series].target
		if g.targets[tg].resetPeriod != 0 {
			t.Fatalf("fault on a target that restarts: %+v", a)
		}
		if perFault[a.Fault] == nil {
			perFault[a.Fault] = map[int32]int{}
		}
		perFault[a.Fault][tg]++
		if g.Value(a.Series, a.StartRound) == plain.Value(a.Series, a.StartRound) {
			t.Fatalf("fault anomaly %+v does not change its first round", a)
		}
	}
	if len(perFault) != len(starts) {
		t.Fatalf("%d faults placed, want %d", len(perFault), len(starts))
	}
	used := map[int32]int{}
	for f, targets := range perFault {
		if len(targets) != 1 {
			t.Fatalf("fault %d spans targets %v, want one", f, targets)
		}
		for tg, n := range targets {
			used[tg]++
			total := 0
			for i := range g.series {
				if g.series[i].target == tg {
					total++
				}
			}
			if want := (2*total + 2) / 3; n != want {
				t.Fatalf("fault %d shifts %d of its target's %d series, want %d", f, n, total, want)
			}
		}
	}
	for tg, n := range used {
		if n < 2 {
			t.Errorf("target %d has %d faults: with more faults than targets, each should have had two or more", tg, n)
		}
	}
	// Before the first fault and single anomaly, nothing changed; a series
	// carries every anomaly placed on it.
	for i := range g.series {
		if g.Value(i, 9) != plain.Value(i, 9) {
			t.Fatalf("series %d changed before any anomaly", i)
		}
	}
	if n := len(g.PlaceAnomalies(0, 10, 40)); n != 0 || slices.ContainsFunc(g.series, func(s series) bool { return s.anomaly != -1 }) {
		t.Fatal("PlaceAnomalies left faults behind")
	}
}
