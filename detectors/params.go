package detectors

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
)

// Kind names one detector. The order is the order of Output.Per and of the
// `detector` label values on per-detector output series.
type Kind uint8

const (
	KindEWMA Kind = iota
	KindZScore
	KindHoltWinters
	KindSlope
	KindEntropy
	NumKinds     // number of single detectors; KindCombined follows it.
	KindCombined = NumKinds
)

var kindNames = [...]string{"ewma", "zscore", "holtwinters", "slope", "entropy", "combined"}

// String returns the value of the `detector` label for k.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("detector(%d)", uint8(k))
}

// ParseKind returns the Kind whose String is s (a `detector` label value or
// a --detector flag), and false for any other s.
func ParseKind(s string) (Kind, bool) {
	for k := range Kind(len(kindNames)) {
		if kindNames[k] == s {
			return k, true
		}
	}
	return 0, false
}

// Enabled reports whether p runs detector k. KindCombined always runs: it
// is made of the enabled ones.
func (p *Params) Enabled(k Kind) bool {
	switch k {
	case KindEWMA:
		return p.EWMA.Enabled
	case KindZScore:
		return p.ZScore.Enabled
	case KindHoltWinters:
		return p.HoltWinters.Enabled
	case KindSlope:
		return p.Slope.Enabled
	case KindEntropy:
		return p.Entropy.Enabled
	}
	return k == KindCombined
}

// EnabledSet returns a bit 1<<k for each single detector k that p runs.
func (p *Params) EnabledSet() uint8 {
	var m uint8
	for k := range NumKinds {
		if p.Enabled(k) {
			m |= 1 << k
		}
	}
	return m
}

// Params are the settings of the five detectors for one group of series.
// The zero value is not usable: start from DefaultParams and call Validate.
// Params are read-only once validated and may be shared between goroutines.
type Params struct {
	// Window is the ring-buffer length in samples used by the rolling
	// z-score and the trend slope.
	Window int `yaml:"window"`
	// Warmup is how many samples a series must have seen before any
	// detector reports a score; before that every score is 0.
	Warmup int `yaml:"warmup"`

	EWMA        EWMAParams        `yaml:"ewma"`
	ZScore      ZScoreParams      `yaml:"zscore"`
	HoltWinters HoltWintersParams `yaml:"holt_winters"`
	Slope       SlopeParams       `yaml:"slope"`
	Entropy     EntropyParams     `yaml:"entropy"`
	Calibration CalibrationParams `yaml:"calibration"`
}

// EWMAParams configure the exponentially weighted moving average with an
// exponentially weighted variance (Roberts 1959; Finch 2009, "Incremental
// calculation of weighted mean and variance").
type EWMAParams struct {
	Enabled bool `yaml:"enabled"`
	// Alpha is the weight of the newest sample, 0 < alpha < 1.
	Alpha float64 `yaml:"alpha"`
	// K is the band half-width in standard deviations.
	K float64 `yaml:"k"`
}

// ZScoreParams configure the rolling z-score over the last Params.Window samples.
type ZScoreParams struct {
	Enabled bool    `yaml:"enabled"`
	K       float64 `yaml:"k"`
}

// HoltWintersParams configure additive Holt-Winters with Brutlag (2000)
// confidence bands. The season is a duration; the seasonal index of a
// sample is floor((t mod Season) / (Season / SeasonBuckets)).
type HoltWintersParams struct {
	Enabled bool    `yaml:"enabled"`
	Alpha   float64 `yaml:"alpha"` // level smoothing, 0 < alpha < 1
	Beta    float64 `yaml:"beta"`  // trend smoothing, 0 <= beta < 1
	Gamma   float64 `yaml:"gamma"` // seasonal and deviation smoothing, 0 < gamma < 1
	// Season is the season length; 0 disables the seasonal component.
	Season model.Duration `yaml:"season"`
	// SeasonBuckets is how many slots one season is divided into (1..MaxSeasonBuckets).
	SeasonBuckets int `yaml:"season_buckets"`
	// K is Brutlag's delta: the band half-width in seasonal deviations.
	K float64 `yaml:"k"`
}

