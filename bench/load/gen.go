package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/prompb"
)

// kind is the value pattern of a series.
type kind uint8

const (
	kindCounter  kind = iota // monotonically increasing at a per-series rate, reset when its target restarts
	kindNoisy                // base + Gaussian noise
	kindSeasonal             // base × (1 + amp × sin(2π t / day + phase)) + noise
	kindConstant             // one value for ever
	numKinds
)

var kindNames = [numKinds]string{"counter", "noisy_gauge", "seasonal_gauge", "constant"}

func (k kind) String() string { return kindNames[k] }

// family is a metric family of a target: a name, a value pattern and the
// label dimensions whose cartesian product gives its series.
type family struct {
	name    string
	kind    kind
	integer bool    // counters of events (requests, bytes): whole numbers
	typical float64 // counters: increase per second; gauges: typical value
	dims    []dim
}

// dim is one label dimension: names, and the alternatives for their values
// (one value per name). Several names let a dimension hold combinations that
// go together, like a filesystem's device, fstype and mountpoint.
type dim struct {
	names  []string
	values [][]string
}

func d1(name string, values ...string) dim {
	d := dim{names: []string{name}}
	for _, v := range values {
		d.values = append(d.values, []string{v})
	}
	return d
}

// nodeFamilies are what a node_exporter exposes (a subset): 66 series a
// target, 49 of them counters.
var nodeFamilies = []family{
	{name: "node_cpu_seconds_total", kind: kindCounter, typical: 0.12, dims: []dim{
		d1("cpu", "0", "1", "2", "3"),
		d1("mode", "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"),
	}},
	{name: "node_network_receive_bytes_total", kind: kindCounter, integer: true, typical: 2e5, dims: []dim{d1("device", "eth0", "eth1")}},
	{name: "node_network_transmit_bytes_total", kind: kindCounter, integer: true, typical: 1.5e5, dims: []dim{d1("device", "eth0", "eth1")}},
	{name: "node_network_receive_packets_total", kind: kindCounter, integer: true, typical: 300, dims: []dim{d1("device", "eth0", "eth1")}},
	{name: "node_network_transmit_packets_total", kind: kindCounter, integer: true, typical: 250, dims: []dim{d1("device", "eth0", "eth1")}},
	{name: "node_disk_read_bytes_total", kind: kindCounter, integer: true, typical: 5e5, dims: []dim{d1("device", "nvme0n1", "sda")}},
	{name: "node_disk_written_bytes_total", kind: kindCounter, integer: true, typical: 8e5, dims: []dim{d1("device", "nvme0n1", "sda")}},
	{name: "node_disk_io_time_seconds_total", kind: kindCounter, typical: 0.05, dims: []dim{d1("device", "nvme0n1", "sda")}},
	{name: "node_context_switches_total", kind: kindCounter, integer: true, typical: 4000},
	{name: "node_intr_total", kind: kindCounter, integer: true, typical: 3000},
	{name: "node_forks_total", kind: kindCounter, integer: true, typical: 5},
	{name: "node_filesystem_avail_bytes", kind: kindSeasonal, typical: 4e10, dims: []dim{fsDim}},
	{name: "node_filesystem_size_bytes", kind: kindConstant, typical: 1e11, dims: []dim{fsDim}},
	{name: "node_memory_MemAvailable_bytes", kind: kindSeasonal, typical: 6e9},
	{name: "node_memory_MemFree_bytes", kind: kindNoisy, typical: 2e9},
	{name: "node_memory_Cached_bytes", kind: kindNoisy, typical: 3e9},
	{name: "node_memory_Buffers_bytes", kind: kindNoisy, typical: 2e8},
	{name: "node_load1", kind: kindSeasonal, typical: 1.5},
	{name: "node_load5", kind: kindSeasonal, typical: 1.4},
	{name: "node_load15", kind: kindSeasonal, typical: 1.3},
	{name: "node_procs_running", kind: kindNoisy, typical: 3},
	{name: "node_procs_blocked", kind: kindNoisy, typical: 0.5},
	{name: "node_boot_time_seconds", kind: kindConstant, typical: 1.7e9},
	{name: "node_memory_MemTotal_bytes", kind: kindConstant, typical: 1.6e10},
}

