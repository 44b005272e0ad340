package ui

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/series"
)

// fakeTop ranks a fixed list of latest records as window.Shards.Top does,
// and holds a window of recent values for some series.
type fakeTop struct {
	recs   []series.Record
	recent map[string][][2]float64 // by labels: (t ms, value)
	detail map[string]*detectors.Output
	calls  int
}

func (f *fakeTop) Detail(info *series.Info) (int64, detectors.Output, bool, bool) {
	if f.detail == nil || f.detail[info.Labels] == nil {
		return 0, detectors.Output{}, false, false
	}
	return 1000, *f.detail[info.Labels], false, true
}

func (f *fakeTop) Recent(infos []*series.Info, fn func(i int, t int64, v float64)) {
	for i, info := range infos {
		for _, s := range f.recent[info.Labels] {
			fn(i, int64(s[0]), s[1])
		}
	}
}

func (f *fakeTop) Top(k int, keep func(*series.Info) bool) ([]series.Record, int, int) {
	f.calls++
	var out []series.Record
	anomalous := 0
	for _, r := range f.recs {
		if keep == nil || keep(r.Series) {
			out = append(out, r)
			if r.Score >= 1 {
				anomalous++
			}
		}
	}
	slices.SortStableFunc(out, func(a, b series.Record) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return strings.Compare(a.Series.Labels, b.Series.Labels)
	})
	return out[:min(k, len(out))], len(f.recs), anomalous
}

type answer struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Series []struct {
			Labels   map[string]string `json:"labels"`
			Score    float64           `json:"score"`
			Value    float64           `json:"value"`
			Expected float64           `json:"expected"`
			Detector string            `json:"detector"`
			Reason   string            `json:"reason"`
			Rate     bool              `json:"per_second"`
			Kept     bool              `json:"kept"`
			Points   [][]*float64      `json:"points"`
			Time     time.Time         `json:"time"`
		} `json:"series"`
		Total     int  `json:"series_total"`
		Anomalous int  `json:"anomalous"`
		Truncated bool `json:"truncated"`
	} `json:"data"`
}

func get(t *testing.T, h http.HandlerFunc, target string) (int, answer) {
	t.Helper()
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest(http.MethodGet, target, nil))
	var a answer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("%s: %d %q: %v", target, w.Code, w.Body.String(), err)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", target, ct)
	}
	return w.Code, a
}

func q(sel string) string { return url.QueryEscape(sel) }

func newTestAPI() (*API, *Store, *fakeTop, []*series.Info) {
	s, _, _ := newTestStore(Options{MaxSeries: 10, Points: 10, Retention: time.Hour})
	infos := []*series.Info{
		sinktest.Info("__name__", "http_requests", "job", "api", "code", "500"),
		sinktest.Info("__name__", "http_requests", "job", "api", "code", "200"),
		sinktest.Info("__name__", "node_load1", "job", "node"),
		sinktest.Info("__name__", "node_memory", "job", "node"),
	}
	top := &fakeTop{recent: map[string][][2]float64{}}
	for i, score := range []float64{7, 0.4, 2.5, 0.1} {
		r := rec(infos[i], 1000, score, 30+float64(i))
		if i == 2 {
			r.Driver = detectors.KindEntropy
		}
		r.Rate = i == 0 // a counter's rate
		top.recs = append(top.recs, r)
	}
	a := NewAPI(s, top, func() []string { return []string{"job", "instance"} })
	a.now = func() time.Time { return time.UnixMilli(10_000) }
	return a, s, top, infos
}

func TestAnomaliesNow(t *testing.T) {
	a, s, top, infos := newTestAPI()
	code, ans := get(t, a.Anomalies, "/api/v1/anomalies")
	if code != 200 || ans.Status != "success" || len(ans.Data.Series) != 4 || ans.Data.Total != 4 || ans.Data.Anomalous != 2 {
		t.Fatalf("%d %+v", code, ans)
	}
	first := ans.Data.Series[0]
	if first.Labels["code"] != "500" || first.Score != 7 || first.Value != 30 || first.Expected != 10 ||
		first.Detector != "ewma" || first.Reason != "spike above the expected band" || !first.Rate {
		t.Fatalf("first row %+v", first)
	}
	if r := ans.Data.Series[1]; r.Labels["__name__"] != "node_load1" || r.Detector != "entropy" || r.Rate {
		t.Fatalf("second row %+v", r)
	}
	// The rows shown are watched: kept from now on.
	for _, info := range infos {
		if _, ok := s.Lookup(info.Labels); !ok {
			t.Fatalf("%s not watched after being listed", info.Labels)
		}
	}
	// Paging and filtering.
	_, ans = get(t, a.Anomalies, "/api/v1/anomalies?limit=2&offset=1")
	if len(ans.Data.Series) != 2 || ans.Data.Series[0].Labels["__name__"] != "node_load1" || ans.Data.Series[1].Score != 0.4 {
		t.Fatalf("page 2 of 2: %+v", ans.Data.Series)
	}
	_, ans = get(t, a.Anomalies, "/api/v1/anomalies?match[]="+q(`{job="node"}`)+"&match[]="+q(`http_requests{code=~"2.."}`))
	if len(ans.Data.Series) != 3 || ans.Data.Anomalous != 1 {
		t.Fatalf("two selectors: %+v", ans.Data)
	}
	for _, r := range ans.Data.Series {
		if r.Labels["code"] == "500" {
			t.Fatalf("filter let %v through", r.Labels)
		}
	}
	if top.calls != 3 {
		t.Fatalf("%d scans of the shards for 3 requests", top.calls)
	}
}