// SlopeParams configure the least-squares trend slope over the window.
type SlopeParams struct {
	Enabled bool `yaml:"enabled"`
	// K scales the band: a drift over the window of K residual standard
	// deviations scores 1.
	K float64 `yaml:"k"`
}

// EntropyParams configure the regime detector: the relative entropy of
// the histogram of the last Window values (Bins equal bins over the range
// the series has spanned) against up to Regimes histograms seen before
// (see entropyState).
type EntropyParams struct {
	Enabled bool `yaml:"enabled"`
	// Window is how many of the latest values form the histogram (4..MaxEntropyWindow).
	Window int `yaml:"window"`
	// Bins is how many equal bins the series' range is cut into (2..MaxEntropyBins).
	Bins int `yaml:"bins"`
	// Regimes is how many earlier histograms are remembered (1..MaxEntropyRegimes).
	Regimes int `yaml:"regimes"`
	// SlowScale is how many consecutive values are averaged into one value
	// of the slow scale, a second histogram of the last Window such means
	// judged the same way (0 disables it; 2..MaxEntropySlowScale).
	SlowScale int `yaml:"slow_scale"`
	// SlowRegimes is how many earlier histograms the slow scale remembers
	// (1..MaxEntropyRegimes).
	SlowRegimes int `yaml:"slow_regimes"`
	// RecordK: a value beyond every value the series has taken (its range)
	// by more than RecordK noise σ is a record and alarms at once (0
	// disables the rule). σ is the EWMA's slow mean absolute error × 1.25.
	RecordK float64 `yaml:"record_k"`
}

// CalibrationParams configure the calibration of every detector's raw
// score against the recent distribution of its own raw scores on the same
// series (an anomaly likelihood; see calib). Disabled, each Score is the
// raw distance / band half-width.
type CalibrationParams struct {
	Enabled bool `yaml:"enabled"`
	// K is the band edge in standard deviations of ln(1 + raw score)
	// above its recent mean.
	K float64 `yaml:"k"`
}

// MaxWindow bounds Params.Window so one series' ring stays small.
const MaxWindow = 1024

// MaxSeasonBuckets bounds HoltWintersParams.SeasonBuckets; the seasonal
// arrays are fixed-size so a series' state is one allocation.
const MaxSeasonBuckets = 48

// DefaultParams returns the built-in detector settings.
func DefaultParams() Params {
	return Params{
		// 30 samples = 7.5 min at a 15 s scrape interval: long enough for a
		// stable mean, short enough that a level shift becomes normal soon.
		Window: 30,
		// 10 samples: the EWMA variance and the window sums need a few
		// points before a band means anything.
		Warmup: 10,
		EWMA:   EWMAParams{Enabled: true, Alpha: 0.1, K: 4},
		ZScore: ZScoreParams{Enabled: true, K: 4},
		HoltWinters: HoltWintersParams{
			Enabled: true, Alpha: 0.1, Beta: 0.005, Gamma: 0.1,
			// One day in 24 one-hour slots (Brutlag 2000 used 1 day too).
			Season: model.Duration(24 * time.Hour), SeasonBuckets: 24, K: 4,
		},
		Slope: SlopeParams{Enabled: true, K: 4},
		// It alarms on its own when the distribution changes in a way the
		// level detectors adapt to or do not see; its confirmation keeps
		// pure noise from alarming (see entropyState).
		// 16 values in 6 bins against 16 remembered regimes; the slow
		// scale does the same with 16 means of 8 values against 8, for
		// changes too small or too slow for 16 single values.
		// A new extreme beyond the range by more than 1σ alarms.
		Entropy: EntropyParams{Enabled: true, Window: 16, Bins: 6, Regimes: 16, SlowScale: 8, SlowRegimes: 8, RecordK: 1},
		// 5 standard deviations of ln(1 + raw score): see doc.go.
		Calibration: CalibrationParams{Enabled: true, K: 5},
	}
}

