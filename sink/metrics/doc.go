// Package metrics writes /metrics: the latest value of every output series,
// straight from the shards' snapshots in the Prometheus text format 0.0.4,
// then anomalyd's own metrics, gathered from their client_golang registry.
//
// The score series are not registered metrics: WriteScores streams the
// snapshots through one write buffer, family by family (the format wants a
// family's lines together), so a scrape of a million series holds no more
// than that buffer. Label names the text format does not allow (remote
// write 2.0 allows any UTF-8) are written with Prometheus 3's reversible
// escaping, so that two names never collide.
package metrics
