// Package incident turns the per-series results of one group of series (one
// target: by default the series sharing job and instance) into incidents: one
// score for the group that says how surprising its evidence is right now,
// given how often its own series are unusual when nothing happens.
//
// A sample is evidence when its combined score reaches Params.MinScore (it
// left its expected band). Its weight is the surprise it carries for its
// own series,
//
//	surprise = ln(1/(Window × rate(score)))
//
// where rate(score) is the share of that series' samples that scored at
// least that high, with a memory of Params.HalfLife (a series that leaves
// its band every hour weighs little, one that never does weighs much, and a
// series that often reaches a score weighs little when it does again), and
// Window × rate the chance that it does so in a window of Params.Window
// samples (how long evidence stays live). The rates are kept per doubling
// of the score (1-2, 2-4, … × MinScore, 64 and more); until a series has
// shown its own, a prior stands in: evidence once in 100 samples, a score x
// times as far out x^Params.Tail times less often. Evidence seen while an
// incident is open is not learnt: it is not what the series does when
// nothing happens, and learning it would hide the same fault next time.
//
// The group's evidence is that of its k most surprising live series: the
// chance that k given series are all this unusual at once (Fisher's method
// over their surprises), times C(N, k), the number of ways k of its N series
// could have been the unusual ones; its surprise is the best over k. The
// score divides it by ln(samples per day / Params.FalsePerDay), the
// surprise one chance
// incident per 1/FalsePerDay days needs, so 1 is the opening threshold
// whatever the group's size and sampling interval: ten series moving
// together open an incident, a few series a little outside their bands do
// not, and one series far outside a band it rarely leaves can open one
// alone.
//
// An incident opens when the score reaches 1, stays open while it does and
// for Params.Quiet of the group's samples after, and is one incident however
// many series join it.
//
// The group does work only for evidence: an ordinary sample costs nothing
// here (the shards filter on the score), an evidence sample O(1) amortised,
// and the score at a time O(live series). Memory is bounded by
// Params.MaxMembers series per group, about 300 bytes each and the key.
//
// A record (a value beyond every value the series has taken; see
// detectors.Output.Record) is weighed by how rare records are rather than
// by its score: its score measures the excess in the series' noise, which
// on a series of bursts makes every new high look extreme, and on a young
// series records are common. By chance about 2 of n values beat all
// before them, so a record's rate is 2/n (n the series' age in samples),
// or the series' own rate of records if that is higher (a growing series
// sets one a day), and one e widths of the range beyond it (1+e)^Tail
// times less. A first burst ten times beyond anything the series did opens
// an incident alone; a young or bursty series' next new high does not.
//
// Records in a row (each of a series' samples beyond everything before it)
// are a chain, and the links of a chain live together (those in the last
// Window samples) count as one surprise, the sum of theirs: a link is as
// likely as this series' records have come right after one of its records
// (a ramp's always do), and until the series has shown that, as likely as
// a first record (an independent series' almost never do). Three modest
// new highs in a row are a fault breaking out; three apart are a young
// series growing.
//
// # State
//
// Group.AppendState writes a group's complete state but its Params and
// scratch space, so that a restart from a checkpoint loses nothing, and
// RestoreGroup reads it back: a restored Group gives, sample for sample,
// the States the saved one would have (TestGroupStateResume). The
// encoding is explicit and fixed little-endian, no reflection or gob: a
// version byte (stateVersion), the group's fields, its contributors at
// the peak, then its members sorted by key, so that a group always
// encodes to the same bytes (floats as IEEE 754 bits, bools one byte,
// strings a u32 length and their bytes, counts u32). A member takes 250
// bytes and its key, plus 4 and the series if its Detail names another
// series than its own (one byte says it does not); a group 58 bytes, its
// members, and 82 bytes and the series' name per contributor at its peak.
// Incident.AppendState encodes an Incident the same way, for the stage
// that keeps them.
//
// Versions: bump stateVersion whenever a field is added, removed,
// reordered, resized or changes meaning; a restore refuses any other
// version (the group starts cold), because a state read under the wrong
// layout is wrong without a sign. TestGroupStateComplete fills every field
// with random values and fails if one does not come back, and
// TestStateFieldsPinned fails when a field is added, so that an addition
// cannot be forgotten.
//
// What is checked: every count and length against the bytes left, before
// anything is allocated for it; then a NaN or ±Inf where the group keeps
// values finite (decayed counts, exposure, peak), a negative count,
// interval or surprise, members out of key order, a detector kind that
// does not exist: each is an error, so that a restored group can neither
// panic nor score NaN. The rest is trusted: the checkpoint file's
// checksum protects the bytes. Settings are not part of the state: a
// group restored with other Params goes on with them, and one with more
// members than Params.MaxMembers keeps those of the latest evidence.
package incident

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// Params configure the incident stage; DefaultParams explains each default.
type Params struct {
	// MinScore is the combined score from which a sample is evidence.
	MinScore float64
	// Window is how many of its own samples a series' evidence stays live.
	Window int
	// HalfLife is the memory of each series' rate of evidence.
	HalfLife time.Duration
	// FalsePerDay is the rate of chance incidents per group and day the
	// opening threshold allows.
	FalsePerDay float64
	// Quiet is how many of the group's samples an incident stays open once
	// the score is below 1.
	Quiet int
	// MaxMembers bounds the series a group remembers evidence of.
	MaxMembers int
	// Tail is the exponent of the score's tail: a score x times as far
	// outside the band is taken to be x^Tail times less likely.
	Tail float64
}

