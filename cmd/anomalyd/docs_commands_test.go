package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docFiles are the files whose commands and package map must stay true.
var docFiles = func() []string {
	fs, _ := filepath.Glob("../../docs/*.md")
	return append(fs, "../../README.md")
}()

var (
	docGoTest   = regexp.MustCompile("go test (?:-[a-z]+(?:[ =][^ `-][^ `]*)? )*\\./([a-z0-9/_.]+?)(?:/\\.\\.\\.)?((?: [^`\\n]*)?)(?:`|\\n)")
	docTestFlag = regexp.MustCompile(`-(run|bench) ('[^']*'|"[^"]*"|[^ ]+)`)
	testFunc    = regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)[A-Za-z0-9_]*)\(`)
	docPkgRow   = regexp.MustCompile("^\\| `([a-z0-9/_]+)` \\|")
)

// testFuncs returns the Test, Benchmark and Fuzz functions of the package
// in dir (repository-relative), tagged test files included.
func testFuncs(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("../..", dir, "*_test.go"))
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range testFunc.FindAllStringSubmatch(string(b), -1) {
			names = append(names, m[1])
		}
	}
	return names
}

// TestDocsCommands: every `go test ./PKG [-run RE] [-bench RE]` the docs
// name runs something: the package exists and each pattern matches at
// least one of its test functions (as go test matches the first level of a
// pattern). A renamed test or a moved package fails here, not in a
// reader's terminal.
func TestDocsCommands(t *testing.T) {
	n := 0
	for _, f := range docFiles {
		md, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range docGoTest.FindAllStringSubmatch(string(md), -1) {
			pkg, flags := m[1], m[2]
			if strings.HasPrefix(pkg, ".") {
				continue // ./...: every package
			}
			n++
			funcs := testFuncs(t, pkg)
			if len(funcs) == 0 {
				t.Errorf("%s: %q: no tests in ./%s", f, m[0], pkg)
				continue
			}
			for _, fm := range docTestFlag.FindAllStringSubmatch(flags, -1) {
				pat := strings.Trim(fm[2], `'"`)
				first, _, _ := strings.Cut(pat, "/")
				re, err := regexp.Compile(first)
				if err != nil {
					t.Errorf("%s: %q: bad -%s pattern: %v", f, m[0], fm[1], err)
					continue
				}
				prefix := map[string]string{"run": "Test", "bench": "Benchmark"}[fm[1]]
				if pat == "^$" {
					continue
				}
				if !slices.ContainsFunc(funcs, func(name string) bool {
					return (strings.HasPrefix(name, prefix) || (fm[1] == "run" && strings.HasPrefix(name, "Fuzz"))) && re.MatchString(name)
				}) {
					t.Errorf("%s: %q: -%s %s matches no %s function in ./%s", f, m[0], fm[1], pat, prefix, pkg)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("found only %d go test commands in the docs: the pattern is broken", n)
	}
}

// TestDocsPackageMap: docs/design.md's package table lists exactly the
// repository's Go packages.
func TestDocsPackageMap(t *testing.T) {
	md, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	in := false
	for _, line := range strings.Split(string(md), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = line == "## Packages"
		}
		if m := docPkgRow.FindStringSubmatch(line); in && m != nil {
			documented = append(documented, m[1])
		}
	}
	var actual []string
	err = filepath.WalkDir("../..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") && p != "../..") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			dir, _ := filepath.Rel("../..", filepath.Dir(p))
			if !slices.Contains(actual, dir) {
				actual = append(actual, dir)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(documented)
	slices.Sort(actual)
	if !slices.Equal(documented, actual) {
		t.Errorf("docs/design.md lists packages\n%q\nthe repository has\n%q", documented, actual)
	}
}
