// Package backtest is `anomalyd backtest`: it scores CSV files offline with
// exactly the server's per-series code (window.Analyser: ordering,
// duplicates, counter rates, the detectors, the config's rules) and writes
// one scored CSV per input file. bench/nab scores its output.
package backtest

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window"
	"github.com/anomalyd/anomalyd/window/series"
)

// defaultBacktestMetric is the __name__ of a backtested series: a gauge
// name, so values are analysed as they are.
const defaultBacktestMetric = "backtest_value"

const backtestUsage = `Usage: anomalyd backtest --input PATH --output DIR [flags]

Scores CSV files offline with the server's detectors (the same per-sample
code, the same per-series settings from --config.file) and writes one CSV per
input file.

Input: files with the header "timestamp,value", one series per file, rows in
file order. Timestamps are "YYYY-MM-DD HH:MM:SS" (UTC), RFC 3339 or Unix
seconds (integer or decimal); a file's first row fixes its format. PATH is a
file (output DIR/<name>) or a folder, walked in lexical order for *.csv files
whose tree is mirrored under DIR.

Series labels: __name__ = the file's name without ".csv" when that is a
valid metric name (node_cpu_seconds_total.csv is node_cpu_seconds_total),
else backtest_value; --metric-name gives every file that name instead.
file = the path relative to the input folder (the file name for a single
file), so config rules can select files: a rule {file="x.csv"} with
"action: ignore" gives x.csv scores of 0. A name ending in _total, _count
or _sum is a counter, analysed as a per-second rate as the server does (its
first row then scores 0).

Output: "timestamp,value,anomaly_score", one row per input row, timestamp and
value copied verbatim. anomaly_score = s / (1 + s), where s is the chosen
detector's native score (0 = as expected, 1 = on the band edge): 0 is
expected, 0.5 the band edge, towards 1 ever more anomalous. It is 0 during
warm-up and for rows the server would not analyse (duplicate or older
timestamps, NaN, ±Inf, a counter's first sample), and for every row when
the config disables the chosen detector for a file (with a warning).

Incidents: every folder that directly holds CSV files is one group (one
target); its files' rows, in merged time order, go through the incident
stage on their combined score, and OUTPUT/<same folder>/incidents.csv gets
"timestamp,incident_score,open,series": one row per distinct timestamp of
the group, in time order, the native incident score (>= 1 an incident),
open 0/1, and the number of series whose evidence is live.

Flags:
`

