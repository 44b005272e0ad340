package config

import (
	"fmt"
	"regexp/syntax"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
)

// ParseSelector parses a Prometheus series selector into label matchers:
//
//	http_requests_total
//	http_requests_total{job="api", code!~"2.."}
//	{__name__=~"http_.*", job='api',}
//	{"metric.with.dots", "label.with.dots"="x"}
//
// Operators are = != =~ !~; regular expressions are anchored at both ends, as
// in PromQL. Label values are written in double quotes or single quotes with
// Go escapes (\n, \", \u00e9, …), or in backticks without escapes. A trailing
// comma and whitespace between tokens are allowed. A name before the braces,
// or a quoted name alone inside them, becomes __name__="name", first; the
// other matchers keep their order. At least one matcher is required, but,
// unlike in PromQL, it may match the empty string: a rule may select every
// series.
//
// Errors give the 1-based position of the offending character:
// `parse error at char 6: expected quoted label value, got "api"`.
func ParseSelector(s string) ([]*labels.Matcher, error) {
	p := selectorParser{s: s}
	return p.parse()
}

// selectorParser is a hand-written recursive-descent parser for the
// selector subset of PromQL; the full PromQL parser (promql/parser) is a
// large dependency for one production.
type selectorParser struct {
	s   string
	pos int // byte offset of the next unread character
	ms  []*labels.Matcher
	// nameAt is the byte offset where the metric name was given as a bare
	// identifier or a quoted name in braces, or -1.
	nameAt int
}

func (p *selectorParser) parse() ([]*labels.Matcher, error) {
	p.nameAt = -1
	p.skipSpace()
	if p.eof() {
		return nil, p.errorf(p.pos, "empty selector")
	}
	if isMetricNameStart(p.s[p.pos]) {
		start := p.pos
		for !p.eof() && isMetricNameChar(p.s[p.pos]) {
			p.pos++
		}
		if err := p.setName(start, p.s[start:p.pos]); err != nil {
			return nil, err
		}
		p.skipSpace()
		if !p.eof() && p.s[p.pos] != '{' {
			return nil, p.errorf(p.pos, `expected "{" or end of selector, got %s`, p.token())
		}
	}
	if !p.eof() {
		if p.s[p.pos] != '{' {
			return nil, p.errorf(p.pos, `expected metric name or "{", got %s`, p.token())
		}
		open := p.pos
		if err := p.braces(); err != nil {
			return nil, err
		}
		p.skipSpace()
		if !p.eof() {
			return nil, p.errorf(p.pos, `unexpected %s after "}"`, p.token())
		}
		if len(p.ms) == 0 {
			return nil, p.errorf(open, "selector must contain at least one matcher")
		}
	}
	return p.ms, nil
}

// braces parses `{ matcher, … }` starting at the "{".
func (p *selectorParser) braces() error {
	p.pos++ // {
	for {
		p.skipSpace()
		if p.eof() {
			return p.errorf(p.pos, `expected label name or "}", got end of selector`)
		}
		start := p.pos
		var name string
		switch c := p.s[p.pos]; {
		case c == '}':
			p.pos++
			return nil
		case isLabelNameStart(c):
			for !p.eof() && isLabelNameChar(p.s[p.pos]) {
				p.pos++
			}
			name = p.s[start:p.pos]
		case isQuote(c):
			str, err := p.quoted()
			if err != nil {
				return err
			}
			p.skipSpace()
			if !p.eof() && (p.s[p.pos] == ',' || p.s[p.pos] == '}') {
				// {"metric.name", …}: a quoted metric name.
				if err := p.setName(start, str); err != nil {
					return err
				}
				if p.s[p.pos] == ',' {
					p.pos++
				}
				continue
			}
			if str == "" {
				return p.errorf(start, "label name must not be empty")
			}
			name = str
		default:
			return p.errorf(p.pos, `expected label name or "}", got %s`, p.token())
		}

		p.skipSpace()
		opAt := p.pos
		var typ labels.MatchType
		switch {
		case strings.HasPrefix(p.s[p.pos:], "=~"):
			typ, p.pos = labels.MatchRegexp, p.pos+2
		case strings.HasPrefix(p.s[p.pos:], "!~"):
			typ, p.pos = labels.MatchNotRegexp, p.pos+2
		case strings.HasPrefix(p.s[p.pos:], "!="):
			typ, p.pos = labels.MatchNotEqual, p.pos+2
		case strings.HasPrefix(p.s[p.pos:], "="):
			typ, p.pos = labels.MatchEqual, p.pos+1
		default:
			return p.errorf(opAt, `expected "=", "!=", "=~" or "!~" after label name %q, got %s`, name, p.token())
		}

		p.skipSpace()
		valueAt := p.pos
		if p.eof() || !isQuote(p.s[p.pos]) {
			return p.errorf(p.pos, "expected quoted label value, got %s", p.token())
		}
		value, err := p.quoted()
		if err != nil {
			return err
		}
		if name == labels.MetricName && p.nameAt >= 0 {
			return p.errorf(start, "metric name must not be set twice")
		}
		if typ == labels.MatchRegexp || typ == labels.MatchNotRegexp {
			// Check the regex as written: NewMatcher's error would quote
			// it wrapped in its anchors, ^(?s:…)$.
			if _, err := syntax.Parse(value, syntax.Perl); err != nil {
				return p.errorf(valueAt, "%v", err)
			}
		}
		m, err := labels.NewMatcher(typ, name, value)
		if err != nil {
			return p.errorf(valueAt, "%v", err)
		}
		p.ms = append(p.ms, m)

		p.skipSpace()
		switch {
		case p.eof():
			return p.errorf(p.pos, `expected "," or "}", got end of selector`)
		case p.s[p.pos] == ',':
			p.pos++
		case p.s[p.pos] == '}':
			p.pos++
			return nil
		default:
			return p.errorf(p.pos, `expected "," or "}", got %s`, p.token())
		}
	}
}

