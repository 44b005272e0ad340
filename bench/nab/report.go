package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is everything a run computed; -json writes it.
type Report struct {
	Date    string `json:"date"`
	Scoring struct {
		Method            string    `json:"method"`
		ProbationFraction float64   `json:"probation_fraction"`
		ProbationCapRows  int       `json:"probation_cap_rows"`
		Profiles          []Profile `json:"profiles"`
		Normalisation     string    `json:"normalisation"`
	} `json:"scoring"`
	Corpus     CorpusInfo       `json:"corpus"`
	Detectors  []DetectorResult `json:"detectors"`
	Scoreboard struct {
		Source string      `json:"source"`
		Rows   []Published `json:"rows"`
		Random []Published `json:"random_reference"`
	} `json:"published_scoreboard"`
}

// CorpusInfo describes the scored corpus.
type CorpusInfo struct {
	Data            string         `json:"data_dir"`
	Labels          string         `json:"labels_file"`
	Files           int            `json:"files"`
	Rows            int            `json:"rows"`
	ProbationRows   int            `json:"probation_rows"`
	Windows         int            `json:"windows"`
	ScorableWindows int            `json:"scorable_windows"`
	Categories      []CategoryInfo `json:"categories"`
}

// CategoryInfo is one category of the corpus.
type CategoryInfo struct {
	Name    string `json:"name"`
	Files   int    `json:"files"`
	Rows    int    `json:"rows"`
	Windows int    `json:"windows"`
}

// DetectorResult is one detector's scores.
type DetectorResult struct {
	Name     string          `json:"name"`
	Source   string          `json:"source"`
	Profiles []ProfileResult `json:"profiles"`
	// Categories and All are at the standard profile's threshold.
	Categories []CategoryResult `json:"categories_at_standard_threshold"`
	All        FileScore        `json:"all_at_standard_threshold"`
	Files      []FileResult     `json:"files"`
}

// ProfileResult is a detector's score for one profile, at the threshold
// that maximises the corpus total.
type ProfileResult struct {
	Profile    string    `json:"profile"`
	Threshold  float64   `json:"threshold"` // 1.1: never fires
	Raw        float64   `json:"raw_score"`
	Null       float64   `json:"null_raw_score"`
	Perfect    float64   `json:"perfect_raw_score"`
	Normalised float64   `json:"normalised_score"`
	Totals     FileScore `json:"totals"`
}

// CategoryResult sums the files of one category.
type CategoryResult struct {
	Category string `json:"category"`
	Files    int    `json:"files"`
	FileScore
}

// FileResult is one file's scores, in the order of Profiles, each at that
// profile's corpus-wide threshold.
type FileResult struct {
	File      string      `json:"file"`
	Rows      int         `json:"rows"`
	Probation int         `json:"probation_rows"`
	Windows   int         `json:"windows"`
	Scores    []FileScore `json:"scores"`
}

func (s *FileScore) add(o FileScore) {
	s.Score += o.Score
	s.TPRows += o.TPRows
	s.FPRows += o.FPRows
	s.FNRows += o.FNRows
	s.TNRows += o.TNRows
	s.Windows += o.Windows
	s.WindowsDetected += o.WindowsDetected
}

func describeCorpus(c *Corpus, data, labels string) CorpusInfo {
	ci := CorpusInfo{Data: data, Labels: labels, Files: len(c.Files), Windows: c.Windows}
	for _, f := range c.Files {
		ci.Rows += len(f.Times)
		ci.ProbationRows += f.Probation
		for _, w := range f.Windows {
			if w.End >= f.Probation {
				ci.ScorableWindows++
			}
		}
		if len(ci.Categories) == 0 || ci.Categories[len(ci.Categories)-1].Name != f.Category {
			ci.Categories = append(ci.Categories, CategoryInfo{Name: f.Category})
		}
		cat := &ci.Categories[len(ci.Categories)-1]
		cat.Files++
		cat.Rows += len(f.Times)
		cat.Windows += len(f.Windows)
	}
	return ci
}

// nullRaw is the raw score of the null detector for each profile.
func nullRaw(c *Corpus) []float64 {
	scores, err := baselineScores("null", c, 0)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	sw := newSweep(c, scores)
	raw := make([]float64, len(Profiles))
	for k, p := range Profiles {
		_, raw[k] = sw.best(p)
	}
	return raw
}

