// Package sink is everything outbound. This package is the output fan-out,
// Outputs: the window.Appender the shards hand their records to, which
// passes every batch to the remote writers and the score history, and the
// window.IncidentAppender the incident stage hands its series to, which
// passes them to the remote writers. It owns the current output names, and
// swaps the remote writers under the running shards when a reload changes
// remote_write or output. The jobs themselves are one package each:
//
//   - sink/remotewrite: the remote-write client that sends the output series
//     (anomaly_score, anomaly_expected, anomaly_lower, anomaly_upper,
//     anomaly_value, and with output.driver anomaly_driver) and the incident series
//     (anomaly_incident_score, …) to Prometheus-compatible stores:
//     per-series send queues, batching, retries, RW1 and RW2.
//   - sink/history: the in-memory score history and its remote-read server
//     (POST /api/v1/read).
//   - sink/metrics: the /metrics writer, straight from the shard snapshots.
//   - sink/wire: the remote-protocol wire facts both ingest and sink need
//     (message names, content types, headers, the streamed frame format).
//   - sink/promreg: registration of anomalyd's own metrics on the
//     Prometheus Go client, safe to repeat on reload, and their text writer.
//
// remotewrite, history and metrics do not import each other: each turns the
// same records (series.Record) into output series by the same rules
// (series.AppendOutputLabels, series.Record.Slots), and this package's tests
// check that they agree.
//
// Trade-offs, and why:
//
//   - Append is one atomic pointer load and an interface call per batch, no
//     lock: the shards call it for every batch they score, and a reload,
//     which is rare, pays instead (it builds the new writers before the swap
//     and stops the old ones after it).
//   - A reload rebuilds every remote writer when remote_write or output
//     changed, not only the entries that changed: each writer holds the
//     output names it encodes with, and reloads are rare. The old writers
//     flush for at most 10 s while the new ones already take and send the
//     records, so the shards never wait for a reload; what the old ones
//     still hold then is counted as dropped{reason="shutdown"}. The price:
//     a series whose output name did not change may reach a store out of
//     order across the swap (the old writer's last batch after the new
//     writer's first), and a store without out-of-order ingestion rejects
//     those samples.
//   - The history lives for the whole process: reloads keep it, so a
//     history setting needs a restart. It is keyed without the output
//     names, so a rename applies to everything it holds.
package sink