// DefaultParams are the built-in incident settings.
func DefaultParams() Params {
	return Params{
		// 1: the edge of the expected band, where a detector starts to say
		// "unusual"; below it a sample says nothing.
		MinScore: 1,
		// 3 samples: series of one target rarely move in the same sample
		// (scrapes, rates over different windows), and a fault that takes
		// longer than three samples to spread is found by its first series.
		Window: 3,
		// 1 day: long enough to learn how often a series leaves its band
		// over a daily cycle, short enough to follow a change of behaviour.
		HalfLife: 24 * time.Hour,
		// 0.2: one chance incident per group every five days at most, the
		// rate an on-call rotation accepts per target.
		FalsePerDay: 0.2,
		// 12 samples: an incident whose evidence pauses for less stays one
		// incident (a flapping fault pages once).
		Quiet: 12,
		// 4096: every series of a large target (node_exporter exposes
		// about 1,000) with room to spare, at about 300 bytes each.
		MaxMembers: 4096,
		// 2: a score twice as far out is a quarter as likely, a tail
		// between a Gaussian's, under which large scores would count for
		// much more, and none at all, under which they would not count.
		Tail: 2,
	}
}

// The prior of a series' rates, until its own evidence outweighs it:
// evidence once in 100 samples, as a detector whose band is drawn at about
// 2.5 standard deviations of its own scores gives, weighed as 100 samples
// of the series' own.
const (
	priorRate    = 1.0 / 100
	priorSamples = 100.0
)

// maxFisher bounds the series Evaluate combines: the k-th most surprising
// of more than 64 live series adds nothing a person or the score needs, and
// combining k series costs O(k).
const maxFisher = 64

// chainPrior weighs the prior of a record right after a record (the
// chance of a first one) as two records of the series' own: one chain that
// continues makes the next link of a ramp unsurprising.
const chainPrior = 2.0

// maxLinks bounds the links of a chain that count together (those in the
// last Window samples): 8 records in a row leave no doubt.
const maxLinks = 8

// logPartialExp returns ln Σ_{j<k} T^j/j!. The largest term is at
// j* = min(k−1, ⌊T⌋) (a term is T/j times the one before); the sum is taken
// relative to it, each other term from its neighbour by that ratio, so that
// nothing overflows and one logarithm is the only transcendental call:
// Evaluate calls it for every k up to maxFisher.
func logPartialExp(T float64, k int) float64 {
	if T <= 0 {
		return 0 // only j = 0 counts: T^0/0! = 1
	}
	js := k - 1
	if T < float64(js) {
		js = int(T)
	}
	s, r := 1.0, 1.0
	for j := js; j > 0; j-- {
		r *= float64(j) / T
		s += r
	}
	r = 1
	for j := js + 1; j < k; j++ {
		r *= T / float64(j)
		s += r
	}
	return float64(js)*math.Log(T) - lgamma(js+1) + math.Log(s)
}