// Main is `anomalyd backtest` with its arguments: it runs every input file through
// a window.Analyser, the per-sample logic of a shard, and writes the scores.
// What the server does around that logic does not apply: ingest limits
// (ingest.max_future, label limits) and window.series_ttl eviction, which
// go by the wall clock, so a gap in a file never restarts warm-up.
// Exit codes: 0 ok, 1 a failed file or a bad flag value, 2 usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("anomalyd backtest", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var (
		input      = fset.String("input", "", "CSV file or folder of CSV files to score (required).")
		output     = fset.String("output", "", "Folder for the scored CSV files, created if missing (required).")
		configFile = fset.String("config.file", "", "Configuration file (YAML) whose detectors and rules apply. Empty: built-in defaults.")
		detector   = fset.String("detector", detectors.KindCombined.String(), "Detector whose score is written: ewma, zscore, holtwinters, slope, entropy or combined.")
		metricName = fset.String("metric-name", "", "__name__ of every series (default: each file's name without .csv if it is a valid metric name, else "+defaultBacktestMetric+"); a name ending in _total, _count or _sum is analysed as a counter (per-second rate).")
	)
	fset.Usage = func() {
		fmt.Fprint(stderr, backtestUsage)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fset.NArg() > 0 {
		fmt.Fprintf(stderr, "anomalyd backtest: unexpected argument %q\n", fset.Arg(0))
		return 2
	}
	if *input == "" || *output == "" {
		fmt.Fprintln(stderr, "anomalyd backtest: --input and --output are required")
		return 2
	}
	kind, ok := detectors.ParseKind(*detector)
	if !ok {
		fmt.Fprintf(stderr, "anomalyd backtest: unknown --detector %q: want ewma, zscore, holtwinters, slope, entropy or combined\n", *detector)
		return 1
	}
	if *metricName != "" && !validMetricName(*metricName) {
		fmt.Fprintf(stderr, "anomalyd backtest: invalid --metric-name %q: want [a-zA-Z_:][a-zA-Z0-9_:]*\n", *metricName)
		return 1
	}
	cfg, err := loadConfig(*configFile)
	if err != nil {
		fmt.Fprintf(stderr, "anomalyd: cannot load configuration: %v\n", err)
		return 1
	}
	start := time.Now()
	jobs, err := backtestJobs(*input, *output)
	if err != nil {
		fmt.Fprintf(stderr, "anomalyd backtest: %v\n", err)
		return 1
	}
	bt := &backtest{
		rules: window.CompileRules(cfg),
		name:  *metricName,
		kind:  kind,
	}
	results := bt.run(jobs, runtime.GOMAXPROCS(0))
	rows, failed := 0, 0
	for i, r := range results {
		rows += r.rows
		if r.warning != "" {
			fmt.Fprintf(stderr, "anomalyd backtest: warning: %s\n", r.warning)
		}
		if r.err != nil {
			fmt.Fprintf(stderr, "anomalyd backtest: %s: %v\n", jobs[i].in, r.err)
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "anomalyd backtest: %d of %d files failed\n", failed, len(jobs))
		return 1
	}
	incidentParams := cfg.Incidents.Params()
	groups, err := writeIncidents(jobs, results, &incidentParams)
	if err != nil {
		fmt.Fprintf(stderr, "anomalyd backtest: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "backtest: %d files, %d rows, detector %s, %d groups with incidents.csv, %.2fs, output in %s\n",
		len(jobs), rows, kind, groups, time.Since(start).Seconds(), *output)
	return 0
}

// loadConfig reads the config file, or returns the built-in defaults when
// there is none, as the server does.
func loadConfig(file string) (*config.Config, error) {
	if file == "" {
		return config.Default(), nil
	}
	return config.LoadFile(file)
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// backtestJob is one input file: its path, its output path and its `file`
// label (slash-separated path relative to the input folder).
type backtestJob struct {
	in, out, rel string
}

// backtestJobs lists the files under input (or input itself) in lexical
// order with their output paths under output. It refuses an output that
// would overwrite an input or be walked by a later run over the same input.
func backtestJobs(input, output string) ([]backtestJob, error) {
	st, err := os.Stat(input)
	if err != nil {
		return nil, fmt.Errorf("cannot read --input: %w", err)
	}
	absIn, err1 := filepath.Abs(input)
	absOut, err2 := filepath.Abs(output)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	if !st.IsDir() {
		if filepath.Join(absOut, filepath.Base(absIn)) == absIn {
			return nil, fmt.Errorf("--output %s would overwrite --input %s", output, input)
		}
		base := filepath.Base(input)
		return []backtestJob{{in: input, out: filepath.Join(output, base), rel: base}}, nil
	}
	if rel, err := filepath.Rel(absIn, absOut); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("--output %s is inside --input %s: its files would be overwritten or read as input by the next run", output, input)
	}
	var jobs []backtestJob
	inputs := map[string]bool{}
	// WalkDir visits entries in lexical order, so jobs are sorted.
	err = filepath.WalkDir(input, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".csv") {
			return nil
		}
		rel, err := filepath.Rel(input, path)
		if err != nil {
			return err
		}
		jobs = append(jobs, backtestJob{in: path, out: filepath.Join(output, rel), rel: filepath.ToSlash(rel)})
		inputs[filepath.Join(absIn, rel)] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot walk --input: %w", err)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("no *.csv files under --input %s", input)
	}
	for _, j := range jobs {
		if inputs[filepath.Join(absOut, filepath.FromSlash(j.rel))] {
			return nil, fmt.Errorf("--output %s would overwrite input file %s", output, j.out)
		}
	}
	return jobs, nil
}

// backtest holds what every file of one run shares. It is read-only while
// files are scored, so workers share it.
type backtest struct {
	rules *window.Rules
	name  string // --metric-name; "" names each file after itself
	kind  detectors.Kind
}

// backtestResult is the outcome of one file.
type backtestResult struct {
	rows    int
	warning string
	err     error
	// samples are the file's rows for the incident stage (incidents.go):
	// time and combined score, -1 for a row that was not analysed.
	samples []incSample
	format  tsFormat
}

