package window

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/prometheus/prometheus/model/value"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Series flags.
const (
	flagCounter    uint8 = 1 << iota // analysed as a per-second rate
	flagSeen                         // lastT/lastV hold an accepted sample
	flagPrimed                       // lastV is a finite base for the next rate
	flagStale                        // ended by a stale marker; nothing on /metrics
	flagHasOutput                    // has emitted output since the last stale marker
	flagWarming                      // waiting for its history; state in shard.warming (warm.go)
	flagDeriv                        // a gauge that only grew in its trial: analysed as a per-second rate of change
	flagFractional                   // a rate's increment was not a whole number: it does not count events (countingNoise)
)

// A gauge's trial (seriesState.trial): its first trialSamples samples are
// analysed as values while the shard counts its rises; if none of them
// fell and at least trialRises rose, the series is a timestamp, a size
// or an untyped counter that only grows (node_time_seconds,
// prometheus_tsdb_head_max_time, node_netstat_Tcp_InSegs), whose every
// sample is a value it never had before, and it is analysed from then on
// as its per-second rate of change (flagDeriv), a fall included as a
// negative rate rather than read as a counter reset. Without this such
// series alarm every few minutes on a quiet machine, while a gauge that
// moves both ways fails the trial within its first 63 samples and is
// analysed as it is.
const (
	trialSamples = 63 // low 6 bits of seriesState.trial: samples judged so far
	trialRises   = 3  // high 2 bits: rises so far, saturating
	trialOver    = trialSamples
)

// lastOut is the latest output of one detector for one series.
type lastOut struct {
	t                             int64
	score, expected, lower, upper float64
	value                         float64 // the analysed value (series.Record.Analysed)
	warmup                        bool
	driver                        detectors.Kind // of a combined output: detectors.Output.Driver
	// shown: a /metrics snapshot has this output; until one has, peak holds
	// the highest score of the outputs it replaced since the last snapshot,
	// so that a one-sample alarm between two scrapes still reaches the
	// scrape. Both fit in the struct's padding.
	shown bool
	peak  float32
}

// series is the state of one analysed series, owned by its shard goroutine.
type seriesState struct {
	info  *series.Info
	next  uint32 // slot+1 of the next series with the same hash, 0 = none
	rule  uint16 // index into the shard's Rules
	flags uint8
	trial uint8   // a gauge's trial: samples judged (low 6 bits) and rises (high 2), see trialSamples
	lastT int64   // timestamp of the last accepted sample (ms)
	lastV float64 // its raw value
	seen  int64   // wall-clock ms when a sample last arrived (for the TTL)
	last  lastOut // latest combined output
	// group is the series' incident group (its rule's incidents.group_by
	// labels, canonically, interned per shard: shard.groups), "" for none.
	group string
	per   *[detectors.NumKinds]lastOut
	// count is the count test of a counter whose increments have all been
	// whole numbers (countShift), nil for any other series.
	count *detectors.CountShift
	// The run of equal values (see hold): runN analysed samples since the
	// detectors started, the first at runT0, have all had the value runV;
	// runN is 0 before the first and runBroken once one differed.
	runV   float64
	runT0  int64
	runN   uint32
	asleep bool           // det and count are given up until the value changes (see hold)
	det    *detectors.Set // nil while asleep
}

// runBroken is seriesState.runN once a series' analysed value changed.
const runBroken = math.MaxUint32

// slab holds series in fixed-size chunks that never move: growing it
// never copies existing series (at a million series a doubling slice would
// copy hundreds of MiB while the shard stalls), and *seriesState stay valid.
type slab struct {
	chunks []*[slabChunk]seriesState
	n      uint32 // slots handed out
}

const slabChunk = 1024

func (sl *slab) at(i uint32) *seriesState { return &sl.chunks[i/slabChunk][i%slabChunk] }

// grow hands out the next slot.
func (sl *slab) grow() uint32 {
	if sl.n%slabChunk == 0 && int(sl.n/slabChunk) == len(sl.chunks) {
		sl.chunks = append(sl.chunks, new([slabChunk]seriesState))
	}
	sl.n++
	return sl.n - 1
}

// shardStats are counters written by one shard goroutine and read by the
// /metrics writer. Padded so two shards never share a cache line.
type shardStats struct {
	samples         atomic.Uint64 // samples fed to the detectors
	outOfOrder      atomic.Uint64
	duplicates      atomic.Uint64 // exact duplicates, accepted silently
	conflicts       atomic.Uint64 // same timestamp, different value
	nonFinite       atomic.Uint64 // NaN (not stale) and ±Inf
	staleMarkers    atomic.Uint64
	counterResets   atomic.Uint64
	primed          atomic.Uint64 // a counter's first sample, which only starts its rate
	ignored         atomic.Uint64 // samples of series a rule ignores
	excluded        atomic.Uint64 // samples of series the exclude list selects
	limited         atomic.Uint64 // samples of series beyond max_series
	seriesCreated   atomic.Uint64
	seriesEvicted   atomic.Uint64
	active          atomic.Int64
	asleep          atomic.Int64 // series asleep (see hold)
	processingNanos atomic.Uint64
	// Warm-up (warm.go).
	warming            atomic.Int64  // series waiting for their history
	warmRefused        atomic.Uint64 // new series the Warmer could not take
	warmed             atomic.Uint64 // series that got a non-empty history
	warmHistorySamples atomic.Uint64 // history samples fed to the detectors
	warmGaveUp         [numGaveUp]atomic.Uint64
	warmLate           atomic.Uint64 // answers that came after the series stopped waiting
	_                  [64]byte
}

