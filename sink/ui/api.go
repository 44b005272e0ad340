package ui

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// Source gives the series whose latest verdict scores highest and the
// values the detectors keep of given series (window.Shards implements it).
type Source interface {
	Top(k int, keep func(*series.Info) bool) (top []series.Record, live, anomalous int)
	Recent(infos []*series.Info, f func(i int, t int64, v float64))
	Detail(info *series.Info) (t int64, o detectors.Output, asleep, ok bool)
}

const (
	// defaultLimit is how many series a list returns unless asked.
	defaultLimit = 50
	// maxRows bounds offset+limit: a page is read by a person, and each
	// shard keeps that many candidates while it answers.
	maxRows = 1000
	// maxWatch is how many of the top series a request of the current
	// top list asks the store to keep.
	maxWatch = 50
	// maxSeriesAnswer bounds the series one /api/v1/series answer carries.
	maxSeriesAnswer = 1000
	// maxGroupScan is how many series of a group /api/v1/detail compares
	// (its highest-scoring), and maxSimilar how many it returns.
	maxGroupScan = 500
	maxSimilar   = 5
)

// API serves the JSON endpoints behind the page: /api/v1/anomalies and
// /api/v1/series.
type API struct {
	store *Store
	src   Source
	// groupBy returns the labels that make a series' group
	// (incidents.group_by).
	groupBy func() []string
	now     func() time.Time
	// topMu lets one request at a time scan the shards, each of which
	// stops ingesting while it answers.
	topMu sync.Mutex
}

// NewAPI returns the API over store and src; groupBy gives the labels of
// a series' group, among which /api/v1/detail looks for similar series.
func NewAPI(store *Store, src Source, groupBy func() []string) *API {
	return &API{store: store, src: src, groupBy: groupBy, now: time.Now}
}

// withRecent returns, for each of infos, its kept points (kept[i], oldest
// first) after the values the detectors keep from before them, those
// without a verdict: a plot then shows what the series did before it
// mattered, and a series the store does not keep still has one.
func (a *API) withRecent(infos []*series.Info, kept [][]Point) [][]Point {
	out := make([][]Point, len(infos))
	a.src.Recent(infos, func(i int, t int64, v float64) {
		if len(kept[i]) == 0 || t < kept[i][0].T {
			out[i] = append(out[i], Point{T: t, Value: v, NoVerdict: true})
		}
	})
	for i := range out {
		out[i] = append(out[i], kept[i]...)
	}
	return out
}

// badRequest answers 400 with an error in the envelope of Prometheus's API.
func badRequest(w http.ResponseWriter, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "bad_data", "error": fmt.Sprintf(format, args...)})
}

// getOnly answers 405 to anything but GET and HEAD, and reports whether
// it did.
func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return false
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "use GET", http.StatusMethodNotAllowed)
	return true
}

// parseMatch parses the match[] parameters: a series is selected when it
// matches any of them, as in Prometheus's API; no parameter selects all.
func parseMatch(r *http.Request) (func(*series.Info) bool, error) {
	sels := r.Form["match[]"]
	if len(sels) == 0 {
		return nil, nil
	}
	var all [][]*labels.Matcher
	for _, s := range sels {
		ms, err := config.ParseSelector(s)
		if err != nil {
			return nil, fmt.Errorf("invalid match[] %q: %w", s, err)
		}
		all = append(all, ms)
	}
	return func(info *series.Info) bool {
		return config.MatchesAny(all, func(name string) string { return series.LabelValue(info.Labels, name) })
	}, nil
}

// intParam returns the integer parameter name, def when absent.
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.Form.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("invalid %s %q: want an integer from %d to %d", name, s, lo, hi)
	}
	return n, nil
}

// verdictJSON is a series' verdict on one sample and why, as every
// endpoint here writes it.
type verdictJSON struct {
	Labels   map[string]string `json:"labels"`
	Time     time.Time         `json:"time"`
	Score    float64           `json:"score"`
	Value    float64           `json:"value"`
	Expected float64           `json:"expected"`
	Lower    float64           `json:"lower"`
	Upper    float64           `json:"upper"`
	Detector string            `json:"detector"`
	Reason   string            `json:"reason"`
	// PerSecond: value, expected and band are per-second rates, the
	// series being a counter or a gauge that only grows.
	PerSecond bool `json:"per_second"`
}

