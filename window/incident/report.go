package incident

import (
	"fmt"

	"github.com/anomalyd/anomalyd/detectors"
)

// The incident series anomalyd serves, one of each per group, labelled
// with the group's labels.
const (
	ScoreName  = "anomaly_incident_score"
	SeriesName = "anomaly_incident_series"
	OpenName   = "anomaly_incident_open"
	OpenedName = "anomaly_incidents_opened_total"
)

// Names are the names of the incident series.
var Names = []string{ScoreName, SeriesName, OpenName, OpenedName}

// MaxTop bounds the contributing series an incident reports.
const MaxTop = 10

// Detail is what a group keeps of a series' evidence sample to explain an
// incident: the series, its value and what the detectors expected.
type Detail struct {
	Series string // canonical labels
	// Value is what the detectors analysed: the sample, or for a counter
	// (and a gauge that only grows) its per-second rate.
	Value, Expected, Lower, Upper float64
	Score                         float64 // the combined score
	Driver                        detectors.Kind
	// Rate: Value, Expected, Lower and Upper are per-second rates (of a
	// counter, or of a gauge that only grows).
	Rate bool
	// Record is 1 + e when Value lies beyond every value the series took
	// before, e the excess in widths of that range (0: within it), and Age
	// the series' samples before it: see detectors.Output.
	Record float64
	Age    uint32
}

// DetailOf is the Detail of a sample of series (canonical labels) whose
// analysed value x got the detectors' verdict o.
func DetailOf(series string, x float64, o *detectors.Output) Detail {
	return Detail{Series: series, Score: o.Combined.Score, Value: x, Expected: o.Combined.Expected,
		Lower: o.Combined.Lower, Upper: o.Combined.Upper, Driver: o.Driver, Record: o.Record, Age: o.Age}
}

// Reason says in words why the detectors found the value unusual, from the
// detector that drove the combined score and where the value lies.
func (d *Detail) Reason() string {
	dir, side := "above", "high"
	if d.Value < d.Expected {
		dir, side = "below", "low"
	}
	switch d.Driver {
	case detectors.KindEntropy:
		// The regime detector scores a value beyond every value the series
		// has taken, or in a bin it never used, at its cap and more.
		if d.Score >= 20 {
			return fmt.Sprintf("new %s beyond everything seen", side)
		}
		return "value in a range the series does not usually take (level shift)"
	case detectors.KindSlope:
		return fmt.Sprintf("sustained drift %s the expected band", dir)
	case detectors.KindHoltWinters:
		return fmt.Sprintf("seasonal deviation: %s what is usual at this time", dir)
	}
	if d.Value > d.Upper {
		return "spike above the expected band"
	}
	if d.Value < d.Lower {
		return "drop below the expected band"
	}
	// Inside its band and still anomalous: a score held up by a run beyond
	// the band, or a counter's count test, whose evidence adds up over
	// samples each within its noise.
	return fmt.Sprintf("sustained shift %s the expected value: the recent samples together are unusual, this one is within its band", dir)
}

// Incident is one incident of one group.
type Incident struct {
	ID     uint64
	Group  string // canonical labels of the group
	Start  int64  // ms: when the score first reached 1
	End    int64  // ms: the last time it was 1 or more (or now, while open)
	Open   bool
	Peak   float64 // the highest score
	Series int     // the most series live at once
	// Top are the most surprising series at the peak, most surprising
	// first, at most MaxTop.
	Top []Contributor
}

// GroupStatus is one group's state for /metrics.
type GroupStatus struct {
	Group  string  // canonical labels
	Score  float64 // the highest score since the previous status
	Open   bool
	Series int // series whose evidence is live
	Opened int // incidents opened so far
}
