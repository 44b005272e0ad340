package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

func TestCountSamples(t *testing.T) {
	f := func(name string, msg []byte, outer uint64, want int) {
		t.Helper()
		got, err := countSamples(msg, outer)
		if err != nil || got != want {
			t.Fatalf("%s: got %d, %v; want %d", name, got, err, want)
		}
	}
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "a"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}, {Value: 2, Timestamp: 2}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "b"}}, Samples: []prompb.Sample{{Value: 0, Timestamp: 0}}}, // an all-zero sample is an empty message
	}, Metadata: []prompb.MetricMetadata{{MetricFamilyName: "a", Type: prompb.MetricMetadata_COUNTER}}}
	b, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f("rw1", b, 1, 3)
	f("empty", nil, 1, 0)
	for _, bad := range [][]byte{{0x0a}, {0x0a, 0x05, 0x12}, {0x0b}, {0xff}} {
		if _, err := countSamples(bad, 1); err == nil {
			t.Fatalf("countSamples(%x) did not fail", bad)
		}
	}
}

// TestFloorReceiver sends generated traffic of both protocols through the
// real sender to the floor handler and checks every sample is counted.
func TestFloorReceiver(t *testing.T) {
	for _, protocol := range []int{1, 2} {
		h := &floorHandler{}
		srv := httptest.NewServer(h.mux())
		cfg := testConfig(protocol)
		g := NewGenerator(cfg)
		snd := newSender(srv.URL+"/api/v1/write", protocol, cfg.Concurrency, 3, 5*time.Second, false)
		st := newStats()
		for _, rd := range g.EncodeRounds(0, 2, 0) {
			snd.sendRound(context.Background(), rd, st)
		}
		want := int64(2 * cfg.Series)
		if st.SamplesAccepted != want || h.samples.Load() != want || st.Failed != 0 {
			t.Fatalf("protocol %d: sender accepted %d, floor counted %d, %d failed; want %d", protocol, st.SamplesAccepted, h.samples.Load(), st.Failed, want)
		}
		if protocol == 2 && (st.SamplesConfirmed != want || st.Unconfirmed != 0) {
			t.Fatalf("protocol 2: %d samples confirmed by header, %d answers without; want %d", st.SamplesConfirmed, st.Unconfirmed, want)
		}
		if st.Codes[http.StatusNoContent] != st.Attempts {
			t.Fatalf("status codes %v, want only 204", st.Codes)
		}
		// The counter the harness polls for the score delay.
		p := newCounterPoller(srv.URL+"/metrics", []string{"bench_floor_samples_total"})
		v, _, _, err := p.read(context.Background())
		if err != nil || v != float64(want) {
			t.Fatalf("bench_floor_samples_total = %v, %v; want %d", v, err, want)
		}
		// The score delay against a receiver that counts as it answers.
		dm := &delayMeter{poller: p}
		rd := g.EncodeRound(2)
		err = dm.measure(context.Background(), func() int64 {
			snd.sendRound(context.Background(), rd, st)
			return int64(cfg.Series)
		}, 5*time.Second)
		if err != nil || len(dm.upper) != 1 || dm.timeouts != 0 || dm.lower[0] != 0 {
			t.Fatalf("delay: %v, %+v", err, dm)
		}
		// Garbage is a 400, not a crash.
		resp, err := http.Post(srv.URL+"/api/v1/write", "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, []byte{0xff, 0xff})))
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("garbage: %v, %v; want 400", resp, err)
		}
		resp.Body.Close()
		snd.close()
		srv.Close()
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9700": true, "localhost:1": true, "[::1]:9": true,
		"10.0.0.1:9700": false, "example.com:80": false, ":9700": false} {
		if err := checkLoopback(addr); (err == nil) != ok {
			t.Errorf("checkLoopback(%q) = %v", addr, err)
		}
	}
	o := options{url: "http://192.0.2.1:9700/api/v1/write", series: 1, samplesPerRequest: 1, concurrency: 1, protocol: 1,
		interval: time.Second, day: time.Minute, duration: time.Second, maxRounds: 1, maxAttempts: 1, maxBufferMB: 1}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("validate of a remote -url: %v", err)
	}
}
