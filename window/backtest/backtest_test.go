package backtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window"
)

const corpus = "testdata/corpus"

// backtestRun runs `anomalyd backtest args...` through Main, as main does.
func backtestRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// backtestOK runs the backtest of input into a new folder and returns it.
func backtestOK(t *testing.T, input string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	code, _, stderr := backtestRun(t, append([]string{"--input", input, "--output", dir}, args...)...)
	if code != 0 {
		t.Fatalf("backtest %v: exit %d, stderr %q", args, code, stderr)
	}
	return dir
}

// csvFiles lists the *.csv files under dir, slash-separated and relative.
func csvFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".csv") {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// readRows returns the header and the rows of a CSV file split on commas.
func readRows(t *testing.T, path string) (string, [][]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Split(l, ","))
	}
	return lines[0], rows
}

// scores returns the anomaly_score column of an output file, checking
// that every score is a number in [0, 1].
func scores(t *testing.T, path string) []float64 {
	t.Helper()
	_, rows := readRows(t, path)
	var s []float64
	for i, r := range rows {
		v, err := strconv.ParseFloat(r[2], 64)
		if err != nil || !(v >= 0 && v <= 1) {
			t.Fatalf("%s row %d: anomaly_score %q is not in [0, 1]", path, i+1, r[2])
		}
		s = append(s, v)
	}
	return s
}

func TestBacktestTree(t *testing.T) {
	out := t.TempDir()
	code, stdout, stderr := backtestRun(t, "--input", corpus, "--output", out)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stdout, "backtest: 3 files, 510 rows, detector combined, ") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("summary %q", stdout)
	}
	want := []string{"flat.csv", "step.csv", "sub/drift.csv"} // not sub/notes.txt
	if got := csvFiles(t, corpus); !slices.Equal(got, want) {
		t.Fatalf("fixture files %v, want %v", got, want)
	}
	// Each folder that holds CSV files is a group with its incidents.
	if got, wantOut := csvFiles(t, out), []string{"flat.csv", "incidents.csv", "step.csv", "sub/drift.csv", "sub/incidents.csv"}; !slices.Equal(got, wantOut) {
		t.Fatalf("output files %v, want %v", got, wantOut)
	}
	if !strings.Contains(stdout, " 2 groups with incidents.csv, ") {
		t.Errorf("summary %q does not count the 2 groups", stdout)
	}
	warmup := detectors.DefaultParams().Warmup
	for _, f := range want {
		_, in := readRows(t, filepath.Join(corpus, f))
		header, got := readRows(t, filepath.Join(out, f))
		if header != "timestamp,value,anomaly_score" {
			t.Fatalf("%s: header %q", f, header)
		}
		if len(got) != len(in) {
			t.Fatalf("%s: %d rows, want %d", f, len(got), len(in))
		}
		for i := range in {
			if len(got[i]) != 3 || got[i][0] != in[i][0] || got[i][1] != in[i][1] {
				t.Fatalf("%s row %d: got %q, want %q plus a score", f, i+1, got[i], in[i])
			}
		}
		s := scores(t, filepath.Join(out, f))
		for i := range warmup {
			if s[i] != 0 {
				t.Fatalf("%s row %d: score %g during warm-up, want 0", f, i+1, s[i])
			}
		}
		if slices.Max(s) == 0 {
			t.Fatalf("%s: every score is 0", f)
		}
	}
	// step.csv goes from ~10 to ~20 at row 151 (index 150), once the
	// detectors are Ready (warm-up and calibration).
	s := scores(t, filepath.Join(out, "step.csv"))
	if before := slices.Max(s[:150]); before >= 0.5 {
		t.Fatalf("step.csv: score %g before the step, want < 0.5 (inside the band)", before)
	}
	if s[150] <= 0.5 {
		t.Fatalf("step.csv: score %g on the step, want > 0.5 (outside the band)", s[150])
	}
}