// With range, the kept series are ranked by their highest score in it.
func TestAnomaliesRange(t *testing.T) {
	a, s, _, infos := newTestAPI()
	// infos[0] (a counter's rate) alarmed at 2 s, infos[2] at 8 s; both
	// then calmed down.
	r0 := rec(infos[0], 2_000, 9, 50)
	r0.Rate = true
	s.Append([]series.Record{r0, rec(infos[2], 2_000, 0.2, 1)})
	s.Append([]series.Record{rec(infos[0], 8_000, 0.1, 11), rec(infos[2], 8_000, 3, 9)})
	_, ans := get(t, a.Anomalies, "/api/v1/anomalies?range=1m")
	if len(ans.Data.Series) != 2 || ans.Data.Series[0].Score != 9 || ans.Data.Series[0].Value != 50 || !ans.Data.Series[0].Kept ||
		ans.Data.Series[1].Score != 3 || ans.Data.Total != 2 || ans.Data.Anomalous != 2 ||
		!ans.Data.Series[0].Rate || ans.Data.Series[1].Rate {
		t.Fatalf("range 1m: %+v", ans.Data)
	}
	// The last 5 s (from 5 s on, now being 10 s) hold only infos[2]'s alarm.
	_, ans = get(t, a.Anomalies, "/api/v1/anomalies?range=5s")
	if len(ans.Data.Series) != 2 || ans.Data.Series[0].Score != 3 || ans.Data.Series[1].Score != float64(float32(0.1)) {
		t.Fatalf("range 5s: %+v", ans.Data.Series)
	}
}

func TestSeries(t *testing.T) {
	a, s, top, infos := newTestAPI()
	w := rec(infos[0], 1_000, 0, 5)
	w.Warmup = true
	s.Append([]series.Record{rec(infos[0], 500, 4, 5), w, rec(infos[0], 2_500, 0.5, 12.5)})
	// The detectors' window reaches back before the series was kept: those
	// values come first, without a verdict; the rest is the store's.
	top.recent[infos[0].Labels] = [][2]float64{{-1000, 1}, {0, 2}, {500, 5}, {1_000, 5}, {2_500, 12.5}}
	code, ans := get(t, a.Series, "/api/v1/series?match[]="+q(`{code="500"}`))
	if code != 200 || len(ans.Data.Series) != 1 || len(ans.Data.Series[0].Points) != 5 {
		t.Fatalf("%d %+v", code, ans)
	}
	p := ans.Data.Series[0].Points
	for i, want := range []float64{1, 2} {
		if *p[i][0] != float64(i)-1 || *p[i][1] != want || p[i][2] != nil || p[i][5] != nil {
			t.Fatalf("point %d %v: want (%d s, %v) without a verdict", i, p[i], i-1, want)
		}
	}
	p = p[2:]
	if *p[0][0] != 0.5 || *p[0][1] != 5 || *p[0][2] != 10 || *p[0][3] != 8 || *p[0][4] != 12 || *p[0][5] != 4 {
		t.Fatalf("first point %v", p[0])
	}
	if p[1][1] == nil || *p[1][1] != 5 || p[1][2] != nil || p[1][5] != nil {
		t.Fatalf("warm-up point %v: want the value and null for the verdict", p[1])
	}
	if *p[2][0] != 2.5 || *p[2][1] != 12.5 {
		t.Fatalf("last point %v", p[2])
	}
	_, ans = get(t, a.Series, "/api/v1/series?match[]="+q(`{job="node"}`))
	if len(ans.Data.Series) != 0 {
		t.Fatalf("node series kept without an alarm or a listing: %+v", ans.Data.Series)
	}
}

// With points=true each listed series carries its plot: the detectors'
// window, then what the store keeps.
func TestAnomaliesPoints(t *testing.T) {
	a, s, top, infos := newTestAPI()
	top.recent[infos[0].Labels] = [][2]float64{{0, 1}, {500, 2}}
	top.recent[infos[2].Labels] = [][2]float64{{0, 3}}
	s.Append([]series.Record{rec(infos[0], 500, 4, 2)})
	_, ans := get(t, a.Anomalies, "/api/v1/anomalies?points=true&limit=3")
	rows := ans.Data.Series
	if len(rows) != 3 || len(rows[0].Points) != 2 || *rows[0].Points[0][1] != 1 || rows[0].Points[0][5] != nil ||
		*rows[0].Points[1][5] != 4 || len(rows[1].Points) != 1 || *rows[1].Points[0][1] != 3 || len(rows[2].Points) != 0 {
		t.Fatalf("rows %+v", rows)
	}
	if _, ans = get(t, a.Anomalies, "/api/v1/anomalies"); ans.Data.Series[0].Points != nil {
		t.Fatal("points without points=true")
	}
}