var fsDim = dim{names: []string{"device", "fstype", "mountpoint"}, values: [][]string{
	{"/dev/nvme0n1p2", "ext4", "/"},
	{"/dev/sda1", "xfs", "/var/lib/data"},
	{"tmpfs", "tmpfs", "/run"},
}}

var (
	handlers = d1("handler", "/api/v1/orders", "/api/v1/orders/{id}", "/api/v1/items", "/api/v1/items/{id}",
		"/api/v1/users/{id}", "/api/v1/search", "/healthz", "/metrics")
	methods = d1("method", "GET", "POST")
)

// serviceFamilies are what an instrumented HTTP service exposes: 90 series a
// target, 81 of them counters.
var serviceFamilies = []family{
	{name: "http_requests_total", kind: kindCounter, integer: true, typical: 2, dims: []dim{handlers, methods, d1("code", "200", "404", "500")}},
	{name: "http_request_duration_seconds_sum", kind: kindCounter, typical: 0.1, dims: []dim{handlers, methods}},
	{name: "http_request_duration_seconds_count", kind: kindCounter, integer: true, typical: 2, dims: []dim{handlers, methods}},
	{name: "process_cpu_seconds_total", kind: kindCounter, typical: 0.3},
	{name: "http_requests_in_flight", kind: kindSeasonal, typical: 12},
	{name: "app_active_sessions", kind: kindSeasonal, typical: 800},
	{name: "process_resident_memory_bytes", kind: kindNoisy, typical: 3e8},
	{name: "go_goroutines", kind: kindNoisy, typical: 150},
	{name: "go_memstats_heap_inuse_bytes", kind: kindNoisy, typical: 1.5e8},
	{name: "process_open_fds", kind: kindNoisy, typical: 60},
	{name: "app_queue_depth", kind: kindNoisy, typical: 20},
	{name: "process_start_time_seconds", kind: kindConstant, typical: 1.7e9},
	{name: "process_max_fds", kind: kindConstant, typical: 1048576},
}

var (
	regions  = []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1"}
	services = []string{"api-gateway", "checkout", "payments", "catalog", "search", "auth", "inventory", "notifications"}
)

// target is one scraped endpoint: its identifying labels and families.
type target struct {
	job, instance string
	labels        []prompb.Label // target labels besides job and instance
	families      []family
	// resetPeriod > 0: the target restarts every resetPeriod rounds, at
	// rounds r with (r + resetPhase) % resetPeriod == 0, and its counters
	// start again from 0.
	resetPeriod, resetPhase int
}

// series is one generated series. labels is sorted and shared by every
// request that carries the series.
type series struct {
	labels  []prompb.Label
	wire    []byte // labels marshalled as in a prometheus.TimeSeries
	kind    kind
	integer bool
	target  int32
	anomaly int32 // index into Generator.anomalies of its latest anomaly (the others follow Anomaly.next), -1 for none

	rate   float64 // counters: increase per second
	offset float64 // counters that never reset: rounds of uptime before round 0
	base   float64 // gauges
	sd     float64 // gauges: noise standard deviation
	amp    float64 // seasonal gauges: relative amplitude
	phase  float64 // seasonal gauges: phase in radians
	unit   float64 // size of one anomaly unit (counters: the increase of one round)
}

// AnomalyKind names the injected anomaly shapes.
type AnomalyKind string

const (
	AnomalySpike      AnomalyKind = "spike"       // one round far off the pattern (counters: a one-round burst)
	AnomalyLevelShift AnomalyKind = "level_shift" // a step for Rounds rounds (counters: a higher rate)
	AnomalyDrift      AnomalyKind = "drift"       // a ramp over Rounds rounds (counters: a rate growing linearly)
)

var anomalyKinds = []AnomalyKind{AnomalySpike, AnomalyLevelShift, AnomalyDrift}