// lgamma returns ln Γ(n) = ln (n-1)! for 1 ≤ n ≤ maxFisher+1.
func lgamma(n int) float64 { return lgammaTable[n] }

var lgammaTable = func() (t [maxFisher + 2]float64) {
	for n := 1; n < len(t); n++ {
		t[n], _ = math.Lgamma(float64(n))
	}
	return t
}()

// Contributor is one series' share of a group's evidence.
type Contributor struct {
	Series   string  // the series' key (canonical labels)
	T        int64   // milliseconds: its most surprising live evidence sample
	Score    float64 // its combined score then
	Surprise float64 // the surprise that sample carried
	Detail   Detail  // what ObserveDetail was given with it
}

// numBuckets counts the score ranges a member's rates are kept for: one
// per doubling from MinScore, the last open-ended.
const numBuckets = 7

// member is what a group remembers of one series.
type member struct {
	key  string
	dt   int64 // milliseconds between its last two samples it reported
	last int64 // time of its latest evidence
	// counts are the decayed numbers of evidence samples at last whose
	// score was in [MinScore·2^b, MinScore·2^(b+1)), the last bucket
	// open-ended.
	counts [numBuckets]float64
	// exposure is the decayed number of samples the series was watched
	// for at last (time since it joined / dt, decayed like counts).
	exposure float64
	records  float64           // the decayed number of its evidence samples that were records
	chained  float64           // the decayed number of those that came right after a record of it
	recT     int64             // time of its latest record
	links    int               // records in a row ending at recT (its chain)
	link     [maxLinks]float32 // the surprises of the chain's latest links, a ring
	since    int64             // start of its current run of live evidence (ms)
	live     int64             // its evidence counts until this time (ms)
	surprise float64
	best     float64 // the highest surprise of one sample in the current run
	score    float64
	at       int64 // time of the sample that carried surprise
	detail   Detail
}

// Group is the incident state of one group of series. It is not safe for
// concurrent use: one goroutine owns it.
type Group struct {
	p       *Params
	members map[string]*member
	dt      int64         // the group's sampling interval: the latest series interval seen
	first   int64         // time of the first sample the group saw; 0 before it
	live    []Contributor // Evaluate's scratch space

	// The incident, if one is open or was.
	open      bool
	start     int64
	end       int64 // last time the score was >= 1
	peak      float64
	opened    int // incidents opened so far
	topAtPeak []Contributor
}

// NewGroup returns the state of a new group with settings p (not copied:
// p must not change while the group is used).
func NewGroup(p *Params) *Group {
	return &Group{p: p, members: map[string]*member{}}
}

// Watch starts the group's clock at t (milliseconds, > 0), if it has not
// started: the time a series has been watched without evidence counts in
// its rates (join). A series joining the group calls it.
func (g *Group) Watch(t int64) {
	if g.first == 0 {
		g.first = t
	}
}

// Observe records one sample of series key at t (milliseconds, > 0) with
// combined score score, dt milliseconds after that series' previous
// sample (0 when unknown). Samples below MinScore may be left out: they
// change nothing but the interval estimate and, for the group's first
// sample, its clock (Watch).
func (g *Group) Observe(key string, t, dt int64, score float64) {
	g.ObserveDetail(key, t, dt, score, Detail{})
}