func TestAPIBadRequests(t *testing.T) {
	a, _, top, _ := newTestAPI()
	for _, c := range []struct {
		h      http.HandlerFunc
		target string
		want   string
	}{
		{a.Anomalies, "/api/v1/anomalies?limit=0", "invalid limit"},
		{a.Anomalies, "/api/v1/anomalies?limit=x", "invalid limit"},
		{a.Anomalies, "/api/v1/anomalies?limit=1001", "invalid limit"},
		{a.Anomalies, "/api/v1/anomalies?limit=600&offset=500", "invalid offset"},
		{a.Anomalies, "/api/v1/anomalies?offset=-1", "invalid offset"},
		{a.Anomalies, "/api/v1/anomalies?range=soon", "invalid range"},
		{a.Anomalies, "/api/v1/anomalies?range=0s", "invalid range"},
		{a.Anomalies, "/api/v1/anomalies?match[]=" + q(`{job=}`), "invalid match[]"},
		{a.Anomalies, "/api/v1/anomalies?match[]=", "invalid match[]"},
		{a.Anomalies, "/api/v1/anomalies?points=maybe", "invalid points"},
		{a.Series, "/api/v1/series", "no match[]"},
		{a.Series, "/api/v1/series?match[]=" + q(`up{`), "invalid match[]"},
		{a.Series, "/api/v1/series?match[]=up&limit=0", "invalid limit"},
	} {
		code, ans := get(t, c.h, c.target)
		if code != http.StatusBadRequest || ans.Status != "error" || !strings.Contains(ans.Error, c.want) {
			t.Errorf("%s: %d %+v, want 400 with %q", c.target, code, ans, c.want)
		}
	}
	if top.calls != 0 {
		t.Errorf("bad requests scanned the shards %d times", top.calls)
	}
	w := httptest.NewRecorder()
	a.Anomalies(w, httptest.NewRequest(http.MethodPost, "/api/v1/anomalies", nil))
	if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d %v", w.Code, w.Header())
	}
}

// The page and its files come from the binary, with a policy that loads
// nothing from elsewhere.
func TestPage(t *testing.T) {
	h := PageHandler()
	for _, c := range []struct {
		path, ctype, body string
		code              int
	}{
		{"/", "text/html; charset=utf-8", `<script src="static/app.js">`, 200},
		{"/static/app.js", "text/javascript; charset=utf-8", "api/v1/incidents", 200},
		{"/static/style.css", "text/css; charset=utf-8", "svg.plot", 200},
		{"/static/missing.js", "", "", 404},
		{"/other", "", "", 404},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, c.path, nil))
		if w.Code != c.code || (c.ctype != "" && w.Header().Get("Content-Type") != c.ctype) || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("%s: %d %q, want %d %q with %q", c.path, w.Code, w.Header().Get("Content-Type"), c.code, c.ctype, c.body)
		}
		if c.code == 200 && !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: no Content-Security-Policy", c.path)
		}
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{{http.MethodPost, "/api/v1/read", 404}, {http.MethodPost, "/", 405}, {http.MethodPut, "/static/app.js", 405}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, w.Code, c.code)
		}
	}
	for _, f := range []string{"index.html", "app.js", "style.css"} {
		b, err := static.ReadFile("static/" + f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ext := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", ""), ext) {
				t.Errorf("%s refers outside the binary (%q)", f, ext)
			}
		}
	}
}

type detailAnswer struct {
	Status string `json:"status"`
	Data   struct {
		Series struct {
			Labels map[string]string `json:"labels"`
			Score  float64           `json:"score"`
			Kept   bool              `json:"kept"`
			Points [][]*float64      `json:"points"`
		} `json:"series"`
		Trend     Trend `json:"trend"`
		Detectors struct {
			Note string         `json:"note"`
			Per  []detectorJSON `json:"per_detector"`
		} `json:"detectors"`
		Similar  []Similar         `json:"similar"`
		Group    map[string]string `json:"group"`
		Compared int               `json:"group_series_compared"`
	} `json:"data"`
}

func getDetail(t *testing.T, a *API, sel string) (int, detailAnswer) {
	t.Helper()
	w := httptest.NewRecorder()
	a.Detail(w, httptest.NewRequest(http.MethodGet, "/api/v1/detail?match[]="+q(sel), nil))
	var d detailAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &d); err != nil {
		t.Fatalf("%d %q: %v", w.Code, w.Body.String(), err)
	}
	return w.Code, d
}
