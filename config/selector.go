package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// selectorParser is PromQL's own parser, so that a selector means in
// anomalyd's configuration what it means in a Prometheus query, and its
// errors read as promtool's do. It keeps no state between calls.
var selectorParser = parser.NewParser(parser.Options{})

// ParseSelector parses a Prometheus series selector into label matchers:
//
//	http_requests_total
//	http_requests_total{job="api", code!~"2.."}
//	{__name__=~"http_.*", job='api',}
//	{"metric.with.dots", "label.with.dots"="x"}
//
// The grammar, quoting and regular expressions (anchored at both ends) are
// PromQL's, and so are the errors, which give line and column:
// `1:6: parse error: unexpected identifier "api" in label matching, expected string`.
//
// PromQL leaves some checks to its query engine; ParseSelector makes them
// here, as configuration errors. At least one matcher is required, but,
// unlike in a PromQL query, it may match the empty string: a rule may select
// every series. The metric name may be set once (two different names match
// nothing). Label names must not be empty and label values must be valid
// UTF-8, which every ingested series is. Matchers on __name__ come first,
// the others keep their order: rules are tried in order, and the name is
// the matcher most likely to reject a series.
func ParseSelector(s string) ([]*labels.Matcher, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("parse error: empty selector")
	}
	ms, err := selectorParser.ParseMetricSelector(s)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, errors.New("parse error: selector must contain at least one matcher")
	}
	name := ""
	for _, m := range ms {
		switch {
		case m.Name == "":
			return nil, errors.New("parse error: label name must not be empty")
		case !utf8.ValidString(m.Value):
			return nil, fmt.Errorf("parse error: value of label %q is not valid UTF-8", m.Name)
		case m.Name == labels.MetricName && m.Type == labels.MatchEqual:
			if name != "" {
				return nil, fmt.Errorf("parse error: metric name must not be set twice: %q or %q", name, m.Value)
			}
			name = m.Value
		}
	}
	out := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if m.Name == labels.MetricName {
			out = append(out, m)
		}
	}
	for _, m := range ms {
		if m.Name != labels.MetricName {
			out = append(out, m)
		}
	}
	return out, nil
}
