package remotewrite

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/internal/sinktest"
	"github.com/anomalyd/anomalyd/window/incident"
	"github.com/anomalyd/anomalyd/window/series"
)

// TestRemoteWriterIncidents: the incident series reach the store, in both
// protocols, labelled with the group's labels and __name__ (sorted, also
// around a label that sorts before __name__), one sample per group and
// series per publication at its time, stale markers for a group that
// ended, in order through several queues and in batches shared with
// records; in RW2 the counter of incidents opened is typed counter.
func TestRemoteWriterIncidents(t *testing.T) {
	node := sinktest.Group("job", "node", "instance", "a:1")
	zone := sinktest.Group("job", "db", "AZ", "eu")
	rec := series.Record{Series: sinktest.Info("__name__", "up", "job", "node", "instance", "a:1"), T: 1500,
		Detector: detectors.KindCombined, Score: 0.5, Expected: 1, Lower: 0.9, Upper: 1.1}

	key := func(name string) string { return "__name__=" + name + ",instance=a:1,job=node" }
	zkey := func(name string) string { return "AZ=eu,__name__=" + name + ",job=db" }
	stale := sinktest.StaleNaN
	want := sinktest.Oracle{
		key(incident.ScoreName):   {{T: 1000, V: 0.5}, {T: 2000, V: 1.5}},
		key(incident.SeriesName):  {{T: 1000, V: 1}, {T: 2000, V: 2}},
		key(incident.OpenName):    {{T: 1000, V: 0}, {T: 2000, V: 1}},
		key(incident.OpenedName):  {{T: 1000, V: 0}, {T: 2000, V: 1}},
		zkey(incident.ScoreName):  {{T: 1000, V: 2}, {T: 2000, V: stale}},
		zkey(incident.SeriesName): {{T: 1000, V: 3}, {T: 2000, V: stale}},
		zkey(incident.OpenName):   {{T: 1000, V: 1}, {T: 2000, V: stale}},
		zkey(incident.OpenedName): {{T: 1000, V: 4}, {T: 2000, V: stale}},
	}
	want.Add(sinktest.Names, rec)

	for _, msg := range []string{"prometheus.WriteRequest", "io.prometheus.write.v2.Request"} {
		for _, shards := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/%d queues", msg, shards), func(t *testing.T) {
				rc := sinktest.NewReceiver(t)
				srv := httptest.NewServer(rc)
				defer srv.Close()
				cfg := testConfig(srv.URL)
				cfg.ProtobufMessage = msg
				cfg.QueueConfig.MaxShards = shards
				cfg.QueueConfig.BatchSendDeadline = model.Duration(time.Hour) // one request per queue, at Stop
				w, _ := newTestWriter(t, cfg, nil)
				w.Start()
				w.AppendIncidents(1000, []incident.GroupStatus{
					{Group: zone, Score: 2, Open: true, Series: 3, Opened: 4},
					{Group: node, Score: 0.5, Series: 1},
				}, nil)
				w.Append([]series.Record{rec})
				w.AppendIncidents(2000, []incident.GroupStatus{{Group: node, Score: 1.5, Open: true, Series: 2, Opened: 1}}, []string{zone})
				stopWithin(w, 10*time.Second)

				if n := rc.CheckOrder(t); n != 20 {
					t.Errorf("store received %d samples, want 20 (2 × 8 incident, 4 of the record)", n)
				}
				rc.Mu.Lock()
				defer rc.Mu.Unlock()
				sinktest.CompareOracles(t, rc.Series, want)
				if shards == 1 && rc.N != 1 {
					t.Errorf("%d requests with one queue, want 1: records and incident series share batches", rc.N)
				}
				if msg == "io.prometheus.write.v2.Request" {
					for k := range want {
						wantType := writev2.Metadata_METRIC_TYPE_GAUGE
						if k == key(incident.OpenedName) || k == zkey(incident.OpenedName) {
							wantType = writev2.Metadata_METRIC_TYPE_COUNTER
						}
						if got := rc.MetaOf[k]; got != wantType {
							t.Errorf("%s: RW2 metadata type %v, want %v", k, got, wantType)
						}
					}
				}
				if got := counterValue(w.m.sent); got != 20 {
					t.Errorf("samples_sent_total %d, want 20", got)
				}
			})
		}
	}
}

// TestRemoteWriterIncidentsDropped: a group whose series do not fit in its
// queue is dropped whole and counted as queue_full; what is queued at Stop,
// or appended after it, is counted as shutdown.
func TestRemoteWriterIncidentsDropped(t *testing.T) {
	cfg := testConfig("http://store.test/write")
	cfg.QueueConfig.MaxShards = 1
	cfg.QueueConfig.Capacity = series.NumSlots // room for 2 groups of 4 series, not 3
	w, _ := newTestWriter(t, cfg, nil)
	groups := []incident.GroupStatus{{Group: sinktest.Group("job", "a")}, {Group: sinktest.Group("job", "b")}, {Group: sinktest.Group("job", "c")}}
	if series.NumSlots < 8 || series.NumSlots >= 12 {
		t.Fatalf("series.NumSlots = %d: the test needs a capacity of 2 groups but not 3", series.NumSlots)
	}
	w.AppendIncidents(1000, groups, nil)
	if got := counterValue(w.m.droppedFull); got != 4 {
		t.Errorf("dropped{reason=queue_full} = %d, want 4 (one group)", got)
	}
	if got := w.queues[0].pending.Load(); got != 8 {
		t.Errorf("queue holds %d samples, want 8", got)
	}
	stopWithin(w, 0) // never started: everything queued is dropped
	w.AppendIncidents(2000, groups[:1], nil)
	if got := counterValue(w.m.droppedShutdown); got != 8+4 {
		t.Errorf("dropped{reason=shutdown} = %d, want 12 (8 queued at Stop, 4 appended after)", got)
	}
	if got := w.queues[0].pending.Load(); got != 0 {
		t.Errorf("queue holds %d samples after Stop, want 0", got)
	}
}

// TestEncodeIncidentsNoAllocs: once its buffers have grown, encoding a
// batch with incident samples allocates nothing either.
func TestEncodeIncidentsNoAllocs(t *testing.T) {
	var inc []incidentSample
	for i := range 100 {
		g := sinktest.Group("job", "node", "instance", fmt.Sprintf("node-%03d:9100", i))
		for p := range int64(3) {
			for kind := range incidentSeries {
				inc = append(inc, incidentSample{group: g, t: 1000 * p, v: float64(i), kind: uint8(kind)})
			}
		}
	}
	batch := sinktest.BenchBatch()
	for _, rw2 := range []bool{false, true} {
		e := newEncoder(&sinktest.Names)
		if _, err := e.encode(batch, inc, rw2); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(20, func() { e.encode(batch, inc, rw2) }); n != 0 {
			t.Errorf("rw2=%v: %v allocations per encode, want 0", rw2, n)
		}
		out, err := e.encode(nil, inc, rw2)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeRW(t, out, rw2)
		if len(got) != 400 {
			t.Errorf("rw2=%v: %d series, want 400 (100 groups × 4)", rw2, len(got))
		}
		for k, ss := range got {
			if len(ss) != 3 {
				t.Errorf("rw2=%v: %s: %d samples, want 3 in one TimeSeries", rw2, k, len(ss))
			}
		}
	}
}
