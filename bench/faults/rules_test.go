package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/anomalyd/anomalyd/bench/internal/procs"
)

// evalRule against a real Prometheus (Debian's package, as the harness
// uses it): vector(1) holds at every step, so a range of more steps than
// one query may return comes back whole, in order, without a step lost or
// repeated at the chunk boundary.
func TestEvalRuleChunks(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (apt-get install -y prometheus): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {scrape_interval: 1h}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer procs.Stop(cmd, 10*time.Second)
	if err := procs.WaitListening(context.Background(), addr, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	from := time.Unix(1_700_000_000, 0)
	const steps = 10000 + 2500 // two chunks
	to := from.Add(steps * time.Second)
	var holds map[string][]float64
	// Listening is not yet ready to answer queries: retry briefly.
	for i := 0; ; i++ {
		holds, err = evalRule("http://"+addr, "vector(1)", from, to, time.Second)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	got := holds["{}"]
	if len(holds) != 1 || len(got) != steps+1 {
		t.Fatalf("got %d series, %d times; want 1 series ({}), %d times", len(holds), len(got), steps+1)
	}
	for i, ts := range got {
		if want := unix(from) + float64(i); ts != want {
			t.Fatalf("time %d is %v, want %v", i, ts, want)
		}
	}
}
