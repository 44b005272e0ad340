// Command incidents scores the incident stage of `anomalyd backtest` on a
// data set with service-level incident labels in the layout of
// shared/datasets/jumpstarter: it reads OUT/<service>/incidents.csv, which
// the backtest writes for every folder of series (one service), and the
// labels, and prints what an operator would see per service:
//
//   - an incident is detected when an incident of the backtest is open on a
//     row inside its window; the delay is the number of samples from the
//     window's first row to that row;
//   - an incident onset (an open row after a row that was not open) outside
//     every window of the service is a false incident; false incidents per
//     service-day divide them by the time outside windows;
//   - censored incidents (whose onset lies before the labelled rows) are left
//     out of recall and delay, and their rows are inside a window;
//   - events (incidents of several services that start within an hour, as
//     the labels chain them) detected: with at least one detected incident.
//
// These are the rules of the data set's own score.py, applied to incidents
// instead of per-series alarms, so the figures sit beside its "any series"
// and "k series within w minutes" rules.
//
//	go run ./bench/incidents -dataset ../shared/datasets/jumpstarter -results OUT [-json FILE]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// labels is labels/incidents_detail.json: per service its incidents.
type labels map[string]struct {
	Incidents []struct {
		Start, End string
		Event      string
		Censored   bool
	}
}

// meta is what meta.json says of the rows.
type meta struct {
	Build struct {
		FirstScored string `json:"first_scored"`
		StepS       int    `json:"step_s"`
	}
}

// Result is one line of the report.
type Result struct {
	Name              string  `json:"name"`
	Services          int     `json:"services"`
	Incidents         int     `json:"incidents"`
	Detected          int     `json:"detected"`
	MedianDelay       float64 `json:"median_delay_samples"` // -1: none detected
	Events            int     `json:"events"`
	EventsDetected    int     `json:"events_detected"`
	FalseIncidents    int     `json:"false_incidents"`
	DaysOutside       float64 `json:"service_days_outside_windows"`
	FalsePerDay       float64 `json:"false_incidents_per_service_day"`
	Censored          int     `json:"censored"`
	CensoredDetected  int     `json:"censored_detected"`
	delays            []int
	events, eventsHit map[string]bool
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("incidents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataset := fs.String("dataset", "", "data set folder: labels/incidents_detail.json and meta.json (required)")
	results := fs.String("results", "", "anomalyd backtest output folder with <service>/incidents.csv (required)")
	jsonOut := fs.String("json", "", "also write the figures as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataset == "" || *results == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: incidents -dataset DIR -results DIR [-json FILE]")
		return 2
	}
	res, err := score(*dataset, *results)
	if err != nil {
		fmt.Fprintf(stderr, "incidents: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "set\tservices\tincidents detected\tmedian delay (samples)\tevents detected\tfalse incidents / service-day\tcensored detected\n")
	for _, r := range res {
		delay := "-"
		if r.MedianDelay >= 0 {
			delay = fmt.Sprint(r.MedianDelay)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d/%d (%.0f%%)\t%s\t%d/%d\t%.3f (%d / %.1f d)\t%d/%d\n", r.Name, r.Services,
			r.Detected, r.Incidents, 100*float64(r.Detected)/float64(max(r.Incidents, 1)), delay,
			r.EventsDetected, r.Events, r.FalsePerDay, r.FalseIncidents, r.DaysOutside, r.CensoredDetected, r.Censored)
	}
	tw.Flush()
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "incidents: %v\n", err)
			return 1
		}
	}
	return 0
}

const tsLayout = "2006-01-02 15:04:05"

func parseTS(s string) (int64, error) {
	t, err := time.Parse(tsLayout, strings.Replace(s[:min(len(s), 19)], "T", " ", 1))
	return t.Unix(), err
}

