package detectors

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

func TestDefaultParamsAreValid(t *testing.T) {
	p := DefaultParams()
	if err := p.Validate(); err != nil {
		t.Fatalf("DefaultParams: %v", err)
	}
}

func TestParamsValidate(t *testing.T) {
	f := func(mutate func(p *Params), want string) {
		t.Helper()
		p := DefaultParams()
		mutate(&p)
		err := p.Validate()
		if err == nil || err.Error() != want {
			t.Errorf("got error %v, want %q", err, want)
		}
	}
	f(func(p *Params) { p.Window = 2 }, "window must be between 3 and 1024, got 2")
	f(func(p *Params) { p.Window = 1025 }, "window must be between 3 and 1024, got 1025")
	f(func(p *Params) { p.Warmup = 1 }, "warmup must be at least 2, got 1")
	f(func(p *Params) { p.EWMA.Alpha = 0 }, "ewma.alpha must be in (0, 1), got 0")
	f(func(p *Params) { p.EWMA.Alpha = 1 }, "ewma.alpha must be in (0, 1), got 1")
	f(func(p *Params) { p.EWMA.Alpha = math.NaN() }, "ewma.alpha must be in (0, 1), got NaN")
	f(func(p *Params) { p.EWMA.K = 0 }, "ewma.k must be positive, got 0")
	f(func(p *Params) { p.ZScore.K = -1 }, "zscore.k must be positive, got -1")
	f(func(p *Params) { p.HoltWinters.Alpha = 1.5 }, "holt_winters.alpha must be in (0, 1), got 1.5")
	f(func(p *Params) { p.HoltWinters.Beta = -0.1 }, "holt_winters.beta must be in [0, 1), got -0.1")
	f(func(p *Params) { p.HoltWinters.Beta = 1 }, "holt_winters.beta must be in [0, 1), got 1")
	f(func(p *Params) { p.HoltWinters.Gamma = 0 }, "holt_winters.gamma must be in (0, 1), got 0")
	f(func(p *Params) { p.HoltWinters.Season = model.Duration(-time.Hour) }, "holt_winters.season must not be negative, got -1h")
	f(func(p *Params) { p.HoltWinters.SeasonBuckets = 0 }, "holt_winters.season_buckets must be between 1 and 48, got 0")
	f(func(p *Params) { p.HoltWinters.SeasonBuckets = 49 }, "holt_winters.season_buckets must be between 1 and 48, got 49")
	f(func(p *Params) { p.HoltWinters.Season = model.Duration(10 * time.Second) },
		"holt_winters.season 10s divided into 24 buckets gives buckets shorter than 1s")
	f(func(p *Params) { p.HoltWinters.K = math.Inf(-1) }, "holt_winters.k must be positive, got -Inf")
	f(func(p *Params) { p.Slope.K = 0 }, "slope.k must be positive, got 0")
	f(func(p *Params) {
		p.EWMA.Enabled, p.ZScore.Enabled, p.HoltWinters.Enabled, p.Slope.Enabled, p.Entropy.Enabled = false, false, false, false, false
	}, "at least one detector must be enabled")

	// Edges that are valid.
	ok := func(mutate func(p *Params)) {
		t.Helper()
		p := DefaultParams()
		mutate(&p)
		if err := p.Validate(); err != nil {
			t.Errorf("got %v, want valid", err)
		}
	}
	ok(func(p *Params) { p.Window, p.Warmup = 3, 2 })
	ok(func(p *Params) { p.Window = MaxWindow })
	ok(func(p *Params) { p.HoltWinters.Beta = 0 })
	ok(func(p *Params) { p.HoltWinters.Season = 0 })
	ok(func(p *Params) {
		p.HoltWinters.Season, p.HoltWinters.SeasonBuckets = model.Duration(48*time.Second), 48
	})
	ok(func(p *Params) { p.EWMA.Enabled, p.ZScore.Enabled, p.HoltWinters.Enabled = false, false, false })
}

func TestKindString(t *testing.T) {
	f := func(k Kind, want string) {
		t.Helper()
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
	f(KindEWMA, "ewma")
	f(KindZScore, "zscore")
	f(KindHoltWinters, "holtwinters")
	f(KindSlope, "slope")
	f(KindCombined, "combined")
	f(9, "detector(9)")
}

// TestParseKind: every Kind's label value parses back to it; nothing else
// parses.
func TestParseKind(t *testing.T) {
	for k := range KindCombined + 1 {
		if got, ok := ParseKind(k.String()); !ok || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), got, ok, k)
		}
	}
	for _, s := range []string{"", "EWMA", "holt_winters", "detector(7)", "combined "} {
		if k, ok := ParseKind(s); ok {
			t.Errorf("ParseKind(%q) = %v; want not ok", s, k)
		}
	}
}

// TestEnabledSet: the set follows each detector's enabled key, and
// combined is always enabled.
func TestEnabledSet(t *testing.T) {
	p := DefaultParams()
	if got := p.EnabledSet(); got != 1<<NumKinds-1 {
		t.Errorf("defaults: EnabledSet %05b, want all %d", got, NumKinds)
	}
	p.ZScore.Enabled, p.Entropy.Enabled = false, false
	if got, want := p.EnabledSet(), uint8(1<<KindEWMA|1<<KindHoltWinters|1<<KindSlope); got != want {
		t.Errorf("zscore and entropy off: EnabledSet %05b, want %05b", got, want)
	}
	if !p.Enabled(KindCombined) || p.Enabled(KindZScore) || !p.Enabled(KindSlope) || p.Enabled(KindCombined+1) {
		t.Errorf("Enabled disagrees with the params")
	}
}
