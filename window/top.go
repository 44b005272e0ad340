package window

import (
	"cmp"
	"container/heap"
	"slices"
	"time"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// topCount is what Top found besides the series it returns.
type topCount struct {
	live      int // live series with a Ready verdict
	anomalous int // those of them keep accepts that score 1 or more
}

// Top returns the latest combined record of the k series whose latest
// verdict scores highest, among the live series with a Ready verdict that
// keep accepts (nil: all), highest first, ties in label order, and how many
// live series have a Ready verdict and how many of those keep accepts
// score 1 or more. The score
// is that of the latest sample, not the highest since the last scrape:
// reading it takes nothing from /metrics.
//
// Each shard answers on its own goroutine, in one pass over its series,
// and ingests nothing meanwhile; keep runs there, so it must be quick and
// must not call back into Shards. Callers bound how often they ask. Top
// returns nothing before the shards start.
func (s *Shards) Top(k int, keep func(*series.Info) bool) (top []series.Record, live, anomalous int) {
	var all []series.Record
	var n topCount
	if k <= 0 {
		return nil, 0, 0
	}
	for i, sh := range s.shards {
		s.onShard(i, func() {
			h := sh.top(k, keep, &n)
			all = append(all, h...)
		})
	}
	slices.SortFunc(all, byScore)
	return all[:min(k, len(all))], n.live, n.anomalous
}

// byScore orders records by descending score, then by labels.
func byScore(a, b series.Record) int {
	if c := cmp.Compare(b.Score, a.Score); c != 0 {
		return c
	}
	return cmp.Compare(a.Series.Labels, b.Series.Labels)
}

// topHeap is a min-heap of records by byScore's order: its root is the
// record that leaves first when a higher one arrives.
type topHeap []series.Record

func (h topHeap) Len() int           { return len(h) }
func (h topHeap) Less(i, j int) bool { return byScore(h[i], h[j]) > 0 }
func (h topHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *topHeap) Push(x any)        { *h = append(*h, x.(series.Record)) }
func (h *topHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}

// top returns shard s's k highest Ready verdicts that keep accepts, in no
// order, and adds what it saw to n. The score is compared before keep
// runs, so a selective keep is asked only about series that could enter.
func (s *shard) top(k int, keep func(*series.Info) bool, n *topCount) []series.Record {
	h := make(topHeap, 0, k)
	for i := range s.slots.n {
		se := s.slots.at(i)
		if se.info == nil || se.flags&(flagStale|flagHasOutput) != flagHasOutput || se.last.warmup {
			continue
		}
		n.live++
		score := se.last.score
		full := len(h) == k
		if full && score < h[0].Score && score < 1 {
			continue
		}
		if keep != nil && !keep(se.info) {
			continue
		}
		if score >= 1 {
			n.anomalous++
		}
		r := se.last.record(se.info, detectors.KindCombined, 0)
		r.Rate = se.isRate()
		switch {
		case !full:
			heap.Push(&h, r)
		case byScore(r, h[0]) < 0:
			h[0] = r
			heap.Fix(&h, 0)
		}
	}
	return h
}

// Recent calls f with the analysed values the detectors keep of each of
// infos (i its index), oldest first: their rolling window, the last
// detectors.Params.Window samples (detectors.Set.Recent). A sleeping series
// gives the first and the latest sample of its run of one value (its value
// did not change between them). A series that is gone, or whose detectors
// keep no window, gives nothing. Like Top, it runs on the goroutine of each
// shard that holds one of infos, and so does f.
func (s *Shards) Recent(infos []*series.Info, f func(i int, t int64, v float64)) {
	byShard := make(map[int][]int)
	for i, info := range infos {
		sh := int(info.Hash % uint64(len(s.shards)))
		byShard[sh] = append(byShard[sh], i)
	}
	for i, which := range byShard {
		sh := s.shards[i]
		s.onShard(i, func() {
			for _, j := range which {
				sh.recent(infos[j], func(t int64, v float64) { f(j, t, v) })
			}
		})
	}
}

// recent is Recent for one series of shard s.
func (s *shard) recent(info *series.Info, f func(t int64, v float64)) {
	ref, ok := s.lookup(info.Hash, []byte(info.Labels))
	if !ok {
		return
	}
	switch se := s.slots.at(ref); {
	case se.asleep:
		f(se.runT0, se.runV)
		f(se.lastT, se.runV)
	case se.det != nil:
		se.det.Recent(f)
	}
}

const (
	// detailTTL is how long a shard keeps a series' detector results after
	// the last Detail call for it.
	detailTTL = 10 * time.Minute
	// maxDetail bounds the series a shard keeps them for.
	maxDetail = 64
)

// detailEntry is what a shard keeps of one series for Detail.
type detailEntry struct {
	t      int64 // ms of the sample o is the verdict on; 0: none yet
	o      detectors.Output
	asleep bool
	asked  int64 // wall ms of the last Detail call, or of the last alarm
}

// Detail returns every detector's verdict o on the latest sample (at t,
// ms) of the live series info, from the shard's goroutine; asleep when the
// series' value has not changed since its detectors started and it is
// held without them, o then holding only Combined. The shards compute
// every detector's verdict for every sample but keep only the combined
// one, except for a series that scored 1 or more or that a reader asked
// about: they keep its verdicts from then on, for detailTTL after its
// last alarm or call and for at most maxDetail series a shard. For any
// other series the first call starts keeping them and ok is false until
// its next sample; false too when the series is gone.
func (s *Shards) Detail(info *series.Info) (t int64, o detectors.Output, asleep, ok bool) {
	i := int(info.Hash % uint64(len(s.shards)))
	sh := s.shards[i]
	var e detailEntry
	s.onShard(i, func() { e = sh.askDetail(info, time.Now().UnixMilli()) })
	return e.t, e.o, e.asleep, e.t != 0
}

// askDetail is Detail on shard s at wall time now (ms).
func (s *shard) askDetail(info *series.Info, now int64) detailEntry {
	if !s.live(info) {
		return detailEntry{}
	}
	return *s.detailOf(info, now)
}

// detailOf returns info's detail entry, made if it has none (in place of
// the one asked about or alarmed longest ago when maxDetail are kept), and
// marks it wanted at wall time now (ms).
func (s *shard) detailOf(info *series.Info, now int64) *detailEntry {
	e := s.detail[info]
	if e == nil {
		if s.detail == nil {
			s.detail = map[*series.Info]*detailEntry{}
		}
		if len(s.detail) >= maxDetail {
			var oldest *series.Info
			for k, v := range s.detail {
				if oldest == nil || v.asked < s.detail[oldest].asked {
					oldest = k
				}
			}
			delete(s.detail, oldest)
		}
		e = &detailEntry{}
		s.detail[info] = e
	}
	e.asked = max(e.asked, now)
	return e
}

// keepDetail records o, the verdict on info's sample at t, if a reader
// asked for the series or, alarm, o scores 1 or more: a series that
// alarmed is the one a reader opens next, from an incident or a list, and
// finds its detectors' verdicts there at once (held: the series sleeps
// and o is its held combined verdict; now: wall ms).
func (s *shard) keepDetail(info *series.Info, t int64, o *detectors.Output, held, alarm bool, now int64) {
	e := s.detail[info]
	if alarm {
		e = s.detailOf(info, now)
	}
	if e != nil {
		e.t, e.o, e.asleep = t, *o, held
	}
}

// expireDetail drops the detail of series no reader asked about for
// detailTTL, and of series that are gone (a new life of a series has a new
// series.Info).
func (s *shard) expireDetail(now int64) {
	for info, e := range s.detail {
		if !s.live(info) || now-e.asked > detailTTL.Milliseconds() {
			delete(s.detail, info)
		}
	}
}

// live reports whether info is the series.Info of a series shard s tracks
// (not of an earlier life of it).
func (s *shard) live(info *series.Info) bool {
	ref, ok := s.lookup(info.Hash, []byte(info.Labels))
	return ok && s.slots.at(ref).info == info
}
