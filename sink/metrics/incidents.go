package metrics

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// IncidentSource gives the incident stage's latest state (window.Incidents
// implements it).
type IncidentSource interface {
	IncidentGroups() []incident.GroupStatus
	IncidentList() []incident.Incident
}

var incidentFamilies = []struct {
	name, typ, help string
	value           func(g *incident.GroupStatus) float64
}{
	{incident.ScoreName, "gauge", "Incident score of the group: how surprising its series' evidence is, 1 or more an incident; the highest since the previous update.",
		func(g *incident.GroupStatus) float64 { return g.Score }},
	{incident.SeriesName, "gauge", "Series of the group whose evidence is live.",
		func(g *incident.GroupStatus) float64 { return float64(g.Series) }},
	{incident.OpenName, "gauge", "1 while the group has an open incident, else 0.",
		func(g *incident.GroupStatus) float64 {
			if g.Open {
				return 1
			}
			return 0
		}},
	{incident.OpenedName, "counter", "Incidents the group opened.",
		func(g *incident.GroupStatus) float64 { return float64(g.Opened) }},
}

// WriteIncidents writes the incident series of groups in the text format.
func WriteIncidents(w *bufio.Writer, groups []incident.GroupStatus) error {
	if len(groups) == 0 {
		return nil
	}
	var lbls []prompb.Label
	for _, f := range incidentFamilies {
		w.WriteString("# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.typ + "\n")
		for i := range groups {
			g := &groups[i]
			lbls = lbls[:0]
			for n, v, rest := series.NextLabel(g.Group); n != ""; n, v, rest = series.NextLabel(rest) {
				lbls = append(lbls, prompb.Label{Name: n, Value: v})
			}
			if err := writeSample(w, lbls, f.name, f.value(g)); err != nil {
				return err
			}
		}
	}
	return nil
}

// IncidentsHandler serves GET /api/v1/incidents: the open incidents, then
// the recently closed ones, newest first, each with the series that explain
// it, in the JSON envelope of Prometheus's API.
func IncidentsHandler(src IncidentSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		list := src.IncidentList()
		out := make([]incidentJSON, 0, len(list))
		for i := range list {
			out = append(out, toJSON(&list[i]))
		}
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriter(w)
		json.NewEncoder(bw).Encode(map[string]any{"status": "success", "data": map[string]any{"incidents": out}})
		bw.Flush()
	})
}

type incidentJSON struct {
	ID     string            `json:"id"`
	Group  map[string]string `json:"group"`
	Start  time.Time         `json:"start"`
	End    time.Time         `json:"end"`
	Open   bool              `json:"open"`
	Peak   float64           `json:"peak_score"`
	Series int               `json:"series"`
	Top    []contributorJSON `json:"top_series"`
}

type contributorJSON struct {
	Labels   map[string]string `json:"labels"`
	Time     time.Time         `json:"time"`
	Value    float64           `json:"value"`
	Expected float64           `json:"expected"`
	Lower    float64           `json:"lower"`
	Upper    float64           `json:"upper"`
	Score    float64           `json:"score"`
	Detector string            `json:"detector"`
	Reason   string            `json:"reason"`
}

func labelMap(key string) map[string]string {
	m := map[string]string{}
	for n, v, rest := series.NextLabel(key); n != ""; n, v, rest = series.NextLabel(rest) {
		m[n] = v
	}
	return m
}

func toJSON(in *incident.Incident) incidentJSON {
	out := incidentJSON{ID: strconv.FormatUint(in.ID, 10), Group: labelMap(in.Group), Start: time.UnixMilli(in.Start).UTC(),
		End: time.UnixMilli(in.End).UTC(), Open: in.Open, Peak: finite(in.Peak), Series: in.Series, Top: []contributorJSON{}}
	for i := range in.Top {
		c := &in.Top[i]
		d := &c.Detail
		out.Top = append(out.Top, contributorJSON{Labels: labelMap(d.Series), Time: time.UnixMilli(c.T).UTC(),
			Value: finite(d.Value), Expected: finite(d.Expected), Lower: finite(d.Lower), Upper: finite(d.Upper),
			Score: finite(c.Score), Detector: d.Driver.String(), Reason: d.Reason()})
	}
	return out
}

// finite keeps JSON encodable: ±Inf and NaN cannot be written.
func finite(v float64) float64 {
	if v != v || v > 1e308 || v < -1e308 {
		return 0
	}
	return v
}
