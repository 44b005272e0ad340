package ui

import (
	"net/http"
	"strconv"
	"time"

	"github.com/anomalyd/anomalyd/window/incident"
)

// IncidentSource gives the incident stage's open and recent incidents
// (window.Incidents implements it).
type IncidentSource interface {
	IncidentList() []incident.Incident
}

// IncidentsHandler serves GET /api/v1/incidents: the open incidents, then
// the recently closed ones, newest first, each with the series that explain
// it, in the JSON envelope of Prometheus's API.
func IncidentsHandler(src IncidentSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if getOnly(w, r) {
			return
		}
		list := src.IncidentList()
		out := make([]incidentJSON, 0, len(list))
		for i := range list {
			out = append(out, toJSON(&list[i]))
		}
		writeJSON(w, map[string]any{"incidents": out})
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
	Top    []verdictJSON     `json:"top_series"`
}

func toJSON(in *incident.Incident) incidentJSON {
	out := incidentJSON{ID: strconv.FormatUint(in.ID, 10), Group: LabelMap(in.Group), Start: time.UnixMilli(in.Start).UTC(),
		End: time.UnixMilli(in.End).UTC(), Open: in.Open, Peak: finite(in.Peak), Series: in.Series, Top: []verdictJSON{}}
	for i := range in.Top {
		c := &in.Top[i]
		out.Top = append(out.Top, verdictOf(c.Detail.Series, c.T, c.Score, &c.Detail))
	}
	return out
}