// localStats accumulate one batch's counts in plain integers; they are
// added to shardStats once per batch, not once per sample.
type localStats struct {
	samples, outOfOrder, duplicates, conflicts, nonFinite, staleMarkers,
	counterResets, primed, ignored, excluded, limited uint64
	slept, woken uint64 // series that fell asleep, woke or left asleep (see hold)
}

type shard struct {
	id     int
	set    *Shards
	in     chan *Batch
	ctl    chan func()
	table  seriesTable // hash → slot+1 of the first series with it
	found  []uint32    // process's lookups of a batch: slot+1, 0 if absent
	slots  slab
	free   []uint32
	counts countPool // the count tests of the shard's series
	rules  *Rules
	ignore *fastcache.Cache // canonical labels of series a rule ignores
	// groups interns the incident group keys of the shard's series, so
	// the series of one target share one string, and counts the series
	// holding each: a key goes with the last of its series, or churning
	// targets (pods replaced under new instance labels) would grow the map
	// for ever. groupBuf builds the keys.
	groups   map[string]groupRef
	groupBuf []byte
	out      []series.Record
	local    localStats
	dirty    bool
	snap     atomic.Pointer[snapshot]
	stats    shardStats

	// Warm-up (warm.go); warming is nil when it is off.
	done    chan struct{} // closed when run returns
	warming map[uint32]*warmState
	warmSeq uint64
	warmed  chan warmReply

	// job is the checkpoint in progress (checkpoints.go), nil if none.
	job *ckptJob

	// detail keeps every detector's latest result of the series a reader
	// asked about (Shards.Detail, top.go); nil until one asks.
	detail map[*series.Info]*detailEntry
}

func newShard(id int, set *Shards, rules *Rules, done chan struct{}) *shard {
	s := &shard{
		id:    id,
		set:   set,
		in:    make(chan *Batch, set.opts.QueueSize),
		ctl:   make(chan func()),
		rules: rules,
		// 32 MiB per shard is the minimum fastcache size; at ~150 bytes of
		// labels per series it remembers ~200k ignored series per shard.
		ignore: fastcache.New(32 << 20),
		groups: map[string]groupRef{},
		done:   done,
	}
	if set.opts.Warmup.enabled() {
		s.warming = map[uint32]*warmState{}
		s.warmed = make(chan warmReply, warmedQueue)
	}
	return s
}

// evictEvery is how often a shard looks for idle series: a fifteenth of
// the TTL, so a series is evicted at most 7% late, while a scan of every
// slot (a cache miss each) happens rarely enough not to matter.
func evictEvery(ttl time.Duration) time.Duration { return max(ttl/15, time.Second) }

func (s *shard) run(done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(evictEvery(s.set.opts.SeriesTTL))
	defer tick.Stop()
	var warmC <-chan time.Time // nil (never ready) when warm-up is off
	if s.warming != nil {
		wt := time.NewTicker(warmTick(s.set.opts.Warmup.Timeout))
		defer wt.Stop()
		warmC = wt.C
	}
	for {
		var ckptFree chan []byte // nil (never ready) without a checkpoint in progress
		if s.job != nil {
			ckptFree = s.job.free
		}
		select {
		case b, ok := <-s.in:
			if !ok {
				s.finishAllWarming()
				s.flushOut()
				return
			}
			s.process(b)
		case f := <-s.ctl:
			f()
		case r := <-s.warmed:
			s.onWarmed(r)
		case now := <-tick.C:
			s.evict(now)
		case now := <-warmC:
			s.expireWarming(now)
		case buf := <-ckptFree:
			s.ckptStep(buf)
		}
	}
}

// process feeds one batch to the detectors and hands the outputs to the sink.
func (s *shard) process(b *Batch) {
	start := time.Now()
	nowMs := start.UnixMilli()
	// Look every series up first: the lookups of a batch do not depend on
	// one another, so the processor overlaps their cache misses (the
	// table entry, the series, its labels), where one lookup before each
	// series' detectors waits for its misses alone. found[i] is slot+1 of
	// series i, 0 if it was not there.
	found := s.found[:0]
	for i := range b.Series {
		bs := &b.Series[i]
		slot, ok := s.lookup(bs.Hash, b.Keys[bs.KeyStart:bs.KeyEnd])
		if !ok {
			slot = ^uint32(0)
		}
		found = append(found, slot+1)
	}
	s.found = found
	for i := range b.Series {
		bs := &b.Series[i]
		key := b.Keys[bs.KeyStart:bs.KeyEnd]
		slot := found[i] - 1
		if found[i] == 0 {
			// New, or created by an earlier entry of this batch.
			var ok bool
			if slot, ok = s.lookup(bs.Hash, key); !ok {
				var created bool
				slot, created = s.create(bs, key, b, nowMs)
				if !created {
					continue
				}
			}
		}
		se := s.slots.at(slot)
		se.seen = nowMs
		if bs.Counter != (se.flags&flagCounter != 0) {
			// Metadata arrived (or changed): the series changes meaning,
			// so its detector state starts over, and a value series of
			// its rate ends if it is analysed as a gauge now.
			ru := &s.rules.rules[se.rule]
			had, live := se.hasValue(ru), se.flags&(flagStale|flagHasOutput) == flagHasOutput
			se.flags ^= flagCounter
			se.flags &^= flagPrimed | flagDeriv
			if had && live && !se.hasValue(ru) {
				s.out = append(s.out, series.Record{Series: se.info, T: max(nowMs, se.lastT+1), Detector: detectors.KindCombined,
					Stale: true, OnlyExtras: true, HasValue: true})
			}
			se.trial = 0
			se.dropCount(&s.counts)
			se.restart(s.rules.rules[se.rule].params, &s.local)
		}
		samples := b.Samples[bs.SamplesStart:bs.SamplesEnd]
		if se.flags&flagWarming != 0 { // new, waiting for its history (warm.go)
			s.hold(slot, se, samples, nowMs)
			continue
		}
		for _, smp := range samples {
			s.sample(se, smp.T, smp.V)
		}
	}
	s.flushOut()
	s.commitStats()
	s.stats.processingNanos.Add(uint64(time.Since(start)))
	s.set.PutBatch(b)
}