// Anomaly is an injected anomaly, as written to the JSON output.
type Anomaly struct {
	Series     int         `json:"series"`
	Labels     string      `json:"labels"`
	SeriesKind string      `json:"series_kind"`
	Connection int         `json:"connection"`
	Kind       AnomalyKind `json:"kind"`
	StartRound int         `json:"start_round"`
	EndRound   int         `json:"end_round"` // exclusive
	StartMs    int64       `json:"start_timestamp_ms"`
	EndMs      int64       `json:"end_timestamp_ms"` // exclusive
	// Fault is the index of the target-wide fault the anomaly is part of
	// (PlaceFaults), -1 for an anomaly of one series.
	Fault int `json:"fault"`
	// Magnitude is in units of the series' noise sd (noisy gauges), seasonal
	// amplitude (seasonal gauges), half its value (constants) or one round's
	// increase (counters: a spike adds Magnitude rounds' worth at once, a
	// level shift multiplies the rate by 1 + Magnitude/2, a drift ramps the
	// rate up to that).
	Magnitude float64 `json:"magnitude"`
	// next is the index of the series' anomaly placed before this one, -1
	// for none: a series in several target-wide faults has one each.
	next int32
}

// GenConfig is what the traffic depends on: the same GenConfig gives the same
// bytes.
type GenConfig struct {
	Seed              uint64
	Series            int
	SamplesPerRequest int
	Concurrency       int
	Protocol          int   // 1 or 2
	StartMs           int64 // timestamp of round 0
	IntervalMs        int64 // timestamp step per round
	DayMs             int64 // period of the seasonal gauges
}

// Generator produces the series, their values and the encoded requests. It
// is deterministic: everything derives from GenConfig and, for anomalies,
// the arguments of PlaceAnomalies. After PlaceAnomalies it is read-only and
// may be used from many goroutines.
type Generator struct {
	cfg       GenConfig
	targets   []target
	series    []series
	byConn    [][]int32 // series indices of each connection, in order
	anomalies []Anomaly
}

// NewGenerator builds cfg.Series series over as many node_exporter and
// HTTP-service targets as needed (about half each).
func NewGenerator(cfg GenConfig) *Generator {
	g := &Generator{cfg: cfg}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x616e6f6d616c7964)) // "anomalyd"
	g.series = make([]series, 0, cfg.Series)
	for t := 0; len(g.series) < cfg.Series; t++ {
		tg := newTarget(rng, t)
		g.targets = append(g.targets, tg)
		scale := math.Exp(rng.NormFloat64() * 0.7) // busy and quiet targets
		g.addSeries(rng, int32(t), &g.targets[t], scale)
	}
	g.byConn = make([][]int32, cfg.Concurrency)
	for i := range g.series {
		c := i % cfg.Concurrency
		g.byConn[c] = append(g.byConn[c], int32(i))
	}
	return g
}

func newTarget(rng *rand.Rand, t int) target {
	region := regions[rng.IntN(len(regions))]
	env := "production"
	if rng.IntN(10) == 0 {
		env = "staging"
	}
	var tg target
	if rng.IntN(2) == 0 {
		tg = target{
			job:      "node",
			instance: fmt.Sprintf("node-%05d.%s.example.internal:9100", t, region),
			families: nodeFamilies,
			labels: []prompb.Label{
				{Name: "cluster", Value: "k8s-" + env[:4] + "-" + region},
				{Name: "env", Value: env},
				{Name: "region", Value: region},
			},
		}
	} else {
		svc := services[rng.IntN(len(services))]
		tg = target{
			job:      svc,
			instance: fmt.Sprintf("10.%d.%d.%d:8080", 1+(t>>16)&0x7f, (t>>8)&0xff, t&0xff),
			families: serviceFamilies,
			labels: []prompb.Label{
				{Name: "env", Value: env},
				{Name: "namespace", Value: svc + "-" + env[:4]},
				{Name: "region", Value: region},
			},
		}
	}
	// One target in four restarts now and then (every 100 to 1000 rounds:
	// 25 min to 4 h at 15 s), so counter resets occur even in short runs:
	// at 100k series, about one target restart every two rounds.
	if rng.IntN(4) == 0 {
		tg.resetPeriod = 100 + rng.IntN(900)
		tg.resetPhase = rng.IntN(tg.resetPeriod)
	}
	return tg
}

