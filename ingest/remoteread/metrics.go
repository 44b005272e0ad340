package remoteread

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/sink/promreg"
)

type metrics struct {
	warmed, empty, failed, skipped prometheus.Counter
	samples, bytes                 prometheus.Counter
	requests, errors               *prometheus.CounterVec
	duration                       prometheus.Histogram
}

// durationBuckets cover remote reads from a local head (milliseconds) to a
// day of 100 series from disk near remote_timeout (1 min).
var durationBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(reg *prometheus.Registry, w *Warmer) *metrics {
	series := promreg.NewCounterVec(reg, "anomalyd_warmup_series_total",
		"New series by warm-up result: warmed (history read), empty (Prometheus has none), failed (read failed after retries), skipped (not read: warmup.max_pending reached, deadline passed, or stopping).",
		"result")
	m := &metrics{
		warmed:  series.WithLabelValues("warmed"),
		empty:   series.WithLabelValues("empty"),
		failed:  series.WithLabelValues("failed"),
		skipped: series.WithLabelValues("skipped"),
		samples: promreg.NewCounter(reg, "anomalyd_warmup_samples_read_total", "History samples read by remote read (within the asked ranges)."),
		bytes:   promreg.NewCounter(reg, "anomalyd_warmup_bytes_read_total", "Decoded remote-read response bytes: snappy-decoded bodies or streamed frames."),
		requests: promreg.NewCounterVec(reg, "anomalyd_warmup_requests_total",
			"Remote-read requests by HTTP status (none: no answer).", "code"),
		errors: promreg.NewCounterVec(reg, "anomalyd_warmup_errors_total",
			"Failed remote-read requests by reason: send (no answer, timeout), status (non-2xx), response (malformed or broken), too_large (over warmup.max_bytes).",
			"reason"),
		duration: promreg.NewHistogram(reg, "anomalyd_warmup_request_duration_seconds",
			"Time to send a remote-read request and decode its response.", durationBuckets),
	}
	promreg.GaugeFunc(reg, "anomalyd_warmup_pending_series",
		"Series queued or being read (at most warmup.max_pending).", nil,
		func() float64 { return float64(w.pending.Load()) })
	return m
}

// request accounts one remote-read attempt.
func (m *metrics) request(st ReadStats, err error, d time.Duration) {
	code := "none"
	if st.Code != 0 {
		code = strconv.Itoa(st.Code)
	}
	m.requests.WithLabelValues(code).Inc()
	m.duration.Observe(d.Seconds())
	m.bytes.Add(float64(st.Bytes))
	if err == nil {
		m.samples.Add(float64(st.Samples))
		return
	}
	var se *statusError
	switch {
	case errors.Is(err, errBudget):
		// Not a failure: the request waits for more memory and is sent again.
	case errors.Is(err, errTooLarge):
		m.errors.WithLabelValues("too_large").Inc()
	case errors.As(err, &se):
		m.errors.WithLabelValues("status").Inc()
	case st.Code == 0:
		m.errors.WithLabelValues("send").Inc()
	default:
		m.errors.WithLabelValues("response").Inc()
	}
}
