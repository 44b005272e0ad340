package ui

import (
	"cmp"
	"math"
	"slices"

	"github.com/anomalyd/anomalyd/window/series"
)

// Trend classes of a series' recent values.
const (
	TrendIncreasing = "increasing"
	TrendDecreasing = "decreasing"
	TrendFlat       = "flat"
	TrendNoisy      = "noisy"
)

const (
	// trendK: a series trends when its least-squares line moved more than
	// trendK residual deviations across its recent values, the test of
	// the slope detector at its default slope.k.
	trendK = 4
	// flatNoise: without a trend, a series is flat when its residual
	// deviation is under 5 % of its level, noisy otherwise.
	flatNoise = 0.05
	// minTrendSamples is the fewest values a class is given for.
	minTrendSamples = 5
)

// Trend is the least-squares line through a series' recent values and the
// class it gives.
type Trend struct {
	Class string `json:"class"`
	// Slope is the line's change per second; Noise the residual standard
	// deviation around it; Level the values' mean.
	Slope float64 `json:"slope_per_second"`
	Noise float64 `json:"noise"`
	Level float64 `json:"level"`
	// Samples is how many values it is drawn from.
	Samples int `json:"samples"`
}

// trendOf classifies points (oldest first) as the slope detector sees its
// window: increasing or decreasing when the line moved more than trendK
// residual deviations across them, else flat or noisy by the size of the
// residual deviation against the level. ok is false below minTrendSamples.
func trendOf(pts []Point) (Trend, bool) {
	n := len(pts)
	if n < minTrendSamples {
		return Trend{}, false
	}
	t0 := pts[0].T
	var sx, sy float64
	for _, p := range pts {
		sx += float64(p.T-t0) / 1000
		sy += p.Value
	}
	mx, my := sx/float64(n), sy/float64(n)
	var sxx, sxy, syy float64
	for _, p := range pts {
		dx, dy := float64(p.T-t0)/1000-mx, p.Value-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	var b float64
	if sxx > 0 {
		b = sxy / sxx
	}
	sd := math.Sqrt(max(syy-b*sxy, 0) / float64(n-2))
	tr := Trend{Slope: b, Noise: sd, Level: my, Samples: n}
	span := float64(pts[n-1].T-t0) / 1000
	switch moved := b * span; {
	case math.Abs(moved) > trendK*sd && moved > 0:
		tr.Class = TrendIncreasing
	case math.Abs(moved) > trendK*sd && moved < 0:
		tr.Class = TrendDecreasing
	case sd <= flatNoise*math.Abs(my):
		tr.Class = TrendFlat
	default:
		tr.Class = TrendNoisy
	}
	return tr, true
}

// Similar is a series whose recent values move with another's.
type Similar struct {
	Labels map[string]string `json:"labels"`
	// Correlation is Pearson's r over the samples both have at the same
	// times; Samples how many those are.
	Correlation float64 `json:"correlation"`
	Samples     int     `json:"samples"`
}

// minSimilarSamples is the fewest common samples a correlation is given for.
const minSimilarSamples = 8

// similar returns the candidates (infos, with their recent values, oldest
// first) whose values correlate most strongly with target's, by |r| over
// the samples at equal times, at most k, strongest first; target's own
// series (by labels) and candidates without minSimilarSamples common
// samples or with a constant stretch are left out.
func similar(target *series.Info, tpts []Point, infos []*series.Info, pts [][]Point, k int) []Similar {
	at := make(map[int64]float64, len(tpts))
	for _, p := range tpts {
		at[p.T] = p.Value
	}
	var out []Similar
	var xs, ys []float64
	for i, info := range infos {
		if info.Labels == target.Labels {
			continue
		}
		xs, ys = xs[:0], ys[:0]
		for _, p := range pts[i] {
			if x, ok := at[p.T]; ok {
				xs, ys = append(xs, x), append(ys, p.Value)
			}
		}
		if len(xs) < minSimilarSamples {
			continue
		}
		r, ok := pearson(xs, ys)
		if !ok {
			continue
		}
		out = append(out, Similar{Labels: LabelMap(info.Labels), Correlation: r, Samples: len(xs)})
	}
	slices.SortStableFunc(out, func(a, b Similar) int { return cmp.Compare(math.Abs(b.Correlation), math.Abs(a.Correlation)) })
	return out[:min(k, len(out))]
}

// pearson returns the correlation of xs and ys (two passes, so that values
// far from 0 with a small spread keep their precision); false when either
// is constant.
func pearson(xs, ys []float64) (float64, bool) {
	n := float64(len(xs))
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var sxx, syy, sxy float64
	for i := range xs {
		dx, dy := xs[i]-mx, ys[i]-my
		sxx += dx * dx
		syy += dy * dy
		sxy += dx * dy
	}
	if !(sxx > 0 && syy > 0) {
		return 0, false
	}
	r := sxy / math.Sqrt(sxx*syy)
	if math.IsNaN(r) {
		return 0, false
	}
	return max(-1, min(1, r)), true
}