// ObserveDetail is Observe, keeping d with the series' most surprising live
// evidence to explain an incident.
func (g *Group) ObserveDetail(key string, t, dt int64, score float64, d Detail) {
	if dt > 0 {
		g.dt = dt
	}
	g.Watch(t)
	if !(score >= g.p.MinScore) { // NaN too
		return
	}
	m := g.members[key]
	if m == nil {
		m = g.join(key, t)
	}
	if dt > 0 {
		m.dt = dt
	} else if m.dt == 0 {
		m.dt = g.dt
	}
	learn := !g.open
	m.decay(t, g.p.HalfLife)
	// The rate before this sample: its own evidence must not explain it.
	x := score / g.p.MinScore
	b := int(min(math.Log2(x), numBuckets-1)) // in float first: +Inf is no int
	var seen float64
	for _, c := range m.counts[b:] {
		seen += c
	}
	// Within bucket b the prior's tail says how much of it lies at or
	// above x; the series' own counts are taken whole.
	prior := priorRate * priorSamples * math.Pow(x, -g.p.Tail)
	r := (seen + prior) / (m.exposure + priorSamples)
	// chained: the series' previous sample was a record too.
	chained := d.Record > 0 && dt > 0 && m.recT == t-dt
	if d.Record > 0 {
		// A record's score says how far out it is in the series' noise,
		// which on a series of bursts is huge for any new high; what makes
		// it rare is that it beats everything before: by chance about 2 in
		// n samples do, or as often as this series has set records lately
		// if more (a growing series), and one landing e range widths out
		// (1+e)^Tail times less often.
		chance := max(2/float64(max(d.Age, 1)), m.records/(m.exposure+priorSamples))
		if chained {
			// A record right after a record: as often as this series'
			// records came in a row (a ramp's always do), with the chance
			// of a first record as the prior for one that has not shown
			// how its records come (an independent series' rarely do).
			chance = (m.chained + chainPrior*chance) / (m.records + chainPrior)
		}
		r = chance * math.Pow(d.Record, -g.p.Tail)
	}
	own := max(0, math.Log(1/(float64(g.p.Window)*r)))
	s := own
	if d.Record > 0 {
		if !chained {
			m.links = 0
		}
		m.link[m.links%maxLinks] = float32(own)
		m.links++
		m.recT = t
		// The chain's links in the last Window samples are live evidence
		// together; each is that unlikely given the links before it.
		s = 0
		for i := range min(m.links, g.p.Window, maxLinks) {
			s += float64(m.link[(m.links-1-i)%maxLinks])
		}
	}
	if t >= m.live {
		m.since, m.best = t, 0 // a new run of evidence
	}
	if t >= m.live || s > m.surprise {
		m.surprise = s
	}
	if own >= m.best {
		// The sample that explains the member best is its own most
		// surprising one, not the last link of a chain.
		m.best, m.score, m.at, m.detail = own, score, t, d
	}
	if learn {
		// Evidence while an incident is open is not what the series does
		// when nothing happens: learning it would make the same fault
		// less surprising when it comes back.
		m.counts[b]++
		if d.Record > 0 {
			m.records++
		}
		if chained {
			m.chained++
		}
	}
	m.last = t
	m.live = t + int64(g.p.Window)*max(m.dt, 1)
}

// join adds a member, evicting the one whose evidence is oldest when the
// group is full. A series shows its first evidence now, but the group has
// watched it since the group's first sample: that quiet time counts in its
// rate (a series quiet for days weighs more than one that just arrived).
func (g *Group) join(key string, t int64) *member {
	if len(g.members) >= g.p.MaxMembers {
		var oldest *member
		for _, m := range g.members {
			if oldest == nil || m.last < oldest.last {
				oldest = m
			}
		}
		delete(g.members, oldest.key)
	}
	m := &member{key: key, last: min(g.first, t)}
	g.members[key] = m
	return m
}

// decay brings m's counts and exposure from m.last to t: all decay by half
// every HalfLife, and the exposure gains the series' samples in between,
// one every m.dt, each decayed from its own time (a geometric sum).
func (m *member) decay(t int64, halfLife time.Duration) {
	if t <= m.last || m.dt <= 0 {
		return
	}
	h := float64(halfLife.Milliseconds())
	f := math.Exp2(-float64(t-m.last) / h)
	q := math.Exp2(-float64(m.dt) / h) // decay per sample
	m.exposure = m.exposure*f + (1-f)/(1-q)
	for b := range m.counts {
		m.counts[b] *= f
	}
	m.records *= f
	m.chained *= f
}

// order is the order of contributors, most surprising first, compared as
// a contributor of surprise and series key against c: negative if it comes
// before c. Ties go by series, so that the contributors an incident reports
// do not depend on the members map's order (a group restored from its
// state reports the same ones).
func order(surprise float64, series string, c *Contributor) int {
	if o := cmp.Compare(c.Surprise, surprise); o != 0 {
		return o
	}
	return strings.Compare(series, c.Series)
}

