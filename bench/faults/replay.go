package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	wseries "github.com/anomalyd/anomalyd/window/series"
)

// -replay DIR scores the incident stage offline on a run that -export
// wrote: `anomalyd backtest` runs the run's input through the server's
// detectors and incident stage, one group per folder (per target), and
// writes each group's incidents.csv; its openings (open going from 0 to 1)
// and incident scores are scored against the run's schedule in
// DIR/faults.json by the code that scores the live run's incidents
// (analyseOpenings, analyseScores, quietSpans).

// readReport reads a run's report, the JSON that -out and -export write.
func readReport(path string) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the run's report: %w", err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("cannot decode the run's report %s: %w", path, err)
	}
	if rep.Begin.IsZero() {
		return nil, fmt.Errorf("the run's report %s has no begin", path)
	}
	return &rep, nil
}

// runEnd is when the run's schedule ended. Reports written before they
// recorded it end where the run does: -gap after the last fault's start
// (-quiet after the begin without faults).
func runEnd(rep *report) (time.Time, error) {
	if !rep.End.IsZero() {
		return rep.End, nil
	}
	if len(rep.Faults) == 0 {
		q, err := time.ParseDuration(rep.Settings.Quiet)
		if err != nil {
			return time.Time{}, fmt.Errorf("the run's -quiet: %w", err)
		}
		return rep.Begin.Add(q), nil
	}
	gap, err := time.ParseDuration(rep.Settings.Gap)
	if err != nil {
		return time.Time{}, fmt.Errorf("the run's -gap: %w", err)
	}
	return rep.Faults[len(rep.Faults)-1].Start.Add(gap), nil
}

// replayTimes are the run's settings that scoring incidents needs.
type replayTimes struct {
	settled, end       time.Time
	interval, recovery time.Duration
}

func replayTimesOf(rep *report) (replayTimes, error) {
	var rt replayTimes
	var err error
	parse := func(flag, s string) time.Duration {
		d, perr := time.ParseDuration(s)
		if perr != nil && err == nil {
			err = fmt.Errorf("the run's %s %q: %w", flag, s, perr)
		}
		return d
	}
	rt.interval = parse("-scrape-interval", rep.Settings.ScrapeInterval)
	rt.recovery = parse("-recovery", rep.Settings.Recovery)
	rt.settled = rep.Begin.Add(parse("-settle", rep.Settings.Settle))
	if err != nil {
		return rt, err
	}
	rt.end, err = runEnd(rep)
	return rt, err
}

// parseIncidentsCSV reads a backtest group's incidents.csv
// (timestamp,incident_score,open,series) of target tg: each run of rows
// with open 1 is an opening, from its first row to its last (open if the
// file ends in it), with the highest score and series count of its rows;
// every row is a point of the incident score. ids are prefix-1, prefix-2 …
func parseIncidentsCSV(r io.Reader, tg target, prefix string) ([]opening, []point, error) {
	sc := bufio.NewScanner(r)
	var (
		ops    []opening
		ps     []point
		line   int
		isOpen bool
	)
	for sc.Scan() {
		line++
		b := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if line == 1 {
			if !bytes.HasPrefix(b, []byte("timestamp,incident_score,open,series")) {
				return nil, nil, fmt.Errorf("line 1: want the header timestamp,incident_score,open,series, got %q", b)
			}
			continue
		}
		if len(b) == 0 {
			continue
		}
		f := strings.Split(string(b), ",")
		if len(f) < 4 {
			return nil, nil, fmt.Errorf("line %d: want 4 fields, got %d", line, len(f))
		}
		t, err := parseCSVTime(f[0])
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", line, err)
		}
		score, err1 := strconv.ParseFloat(f[1], 64)
		n, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || f[2] != "0" && f[2] != "1" {
			return nil, nil, fmt.Errorf("line %d: want a score, open 0 or 1 and a series count, got %q", line, b)
		}
		ps = append(ps, point{unix(t), score})
		switch {
		case f[2] == "1" && !isOpen:
			ops = append(ops, opening{ID: fmt.Sprintf("%s-%d", prefix, len(ops)+1), Target: tg, Start: t})
			fallthrough
		case f[2] == "1":
			o := &ops[len(ops)-1]
			o.End, o.Peak, o.Series = t, max(o.Peak, score), max(o.Series, n)
		}
		isOpen = f[2] == "1"
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if line == 0 {
		return nil, nil, fmt.Errorf("empty file: want the header timestamp,incident_score,open,series")
	}
	if isOpen {
		ops[len(ops)-1].Open = true
	}
	return ops, ps, nil
}

