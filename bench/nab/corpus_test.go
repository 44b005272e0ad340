package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// synthCorpus writes a small corpus in the NAB layout under dir and returns
// the data directory and labels file:
//
//	cat/a.csv    40 rows, a window on rows 20..24
//	cat/b.csv    100 rows, windows on rows 30..39 and 70..79
//	other/c.csv  30 rows, no window
func synthCorpus(t *testing.T, dir string) (data, labels string) {
	t.Helper()
	data = filepath.Join(dir, "data")
	labels = filepath.Join(dir, "labels", "combined_windows.json")
	files := map[string]int{"cat/a.csv": 40, "cat/b.csv": 100, "other/c.csv": 30}
	for name, n := range files {
		var b strings.Builder
		b.WriteString("timestamp,value\n")
		for i := range n {
			fmt.Fprintf(&b, "%s,%d.5\n", stamp(i), i)
		}
		writeFile(t, filepath.Join(data, name), b.String())
	}
	w := func(a, b int) [2]string { return [2]string{stamp(a) + ".000000", stamp(b) + ".000000"} }
	lb, err := json.Marshal(map[string][][2]string{
		"cat/a.csv":   {w(20, 24)},
		"cat/b.csv":   {w(30, 39), w(70, 79)},
		"other/c.csv": {},
	})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, labels, string(lb))
	return data, labels
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeResults writes a results directory for c, as `anomalyd backtest`
// does, with score(file, row) as the anomaly score.
func writeResults(t *testing.T, dir string, c *Corpus, score func(f *File, i int) float64) {
	t.Helper()
	for _, f := range c.Files {
		var b strings.Builder
		b.WriteString("timestamp,value,anomaly_score\n")
		for i := range f.Times {
			fmt.Fprintf(&b, "%s,%s,%s\n", f.Stamps[i], strconv.FormatFloat(f.Values[i], 'g', -1, 64), strconv.FormatFloat(score(f, i), 'g', -1, 64))
		}
		writeFile(t, filepath.Join(dir, f.Name), b.String())
	}
}

func TestLoadCorpus(t *testing.T) {
	data, labels := synthCorpus(t, t.TempDir())
	c, err := loadCorpus(data, labels)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range c.Files {
		got = append(got, fmt.Sprintf("%s %s rows=%d probation=%d windows=%v", f.Name, f.Category, len(f.Times), f.Probation, f.Windows))
	}
	want := []string{
		"cat/a.csv cat rows=40 probation=6 windows=[{20 24 [2020-01-01 00:20:00.000000 2020-01-01 00:24:00.000000]}]",
		"cat/b.csv cat rows=100 probation=15 windows=[{30 39 [2020-01-01 00:30:00.000000 2020-01-01 00:39:00.000000]} {70 79 [2020-01-01 01:10:00.000000 2020-01-01 01:19:00.000000]}]",
		"other/c.csv other rows=30 probation=4 windows=[]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || c.Windows != 3 {
		t.Errorf("got (%d windows)\n%s\nwant (3 windows)\n%s", c.Windows, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if v := c.Files[0].Values[3]; v != 3.5 {
		t.Errorf("value: got %v, want 3.5", v)
	}
}

func TestLoadCorpusErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(t *testing.T, data, labels string)
		want   string // the error's text after the temporary directory
	}{{
		name: "data file without labels",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, filepath.Join(data, "cat", "extra.csv"), "timestamp,value\n2020-01-01 00:00:00,1\n")
		},
		want: "data file cat/extra.csv has no entry in the labels file LABELS",
	}, {
		name: "labels without data file",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, labels, `{"cat/a.csv": [], "cat/b.csv": [], "other/c.csv": [], "cat/gone.csv": []}`)
		},
		want: "labels file LABELS lists cat/gone.csv, which is not under the data directory DATA",
	}, {
		name: "window boundary not a row",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, labels, `{"cat/a.csv": [["2020-01-01 00:20:30.000000", "2020-01-01 00:24:00.000000"]], "cat/b.csv": [], "other/c.csv": []}`)
		},
		want: "labels LABELS: cat/a.csv window 0: no row has the timestamp 2020-01-01 00:20:30.000000",
	}, {
		name: "ambiguous window boundary",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, filepath.Join(data, "other", "c.csv"), "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:01:00,2\n2020-01-01 00:01:00,3\n2020-01-01 00:02:00,4\n")
			writeFile(t, labels, `{"cat/a.csv": [], "cat/b.csv": [], "other/c.csv": [["2020-01-01 00:00:00", "2020-01-01 00:01:00"]]}`)
		},
		want: "labels LABELS: other/c.csv window 0: 2 rows have the timestamp 2020-01-01 00:01:00 (rows [1 2]): ambiguous window boundary",
	}, {
		name: "one-row window",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, labels, `{"cat/a.csv": [["2020-01-01 00:20:00", "2020-01-01 00:20:00"]], "cat/b.csv": [], "other/c.csv": []}`)
		},
		want: "labels LABELS: cat/a.csv window 0 [2020-01-01 00:20:00, 2020-01-01 00:20:00] spans rows 20..20: a window needs at least 2 rows",
	}, {
		name: "overlapping windows",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, labels, `{"cat/a.csv": [["2020-01-01 00:20:00", "2020-01-01 00:24:00"], ["2020-01-01 00:24:00", "2020-01-01 00:30:00"]], "cat/b.csv": [], "other/c.csv": []}`)
		},
		want: "labels LABELS: cat/a.csv window 1 [2020-01-01 00:24:00, 2020-01-01 00:30:00] starts on row 24, not after the previous window's end (row 24): windows must be sorted and disjoint",
	}, {
		name: "window with three timestamps",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, labels, `{"cat/a.csv": [["2020-01-01 00:20:00", "2020-01-01 00:24:00", "2020-01-01 00:25:00"]], "cat/b.csv": [], "other/c.csv": []}`)
		},
		want: "labels LABELS: cat/a.csv window 0 has 3 timestamps, want [start, end]",
	}, {
		name: "bad timestamp in data",
		modify: func(t *testing.T, data, labels string) {
			writeFile(t, filepath.Join(data, "other", "c.csv"), "timestamp,value\n2020-01-01T00:00:00Z,1\n")
		},
		want: `data file DATA/other/c.csv: line 2: cannot parse timestamp "2020-01-01T00:00:00Z": want YYYY-MM-DD HH:MM:SS`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, labels := synthCorpus(t, t.TempDir())
			tc.modify(t, data, labels)
			_, err := loadCorpus(data, labels)
			want := strings.NewReplacer("LABELS", labels, "DATA", data).Replace(tc.want)
			if err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
}

