package procs

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"
)

func TestWaitListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := WaitListening(context.Background(), addr, time.Second); err != nil {
		t.Fatalf("listening address: %v", err)
	}
	l.Close()
	if err := WaitListening(context.Background(), addr, 300*time.Millisecond); err == nil {
		t.Fatal("closed address: want an error, got none")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	t0 := time.Now()
	if err := WaitListening(ctx, addr, time.Minute); err == nil || time.Since(t0) > 10*time.Second {
		t.Fatalf("cancelled: want an error at once, got %v after %s", err, time.Since(t0))
	}
}

func TestStop(t *testing.T) {
	// sleep ends on SIGTERM, well within the grace period.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	Stop(cmd, 10*time.Second)
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("SIGTERM did not end sleep: took %s", d)
	}
	if cmd.ProcessState == nil || cmd.ProcessState.Success() {
		t.Fatalf("want a process ended by a signal, got %v", cmd.ProcessState)
	}

	// A process that ignores SIGTERM (inherited across exec) is killed
	// after the grace period.
	cmd = exec.Command("sh", "-c", "trap '' TERM; exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let sh install the trap
	t0 = time.Now()
	Stop(cmd, 500*time.Millisecond)
	if d := time.Since(t0); d < 400*time.Millisecond || d > 5*time.Second {
		t.Fatalf("want a kill after the 500ms grace period, took %s", d)
	}
}