func (g *Generator) addSeries(rng *rand.Rand, t int32, tg *target, scale float64) {
	var combo []prompb.Label
	var walk func(f *family, d int)
	walk = func(f *family, d int) {
		if len(g.series) == g.cfg.Series {
			return
		}
		if d < len(f.dims) {
			for _, vals := range f.dims[d].values {
				n := len(combo)
				for k, name := range f.dims[d].names {
					combo = append(combo, prompb.Label{Name: name, Value: vals[k]})
				}
				walk(f, d+1)
				combo = combo[:n]
			}
			return
		}
		lbls := make([]prompb.Label, 0, 3+len(tg.labels)+len(combo))
		lbls = append(lbls, prompb.Label{Name: "__name__", Value: f.name},
			prompb.Label{Name: "instance", Value: tg.instance}, prompb.Label{Name: "job", Value: tg.job})
		lbls = append(lbls, tg.labels...)
		lbls = append(lbls, combo...)
		slices.SortFunc(lbls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
		s := series{labels: lbls, kind: f.kind, integer: f.integer, target: t, anomaly: -1}
		if g.cfg.Protocol != 2 {
			s.wire = appendLabelsWire(nil, lbls)
		}
		spread := math.Exp(rng.NormFloat64() * 0.5)
		switch f.kind {
		case kindCounter:
			s.rate = f.typical * scale * spread
			s.unit = s.rate * float64(g.cfg.IntervalMs) / 1000
			if tg.resetPeriod == 0 {
				s.offset = float64(rng.IntN(20000)) // up to ~3.5 days of uptime at 15 s
			}
		case kindNoisy:
			s.base = f.typical * spread
			s.sd = s.base * (0.02 + 0.08*rng.Float64())
			s.unit = s.sd
		case kindSeasonal:
			s.base = f.typical * spread
			s.amp = 0.2 + 0.4*rng.Float64()
			s.sd = s.base * 0.02
			s.phase = 2 * math.Pi * rng.Float64()
			s.unit = s.base * s.amp
		case kindConstant:
			s.base = math.Round(f.typical * spread)
			s.unit = max(math.Abs(s.base)*0.5, 1)
		}
		g.series = append(g.series, s)
	}
	for i := range tg.families {
		walk(&tg.families[i], 0)
	}
}

// PlaceAnomalies injects n anomalies into series of targets that never
// restart, starting in rounds [first, last), and returns them. Spikes last
// one round, level shifts and drifts max(3, min(40, (last-first)/4)) rounds,
// cut at last. It replaces any earlier placement.
func (g *Generator) PlaceAnomalies(n, first, last int) []Anomaly {
	for _, a := range g.anomalies {
		g.series[a.Series].anomaly = -1
	}
	g.anomalies = nil
	if n <= 0 || last <= first {
		return nil
	}
	rng := rand.New(rand.NewPCG(g.cfg.Seed, uint64(first)<<32|uint64(last)))
	var eligible []int
	for i := range g.series {
		if g.targets[g.series[i].target].resetPeriod == 0 {
			eligible = append(eligible, i)
		}
	}
	rng.Shuffle(len(eligible), func(a, b int) { eligible[a], eligible[b] = eligible[b], eligible[a] })
	length := max(3, min(40, (last-first)/4))
	for k := 0; k < n && k < len(eligible); k++ {
		i := eligible[k]
		a := Anomaly{
			Series: i, Labels: labelsString(g.series[i].labels), SeriesKind: g.series[i].kind.String(),
			Connection: i % g.cfg.Concurrency, Kind: anomalyKinds[k%len(anomalyKinds)],
			StartRound: first + rng.IntN(last-first), Fault: -1, next: -1,
		}
		switch a.Kind {
		case AnomalySpike:
			a.EndRound = a.StartRound + 1
			a.Magnitude = 8 + 7*rng.Float64()
		default:
			a.EndRound = min(a.StartRound+length, last)
			a.Magnitude = 4 + 4*rng.Float64()
		}
		a.Magnitude = math.Round(a.Magnitude*100) / 100
		a.StartMs, a.EndMs = g.Timestamp(a.StartRound), g.Timestamp(a.EndRound)
		g.series[i].anomaly = int32(len(g.anomalies))
		g.anomalies = append(g.anomalies, a)
	}
	return g.anomalies
}

// PlaceFaults adds target-wide faults, as a failing host or service shows
// them: in fault k, two thirds of one target's series take a level shift
// together, from round starts[k] for length rounds, of 4 to 8 units. The
// faults go round the targets that never restart and have at least 3
// series, in a shuffled order, so a target may have several at different
// times. PlaceAnomalies replaces them with every other placement. It
// returns the anomalies added, each with its fault's index.
func (g *Generator) PlaceFaults(starts []int, length int) []Anomaly {
	rng := rand.New(rand.NewPCG(g.cfg.Seed^0xfa017, uint64(len(starts))))
	byTarget := make([][]int, len(g.targets))
	for i := range g.series {
		t := g.series[i].target
		byTarget[t] = append(byTarget[t], i)
	}
	var eligible []int
	for t := range g.targets {
		if g.targets[t].resetPeriod == 0 && len(byTarget[t]) >= 3 {
			eligible = append(eligible, t)
		}
	}
	if len(eligible) == 0 {
		return nil
	}
	rng.Shuffle(len(eligible), func(a, b int) { eligible[a], eligible[b] = eligible[b], eligible[a] })
	first := len(g.anomalies)
	for k, start := range starts {
		members := slices.Clone(byTarget[eligible[k%len(eligible)]])
		rng.Shuffle(len(members), func(a, b int) { members[a], members[b] = members[b], members[a] })
		mag := math.Round((4+4*rng.Float64())*100) / 100
		for _, i := range members[:(2*len(members)+2)/3] { // two thirds, rounded up
			a := Anomaly{Series: i, Labels: labelsString(g.series[i].labels), SeriesKind: g.series[i].kind.String(),
				Connection: i % g.cfg.Concurrency, Kind: AnomalyLevelShift, StartRound: start, EndRound: start + length,
				Fault: k, Magnitude: mag, next: g.series[i].anomaly}
			a.StartMs, a.EndMs = g.Timestamp(a.StartRound), g.Timestamp(a.EndRound)
			g.series[i].anomaly = int32(len(g.anomalies))
			g.anomalies = append(g.anomalies, a)
		}
	}
	return g.anomalies[first:]
}

// Timestamp is the sample timestamp of round r in milliseconds.
func (g *Generator) Timestamp(r int) int64 { return g.cfg.StartMs + int64(r)*g.cfg.IntervalMs }

// Value is the value of series i in round r.
func (g *Generator) Value(i, r int) float64 {
	s := &g.series[i]
	var gx, cx float64 // what its anomalies add to a gauge, to a counter
	for ai := s.anomaly; ai >= 0; ai = g.anomalies[ai].next {
		a := &g.anomalies[ai]
		gx += gaugeExtra(a, r)
		cx += counterExtra(a, r)
	}
	switch s.kind {
	case kindCounter:
		k := float64(r) + s.offset
		if tg := &g.targets[s.target]; tg.resetPeriod > 0 {
			k = float64((r + tg.resetPhase) % tg.resetPeriod)
		}
		// Each round adds between 0.6 and 1.4 rounds' worth: strictly
		// increasing, with jitter.
		v := s.unit * (k + 0.4*unitFloat(mix(g.cfg.Seed, uint64(i), uint64(r))))
		v += s.unit * cx
		if s.integer {
			v = math.Floor(v)
		}
		return v
	case kindNoisy:
		return s.base + s.sd*g.normal(i, r) + s.unit*gx
	case kindSeasonal:
		day := g.cfg.DayMs
		tod := float64(((g.Timestamp(r)%day)+day)%day) / float64(day)
		return s.base*(1+s.amp*math.Sin(2*math.Pi*tod+s.phase)) + s.sd*g.normal(i, r) + s.unit*gx
	default:
		return s.base + s.unit*gx
	}
}

// gaugeExtra is what anomaly a adds to a gauge in round r, in units.
func gaugeExtra(a *Anomaly, r int) float64 {
	if a == nil || r < a.StartRound || r >= a.EndRound {
		return 0
	}
	if a.Kind == AnomalyDrift {
		return a.Magnitude * float64(r-a.StartRound+1) / float64(a.EndRound-a.StartRound)
	}
	return a.Magnitude
}

// counterExtra is the extra a counter has gained from anomaly a by round r,
// in rounds' worth of increase. It never decreases, so the counter stays
// monotonic.
func counterExtra(a *Anomaly, r int) float64 {
	if r < a.StartRound {
		return 0
	}
	n := float64(a.EndRound - a.StartRound)
	x := min(float64(r-a.StartRound+1), n) // anomalous rounds so far
	switch a.Kind {
	case AnomalySpike:
		return a.Magnitude
	case AnomalyLevelShift:
		return a.Magnitude / 2 * x
	default: // drift: the extra rate grows by Magnitude/2/n a round
		return a.Magnitude / 2 / n * x * (x + 1) / 2
	}
}

// CounterResets counts the (series, round) pairs in rounds [first, last)
// where a counter starts again from 0.
func (g *Generator) CounterResets(first, last int) int {
	n := 0
	for i := range g.series {
		s := &g.series[i]
		tg := &g.targets[s.target]
		if s.kind != kindCounter || tg.resetPeriod == 0 {
			continue
		}
		for r := max(first, 1); r < last; r++ {
			if (r+tg.resetPhase)%tg.resetPeriod == 0 {
				n++
			}
		}
	}
	return n
}

// KindCounts counts the series of each kind.
func (g *Generator) KindCounts() map[string]int {
	m := map[string]int{}
	for i := range g.series {
		m[g.series[i].kind.String()]++
	}
	return m
}

// LabelBytes returns the mean, min and max of the label bytes of a series
// (sum of name and value lengths, as Prometheus's labels.Labels.Bytes
// without separators).
func (g *Generator) LabelBytes() (mean float64, lo, hi int) {
	lo = math.MaxInt
	total := 0
	for i := range g.series {
		n := labelBytes(g.series[i].labels)
		total += n
		lo, hi = min(lo, n), max(hi, n)
	}
	return float64(total) / float64(max(len(g.series), 1)), lo, hi
}

func labelBytes(lbls []prompb.Label) int {
	n := 0
	for _, l := range lbls {
		n += len(l.Name) + len(l.Value)
	}
	return n
}

func labelsString(lbls []prompb.Label) string {
	var b strings.Builder
	b.WriteByte('{')
	for k, l := range lbls {
		if k > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// normal is a standard normal deviate for series i in round r (Box-Muller
// over two hashed uniforms).
func (g *Generator) normal(i, r int) float64 {
	h := mix(g.cfg.Seed^0x9e3779b97f4a7c15, uint64(i), uint64(r))
	u1 := (float64(h>>11) + 1) / (1 << 53) // (0, 1]
	u2 := unitFloat(mix(h, 1, 2))
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// mix hashes three words (splitmix64 finaliser over a weighted sum): the
// per-sample randomness, computable for any round without state.
func mix(a, b, c uint64) uint64 {
	x := a*0x9e3779b97f4a7c15 ^ (b+1)*0xc2b2ae3d27d4eb4f ^ (c+1)*0x165667b19e3779f9
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func unitFloat(h uint64) float64 { return float64(h>>11) / (1 << 53) } // [0, 1)