func TestReadResultsErrors(t *testing.T) {
	data, labels := synthCorpus(t, t.TempDir())
	c, err := loadCorpus(data, labels)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Files[0] // cat/a.csv, 40 rows
	rows := func(score func(i int) string) []string {
		out := []string{"timestamp,value,anomaly_score"}
		for i := range a.Times {
			out = append(out, fmt.Sprintf("%s,%d.5,%s", a.Stamps[i], i, score(i)))
		}
		return out
	}
	good := rows(func(int) string { return "0.25" })
	with := func(i int, s string) []string {
		return rows(func(k int) string {
			if k == i {
				return s
			}
			return "0"
		})
	}
	tests := []struct {
		name  string
		lines []string // nil: no file
		want  string   // the error's text after "invalid results: RESULTS: "
	}{
		{"missing file", nil, "invalid results: missing results file RESULTS for data file cat/a.csv"},
		{"empty file", []string{}, `empty file: want the header "timestamp,value,anomaly_score"`},
		{"fewer rows", good[:40], "invalid results: RESULTS has 39 rows, data file cat/a.csv has 40"},
		{"more rows", append(good[:41:41], "2020-01-01 00:40:00,40.5,0"), "line 42: more rows than the 40 of data file cat/a.csv"},
		{"rows out of order", append(append(append([]string{}, good[:11]...), good[12], good[11]), good[13:]...),
			`line 12: timestamp "2020-01-01 00:11:00", but row 11 of data file cat/a.csv is "2020-01-01 00:10:00": rows must be in the data file's order`},
		{"value differs", append(append([]string{}, good[:7]...), append([]string{"2020-01-01 00:06:00,7.5,0"}, good[8:]...)...),
			`line 8: value "7.5", but row 7 of data file cat/a.csv has 6.5: rows must be in the data file's order`},
		{"NaN", with(30, "NaN"), "line 32: anomaly_score is NaN: want a number in [0, 1]"},
		{"above 1", with(30, "1.5"), "line 32: anomaly_score 1.5 is outside [0, 1]"},
		{"negative", with(2, "-0.1"), "line 4: anomaly_score -0.1 is outside [0, 1]"},
		{"+Inf", with(2, "+Inf"), "line 4: anomaly_score +Inf is outside [0, 1]"},
		{"not a number", with(2, "high"), `line 4: cannot parse anomaly_score "high"`},
		{"empty score", with(2, ""), `line 4: cannot parse anomaly_score ""`},
		{"no anomaly_score column", []string{"timestamp,value,score", "2020-01-01 00:00:00,0.5,0"},
			`line 1: header "timestamp,value,score" has no column "anomaly_score" (want "timestamp,value,anomaly_score")`},
		{"short row", append(good[:3:3], "2020-01-01 00:02:00,2.5"), "line 4: 2 fields, the header has 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a.csv")
			if tc.lines != nil {
				content := strings.Join(tc.lines, "\n")
				if len(tc.lines) > 0 {
					content += "\n"
				}
				writeFile(t, p, content)
			}
			_, err := readResults(p, a)
			want := strings.ReplaceAll(tc.want, "RESULTS", p)
			if !strings.HasPrefix(want, "invalid results: ") {
				want = "invalid results: " + p + ": " + want
			}
			if err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "a.csv")
		writeFile(t, p, strings.Join(good, "\n")+"\n")
		s, err := readResults(p, a)
		if err != nil || len(s) != 40 || s[39] != 0.25 {
			t.Errorf("got %d scores, err %v", len(s), err)
		}
	})
	t.Run("without value column, CRLF", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "a.csv")
		lines := []string{"anomaly_score,timestamp"}
		for i := range a.Times {
			lines = append(lines, "1,"+a.Stamps[i])
		}
		writeFile(t, p, strings.Join(lines, "\r\n")+"\r\n")
		if s, err := readResults(p, a); err != nil || len(s) != 40 || s[0] != 1 {
			t.Errorf("got %d scores, err %v", len(s), err)
		}
	})
}