// testMillis parses a fixture timestamp independently of backtest.go.
func testMillis(t *testing.T, s string) int64 {
	t.Helper()
	for _, layout := range []string{time.DateTime, time.RFC3339} {
		if tm, err := time.Parse(layout, s); err == nil {
			return tm.UnixMilli()
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("fixture timestamp %q: %v", s, err)
	}
	return int64(math.Round(f * 1000))
}

// The backtest must score exactly as window.Analyser, the per-sample code
// of the server's shards, with the params the rules give the series.
func TestBacktestMatchesAnalyser(t *testing.T) {
	// Rows the analyser skips: a duplicate, an older sample, NaN, +Inf, a
	// counter reset; then more rows to see that it carries on, past
	// Entropy's warm-up.
	tricky := t.TempDir()
	var b strings.Builder
	b.WriteString("timestamp,value\n")
	for i := range detectors.EntropyWarmup + 160 {
		c := 100 + 3*i
		if i >= 30 {
			c = 2 + 3*(i-30) // counter reset
		}
		v := strconv.Itoa(c + int(3*math.Mod(float64(i)*0.618034, 1))) // not periodic
		switch i {
		case 20:
			v = "NaN"
		case 22:
			v = "+Inf"
		}
		fmt.Fprintf(&b, "%d,%s\n", 1704067200+60*i, v)
		if i == 15 {
			fmt.Fprintf(&b, "%d,%s\n", 1704067200+60*i, v)    // duplicate
			fmt.Fprintf(&b, "%d,%s\n", 1704067200+60*i-30, v) // older
		}
	}
	if err := os.WriteFile(filepath.Join(tricky, "tricky.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	rules := window.CompileRules(config.Default())
	check := func(t *testing.T, inDir, rel, metric string, counter bool, k detectors.Kind, outDir string) {
		t.Helper()
		p, ignored := rules.ParamsFor("__name__\xff" + metric + "\xfffile\xff" + rel + "\xff")
		if ignored {
			t.Fatalf("default rules ignore %s", rel)
		}
		a := window.NewAnalyser(p, counter)
		_, in := readRows(t, filepath.Join(inDir, rel))
		_, got := readRows(t, filepath.Join(outDir, rel))
		ready := 0
		for i, r := range in {
			want := "0"
			if o, ok := a.Observe(testMillis(t, r[0]), must(strconv.ParseFloat(r[1], 64))); ok {
				res := o.Combined
				if k != detectors.KindCombined {
					res = o.Per[k]
				}
				if res.Ready {
					want = strconv.FormatFloat(res.Score/(1+res.Score), 'g', -1, 64)
					ready++
				}
			}
			if got[i][2] != want {
				t.Fatalf("%s %s %s row %d: anomaly_score %s, want %s", metric, k, rel, i+1, got[i][2], want)
			}
		}
		if ready == 0 {
			t.Fatalf("%s %s %s: no row was scored Ready", metric, k, rel)
		}
	}
	// As counters, the corpus's values are the increments: a counter that
	// falls has restarted, and its reset sample is not scored.
	counters := t.TempDir()
	for _, rel := range []string{"flat.csv", "step.csv", "sub/drift.csv"} {
		_, rows := readRows(t, filepath.Join(corpus, rel))
		var b strings.Builder
		b.WriteString("timestamp,value\n")
		sum := 0.0
		for _, r := range rows {
			sum += must(strconv.ParseFloat(r[1], 64))
			fmt.Fprintf(&b, "%s,%g\n", r[0], sum)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(counters, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(counters, rel), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, metric := range []string{"backtest_value", "http_requests_total"} {
		counter := metric != "backtest_value"
		in := corpus
		if counter {
			in = counters
		}
		for k := detectors.KindEWMA; k <= detectors.KindCombined; k++ {
			args := []string{"--detector", k.String(), "--metric-name", metric}
			out := backtestOK(t, in, args...)
			for _, rel := range []string{"flat.csv", "step.csv", "sub/drift.csv"} {
				check(t, in, rel, metric, counter, k, out)
			}
			out = backtestOK(t, tricky, args...)
			check(t, tricky, "tricky.csv", metric, counter, k, out)
		}
	}

	// The skipped rows of tricky.csv score 0 whatever the detector.
	out := backtestOK(t, tricky)
	_, rows := readRows(t, filepath.Join(out, "tricky.csv"))
	if want := detectors.EntropyWarmup + 160 + 2; len(rows) != want {
		t.Fatalf("tricky.csv: %d rows, want %d", len(rows), want)
	}
	for _, i := range []int{17, 18, 23, 25} { // duplicate, older, NaN, +Inf (1-based rows)
		if rows[i-1][2] != "0" {
			t.Fatalf("tricky.csv row %d (%v): score %s, want 0", i, rows[i-1], rows[i-1][2])
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestBacktestCounter(t *testing.T) {
	gauge := backtestOK(t, corpus)
	counter := backtestOK(t, corpus, "--metric-name", "backtest_value_total")
	a, _ := os.ReadFile(filepath.Join(gauge, "sub/drift.csv"))
	b, _ := os.ReadFile(filepath.Join(counter, "sub/drift.csv"))
	if bytes.Equal(a, b) {
		t.Fatal("a counter name scores like a gauge: want rates")
	}

	// Without --metric-name a file named after a counter is that counter
	// (an export of node_exporter's series is analysed as the server
	// analyses it); --metric-name overrides the file's name.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "requests_total.csv"), must(os.ReadFile(filepath.Join(corpus, "sub/drift.csv"))), 0o644); err != nil {
		t.Fatal(err)
	}
	named, _ := os.ReadFile(filepath.Join(backtestOK(t, dir), "requests_total.csv"))
	if !bytes.Equal(named, b) {
		t.Error("requests_total.csv is not analysed as a counter")
	}
	forced, _ := os.ReadFile(filepath.Join(backtestOK(t, dir, "--metric-name", "backtest_value"), "requests_total.csv"))
	if !bytes.Equal(forced, a) {
		t.Error("--metric-name backtest_value does not analyse requests_total.csv as a gauge")
	}
}

func TestBacktestDetectors(t *testing.T) {
	ewma := scores(t, filepath.Join(backtestOK(t, corpus, "--detector", "ewma"), "sub/drift.csv"))
	slope := scores(t, filepath.Join(backtestOK(t, corpus, "--detector", "slope"), "sub/drift.csv"))
	// drift.csv drifts by 0.4 per row from row 151 on: the EWMA follows the
	// level and calms down, the slope detector sees the trend grow.
	if slices.Equal(ewma, slope) {
		t.Fatal("ewma and slope give the same column")
	}
	if e, s := ewma[len(ewma)-1], slope[len(slope)-1]; !(s > 0.5 && e < 0.5) {
		t.Fatalf("last drift row: ewma %g, slope %g; want slope > 0.5 > ewma", e, s)
	}
}

func TestBacktestIgnoreRule(t *testing.T) {
	plain := backtestOK(t, corpus)
	out := backtestOK(t, corpus, "--config.file", "testdata/ignore.yml")
	for i, s := range scores(t, filepath.Join(out, "flat.csv")) {
		if s != 0 {
			t.Fatalf("ignored flat.csv row %d: score %g, want 0", i+1, s)
		}
	}
	for _, f := range []string{"step.csv", "sub/drift.csv"} {
		a, _ := os.ReadFile(filepath.Join(plain, f))
		b, _ := os.ReadFile(filepath.Join(out, f))
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: the ignore rule for flat.csv changed its scores", f)
		}
	}
}

func TestBacktestDeterministic(t *testing.T) {
	a, b := backtestOK(t, corpus), backtestOK(t, corpus)
	// And one worker against several: the order files finish in is moot.
	jobs, err := backtestJobs(corpus, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bt := &backtest{rules: window.CompileRules(config.Default()), name: defaultBacktestMetric, kind: detectors.KindCombined}
	for _, r := range bt.run(jobs, 1) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	c := filepath.Dir(jobs[0].out)
	for _, f := range csvFiles(t, corpus) {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		z, _ := os.ReadFile(filepath.Join(c, f))
		if len(x) == 0 || !bytes.Equal(x, y) || !bytes.Equal(x, z) {
			t.Fatalf("%s differs between runs", f)
		}
	}
}

func TestBacktestSingleFile(t *testing.T) {
	out := backtestOK(t, filepath.Join(corpus, "step.csv"))
	if got := csvFiles(t, out); !slices.Equal(got, []string{"incidents.csv", "step.csv"}) {
		t.Fatalf("output files %v, want [incidents.csv step.csv]", got)
	}
	// Same labels (file="step.csv") as in the folder run: same scores.
	tree := backtestOK(t, corpus)
	a, _ := os.ReadFile(filepath.Join(out, "step.csv"))
	b, _ := os.ReadFile(filepath.Join(tree, "step.csv"))
	if !bytes.Equal(a, b) {
		t.Fatal("step.csv alone scores differently from step.csv in its folder")
	}
}

func TestParseTimestamp(t *testing.T) {
	f := func(s string, want int64) {
		t.Helper()
		got, err := parseTimestamp(classifyTimestamp(s), s)
		if err != nil || got != want {
			t.Fatalf("parseTimestamp(%q): got %d, %v; want %d", s, got, err, want)
		}
	}
	const jan1 = 1704067200000 // 2024-01-01T00:00:00Z
	f("2024-01-01 00:00:00", jan1)
	f("2024-01-01 00:00:01.25", jan1+1250)
	f("2024-01-01T00:00:00Z", jan1)
	f("2024-01-01T01:00:00+01:00", jan1)
	f("2024-01-01T00:00:00.1239Z", jan1+123)
	f("1704067200", jan1)
	f("1704067200.5", jan1+500)
	f("1704067200.1239", jan1+123) // truncated, not rounded
	f(".25", 250)
	f("0", 0)
	f("-1.5", -1500)

	bad := func(s string) {
		t.Helper()
		if got, err := parseTimestamp(classifyTimestamp(s), s); err == nil {
			t.Fatalf("parseTimestamp(%q) = %d, want an error", s, got)
		}
	}
	bad("")
	bad("yesterday")
	bad("1e9")
	bad("1.2.3")
	bad("2024/01/01 00:00:00")
	bad("2024-13-01 00:00:00")
	bad("2024-01-01T00:00:00") // RFC 3339 needs a zone
	bad("2024-01-01 00:00:00Z")
	bad("99999999999999999")
}

func TestBacktestErrors(t *testing.T) {
	badConfig := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(badConfig, []byte("rules:\n  - match: up\n    action: analyze\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, cfgErr := config.LoadFile(badConfig)
	if cfgErr == nil {
		t.Fatal("bad.yml loads")
	}
	const ok = "timestamp,value\n2024-01-01 00:00:00,1\n"
	for _, tc := range []struct {
		name  string
		files map[string]string // written to the input folder
		args  []string          // after --input DIR --output DIR/../out
		code  int
		want  string // in stderr; a file name is prefixed with the input folder
	}{
		{name: "mixed formats", files: map[string]string{"a.csv": ok, "m.csv": "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,2\n1704067320,3\n"},
			code: 1, want: `m.csv: line 4: timestamp "1704067320" is Unix seconds but line 2 is YYYY-MM-DD HH:MM:SS: mixed timestamp formats`},
		{name: "bad header", files: map[string]string{"h.csv": "time,value\n1,2\n"},
			code: 1, want: `h.csv: line 1: header must be "timestamp,value", got "time,value"`},
		{name: "header only three columns", files: map[string]string{"h.csv": "timestamp,value,label\n"},
			code: 1, want: `h.csv: line 1: header must be "timestamp,value", got "timestamp,value,label"`},
		{name: "bad value", files: map[string]string{"v.csv": ok + "2024-01-01 00:01:00,abc\n"},
			code: 1, want: `v.csv: line 3: cannot parse value "abc": invalid syntax`},
		{name: "empty value", files: map[string]string{"v.csv": ok + "2024-01-01 00:01:00,\n"},
			code: 1, want: `v.csv: line 3: cannot parse value "": invalid syntax`},
		{name: "three fields", files: map[string]string{"f.csv": ok + "2024-01-01 00:01:00,1,2\n"},
			code: 1, want: `f.csv: line 3: want 2 fields (timestamp,value), got 3`},
		{name: "one field", files: map[string]string{"f.csv": ok + "2024-01-01 00:01:00\n"},
			code: 1, want: `f.csv: line 3: want 2 fields (timestamp,value), got 1`},
		{name: "unknown timestamp", files: map[string]string{"t.csv": "timestamp,value\nyesterday,1\n"},
			code: 1, want: `t.csv: line 2: cannot parse timestamp "yesterday": want YYYY-MM-DD HH:MM:SS (UTC), RFC 3339 or Unix seconds`},
		{name: "invalid date", files: map[string]string{"t.csv": ok + "2024-02-30 00:00:00,1\n"},
			code: 1, want: `t.csv: line 3: cannot parse timestamp "2024-02-30 00:00:00": want YYYY-MM-DD HH:MM:SS`},
		{name: "empty file", files: map[string]string{"e.csv": ""},
			code: 1, want: `e.csv: empty file: want the header "timestamp,value"`},
		{name: "count of failures", files: map[string]string{"a.csv": ok, "b.csv": "", "c.csv": "x\n"},
			code: 1, want: "anomalyd backtest: 2 of 3 files failed\n"},
		{name: "no csv files", files: map[string]string{"a.txt": ok},
			code: 1, want: "anomalyd backtest: no *.csv files under --input "},
		{name: "unknown detector", files: map[string]string{"a.csv": ok}, args: []string{"--detector", "median"},
			code: 1, want: `anomalyd backtest: unknown --detector "median": want ewma, zscore, holtwinters, slope, entropy or combined`},
		{name: "invalid metric name", files: map[string]string{"a.csv": ok}, args: []string{"--metric-name", "1x"},
			code: 1, want: `anomalyd backtest: invalid --metric-name "1x"`},
		{name: "bad config", files: map[string]string{"a.csv": ok}, args: []string{"--config.file", badConfig},
			code: 1, want: "anomalyd: cannot load configuration: " + cfgErr.Error() + "\n"},
		{name: "unknown flag", files: map[string]string{"a.csv": ok}, args: []string{"--no-such-flag"},
			code: 2, want: "flag provided but not defined: -no-such-flag"},
		{name: "extra argument", files: map[string]string{"a.csv": ok}, args: []string{"more"},
			code: 2, want: `anomalyd backtest: unexpected argument "more"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			in, out := filepath.Join(root, "in"), filepath.Join(root, "out")
			for name, text := range tc.files {
				if err := os.MkdirAll(in, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(in, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			code, stdout, stderr := backtestRun(t, append([]string{"--input", in, "--output", out}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr %q lacks %q", stderr, tc.want)
			}
			if stdout != "" {
				t.Fatalf("stdout %q on error, want nothing", stdout)
			}
			if !strings.Contains(stderr, "files failed") {
				return
			}
			// A file that failed leaves no output behind; the others are written.
			for name := range tc.files {
				_, err := os.Stat(filepath.Join(out, name))
				if failed := strings.Contains(stderr, filepath.Join(in, name)+":"); failed == (err == nil) {
					t.Fatalf("%s: failed %v, output exists %v", name, failed, err == nil)
				}
			}
		})
	}
}

func TestBacktestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "anomalyd backtest: --input and --output are required"},
		{[]string{"--input", corpus}, 2, "--input and --output are required"},
		{[]string{"--input", filepath.Join(dir, "nope"), "--output", dir}, 1, "anomalyd backtest: cannot read --input: stat "},
		{[]string{"--input", corpus, "--output", filepath.Join(corpus, "out")}, 1, "is inside --input"},
		{[]string{"--input", corpus, "--output", corpus}, 1, "is inside --input"},
		{[]string{"--input", filepath.Join(corpus, "flat.csv"), "--output", corpus}, 1, "would overwrite --input"},
		{[]string{"--help"}, 0, "anomaly_score = s / (1 + s)"},
	} {
		code, _, stderr := backtestRun(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("backtest %q: exit %d, stderr %q; want exit %d with %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(corpus, "out")); err == nil {
		t.Fatal("a refused run created its output folder")
	}
}

// FuzzBacktestScore: any input either fails cleanly or gives one output
// row per data row with a score in [0, 1].
func FuzzBacktestScore(f *testing.F) {
	f.Add("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,NaN\n")
	f.Add("timestamp,value\r\n1,1\r\n2,+Inf\r\n2,-Inf\r\n1,1e400\r\n\r\n3,\"4\"\r\n")
	f.Add("\ufefftimestamp , \"value\"\n2024-01-01T00:00:00Z, 1\n2024-01-01T00:00:00.5+02:00,2")
	f.Add("timestamp,value\n")
	f.Add("")
	f.Add("timestamp,value\n1704067200.5,1\n1704067200,1\n-1,0x1p-2\n")
	bt := &backtest{rules: window.CompileRules(config.Default()), name: defaultBacktestMetric, kind: detectors.KindCombined}
	p := detectors.DefaultParams()
	p.Warmup = 2
	f.Fuzz(func(t *testing.T, in string) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		var samples []incSample
		var format tsFormat
		rows, err := bt.score(strings.NewReader(in), w, window.NewAnalyser(&p, false), &samples, &format)
		if err != nil {
			return
		}
		w.Flush()
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if lines[0] != "timestamp,value,anomaly_score" || len(lines)-1 != rows {
			t.Fatalf("%d rows, output %q", rows, out.String())
		}
		for _, l := range lines[1:] {
			s, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ',')+1:], 64)
			if err != nil || !(s >= 0 && s <= 1) {
				t.Fatalf("row %q: score not in [0, 1]", l)
			}
		}
	})
}

func TestBacktestDisabledDetector(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "noslope.yml")
	if err := os.WriteFile(cfg, []byte("detectors:\n  slope: {enabled: false}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	code, _, stderr := backtestRun(t, "--input", filepath.Join(corpus, "step.csv"), "--output", out, "--config.file", cfg, "--detector", "slope")
	if code != 0 || !strings.Contains(stderr, `warning: testdata/corpus/step.csv: detector slope is disabled for {file="step.csv"}: its scores are 0`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if s := scores(t, filepath.Join(out, "step.csv")); slices.Max(s) != 0 {
		t.Fatalf("disabled detector: max score %g, want 0", slices.Max(s))
	}
}

// TestBacktestIncidents: the files of one folder are one group, replayed
// in merged time order: incidents.csv has a row per distinct timestamp, in
// time order; a shift of most series at once opens an incident within two
// samples, and a spike of one series in a group whose series spike now and
// then does not.
func TestBacktestIncidents(t *testing.T) {
	in := t.TempDir()
	const rows, shiftAt, spikeAt = 3000, 2500, 1500
	for k := range 10 {
		var b strings.Builder
		b.WriteString("timestamp,value\n")
		rng := rand.New(rand.NewPCG(uint64(k), 9))
		for i := range rows {
			v := 100 + rng.NormFloat64()
			if rng.IntN(100) == 0 {
				v += 3 + 3*rng.Float64() // noisy: every series spikes now and then
			}
			if i >= shiftAt && k < 8 {
				v += 30 // eight of ten series shift at once
			}
			if i == spikeAt && k == 9 {
				v += 6
			}
			// Series are scraped a few seconds apart, as a target's are.
			fmt.Fprintf(&b, "%d,%g\n", 1_700_000_000+int64(i)*60+int64(k%3), v)
		}
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("m%02d.csv", k)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := backtestOK(t, in)
	header, got := readRows(t, filepath.Join(out, "incidents.csv"))
	if header != "timestamp,incident_score,open,series" {
		t.Fatalf("header %q", header)
	}
	if len(got) != 3*rows {
		t.Fatalf("%d rows, want %d: one per distinct timestamp (three per minute)", len(got), 3*rows)
	}
	// Only the time after the detectors' calibration warm-up (~1000
	// samples) counts: until then a young series' records score as new
	// extremes, which the incident stage cannot yet tell from a fault.
	const settled = 1000
	var opened []int
	prevOpen, prevT := "0", int64(0)
	for i, r := range got {
		ts, err := strconv.ParseInt(r[0], 10, 64)
		if err != nil || ts <= prevT {
			t.Fatalf("row %d: timestamp %q after %d: want Unix seconds in increasing order", i, r[0], prevT)
		}
		prevT = ts
		if r[2] == "1" && prevOpen == "0" && i/3 >= settled {
			opened = append(opened, i/3)
		}
		prevOpen = r[2]
	}
	if len(opened) != 1 || opened[0] < shiftAt || opened[0] > shiftAt+2 {
		t.Fatalf("incidents opened at samples %v; want one within two samples of the shift at %d", opened, shiftAt)
	}
}