// run scores jobs with up to workers goroutines. Files are independent
// (one series, one Analyser each), so the order they finish in changes
// nothing; results[i] belongs to jobs[i].
func (bt *backtest) run(jobs []backtestJob, workers int) []backtestResult {
	results := make([]backtestResult, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				results[i] = bt.file(&jobs[i])
			}
		})
	}
	wg.Wait()
	return results
}

// file scores one job into its output file, removed again on error.
func (bt *backtest) file(j *backtestJob) (res backtestResult) {
	// The canonical label set: names sorted, "__name__" < "file".
	name := bt.name
	if name == "" {
		// A file named after its metric is that metric: a counter's
		// export is analysed as a rate, as the server analyses it.
		name = defaultBacktestMetric
		if b := strings.TrimSuffix(filepath.Base(j.rel), ".csv"); validMetricName(b) {
			name = b
		}
	}
	labels := "__name__\xff" + name + "\xfffile\xff" + j.rel + "\xff"
	p, ignored := bt.rules.ParamsFor(labels)
	var an *window.Analyser
	switch {
	case ignored:
		// Like the server, which drops the series: every score is 0.
	case !p.Enabled(bt.kind):
		res.warning = fmt.Sprintf("%s: detector %s is disabled for {file=%q}: its scores are 0", j.in, bt.kind, j.rel)
	default:
		an = window.NewAnalyser(p, series.IsCounterName(name))
	}
	in, err := os.Open(j.in)
	if err != nil {
		res.err = err
		return res
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(j.out), 0o755); err != nil {
		res.err = err
		return res
	}
	out, err := os.Create(j.out)
	if err != nil {
		res.err = err
		return res
	}
	w := bufio.NewWriterSize(out, 64<<10)
	res.rows, res.err = bt.score(in, w, an, &res.samples, &res.format)
	if res.err == nil {
		res.err = w.Flush()
	}
	if err := out.Close(); res.err == nil {
		res.err = err
	}
	if res.err != nil {
		os.Remove(j.out)
	}
	return res
}

// score reads a timestamp,value CSV from r and writes the scored CSV to w,
// returning the number of data rows. A nil an scores every row 0. Errors
// name the line (1-based, the header is line 1). Blank lines are skipped;
// fields may be padded with spaces or double-quoted, and are copied to w as
// they are.
//
// Each row is also appended to samples, with the combined score the
// incident stage reads, and the file's timestamp format is set in
// fileFormat.
func (bt *backtest) score(r io.Reader, w *bufio.Writer, an *window.Analyser, samples *[]incSample, fileFormat *tsFormat) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var (
		rows       int
		line       int
		format     tsFormat
		formatLine int
		buf        []byte
	)
	for sc.Scan() {
		line++
		b := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\ufeff")) // UTF-8 byte order mark
			ts, v, ok := bytes.Cut(b, []byte(","))
			if !ok || csvField(ts) != "timestamp" || csvField(v) != "value" {
				return 0, fmt.Errorf("line 1: header must be \"timestamp,value\", got %q", b)
			}
			w.WriteString("timestamp,value,anomaly_score\n")
			continue
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		tsRaw, vRaw, ok := bytes.Cut(b, []byte(","))
		if !ok || bytes.IndexByte(vRaw, ',') >= 0 {
			return rows, fmt.Errorf("line %d: want 2 fields (timestamp,value), got %d", line, bytes.Count(b, []byte(","))+1)
		}
		ts := csvField(tsRaw)
		f := classifyTimestamp(ts)
		if f == tsUnknown {
			return rows, fmt.Errorf("line %d: cannot parse timestamp %q: want YYYY-MM-DD HH:MM:SS (UTC), RFC 3339 or Unix seconds", line, ts)
		}
		if rows == 0 {
			format, formatLine = f, line
		} else if f != format {
			return rows, fmt.Errorf("line %d: timestamp %q is %s but line %d is %s: mixed timestamp formats", line, ts, f, formatLine, format)
		}
		t, err := parseTimestamp(f, ts)
		if err != nil {
			return rows, fmt.Errorf("line %d: cannot parse timestamp %q: %w", line, ts, err)
		}
		vs := csvField(vRaw)
		v, err := strconv.ParseFloat(vs, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range is ±Inf, which the analyser skips
			return rows, fmt.Errorf("line %d: cannot parse value %q: %w", line, vs, errors.Unwrap(err))
		}
		rows++
		s, inc := 0.0, incSample{t: t, score: -1}
		if an != nil {
			if o, analysed := an.Observe(t, v); analysed {
				s = score01(result(&o, bt.kind))
				if o.Combined.Ready {
					inc.score, inc.record, inc.age = o.Combined.Score, o.Record, o.Age
				}
			}
		}
		*samples = append(*samples, inc)
		*fileFormat = f
		buf = append(buf[:0], tsRaw...)
		buf = append(buf, ',')
		buf = append(buf, vRaw...)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, s, 'g', -1, 64)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return rows, err
		}
	}
	if err := sc.Err(); err != nil {
		return rows, fmt.Errorf("line %d: %w", line+1, err)
	}
	if line == 0 {
		return 0, errors.New("empty file: want the header \"timestamp,value\"")
	}
	return rows, nil
}