// commitStats adds the local counts to the shared stats.
func (s *shard) commitStats() {
	st, l := &s.stats, &s.local
	st.samples.Add(l.samples)
	st.outOfOrder.Add(l.outOfOrder)
	st.duplicates.Add(l.duplicates)
	st.conflicts.Add(l.conflicts)
	st.nonFinite.Add(l.nonFinite)
	st.staleMarkers.Add(l.staleMarkers)
	st.counterResets.Add(l.counterResets)
	st.primed.Add(l.primed)
	st.asleep.Add(int64(l.slept) - int64(l.woken))
	st.ignored.Add(l.ignored)
	st.excluded.Add(l.excluded)
	st.limited.Add(l.limited)
	*l = localStats{}
}

func (s *shard) lookup(hash uint64, key []byte) (uint32, bool) {
	ref := s.table.get(hash)
	for ref != 0 {
		se := s.slots.at(ref - 1)
		if se.info.Labels == string(key) { // no allocation: compiler optimises the conversion
			return ref - 1, true
		}
		ref = se.next
	}
	return 0, false
}

// ignoredExcluded is the value the ignore cache holds for a series the
// exclude list selects (nil for one a rule ignores).
const ignoredExcluded = 1

// create starts tracking a new series, unless a rule ignores it or the
// series limit is reached. It is the only place ingestion allocates per series.
// With warm-up on, the series starts warming (warm.go).
func (s *shard) create(bs *BatchSeries, key []byte, b *Batch, nowMs int64) (uint32, bool) {
	n := uint64(bs.SamplesEnd - bs.SamplesStart)
	var why [1]byte
	if v, ok := s.ignore.HasGet(why[:0], key); ok {
		if len(v) == 1 && v[0] == ignoredExcluded {
			s.local.excluded += n
		} else {
			s.local.ignored += n
		}
		return 0, false
	}
	if s.set.active.Load() >= int64(s.set.opts.MaxSeries) {
		s.local.limited += n
		return 0, false
	}
	labels := string(key) // the one copy that outlives the request
	ri := s.rules.match(labels)
	r := &s.rules.rules[ri]
	if r.ignore {
		if r.excluded {
			s.ignore.Set(key, []byte{ignoredExcluded})
			s.local.excluded += n
		} else {
			s.ignore.Set(key, nil)
			s.local.ignored += n
		}
		return 0, false
	}
	slot := s.place(&series.Info{
		Labels: labels,
		Name:   labels[bs.NameStart-bs.KeyStart : bs.NameEnd-bs.KeyStart],
		Hash:   bs.Hash,
	}, ri)
	se := s.slots.at(slot)
	if bs.Counter {
		se.flags |= flagCounter
	}
	if s.set.opts.PerDetector {
		se.per = new([detectors.NumKinds]lastOut)
	}
	if s.set.opts.Incidents != nil {
		s.groupBuf = r.groupKey(labels, s.groupBuf)
		se.group = s.joinGroup(s.groupBuf, nowMs, false)
	}
	se.detSet().Init(r.params)
	s.stats.seriesCreated.Add(1)
	// Every series created here is new to this process or was evicted (its
	// state is gone either way), so it reads its history. Without samples
	// (all too far in the future) there is no end time to ask for: cold.
	if s.warming != nil && bs.SamplesEnd > bs.SamplesStart {
		s.startWarming(slot, se, b.Samples[bs.SamplesStart].T, nowMs)
	}
	return slot, true
}

// place puts a new series, info under rule ri, into a free slot and links
// it into the series table; the slot keeps the detector ring memory of the
// series that had it. It is the only place that takes a slot.
func (s *shard) place(info *series.Info, ri int) uint32 {
	var slot uint32
	if k := len(s.free); k > 0 {
		slot = s.free[k-1]
		s.free = s.free[:k-1]
	} else {
		slot = s.slots.grow()
	}
	se := s.slots.at(slot)
	*se = seriesState{info: info, next: s.table.get(info.Hash), rule: uint16(ri), det: se.det}
	s.table.set(info.Hash, slot+1)
	s.set.active.Add(1)
	s.stats.active.Add(1)
	return slot
}

