// Package ingest is anomalyd's remote-write receiver: POST /api/v1/write.
//
// A request goes through, in order: method and header checks (Content-Type
// picks remote write 1.0 or 2.0; anything else is 415, before the body is
// read), the compressed-size limit (413), snappy's decoded-length header
// against the decoded-size limit (400, before allocating), snappy block
// decoding, a hand-written protobuf walk, per-series validation and
// canonicalisation, and hand-off to the shards.
//
// Trade-offs:
//   - The protobuf walk records spans into the decoded buffer instead of
//     building prompb structs: gogo's Unmarshal allocates a string per label
//     and costs several times more CPU. Tests and fuzz targets check that
//     both read the same thing.
//   - The canonical key (window/series: name 0xff value 0xff …, sorted,
//     empty values dropped) is built once per series and hashed with
//     series.Hash (Prometheus's labels.StableHash of the same labels); it is copied
//     into a per-shard Batch, the only copy out of the request buffer, which
//     is reused for the next request as soon as this one returns.
//   - Hand-off never blocks: a full shard queue answers 503 (with
//     Retry-After) so the sender backs off and retries; 429 would make stock
//     Prometheus drop the batch. Shards treat exact duplicates as no-ops, so
//     a retry of a partly enqueued request is harmless.
//   - Samples are counted as written when a shard accepts them; ordering
//     problems found later by the shard (out of order, conflicting
//     duplicates) are counted in anomalyd_window_samples_not_analysed_total,
//     not reported to the sender, as PROTOCOL.md allows.
//   - Every series of a request is validated before the first batch is
//     handed to a shard, so a 400 (invalid series: the sender never
//     retries it) writes exactly the valid rest and an RW2 answer's
//     Samples-Written says how much that was. All-or-nothing would lose
//     the valid series of every batch that carries one bad series.
//   - RW2 series are checked as the specification says: every reference
//     (labels_refs, metadata.help_ref, metadata.unit_ref) indexes into
//     symbols, and a series has samples or histograms, not both, not
//     neither (exemplars alone are refused). Help and unit are not used,
//     but a dangling reference means a broken sender, and Prometheus's
//     own receiver refuses it too.
//   - A native histogram sample is analysed as the two series a classic
//     histogram has, name_count and name_sum, both counters (rates) unless
//     its reset hint says gauge histogram; a stale histogram (stale marker
//     in the sum) ends both. It counts in Histograms-Written once its
//     _count is handed to a shard. Nothing is silently dropped: the
//     buckets are not analysed, as classic _bucket series are not by
//     default. The other choice, a 400 for every request with a
//     histogram, would make Prometheus log an error for every such batch
//     and leave histogram-only metrics unwatched. A per-interval mean
//     (Δsum/Δcount) would need per-series state here, where no history is
//     kept; the two rates carry the same information to the detectors.
//     When a target also exposes the classic histogram, its _count and
//     _sum samples equal the derived ones and the shards take them as
//     exact duplicates.
//   - Exemplars are counted and ignored: RW2 answers say 0 were written,
//     which the specification allows.
//   - HA pairs (ha.go, ha.enabled): one decision per request, on the
//     cluster and replica labels of its first series, as in Cortex and
//     Mimir: Prometheus adds its external labels to every series it sends,
//     so the first speaks for all, and the check is O(labels of one
//     series) per request, not per sample. Requests of the elected replica
//     take a read lock and store a time; only an election takes the write
//     lock. A request of another replica is answered 204 (RW2: its samples
//     counted as written) and analysed not at all. The replica label is
//     left out of every key and hash of an elected request, so both
//     replicas write one series whose state survives a failover; samples
//     the new replica sends from before the old one's last are dropped by
//     the shards' ordering rules (out_of_order), as any late sample. The
//     elections live in memory: a restart elects the first replica to
//     send, which is what a silent cluster gets anyway.
package ingest
