// Package sink is everything outbound, one package per job:
//
//   - sink/remotewrite: the remote-write client that sends the output series
//     (anomaly_score, anomaly_expected, anomaly_lower, anomaly_upper, and
//     with output.driver anomaly_driver) to Prometheus-compatible stores:
//     per-series send queues, batching, retries, RW1 and RW2.
//   - sink/history: the in-memory score history and its remote-read server.
//   - sink/metrics: the /metrics writer, straight from the shard snapshots.
//   - sink/wire: the remote-protocol wire facts both ingest and sink need
//     (message names, content types, headers, the streamed frame format).
//   - sink/selfmon: the registry of anomalyd's own metrics.
//
// remotewrite, history and metrics do not import each other: each turns the
// same records (series.Record) into output series by the same rules
// (series.AppendOutputLabels, series.Record.Slots). This package's tests
// check that they agree.
package sink
