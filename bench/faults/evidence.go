package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"

	wseries "github.com/anomalyd/anomalyd/window/series"
)

// countEvidence is what a fault's signal series that counts events (a
// counter, by its name, whose increments have all been whole numbers) holds about the
// fault in its first samples: the Poisson generalized likelihood ratio of a
// changed rate, from the best start among those samples, against the
// series' rate over the ten minutes before. No test of that series, however
// made, has more evidence of the change by then; a test that calls it must
// accept chance changes that carry as much.
type countEvidence struct {
	Fault  string    `json:"fault"`
	Series string    `json:"series"`
	Lambda float64   `json:"lambda"` // mean increment per sample in the ten minutes before
	Counts []float64 `json:"counts"` // the increments of the first samples from the fault's start
	Nats   float64   `json:"nats"`
}

// evidenceBefore is how much of a series before a fault gives its rate.
const evidenceBefore = 10 * time.Minute

// faultCountEvidence returns, for each fault of rep and each of its signal
// series in the export dir that counts events, the evidence its first
// `within` samples from the fault's start hold (countEvidence). A target
// folder without series.txt has no labels to select signals by and adds
// nothing.
func faultCountEvidence(dir string, rep *report, within int) ([]countEvidence, error) {
	var out []countEvidence
	for _, f := range rep.Faults {
		index, err := readExportIndex(filepath.Join(dir, f.Target.Job))
		if errors.Is(err, fs.ErrNotExist) {
			continue // an export without label sets: nothing to select signals by
		}
		if err != nil {
			return nil, err
		}
		for _, e := range index {
			s := series{metric: e.lset["__name__"], lset: e.lset}
			matched := false
			for _, g := range f.Signals {
				matched = matched || g.matches(&s)
			}
			if !matched || !wseries.IsCounterName(s.metric) {
				continue
			}
			ts, vs, err := readExportCSV(filepath.Join(dir, f.Target.Job, e.file))
			if err != nil {
				return nil, err
			}
			if ev, ok := countEvidenceOf(ts, vs, unix(f.Start), within); ok {
				ev.Fault, ev.Series = f.Name, e.labels
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

// countEvidenceOf computes countEvidence for the series (ts, vs), Unix
// seconds and raw counter values, and a fault starting at start; ok is false
// when the series does not count events (an increment that is not a whole
// number) or has no samples before the start or `within` after it.
func countEvidenceOf(ts, vs []float64, start float64, within int) (ev countEvidence, ok bool) {
	var sumBefore, secsBefore float64
	type inc struct{ d, secs float64 }
	var after []inc
	for i := 1; i < len(ts); i++ {
		d := vs[i] - vs[i-1]
		if d < 0 { // a reset: the counter restarted from 0
			d = vs[i]
		}
		if d != math.Trunc(d) {
			return ev, false
		}
		secs := ts[i] - ts[i-1]
		switch {
		case ts[i] < start && ts[i] >= start-evidenceBefore.Seconds():
			sumBefore += d
			secsBefore += secs
		case ts[i] >= start && len(after) < within:
			after = append(after, inc{d, secs})
		}
	}
	if secsBefore == 0 || len(after) < within {
		return ev, false
	}
	rate := sumBefore / secsBefore
	for _, a := range after {
		ev.Counts = append(ev.Counts, a.d)
		ev.Lambda += rate * a.secs / float64(len(after))
	}
	for k := range after {
		var n, l float64
		for _, a := range after[k:] {
			n += a.d
			l += rate * a.secs
		}
		ev.Nats = max(ev.Nats, poissonGLR(n, l))
	}
	return ev, true
}

// poissonGLR is the log-likelihood ratio (nats) of a Poisson count n under
// its own rate against expected count l.
func poissonGLR(n, l float64) float64 {
	switch {
	case n == 0:
		return l
	case l <= 0:
		return math.Inf(1)
	}
	return n*math.Log(n/l) - (n - l)
}

// labelParser reads the label sets of series.txt, which Prometheus's
// labels.Labels.String wrote.
var labelParser = parser.NewParser(parser.Options{})

// exportEntry is one line of an export's series.txt.
type exportEntry struct {
	file, labels string
	lset         map[string]string
}

// readExportIndex reads dir/series.txt: a file name, a tab and its label set
// per line.
func readExportIndex(dir string) ([]exportEntry, error) {
	f, err := os.Open(filepath.Join(dir, "series.txt"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []exportEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		file, lbls, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			return nil, fmt.Errorf("%s: line %q has no tab", f.Name(), sc.Text())
		}
		ls, err := labelParser.ParseMetric(lbls)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", f.Name(), file, err)
		}
		out = append(out, exportEntry{file: file, labels: lbls, lset: ls.Map()})
	}
	return out, sc.Err()
}

// readExportCSV reads an exported series: "timestamp,value" in Unix seconds.
func readExportCSV(path string) (ts, vs []float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReader(f))
	r.FieldsPerRecord = 2
	for line := 1; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			return ts, vs, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if line == 1 && rec[0] == "timestamp" {
			continue
		}
		t, err1 := strconv.ParseFloat(rec[0], 64)
		v, err2 := strconv.ParseFloat(rec[1], 64)
		if err1 != nil || err2 != nil {
			return nil, nil, fmt.Errorf("%s: line %d: %q is not a timestamp and a value", path, line, rec)
		}
		ts, vs = append(ts, t), append(vs, v)
	}
}

// printCountEvidence writes evs and the evidence a test allowed perHour
// chance incidents an hour needs, at one sample every interval.
func printCountEvidence(w io.Writer, evs []countEvidence, within int, intervalStr string, perHour float64) {
	interval, err := time.ParseDuration(intervalStr)
	if len(evs) == 0 || err != nil || interval <= 0 {
		return
	}
	need := math.Log(float64(time.Hour) / float64(interval) / perHour)
	fmt.Fprintf(w, "evidence within %d samples of each fault on its signal series that count events (Poisson likelihood ratio of a changed rate, best start; a test allowing %g chance incidents per target-hour at one sample every %s needs %.1f nats on one series):\n",
		within, perHour, interval, need)
	for _, ev := range evs {
		fmt.Fprintf(w, "  %-8s %s: %v where %.2f a sample was usual: %.1f nats\n", ev.Fault, ev.Series, ev.Counts, ev.Lambda, ev.Nats)
	}
}
