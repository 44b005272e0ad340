package config

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/common/model"

	"github.com/anomalyd/anomalyd/window/incident"
)

// IncidentsConfig configures the incident stage: how series are grouped
// into targets and how a group's evidence becomes incidents
// (window/incident explains the model).
type IncidentsConfig struct {
	// GroupBy are the label names whose values make a group: the series of
	// one target. A series without any of them is in no group. A rule may
	// set its own (RuleIncidentsConfig).
	GroupBy     []string       `yaml:"group_by"`
	MinScore    float64        `yaml:"min_score"`     // combined score from which a sample is evidence
	Window      int            `yaml:"window"`        // samples a series' evidence stays live
	HalfLife    model.Duration `yaml:"half_life"`     // memory of each series' rates of evidence
	FalsePerDay float64        `yaml:"false_per_day"` // chance incidents per group and day the threshold allows
	Quiet       int            `yaml:"quiet"`         // samples an incident stays open below the threshold
	Tail        float64        `yaml:"tail"`          // prior tail exponent of a series' scores
	MaxMembers  int            `yaml:"max_members"`   // series a group remembers evidence of
	MaxGroups   int            `yaml:"max_groups"`    // groups tracked; series of new groups beyond are in none
}

// DefaultIncidentsConfig groups by job and instance, Prometheus's target
// labels, with incident.DefaultParams.
var DefaultIncidentsConfig = func() IncidentsConfig {
	p := incident.DefaultParams()
	return IncidentsConfig{
		GroupBy:     []string{"job", "instance"},
		MinScore:    p.MinScore,
		Window:      p.Window,
		HalfLife:    model.Duration(p.HalfLife),
		FalsePerDay: p.FalsePerDay,
		Quiet:       p.Quiet,
		Tail:        p.Tail,
		MaxMembers:  p.MaxMembers,
		// 10 000 targets: more than one Prometheus scrapes, at about
		// 1 KiB each plus their members.
		MaxGroups: 10_000,
	}
}()

// Params returns the incident stage's settings.
func (c *IncidentsConfig) Params() incident.Params {
	return incident.Params{MinScore: c.MinScore, Window: c.Window, HalfLife: time.Duration(c.HalfLife),
		FalsePerDay: c.FalsePerDay, Quiet: c.Quiet, Tail: c.Tail, MaxMembers: c.MaxMembers}
}

// validateGroupBy checks the group_by list gb found at key
// (incidents.group_by, rules[i].incidents.group_by): label names, at least
// one, none twice, not __name__, which would make every metric of a target
// a group of its own.
func validateGroupBy(key string, gb []string) error {
	if len(gb) == 0 {
		return fmt.Errorf("%s must name at least one label", key)
	}
	for i, n := range gb {
		if !model.LabelName(n).IsValidLegacy() || n == model.MetricNameLabel {
			return fmt.Errorf("%s[%d]: %q is not a label name other than __name__", key, i, n)
		}
		if slices.Contains(gb[:i], n) {
			return fmt.Errorf("%s[%d]: %q is listed twice", key, i, n)
		}
	}
	return nil
}

func (c *IncidentsConfig) validate() error {
	if err := validateGroupBy("incidents.group_by", c.GroupBy); err != nil {
		return err
	}
	switch {
	case !(c.MinScore > 0):
		return fmt.Errorf("incidents.min_score must be positive, got %g", c.MinScore)
	case c.Window < 1:
		return fmt.Errorf("incidents.window must be at least 1, got %d", c.Window)
	case c.HalfLife < model.Duration(time.Minute):
		return fmt.Errorf("incidents.half_life must be at least 1m, got %s", c.HalfLife)
	case !(c.FalsePerDay > 0):
		return fmt.Errorf("incidents.false_per_day must be positive, got %g", c.FalsePerDay)
	case c.Quiet < 0:
		return fmt.Errorf("incidents.quiet must not be negative, got %d", c.Quiet)
	case !(c.Tail > 0):
		return fmt.Errorf("incidents.tail must be positive, got %g", c.Tail)
	case c.MaxMembers < 1:
		return fmt.Errorf("incidents.max_members must be positive, got %d", c.MaxMembers)
	case c.MaxGroups < 1:
		return fmt.Errorf("incidents.max_groups must be positive, got %d", c.MaxGroups)
	}
	return nil
}
