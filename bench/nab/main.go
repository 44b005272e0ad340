// Command nab scores anomaly detectors on the Numenta Anomaly Benchmark
// (NAB v1.1; Lavin & Ahmad 2015, arXiv:1510.03336) the way numenta/NAB's
// nab/sweeper.py does, and prints the normalised scores beside NAB's
// published scoreboard.
//
//	go run ./bench/nab -data NAB/data -results OUT_DIR [-name NAME] [-json FILE]
//	go run ./bench/nab -data NAB/data -results ewma=DIR1 -results zscore=DIR2 ...
//	go run ./bench/nab -data NAB/data -baseline null,random
//	go run ./bench/nab -data NAB/data -results combined=DIR -alert 'combined:>1 for 5m'
//
// A results directory mirrors the data directory: DIR/<category>/<file>.csv
// with the header "timestamp,value,anomaly_score" and one row per data row
// (what `anomalyd backtest` writes). See doc.go for the scoring rules.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// detectorSpec is one -results or -baseline detector.
type detectorSpec struct {
	name, dir, baseline string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		specs              []detectorSpec
		alerts             []alertRule
		data, labels, name string
		jsonOut, baselines string
		seed               uint
	)
	fs.Func("results", "Results directory of a detector, `[NAME=]DIR` (DIR/<category>/<file>.csv with timestamp,value,anomaly_score); repeat for several. NAME defaults to -name or the directory's base name.", func(s string) error {
		n, dir, ok := strings.Cut(s, "=")
		if !ok || strings.ContainsAny(n, `/\`) {
			n, dir = "", s
		}
		if dir == "" {
			return errors.New("empty directory")
		}
		specs = append(specs, detectorSpec{name: n, dir: dir})
		return nil
	})
	fs.Func("alert", "Also score an alerting rule over a -results detector's native score, `DETECTOR:RULE` with RULE '>T', '>=T', either with ' for DURATION' (e.g. 'combined:>1 for 5m'): a detector that is 1 on the rows where the alert fires. Repeat for several.", func(s string) error {
		r, err := parseAlertRule(s)
		if err != nil {
			return err
		}
		alerts = append(alerts, r)
		return nil
	})
	fs.StringVar(&data, "data", "", "NAB data directory (<category>/<file>.csv with timestamp,value). Required.")
	fs.StringVar(&labels, "labels", "", "NAB combined_windows.json. Default: ../labels/combined_windows.json beside -data.")
	fs.StringVar(&name, "name", "", "Name of the detector of a single -results (default: the directory's base name).")
	fs.StringVar(&baselines, "baseline", "", "Also score NAB's trivial detectors, comma-separated: null (constant), random (CPython's Mersenne Twister, reseeded with -seed for every file, as NAB's).")
	fs.UintVar(&seed, "seed", 42, "Seed of the random baseline (NAB's is 42).")
	fs.StringVar(&jsonOut, "json", "", "Write every figure, per profile, category and file, as JSON to this file.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nab: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usage("unexpected argument %q", fs.Arg(0))
	case data == "":
		return usage("-data is required")
	case name != "" && len(specs) != 1:
		return usage("-name names the detector of a single -results, got %d -results", len(specs))
	case seed > 1<<32-1:
		return usage("-seed must be below 2^32, got %d", seed)
	}
	for _, b := range strings.Split(baselines, ",") {
		switch b = strings.TrimSpace(b); b {
		case "":
		case "null", "random":
			specs = append(specs, detectorSpec{name: b, baseline: b})
		default:
			return usage("-baseline %q: want null or random", b)
		}
	}
	if len(specs) == 0 {
		return usage("nothing to score: give -results DIR or -baseline null,random")
	}
	seen := map[string]bool{}
	for k := range specs {
		s := &specs[k]
		switch {
		case s.name == "" && name != "":
			s.name = name
		case s.name == "":
			s.name = filepath.Base(filepath.Clean(s.dir))
		}
		if seen[s.name] {
			return usage("two detectors named %q: use -results NAME=DIR", s.name)
		}
		seen[s.name] = true
	}
	for _, a := range alerts {
		switch {
		case !slices.ContainsFunc(specs, func(s detectorSpec) bool { return s.name == a.detector && s.baseline == "" }):
			return usage("-alert %q: no -results detector named %q", a.text, a.detector)
		case seen[a.name()]:
			return usage("-alert %q for %s given twice", a.text, a.detector)
		}
		seen[a.name()] = true
	}
	if labels == "" {
		labels = filepath.Join(filepath.Dir(filepath.Clean(data)), "labels", "combined_windows.json")
	}

	rep, err := score(data, labels, specs, alerts, uint32(seed))
	if err != nil {
		fmt.Fprintf(stderr, "nab: %v\n", err)
		return 1
	}
	printReport(stdout, rep)
	if jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "nab: cannot write -json %s: %v\n", jsonOut, err)
			return 1
		}
	}
	return 0
}

// score loads the corpus and scores every detector, and every alert rule
// after the detector it reads.
func score(data, labels string, specs []detectorSpec, alerts []alertRule, seed uint32) (*Report, error) {
	c, err := loadCorpus(data, labels)
	if err != nil {
		return nil, err
	}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339)}
	rep.Scoring.Method = "NAB v1.1 (numenta/NAB nab/sweeper.py): threshold swept over every distinct anomaly score, optimised over the whole corpus per profile"
	rep.Scoring.ProbationFraction = 0.15
	rep.Scoring.ProbationCapRows = 750
	rep.Scoring.Profiles = Profiles
	rep.Scoring.Normalisation = "100 × (raw − null) / (perfect − null); null = the constant detector's raw score, perfect = windows × TP weight"
	rep.Corpus = describeCorpus(c, data, labels)
	rep.Scoreboard.Source = scoreboardSource
	rep.Scoreboard.Rows = publishedScoreboard
	rep.Scoreboard.Random = randomReference

	null := nullRaw(c)
	var errs []error
	for _, s := range specs {
		var scores [][]float64
		source := "results " + s.dir
		if s.baseline != "" {
			scores, err = baselineScores(s.baseline, c, seed)
			source = "built-in baseline"
			if s.baseline == "random" {
				source = fmt.Sprintf("built-in baseline, seed %d", seed)
			}
		} else {
			scores, err = readAllResults(s.dir, c)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("detector %s: %w", s.name, err))
			continue
		}
		rep.Detectors = append(rep.Detectors, evaluate(c, s.name, source, scores, null))
		for _, a := range alerts {
			if a.detector != s.name || s.baseline != "" {
				continue
			}
			fired := make([][]float64, len(c.Files))
			for k, f := range c.Files {
				fired[k] = a.firing(f, scores[k])
			}
			rep.Detectors = append(rep.Detectors, evaluate(c, a.name(), "alert rule over "+s.name+"'s native score", fired, null))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rep, nil
}
