package ingest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anomalyd/anomalyd/sink/promreg"
)

// Accounting a request touches only children resolved when the metrics
// were built: it must not allocate (label lookups would, per request).
func TestMetricsAccountingDoesNotAllocate(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	var invalid, rejected [numReasons]int
	invalid[reasonEmptyLabelName] = 1
	rejected[reasonEmptyLabelName] = 3
	account := func() {
		m.observe(protoV2, http.StatusNoContent, time.Millisecond)
		m.account(protoV2, 2000, 10, 5, 1, &invalid, &rejected)
	}
	if n := testing.AllocsPerRun(100, account); n != 0 {
		t.Errorf("%v allocations per request accounted, want 0", n)
	}
	if v := promreg.Value(m.received["2.0"]); v != 101*2000 {
		t.Errorf("samples received %v, want %v", v, 101*2000)
	}
	if v := promreg.Value(m.rejected[reasonEmptyLabelName]); v != 101*3 {
		t.Errorf("samples rejected %v, want %v", v, 101*3)
	}
}

// A reload builds a new handler on the same registry: its metrics are the
// same series, carrying on from the old handler's values.
func TestMetricsTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg).codes["1.0"][http.StatusNoContent].Inc()
	newMetrics(reg).codes["1.0"][http.StatusNoContent].Inc()
	var b strings.Builder
	if err := promreg.WriteText(&b, reg); err != nil {
		t.Fatal(err)
	}
	if want := `anomalyd_ingest_requests_total{code="204",protocol="1.0"} 2` + "\n"; !strings.Contains(b.String(), want) {
		t.Errorf("lacks %s:\n%s", want, b.String())
	}
}
