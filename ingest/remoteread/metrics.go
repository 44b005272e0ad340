package remoteread

import (
	"errors"
	"strconv"
	"time"

	"github.com/anomalyd/anomalyd/sink/selfmon"
)

type metrics struct {
	warmed, empty, failed, skipped *selfmon.Counter
	samples, bytes                 *selfmon.Counter
	requests, errors               *selfmon.CounterVec
	duration                       *selfmon.Histogram
}

// durationBuckets cover remote reads from a local head (milliseconds) to a
// day of 100 series from disk near remote_timeout (1 min).
var durationBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(reg *selfmon.Registry, w *Warmer) *metrics {
	series := reg.NewCounterVec("anomalyd_warmup_series_total",
		"New series by warm-up result: warmed (history read), empty (Prometheus has none), failed (read failed after retries), skipped (not read: warmup.max_pending reached, deadline passed, or stopping).",
		"result")
	m := &metrics{
		warmed:  series.With("warmed"),
		empty:   series.With("empty"),
		failed:  series.With("failed"),
		skipped: series.With("skipped"),
		samples: reg.NewCounter("anomalyd_warmup_samples_read_total", "History samples read by remote read (within the asked ranges)."),
		bytes:   reg.NewCounter("anomalyd_warmup_bytes_read_total", "Decoded remote-read response bytes: snappy-decoded bodies or streamed frames."),
		requests: reg.NewCounterVec("anomalyd_warmup_requests_total",
			"Remote-read requests by HTTP status (none: no answer).", "code"),
		errors: reg.NewCounterVec("anomalyd_warmup_errors_total",
			"Failed remote-read requests by reason: send (no answer, timeout), status (non-2xx), response (malformed or broken), too_large (over warmup.max_bytes).",
			"reason"),
		duration: reg.NewHistogram("anomalyd_warmup_request_duration_seconds",
			"Time to send a remote-read request and decode its response.", durationBuckets),
	}
	reg.NewGaugeFunc("anomalyd_warmup_pending_series", "Series queued or being read (at most warmup.max_pending).",
		func() float64 { return float64(w.pending.Load()) })
	return m
}

// request accounts one remote-read attempt.
func (m *metrics) request(st ReadStats, err error, d time.Duration) {
	code := "none"
	if st.Code != 0 {
		code = strconv.Itoa(st.Code)
	}
	m.requests.With(code).Inc()
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
		m.errors.With("too_large").Inc()
	case errors.As(err, &se):
		m.errors.With("status").Inc()
	case st.Code == 0:
		m.errors.With("send").Inc()
	default:
		m.errors.With("response").Inc()
	}
}
