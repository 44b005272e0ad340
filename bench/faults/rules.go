package main

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"go.yaml.in/yaml/v2"
)

// scoreGroup is the group of the alert rules file whose alerts are about
// anomalyd's output series (the other groups watch anomalyd itself).
const scoreGroup = "anomalyd-scores"

// alertRule is one alert of the rules file, as the harness applies it.
type alertRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
	For   string `yaml:"for"`
}

// loadScoreAlerts reads the alerts of group scoreGroup from a Prometheus
// rules file.
func loadScoreAlerts(path string) ([]alertRule, error) { return loadAlerts(path, scoreGroup) }

// loadAlerts reads the alerts of group group from a Prometheus rules file.
// Each is evaluated with a range query over the run, which gives when its
// expression holds; a `for:` clause would need the evaluation history of
// Prometheus's rule manager, so it is refused.
func loadAlerts(path, group string) ([]alertRule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-rules: %w", err)
	}
	var f struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("-rules %s: %w", path, err)
	}
	var out []alertRule
	for _, g := range f.Groups {
		if g.Name != group {
			continue
		}
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if r.For != "" {
				return nil, fmt.Errorf("-rules %s: alert %s has for: %s, which this harness cannot apply", path, r.Alert, r.For)
			}
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-rules %s: no alert in group %q", path, group)
	}
	return out, nil
}

// ruleResult is what one alert rule of the rules file did over the run,
// with the rule evaluated every scrape interval.
type ruleResult struct {
	Alert  string        `json:"alert"`
	Expr   string        `json:"expr"`
	Quiet  quietResult   `json:"quiet"`
	Faults []faultResult `json:"faults"`
}

// evalRule evaluates expr at every step from from to to (a range query,
// in chunks Prometheus accepts) and returns, by output label set (as
// formatLabels gives it), the times at which it held.
func evalRule(base, expr string, from, to time.Time, step time.Duration) (map[string][]float64, error) {
	held, err := evalRuleSeries(base, expr, from, to, step)
	if err != nil {
		return nil, err
	}
	holds := make(map[string][]float64, len(held))
	for k, h := range held {
		holds[k] = h.times
	}
	return holds, nil
}

// heldSeries is one output series of an expression evaluated over a range:
// its labels and the times at which it held.
type heldSeries struct {
	lset  map[string]string
	times []float64
}

// evalRuleSeries is evalRule with each output series' labels.
func evalRuleSeries(base, expr string, from, to time.Time, step time.Duration) (map[string]heldSeries, error) {
	const maxSteps = 10000 // Prometheus refuses more than 11,000 points a series
	holds := map[string]heldSeries{}
	for start := from; !start.After(to); start = start.Add(step * maxSteps) {
		end := start.Add(step * (maxSteps - 1))
		if end.After(to) {
			end = to
		}
		form := url.Values{"query": {expr},
			"start": {strconv.FormatFloat(unix(start), 'f', 3, 64)},
			"end":   {strconv.FormatFloat(unix(end), 'f', 3, 64)},
			"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
		var res []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		if err := apiPost(base+"/api/v1/query_range", form, &res); err != nil {
			return nil, err
		}
		for _, r := range res {
			k := formatLabels(r.Metric)
			h := holds[k]
			h.lset = r.Metric
			for _, v := range r.Values {
				ts, _ := v[0].(float64)
				h.times = append(h.times, ts)
			}
			holds[k] = h
		}
	}
	return holds, nil
}

// ruleSeries returns a copy of all whose alarms are the times the rule
// held on each series (their label sets are the same: the rule's result
// keeps the labels of anomaly_score, as its alerts do).
func ruleSeries(all []*series, holds map[string][]float64) []*series {
	out := make([]*series, len(all))
	for i, s := range all {
		c := *s
		c.alarms = holds[s.labels]
		out[i] = &c
	}
	return out
}

// applyRule evaluates rule r over the run and analyses its firings as
// analyse does AnomalyDetected's: a firing starts where the expression
// holds after not holding at the previous step.
func applyRule(base string, r alertRule, all []*series, begin, end time.Time, quiet []span, faults []fault, recovery, step time.Duration) (ruleResult, error) {
	holds, err := evalRule(base, r.Expr, begin, end, step)
	if err != nil {
		return ruleResult{}, fmt.Errorf("alert %s: %w", r.Alert, err)
	}
	// A gap of more than one step (with some slack for float times) ends
	// a firing.
	gap := time.Duration(math.Round(1.5 * float64(step)))
	q, fr := analyse(ruleSeries(all, holds), quiet, faults, gap, recovery, step)
	return ruleResult{Alert: r.Alert, Expr: r.Expr, Quiet: q, Faults: fr}, nil
}

// apiPost posts a form to a Prometheus HTTP API endpoint and decodes the
// result.
func apiPost(endpoint string, form url.Values, into any) error {
	resp, err := http.PostForm(endpoint, form)
	if err != nil {
		return fmt.Errorf("query %s: %w", form.Get("query"), err)
	}
	return decodeAPI(resp, form.Get("query"), into)
}
