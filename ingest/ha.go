package ingest

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// HAOptions deduplicate Prometheus HA pairs (config.HAConfig).
type HAOptions struct {
	Enabled         bool
	ClusterLabel    string
	ReplicaLabel    string
	FailoverTimeout time.Duration
	MaxClusters     int
}

// haVerdict is what the tracker decided about one request.
type haVerdict uint8

const (
	haAnalyse         haVerdict = iota // from the elected replica: analyse it, replica label removed
	haDeduplicate                      // from another replica: accept it, analyse nothing
	haTooManyClusters                  // a new cluster beyond ha.max_clusters: reject it
)

// haTracker elects one replica per cluster, as the HA tracker of Cortex and
// Mimir does, in memory: the first replica seen of a cluster is elected;
// another replica's request is elected only once the elected one has sent
// nothing for the failover timeout. It is safe for concurrent use.
//
// The label names are fixed for a tracker's life: a reload that changes
// them builds a new tracker, forgetting every election, because the
// clusters and replicas it knows are values of the old labels.
type haTracker struct {
	clusterLabel, replicaLabel string
	epoch                      time.Time // clock's zero

	timeout     atomic.Int64 // ha.failover_timeout, nanoseconds
	maxClusters atomic.Int64

	// The common request, from the elected replica, takes the read lock
	// and stores its time in an atomic; only an election takes the write
	// lock.
	mu       sync.RWMutex
	clusters map[string]*haCluster
	closed   bool // replaced by a reload: it keeps no gauge any more

	m      *metrics
	logger *zap.Logger
}

// haCluster is the election of one cluster.
type haCluster struct {
	replica string       // elected; written under haTracker.mu
	last    atomic.Int64 // clock() at the elected replica's last request
}

func newHATracker(o HAOptions, m *metrics, logger *zap.Logger) *haTracker {
	t := &haTracker{clusterLabel: o.ClusterLabel, replicaLabel: o.ReplicaLabel, epoch: time.Now(),
		clusters: map[string]*haCluster{}, m: m, logger: logger}
	t.configure(o)
	return t
}

// clock returns the nanoseconds since the tracker was made, on the
// monotonic clock: a step of the wall clock must neither fail over a
// cluster nor hold an election.
func (t *haTracker) clock() int64 { return int64(time.Since(t.epoch)) }

// configure applies the settings a reload may change without forgetting
// the elections.
func (t *haTracker) configure(o HAOptions) {
	t.timeout.Store(int64(o.FailoverTimeout))
	t.maxClusters.Store(int64(o.MaxClusters))
}

// labels returns the values of the cluster and replica labels of the first
// series of req, each nil when absent, empty, not valid UTF-8 or longer
// than maxValue: Prometheus adds its external labels to every series of a
// request, so the first series speaks for the request (as in Cortex and
// Mimir), and a value that would make that series invalid elects nothing.
// It does not allocate.
func (t *haTracker) labels(req *request, maxValue int) (cluster, replica []byte) {
	if len(req.series) == 0 {
		return nil, nil
	}
	s := &req.series[0]
	for _, l := range req.labels[s.labelsStart:s.labelsEnd] {
		switch string(req.str(l.name)) { // no allocation: the compiler optimises the conversion
		case t.clusterLabel:
			if cluster == nil {
				cluster = req.str(l.value)
			}
		case t.replicaLabel:
			if replica == nil {
				replica = req.str(l.value)
			}
		}
	}
	valid := func(v []byte) []byte {
		if len(v) == 0 || len(v) > maxValue || !utf8.Valid(v) {
			return nil
		}
		return v
	}
	return valid(cluster), valid(replica)
}

// check decides about a request of replica in cluster at now (clock()).
// It allocates only to elect.
func (t *haTracker) check(cluster, replica []byte, now int64) haVerdict {
	t.mu.RLock()
	c, ok := t.clusters[string(cluster)]
	if ok && c.replica == string(replica) {
		// Several requests of the elected replica may race here; the
		// latest time wins or nearly so, and a few milliseconds do not
		// matter against a timeout of seconds.
		if now > c.last.Load() {
			c.last.Store(now)
		}
		t.mu.RUnlock()
		return haAnalyse
	}
	if ok && now-c.last.Load() <= t.timeout.Load() {
		t.mu.RUnlock()
		return haDeduplicate
	}
	t.mu.RUnlock()
	return t.elect(cluster, replica, now)
}

// elect makes replica the elected replica of cluster, unless another one
// was elected or sent a request in the meantime, or cluster is new and
// max_clusters are tracked and none of them has timed out.
func (t *haTracker) elect(cluster, replica []byte, now int64) haVerdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	timeout := t.timeout.Load()
	c, ok := t.clusters[string(cluster)]
	switch {
	case ok && c.replica == string(replica):
		return haAnalyse // elected by a concurrent request of the same replica
	case ok && now-c.last.Load() <= timeout:
		return haDeduplicate // the elected replica spoke up in the meantime
	case !ok && int64(len(t.clusters)) >= t.maxClusters.Load() && !t.forgetSilent(now, timeout):
		return haTooManyClusters
	}
	name := string(replica)
	if !ok {
		c = &haCluster{}
		t.clusters[string(cluster)] = c
		t.logger.Info("HA cluster: first replica elected",
			zap.String("cluster", string(cluster)), zap.String("replica", name))
	} else {
		silent := time.Duration(now - c.last.Load())
		t.logger.Warn("HA cluster: elected replica sent nothing for longer than ha.failover_timeout; another replica takes over",
			zap.String("cluster", string(cluster)), zap.String("previous_replica", c.replica),
			zap.String("replica", name), zap.Duration("silent_for", silent.Round(time.Millisecond)))
		t.m.haFailovers.Inc()
		if !t.closed {
			t.m.haElected.DeleteLabelValues(string(cluster), c.replica)
		}
	}
	c.replica = name
	c.last.Store(now)
	if !t.closed {
		t.m.haElected.WithLabelValues(string(cluster), name).Set(1)
	}
	return haAnalyse
}

// forgetSilent forgets one cluster whose elected replica has sent nothing
// for timeout, and reports whether it found one. Forgetting it changes
// nothing but memory: its next request, of whichever replica, would be
// elected anyway. Called with t.mu held, only when a new cluster finds
// max_clusters tracked, so the scan is rare.
func (t *haTracker) forgetSilent(now, timeout int64) bool {
	for name, c := range t.clusters {
		if now-c.last.Load() > timeout {
			delete(t.clusters, name)
			if !t.closed {
				t.m.haElected.DeleteLabelValues(name, c.replica)
			}
			return true
		}
	}
	return false
}

// close removes the tracker's gauges; a reload replaced it.
func (t *haTracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for name, c := range t.clusters {
		t.m.haElected.DeleteLabelValues(name, c.replica)
	}
}

// haLabelsChanged reports whether a reload from a to b needs a new tracker.
func haLabelsChanged(a, b HAOptions) bool {
	return a.Enabled != b.Enabled || a.ClusterLabel != b.ClusterLabel || a.ReplicaLabel != b.ReplicaLabel
}

// errTooManyClusters is the 400 of a request of a new cluster beyond
// ha.max_clusters: a sender never retries it, and the limit is a setting
// to raise, not a passing state (Mimir answers 400 too).
func errTooManyClusters(cluster []byte, limit int64) error {
	return errorf(http.StatusBadRequest, "cannot accept samples of HA cluster %q: %d clusters are tracked (ha.max_clusters) and each has sent within ha.failover_timeout",
		cluster, limit)
}
