// Package remoteread warms up the detectors of new series from Prometheus's
// history: a restarted anomalyd, or one that receives series after
// re-sharding, would otherwise start every series cold and score nothing
// useful until a Holt-Winters season (a day) has passed.
//
// Client speaks remote read (PROTOCOL.md, "Remote read") as Prometheus's own
// client does: one snappy ReadRequest with one query per series (an equality
// matcher per label), STREAMED_XOR_CHUNKS preferred and SAMPLES accepted.
// Warmer implements window.Warmer: it queues the shards' requests, batches
// them and hands each history back to the series' shard.
//
// Trade-offs:
//   - One query per series, not one selector for many: equality matchers hit
//     Prometheus's postings index directly, and each answer maps to its
//     series by query_index. Equality matchers also select series with
//     extra labels, so answers whose label set is not exactly the series'
//     are dropped.
//   - Memory is bounded by warmup.max_bytes, counted as decoded response
//     bytes plus 16 bytes per sample kept (XOR chunks decode to ~10× their
//     size). Each request starts with max_bytes/concurrency and grows
//     without waiting; when other requests hold the rest it gives all back,
//     waits in FIFO order for twice as much and reads again (no deadlock:
//     a waiter holds nothing). A response over max_bytes on its own is
//     split in halves down to one series, which then starts cold.
//   - The rate limit (warmup.max_series_per_second) is a token bucket taken
//     before series leave the queue, with a burst of one request, so a
//     restart with 100 000 series cannot flood Prometheus, and series that
//     arrive while a request waits join it.
//   - Failures that may pass (network, 5xx, 429, a broken stream) are retried
//     with jittered exponential backoff, at most 5 attempts and never past the
//     first series' deadline; 4xx and wrong content types fail at once.
//     Either way the series start cold with the live samples they held.
//   - The pending queue is bounded (warmup.max_pending): beyond it new series
//     start cold at once instead of holding memory and samples.
//   - The compressed SAMPLES body (at most snappy's bound over the limit)
//     is transient and not counted.
package remoteread