// setName adds __name__="name", first, for a metric name given at byte
// offset at.
func (p *selectorParser) setName(at int, name string) error {
	if p.nameAt >= 0 {
		return p.errorf(at, "metric name must not be set twice")
	}
	for _, m := range p.ms {
		if m.Name == labels.MetricName {
			return p.errorf(at, "metric name must not be set twice")
		}
	}
	p.nameAt = at
	m, _ := labels.NewMatcher(labels.MatchEqual, labels.MetricName, name) // = never fails
	p.ms = append([]*labels.Matcher{m}, p.ms...)
	return nil
}

// quoted reads the string literal at p.pos and returns its value.
func (p *selectorParser) quoted() (string, error) {
	start := p.pos
	q := p.s[p.pos]
	p.pos++
	if q == '`' {
		n := strings.IndexByte(p.s[p.pos:], '`')
		if n < 0 {
			return "", p.errorf(start, "unterminated raw string")
		}
		v := p.s[p.pos : p.pos+n]
		p.pos += n + 1
		if !utf8.ValidString(v) {
			return "", p.errorf(start, "string is not valid UTF-8")
		}
		return v, nil
	}
	var b strings.Builder
	for {
		if p.eof() || p.s[p.pos] == '\n' {
			return "", p.errorf(start, "unterminated quoted string")
		}
		switch c := p.s[p.pos]; c {
		case q:
			p.pos++
			if !utf8.ValidString(b.String()) { // \x escapes can make it invalid
				return "", p.errorf(start, "string is not valid UTF-8")
			}
			return b.String(), nil
		case '\\':
			r, multibyte, tail, err := strconv.UnquoteChar(p.s[p.pos:], q)
			if err != nil {
				end := min(p.pos+2, len(p.s))
				return "", p.errorf(p.pos, "invalid escape sequence %s", p.s[p.pos:end])
			}
			if multibyte {
				b.WriteRune(r)
			} else {
				b.WriteByte(byte(r))
			}
			p.pos = len(p.s) - len(tail)
		default:
			r, n := utf8.DecodeRuneInString(p.s[p.pos:])
			if r == utf8.RuneError && n == 1 {
				return "", p.errorf(p.pos, "string is not valid UTF-8")
			}
			b.WriteString(p.s[p.pos : p.pos+n])
			p.pos += n
		}
	}
}

func (p *selectorParser) eof() bool { return p.pos >= len(p.s) }

func (p *selectorParser) skipSpace() {
	for !p.eof() && strings.IndexByte(" \t\r\n", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

// token describes the input at p.pos for an error message: a whole word, or
// one character.
func (p *selectorParser) token() string {
	if p.eof() {
		return "end of selector"
	}
	if isLabelNameChar(p.s[p.pos]) {
		end := p.pos
		for end < len(p.s) && isMetricNameChar(p.s[end]) {
			end++
		}
		return strconv.Quote(p.s[p.pos:end])
	}
	r, _ := utf8.DecodeRuneInString(p.s[p.pos:])
	return strconv.Quote(string(r))
}

func (p *selectorParser) errorf(at int, format string, args ...any) error {
	return fmt.Errorf("parse error at char %d: %s", utf8.RuneCountInString(p.s[:at])+1, fmt.Sprintf(format, args...))
}

func isQuote(c byte) bool { return c == '"' || c == '\'' || c == '`' }

func isLabelNameStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

func isLabelNameChar(c byte) bool { return isLabelNameStart(c) || '0' <= c && c <= '9' }

func isMetricNameStart(c byte) bool { return isLabelNameStart(c) || c == ':' }

func isMetricNameChar(c byte) bool { return isLabelNameChar(c) || c == ':' }
