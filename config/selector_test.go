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
	f(``, `parse error: empty selector`)
	f(`   `, `parse error: empty selector`)
	f(`{}`, `parse error: selector must contain at least one matcher`)
	f(` { } `, `parse error: selector must contain at least one matcher`)
	f(`=foo`, `1:1: parse error: unexpected "="`)
	f(`"foo"`, `1:1: parse error: unexpected string "\"foo\""`)
	f(`foo bar`, `1:5: parse error: unexpected identifier "bar"`)
	f(`foo.bar`, `1:4: parse error: unexpected character: '.'`)
	f(`foo{job="a"} x`, `1:14: parse error: unexpected identifier "x"`)
	f(`foo{job="a"}}`, `1:13: parse error: unexpected character: '}'`)
	f(`foo{`, `1:5: parse error: unexpected end of input inside braces`)
	f(`{job="a" env="b"}`, `1:10: parse error: unexpected identifier "env" in label matching, expected "," or "}"`)
	f(`{job}`, `1:5: parse error: unexpected "}" in label matching, expected label matching operator`)
	f(`{job:x="a"}`, `1:5: parse error: unexpected character inside braces: ':'`)
	f(`{job=api}`, `1:6: parse error: unexpected identifier "api" in label matching, expected string`)
	f(`{job="api}`, `1:6: parse error: unterminated quoted string`)
	f("{job=\"a\nb\"}", `1:6: parse error: unterminated quoted string`)
	f("{job=`a}", "1:6: parse error: unterminated raw string")
	f(`{job="\q"}`, `1:6: parse error: unknown escape sequence U+0071 'q'`)
	f(`{1job="a"}`, `1:2: parse error: unexpected character inside braces: '1'`)
	f(`{job="a",,}`, `1:10: parse error: unexpected "," in label matching, expected identifier or "}"`)
	f(`{ü="a"}`, `1:2: parse error: unexpected character inside braces: 'ü'`)
	f(`{job=~"a(b"}`, "1:2: parse error: error parsing regexp: missing closing ): `a(b`")
	f(`up[5m]`, `1:3: parse error: unexpected "["`)
	f(`rate(up[5m])`, `1:5: parse error: unexpected "("`)
	// Columns count bytes, as in PromQL.
	f(`{a="ü" b}`, `1:9: parse error: unexpected identifier "b" in label matching, expected "," or "}"`)
	f("{a=\"x\",\n b}", `2:3: parse error: unexpected "}" in label matching, expected label matching operator`)

	// PromQL's query engine rejects these after parsing; here they are
	// configuration errors.
	f(`{""="a"}`, `parse error: label name must not be empty`)
	f(`{job="\xff"}`, `parse error: value of label "job" is not valid UTF-8`)
	f(`foo{__name__="bar"}`, `parse error: metric name must not be set twice: "bar" or "foo"`)
	f(`foo{"bar"}`, `parse error: metric name must not be set twice: "bar" or "foo"`)
	f(`{"a", "b"}`, `parse error: metric name must not be set twice: "a" or "b"`)
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
			if !strings.Contains(err.Error(), "parse error") {
				t.Fatalf("ParseSelector(%q): error does not say it is a parse error: %s", s, err)
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
