package remoteread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/sink/wire"
	"github.com/anomalyd/anomalyd/window"
)

const t0 = int64(1_700_000_000_000)

// Both response types give the same answer: per query, the samples of the
// series with exactly the asked labels, sorted, within the range.
func TestReadBothResponseTypes(t *testing.T) {
	for _, samplesOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("samples_only=%v", samplesOnly), func(t *testing.T) {
			f, srv := newFakeProm(t)
			f.samples = samplesOnly
			a := lbls("__name__", "up", "job", "a")
			b := lbls("__name__", "up", "job", "b")
			all := steps(t0, 1000, 15_000, func(i int) float64 { return float64(i % 7) })
			all[500].V = math.Float64frombits(value.StaleNaN) // history keeps stale markers
			f.add(a, all)
			f.add(b, steps(t0, 10, 60_000, func(i int) float64 { return -float64(i) }))
			// Matches a's equality matchers too, and must not leak into a's answer.
			f.add(lbls("__name__", "up", "instance", "x", "job", "a"), steps(t0+1, 1000, 15_000, func(int) float64 { return 99 }))
			c := testClient(t, srv.URL)
			qs := []Query{
				{Labels: b, Start: t0, End: t0 + 1e9},
				{Labels: a, Start: t0 + 100*15_000 + 1, End: t0 + 800*15_000}, // starts between samples
				{Labels: lbls("__name__", "down"), Start: t0, End: t0 + 1e9},
			}
			out, st, err := c.Read(t.Context(), qs, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			if st.Streamed == samplesOnly || st.Code != http.StatusOK {
				t.Errorf("stats %+v: want streamed=%v, code 200", st, !samplesOnly)
			}
			if len(out) != 3 {
				t.Fatalf("got %d results, want 3", len(out))
			}
			want := []window.Sample(steps(t0, 10, 60_000, func(i int) float64 { return -float64(i) }))
			if !slices.Equal(out[0], want) {
				t.Errorf("query 0: got %d samples %v…, want %v", len(out[0]), head(out[0]), head(want))
			}
			if got, want := out[1], all[101:801]; !sameSamples(got, want) {
				t.Errorf("query 1: got %d samples %v…, want %d %v…", len(got), head(got), len(want), head(want))
			}
			if len(out[2]) != 0 {
				t.Errorf("query 2 (no such series): got %d samples", len(out[2]))
			}
			if st.Samples != 710 {
				t.Errorf("stats count %d samples, want 710", st.Samples)
			}
			checkRequest(t, f, qs)
		})
	}
}

// checkRequest checks what Prometheus's remote-read client sends.
func checkRequest(t *testing.T, f *fakeProm, qs []Query) {
	t.Helper()
	f.mu.Lock()
	h, rr := f.header, f.req
	f.mu.Unlock()
	for k, want := range map[string]string{
		"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf", "User-Agent": "anomalyd/test",
		"X-Prometheus-Remote-Read-Version": "0.1.0", "X-Scope-Orgid": "tenant-1",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s: got %q, want %q", k, got, want)
		}
	}
	wantTypes := []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES}
	if !slices.Equal(rr.AcceptedResponseTypes, wantTypes) {
		t.Errorf("accepted_response_types: got %v, want %v", rr.AcceptedResponseTypes, wantTypes)
	}
	if len(rr.Queries) != len(qs) {
		t.Fatalf("got %d queries, want %d", len(rr.Queries), len(qs))
	}
	for i, q := range rr.Queries {
		var ms []string
		for _, m := range q.Matchers {
			ms = append(ms, fmt.Sprintf("%s%s%q", m.Name, map[prompb.LabelMatcher_Type]string{prompb.LabelMatcher_EQ: "="}[m.Type], m.Value))
		}
		var want []string
		for _, l := range toProm(qs[i].Labels) {
			want = append(want, fmt.Sprintf("%s=%q", l.Name, l.Value))
		}
		if !slices.Equal(ms, want) || q.StartTimestampMs != qs[i].Start || q.EndTimestampMs != qs[i].End {
			t.Errorf("query %d: got %v [%d, %d], want %v [%d, %d]", i, ms, q.StartTimestampMs, q.EndTimestampMs, want, qs[i].Start, qs[i].End)
		}
	}
}

