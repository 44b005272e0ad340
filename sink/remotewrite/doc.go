// Package remotewrite is the remote-write client: it sends the output
// series (anomaly_score, anomaly_expected, anomaly_lower, anomaly_upper,
// anomaly_value, and with output.driver anomaly_driver) and the incident series
// (anomaly_incident_score, anomaly_incident_series, anomaly_incident_open,
// anomaly_incidents_opened_total) to Prometheus-compatible stores.
//
// The shards' records reach a Fanout over one RemoteWriter per
// remote_write entry (sink.Outputs hands them over). The model is Prometheus storage/remote
// (queue_manager.go + client.go), cut down to what anomalyd needs and
// without its ~100 modules of dependencies:
//
//	shards ──Append──▶ queue[hash % max_shards] ──sender goroutine──▶ encode ──POST──▶ store
//	                   (bounded, in samples)       (batch, retry)      (RW1|RW2, snappy)
//
// One record becomes 4 output samples (score, expected, lower, upper), 1
// during warm-up (score only), or 4 stale markers (value.StaleNaN) when the
// input series ends. A combined record with output.driver adds one sample
// (or stale marker) per enabled detector: the driver series, a state set
// carried in the record itself (series.Record.Driver and DriverSet, two bytes in
// its padding) rather than in records of its own. A series analysed as a
// rate adds its value series (output.value), carried in Record.Analysed.
// Labels: see series.AppendOutputLabels.
//
// Each publication of the incident stage (AppendIncidents, once a second)
// becomes 4 samples per group at the publication's time, labelled with the
// group's labels and __name__, or 4 stale markers for a group that ended.
// A group's samples go through the queue its labels hash to, so each
// incident series stays in order; they share the queues' capacity and
// batches with the records. In RW2 anomaly_incidents_opened_total is typed
// counter, every other series gauge.
//
// Trade-offs, and why:
//
//   - A fixed number of queues (queue_config.max_shards), chosen by
//     series.Info.Hash. Prometheus reshards dynamically; that moves series
//     between queues and can reorder them in flight, and a store rejects
//     out-of-order samples. Our output rate is known (input rate × 4) and
//     steady, so a fixed count set in the config is enough.
//   - Bounded queues counted in output samples; a full queue drops the NEW
//     records (anomalyd_sink_samples_dropped_total{reason="queue_full"}).
//     Shards must never block on a slow store: blocking them would stall
//     ingestion and make every sender's Prometheus queue grow. Dropping the
//     newest rather than the oldest keeps what is already batched in order
//     and avoids touching the sender's data. Memory per queue is at most
//     about 2 × capacity records (two slices swapped between Append and the
//     sender), 64 bytes each, in the worst case of warm-up records.
//   - Append takes one short lock per queue and copies records in (one
//     pass over the records per queue: max_shards is small). The sender
//     swaps the whole slice out under the same lock, so neither side holds
//     it for long and neither allocates in steady state.
//   - A batch that fails with a network error, a timeout, a 5xx or (only with
//     retry_on_http_429) a 429 is retried as is, for ever, until it is taken
//     or Stop's deadline ends: per-series order is kept and nothing is
//     duplicated except by the store's own partial writes. Backoff doubles
//     from min_backoff to max_backoff, plus up to 25 % jitter; Retry-After
//     (seconds or HTTP-date) replaces it when present and is not capped. While
//     a queue retries, its new records pile up and then drop: back-pressure
//     ends in counted drops, never in unbounded memory.
//   - Other 4xx (and 3xx: redirects are not followed, since a POST turned
//     into a GET would lose the batch) drop the batch, count it in
//     anomalyd_sink_samples_failed_total and log the status and the first
//     line of the body (≤ 1 KiB). Retrying data the store called invalid
//     would block the queue for ever.
//   - RW1 (prometheus.WriteRequest) by default: every store accepts it. RW2
//     (io.prometheus.write.v2.Request) is smaller (symbol table: 66 KiB vs
//     234 KiB of protobuf, 16 vs 23 KiB after snappy, for a 2000-sample
//     batch) but experimental. A store
//     that answers 415, or a 2xx without
//     X-Prometheus-Remote-Write-Samples-Written (it read the body as an
//     empty RW1 request), switches the writer to RW1 for good, logged once;
//     the same batch is sent again as RW1. On any RW2 answer the Written
//     header decides how much counts as sent.
//   - Encoding reuses the request structs, label slices, symbol table and
//     byte buffers of its sender goroutine: after warm-up a batch encodes
//     with zero allocations. Label strings alias the immutable
//     series.Info.Labels. Samples of one output series in a batch share one
//     TimeSeries, in arrival order.
//   - Credentials and TLS files are read once, at start; rotating them needs
//     a restart (Prometheus re-reads them per request).
//   - Stop stops accepting (later records count as reason="shutdown"),
//     flushes at once — still retrying — until its context ends, then aborts
//     in-flight requests and counts what is left as reason="shutdown". Every
//     accepted sample therefore ends in exactly one of sent, failed or
//     dropped{reason="shutdown"}.
//   - The writer logs when it starts failing (a queue's request failed and
//     will be retried while no other was failing), every failingReminder
//     while it stays so, and when the last failing queue gets an answer
//     again; single retries are debug lines. A log line per failed batch
//     would flood the log during an outage and say nothing new.
//
// The disk queue (NewFanout with a queue directory, i.e. --storage.path, and
// queue_config.max_disk_usage_bytes > 0), modelled on vmagent's fastqueue
// (lib/persistentqueue):
//
//	queue ──sender──▶ encode ──▶ blocks in memory ──▶ POST ──▶ store
//	                               │  spill ▲ read
//	                               ▼        │
//	                         segment files <storage>/queue/<remote>/<i>-of-<n>/
//
// Its trade-offs:
//
//   - The sender encodes batches into blocks (the snappy request body, RW1
//     or RW2) as soon as they are due, whatever the store does, and sends
//     the oldest block with one request in flight in a goroutine of its
//     own, so a slow or hung store never stops the encoding: Append drops
//     (queue_full) only if the sender cannot keep up with the disk.
//   - Blocks stay in memory while nothing is on disk, the store answers and
//     they hold at most capacity samples; otherwise the blocks in memory and
//     every new block are appended to disk, behind what is there, until the
//     disk is empty again. So at any time either the memory or the disk
//     holds blocks, never both, and blocks leave in the order they were
//     made: per-series order holds across outages and restarts. A healthy
//     store costs no disk I/O.
//   - A block leaves the queue only when the store answered it (taken, or
//     rejected with a 4xx and counted as failed, so data the store calls
//     too old cannot block the queue for ever). Blocks carry a sequence
//     number that survives restarts; a sender commits by it, so a block
//     that the size limit dropped while in flight is never committed twice.
//   - Segment files of about max_disk_usage_bytes / max_shards / 8 (64 KiB
//     to 64 MiB) hold checksummed frames (CRC32-Castagnoli) written with
//     one write(2) each. Open checks every frame and cuts a segment at the
//     first bad one: a crash leaves at most a torn last frame, dropped and
//     counted (reason="disk_error"). A "head" file, rewritten by rename every
//     16 requests and at close, says where sending resumes; after a crash
//     up to 16 requests may be sent again, which stores take as exact
//     duplicates. Segments are not fsynced: a process crash loses nothing
//     written, a machine crash may lose the last seconds.
//   - Past max_disk_usage_bytes / max_shards per queue the oldest whole
//     segments are removed and their unsent samples counted
//     (reason="disk_limit"): during a long outage the newest scores are
//     the ones worth keeping, and a bound keeps anomalyd from filling the
//     disk it shares with others.
//   - Stop sends on while the store answers and its context lasts, then
//     writes what is left in memory to disk; the next start sends the disk
//     first. A store that is down at shutdown costs no shutdown time.
//   - Blocks are encoded with the protocol of the moment; a RW2 block that
//     meets a store that turned out to know RW1 only is decoded and encoded
//     again as RW1.
//   - Queue directories are named after max_shards ("2-of-4"). After a
//     change of max_shards a series may map to another queue, so the
//     directories of the old count are sent first, one after the other,
//     and the new queues send nothing until they are empty (they queue to
//     disk meanwhile); then the old directories are removed.
//
// Metrics (label remote = remote_write name, or host/path of the URL):
// anomalyd_sink_samples_{sent,failed,retried}_total,
// anomalyd_sink_samples_dropped_total{reason}, anomalyd_sink_requests_total{code},
// anomalyd_sink_request_duration_seconds, anomalyd_sink_queue_samples,
// anomalyd_sink_queue_capacity_samples, anomalyd_sink_disk_queue_bytes,
// anomalyd_sink_disk_queue_blocks and anomalyd_sink_disk_queue_max_bytes
// (summed over the queues). The
// families are registered once per registry and shared by the writers; a
// reload that removes a remote deletes its series (Fanout.ForgetRemoved).
package remotewrite
