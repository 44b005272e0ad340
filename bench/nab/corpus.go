package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Corpus is the NAB data set: the data files with their anomaly windows.
// It is read-only once loaded and may be shared between goroutines.
type Corpus struct {
	Files []*File // sorted by Name
	// Windows is the number of windows in the labels file, NAB's "tpCount":
	// a perfect detector scores Windows × TP weight.
	Windows int
}

// File is one data file, its windows resolved to row indices.
type File struct {
	Name      string   // path relative to the data directory: "realKnownCause/nyc_taxi.csv"
	Category  string   // the directory: "realKnownCause"
	Stamps    []string // the timestamp field of each row, verbatim
	Values    []float64
	Times     []int64 // Unix seconds (the timestamps have no zone: read as UTC)
	Windows   []Window
	Probation int // rows [0, Probation) are not scored

	// Per row, computed by prepare: the index of the window holding it
	// (−1 outside windows) and what it is worth as a detection, before the
	// profile's weight (see prepare).
	windowOf []int32
	value    []float64
}

// Window is an anomaly window: rows Start to End, both included.
type Window struct {
	Start, End int
	Label      [2]string // the [start, end] timestamps of the labels file
}

// prepare sets Probation and the per-row window index and value, NAB's
// calcSweepScore (sweeper.py) without the profile weights:
//   - in a window of width rows ending on row end, S(−(end − i + 1)/width)/maxTP:
//     1 on the first row, falling to S(−1/width)/maxTP > 0 on the last;
//   - outside windows, before the file's first window, −1;
//   - after a window, S(|i − end|/(width − 1)): −0.56 one quarter of a width
//     after it, −0.85 at half a width, −1 beyond three widths.
//
// Windows must be sorted, disjoint and at least 2 rows wide (loadCorpus checks).
func (f *File) prepare() {
	n := len(f.Times)
	f.Probation = probationRows(n)
	f.windowOf = make([]int32, n)
	f.value = make([]float64, n)
	prev := -1 // the last window that ended before row i
	next := 0  // the first window that has not ended before row i
	for i := range n {
		for next < len(f.Windows) && f.Windows[next].End < i {
			prev, next = next, next+1
		}
		if next < len(f.Windows) && f.Windows[next].Start <= i {
			w := f.Windows[next]
			width := float64(w.End - w.Start + 1)
			f.windowOf[i] = int32(next)
			f.value[i] = scaledSigmoid(-float64(w.End-i+1)/width) / maxTP
			continue
		}
		f.windowOf[i] = -1
		if prev < 0 {
			f.value[i] = -1
			continue
		}
		w := f.Windows[prev]
		f.value[i] = scaledSigmoid(float64(i-w.End) / float64(w.End-w.Start))
	}
}

// parseTime reads a NAB timestamp, "2006-01-02 15:04:05" with optional
// fractional seconds (the labels have ".000000"), as Unix seconds.
func parseTime(s string) (int64, error) {
	t, err := time.Parse(time.DateTime, s)
	if err != nil {
		return 0, err
	}
	return t.Unix(), nil
}

// loadLabels reads combined_windows.json: file path → list of [start, end].
func loadLabels(name string) (map[string][][2]string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("cannot read labels: %w", err)
	}
	var raw map[string][][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("cannot parse labels %s: %w", name, err)
	}
	labels := make(map[string][][2]string, len(raw))
	for file, ws := range raw {
		labels[file] = make([][2]string, 0, len(ws))
		for k, w := range ws {
			if len(w) != 2 {
				return nil, fmt.Errorf("labels %s: %s window %d has %d timestamps, want [start, end]", name, file, k, len(w))
			}
			labels[file] = append(labels[file], [2]string{w[0], w[1]})
		}
	}
	return labels, nil
}

