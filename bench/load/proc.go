package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is what /proc/PID/stat says about CPU time, in clock ticks.
type procStat struct {
	UTime, STime uint64
}

func (s procStat) Ticks() uint64 { return s.UTime + s.STime }

// parseProcStat reads utime and stime (fields 14 and 15, proc(5)) from the
// text of /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return procStat{}, fmt.Errorf("cannot parse /proc stat: no ')' after the command name in %q", truncate(b, 80))
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("cannot parse /proc stat: %d fields after the command name, want at least 13", len(f))
	}
	u, err := strconv.ParseUint(f[14-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("cannot parse /proc stat utime %q: %w", f[14-3], err)
	}
	s, err := strconv.ParseUint(f[15-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("cannot parse /proc stat stime %q: %w", f[15-3], err)
	}
	return procStat{UTime: u, STime: s}, nil
}

// procMem is the memory /proc/PID/status reports, in bytes.
type procMem struct {
	VmHWM, VmRSS int64
}

// parseProcStatus reads VmHWM (peak resident set) and VmRSS (current) from
// the text of /proc/PID/status, whose sizes are in kB (KiB).
func parseProcStatus(b []byte) (procMem, error) {
	var m procMem
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("cannot parse /proc status %s: want \"N kB\", got %q", name, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("cannot parse /proc status %s: %w", name, err)
		}
		if name == "VmHWM" {
			m.VmHWM = kb << 10
		} else {
			m.VmRSS = kb << 10
		}
		found++
	}
	if found != 2 {
		return procMem{}, fmt.Errorf("cannot parse /proc status: VmHWM or VmRSS missing (a kernel thread or a zombie?)")
	}
	return m, nil
}

// proc reads a process's counters from a /proc-like directory.
type proc struct {
	dir    string // e.g. /proc/1234
	clkTck float64
}

func newProc(pid int) (*proc, error) {
	p := &proc{dir: fmt.Sprintf("/proc/%d", pid), clkTck: clockTicks()}
	if _, err := p.stat(); err != nil {
		return nil, fmt.Errorf("cannot read process %d (-pid): %w", pid, err)
	}
	return p, nil
}

func (p *proc) stat() (procStat, error) {
	b, err := os.ReadFile(p.dir + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

func (p *proc) mem() (procMem, error) {
	b, err := os.ReadFile(p.dir + "/status")
	if err != nil {
		return procMem{}, err
	}
	return parseProcStatus(b)
}

// cpuSeconds converts ticks to seconds.
func (p *proc) cpuSeconds(ticks uint64) float64 { return float64(ticks) / p.clkTck }

// waitIdle waits until the process uses at most one clock tick (10 ms on
// Linux) of CPU in 100 ms, or for at most limit, and returns its CPU ticks
// then. Receivers that answer before they process (anomalyd hands batches
// to shard queues) keep working after the last response; this is how long.
func (p *proc) waitIdle(limit time.Duration) (uint64, error) {
	st, err := p.stat()
	if err != nil {
		return 0, err
	}
	prev := st.Ticks()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		st, err := p.stat()
		if err != nil {
			return 0, err
		}
		cur := st.Ticks()
		if cur-prev <= 1 {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

func (p *proc) cmdline() string {
	b, _ := os.ReadFile(p.dir + "/cmdline")
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: `getconf
// CLK_TCK`, 100 on Linux when that cannot run.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}

// selfCPU is this process's user+system CPU time (getrusage).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuModel is the "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, val, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown"
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
