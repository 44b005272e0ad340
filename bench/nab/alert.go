package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// alertRule is a Prometheus alerting rule over one detector's native score,
// `score OP THRESHOLD [for DURATION]`, scored on NAB as the alert it would
// raise: a detector whose anomaly score is 1 on every row where the alert
// fires and 0 elsewhere. A user is alerted by the rule, not by the raw
// score, so this is what the NAB figure of a shipped rule means.
type alertRule struct {
	detector  string  // the -results detector the rule reads
	text      string  // the rule as given after "DETECTOR:"
	orEqual   bool    // >= rather than >
	threshold float64 // on the native score s (results files hold s/(1+s))
	hold      int64   // the rule's `for`, in seconds
}

// parseAlertRule parses `DETECTOR:>T`, `DETECTOR:>=T` and either with
// ` for DURATION` (a Go or Prometheus duration: 90s, 5m, 1h).
func parseAlertRule(s string) (alertRule, error) {
	det, rule, ok := strings.Cut(s, ":")
	det, rule = strings.TrimSpace(det), strings.TrimSpace(rule)
	if !ok || det == "" || rule == "" {
		return alertRule{}, fmt.Errorf("-alert %q: want DETECTOR:RULE, e.g. combined:'>1 for 5m'", s)
	}
	r := alertRule{detector: det, text: rule}
	expr, dur, hasFor := strings.Cut(rule, " for ")
	expr = strings.TrimSpace(expr)
	switch {
	case strings.HasPrefix(expr, ">="):
		r.orEqual, expr = true, expr[2:]
	case strings.HasPrefix(expr, ">"):
		expr = expr[1:]
	default:
		return alertRule{}, fmt.Errorf("-alert %q: the rule must start with > or >=", s)
	}
	t, err := strconv.ParseFloat(strings.TrimSpace(expr), 64)
	if err != nil || !(t >= 0) || math.IsInf(t, 1) {
		return alertRule{}, fmt.Errorf("-alert %q: threshold %q: want a finite number ≥ 0", s, strings.TrimSpace(expr))
	}
	r.threshold = t
	if hasFor {
		d, err := time.ParseDuration(strings.TrimSpace(dur))
		if err != nil || d < 0 {
			return alertRule{}, fmt.Errorf("-alert %q: for %q: want a duration ≥ 0 such as 5m", s, strings.TrimSpace(dur))
		}
		r.hold = int64(d / time.Second)
	}
	return r, nil
}

// scoreTolerance is the relative slack of the threshold comparison: a
// results file holds s/(1+s) as a decimal, so s read back can differ from
// the detector's in the last bits (2 may come back as 1.9999999999999996).
const scoreTolerance = 1e-9

// name is the rule's detector row: "combined [>1 for 5m]".
func (r alertRule) name() string { return r.detector + " [" + r.text + "]" }

// firing returns 1 for every row of f where the rule's alert fires, 0
// elsewhere, given the detector's results scores (s/(1+s)) for f. The rule
// is evaluated at every row's timestamp, where the row's score is the
// latest (Prometheus holds a sample until the next one): the expression is
// true on a row whose native score passes the threshold; the alert fires
// on such a row once the run of consecutive true rows it ends began at
// least `for` earlier (at once without `for`).
func (r alertRule) firing(f *File, scores []float64) []float64 {
	out := make([]float64, len(scores))
	var (
		inRun bool  // the previous row was true
		start int64 // the time of the first row of the current true run
	)
	for i, s := range scores {
		native := math.Inf(1)
		if s < 1 {
			native = s / (1 - s)
		}
		on := native > r.threshold*(1+scoreTolerance) || r.orEqual && native >= r.threshold*(1-scoreTolerance)
		if !on {
			inRun = false
			continue
		}
		if !inRun {
			inRun, start = true, f.Times[i]
		}
		if f.Times[i]-start >= r.hold {
			out[i] = 1
		}
	}
	return out
}