// loadCorpus reads every <category>/<file>.csv under dataDir and its windows
// from the labels file. The data files and the labels' keys must be the
// same set; every window boundary must be the timestamp of exactly one row.
func loadCorpus(dataDir, labelsFile string) (*Corpus, error) {
	labels, err := loadLabels(labelsFile)
	if err != nil {
		return nil, err
	}
	var names []string
	err = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".csv") {
			return nil
		}
		rel, err := filepath.Rel(dataDir, p)
		if err != nil {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot list the data directory: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no .csv files under the data directory %s", dataDir)
	}
	slices.Sort(names)
	c := &Corpus{}
	for _, name := range names {
		ws, ok := labels[name]
		if !ok {
			return nil, fmt.Errorf("data file %s has no entry in the labels file %s", name, labelsFile)
		}
		f, err := readDataFile(filepath.Join(dataDir, filepath.FromSlash(name)), name)
		if err != nil {
			return nil, err
		}
		if err := f.resolveWindows(ws); err != nil {
			return nil, fmt.Errorf("labels %s: %w", labelsFile, err)
		}
		f.prepare()
		c.Files = append(c.Files, f)
		c.Windows += len(ws)
	}
	for name := range labels {
		if _, ok := slices.BinarySearch(names, name); !ok {
			return nil, fmt.Errorf("labels file %s lists %s, which is not under the data directory %s", labelsFile, name, dataDir)
		}
	}
	return c, nil
}