// groupRef is an interned group key and the number of the shard's series
// in the group.
type groupRef struct {
	key string
	n   int
}

// joinGroup counts one more series in the group whose key is key and
// tells the incident stage at t; it returns the interned key, which the
// series keeps until leaveGroup, or "" for an empty key (no group). With
// wait it waits for room in the stage's queue (a restore, when every
// series joins at once and a dropped join would leave its group short
// for good); a running shard never waits.
func (s *shard) joinGroup(key []byte, t int64, wait bool) string {
	if len(key) == 0 {
		return ""
	}
	ref, ok := s.groups[string(key)] // no allocation: compiler optimises the conversion
	if !ok {
		ref.key = string(key)
	}
	ref.n++
	s.groups[ref.key] = ref
	e := incidentEvent{kind: eventJoin, group: ref.key, t: t}
	if wait {
		s.set.opts.Incidents.sendWait(e)
	} else {
		s.set.opts.Incidents.send(e)
	}
	return ref.key
}

// leaveGroup counts one series fewer in group g ("" for none), forgetting
// the key with its last series, and tells the incident stage at t.
func (s *shard) leaveGroup(g string, t int64) {
	if g == "" {
		return
	}
	s.set.opts.Incidents.send(incidentEvent{kind: eventLeave, group: g, t: t})
	ref, ok := s.groups[g]
	switch {
	case !ok:
		panic("BUG: a series left incident group " + strconv.Quote(g) + ", which its shard does not count")
	case ref.n == 1:
		delete(s.groups, g)
	default:
		ref.n--
		s.groups[g] = ref
	}
}

// outcome is what one sample did to a series.
type outcome uint8

const (
	outcomeSkipped  outcome = iota // counted in the stats, nothing to emit
	outcomeStale                   // a stale marker ended a series with outputs: emit stale markers
	outcomeAnalysed                // the detectors ran: emit their verdict
	outcomeHeld                    // the series is asleep and the value unchanged: emit its last verdict again
)

// observe applies one sample to se, in the order PROTOCOL.md gives: stale
// markers first (by bits, before any arithmetic), then order and
// duplicates, then non-finite values, then counters to rates, then the
// detectors. It is the whole per-sample logic, shared by the shards and by
// Analyser (the backtest), and touches nothing but se, st and cp. It returns
// the outcome, the detectors' verdict and the value they analysed (for a
// counter or a growing gauge, its per-second rate). allBands asks for
// every detector's calibrated band (per-detector outputs, the backtest);
// without it only those Combined is made of are (Set.UpdateCombined).
func (se *seriesState) observe(p *detectors.Params, t int64, v float64, st *localStats, cp *countPool, allBands bool) (outcome, detectors.Output, float64) {
	if value.IsStaleNaN(v) {
		if se.flags&flagSeen != 0 && t < se.lastT {
			st.outOfOrder++
			return outcomeSkipped, detectors.Output{}, 0
		}
		st.staleMarkers++
		res := outcomeSkipped
		if se.flags&(flagStale|flagHasOutput) == flagHasOutput {
			res = outcomeStale
		}
		se.flags = se.flags&^(flagPrimed|flagHasOutput) | flagStale | flagSeen
		se.lastT, se.lastV = t, v
		return res, detectors.Output{}, 0
	}
	if se.flags&flagSeen != 0 {
		if t < se.lastT {
			st.outOfOrder++
			return outcomeSkipped, detectors.Output{}, 0
		}
		if t == se.lastT {
			if math.Float64bits(v) == math.Float64bits(se.lastV) {
				st.duplicates++ // a retried request: idempotent
			} else {
				st.conflicts++
			}
			return outcomeSkipped, detectors.Output{}, 0
		}
	}
	se.flags = se.flags&^flagStale | flagSeen
	if math.IsNaN(v) || math.IsInf(v, 0) {
		st.nonFinite++
		se.flags &^= flagPrimed
		se.lastT, se.lastV = t, v
		return outcomeSkipped, detectors.Output{}, 0
	}
	x := v
	if se.flags&(flagCounter|flagDeriv) == 0 && se.trial&trialSamples != trialOver &&
		se.flags&flagPrimed != 0 && se.judgeTrial(v) {
		// It only grew: from this sample on its rate of change is
		// analysed, by detectors that have seen none yet.
		se.flags |= flagDeriv
		se.restart(p, st)
	}
	if se.flags&(flagCounter|flagDeriv) != 0 {
		if se.flags&flagPrimed == 0 {
			se.flags |= flagPrimed
			se.lastT, se.lastV = t, v
			st.primed++
			return outcomeSkipped, detectors.Output{}, 0
		}
		d := v - se.lastV
		if d < 0 && se.flags&flagCounter != 0 {
			// A counter reset: its process restarted. The increase across
			// the reset is unknown (what the old process counted after the
			// last sample is lost, the new one counted only since its
			// start), so the sample only primes the next rate, as a
			// counter's first sample does. Taking v as the increase, as
			// Prometheus's rate() does over a range, makes one interval's
			// rate a dip in every counter of a restarted target at once:
			// an incident for every deploy.
			se.lastT, se.lastV = t, v
			st.counterResets++
			return outcomeSkipped, detectors.Output{}, 0
		}
		secs := float64(t-se.lastT) / 1000
		x = d / secs
		if d != math.Trunc(d) && se.flags&flagFractional == 0 {
			se.flags |= flagFractional
			se.dropCount(cp)
		}
		prevT, counts := se.lastT, se.flags&flagFractional == 0
		se.flags |= flagPrimed | flagHasOutput
		se.lastT, se.lastV = t, v
		st.samples++
		if se.hold(p, t, prevT, x, counts, st, cp) {
			return outcomeHeld, detectors.Output{}, x
		}
		o := se.update(p, t, x, allBands)
		if counts {
			countingNoise(&o, d, secs)
			se.countShift(p, &o, d, secs, cp)
		}
		se.maySleep(&o, st, cp)
		return outcomeAnalysed, o, x
	}
	prevT := se.lastT
	se.flags |= flagPrimed | flagHasOutput
	se.lastT, se.lastV = t, v
	st.samples++
	if se.hold(p, t, prevT, x, false, st, cp) {
		return outcomeHeld, detectors.Output{}, x
	}
	o := se.update(p, t, x, allBands)
	se.maySleep(&o, st, cp)
	return outcomeAnalysed, o, x
}