func head(s []window.Sample) []window.Sample { return s[:min(3, len(s))] }

// sameSamples compares by bits, so that stale markers compare equal.
func sameSamples(a, b []window.Sample) bool {
	return slices.EqualFunc(a, b, func(x, y window.Sample) bool {
		return x.T == y.T && math.Float64bits(x.V) == math.Float64bits(y.V)
	})
}

// A series split over frames, with overlapping chunks (out-of-order data in
// Prometheus), comes out sorted with one sample per timestamp.
func TestStreamedFramesMergeSortAndDedup(t *testing.T) {
	s := steps(t0, 300, 1000, func(i int) float64 { return float64(i) })
	chunks := xorChunks(s, 100)
	// A chunk overlapping the last one, sent first: where timestamps
	// collide, the first sample seen is kept.
	chunks = append(xorChunks(steps(t0+250_000, 100, 1000, func(i int) float64 { return 1e6 }), 100), chunks...)
	key := lbls("__name__", "x")
	var body []byte
	for i, c := range chunks {
		qi := int64(0)
		if i == 1 {
			// A frame for another query in between.
			resp := prompb.ChunkedReadResponse{QueryIndex: 1, ChunkedSeries: []*prompb.ChunkedSeries{{Labels: toProm(lbls("__name__", "y")), Chunks: xorChunks(s[:5], 100)}}}
			b, _ := resp.Marshal()
			body = wire.AppendFrame(body, b)
		}
		resp := prompb.ChunkedReadResponse{QueryIndex: qi, ChunkedSeries: []*prompb.ChunkedSeries{{Labels: toProm(key), Chunks: []prompb.Chunk{c}}}}
		b, _ := resp.Marshal()
		body = wire.AppendFrame(body, b)
	}
	qs := []Query{{Labels: key, Start: t0, End: t0 + 1e9}, {Labels: lbls("__name__", "y"), Start: t0 + 2000, End: t0 + 3000}}
	out := make([][]window.Sample, 2)
	var st ReadStats
	if err := decodeStreamed(bytes.NewReader(body), qs, out, &reservation{limit: 1 << 30}, DefaultMaxFrameBytes, "", &st); err != nil {
		t.Fatal(err)
	}
	if len(out[0]) != 300+50 {
		t.Fatalf("got %d samples, want 350 (300 + 50 new timestamps of the overlapping chunk)", len(out[0]))
	}
	for i := 1; i < len(out[0]); i++ {
		if out[0][i].T <= out[0][i-1].T {
			t.Fatalf("not sorted and unique at %d: %v %v", i, out[0][i-1], out[0][i])
		}
	}
	if got := out[0][250]; got != (window.Sample{T: t0 + 250_000, V: 1e6}) {
		t.Fatalf("colliding timestamp: got %v, want the first sample seen", got)
	}
	if !slices.Equal(out[1], s[2:4]) {
		t.Fatalf("query 1: got %v, want %v", out[1], s[2:4])
	}
}

