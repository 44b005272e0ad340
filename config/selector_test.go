package config

import (
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

func TestParseSelector(t *testing.T) {
	f := func(s, want string) {
		t.Helper()
		ms, err := ParseSelector(s)
		if err != nil {
			t.Errorf("ParseSelector(%q): %s", s, err)
			return
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.String())
		}
		if g := strings.Join(got, ", "); g != want {
			t.Errorf("ParseSelector(%q)\ngot  %s\nwant %s", s, g, want)
		}
	}
	f(`http_requests_total`, `__name__="http_requests_total"`)
	f(`http_requests_total{job="api"}`, `__name__="http_requests_total", job="api"`)
	f(`{__name__=~"http_.*", job="api"}`, `__name__=~"http_.*", job="api"`)
	f(`node:cpu_seconds:rate5m`, `__name__="node:cpu_seconds:rate5m"`)
	f(`_x{_y="1"}`, `__name__="_x", _y="1"`)
	f(`{job!="a",code!~"5..",x=~'y',z="w"}`, `job!="a", code!~"5..", x=~"y", z="w"`)

	// Whitespace anywhere, trailing comma.
	f(" \t up \n{ job = \"a\" ,\n\tenv=~\"prod\" , } \n", `__name__="up", job="a", env=~"prod"`)
	f(`up{}`, `__name__="up"`)
	f(`up{job="a",}`, `__name__="up", job="a"`)

	// Quoting: Go escapes in "…" and '…', none in `…`.
	f(`{a="\"q\" \n\t\\ \u00e9\x41\101"}`, `a="\"q\" \n\t\\ éAA"`)
	f(`{a='it\'s "x"'}`, `a="it's \"x\""`)
	f("{a=`C:\\dir\\n \"x\"`}", `a="C:\\dir\\n \"x\""`)
	f(`{a="日本"}`, `a="日本"`)
	f(`{a=""}`, `a=""`)

	// UTF-8 names, Prometheus 3 style: a quoted metric name alone, quoted label names.
	f(`{"my.metric", "label.name"="x"}`, `__name__="my.metric", "label.name"="x"`)
	f(`{job="a", "my.metric"}`, `__name__="my.metric", job="a"`)

	// Several __name__ matchers in braces are allowed, as in PromQL; so is a
	// selector that matches every series.
	f(`{__name__=~"a.*", __name__!="ab"}`, `__name__=~"a.*", __name__!="ab"`)
	f(`{job=~".*"}`, `job=~".*"`)
}

func TestParseSelectorAnchored(t *testing.T) {
	ms, err := ParseSelector(`{job=~"ap|db"}`)
	if err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]bool{"ap": true, "db": true, "api": false, "xdb": false, "": false} {
		if got := ms[0].Matches(v); got != want {
			t.Errorf("job=~\"ap|db\" matches %q: %v, want %v", v, got, want)
		}
	}
	if ms[0].Type != labels.MatchRegexp || ms[0].Name != "job" {
		t.Errorf("got %v", ms[0])
	}
}