// Sleeping series. Most series a Prometheus scrapes never change (in a
// node_exporter or a Prometheus, build and config info, limits, sizes,
// errors that never happen), and a constant's detector state, the bulk of
// a series' memory, only says that it is constant. So a series whose
// analysed value has been the same since its detectors started, and whose
// verdict has settled (Ready, score 0, the same as the sample before),
// sleeps: it drops its detector state and count test and, while the value
// stays, emits its last verdict again without running the detectors. The
// first different value wakes it: detectors.Set.InitConstant rebuilds the
// state from the run (from its last WarmUp samples, evenly spaced: for a
// run that long or shorter at a regular interval, exactly what feeding it
// gave) and, for a counter, CountShift.InitConstant the count test; then
// the value is analysed as on a series that never slept.
// A series sleeps at most once in its detectors' life: once its value
// changed, it is not constant.

// hold counts x, the value of an analysed sample at t, in se's run of equal
// values and reports whether the sample is held: se is asleep and x is its
// value. A different value ends the run, waking se first (prevT: the time
// of the run's last sample). counts says whether the increments are whole
// numbers fed to the count test.
func (se *seriesState) hold(p *detectors.Params, t, prevT int64, x float64, counts bool, st *localStats, cp *countPool) bool {
	switch {
	case se.runN == runBroken:
	case se.runN == 0:
		se.runV, se.runT0, se.runN = x, t, 1
	case math.Float64bits(x) == math.Float64bits(se.runV):
		if se.asleep && se.per != nil {
			// Per-detector outputs were turned on: they need the detectors.
			se.wake(p, prevT, counts, st, cp)
		}
		if se.runN < runBroken-1 {
			se.runN++
		}
		return se.asleep
	default:
		if se.asleep {
			se.wake(p, prevT, counts, st, cp)
		}
		se.runN = runBroken
	}
	return false
}

// maySleep puts se to sleep after the verdict o on a sample of its run if
// the verdict has settled: Ready, nothing to report, and what se.last (the
// verdict before it) says. A series with per-detector outputs stays awake:
// only the combined verdict is kept to emit again.
func (se *seriesState) maySleep(o *detectors.Output, st *localStats, cp *countPool) {
	c := &o.Combined
	if se.runN == runBroken || se.runN < 2 || se.per != nil || !c.Ready || c.Score != 0 || o.Record != 0 ||
		se.last.warmup || se.last.score != 0 || se.last.driver != o.Driver ||
		se.last.expected != c.Expected || se.last.lower != c.Lower || se.last.upper != c.Upper {
		return
	}
	se.det = nil // a series that sleeps could sleep for ever: its memory goes
	se.dropCount(cp)
	se.asleep = true
	st.slept++
}

// detSet returns se's detectors, allocating them if se has none: it
// sleeps, or its slot's last series did. A Set is allocated on its own
// rather than inside seriesState so that a sleeping series frees it.
func (se *seriesState) detSet() *detectors.Set {
	if se.det == nil {
		se.det = new(detectors.Set)
	}
	return se.det
}

// wake rebuilds the detector state of a sleeping series from its run, whose
// last sample was at tEnd, and for a counter (counts) its count test.
func (se *seriesState) wake(p *detectors.Params, tEnd int64, counts bool, st *localStats, cp *countPool) {
	se.detSet().InitConstant(p, se.runV, se.runN, se.runT0, tEnd)
	se.asleep = false
	st.woken++
	if !counts {
		return
	}
	if se.count == nil {
		se.count = cp.get()
	}
	se.count.InitConstant(p, se.runV, se.runN, se.runT0, tEnd)
}

// restart starts se's detectors over under p: the series changed meaning
// (a counter, a rate of change) or settings.
func (se *seriesState) restart(p *detectors.Params, st *localStats) {
	if se.asleep {
		se.asleep = false
		st.woken++
	}
	se.detSet().Init(p)
	se.runN = 0
}

// isRate reports whether se is analysed as its per-second rate.
func (se *seriesState) isRate() bool { return se.flags&(flagCounter|flagDeriv) != 0 }

// hasValue reports whether se's records under rule ru have the value
// series (series.Record.HasValue): output.value is on and se is analysed
// as a per-second rate.
func (se *seriesState) hasValue(ru *rule) bool { return ru.value && se.isRate() }

