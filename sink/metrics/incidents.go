package metrics

import (
	"bufio"

	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// IncidentSource gives the incident stage's latest group states
// (window.Incidents implements it).
type IncidentSource interface {
	IncidentGroups() []incident.GroupStatus
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