func TestParseSelectorErrors(t *testing.T) {
	f := func(s, want string) {
		t.Helper()
		ms, err := ParseSelector(s)
		if err == nil {
			t.Errorf("ParseSelector(%q): no error, got %v", s, ms)
			return
		}
		if err.Error() != want {
			t.Errorf("ParseSelector(%q)\ngot  %s\nwant %s", s, err, want)
		}
	}
	f(``, `parse error at char 1: empty selector`)
	f(`   `, `parse error at char 4: empty selector`)
	f(`{}`, `parse error at char 1: selector must contain at least one matcher`)
	f(` { } `, `parse error at char 2: selector must contain at least one matcher`)
	f(`=foo`, `parse error at char 1: expected metric name or "{", got "="`)
	f(`"foo"`, `parse error at char 1: expected metric name or "{", got "\""`)
	f(`foo bar`, `parse error at char 5: expected "{" or end of selector, got "bar"`)
	f(`foo.bar`, `parse error at char 4: expected "{" or end of selector, got "."`)
	f(`foo{job="a"} x`, `parse error at char 14: unexpected "x" after "}"`)
	f(`foo{job="a"}}`, `parse error at char 13: unexpected "}" after "}"`)
	f(`foo{`, `parse error at char 5: expected label name or "}", got end of selector`)
	f(`{job="a"`, `parse error at char 9: expected "," or "}", got end of selector`)
	f(`{job="a" env="b"}`, `parse error at char 10: expected "," or "}", got "env"`)
	f(`{job}`, `parse error at char 5: expected "=", "!=", "=~" or "!~" after label name "job", got "}"`)
	f(`{job:x="a"}`, `parse error at char 5: expected "=", "!=", "=~" or "!~" after label name "job", got ":"`)
	f(`{job`, `parse error at char 5: expected "=", "!=", "=~" or "!~" after label name "job", got end of selector`)
	f(`{job=="a"}`, `parse error at char 6: expected quoted label value, got "="`)
	f(`{job=api}`, `parse error at char 6: expected quoted label value, got "api"`)
	f(`{job=}`, `parse error at char 6: expected quoted label value, got "}"`)
	f(`{job="api}`, `parse error at char 6: unterminated quoted string`)
	f("{job=\"a\nb\"}", `parse error at char 6: unterminated quoted string`)
	f("{job=`a}", "parse error at char 6: unterminated raw string")
	f(`{job="\q"}`, `parse error at char 7: invalid escape sequence \q`)
	f(`{job='\"'}`, `parse error at char 7: invalid escape sequence \"`)
	f(`{job="\`, `parse error at char 7: invalid escape sequence \`)
	f(`{job="\xff"}`, `parse error at char 6: string is not valid UTF-8`)
	f("{job=\"\xff\"}", `parse error at char 7: string is not valid UTF-8`)
	f(`{1job="a"}`, `parse error at char 2: expected label name or "}", got "1job"`)
	f(`{job="a",,}`, `parse error at char 10: expected label name or "}", got ","`)
	f(`{,}`, `parse error at char 2: expected label name or "}", got ","`)
	f(`{ü="a"}`, `parse error at char 2: expected label name or "}", got "ü"`)
	f(`{""="a"}`, `parse error at char 2: label name must not be empty`)
	f(`foo{__name__="bar"}`, `parse error at char 5: metric name must not be set twice`)
	f(`foo{"bar"}`, `parse error at char 5: metric name must not be set twice`)
	f(`{"a", "b"}`, `parse error at char 7: metric name must not be set twice`)
	f(`{__name__="a", "b"}`, `parse error at char 16: metric name must not be set twice`)
	f(`{job=~"a(b"}`, "parse error at char 7: error parsing regexp: missing closing ): `a(b`")
	f(`{job!~"*"}`, "parse error at char 7: error parsing regexp: missing argument to repetition operator: `*`")
	// Positions count characters, not bytes.
	f(`{a="ü" b}`, `parse error at char 8: expected "," or "}", got "b"`)
}

// FuzzParseSelector checks that the parser does not panic and that what it
// accepts survives a round trip through Matcher.String, which prints PromQL.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		`up`, `up{job="a"}`, `{__name__=~"http_.*", job!~'x',}`, "{a=`b`}",
		`{"my.metric", "a.b"="c"}`, `{a="\u00e9\n\""}`, `{`, `{a=`, `{a="`, `{a="\`, "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseSelector(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "parse error at char ") {
				t.Fatalf("ParseSelector(%q): error without position: %s", s, err)
			}
			return
		}
		if len(ms) == 0 {
			t.Fatalf("ParseSelector(%q): no matchers and no error", s)
		}
		var parts []string
		for _, m := range ms {
			parts = append(parts, m.String())
		}
		s2 := "{" + strings.Join(parts, ", ") + "}"
		ms2, err := ParseSelector(s2)
		if err != nil {
			t.Fatalf("ParseSelector(%q) = %s, which does not parse: %s", s, s2, err)
		}
		if len(ms2) != len(ms) {
			t.Fatalf("%q: %d matchers, %q: %d", s, len(ms), s2, len(ms2))
		}
		for i := range ms {
			if ms[i].Type != ms2[i].Type || ms[i].Name != ms2[i].Name || ms[i].Value != ms2[i].Value {
				t.Fatalf("%q: matcher %d is %s, after a round trip %s", s, i, ms[i], ms2[i])
			}
		}
	})
}
