package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSenderRetries(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case r.Header.Get("Content-Encoding") != "snappy" || r.Header.Get("Content-Type") != "application/x-protobuf":
			http.Error(w, "bad headers", http.StatusBadRequest)
		case strings.HasPrefix(r.URL.Path, "/bad"):
			http.Error(w, "invalid", http.StatusBadRequest)
		case n <= 2:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case n == 3:
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	s := newSender(srv.URL+"/api/v1/write", 1, 1, 10, time.Second, false)
	st := newStats()
	s.send(ctx, 0, Request{Body: []byte("x"), Samples: 5}, st)
	if st.Accepted != 1 || st.Retries != 3 || st.Attempts != 4 || st.SamplesAccepted != 5 ||
		st.Codes[503] != 2 || st.Codes[429] != 1 || st.Codes[204] != 1 || len(st.Latencies) != 4 {
		t.Fatalf("after 503, 503, 429, 204: %+v", st)
	}

	bad := newSender(srv.URL+"/bad", 1, 1, 10, time.Second, false)
	st = newStats()
	bad.send(ctx, 0, Request{Body: []byte("x"), Samples: 5}, st)
	if st.Failed != 1 || st.Retries != 0 || st.SamplesFailed != 5 || st.Codes[400] != 1 {
		t.Fatalf("a 400 must fail without retry: %+v", st)
	}

	calls.Store(0) // two 503s again, but only two attempts allowed
	few := newSender(srv.URL+"/api/v1/write", 1, 1, 2, time.Second, false)
	st = newStats()
	few.send(ctx, 0, Request{Body: []byte("x"), Samples: 5}, st)
	if st.Failed != 1 || st.Attempts != 2 || st.Retries != 1 {
		t.Fatalf("attempts exhausted: %+v", st)
	}

	// A network error (nothing listens) is retried, then counted as failed.
	srv2 := httptest.NewServer(http.NotFoundHandler())
	url := srv2.URL
	srv2.Close()
	gone := newSender(url, 1, 1, 2, time.Second, false)
	st = newStats()
	gone.send(ctx, 0, Request{Body: []byte("x"), Samples: 1}, st)
	if st.Failed != 1 || st.Codes[codeNetworkError] != 2 {
		t.Fatalf("network errors: %+v", st)
	}
}

func TestRoundGate(t *testing.T) {
	g := newRoundGate(time.Time{})
	for r := 5; r < 9; r++ {
		if !g.begin(r) {
			t.Fatalf("round %d refused without a deadline", r)
		}
	}
	if n := g.rounds(5); n != 4 {
		t.Fatalf("rounds = %d, want 4", n)
	}
	g = newRoundGate(time.Now().Add(time.Hour))
	g.begin(0)
	g.begin(1) // connection A is at round 1, B still at 0
	g.deadline = time.Now().Add(-time.Second)
	if g.begin(2) {
		t.Fatalf("round 2 started after the deadline")
	}
	if !g.begin(1) { // B may finish round 1
		t.Fatalf("round 1 refused to a lagging connection")
	}
	if n := g.rounds(0); n != 2 {
		t.Fatalf("rounds = %d, want 2", n)
	}
}

func TestSumCounters(t *testing.T) {
	text := `# HELP anomaly_score x
# TYPE anomaly_score gauge
anomaly_score{job="a",instance="x y"} 0.5
anomalyd_window_samples_analysed_total 1200
anomalyd_window_samples_analysed_total_other 99
anomalyd_window_samples_not_analysed_total{reason="out_of_order"} 30
anomalyd_window_samples_not_analysed_total{reason="duplicate"} 4 1700000000000
` + "anomaly_score{x=\"" + strings.Repeat("v", 70<<10) + "\"} 1\n"
	names := [][]byte{[]byte("anomalyd_window_samples_analysed_total"), []byte("anomalyd_window_samples_not_analysed_total")}
	sum, found, err := sumCounters(strings.NewReader(text), names)
	if err != nil || !found || sum != 1234 {
		t.Fatalf("sumCounters = %v, %v, %v; want 1234", sum, found, err)
	}
	if _, found, _ := sumCounters(strings.NewReader("other 1\n"), names); found {
		t.Fatalf("found a counter in a text without it")
	}
}