// Validate checks p. Error texts name the config key under `detectors:`.
func (p *Params) Validate() error {
	if p.Window < 3 || p.Window > MaxWindow {
		return fmt.Errorf("window must be between 3 and %d, got %d", MaxWindow, p.Window)
	}
	if p.Warmup < 2 {
		return fmt.Errorf("warmup must be at least 2, got %d", p.Warmup)
	}
	if !(p.EWMA.Alpha > 0 && p.EWMA.Alpha < 1) {
		return fmt.Errorf("ewma.alpha must be in (0, 1), got %g", p.EWMA.Alpha)
	}
	if !(p.EWMA.K > 0) {
		return fmt.Errorf("ewma.k must be positive, got %g", p.EWMA.K)
	}
	if !(p.ZScore.K > 0) {
		return fmt.Errorf("zscore.k must be positive, got %g", p.ZScore.K)
	}
	hw := &p.HoltWinters
	if !(hw.Alpha > 0 && hw.Alpha < 1) {
		return fmt.Errorf("holt_winters.alpha must be in (0, 1), got %g", hw.Alpha)
	}
	if !(hw.Beta >= 0 && hw.Beta < 1) {
		return fmt.Errorf("holt_winters.beta must be in [0, 1), got %g", hw.Beta)
	}
	if !(hw.Gamma > 0 && hw.Gamma < 1) {
		return fmt.Errorf("holt_winters.gamma must be in (0, 1), got %g", hw.Gamma)
	}
	if hw.Season < 0 {
		return fmt.Errorf("holt_winters.season must not be negative, got %s", hw.Season)
	}
	if hw.SeasonBuckets < 1 || hw.SeasonBuckets > MaxSeasonBuckets {
		return fmt.Errorf("holt_winters.season_buckets must be between 1 and %d, got %d", MaxSeasonBuckets, hw.SeasonBuckets)
	}
	if hw.Season > 0 && time.Duration(hw.Season)/time.Duration(hw.SeasonBuckets) < time.Second {
		return fmt.Errorf("holt_winters.season %s divided into %d buckets gives buckets shorter than 1s", hw.Season, hw.SeasonBuckets)
	}
	if !(hw.K > 0) {
		return fmt.Errorf("holt_winters.k must be positive, got %g", hw.K)
	}
	if !(p.Slope.K > 0) {
		return fmt.Errorf("slope.k must be positive, got %g", p.Slope.K)
	}
	if en := &p.Entropy; en.Enabled && (en.Window < 4 || en.Window > MaxEntropyWindow) {
		return fmt.Errorf("entropy.window must be between 4 and %d, got %d", MaxEntropyWindow, en.Window)
	}
	if en := &p.Entropy; en.Enabled && (en.Bins < 2 || en.Bins > MaxEntropyBins) {
		return fmt.Errorf("entropy.bins must be between 2 and %d, got %d", MaxEntropyBins, en.Bins)
	}
	if en := &p.Entropy; en.Enabled && (en.Regimes < 1 || en.Regimes > MaxEntropyRegimes) {
		return fmt.Errorf("entropy.regimes must be between 1 and %d, got %d", MaxEntropyRegimes, en.Regimes)
	}
	if en := &p.Entropy; en.Enabled && en.SlowScale != 0 && (en.SlowScale < 2 || en.SlowScale > MaxEntropySlowScale) {
		return fmt.Errorf("entropy.slow_scale must be 0 (off) or between 2 and %d, got %d", MaxEntropySlowScale, en.SlowScale)
	}
	if en := &p.Entropy; en.Enabled && en.SlowScale != 0 && (en.SlowRegimes < 1 || en.SlowRegimes > MaxEntropyRegimes) {
		return fmt.Errorf("entropy.slow_regimes must be between 1 and %d, got %d", MaxEntropyRegimes, en.SlowRegimes)
	}
	if en := &p.Entropy; en.Enabled && !(en.RecordK >= 0) {
		return fmt.Errorf("entropy.record_k must be 0 (off) or positive, got %g", en.RecordK)
	}
	if p.Calibration.Enabled && !(p.Calibration.K > 0) {
		return fmt.Errorf("calibration.k must be positive, got %g", p.Calibration.K)
	}
	if !p.EWMA.Enabled && !p.ZScore.Enabled && !p.HoltWinters.Enabled && !p.Slope.Enabled && !p.Entropy.Enabled {
		return fmt.Errorf("at least one detector must be enabled")
	}
	return nil
}
