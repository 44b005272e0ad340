// Package history keeps the recent output samples in memory (History) and
// serves them over Prometheus's remote-read protocol (ReadHandler, POST
// /api/v1/read), so that a Prometheus with anomalyd as a read_recent
// remote_read queries the output series as if it stored them, without a
// store behind anomalyd.
//
// Trade-offs, and why (details on History and ReadHandler):
//
//   - Gorilla XOR chunks of 120 samples, as Prometheus's head keeps them
//     (tsdb/chunkenc): about 6.5 bytes a sample of real detector output
//     instead of 16, and STREAMED_XOR_CHUNKS answers send the chunks as
//     they are.
//   - Retention by data time, not the wall clock: eviction does not depend
//     on clock skew between senders and anomalyd, keeps a sender's late data
//     for the whole retention, and is deterministic in tests.
//   - 64 partitions by series hash, each with its own lock: shards own
//     series by hash too, so with a shard count that divides 64 no Append
//     waits for another shard. Queries hold a partition's lock only to copy
//     pointers and the head chunk; labels are matched without it.
//   - history.max_series bounds the memory: the outputs of input series
//     beyond it are counted and not kept.
//   - Output names are applied at query time, so after a reload that renames
//     the outputs the whole history answers under the new names.
//
// Metrics: anomalyd_history_* (what is held and dropped) and anomalyd_read_*
// (requests by status, queries, durations).
package history
