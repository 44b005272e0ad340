package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// uiHandlers is how many series the shop group has; uiStepped of them
// step at uiStepAt.
const (
	uiHandlers = 12
	uiStepped  = 9
	uiSamples  = 400
	uiStepAt   = 380
	uiStep     = 15 * time.Second
	// uiQuiet is how many series the quiet group has: 4 gauges, a counter.
	uiQuiet = 5
)

// TestUIChromium loads the built-in page in a real headless Chromium against
// a real anomalyd that was sent a group in which an incident happens: most
// series of one job and instance step up at once, beside a quiet group.
// The incidents view lists the incident; its page lists the series that
// explain it, each with a plot and a reason; the series view's filter
// narrows the list; the browser logs nothing to its console (no script
// error, no request refused by the page's content policy). Screenshots go
// to $E2E_SCREENSHOTS when set, else to the test's temporary directory.
func TestUIChromium(t *testing.T) {
	chromium := uiChromium(t)
	env := e2eNewEnv(t)
	dir := env.mkdir(t, "anomalyd")
	port := e2eFreePort(t)
	base := "http://" + port
	env.write(t, dir, "anomalyd.yml", "window:\n  publish_interval: 1s\n")
	d := env.start(t, "anomalyd", dir, env.anomalydBin, "--config.file=anomalyd.yml", "--web.listen-address="+port, "--log.level=info")
	env.waitReady(t, d, base)

	// The samples end now: the incident stage closes incidents by the wall
	// clock once nothing arrives.
	t0 := time.Now().Add(-uiSamples * uiStep).UnixMilli()
	uiFeed(t, base, t0)
	var incidentID string
	err := e2eEventually(30*time.Second, 250*time.Millisecond, func() error {
		var data struct {
			Incidents []struct {
				ID    string            `json:"id"`
				Group map[string]string `json:"group"`
			} `json:"incidents"`
		}
		if err := e2eAPI(base, "/api/v1/incidents", nil, &data); err != nil {
			return err
		}
		for _, in := range data.Incidents {
			if in.Group["job"] == "shop" {
				incidentID = in.ID
				return nil
			}
			return e2eFatal(fmt.Errorf("incident of group %v: only the shop group moved", in.Group))
		}
		return fmt.Errorf("no incident yet")
	})
	if err != nil {
		t.Fatalf("anomalyd opened no incident for the shop group: %v", err)
	}

	shots := os.Getenv("E2E_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	c := &uiBrowser{t: t, bin: chromium, profile: t.TempDir(), shots: shots}

	// Incidents view: the shop incident, open, and nothing of the quiet group.
	dom := c.load(base+"/", "incidents")
	rows := uiRows(dom, "incident")
	if len(rows) != 1 || !strings.Contains(rows[0], `job="shop"`) || !strings.Contains(rows[0], ">open<") ||
		!strings.Contains(rows[0], `href="#/incident/`+incidentID+`"`) {
		t.Fatalf("incidents view: rows %q, want the shop incident, open, linked", rows)
	}

	// Its page: the stepped series, each with a plot of its values and a
	// reason in words.
	dom = c.load(base+"/#/incident/"+incidentID, "incident")
	rows = uiRows(dom, "contributor")
	if len(rows) < uiStepped/2 {
		t.Fatalf("incident page lists %d series, want most of the %d that stepped:\n%s", len(rows), uiStepped, dom)
	}
	reason := regexp.MustCompile(`<td class="reason">([^<]+)<`)
	handler := regexp.MustCompile(`handler="/h(\d+)"`)
	for _, r := range rows {
		if h := handler.FindStringSubmatch(r); h == nil || !slices.Contains(uiSteppedHandlers(), h[1]) {
			t.Errorf("contributor %q is not one of the stepped series /h0–/h%d", r, uiStepped-1)
		}
		if !strings.Contains(r, `<svg class="plot"`) || !strings.Contains(r, `class="value"`) {
			t.Errorf("contributor without a plot of its values: %q", r)
		}
		if !strings.Contains(r, `class="band"`) || !strings.Contains(r, `class="alarm"`) {
			t.Errorf("contributor plot without its band or alarm points: %q", r)
		}
		if m := reason.FindStringSubmatch(r); m == nil || len(strings.TrimSpace(m[1])) < 5 {
			t.Errorf("contributor without a reason: %q", r)
		}
	}

	// Series view: every series; filtered to the quiet job, only those.
	dom = c.load(base+"/#/series", "series")
	all := uiRows(dom, "series-row")
	if len(all) != uiHandlers+uiQuiet {
		t.Fatalf("series view lists %d series, want all %d", len(all), uiHandlers+uiQuiet)
	}
	// Values are per second exactly on the counter: the rate anomalyd
	// analyses, about 2 a second.
	perSecond := regexp.MustCompile(`<td class="num value" title="per second[^"]*">([0-9.]+)/s</td>`)
	for _, r := range all {
		if !strings.Contains(r, `<svg class="plot"`) || !strings.Contains(r, `class="value"`) {
			t.Errorf("series without a plot of its values: %q", r)
		}
		m := perSecond.FindStringSubmatch(r)
		if counter := strings.Contains(r, "quiet_jobs_total"); counter != (m != nil) {
			t.Errorf("series row shown per second: %v, want %v (a counter): %q", m != nil, counter, r)
		} else if m != nil {
			if v, err := strconv.ParseFloat(m[1], 64); err != nil || v < 1.5 || v > 2.5 {
				t.Errorf("the counter's value %q/s, want its rate, about 2/s", m[1])
			}
		}
	}
	// Over the last hour the stepped series lead, by their alarms.
	dom = c.load(base+"/#/series?range=1h", "series-hour")
	hour := uiRows(dom, "series-row")
	if len(hour) < uiStepped {
		t.Fatalf("series view over the last hour lists %d series, want at least the %d that stepped", len(hour), uiStepped)
	}
	for _, r := range hour[:uiStepped] {
		if !strings.Contains(r, `job="shop"`) || !strings.Contains(r, `score bad`) {
			t.Errorf("series %q among the first %d over the last hour: want a stepped shop series, scored as an alarm", r, uiStepped)
		}
	}
	sel := url.QueryEscape(`{job="quiet"}`)
	dom = c.load(base+"/#/series?match="+sel, "series-filtered")
	some := uiRows(dom, "series-row")
	if len(some) != uiQuiet {
		t.Fatalf("filtered series view lists %d series, want the %d of the quiet job", len(some), uiQuiet)
	}
	for _, r := range some {
		if !strings.Contains(r, `job="quiet"`) {
			t.Errorf("filter let %q through", r)
		}
	}
	if !strings.Contains(dom, `value="{job=&quot;quiet&quot;}"`) {
		t.Error("the filter box does not show the filter")
	}

	// A series' own page: the big plot.
	dom = c.load(base+"/#/series/"+url.PathEscape(`{__name__="shop_request_latency_seconds", handler="/h0", instance="shop-1:9100", job="shop"}`), "one-series")
	if !strings.Contains(dom, `<svg class="plot" width="900"`) || !strings.Contains(dom, `<p id="verdict">`) {
		t.Errorf("series page without its plot or verdict:\n%s", dom)
	}
	if !regexp.MustCompile(`<p id="trend">.*<b>(increasing|decreasing|flat|noisy)</b>`).MatchString(dom) {
		t.Errorf("series page without its trend class:\n%s", dom)
	}
	// It alarmed, so the shards kept each detector's verdict from then on:
	// the first look shows them.
	if det := uiRows(dom, "detector-row"); len(det) != 5 || !strings.Contains(dom, "drives the combined score") {
		t.Errorf("series page of an alarmed series: %d detector rows, want 5 with the driver named:\n%s", len(det), dom)
	}
	// A series that never alarmed: the first look starts keeping them,
	// and after one more sample the page shows them.
	quiet := url.PathEscape(`{__name__="quiet_queue_depth", instance="q-1:9100", job="quiet", queue="2"}`)
	dom = c.load(base+"/#/series/"+quiet, "one-quiet-series")
	if !strings.Contains(dom, `id="detectors-note"`) {
		t.Errorf("quiet series' page on the first look: want the note that detectors' verdicts come with the next sample:\n%s", dom)
	}
	uiSend(t, base, t0, uiSamples, uiSamples+1)
	dom = c.load(base+"/#/series/"+quiet, "one-quiet-series-detectors")
	if det := uiRows(dom, "detector-row"); len(det) != 5 {
		t.Errorf("quiet series' page after a sample: %d detector rows, want 5:\n%s", len(det), dom)
	}
	dom = c.load(base+"/#/series/"+url.PathEscape(`{__name__="shop_request_latency_seconds", handler="/h0", instance="shop-1:9100", job="shop"}`), "one-series-again")
	// The stepped series move together: the most similar series of /h0
	// are others of the shop group.
	sims := uiRows(dom, "similar-row")
	if len(sims) == 0 {
		t.Fatalf("series page lists no similar series:\n%s", dom)
	}
	for _, r := range sims {
		if !strings.Contains(r, "handler=") {
			t.Errorf("similar series %q is not of the shop group", r)
		}
	}
	t.Logf("screenshots in %s", shots)
}

// uiSteppedHandlers returns the handler numbers of the series that step.
func uiSteppedHandlers() []string {
	var out []string
	for h := range uiStepped {
		out = append(out, strconv.Itoa(h))
	}
	return out
}

// uiChromium returns Debian's chromium or fails.
func uiChromium(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found on PATH (%v): install it with `apt-get install -y chromium` (make test does)", err)
	}
	return p
}