// verdictOf is the verdict d on the sample at t (ms) of the series with
// canonical labels key, showing score; the reason is "within its band"
// while d scores below 1.
func verdictOf(key string, t int64, score float64, d *incident.Detail) verdictJSON {
	reason := "within its band"
	if d.Score >= 1 {
		reason = d.Reason()
	}
	return verdictJSON{Labels: LabelMap(key), Time: time.UnixMilli(t).UTC(), Score: finite(score),
		Value: finite(d.Value), Expected: finite(d.Expected), Lower: finite(d.Lower), Upper: finite(d.Upper),
		Detector: d.Driver.String(), Reason: reason, PerSecond: d.Rate}
}

// seriesJSON is one listed series: its verdict and, for a plot, its points.
type seriesJSON struct {
	verdictJSON
	// Kept: the store keeps its recent samples (/api/v1/series has them).
	Kept bool `json:"kept"`
	// Points are its recent points, with points=true.
	Points []pointJSON `json:"points,omitempty"`
}

// recordRow is the row of the verdict rc.
func recordRow(rc *series.Record) seriesJSON {
	d := incident.Detail{Value: rc.Analysed, Expected: rc.Expected, Lower: rc.Lower, Upper: rc.Upper, Score: rc.Score, Driver: rc.Driver, Rate: rc.Rate}
	return seriesJSON{verdictJSON: verdictOf(rc.Series.Labels, rc.T, rc.Score, &d)}
}

// pointRow is the row of the kept point p of info.
func pointRow(info *series.Info, p *Point) seriesJSON {
	score := float64(p.Score)
	d := incident.Detail{Value: p.Value, Expected: p.Expected, Lower: p.Lower, Upper: p.Upper, Score: score, Driver: p.Driver, Rate: p.Rate}
	return seriesJSON{verdictJSON: verdictOf(info.Labels, p.T, score, &d)}
}

// parseRequest answers what a request that is not a GET or whose
// parameters do not parse gets, and returns its match[] selection (nil:
// none given); ok is false when it answered. required: match[] must be
// given.
func parseRequest(w http.ResponseWriter, r *http.Request, required bool) (keep func(*series.Info) bool, ok bool) {
	if getOnly(w, r) {
		return nil, false
	}
	if err := r.ParseForm(); err != nil {
		badRequest(w, "%v", err)
		return nil, false
	}
	keep, err := parseMatch(r)
	switch {
	case err != nil:
		badRequest(w, "%v", err)
		return nil, false
	case keep == nil && required:
		badRequest(w, "no match[] parameter: give at least one series selector")
		return nil, false
	}
	return keep, true
}

// Anomalies serves GET /api/v1/anomalies: the most anomalous series, now
// (by their latest verdict, over every series) or, with range, over that
// past span (by their highest score in it, over the kept series: a series
// that scored 1 or more in the span is kept, unless the store was full).
//
// Parameters: match[] (selectors, any of which a series must match),
// limit (1–1000, default 50), offset (limit+offset ≤ 1000), range (a
// Prometheus duration such as 15m or 1h), points (true: each series with
// its recent points, as /api/v1/series gives them).
func (a *API) Anomalies(w http.ResponseWriter, r *http.Request) {
	keep, ok := parseRequest(w, r, false)
	if !ok {
		return
	}
	limit, err := intParam(r, "limit", defaultLimit, 1, maxRows)
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	offset, err := intParam(r, "offset", 0, 0, maxRows-limit)
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	var span time.Duration
	if s := r.Form.Get("range"); s != "" {
		d, err := model.ParseDuration(s)
		if err != nil || d <= 0 {
			badRequest(w, "invalid range %q: want a positive duration such as 15m or 1h", s)
			return
		}
		span = time.Duration(d)
	}
	withPoints := false
	if s := r.Form.Get("points"); s != "" {
		if withPoints, err = strconv.ParseBool(s); err != nil {
			badRequest(w, "invalid points %q: want true or false", s)
			return
		}
	}
	var (
		rows  []seriesJSON
		infos []*series.Info
		kept  [][]Point
		data  = map[string]any{}
	)
	if span == 0 {
		a.topMu.Lock()
		recs, live, anomalous := a.src.Top(offset+limit, keep)
		a.topMu.Unlock()
		for i := range recs[min(offset, len(recs)):] {
			rc := &recs[offset+i]
			rows = append(rows, recordRow(rc))
			infos = append(infos, rc.Series)
		}
		a.store.Watch(infos[:min(len(infos), maxWatch)])
		kept = make([][]Point, len(infos))
		for i, info := range infos {
			kept[i], rows[i].Kept = a.store.Lookup(info.Labels)
		}
		data["series_total"], data["anomalous"] = live, anomalous
	} else {
		from := a.now().Add(-span).UnixMilli()
		type ranked struct {
			row  seriesJSON
			kept Kept
		}
		var all []ranked
		anomalous := 0
		for _, k := range a.store.Series(keep) {
			best := -1
			for i := range k.Points {
				p := &k.Points[i]
				if p.T >= from && !p.NoVerdict && (best < 0 || p.Score > k.Points[best].Score) {
					best = i
				}
			}
			if best < 0 {
				continue
			}
			p := &k.Points[best]
			row := pointRow(k.Info, p)
			row.Kept = true
			if p.Score >= 1 {
				anomalous++
			}
			all = append(all, ranked{row, k})
		}
		slices.SortStableFunc(all, func(x, y ranked) int { return cmp.Compare(y.row.Score, x.row.Score) })
		for _, r := range all[min(offset, len(all)):min(offset+limit, len(all))] {
			rows, infos, kept = append(rows, r.row), append(infos, r.kept.Info), append(kept, r.kept.Points)
		}
		data["series_total"], data["anomalous"] = len(all), anomalous
	}
	if withPoints && len(rows) > 0 {
		for i, pts := range a.withRecent(infos, kept) {
			rows[i].Points = pointsJSON(pts)
		}
	}
	if rows == nil {
		rows = []seriesJSON{}
	}
	data["series"] = rows
	writeJSON(w, data)
}

