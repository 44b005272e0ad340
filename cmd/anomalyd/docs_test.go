package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// docOperationsFile documents the flags in two tables: the header row of
// the server's starts with "| flag |", that of `anomalyd backtest` with
// "| backtest flag |". Each row's first cell is one `--flag` in backticks,
// its second the default, whose first backticked value (if any) is the
// default the flag set prints.
const docOperationsFile = "../../docs/operations.md"

type docFlag struct {
	line int
	def  string // first backticked value of the default cell, or ""
}

var (
	docFlagCell  = regexp.MustCompile("^`--([a-z0-9][a-z0-9.-]*)`$")
	docBacktick  = regexp.MustCompile("`([^`]*)`")
	usageFlag    = regexp.MustCompile(`^  -([a-z0-9][a-z0-9.-]*)`)
	usageDefault = regexp.MustCompile(`\(default "?(.*?)"?\)$`)
)

// readDocFlags returns the rows of the table whose header's first cell is
// header.
func readDocFlags(t *testing.T, header string) map[string]docFlag {
	t.Helper()
	md, err := os.ReadFile(docOperationsFile)
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]docFlag{}
	inTable := false
	for i, line := range strings.Split(string(md), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		if !inTable {
			inTable = cells[0] == header
			continue
		}
		if strings.Trim(cells[0], "-: ") == "" {
			continue
		}
		m := docFlagCell.FindStringSubmatch(cells[0])
		if m == nil || len(cells) < 3 {
			t.Errorf("%s:%d: want | `--flag` | default | meaning |, got %q", docOperationsFile, i+1, line)
			continue
		}
		f := docFlag{line: i + 1}
		if d := docBacktick.FindStringSubmatch(cells[1]); d != nil {
			f.def = d[1]
		}
		flags[m[1]] = f
	}
	if len(flags) == 0 {
		t.Fatalf("%s has no table whose header starts with | %s |", docOperationsFile, header)
	}
	return flags
}

// usageFlags runs anomalyd with args (ending in -h) and returns the flags
// its usage text lists, with the defaults it prints ("" when none).
func usageFlags(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("anomalyd %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	flags := map[string]string{}
	var last string
	for line := range strings.Lines(errOut.String()) {
		line = strings.TrimRight(line, "\n")
		if m := usageFlag.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = ""
			continue
		}
		if m := usageDefault.FindStringSubmatch(line); m != nil && last != "" {
			flags[last] = m[1]
		}
	}
	if len(flags) == 0 {
		t.Fatalf("anomalyd %s printed no flags:\n%s", strings.Join(args, " "), errOut.String())
	}
	return flags
}

// compareFlags checks the documented flags against the real ones in both
// directions, and each documented default against the printed one (a
// boolean's false and an empty string print none).
func compareFlags(t *testing.T, what string, doc map[string]docFlag, real map[string]string) {
	t.Helper()
	for name, def := range real {
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s: --%s is not documented in %s", what, name, docOperationsFile)
			continue
		}
		if want := def; d.def != want && !(want == "" && (d.def == "false" || d.def == "")) {
			t.Errorf("%s:%d: %s --%s: documented default %q, the flag's is %q", docOperationsFile, d.line, what, name, d.def, want)
		}
	}
	for name, d := range doc {
		if _, ok := real[name]; !ok {
			t.Errorf("%s:%d: %s documents --%s, which is not a flag", docOperationsFile, d.line, what, name)
		}
	}
}

func TestDocFlags(t *testing.T) {
	compareFlags(t, "anomalyd", readDocFlags(t, "flag"), usageFlags(t, "-h"))
}

func TestDocBacktestFlags(t *testing.T) {
	compareFlags(t, "anomalyd backtest", readDocFlags(t, "backtest flag"), usageFlags(t, "backtest", "-h"))
}
