package ingest

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/sink/promreg"
)

type metrics struct {
	requests   *prometheus.CounterVec
	codes      map[string]map[int]prometheus.Counter // protocol → code → counter, filled at start
	duration   map[string]prometheus.Observer
	received   map[string]prometheus.Counter
	histograms map[string]prometheus.Counter
	rejected   [numReasons]prometheus.Counter
	invalidSer prometheus.Counter
	backPress  prometheus.Counter
	exemplars  prometheus.Counter
	bytes      prometheus.Counter
	metadata   prometheus.Counter

	// HA pairs (ha.go).
	haDeduplicated prometheus.Counter
	haFailovers    prometheus.Counter
	haTooMany      prometheus.Counter
	haElected      *prometheus.GaugeVec
}

// protocolLabel is the protocol label value of a request.
func protocolLabel(proto string) string {
	switch proto {
	case protoV1:
		return "1.0"
	case protoV2:
		return "2.0"
	}
	return "unknown"
}

var knownCodes = []int{http.StatusNoContent, http.StatusBadRequest, http.StatusMethodNotAllowed,
	http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusInternalServerError,
	http.StatusServiceUnavailable}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: promreg.NewCounterVec(reg, "anomalyd_ingest_requests_total",
			"Remote-write requests by protocol version and HTTP status.", "protocol", "code"),
		codes:      map[string]map[int]prometheus.Counter{},
		duration:   map[string]prometheus.Observer{},
		received:   map[string]prometheus.Counter{},
		histograms: map[string]prometheus.Counter{},
	}
	dur := promreg.NewHistogramVec(reg, "anomalyd_ingest_request_duration_seconds",
		"Time to read, decode, validate and enqueue a remote-write request.", promreg.DefBuckets, "protocol")
	recv := promreg.NewCounterVec(reg, "anomalyd_ingest_samples_received_total",
		"Float samples accepted and handed to the shards.", "protocol")
	hist := promreg.NewCounterVec(reg, "anomalyd_ingest_histograms_received_total",
		"Native histogram samples accepted and handed to the shards as their _count and _sum.", "protocol")
	for _, p := range []string{"1.0", "2.0", "unknown"} {
		m.codes[p] = map[int]prometheus.Counter{}
		for _, c := range knownCodes {
			m.codes[p][c] = m.requests.WithLabelValues(p, strconv.Itoa(c))
		}
		m.duration[p] = dur.WithLabelValues(p)
		m.received[p] = recv.WithLabelValues(p)
		m.histograms[p] = hist.WithLabelValues(p)
	}
	rej := promreg.NewCounterVec(reg, "anomalyd_ingest_samples_rejected_total",
		"Samples rejected with 400 (invalid series or sample) or 503 (back_pressure), by reason.", "reason")
	for i := reason(1); i < numReasons; i++ {
		m.rejected[i] = rej.WithLabelValues(reasonNames[i])
	}
	m.backPress = rej.WithLabelValues("back_pressure")
	m.invalidSer = promreg.NewCounter(reg, "anomalyd_ingest_series_invalid_total", "Series rejected as invalid (400).")
	m.exemplars = promreg.NewCounter(reg, "anomalyd_ingest_exemplars_ignored_total",
		"Exemplars received and not analysed (never reported as written).")
	m.bytes = promreg.NewCounter(reg, "anomalyd_ingest_request_bytes_total", "Compressed remote-write request bytes read.")
	m.metadata = promreg.NewCounter(reg, "anomalyd_ingest_metadata_updates_total", "RW1 metadata entries that taught a new or changed metric type.")
	m.haTooMany = rej.WithLabelValues("too_many_ha_clusters")
	m.haDeduplicated = promreg.NewCounter(reg, "anomalyd_ingest_ha_samples_deduplicated_total",
		"Samples and native histogram samples from HA replicas that are not their cluster's elected replica: accepted, not analysed.")
	m.haFailovers = promreg.NewCounter(reg, "anomalyd_ingest_ha_failovers_total",
		"Elections of another replica after the elected one of an HA cluster sent nothing for ha.failover_timeout.")
	m.haElected = promreg.NewGaugeVec(reg, "anomalyd_ingest_ha_elected_replica",
		"1 for the elected replica of each HA cluster tracked.", "cluster", "replica")
	return m
}

func (m *metrics) observe(proto string, code int, d time.Duration) {
	p := protocolLabel(proto)
	c, ok := m.codes[p][code]
	if !ok {
		c = m.requests.WithLabelValues(p, strconv.Itoa(code))
	}
	c.Inc()
	m.duration[p].Observe(d.Seconds())
}

func (m *metrics) account(proto string, accepted, histograms, backPressured, exemplars int, invalid, rejectedBy *[numReasons]int) {
	if accepted > 0 {
		m.received[protocolLabel(proto)].Add(float64(accepted))
	}
	if histograms > 0 {
		m.histograms[protocolLabel(proto)].Add(float64(histograms))
	}
	if backPressured > 0 {
		m.backPress.Add(float64(backPressured))
	}
	if exemplars > 0 {
		m.exemplars.Add(float64(exemplars))
	}
	for i, c := range invalid {
		if c > 0 && reason(i) != reasonTooFarInFuture {
			m.invalidSer.Add(float64(c))
		}
	}
	for i, c := range rejectedBy {
		if c > 0 {
			m.rejected[i].Add(float64(c))
		}
	}
}