// evaluate scores one detector: for each profile the best corpus-wide
// threshold, the raw and normalised scores, and the per-file and
// per-category figures at that threshold.
func evaluate(c *Corpus, name, source string, scores [][]float64, null []float64) DetectorResult {
	d := DetectorResult{Name: name, Source: source}
	sw := newSweep(c, scores)
	d.Files = make([]FileResult, len(c.Files))
	for k, f := range c.Files {
		d.Files[k] = FileResult{File: f.Name, Rows: len(f.Times), Probation: f.Probation, Windows: len(f.Windows)}
	}
	for pk, p := range Profiles {
		threshold, raw := sw.best(p)
		pr := ProfileResult{
			Profile:   p.Name,
			Threshold: threshold,
			Raw:       raw,
			Null:      null[pk],
			Perfect:   float64(c.Windows) * p.TP,
		}
		// NAB's normalisation (runner.py normalize).
		pr.Normalised = 100 * (pr.Raw - pr.Null) / (pr.Perfect - pr.Null)
		for k, f := range c.Files {
			fs := scoreFile(f, scores[k], p, threshold)
			d.Files[k].Scores = append(d.Files[k].Scores, fs)
			pr.Totals.add(fs)
		}
		if diff := math.Abs(pr.Totals.Score - raw); diff > 1e-6*max(1, math.Abs(raw)) {
			panic(fmt.Sprintf("BUG: %s %s: the files sum to %v at threshold %v, the sweep found %v", name, p.Name, pr.Totals.Score, threshold, raw))
		}
		d.Profiles = append(d.Profiles, pr)
	}
	for k, f := range c.Files {
		if len(d.Categories) == 0 || d.Categories[len(d.Categories)-1].Category != f.Category {
			d.Categories = append(d.Categories, CategoryResult{Category: f.Category})
		}
		cat := &d.Categories[len(d.Categories)-1]
		cat.Files++
		cat.add(d.Files[k].Scores[0])
		d.All.add(d.Files[k].Scores[0])
	}
	return d
}

func formatThreshold(t float64) string {
	if t == neverFires {
		return "1.1 (never fires)"
	}
	return fmt.Sprintf("%.6g", t)
}

// printReport writes the human-readable tables.
func printReport(w io.Writer, r *Report) {
	ci := r.Corpus
	fmt.Fprintf(w, "NAB v1.1 scoring: %d files, %d rows (%d of them probationary, not scored), %d windows\n",
		ci.Files, ci.Rows, ci.ProbationRows, ci.Windows)
	fmt.Fprintf(w, "data %s, labels %s\n", ci.Data, ci.Labels)
	for _, d := range r.Detectors {
		fmt.Fprintf(w, "\n== %s (%s)\n", d.Name, d.Source)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "profile\tthreshold\traw\tnull\tperfect\tnormalised\twindows detected\tFP rows")
		for _, p := range d.Profiles {
			fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.3f\t%.3f\t%.2f\t%d/%d\t%d\n", p.Profile, formatThreshold(p.Threshold),
				p.Raw, p.Null, p.Perfect, p.Normalised, p.Totals.WindowsDetected, p.Totals.Windows, p.Totals.FPRows)
		}
		tw.Flush()
		fmt.Fprintf(w, "at the standard threshold %s:\n", formatThreshold(d.Profiles[0].Threshold))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "category\tfiles\twindows detected\tFP rows\traw (standard)")
		for _, c := range d.Categories {
			fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%d\t%.3f\n", c.Category, c.Files, c.WindowsDetected, c.Windows, c.FPRows, c.Score)
		}
		fmt.Fprintf(tw, "all\t%d\t%d/%d\t%d\t%.3f\n", len(d.Files), d.All.WindowsDetected, d.All.Windows, d.All.FPRows, d.All.Score)
		tw.Flush()
	}
	printComparison(w, r)
}

// printComparison writes one row per detector, this run's among NAB's
// published ones, by standard score.
func printComparison(w io.Writer, r *Report) {
	type row struct {
		name   string
		scores [3]float64
		source string
		ours   bool
	}
	var rows []row
	for _, d := range r.Detectors {
		var s [3]float64
		for k := range s {
			s[k] = d.Profiles[k].Normalised
		}
		rows = append(rows, row{"* " + d.Name, s, d.Source, true})
	}
	for _, p := range r.Scoreboard.Rows {
		rows = append(rows, row{"  " + p.Detector, p.Scores, p.Source, false})
	}
	for _, p := range r.Scoreboard.Random {
		rows = append(rows, row{"  " + p.Detector, p.Scores, p.Source, false})
	}
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(b.scores[0], a.scores[0]) })
	fmt.Fprintf(w, "\n== normalised scores (* = this run), by standard score\npublished figures: %s\n", r.Scoreboard.Source)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	names := make([]string, len(Profiles))
	for k, p := range Profiles {
		names[k] = p.Name
	}
	fmt.Fprintf(tw, "detector\t%s\tsource\n", strings.Join(names, "\t"))
	for _, x := range rows {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%s\n", x.name, x.scores[0], x.scores[1], x.scores[2], x.source)
	}
	tw.Flush()
}
