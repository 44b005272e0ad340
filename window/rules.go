package window

import (
	"reflect"
	"slices"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// Rules are the compiled series-selection rules of one config: the
// config's rules in order, then an implicit last rule that analyses every
// remaining series with the top-level detector settings. Rules are
// immutable and shared by all shards.
type Rules struct {
	rules []rule
}

type rule struct {
	// matchers select the rule's series; nil for the implicit default,
	// which matches everything.
	matchers []*labels.Matcher
	ignore   bool
	// excluded: the rule is an entry of the config's exclude list (an
	// ignore rule before every configured rule), counted apart from the
	// series a configured rule ignores.
	excluded bool
	// drivers is the series.Record.DriverSet of the rule's series: a bit
	// 1<<k per detector k enabled in params with output.driver, else 0.
	drivers uint8
	// value is output.value: the rule's series analysed as a rate have
	// the value series (seriesState.hasValue).
	value bool
	// enabled has a bit 1<<k per detector k enabled in params: the
	// detector="<kind>" series output.per_detector emits.
	enabled uint8
	params  *detectors.Params
	// paramsKey identifies params in checkpoints (paramsKey).
	paramsKey uint64
	// groupBy are the label names, sorted, whose values make the incident
	// group of the rule's series (its incidents.group_by, inherited or
	// its own); nil for a rule that ignores its series.
	groupBy []string
}

// CompileRules builds Rules from a validated config: the exclude list's
// selectors first, as ignore rules, then the configured rules. They include
// what output.driver asks of each rule's series.
func CompileRules(cfg *config.Config) *Rules {
	rs := &Rules{}
	for _, ms := range cfg.ExcludeMatchers {
		rs.rules = append(rs.rules, rule{matchers: ms, ignore: true, excluded: true, params: &cfg.Detectors})
	}
	for _, r := range cfg.Rules {
		p := r.Detectors
		ru := rule{matchers: r.Matchers, ignore: r.Action == config.ActionIgnore,
			drivers: driverSet(&p, cfg.Output.Driver), value: cfg.Output.Value, enabled: driverSet(&p, true), params: &p}
		if !ru.ignore {
			ru.groupBy = sortedGroupBy(r.Incidents.GroupBy)
		}
		rs.rules = append(rs.rules, ru)
	}
	p := cfg.Detectors
	rs.rules = append(rs.rules, rule{drivers: driverSet(&p, cfg.Output.Driver), value: cfg.Output.Value, enabled: driverSet(&p, true), params: &p,
		groupBy: sortedGroupBy(cfg.Incidents.GroupBy)})
	for i := range rs.rules {
		rs.rules[i].paramsKey = paramsKey(rs.rules[i].params)
	}
	return rs
}

// sortedGroupBy returns a sorted copy of gb, for groupKey's binary search.
func sortedGroupBy(gb []string) []string {
	gb = slices.Clone(gb)
	slices.Sort(gb)
	return gb
}

// groupKey returns, in dst[:0], the incident group key of the series with
// canonical labels under rule r: its labels that r's group_by names, in
// canonical form; empty when it has none of them (no group). The key holds
// nothing of the rule, so a group is its label set: series of two rules
// that group by the same labels, with the same values, are one group, and
// each group has one set of incident series on /metrics.
func (r *rule) groupKey(labels string, dst []byte) []byte {
	dst = dst[:0]
	if len(r.groupBy) == 0 {
		return dst
	}
	for n, v, rest := series.NextLabel(labels); n != ""; n, v, rest = series.NextLabel(rest) {
		if _, ok := slices.BinarySearch(r.groupBy, n); ok {
			dst = series.AppendLabel(dst, n, v)
		}
	}
	return dst
}

// driverSet returns p.EnabledSet() if on, else 0.
func driverSet(p *detectors.Params, on bool) uint8 {
	if !on {
		return 0
	}
	return p.EnabledSet()
}

// match returns the index of the first rule that selects the canonical
// label set labels (the implicit default matches everything).
func (rs *Rules) match(labels string) int {
	get := func(name string) string { return series.LabelValue(labels, name) }
	for i := range rs.rules[:len(rs.rules)-1] {
		if config.MatchesAll(rs.rules[i].matchers, get) {
			return i
		}
	}
	return len(rs.rules) - 1
}

// sameTreatment reports whether rule i of rs and rule j of other analyse a
// series identically, so its detector state survives a reload (whatever
// their driver series).
func (rs *Rules) sameTreatment(i int, other *Rules, j int) bool {
	a, b := &rs.rules[i], &other.rules[j]
	return a.ignore == b.ignore && a.excluded == b.excluded && reflect.DeepEqual(*a.params, *b.params)
}