// parseCSVTime parses a timestamp as the backtest writes it: in the format
// of the group's input, decimal Unix seconds for an export, or RFC 3339 or
// YYYY-MM-DD HH:MM:SS (UTC).
func parseCSVTime(s string) (time.Time, error) {
	if x, err := strconv.ParseFloat(s, 64); err == nil {
		return fromUnix(x), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateTime, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse timestamp %q", s)
}

// replayIncidents scores the incidents.csv of every group under out (one
// folder per job, as -export writes them) against rep's schedule: the
// incident report the live run would have had from these incidents.
func replayIncidents(out string, rep *report, within int) (*incidentReport, error) {
	rt, err := replayTimesOf(rep)
	if err != nil {
		return nil, err
	}
	es, err := os.ReadDir(out)
	if err != nil {
		return nil, fmt.Errorf("cannot read the backtest's output: %w", err)
	}
	known := slices.Clone(rep.Incidents.Targets)
	for _, f := range rep.Faults {
		known = append(known, f.Target)
	}
	ir := &incidentReport{WithinSamples: within, MaxFalsePerTargetHour: maxFalsePerTargetHour, Targets: slices.Clone(rep.Incidents.Targets)}
	scores := map[target][]point{}
	for _, e := range es {
		p := filepath.Join(out, e.Name(), incidentsFile)
		if !e.IsDir() {
			continue
		}
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		tg := target{Job: e.Name()}
		if i := slices.IndexFunc(known, func(t target) bool { return t.Job == e.Name() }); i >= 0 {
			tg = known[i]
		}
		ops, ps, err := parseIncidentsCSV(f, tg, e.Name())
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		ir.Incidents = append(ir.Incidents, ops...)
		scores[tg] = ps
		if !slices.Contains(ir.Targets, tg) {
			ir.Targets = append(ir.Targets, tg)
		}
	}
	if len(scores) == 0 {
		return nil, fmt.Errorf("no <job>/%s in the backtest's output %s", incidentsFile, out)
	}
	slices.SortFunc(ir.Targets, compareTargets)
	slices.SortStableFunc(ir.Incidents, func(a, b opening) int {
		return a.Start.Compare(b.Start)
	})
	faults := make([]fault, len(rep.Faults))
	for i, f := range rep.Faults {
		faults[i] = f.fault
	}
	quiet := quietSpans(rt.settled, rt.end, faults, rt.recovery)
	ir.Stage = analyseOpenings("incidents (replayed by anomalyd backtest)", ir.Incidents, ir.Targets, quiet, faults, rt.recovery, rt.interval, within)
	ir.Scores = analyseScores(scores, ir.Targets, quiet, faults, rt.recovery, rt.interval, within)
	return ir, nil
}

// incidentsFile is the incident stage's output of each backtest group.
const incidentsFile = "incidents.csv"

// replayReport is what -json writes for a replay.
type replayReport struct {
	Date      time.Time      `json:"date"`
	Input     string         `json:"input"`
	Anomalyd  string         `json:"anomalyd"`
	Version   string         `json:"version"`
	Config    string         `json:"config,omitempty"`
	Run       time.Time      `json:"run"`      // the replayed run's date
	Files     int            `json:"files"`    // input CSV files
	Counters  int            `json:"counters"` // of which named as counters are (_total, _count, _sum)
	Incidents incidentReport `json:"incidents"`
	// Live is the run's own incident stage, from its report.
	Live stageResult `json:"live"`
	// Evidence is what the faults' signal series that count events held
	// within the allowed samples (countEvidence).
	Evidence []countEvidence `json:"evidence"`
}

// replay runs o.anomalyd's backtest over the export o.replay and prints
// the incident report.
func (o *options) replayExport(stdout, stderr io.Writer) error {
	rep, err := readReport(filepath.Join(o.replay, "faults.json"))
	if err != nil {
		return err
	}
	within := o.within
	if !o.withinSet && rep.Settings.IncidentWithin > 0 {
		within = rep.Settings.IncidentWithin
	}
	files, counters, err := countInputs(o.replay)
	if err != nil {
		return err
	}
	out := o.replayOut
	if out == "" {
		if out, err = os.MkdirTemp("", "anomalyd-faults-replay-"); err != nil {
			return err
		}
		defer os.RemoveAll(out)
	}
	args := []string{"backtest", "--input", o.replay, "--output", out}
	if o.anomalydConfig != "" {
		args = append(args, "--config.file", o.anomalydConfig)
	}
	start := time.Now()
	cmd := exec.Command(o.anomalyd, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", o.anomalyd, strings.Join(args, " "), err, tail(log.Bytes(), 2000))
	}
	took := time.Since(start)
	ir, err := replayIncidents(out, rep, within)
	if err != nil {
		return err
	}
	rr := replayReport{Date: time.Now().UTC(), Input: o.replay, Anomalyd: o.anomalyd, Config: o.anomalydConfig,
		Run: rep.Date, Files: files, Counters: counters, Incidents: *ir, Live: rep.Incidents.Stage}
	v, _ := exec.Command(o.anomalyd, "--version").CombinedOutput()
	rr.Version, _, _ = strings.Cut(strings.TrimSpace(string(v)), "\n")

	cfg := "built-in defaults"
	if o.anomalydConfig != "" {
		cfg = "--config.file " + o.anomalydConfig
	}
	fmt.Fprintf(stdout, "replay of %s (run of %s, %d files, %v series by job): %s backtest (%s), %s, in %.1f s\n",
		o.replay, rep.Date.Format(time.DateTime), files, rep.SeriesByJob, o.anomalyd, rr.Version, cfg, took.Seconds())
	if counters > 0 && backtestNamesOneMetric(o.anomalyd) {
		fmt.Fprintf(stdout, "  warning: this backtest gives every file one metric name (--metric-name, a gauge): the %d counters (_total, _count, _sum) are analysed as raw values, not as per-second rates as the live run analysed them\n", counters)
	}
	fmt.Fprintln(stdout, "  replayed incidents have no top series: incidents.csv does not list the series of an incident; 'series' is the most with live evidence at once")
	if lv := rep.Incidents.Stage; lv.Source != "" {
		fmt.Fprintf(stdout, "  the live run's %s: %d in the run, %d false while quiet (%.2f per target-hour), faults caught %d of %d\n",
			lv.Source, lv.Openings, lv.Quiet.Openings, lv.Quiet.PerTargetHour, lv.Caught, len(lv.Faults))
	}
	ir.print(stdout, rep.Begin, rep.Settings.Quiet, rep.Settings.ScrapeInterval)
	if rr.Evidence, err = faultCountEvidence(o.replay, rep, within); err != nil {
		return err
	}
	printCountEvidence(stdout, rr.Evidence, within, rep.Settings.ScrapeInterval, maxFalsePerTargetHour)
	if o.replayJSON != "" {
		b, _ := json.MarshalIndent(rr, "", "  ")
		if err := os.WriteFile(o.replayJSON, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("-json: %w", err)
		}
		fmt.Fprintln(stdout, "wrote", o.replayJSON)
	}
	return nil
}

// countInputs counts the CSV files under dir and those a counter's name
// ends (_total, _count, _sum).
func countInputs(dir string) (files, counters int, err error) {
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".csv") {
			return err
		}
		files++
		if wseries.IsCounterName(strings.TrimSuffix(d.Name(), ".csv")) {
			counters++
		}
		return nil
	})
	if err == nil && files == 0 {
		err = fmt.Errorf("no CSV files under %s", dir)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("-replay: %w", err)
	}
	return files, counters, nil
}

// backtestNamesOneMetric reports whether anomalyd's backtest, by its own
// usage text, names every file --metric-name rather than after the file.
// Such a backtest analyses an export's counters as raw values, where the
// live run analysed their per-second rates, so its incidents differ.
func backtestNamesOneMetric(anomalyd string) bool {
	out, _ := exec.Command(anomalyd, "backtest", "-h").CombinedOutput()
	return bytes.Contains(out, []byte("__name__ = --metric-name"))
}
