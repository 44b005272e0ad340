package window

import (
	"time"

	"go.uber.org/zap"
)

// Several senders of one series (a Prometheus HA pair without ha:, two
// agents scraping the same target) show in the shards' counters as a
// steady share of samples older than their series' last sample
// (out_of_order) or at its timestamp with another value
// (duplicate_timestamp): the two streams interleave, and half or more of
// the second one's samples land behind the first one's. One sender never
// does that for long: its retries are exact duplicates, and resharding or
// a restart misorders a few seconds' worth. So the shards log it once, with
// a pointer to the documentation, when the share stays high for minutes.
const (
	// sendersEvery is how often the share is measured: a minute holds
	// several scrapes at any common scrape interval.
	sendersEvery = time.Minute
	// sendersMinutes in a row must each be over the thresholds, so a
	// restart's or a resharding's burst, which lasts seconds, never is.
	sendersMinutes = 5
	// sendersShare of the samples that reached the order check: two
	// interleaved senders reach 25–50%, one healthy sender stays near 0.
	sendersShare = 0.10
	// sendersMinSamples misordered per minute, so that a handful of odd
	// series on a quiet instance (a few samples over a tiny total) does
	// not count as a second sender.
	sendersMinSamples = 10
	// sendersDocs is where the warning sends the reader.
	sendersDocs = "docs/operations.md#high-availability"
)

// senderWatch judges, minute by minute, whether several senders write the
// same series. The zero value is ready; it is used by one goroutine.
type senderWatch struct {
	seen, misordered uint64 // cumulative counts at the last minute
	started          bool
	streak           int  // minutes in a row over the thresholds
	warned           bool // the warning is logged once per process
}

// observe takes the cumulative counts at the end of a minute: samples of
// tracked series that reached the order check, and those of them that
// were out of order or conflicting duplicates. It returns true once, at
// the minute that completes sendersMinutes in a row over the thresholds,
// with the share over that minute.
func (w *senderWatch) observe(seen, misordered uint64) (bool, float64) {
	if !w.started || seen < w.seen || misordered < w.misordered {
		w.started, w.seen, w.misordered, w.streak = true, seen, misordered, 0
		return false, 0
	}
	ds, dm := seen-w.seen, misordered-w.misordered
	w.seen, w.misordered = seen, misordered
	share := 0.0
	if ds > 0 {
		share = float64(dm) / float64(ds)
	}
	if dm >= sendersMinSamples && share >= sendersShare {
		w.streak++
	} else {
		w.streak = 0
	}
	if w.streak >= sendersMinutes && !w.warned {
		w.warned = true
		return true, share
	}
	return false, share
}

// orderCounts sums, over the shards, the samples that reached the order
// check and those found out of order or conflicting.
func (s *Shards) orderCounts() (seen, misordered uint64) {
	for _, sh := range s.shards {
		st := &sh.stats
		bad := st.outOfOrder.Load() + st.conflicts.Load()
		seen += bad + st.samples.Load() + st.duplicates.Load() + st.primed.Load() + st.nonFinite.Load()
		misordered += bad
	}
	return seen, misordered
}

// watchSenders runs senderWatch every sendersEvery until stop is closed.
func (s *Shards) watchSenders(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(sendersEvery)
	defer tick.Stop()
	var w senderWatch
	w.observe(s.orderCounts())
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if warn, share := w.observe(s.orderCounts()); warn {
				s.logger.Warn("several senders seem to write the same series: for "+
					"the last minutes, many samples were older than their series' last sample or had its "+
					"timestamp with another value (anomalyd_window_samples_not_analysed_total{reason=~\"out_of_order|duplicate_timestamp\"}); "+
					"their scores are unreliable and alarms may double. A Prometheus HA pair needs ha: see "+sendersDocs,
					zap.Float64("share_last_minute", share), zap.Int("minutes", sendersMinutes))
				return // said once; nothing more to watch
			}
		}
	}
}
