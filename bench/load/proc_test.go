package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	f := func(line string, want procStat) {
		t.Helper()
		got, err := parseProcStat([]byte(line))
		if err != nil || got != want {
			t.Fatalf("parseProcStat(%q) = %+v, %v; want %+v", line, got, err, want)
		}
	}
	// A command name with spaces and parentheses: fields count from the last ')'.
	f("4242 (any) name) (x) S 1 4242 4242 0 -1 4194560 1234 0 5 0 731 96 0 0 20 0 9 0 12345 1234567 890 18446744073709551615\n",
		procStat{UTime: 731, STime: 96})
	f("1 (anomalyd) R 0 1 1 0 -1 0 0 0 0 0 0 0 0 0", procStat{})
	for _, bad := range []string{"", "1 anomalyd R 0", "1 (a) R 0 1 1 0 -1 0 0 0 0 0", "1 (a) R 0 1 1 0 -1 0 0 0 0 0 x 1 0"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Fatalf("parseProcStat(%q) did not fail", bad)
		}
	}
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\tanomalyd\nState:\tS (sleeping)\nVmPeak:\t 2000000 kB\nVmHWM:\t  412340 kB\nVmRSS:\t  398000 kB\nThreads:\t9\n"
	got, err := parseProcStatus([]byte(status))
	if want := (procMem{VmHWM: 412340 << 10, VmRSS: 398000 << 10}); err != nil || got != want {
		t.Fatalf("parseProcStatus = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmHWM:\t1 kB\n", "VmHWM:\t1 MB\nVmRSS:\t1 kB\n", "VmHWM:\tx kB\nVmRSS:\t1 kB\n"} {
		if _, err := parseProcStatus([]byte(bad)); err == nil {
			t.Fatalf("parseProcStatus(%q) did not fail", bad)
		}
	}
}

// TestProcFakeDir reads a fake /proc/PID directory the way a run does.
func TestProcFakeDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("stat", "77 (anomalyd) S 1 77 77 0 -1 0 0 0 0 0 250 50 0 0 20 0 9 0 1 2 3\n")
	write("status", "VmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
	write("cmdline", "anomalyd\x00--web.listen-address=127.0.0.1:19800\x00")
	p := &proc{dir: dir, clkTck: 100}
	st, err := p.stat()
	if err != nil || p.cpuSeconds(st.Ticks()) != 3 {
		t.Fatalf("stat = %+v, %v; want 3 CPU-s", st, err)
	}
	m, err := p.mem()
	if err != nil || m.VmHWM != 2<<20 || m.VmRSS != 1<<20 {
		t.Fatalf("mem = %+v, %v", m, err)
	}
	// An idle process: waitIdle returns after one 100 ms poll.
	if ticks, err := p.waitIdle(time.Second); err != nil || ticks != 300 {
		t.Fatalf("waitIdle = %d, %v; want 300", ticks, err)
	}
	if got := p.cmdline(); got != "anomalyd --web.listen-address=127.0.0.1:19800" {
		t.Fatalf("cmdline = %q", got)
	}
}
