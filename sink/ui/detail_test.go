package ui

import (
	"math"
	"net/http"
	"testing"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/series"
)

func line(n int, f func(i int) float64) []Point {
	pts := make([]Point, n)
	for i := range pts {
		pts[i] = Point{T: int64(i) * 15_000, Value: f(i)}
	}
	return pts
}

// noise is a fixed zero-mean wiggle of amplitude about 1.
func noise(i int) float64 { return math.Sin(float64(i)*2.3) + 0.5*math.Cos(float64(i)*5.1) }

func TestTrendOf(t *testing.T) {
	for _, c := range []struct {
		name string
		pts  []Point
		want string
	}{
		{"rising", line(30, func(i int) float64 { return 100 + 2*float64(i) + noise(i) }), TrendIncreasing},
		{"falling", line(30, func(i int) float64 { return 100 - 2*float64(i) + noise(i) }), TrendDecreasing},
		{"steady", line(30, func(i int) float64 { return 100 + noise(i) }), TrendFlat},
		{"noisy", line(30, func(i int) float64 { return 10 + 3*noise(i) }), TrendNoisy},
		{"constant", line(30, func(int) float64 { return 7 }), TrendFlat},
		{"zero", line(30, func(int) float64 { return 0 }), TrendFlat},
		// A drift smaller than the noise is no trend.
		{"slow drift in noise", line(30, func(i int) float64 { return 10 + 0.02*float64(i) + 3*noise(i) }), TrendNoisy},
	} {
		tr, ok := trendOf(c.pts)
		if !ok || tr.Class != c.want || tr.Samples != 30 {
			t.Errorf("%s: %+v, want %s", c.name, tr, c.want)
		}
	}
	if tr, _ := trendOf(line(30, func(i int) float64 { return 100 + 2*float64(i) })); math.Abs(tr.Slope-2.0/15) > 1e-12 || tr.Noise > 1e-9 {
		t.Errorf("exact line: slope %v noise %v, want 2/15 per second and 0", tr.Slope, tr.Noise)
	}
	if _, ok := trendOf(line(4, func(int) float64 { return 1 })); ok {
		t.Error("a class from 4 values")
	}
}

func TestSimilar(t *testing.T) {
	target := sinktest.Info("__name__", "a")
	base := func(i int) float64 { return 1e9 + 50*math.Sin(float64(i)/3) }
	tpts := line(30, base)
	infos := []*series.Info{
		sinktest.Info("__name__", "a"), // itself: left out
		sinktest.Info("__name__", "follows"),
		sinktest.Info("__name__", "mirrors"),
		sinktest.Info("__name__", "unrelated"),
		sinktest.Info("__name__", "constant"),
		sinktest.Info("__name__", "elsewhen"),
	}
	pts := [][]Point{
		tpts,
		line(30, func(i int) float64 { return 3*base(i) + 2*noise(i) }),
		line(30, func(i int) float64 { return -base(i) }),
		line(30, func(i int) float64 { return noise(i * 7) }),
		line(30, func(int) float64 { return 5 }),
		// At other times: no common samples.
		func() []Point {
			p := line(30, base)
			for i := range p {
				p[i].T += 7_000
			}
			return p
		}(),
	}
	got := similar(target, tpts, infos, pts, 2)
	if len(got) != 2 || got[0].Labels["__name__"] != "mirrors" || got[0].Correlation > -0.999999 ||
		got[1].Labels["__name__"] != "follows" || !(got[1].Correlation > 0.99) || got[1].Samples != 30 {
		t.Fatalf("similar: %+v, want mirrors (r = -1) then follows (r ≈ 1)", got)
	}
	if all := similar(target, tpts, infos, pts, 10); len(all) != 3 {
		t.Fatalf("similar: %+v, want 3 (not itself, not the constant, not the one at other times)", all)
	}
}

func TestDetail(t *testing.T) {
	a, s, top, infos := newTestAPI()
	// infos[0] and infos[1] are one group (job api); infos[1] moves with
	// infos[0], infos[2] and infos[3] are another job.
	for i, f := range []func(int) float64{
		func(i int) float64 { return 10 + float64(i) + noise(i) },
		func(i int) float64 { return 5 + 2*float64(i) },
		func(i int) float64 { return 10 + float64(i) },
	} {
		for j := range 30 {
			top.recent[infos[i].Labels] = append(top.recent[infos[i].Labels], [2]float64{float64(j * 1000), f(j)})
		}
	}
	s.Append([]series.Record{rec(infos[0], 29_000, 7, 39)})
	code, ans := getDetail(t, a, `{code="500"}`)
	if code != 200 {
		t.Fatalf("%d %+v", code, ans)
	}
	d := ans.Data
	if d.Series.Labels["code"] != "500" || d.Series.Score != 7 || len(d.Series.Points) != 30 || !d.Series.Kept {
		t.Fatalf("series %+v", d.Series)
	}
	if d.Trend.Class != TrendIncreasing {
		t.Errorf("trend %+v, want increasing", d.Trend)
	}
	if len(d.Similar) != 1 || d.Similar[0].Labels["code"] != "200" || !(d.Similar[0].Correlation > 0.9) ||
		d.Group["job"] != "api" || d.Compared != 1 {
		t.Errorf("similar %+v in group %v (%d compared), want the code 200 series of job api", d.Similar, d.Group, d.Compared)
	}
	if d.Detectors.Note == "" || d.Detectors.Per != nil {
		t.Errorf("detectors %+v: want a note that they come with the next sample", d.Detectors)
	}
	// Once the shards keep them: every detector that has a verdict.
	o := detectors.Output{Driver: detectors.KindZScore}
	o.Per[detectors.KindEWMA] = detectors.Result{Score: 3, Expected: 10, Lower: 8, Upper: 12, Ready: true}
	o.Per[detectors.KindZScore] = detectors.Result{Score: 2.5, Expected: 11, Lower: 9, Upper: 13, Ready: true}
	top.detail = map[string]*detectors.Output{infos[0].Labels: &o}
	if _, d := getDetail(t, a, `{code="500"}`); len(d.Data.Detectors.Per) != 2 || d.Data.Detectors.Per[0].Detector != "ewma" ||
		d.Data.Detectors.Per[0].Score != 3 || d.Data.Detectors.Per[0].Drives || !d.Data.Detectors.Per[1].Drives || d.Data.Detectors.Note != "" {
		t.Errorf("detectors %+v: want ewma and zscore, zscore driving", d.Data.Detectors)
	}
	if code, _ := getDetail(t, a, `{job="nothing"}`); code != http.StatusNotFound {
		t.Errorf("no match: %d, want 404", code)
	}
	if code, ans := get(t, a.Detail, "/api/v1/detail"); code != http.StatusBadRequest || ans.Status != "error" {
		t.Errorf("no match[]: %d %+v, want 400", code, ans)
	}
}