// update runs the detectors on (t, x), with every calibrated band or only
// Combined's (see observe).
func (se *seriesState) update(p *detectors.Params, t int64, x float64, allBands bool) detectors.Output {
	if allBands {
		return se.det.Update(p, t, x)
	}
	return se.det.UpdateCombined(p, t, x)
}

// countingNoise applies the noise of a count to o, the verdict on an
// increment d over secs seconds of a series whose increments have all been
// whole numbers: it counts events, and a count of λ expected events varies
// by about √λ whatever the detectors learnt (a scrape counter that always
// rose by 1 and once by 0 or 2 has a band far narrower than one event). An
// increment within 2√λ of the expected one, a Poisson count's 95 % range,
// is not evidence: its scores and record are 0. The combined band is
// widened to hold that range, so that a score of 0 lies inside it.
func countingNoise(o *detectors.Output, d, secs float64) {
	c := &o.Combined
	if !c.Ready {
		return
	}
	lambda := max(c.Expected*secs, 0)
	tol := 2 * math.Sqrt(lambda)
	c.Lower = min(c.Lower, (lambda-tol)/secs)
	c.Upper = max(c.Upper, (lambda+tol)/secs)
	if math.Abs(d-lambda) >= tol {
		return
	}
	c.Score, o.Record = 0, 0
	for k := range o.Per {
		o.Per[k].Score = 0
	}
}

// countShift runs the count test (detectors.CountShift) of a series whose
// increments have all been whole numbers on its increment d over secs
// seconds, and raises o, the detectors' verdict, to the test's score when
// the test scores higher, from 1 on: a count's rate that moved and stayed
// moved is evidence that adds up over samples, where each sample alone is
// within its noise. The verdict then reports the test's baseline rate as expected,
// its count range (2√λ, as countingNoise) as the band and the EWMA as the
// driver: the baseline is an exponentially weighted mean of the rate. As
// every score, it counts only once the detectors are Ready.
func (se *seriesState) countShift(p *detectors.Params, o *detectors.Output, d, secs float64, cp *countPool) {
	if se.count == nil {
		se.count = cp.get()
	}
	score, rate, judged := se.count.Update(d, secs, p.Window)
	c := &o.Combined
	if !judged || !c.Ready || score < 1 || !(score > c.Score) {
		return // below half its decision level the test is not evidence
	}
	lambda := rate * secs
	tol := 2 * math.Sqrt(lambda)
	c.Score, c.Expected = score, rate
	c.Lower, c.Upper = max(lambda-tol, 0)/secs, (lambda+tol)/secs
	o.Driver = detectors.KindEWMA
}

// dropCount ends se's count test, giving its state back to cp: the series
// stopped counting events (a fractional increment, a change of meaning or
// of rule).
func (se *seriesState) dropCount(cp *countPool) {
	cp.put(se.count)
	se.count = nil
}

// countPool hands out count tests from chunks, so that a series starting
// one (a counter's first whole increment, a gauge found to grow) does not
// allocate on the ingest path, and takes back those of series that stop
// being tested or leave. A shard has one; so has an Analyser.
type countPool struct {
	chunk []detectors.CountShift
	free  []*detectors.CountShift
}

// countChunk is how many count tests a pool allocates at once.
const countChunk = 256

// get returns a zero CountShift.
func (cp *countPool) get() *detectors.CountShift {
	if n := len(cp.free); n > 0 {
		c := cp.free[n-1]
		cp.free = cp.free[:n-1]
		*c = detectors.CountShift{}
		return c
	}
	if len(cp.chunk) == 0 {
		cp.chunk = make([]detectors.CountShift, countChunk)
	}
	c := &cp.chunk[0]
	cp.chunk = cp.chunk[1:]
	return c
}

// put takes c back (nil: nothing); its series must no longer hold it.
func (cp *countPool) put(c *detectors.CountShift) {
	if c != nil {
		cp.free = append(cp.free, c)
	}
}

// judgeTrial counts v, the next sample of a gauge in its trial, against
// the last one and reports whether the trial ended with the series
// analysed as a rate of change: trialSamples samples none of which fell,
// at least trialRises of which rose. A fall ends the trial at once.
func (se *seriesState) judgeTrial(v float64) bool {
	if v < se.lastV {
		se.trial = trialOver
		return false
	}
	n, rises := se.trial&trialSamples+1, se.trial>>6
	if v > se.lastV && rises < trialRises {
		rises++
	}
	se.trial = rises<<6 | n
	return n == trialOver && rises >= trialRises
}