// trendWindow is how many of a series' latest points its trend class is
// drawn from: about what its detectors' window holds by default.
const trendWindow = 30

// Series serves GET /api/v1/series: the kept series that match[] selects
// (required), each with its recent points, oldest first: [time in seconds,
// value, expected, lower, upper, score]. The first points may come from
// before the series was kept, from the values the detectors hold (the last
// detectors.window samples); they, and those of detectors warming up, have
// only a value: expected, lower, upper and score are null. limit (1–1000,
// default 1000) bounds the series.
func (a *API) Series(w http.ResponseWriter, r *http.Request) {
	keep, ok := parseRequest(w, r, true)
	if !ok {
		return
	}
	limit, err := intParam(r, "limit", maxSeriesAnswer, 1, maxSeriesAnswer)
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	all := a.store.Series(keep)
	sel := all[:min(len(all), limit)]
	infos, kept := make([]*series.Info, len(sel)), make([][]Point, len(sel))
	for i, k := range sel {
		infos[i], kept[i] = k.Info, k.Points
	}
	type keptJSON struct {
		Labels map[string]string `json:"labels"`
		Points []pointJSON       `json:"points"`
	}
	out := make([]keptJSON, 0, len(sel))
	for i, pts := range a.withRecent(infos, kept) {
		out = append(out, keptJSON{Labels: LabelMap(infos[i].Labels), Points: pointsJSON(pts)})
	}
	writeJSON(w, map[string]any{"series": out, "truncated": len(all) > limit})
}

func pointsJSON(pts []Point) []pointJSON {
	out := make([]pointJSON, len(pts))
	for i := range pts {
		out[i] = pointJSON(pts[i])
	}
	return out
}

// pointJSON writes a Point as a JSON array.
type pointJSON Point

func (p pointJSON) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 96)
	b = append(b, '[')
	b = strconv.AppendFloat(b, float64(p.T)/1000, 'f', -1, 64)
	num := func(v float64, ok bool) {
		b = append(b, ',')
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
			b = append(b, "null"...)
			return
		}
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	num(p.Value, true)
	num(p.Expected, !p.NoVerdict)
	num(p.Lower, !p.NoVerdict)
	num(p.Upper, !p.NoVerdict)
	num(float64(p.Score), !p.NoVerdict)
	return append(b, ']'), nil
}

// writeJSON answers data in the success envelope of Prometheus's API.
func writeJSON(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriter(w)
	json.NewEncoder(bw).Encode(map[string]any{"status": "success", "data": data})
	bw.Flush()
}

// LabelMap returns the labels of a canonical key as a map.
func LabelMap(key string) map[string]string {
	m := map[string]string{}
	for n, v, rest := series.NextLabel(key); n != ""; n, v, rest = series.NextLabel(rest) {
		m[n] = v
	}
	return m
}