// Every way a response can be wrong is an error, with the right retry class.
func TestReadErrors(t *testing.T) {
	key := lbls("__name__", "x")
	qs := []Query{{Labels: key, Start: t0, End: t0 + 1e9}}
	tests := []struct {
		name      string
		limit     int64
		maxFrame  uint64
		fault     func(n int64, w http.ResponseWriter) bool
		corrupt   func([]byte) []byte
		samples   bool
		wantErr   string
		retryable bool
	}{
		{name: "CRC mismatch", corrupt: func(f []byte) []byte { f[len(f)-1] ^= 1; return f },
			wantErr: "corrupted frame", retryable: true},
		{name: "frame over the frame limit", maxFrame: 100,
			wantErr: "exceeds the limit of 100 bytes"},
		{name: "truncated stream", corrupt: func(f []byte) []byte { return f[:len(f)/2] },
			wantErr: "unexpected EOF", retryable: true},
		{name: "streamed response over max_bytes", limit: 1000,
			wantErr: "exceeds warmup.max_bytes"},
		{name: "samples response over max_bytes", limit: 1000, samples: true,
			wantErr: "exceeds warmup.max_bytes"},
		{name: "query_index out of range", corrupt: func([]byte) []byte {
			resp := prompb.ChunkedReadResponse{QueryIndex: 7}
			b, _ := resp.Marshal()
			return wire.AppendFrame(nil, b)
		}, wantErr: "query_index 7 for 1 queries", retryable: true},
		{name: "snappy header claims 1 GiB", fault: func(_ int64, w http.ResponseWriter) bool {
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Write(append(binary.AppendUvarint(nil, 1<<30), 0, 0, 0))
			return true
		}, wantErr: "response of 1073741824 bytes: response exceeds warmup.max_bytes"},
		{name: "500", fault: status(500, "storage is sad\nsecond line"), wantErr: "500 Internal Server Error: storage is sad", retryable: true},
		{name: "429", fault: status(429, "slow down"), wantErr: "429", retryable: true},
		{name: "400", fault: status(400, "bad matcher"), wantErr: "400 Bad Request: bad matcher"},
		{name: "HTML page", fault: func(_ int64, w http.ResponseWriter) bool {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>"))
			return true
		}, wantErr: `Content-Type "text/html"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakeProm(t)
			f.add(key, steps(t0, 1000, 1000, func(i int) float64 { return float64(i) }))
			f.fault, f.corrupt, f.samples = tc.fault, tc.corrupt, tc.samples
			c := testClient(t, srv.URL)
			if tc.maxFrame > 0 {
				c.maxFrame = tc.maxFrame
			}
			limit := int64(64 << 20)
			if tc.limit > 0 {
				limit = tc.limit
			}
			_, _, err := c.Read(t.Context(), qs, limit)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
			if retryable(err) != tc.retryable {
				t.Fatalf("retryable(%v) = %v, want %v", err, !tc.retryable, tc.retryable)
			}
		})
	}
}

func status(code int, body string) func(int64, http.ResponseWriter) bool {
	return func(_ int64, w http.ResponseWriter) bool {
		http.Error(w, body, code)
		return true
	}
}

// A refused connection is an error that may pass.
func TestReadConnectionRefused(t *testing.T) {
	_, srv := newFakeProm(t)
	c := testClient(t, srv.URL)
	srv.Close()
	_, st, err := c.Read(t.Context(), []Query{{Labels: lbls("__name__", "x"), Start: 0, End: 1}}, 1<<20)
	if err == nil || !retryable(err) || st.Code != 0 {
		t.Fatalf("got %v (code %d), want a retryable error without status", err, st.Code)
	}
}

func TestSortUnique(t *testing.T) {
	f := func(in, want []window.Sample) {
		t.Helper()
		if got := sortUnique(slices.Clone(in)); !slices.Equal(got, want) {
			t.Errorf("sortUnique(%v): got %v, want %v", in, got, want)
		}
	}
	f(nil, nil)
	f([]window.Sample{{T: 1, V: 1}, {T: 2, V: 2}}, []window.Sample{{T: 1, V: 1}, {T: 2, V: 2}})
	f([]window.Sample{{T: 2, V: 2}, {T: 1, V: 1}, {T: 2, V: 3}}, []window.Sample{{T: 1, V: 1}, {T: 2, V: 2}})
	f([]window.Sample{{T: 1, V: 1}, {T: 1, V: 5}}, []window.Sample{{T: 1, V: 1}})
}

func TestReservation(t *testing.T) {
	b := &budget{max: 10 << 20}
	r1 := &reservation{b: b, limit: 8 << 20}
	if err := r1.take(3 << 20); err != nil {
		t.Fatal(err)
	}
	if r1.held != 3<<20 {
		t.Fatalf("held %d, want 3 MiB", r1.held)
	}
	r2 := &reservation{b: b, limit: 8 << 20}
	if err := r2.take(6 << 20); err != nil {
		t.Fatal(err)
	}
	// 9 MiB taken of 10: the next MiB is free, the one after is not.
	if err := r1.take(1 << 20); err != nil {
		t.Fatalf("grow within the budget: %v", err)
	}
	if err := r1.take(1 << 20); !errors.Is(err, errBudget) {
		t.Fatalf("grow beyond the budget: got %v, want errBudget", err)
	}
	if err := r2.take(3 << 20); !errors.Is(err, errTooLarge) {
		t.Fatalf("beyond the limit: got %v, want errTooLarge", err)
	}
	r1.release()
	r2.release()
	if b.used != 0 {
		t.Fatalf("budget used %d after release, want 0", b.used)
	}
}

// With ha on, a replica's Prometheus answers its series with its replica
// label (an external label), which anomalyd's series lack: SetIgnoreLabel
// matches them anyway, and without it nothing matches.
func TestReadIgnoresReplicaLabel(t *testing.T) {
	for _, samplesOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("samples_only=%v", samplesOnly), func(t *testing.T) {
			f, srv := newFakeProm(t)
			f.samples = samplesOnly
			want := steps(t0, 20, 15_000, func(i int) float64 { return float64(i) })
			f.add(lbls("__name__", "up", "__replica__", "a", "cluster", "c1", "job", "x"), want)
			qs := []Query{{Labels: lbls("__name__", "up", "cluster", "c1", "job", "x"), Start: t0, End: t0 + 1e9}}
			c := testClient(t, srv.URL)
			out, _, err := c.Read(t.Context(), qs, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(out[0]) != 0 {
				t.Fatalf("without SetIgnoreLabel: %d samples of a series with other labels, want 0", len(out[0]))
			}
			c.SetIgnoreLabel("__replica__")
			if out, _, err = c.Read(t.Context(), qs, 64<<20); err != nil {
				t.Fatal(err)
			}
			if !sameSamples(out[0], want) {
				t.Fatalf("with SetIgnoreLabel(__replica__): got %d samples %v…, want %d", len(out[0]), head(out[0]), len(want))
			}
		})
	}
}

// TestReadCredentialsFile: the client is config's: the credentials of
// authorization.credentials_file arrive, and a rewritten file is sent by
// the next request without building the client again.
func TestReadCredentialsFile(t *testing.T) {
	f, srv := newFakeProm(t)
	a := lbls("__name__", "up", "job", "a")
	f.add(a, steps(t0, 10, 15_000, func(i int) float64 { return float64(i) }))
	tok := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		if err := os.WriteFile(tok, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first\n")
	cfg := config.DefaultWarmupRemoteRead
	cfg.URL = srv.URL + "/api/v1/read"
	cfg.Client.Authorization = &promcfg.Authorization{Type: "Bearer", CredentialsFile: tok}
	c, err := NewClient(&cfg, "anomalyd/test")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Bearer first", "Bearer second"} {
		out, _, err := c.Read(t.Context(), []Query{{Labels: a, Start: t0, End: t0 + 1e9}}, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(out[0]) != 10 {
			t.Errorf("got %d samples, want 10", len(out[0]))
		}
		f.mu.Lock()
		got := f.header.Get("Authorization")
		f.mu.Unlock()
		if got != want {
			t.Errorf("Authorization %q, want %q", got, want)
		}
		write("second\n")
	}
}
