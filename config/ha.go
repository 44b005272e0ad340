package config

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
)

// DefaultHAConfig leaves HA deduplication off and names the labels as
// Cortex and Mimir do, so a Prometheus pair set up for them needs no change.
var DefaultHAConfig = HAConfig{
	Enabled: false,
	// cluster and __replica__: Cortex's and Mimir's ha_cluster_label and
	// ha_replica_label defaults.
	ClusterLabel: "cluster",
	ReplicaLabel: "__replica__",
	// 30s, as Cortex's and Mimir's ha_tracker_failover_timeout: two missed
	// scrapes at 15 s before the other replica takes over, long enough that
	// a remote-write retry or a slow request does not flap the election.
	FailoverTimeout: model.Duration(30 * time.Second),
	// 100 clusters, as Mimir's ha_max_clusters: more Prometheus pairs than
	// one anomalyd analyses; one map entry and one gauge each.
	MaxClusters: 100,
}

// HAConfig deduplicates Prometheus HA pairs: replicas that scrape the same
// targets and remote-write the same series, told apart by a replica label
// among their external labels. Of each cluster (the value of the cluster
// label) the samples of one elected replica are analysed; the others are
// accepted and counted. The replica label is removed from every series of
// a request that carries both labels, so that both replicas' series are the
// same series and keep their state across a failover.
type HAConfig struct {
	Enabled      bool   `yaml:"enabled"`
	ClusterLabel string `yaml:"cluster_label"` // external label naming the pair; kept on the series
	ReplicaLabel string `yaml:"replica_label"` // external label naming the replica; removed
	// FailoverTimeout is how long the elected replica of a cluster may send
	// nothing before a request of another replica is elected.
	FailoverTimeout model.Duration `yaml:"failover_timeout"`
	// MaxClusters bounds the clusters tracked at once; a request of a new
	// cluster beyond it is rejected (400) unless a tracked cluster has sent
	// nothing for failover_timeout, which is then forgotten.
	MaxClusters int `yaml:"max_clusters"`
}

func (c *HAConfig) validate() error {
	for _, l := range []struct{ key, v string }{
		{"cluster_label", c.ClusterLabel},
		{"replica_label", c.ReplicaLabel},
	} {
		if !model.LabelName(l.v).IsValidLegacy() || l.v == model.MetricNameLabel {
			return fmt.Errorf("ha.%s: %q is not a label name other than __name__", l.key, l.v)
		}
	}
	switch {
	case c.ClusterLabel == c.ReplicaLabel:
		return fmt.Errorf("ha.cluster_label and ha.replica_label are both %q", c.ClusterLabel)
	case c.FailoverTimeout <= 0:
		return fmt.Errorf("ha.failover_timeout must be positive, got %s", c.FailoverTimeout)
	case c.MaxClusters < 1:
		return fmt.Errorf("ha.max_clusters must be positive, got %d", c.MaxClusters)
	}
	return nil
}
