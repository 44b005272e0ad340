package remotewrite

import (
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// incidentSeries are the series sent per incident group, each publication
// of the stage: the series sink/metrics writes on /metrics, with the same
// values (package sink's tests check that the two agree). An
// incidentSample's kind indexes this table.
var incidentSeries = [...]struct {
	name    string
	counter bool
	value   func(g *incident.GroupStatus) float64
}{
	{incident.ScoreName, false, func(g *incident.GroupStatus) float64 { return g.Score }},
	{incident.SeriesName, false, func(g *incident.GroupStatus) float64 { return float64(g.Series) }},
	{incident.OpenName, false, func(g *incident.GroupStatus) float64 {
		if g.Open {
			return 1
		}
		return 0
	}},
	{incident.OpenedName, true, func(g *incident.GroupStatus) float64 { return float64(g.Opened) }},
}

// numIncidentSeries is the number of samples one group becomes per
// publication.
const numIncidentSeries = int64(len(incidentSeries))

// incidentSample is one queued sample of an incident series: the group's
// canonical labels (immutable, shared with the stage's status), the time
// of the publication and the value, a stale marker when the group ended.
type incidentSample struct {
	group string
	t     int64
	v     float64
	kind  uint8 // index in incidentSeries
}

// incidentKey identifies an incident series in a batch.
type incidentKey struct {
	group string
	kind  uint8
}

// queueOfGroup returns the queue, of n, that every sample of a group goes
// through, so that each incident series reaches the store in time order
// while the groups spread over the queues.
func queueOfGroup(group string, n uint64) uint64 {
	if n == 1 {
		return 0
	}
	return xxhash.Sum64String(group) % n
}

// AppendIncidents queues the incident series of groups, one sample each at
// t, and stale markers at t for the series of the groups in ended. t must
// grow from call to call (window.Incidents sees to it). Like Append it
// never blocks on the network: a group whose samples do not fit in its
// queue is dropped and counted, all its series together. groups and ended
// are not kept.
func (w *RemoteWriter) AppendIncidents(t int64, groups []incident.GroupStatus, ended []string) {
	if len(groups) == 0 && len(ended) == 0 {
		return
	}
	n := uint64(len(w.queues))
	var full, shutdown int64
	for i, q := range w.queues {
		f, s := q.pushIncidents(t, groups, ended, uint64(i), n, w.capacity, int64(w.maxSend))
		full += f
		shutdown += s
	}
	w.countDropped(full, shutdown)
}

// pushIncidents is push for the incident series of the groups that belong
// to queue qi of n.
func (q *queue) pushIncidents(t int64, groups []incident.GroupStatus, ended []string, qi, n uint64, capacity, batch int64) (full, shutdown int64) {
	const k = numIncidentSeries
	q.mu.Lock()
	p0 := q.pending.Load()
	p := p0
	// room says whether a group's k samples go in, counting them if not.
	room := func() bool {
		switch {
		case q.closed:
			shutdown += k
		case p+k > capacity:
			full += k
		default:
			p += k
			return true
		}
		return false
	}
	for i := range groups {
		g := &groups[i]
		if queueOfGroup(g.Group, n) != qi || !room() {
			continue
		}
		for kind := range incidentSeries {
			q.inc = append(q.inc, incidentSample{group: g.Group, t: t, v: incidentSeries[kind].value(g), kind: uint8(kind)})
		}
	}
	for _, group := range ended {
		if queueOfGroup(group, n) != qi || !room() {
			continue
		}
		for kind := range incidentSeries {
			q.inc = append(q.inc, incidentSample{group: group, t: t, v: staleNaN, kind: uint8(kind)})
		}
	}
	q.commitUnlock(p0, p, batch)
	return full, shutdown
}

// appendGroupLabels appends the labels of incident series name of a group
// (canonical labels) to dst, sorted by name: the group's labels and
// __name__. The strings alias group; nothing is allocated when dst has
// room.
func appendGroupLabels(dst []prompb.Label, group, name string) []prompb.Label {
	named := false
	for n, v, rest := series.NextLabel(group); n != ""; n, v, rest = series.NextLabel(rest) {
		if !named && n > "__name__" {
			dst = append(dst, prompb.Label{Name: "__name__", Value: name})
			named = true
		}
		dst = append(dst, prompb.Label{Name: n, Value: v})
	}
	if !named {
		dst = append(dst, prompb.Label{Name: "__name__", Value: name})
	}
	return dst
}

// encodeIncidents adds the incident samples to the request being encoded:
// the samples of one series in one TimeSeries, in queue order (which is
// time order).
func (e *encoder) encodeIncidents(inc []incidentSample, rw2 bool) {
	for i := range inc {
		s := &inc[i]
		k := incidentKey{s.group, s.kind}
		idx, ok := e.incIndex[k]
		if rw2 {
			if !ok {
				idx = e.newRW2Incident(s)
				e.incIndex[k] = idx
			}
			ts := &e.rw2.Timeseries[idx]
			ts.Samples = append(ts.Samples, writev2.Sample{Value: s.v, Timestamp: s.t})
		} else {
			if !ok {
				idx = e.newRW1Incident(s)
				e.incIndex[k] = idx
			}
			ts := &e.rw1.Timeseries[idx]
			ts.Samples = append(ts.Samples, prompb.Sample{Value: s.v, Timestamp: s.t})
		}
	}
}

// newRW1Incident adds the TimeSeries of s's series, reusing the label and
// sample slices of an earlier batch, and returns its index.
func (e *encoder) newRW1Incident(s *incidentSample) int32 {
	idx := len(e.rw1.Timeseries)
	if idx < cap(e.rw1.Timeseries) {
		e.rw1.Timeseries = e.rw1.Timeseries[:idx+1]
	} else {
		e.rw1.Timeseries = append(e.rw1.Timeseries, prompb.TimeSeries{})
	}
	ts := &e.rw1.Timeseries[idx]
	ts.Labels = appendGroupLabels(ts.Labels[:0], s.group, incidentSeries[s.kind].name)
	ts.Samples = ts.Samples[:0]
	return int32(idx)
}

// newRW2Incident is newRW1Incident for RW2: labels become symbol
// references, and the metadata says counter for the counter of incidents
// opened, gauge for the others.
func (e *encoder) newRW2Incident(s *incidentSample) int32 {
	idx := len(e.rw2.Timeseries)
	if idx < cap(e.rw2.Timeseries) {
		e.rw2.Timeseries = e.rw2.Timeseries[:idx+1]
	} else {
		e.rw2.Timeseries = append(e.rw2.Timeseries, writev2.TimeSeries{})
	}
	ts := &e.rw2.Timeseries[idx]
	e.lbls = appendGroupLabels(e.lbls[:0], s.group, incidentSeries[s.kind].name)
	refs := ts.LabelsRefs[:0]
	for _, l := range e.lbls {
		refs = append(refs, e.symbols.Symbolize(l.Name), e.symbols.Symbolize(l.Value))
	}
	ts.LabelsRefs = refs
	ts.Samples = ts.Samples[:0]
	typ := writev2.Metadata_METRIC_TYPE_GAUGE
	if incidentSeries[s.kind].counter {
		typ = writev2.Metadata_METRIC_TYPE_COUNTER
	}
	ts.Metadata = writev2.Metadata{Type: typ}
	return int32(idx)
}
