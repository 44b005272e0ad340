package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseIncidentsCSV(t *testing.T) {
	in := `timestamp,incident_score,open,series
1000.000,0.2,0,1
1001.000,1.5,1,4
1002.000,2.5,1,6
1003.000,0.9,1,5
1004.000,0.3,0,2

1005.500,1.1,1,3
`
	ops, ps, err := parseIncidentsCSV(strings.NewReader(in), nodeT, "node")
	if err != nil {
		t.Fatal(err)
	}
	want := []opening{
		{ID: "node-1", Target: nodeT, Start: at(1001), End: at(1003), Peak: 2.5, Series: 6},
		{ID: "node-2", Target: nodeT, Start: at(1005.5), End: at(1005.5), Peak: 1.1, Series: 3, Open: true},
	}
	if len(ops) != len(want) {
		t.Fatalf("openings %+v, want %+v", ops, want)
	}
	for i := range want {
		o, w := ops[i], want[i]
		if o.ID != w.ID || o.Target != w.Target || !o.Start.Equal(w.Start) || !o.End.Equal(w.End) || o.Peak != w.Peak || o.Series != w.Series || o.Open != w.Open {
			t.Errorf("opening %d: %+v, want %+v", i, o, w)
		}
	}
	if len(ps) != 6 || ps[2] != (point{1002, 2.5}) {
		t.Errorf("scores %v, want 6 points, the third {1002 2.5}", ps)
	}
	for _, bad := range []string{
		"timestamp,value\n1000,1\n",
		"timestamp,incident_score,open,series\n1000,1,2,3\n",
		"timestamp,incident_score,open,series\nyesterday,1,1,3\n",
		"",
	} {
		if _, _, err := parseIncidentsCSV(strings.NewReader(bad), nodeT, "node"); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	// The backtest writes its input's time format.
	ops, _, err = parseIncidentsCSV(strings.NewReader("timestamp,incident_score,open,series\n2026-12-06T10:00:01.5Z,1,1,2\n"), nodeT, "n")
	if err != nil || len(ops) != 1 || !ops[0].Start.Equal(time.Date(2026, 12, 6, 10, 0, 1, 5e8, time.UTC)) {
		t.Errorf("RFC 3339: %+v, %v", ops, err)
	}
}

func TestRunEnd(t *testing.T) {
	rep := &report{Begin: at(0)}
	rep.Settings.Quiet, rep.Settings.Gap = "10m", "4m"
	if e, err := runEnd(rep); err != nil || !e.Equal(at(600)) {
		t.Errorf("no faults: %v, %v; want the begin + -quiet", e, err)
	}
	rep.Faults = []faultResult{{fault: fault{Start: at(600)}}, {fault: fault{Start: at(840)}}}
	if e, err := runEnd(rep); err != nil || !e.Equal(at(1080)) {
		t.Errorf("faults: %v, %v; want the last start + -gap", e, err)
	}
	rep.End = at(1081)
	if e, err := runEnd(rep); err != nil || !e.Equal(at(1081)) {
		t.Errorf("recorded: %v, %v; want the report's end", e, err)
	}
}

func TestOfflineFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-replay", t.TempDir(), "-export", t.TempDir()},
		{"-from-kept", t.TempDir()},
		{"-replay", t.TempDir()}, // no faults.json
	} {
		var out, errs bytes.Buffer
		if code := run(args, &out, &errs); code != 1 || errs.Len() == 0 {
			t.Errorf("%q: exit %d, %q; want 1 and an error", args, code, errs.String())
		}
	}
}

// TestReplay replays a made-up export through a freshly built anomalyd's
// backtest: every series of node steps up by 20 standard deviations at its
// fault's start, which must open an incident on node at once; shop's
// series never move, so its fault is not caught.
func TestReplay(t *testing.T) {
	goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first on PATH
	if err != nil {
		t.Fatal("cannot build anomalyd:", err)
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "anomalyd")
	if out, err := exec.Command(goBin, "build", "-o", bin, "github.com/anomalyd/anomalyd/cmd/anomalyd").CombinedOutput(); err != nil {
		t.Fatalf("go build anomalyd: %v\n%s", err, out)
	}

	// 10 minutes at 1 s; settled after 2, faults at minute 7 for 1, 1 of
	// recovery.
	const t0, n, step = 1796550000.0, 600, 420
	dir := filepath.Join(tmp, "export")
	rng := rand.New(rand.NewPCG(1, 2))
	for _, job := range []string{"node", "shop"} {
		if err := os.MkdirAll(filepath.Join(dir, job), 0o755); err != nil {
			t.Fatal(err)
		}
		for k := range 8 {
			var b bytes.Buffer
			b.WriteString("timestamp,value\n")
			for i := range n {
				v := 100 + rng.NormFloat64()
				if job == "node" && i >= step {
					v += 20
				}
				b.Write(appendRow(nil, point{t0 + float64(i) + 0.25, v}))
			}
			if err := os.WriteFile(filepath.Join(dir, job, fmt.Sprintf("g%d.csv", k)), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	node, shop := target{"node", "n:1"}, target{"shop", "s:1"}
	rep := &report{Date: fromUnix(t0), Begin: fromUnix(t0), End: fromUnix(t0 + n)}
	rep.Settings.ScrapeInterval, rep.Settings.Settle, rep.Settings.Recovery, rep.Settings.Quiet = "1s", "2m", "1m", "7m"
	rep.Incidents.Targets = []target{node, shop}
	rep.Faults = []faultResult{
		{fault: fault{Name: "cpu", Start: fromUnix(t0 + step), End: fromUnix(t0 + step + 60), Target: node}},
		{fault: fault{Name: "latency", Start: fromUnix(t0 + step), End: fromUnix(t0 + step + 60), Target: shop}},
	}
	b, _ := json.Marshal(rep)
	if err := os.WriteFile(filepath.Join(dir, "faults.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}

	js := filepath.Join(tmp, "replay.json")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-replay", dir, "-anomalyd", bin, "-json", js}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Log(stdout.String())
	var rr replayReport
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &rr) != nil {
		t.Fatalf("-json: %s, %v", b, err)
	}
	st := rr.Incidents.Stage
	if len(st.Faults) != 2 || st.Caught != 1 {
		t.Fatalf("caught %d of %d faults, want 1 of 2", st.Caught, len(st.Faults))
	}
	if f := st.Faults[0]; !f.Caught || f.Opened == nil || f.Opened.Target != node || f.DelaySamples > 1 {
		t.Errorf("cpu: %+v, want an incident on node within a sample", f)
	}
	if f := st.Faults[1]; f.Caught || f.Opened != nil {
		t.Errorf("latency: %+v, want no incident on shop", f)
	}
	if st.Quiet.Openings != 0 {
		t.Errorf("%d false incidents, want none: %+v", st.Quiet.Openings, st.Quiet.List)
	}
	if rr.Files != 16 || !strings.Contains(stdout.String(), "faults caught: 1 of 2") {
		t.Errorf("%d files, want 16; output:\n%s", rr.Files, stdout.String())
	}
}