// uiFeed remote-writes uiSamples samples of two groups, 15 s apart from
// t0: the shop group's 12 latency series, uiStepped of which
// quadruple from sample uiStepAt on, and a quiet group of 4, in rounds of
// 20 samples of every series so that the groups' series move through time
// together, as a Prometheus sends them.
func uiFeed(t *testing.T, base string, t0 int64) {
	t.Helper()
	for start := 0; start < uiSamples; start += 20 {
		uiSend(t, base, t0, start, min(start+20, uiSamples))
	}
}

// uiSend remote-writes samples from to to (excluded) of every series,
// sample i at t0 + i steps.
func uiSend(t *testing.T, base string, t0 int64, from, to int) {
	t.Helper()
	type ser struct {
		labels []prompb.Label
		value  func(i int) float64
	}
	var all []ser
	for h := range uiHandlers {
		all = append(all, ser{
			labels: []prompb.Label{{Name: "__name__", Value: "shop_request_latency_seconds"}, {Name: "handler", Value: fmt.Sprintf("/h%d", h)},
				{Name: "instance", Value: "shop-1:9100"}, {Name: "job", Value: "shop"}},
			value: func(i int) float64 {
				v := 0.1 + 0.01*float64(h) + 0.004*math.Sin(float64(i)/5+float64(h)) + 0.002*float64((i*7919+h*31)%11)/11
				if h < uiStepped && i >= uiStepAt {
					v *= 4
				}
				return v
			},
		})
	}
	for q := range 4 {
		all = append(all, ser{
			labels: []prompb.Label{{Name: "__name__", Value: "quiet_queue_depth"}, {Name: "instance", Value: "q-1:9100"},
				{Name: "job", Value: "quiet"}, {Name: "queue", Value: fmt.Sprint(q)}},
			value: func(i int) float64 { return 20 + float64(q) + 2*math.Sin(float64(i)/7) + float64((i*104729+q)%5)/5 },
		})
	}
	// A counter, which the page shows per second.
	all = append(all, ser{
		labels: []prompb.Label{{Name: "__name__", Value: "quiet_jobs_total"}, {Name: "instance", Value: "q-1:9100"}, {Name: "job", Value: "quiet"}},
		value:  func(i int) float64 { return float64(30*i + i%4) },
	})
	req := &prompb.WriteRequest{}
	for _, s := range all {
		ts := prompb.TimeSeries{Labels: s.labels}
		for i := from; i < to; i++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t0 + int64(i)*uiStep.Milliseconds(), Value: s.value(i)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if code, body := e2eDo(t, http.MethodPost, base+"/api/v1/write", snappy.Encode(nil, raw)); code != http.StatusNoContent {
		t.Fatalf("remote write: %d %s", code, body)
	}
}

// uiBrowser runs headless Chromium page loads.
type uiBrowser struct {
	t                   *testing.T
	bin, profile, shots string
}

// load renders u, fails on any console message, saves a screenshot as
// name.png and returns the DOM once the page says it is ready.
func (c *uiBrowser) load(u, name string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + c.profile, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000",
		"--window-size=1400,1000", "--hide-scrollbars"}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, c.bin, append(args, "--dump-dom", u)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("chromium --dump-dom %s: %v\n%s", u, err, stderr.String())
	}
	if lines := uiConsole(stderr.String()); len(lines) > 0 {
		c.t.Errorf("%s: the browser console says:\n%s", u, strings.Join(lines, "\n"))
	}
	dom := string(out)
	if !strings.Contains(dom, `data-ready="1"`) {
		c.t.Fatalf("%s did not finish rendering:\n%s", u, dom)
	}
	if m := regexp.MustCompile(`<div id="errors"[^>]*>(.+?)</div>`).FindStringSubmatch(dom); m != nil {
		c.t.Errorf("%s shows an error: %s", u, m[1])
	}
	shot := filepath.Join(c.shots, name+".png")
	cmd = exec.CommandContext(ctx, c.bin, append(args, "--screenshot="+shot, u)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("chromium --screenshot %s: %v\n%s", u, err, b)
	}
	return dom
}

// uiConsole returns the browser's console lines in Chromium's stderr log.
func uiConsole(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, ":CONSOLE") {
			out = append(out, l)
		}
	}
	return out
}

// uiRows returns the <tr> elements of class cls (and more classes) in dom.
func uiRows(dom, cls string) []string {
	re := regexp.MustCompile(`<tr class="` + regexp.QuoteMeta(cls) + `( [^"]*)?"[^>]*>(?s:.*?)</tr>`)
	return re.FindAllString(dom, -1)
}