// sample handles one sample of series se and emits what it produced.
func (s *shard) sample(se *seriesState, t int64, v float64) {
	ru := &s.rules.rules[se.rule]
	res, o, x := se.observe(ru.params, t, v, &s.local, &s.counts, se.per != nil)
	switch res {
	case outcomeSkipped:
		return
	case outcomeStale:
		s.emitStale(se, t, ru)
		s.dirty = true
		return
	case outcomeHeld:
		o.Combined, o.Driver = se.last.result()
	}
	s.dirty = true
	if inc := s.set.opts.Incidents; inc != nil && se.group != "" && o.Combined.Ready && o.Combined.Score >= inc.MinScore() {
		var dt int64
		if se.last.t > 0 {
			dt = t - se.last.t
		}
		inc.send(incidentEvent{kind: eventEvidence, group: se.group, t: t, dt: dt, detail: evidenceDetail(se.info, x, se.isRate(), &o)})
	}
	se.last.replace(verdict(t, x, &o))
	r := se.last.record(se.info, detectors.KindCombined, ru.drivers)
	r.Rate, r.HasValue = se.isRate(), se.hasValue(ru)
	s.out = append(s.out, r)
	if alarm := o.Combined.Ready && o.Combined.Score >= 1; alarm || len(s.detail) > 0 {
		s.keepDetail(se.info, t, &o, res == outcomeHeld, alarm, se.seen)
	}
	if se.per != nil {
		for k := range detectors.NumKinds {
			if ru.enabled&(1<<k) == 0 {
				continue
			}
			r := &o.Per[k]
			se.per[k].replace(lastOut{t: t, score: r.Score, expected: r.Expected, lower: r.Lower, upper: r.Upper, value: x, warmup: !r.Ready})
			s.out = append(s.out, se.per[k].record(se.info, detectors.Kind(k), 0))
		}
	}
}

// verdict is the combined output o of a sample at t, analysed value x,
// as a lastOut.
func verdict(t int64, x float64, o *detectors.Output) lastOut {
	c := &o.Combined
	return lastOut{t: t, score: c.Score, expected: c.Expected, lower: c.Lower, upper: c.Upper,
		value: x, warmup: !c.Ready, driver: o.Driver}
}

// result is the verdict l holds as detectors give it: verdict's inverse.
func (l *lastOut) result() (detectors.Result, detectors.Kind) {
	return detectors.Result{Score: l.score, Expected: l.expected, Lower: l.lower, Upper: l.upper, Ready: !l.warmup}, l.driver
}

// replace makes cur the latest output, carrying the highest score of the
// outputs no /metrics snapshot has shown yet into cur.peak.
func (l *lastOut) replace(cur lastOut) {
	if !l.shown {
		cur.peak = max(l.peak, float32(min(l.score, math.MaxFloat32)))
	}
	*l = cur
}

// snapshotRecord returns l as the record of detector k for a /metrics
// snapshot, its score the highest since the previous snapshot, and marks
// it shown.
func (l *lastOut) snapshotRecord(info *series.Info, k detectors.Kind, drivers uint8) series.Record {
	r := l.record(info, k, drivers)
	r.Score = max(r.Score, float64(l.peak))
	l.shown, l.peak = true, 0
	return r
}

// record returns l as the record of detector k, with the driver series in
// drivers (0 for a single detector; series.Record.DriverSet).
func (l *lastOut) record(info *series.Info, k detectors.Kind, drivers uint8) series.Record {
	r := series.Record{Series: info, T: l.t, Detector: k, Warmup: l.warmup, Driver: l.driver, DriverSet: drivers,
		Score: l.score, Expected: l.expected, Lower: l.lower, Upper: l.upper}
	if !l.warmup {
		r.Analysed = l.value
	}
	return r
}

// emitStale emits stale markers at t for every output series of se under
// rule ru, the driver series included.
func (s *shard) emitStale(se *seriesState, t int64, ru *rule) {
	// A revived series holds no score from before. One asleep keeps its
	// verdict: revived with the same value, it emits that again, as its
	// detectors would have said it.
	if se.asleep {
		se.last.peak, se.last.shown = 0, true
	} else {
		se.last = lastOut{shown: true}
	}
	s.out = append(s.out, series.Record{Series: se.info, T: t, Detector: detectors.KindCombined, Stale: true,
		DriverSet: ru.drivers, HasValue: se.hasValue(ru)})
	if se.per != nil {
		s.stalePer(se, t, ru.enabled)
	}
}

// stalePer emits stale markers at t for se's per-detector series of the
// detectors in kinds and forgets their outputs.
func (s *shard) stalePer(se *seriesState, t int64, kinds uint8) {
	for k := range detectors.NumKinds {
		if kinds&(1<<k) != 0 {
			s.out = append(s.out, series.Record{Series: se.info, T: t, Detector: detectors.Kind(k), Stale: true})
			se.per[k] = lastOut{shown: true}
		}
	}
}

// evict drops series idle for longer than the TTL, with stale markers for
// their output series.
func (s *shard) evict(now time.Time) {
	cutoff := now.Add(-s.set.opts.SeriesTTL).UnixMilli()
	nowMs := now.UnixMilli()
	for i := range s.slots.n {
		se := s.slots.at(i)
		if se.info == nil || se.seen >= cutoff {
			continue
		}
		if se.flags&flagWarming != 0 {
			// Idle while waiting: score what it holds, then evict it.
			s.finishWarming(i, se, s.warming[i], nil)
			s.stats.warmGaveUp[gaveUpEvicted].Add(1)
		}
		s.remove(i, max(nowMs, se.lastT+1), &s.rules.rules[se.rule])
	}
	s.expireDetail(nowMs)
	s.flushOut()
	s.commitStats()
}

// remove untracks slot i, emitting stale markers at t for the output
// series its rule ru gave it if it has outputs. A warming series loses its
// held samples (a rule now ignores it).
func (s *shard) remove(i uint32, t int64, ru *rule) {
	se := s.slots.at(i)
	s.leaveGroup(se.group, t)
	if se.flags&(flagStale|flagHasOutput) == flagHasOutput {
		s.emitStale(se, t, ru)
	}
	if se.flags&flagWarming != 0 {
		delete(s.warming, i)
		s.stats.warming.Add(-1)
	}
	s.unlink(i)
	s.stats.seriesEvicted.Add(1)
	s.dirty = true
}