// result is detector k's verdict in o.
func result(o *detectors.Output, k detectors.Kind) *detectors.Result {
	if k == detectors.KindCombined {
		return &o.Combined
	}
	return &o.Per[k]
}

// score01 maps a detector's native score s ∈ [0, detectors.MaxScore]
// (0 = expected, 1 = band edge) monotonically onto [0, 1): s / (1 + s), so
// the band edge is 0.5 and MaxScore is 1 − 1e-6. Not Ready (warm-up) is 0.
func score01(r *detectors.Result) float64 {
	if !r.Ready || !(r.Score > 0) {
		return 0
	}
	return r.Score / (1 + r.Score)
}

// csvField trims spaces and one pair of surrounding double quotes.
func csvField(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		b = b[1 : len(b)-1]
	}
	return string(b)
}

// tsFormat is a timestamp format of the input CSV.
type tsFormat uint8

const (
	tsUnknown  tsFormat = iota
	tsDateTime          // 2006-01-02 15:04:05, UTC
	tsRFC3339           // 2006-01-02T15:04:05Z07:00
	tsUnix              // seconds since the epoch, integer or decimal
)

func (f tsFormat) String() string {
	switch f {
	case tsDateTime:
		return "YYYY-MM-DD HH:MM:SS"
	case tsRFC3339:
		return "RFC 3339"
	case tsUnix:
		return "Unix seconds"
	}
	return "unknown"
}

// classifyTimestamp tells the format of s from its shape alone; whether s
// is a valid timestamp of that format is parseTimestamp's business.
func classifyTimestamp(s string) tsFormat {
	if len(s) >= 11 && s[4] == '-' && s[7] == '-' {
		switch s[10] {
		case ' ':
			return tsDateTime
		case 'T':
			return tsRFC3339
		}
		return tsUnknown
	}
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || digits == "." {
		return tsUnknown
	}
	dot := false
	for i := 0; i < len(digits); i++ {
		switch c := digits[i]; {
		case c == '.' && !dot:
			dot = true
		case '0' <= c && c <= '9':
		default:
			return tsUnknown
		}
	}
	return tsUnix
}

// parseTimestamp returns s, of format f, in milliseconds since the epoch;
// finer digits are truncated.
func parseTimestamp(f tsFormat, s string) (int64, error) {
	switch f {
	case tsDateTime:
		t, err := time.Parse(time.DateTime, s) // no zone: UTC; accepts fractional seconds
		if err != nil {
			return 0, errors.New("want YYYY-MM-DD HH:MM:SS")
		}
		return t.UnixMilli(), nil
	case tsRFC3339:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, errors.New("want RFC 3339 (2006-01-02T15:04:05Z07:00)")
		}
		return t.UnixMilli(), nil
	case tsUnix:
		return parseUnixMillis(s)
	}
	return 0, errors.New("unknown format")
}

// parseUnixMillis parses decimal Unix seconds exactly (no float rounding):
// "1425000000.1239" is 1425000000123 ms.
func parseUnixMillis(s string) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	ip, fp, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	var sec int64
	if ip != "" {
		u, err := strconv.ParseUint(ip, 10, 63)
		if err != nil || u > (math.MaxInt64-999)/1000 {
			return 0, errors.New("Unix seconds out of range")
		}
		sec = int64(u)
	}
	ms := sec * 1000
	scale := int64(100)
	for i := 0; i < len(fp) && i < 3; i++ {
		ms += int64(fp[i]-'0') * scale
		scale /= 10
	}
	if neg {
		ms = -ms
	}
	return ms, nil
}
