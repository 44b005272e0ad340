package window

import (
	"github.com/anomalyd/anomalyd/detectors"
)

// Analyser runs one series through exactly the per-sample logic of a shard
// (staleness, ordering, duplicates, non-finite values, counter rates,
// detectors) without a shard: the backtest uses it so that its scores are
// the server's. Not safe for concurrent use.
type Analyser struct {
	se     seriesState
	params *detectors.Params
	st     localStats
	counts countPool
	last   detectors.Output // the last verdict, emitted again while the series sleeps
}

// NewAnalyser returns an Analyser for a series analysed with p; counter
// says whether it is analysed as a per-second rate.
func NewAnalyser(p *detectors.Params, counter bool) *Analyser {
	a := &Analyser{params: p}
	if counter {
		a.se.flags |= flagCounter
	}
	a.se.detSet().Init(p)
	return a
}

// Observe applies one sample (t in milliseconds). analysed is false when
// the sample was not fed to the detectors (out of order, duplicate,
// non-finite, stale marker, a counter's first sample); then o is zero.
//
// While the series sleeps (see seriesState.hold), o is the last verdict
// again, per-detector results included, as a shard emits it.
func (a *Analyser) Observe(t int64, v float64) (o detectors.Output, analysed bool) {
	res, o, x := a.se.observe(a.params, t, v, &a.st, &a.counts, true)
	switch res {
	case outcomeHeld:
		return a.last, true
	case outcomeAnalysed:
		a.last = o
		a.se.last = verdict(t, x, &o) // what maySleep compares with
		return o, true
	}
	return o, false
}

// ParamsFor returns the detector settings the first matching rule gives a
// series with canonical labels (name 0xff value 0xff …, sorted), and
// whether a rule ignores it.
func (rs *Rules) ParamsFor(labels string) (p *detectors.Params, ignored bool) {
	r := &rs.rules[rs.match(labels)]
	return r.params, r.ignore
}