// unlink frees slot i: out of its hash chain, its state cleared (the
// detector memory kept for the next series), on the free list.
func (s *shard) unlink(i uint32) {
	se := s.slots.at(i)
	h := se.info.Hash
	if ref := s.table.get(h); ref == i+1 {
		if se.next == 0 {
			s.table.del(h)
		} else {
			s.table.set(h, se.next)
		}
	} else {
		for ref != 0 {
			prev := s.slots.at(ref - 1)
			if prev.next == i+1 {
				prev.next = se.next
				break
			}
			ref = prev.next
		}
	}
	if se.asleep {
		s.local.woken++
	}
	det := se.det
	if det != nil {
		det.Reset() // its allocation kept for the slot's next series
	}
	s.counts.put(se.count)
	*se = seriesState{det: det}
	s.free = append(s.free, i)
	s.set.active.Add(-1)
	s.stats.active.Add(-1)
}

func (s *shard) flushOut() {
	if len(s.out) > 0 {
		s.set.out.Append(s.out)
		clear(s.out)
		s.out = s.out[:0]
	}
}

// snapshot is the latest output of every live series of a shard, as of at.
// It is never modified after it is stored, so readers need no lock.
type snapshot struct {
	at   time.Time
	recs []series.Record
}

// publish makes the latest outputs visible to readers; a combined score is
// the highest since the previous snapshot (see lastOut.peak), its expected
// value and band the latest. It costs O(series),
// so it runs when a reader asks (a /metrics scrape), not per sample or on a
// timer: a new slice each time, which readers may keep.
func (s *shard) publish(now time.Time) {
	old := s.snap.Load()
	if !s.dirty && old != nil {
		return
	}
	s.dirty = false
	var n int
	if old != nil {
		n = len(old.recs)
	}
	recs := make([]series.Record, 0, n)
	for i := range s.slots.n {
		se := s.slots.at(i)
		if se.info == nil || se.flags&(flagStale|flagHasOutput) != flagHasOutput {
			continue
		}
		ru := &s.rules.rules[se.rule]
		r := se.last.snapshotRecord(se.info, detectors.KindCombined, ru.drivers)
		r.Rate, r.HasValue = se.isRate(), se.hasValue(ru)
		recs = append(recs, r)
		if se.per != nil {
			for k := range detectors.NumKinds {
				if ru.enabled&(1<<k) != 0 && se.per[k].t != 0 { // t 0: no output since enabled
					recs = append(recs, se.per[k].snapshotRecord(se.info, detectors.Kind(k), 0))
				}
			}
		}
	}
	s.snap.Store(&snapshot{at: now, recs: recs})
}

// applyRules switches the shard to new rules. Series whose treatment did
// not change keep their detector state; the others start over or, when a
// rule now ignores them, are removed. Driver series the new rules no longer
// produce (output.driver or a detector turned off) get stale markers.
func (s *shard) applyRules(rules *Rules, perDetector bool) {
	old := s.rules
	s.rules = rules
	s.ignore.Reset()
	nowMs := time.Now().UnixMilli()
	for i := range s.slots.n {
		se := s.slots.at(i)
		if se.info == nil {
			continue
		}
		ri := rules.match(se.info.Labels)
		oldRule, newRule := &old.rules[se.rule], &rules.rules[ri]
		if newRule.ignore {
			s.remove(i, max(nowMs, se.lastT+1), oldRule)
			continue
		}
		live := se.flags&(flagStale|flagHasOutput) == flagHasOutput
		t := max(nowMs, se.lastT+1)
		gone, goneValue := oldRule.drivers&^newRule.drivers, se.hasValue(oldRule) && !se.hasValue(newRule)
		if (gone != 0 || goneValue) && live {
			s.out = append(s.out, series.Record{Series: se.info, T: t, Detector: detectors.KindCombined,
				Stale: true, OnlyExtras: true, DriverSet: gone, HasValue: goneValue})
		}
		if se.per != nil && live {
			// Per-detector series of detectors the series no longer
			// reports: all of them without output.per_detector.
			gone := oldRule.enabled &^ newRule.enabled
			if !perDetector {
				gone = oldRule.enabled
			}
			s.stalePer(se, t, gone)
		}
		if !old.sameTreatment(int(se.rule), rules, ri) {
			se.restart(newRule.params, &s.local)
			se.flags &^= flagPrimed
			se.dropCount(&s.counts)
		}
		if s.set.opts.Incidents != nil {
			// Its rule, or its rule's group_by, may have changed: a series
			// whose group changed moves to the new one, and the incident
			// stage hears of both.
			s.groupBuf = newRule.groupKey(se.info.Labels, s.groupBuf)
			if string(s.groupBuf) != se.group {
				s.leaveGroup(se.group, t)
				se.group = s.joinGroup(s.groupBuf, t, false)
			}
		}
		se.rule = uint16(ri)
		if perDetector && se.per == nil {
			se.per = new([detectors.NumKinds]lastOut)
		} else if !perDetector {
			se.per = nil
		}
	}
	s.flushOut()
	s.commitStats()
	s.dirty = true
}