// readDataFile reads a "timestamp,value" CSV.
func readDataFile(p, name string) (*File, error) {
	fh, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read data file: %w", err)
	}
	defer fh.Close()
	f := &File{Name: name, Category: path.Dir(name)}
	err = readCSV(fh, []string{"timestamp", "value"}, func(line int, rec []string) error {
		t, err := parseTime(rec[0])
		if err != nil {
			return fmt.Errorf("cannot parse timestamp %q: want YYYY-MM-DD HH:MM:SS", rec[0])
		}
		v, err := strconv.ParseFloat(rec[1], 64)
		if err != nil {
			return fmt.Errorf("cannot parse value %q", rec[1])
		}
		f.Stamps = append(f.Stamps, rec[0])
		f.Times = append(f.Times, t)
		f.Values = append(f.Values, v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("data file %s: %w", p, err)
	}
	if len(f.Times) == 0 {
		return nil, fmt.Errorf("data file %s: no rows", p)
	}
	return f, nil
}

// readCSV reads a CSV whose header starts with the columns want and calls
// fn with each row's fields in that order (extra columns are ignored).
// line is the 1-based line number, for errors.
func readCSV(r io.Reader, want []string, fn func(line int, rec []string) error) error {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err == io.EOF {
		return fmt.Errorf("empty file: want the header %q", strings.Join(want, ","))
	}
	if err != nil {
		return err
	}
	cols := make([]int, len(want))
	for k, name := range want {
		cols[k] = slices.Index(header, name)
		if k == 0 && len(header) > 0 { // a UTF-8 byte-order mark is not part of the name
			if strings.TrimPrefix(header[0], "\ufeff") == name {
				cols[k] = 0
			}
		}
		if cols[k] < 0 {
			return fmt.Errorf("line 1: header %q has no column %q (want %q)", strings.Join(header, ","), name, strings.Join(want, ","))
		}
	}
	rec := make([]string, len(want))
	for line := 2; ; line++ {
		row, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if len(row) != len(header) {
			return fmt.Errorf("line %d: %d fields, the header has %d", line, len(row), len(header))
		}
		for k, c := range cols {
			rec[k] = row[c]
		}
		if err := fn(line, rec); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
}

// resolveWindows maps the labels' [start, end] timestamps to row indices.
// NAB enters a window on the row whose timestamp equals its start and
// leaves it on the row equal to its end; a few files repeat a timestamp or
// step back in time, so a boundary must match exactly one row to be
// unambiguous (all of NAB v1.1's do).
func (f *File) resolveWindows(ws [][2]string) error {
	rows := make(map[int64][]int, len(f.Times))
	for i, t := range f.Times {
		rows[t] = append(rows[t], i)
	}
	find := func(k int, s string) (int, error) {
		t, err := parseTime(s)
		if err != nil {
			return 0, fmt.Errorf("%s window %d: cannot parse timestamp %q", f.Name, k, s)
		}
		switch r := rows[t]; len(r) {
		case 1:
			return r[0], nil
		case 0:
			return 0, fmt.Errorf("%s window %d: no row has the timestamp %s", f.Name, k, s)
		default:
			return 0, fmt.Errorf("%s window %d: %d rows have the timestamp %s (rows %v): ambiguous window boundary", f.Name, k, len(r), s, r)
		}
	}
	f.Windows = f.Windows[:0]
	for k, w := range ws {
		start, err := find(k, w[0])
		if err != nil {
			return err
		}
		end, err := find(k, w[1])
		if err != nil {
			return err
		}
		switch {
		case end-start+1 < 2:
			// The tail after a window divides by (width − 1) (sweeper.py).
			return fmt.Errorf("%s window %d [%s, %s] spans rows %d..%d: a window needs at least 2 rows", f.Name, k, w[0], w[1], start, end)
		case k > 0 && start <= f.Windows[k-1].End:
			return fmt.Errorf("%s window %d [%s, %s] starts on row %d, not after the previous window's end (row %d): windows must be sorted and disjoint", f.Name, k, w[0], w[1], start, f.Windows[k-1].End)
		}
		f.Windows = append(f.Windows, Window{Start: start, End: end, Label: w})
	}
	return nil
}

// errResults marks a results file that cannot be scored.
var errResults = errors.New("invalid results")

// readResults reads a detector's results file for f: the header has
// "timestamp" and "anomaly_score" (and, if present, "value"); one row per
// data row, in the same order, timestamps equal to the data file's and
// values equal to its values (compared as numbers, to 1e-9 relative);
// every anomaly score a number in [0, 1].
func readResults(p string, f *File) ([]float64, error) {
	fh, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: missing results file %s for data file %s", errResults, p, f.Name)
		}
		return nil, fmt.Errorf("%w: %w", errResults, err)
	}
	defer fh.Close()
	header, err := readHeader(fh)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errResults, p, err)
	}
	if len(header) == 0 {
		return nil, fmt.Errorf("%w: %s: empty file: want the header \"timestamp,value,anomaly_score\"", errResults, p)
	}
	// "value" is optional; when present it must be the data file's.
	hasValue := slices.Contains(header, "value")
	cols := []string{"timestamp", "anomaly_score"}
	if hasValue {
		cols = []string{"timestamp", "value", "anomaly_score"}
	}
	scores := make([]float64, 0, len(f.Times))
	err = readCSV(fh, cols, func(line int, rec []string) error {
		i := len(scores)
		if i >= len(f.Times) {
			return fmt.Errorf("more rows than the %d of data file %s", len(f.Times), f.Name)
		}
		if rec[0] != f.Stamps[i] {
			t, err := parseTime(rec[0])
			if err != nil || t != f.Times[i] {
				return fmt.Errorf("timestamp %q, but row %d of data file %s is %q: rows must be in the data file's order", rec[0], i+1, f.Name, f.Stamps[i])
			}
		}
		if hasValue {
			v, err := strconv.ParseFloat(rec[1], 64)
			d := f.Values[i]
			if err != nil || math.Abs(v-d) > 1e-9*max(1, math.Abs(d)) {
				return fmt.Errorf("value %q, but row %d of data file %s has %v: rows must be in the data file's order", rec[1], i+1, f.Name, d)
			}
		}
		score := rec[len(rec)-1]
		s, err := strconv.ParseFloat(score, 64)
		switch {
		case err != nil && !errors.Is(err, strconv.ErrRange):
			return fmt.Errorf("cannot parse anomaly_score %q", score)
		case math.IsNaN(s):
			return fmt.Errorf("anomaly_score is NaN: want a number in [0, 1]")
		case s < 0 || s > 1:
			return fmt.Errorf("anomaly_score %s is outside [0, 1]", score)
		}
		scores = append(scores, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errResults, p, err)
	}
	if len(scores) != len(f.Times) {
		return nil, fmt.Errorf("%w: %s has %d rows, data file %s has %d", errResults, p, len(scores), f.Name, len(f.Times))
	}
	return scores, nil
}

// readHeader returns the CSV header of fh (nil for an empty file) and
// rewinds fh.
func readHeader(fh *os.File) ([]string, error) {
	header, err := csv.NewReader(fh).Read()
	if err != nil && err != io.EOF {
		return nil, err
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return header, nil
}

// readAllResults reads the results directory of one detector, which mirrors
// the data directory: dir/<category>/<file>.csv for every corpus file.
func readAllResults(dir string, c *Corpus) ([][]float64, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("%w: results directory: %w", errResults, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: results directory %s is not a directory", errResults, dir)
	}
	scores := make([][]float64, len(c.Files))
	var errs []error
	for k, f := range c.Files {
		s, err := readResults(filepath.Join(dir, filepath.FromSlash(f.Name)), f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		scores[k] = s
	}
	if len(errs) > 0 {
		if len(errs) > 5 {
			errs = append(errs[:5], fmt.Errorf("and %d more files", len(errs)-5))
		}
		return nil, errors.Join(errs...)
	}
	return scores, nil
}
