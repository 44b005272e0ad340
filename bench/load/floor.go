package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golang/snappy"
)

// floorMaxBytes bounds the compressed and the decoded body, as anomalyd's
// defaults (32 MiB each).
const floorMaxBytes = 32 << 20

// floorHandler is the decode-only reference receiver: read the body,
// snappy.Decode it, walk the protobuf counting samples, discard everything.
// What it costs a sample is the floor any remote-write receiver pays on this
// machine. It is safe for concurrent use.
type floorHandler struct {
	bufs     sync.Pool // *floorBuf
	requests atomic.Int64
	samples  atomic.Int64
	rejected atomic.Int64
}

type floorBuf struct{ comp, raw []byte }

func (h *floorHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	v2 := strings.Contains(r.Header.Get("Content-Type"), "io.prometheus.write.v2.Request")
	b, _ := h.bufs.Get().(*floorBuf)
	if b == nil {
		b = &floorBuf{}
	}
	defer h.bufs.Put(b)
	n, err := h.serve(b, r, v2)
	if err != nil {
		h.rejected.Add(1)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.requests.Add(1)
	h.samples.Add(int64(n))
	if v2 {
		hd := w.Header()
		hd["X-Prometheus-Remote-Write-Samples-Written"] = []string{strconv.Itoa(n)}
		hd["X-Prometheus-Remote-Write-Histograms-Written"] = []string{"0"}
		hd["X-Prometheus-Remote-Write-Exemplars-Written"] = []string{"0"}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *floorHandler) serve(b *floorBuf, r *http.Request, v2 bool) (int, error) {
	var err error
	b.comp, err = readBody(b.comp[:0], r.Body, r.ContentLength)
	if err != nil {
		return 0, err
	}
	dl, err := snappy.DecodedLen(b.comp)
	if err != nil {
		return 0, fmt.Errorf("cannot decode snappy: %w", err)
	}
	if dl > floorMaxBytes {
		return 0, fmt.Errorf("decoded size %d exceeds the limit %d", dl, floorMaxBytes)
	}
	if cap(b.raw) < dl {
		b.raw = make([]byte, dl)
	}
	raw, err := snappy.Decode(b.raw[:cap(b.raw)], b.comp)
	if err != nil {
		return 0, fmt.Errorf("cannot decode snappy: %w", err)
	}
	outer := uint64(1) // prometheus.WriteRequest.timeseries
	if v2 {
		outer = 5 // io.prometheus.write.v2.Request.timeseries
	}
	return countSamples(raw, outer)
}

// readBody appends the body to dst, at most floorMaxBytes.
func readBody(dst []byte, body io.Reader, size int64) ([]byte, error) {
	if size > floorMaxBytes {
		return dst, fmt.Errorf("body of %d bytes exceeds the limit %d", size, floorMaxBytes)
	}
	if size > 0 && int64(cap(dst)) < size+1 { // +1: room to see EOF without growing
		dst = make([]byte, 0, size+1)
	}
	for {
		if len(dst) == cap(dst) {
			if len(dst) >= floorMaxBytes {
				return dst, fmt.Errorf("body exceeds the limit %d", floorMaxBytes)
			}
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := body.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("cannot read body: %w", err)
		}
	}
}

// countSamples walks a remote-write message without allocating: for every
// top-level field number outer (the time series), it counts the field 2
// entries (samples) inside. Field 2 of TimeSeries is samples in both
// prometheus.TimeSeries and io.prometheus.write.v2.TimeSeries.
func countSamples(b []byte, outer uint64) (int, error) {
	n := 0
	for len(b) > 0 {
		field, wt, body, rest, err := nextField(b)
		if err != nil {
			return 0, err
		}
		b = rest
		if field != outer || wt != 2 {
			continue
		}
		for len(body) > 0 {
			f, wt, _, r, err := nextField(body)
			if err != nil {
				return 0, err
			}
			body = r
			if f == 2 && wt == 2 {
				n++
			}
		}
	}
	return n, nil
}

// nextField parses one protobuf field: its number, wire type, the payload
// of a length-delimited field, and what follows.
func nextField(b []byte) (field uint64, wt uint8, payload, rest []byte, err error) {
	key, k := uvarint(b)
	if k <= 0 {
		return 0, 0, nil, nil, errors.New("cannot parse protobuf: bad field key")
	}
	b = b[k:]
	field, wt = key>>3, uint8(key&7)
	switch wt {
	case 0: // varint
		_, k := uvarint(b)
		if k <= 0 {
			return 0, 0, nil, nil, errors.New("cannot parse protobuf: bad varint")
		}
		return field, wt, nil, b[k:], nil
	case 1: // fixed64
		if len(b) < 8 {
			return 0, 0, nil, nil, errors.New("cannot parse protobuf: truncated fixed64")
		}
		return field, wt, nil, b[8:], nil
	case 2: // length-delimited
		l, k := uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return 0, 0, nil, nil, errors.New("cannot parse protobuf: bad length")
		}
		return field, wt, b[k : k+int(l)], b[k+int(l):], nil
	case 5: // fixed32
		if len(b) < 4 {
			return 0, 0, nil, nil, errors.New("cannot parse protobuf: truncated fixed32")
		}
		return field, wt, nil, b[4:], nil
	default:
		return 0, 0, nil, nil, fmt.Errorf("cannot parse protobuf: wire type %d", wt)
	}
}

// uvarint decodes a varint; k <= 0 when b is truncated or overflows.
func uvarint(b []byte) (v uint64, k int) {
	for i := 0; i < len(b) && i < 10; i++ {
		c := b[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// metrics serves the floor's counters in the text format.
func (h *floorHandler) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP bench_floor_samples_total Samples counted by the decode-only receiver.\n# TYPE bench_floor_samples_total counter\nbench_floor_samples_total %d\n", h.samples.Load())
	fmt.Fprintf(w, "# HELP bench_floor_requests_total Requests accepted by the decode-only receiver.\n# TYPE bench_floor_requests_total counter\nbench_floor_requests_total %d\n", h.requests.Load())
	fmt.Fprintf(w, "# HELP bench_floor_rejected_total Requests rejected (400) by the decode-only receiver.\n# TYPE bench_floor_rejected_total counter\nbench_floor_rejected_total %d\n", h.rejected.Load())
}

func (h *floorHandler) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/api/v1/write", h)
	mux.HandleFunc("/metrics", h.metrics)
	return mux
}

// serveFloor runs the floor receiver on addr until SIGINT or SIGTERM. It
// prints its PID first (with `go run`, $! is the go command, not this
// process), and its own CPU time (getrusage) at exit.
func serveFloor(addr string, stdout, stderr io.Writer) int {
	if err := checkLoopback(addr); err != nil {
		fmt.Fprintf(stderr, "load: -listen: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "load: cannot listen on %s: %v\n", addr, err)
		return 1
	}
	h := &floorHandler{}
	srv := &http.Server{Handler: h.mux(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "floor receiver pid %d listening on http://%s/api/v1/write\n", os.Getpid(), ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		fmt.Fprintf(stderr, "load: floor receiver: %v\n", err)
		return 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	fmt.Fprintf(stderr, "floor receiver: %d requests, %d samples, %d rejected, %.2f CPU-s\n",
		h.requests.Load(), h.samples.Load(), h.rejected.Load(), selfCPU().Seconds())
	return 0
}

// checkLoopback refuses addresses that are not on the loopback interface:
// this is a load generator.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.1, ::1 or localhost); the harness only targets this machine", host)
	}
	return nil
}