// finite keeps JSON encodable: ±Inf and NaN cannot be written.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// Detail serves GET /api/v1/detail: the live series match[] picks (its
// highest-scoring one when it picks several) with its latest verdict and
// why, its recent points (as /api/v1/series), its trend class from its
// recent values, and the series of its group (the same values of the
// incidents.group_by labels) whose recent values correlate most with its
// own. 404 when no live series with a verdict matches.
func (a *API) Detail(w http.ResponseWriter, r *http.Request) {
	keep, ok := parseRequest(w, r, true)
	if !ok {
		return
	}
	a.topMu.Lock()
	top, _, _ := a.src.Top(1, keep)
	a.topMu.Unlock()
	if len(top) == 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "not_found", "error": "no live series with a verdict matches"})
		return
	}
	rc := &top[0]
	info := rc.Series
	row := recordRow(rc)
	kept, ok := a.store.Lookup(info.Labels)
	row.Kept = ok
	pts := a.withRecent([]*series.Info{info}, [][]Point{kept})[0]
	row.Points = pointsJSON(pts)
	data := map[string]any{"series": row}
	if tr, ok := trendOf(recentOnly(pts)); ok {
		data["trend"] = tr
	}
	data["detectors"] = detectorsJSON(a.src.Detail(info))

	// The group: the series with the same group labels, its
	// highest-scoring first.
	var group []string
	for _, name := range a.groupBy() {
		if v := series.LabelValue(info.Labels, name); v != "" {
			group = append(group, name, v)
		}
	}
	sims := []Similar{}
	if len(group) > 0 {
		a.topMu.Lock()
		members, _, _ := a.src.Top(maxGroupScan, func(o *series.Info) bool {
			for i := 0; i < len(group); i += 2 {
				if series.LabelValue(o.Labels, group[i]) != group[i+1] {
					return false
				}
			}
			return o.Labels != info.Labels
		})
		a.topMu.Unlock()
		infos := make([]*series.Info, 0, len(members)+1)
		infos = append(infos, info)
		for i := range members {
			infos = append(infos, members[i].Series)
		}
		recent := make([][]Point, len(infos))
		a.src.Recent(infos, func(i int, t int64, v float64) { recent[i] = append(recent[i], Point{T: t, Value: v}) })
		sims = similar(info, recent[0], infos[1:], recent[1:], maxSimilar)
		g := map[string]string{}
		for i := 0; i < len(group); i += 2 {
			g[group[i]] = group[i+1]
		}
		data["group"] = g
		data["group_series_compared"] = len(members)
	}
	data["similar"] = sims
	writeJSON(w, data)
}

// recentOnly returns the points a trend is drawn from: the last
// trendWindow, so that the class describes what the series does now.
func recentOnly(pts []Point) []Point {
	return pts[max(0, len(pts)-trendWindow):]
}

// detectorJSON is one detector's verdict on a sample.
type detectorJSON struct {
	Detector string  `json:"detector"`
	Ready    bool    `json:"ready"`
	Score    float64 `json:"score"`
	Expected float64 `json:"expected"`
	Lower    float64 `json:"lower"`
	Upper    float64 `json:"upper"`
	// Drives: its result is the combined one.
	Drives bool `json:"drives"`
}

// detectorsJSON is what /api/v1/detail says of each detector: their
// verdicts on the sample at t, or why there are none.
func detectorsJSON(t int64, o detectors.Output, asleep, ok bool) map[string]any {
	switch {
	case !ok:
		return map[string]any{"note": "kept from the series' next sample on: the detectors' verdicts are computed for every sample but kept only for series that alarmed or that someone looks at"}
	case asleep:
		return map[string]any{"time": time.UnixMilli(t).UTC(), "note": "the series' value has not changed since its detectors started: it is held without them until it does", "per_detector": []detectorJSON{}}
	}
	per := []detectorJSON{}
	for k := range detectors.NumKinds {
		r := &o.Per[k]
		if !r.Ready && r.Expected == 0 && r.Lower == 0 && r.Upper == 0 {
			continue // disabled, or nothing to say yet
		}
		per = append(per, detectorJSON{Detector: detectors.Kind(k).String(), Ready: r.Ready, Score: finite(r.Score),
			Expected: finite(r.Expected), Lower: finite(r.Lower), Upper: finite(r.Upper), Drives: detectors.Kind(k) == o.Driver})
	}
	return map[string]any{"time": time.UnixMilli(t).UTC(), "per_detector": per}
}