// score returns the figures of all services, then of each set (the first
// path element of a service's name).
func score(dataset, results string) ([]Result, error) {
	var lb labels
	var mt meta
	if err := readJSON(filepath.Join(dataset, "labels", "incidents_detail.json"), &lb); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(dataset, "meta.json"), &mt); err != nil {
		return nil, err
	}
	first, err := parseTS(mt.Build.FirstScored)
	if err != nil || mt.Build.StepS <= 0 {
		return nil, fmt.Errorf("meta.json: first_scored %q, step_s %d: %v", mt.Build.FirstScored, mt.Build.StepS, err)
	}
	services := make([]string, 0, len(lb))
	for s := range lb {
		services = append(services, s)
	}
	sort.Strings(services)
	all := &Result{Name: "all", events: map[string]bool{}, eventsHit: map[string]bool{}}
	sets := map[string]*Result{}
	var setNames []string
	for _, svc := range services {
		set, _, _ := strings.Cut(svc, "/")
		if sets[set] == nil {
			sets[set] = &Result{Name: set, events: map[string]bool{}, eventsHit: map[string]bool{}}
			setNames = append(setNames, set)
		}
		times, open, err := readIncidents(filepath.Join(results, filepath.FromSlash(svc), "incidents.csv"), first)
		if err != nil {
			return nil, err
		}
		inside := make([]bool, len(times))
		for _, r := range []*Result{all, sets[set]} {
			r.Services++
		}
		for _, inc := range lb[svc].Incidents {
			a, err1 := parseTS(inc.Start)
			b, err2 := parseTS(inc.End)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("%s: %w", svc, err)
			}
			i0, _ := slices.BinarySearch(times, a)
			i1, _ := slices.BinarySearch(times, b+1)
			for i := i0; i < i1; i++ {
				inside[i] = true
			}
			hit := -1
			for i := i0; i < i1; i++ {
				if open[i] {
					hit = i - i0
					break
				}
			}
			for _, r := range []*Result{all, sets[set]} {
				if inc.Censored {
					r.Censored++
					if hit >= 0 {
						r.CensoredDetected++
					}
					continue
				}
				r.Incidents++
				r.events[inc.Event] = true
				if hit >= 0 {
					r.Detected++
					r.delays = append(r.delays, hit)
					r.eventsHit[inc.Event] = true
				}
			}
		}
		falseOnsets, outside := 0, 0
		for i := range times {
			if !inside[i] {
				outside++
				if open[i] && (i == 0 || !open[i-1]) {
					falseOnsets++
				}
			}
		}
		for _, r := range []*Result{all, sets[set]} {
			r.FalseIncidents += falseOnsets
			r.DaysOutside += float64(outside) * float64(mt.Build.StepS) / 86400
		}
	}
	out := []Result{*all}
	for _, s := range setNames {
		out = append(out, *sets[s])
	}
	for i := range out {
		r := &out[i]
		r.Events, r.EventsDetected = len(r.events), len(r.eventsHit)
		r.FalsePerDay = float64(r.FalseIncidents) / max(r.DaysOutside, 1e-9)
		r.MedianDelay = -1
		if n := len(r.delays); n > 0 {
			slices.Sort(r.delays)
			if n%2 == 1 {
				r.MedianDelay = float64(r.delays[n/2])
			} else {
				r.MedianDelay = float64(r.delays[n/2-1]+r.delays[n/2]) / 2
			}
		}
	}
	return out, nil
}

// readIncidents reads the rows of an incidents.csv from first on: their
// times (Unix seconds) and whether an incident was open.
func readIncidents(path string, first int64) ([]int64, []bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var times []int64
	var open []bool
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			if sc.Text() != "timestamp,incident_score,open,series" {
				return nil, nil, fmt.Errorf("%s: header %q", path, sc.Text())
			}
			continue
		}
		p := strings.Split(sc.Text(), ",")
		if len(p) != 4 {
			return nil, nil, fmt.Errorf("%s:%d: want 4 fields", path, line)
		}
		t, err := parseTS(p[0])
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if t < first {
			continue
		}
		times = append(times, t)
		open = append(open, p[2] == "1")
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if len(times) == 0 {
		return nil, nil, fmt.Errorf("%s: no rows from the first scored time on", path)
	}
	return times, open, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