// siftDown restores the heap of h below i, whose root is the contributor
// that comes last in order.
func siftDown(h []Contributor, i int) {
	for {
		j := 2*i + 1
		if j >= len(h) {
			return
		}
		if k := j + 1; k < len(h) && order(h[k].Surprise, h[k].Series, &h[j]) > 0 {
			j = k
		}
		if order(h[j].Surprise, h[j].Series, &h[i]) <= 0 {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// State is a group's incident state at one time.
type State struct {
	Score  float64 // ≥ 1: an incident
	Open   bool
	Series int // distinct series whose evidence is live
	// Opened reports that this call opened an incident.
	Opened bool
}

// Evaluate returns the group's state at time t (milliseconds) for a group
// of n series; top, when not nil, receives the most surprising live
// contributors, most surprising first, at most maxFisher of them (an
// incident reports MaxTop). t may be earlier than an earlier call's (series
// arrive out of order across a group): the incident then opens at t, and
// closes only Quiet samples after the latest time its score reached 1.
func (g *Group) Evaluate(t int64, n int, top *[]Contributor) State {
	// Only the first maxFisher live contributors in order count (the score
	// reads no more), so a group of many live series keeps those in a
	// heap, the least surprising of them at its root, rather than sorting
	// them all: a group is evaluated at every batch that brings it
	// evidence.
	g.live = g.live[:0]
	live := 0
	for _, m := range g.members {
		// Live at t: t falls in the member's run of evidence. Series of a
		// group may arrive out of time order (senders batch per shard), so
		// t may lie before later evidence the member has already shown.
		if t >= m.live || t < m.since {
			continue
		}
		live++
		switch {
		case len(g.live) < maxFisher:
			g.live = append(g.live, Contributor{Series: m.key, T: m.at, Score: m.score, Surprise: m.surprise, Detail: m.detail})
			if len(g.live) == maxFisher {
				for i := maxFisher/2 - 1; i >= 0; i-- {
					siftDown(g.live, i)
				}
			}
		case order(m.surprise, m.key, &g.live[0]) < 0:
			g.live[0] = Contributor{Series: m.key, T: m.at, Score: m.score, Surprise: m.surprise, Detail: m.detail}
			siftDown(g.live, 0)
		}
	}
	slices.SortFunc(g.live, func(a, b Contributor) int { return order(a.Surprise, a.Series, &b) })
	// The best k of the live series, most surprising first: the chance
	// that k given series are all this unusual is that of a Gamma(k, 1)
	// variable exceeding T, the sum of their surprises (Fisher's method:
	// e^-T Σ_{j<k} T^j/j!), and any k of the n series could have been the
	// ones, C(n, k) ways. Evidence is the surprise left after both.
	var best, sum, lnChoose float64
	n = max(n, live, 1)
	for k, c := range g.live {
		sum += c.Surprise
		lnChoose += math.Log(float64(n-k) / float64(k+1))
		best = max(best, sum-logPartialExp(sum, k+1)-lnChoose)
	}
	if top != nil {
		*top = append((*top)[:0], g.live...)
	}
	sum = best
	st := State{Series: live}
	if sum > 0 {
		st.Score = sum / g.threshold()
	}
	switch {
	case st.Score >= 1:
		if !g.open {
			g.open, g.start, g.end, g.peak, st.Opened = true, t, t, 0, true
			g.opened++
		}
		g.end = max(g.end, t)
		if st.Score > g.peak {
			g.peak = st.Score
			g.topAtPeak = append(g.topAtPeak[:0], g.live...)
		}
	case g.open && t-g.end >= int64(g.p.Quiet)*max(g.dt, 1):
		g.open = false
	}
	st.Open = g.open
	return st
}

// threshold is the surprise one chance incident per 1/FalsePerDay days
// needs at the group's sampling interval.
func (g *Group) threshold() float64 {
	perDay := float64(24*time.Hour.Milliseconds()) / float64(max(g.dt, 1))
	return math.Log(max(perDay, 1) / g.p.FalsePerDay)
}

// Opened returns how many incidents the group has opened.
func (g *Group) Opened() int { return g.opened }
