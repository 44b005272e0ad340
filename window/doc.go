// Package window owns the per-series state: N shards, each one goroutine
// that alone reads and writes its series table, ring buffers and detector
// state. Series are routed by hash (Hash % N), so no lock is taken per
// sample; the ingest side hands whole batches over a bounded channel.
//
// Per sample, in order: stale markers (by bits) end a series and emit stale
// markers for its outputs; older samples and same-timestamp-different-value
// samples are counted and dropped, exact duplicates accepted silently;
// NaN and ±Inf are counted and not analysed; counters become per-second
// rates (a decrease is a reset: the new value is the increase), and so
// do gauges whose first 63 samples only grew (a fall is then a negative
// rate; see trialSamples); the value goes to the detectors and the
// records (window/series) to the Appender the shards were given, which is
// the sink. The incident stage (Incidents) hands its series to the sink the
// same way, through an IncidentAppender. window never imports the sink: it
// defines Appender and IncidentAppender, the methods it needs, and the
// series model lives below both in window/series.
//
// Subpackages: series (the series model: canonical label key, Info,
// Record, output series), backtest (`anomalyd backtest`: the per-series
// path of a shard run over CSV files), windowtest (a recording Appender
// for tests).
//
// Trade-offs:
//   - Series live in fixed-size chunks (slab) that never move, so growing to
//     a million series never copies the table.
//   - Readers (/metrics) get an immutable snapshot per shard, built when a
//     reader asks and at most once per publish_interval: the O(series) copy
//     is paid per scrape, not per sample.
//   - Series a rule ignores, or the exclude list selects, are remembered in a fastcache (bounded, no GC
//     cost) so their samples cost one lookup.
//   - Idle series are found by a scan every TTL/15; a series is evicted at
//     most ~7% after its TTL.
//   - A reload re-matches every series against the new rules once; series
//     whose rule resolves to identical detector settings keep their state,
//     and a series whose incident group changed moves to the new group.
//   - Incident group keys (the rule's incidents.group_by labels) are
//     interned per shard and counted per series: a key goes with the last
//     series of its group, so that churning targets (pods replaced under
//     new labels) do not grow the map; it costs one map write per series
//     created or removed, nothing per sample.
//   - The driver series (output.driver) ride on the combined
//     record: each compiled rule holds the set of detectors it enables (0
//     when the option is off), and the record carries that set and
//     detectors.Output.Driver in two bytes of its padding. No extra records,
//     no per-series memory, and with the option off no extra work per
//     sample; the sink expands them into one series per detector.
//   - The incident stage's state (Incidents.State, Restore) is one record
//     of the checkpoint: the groups (window/incident encodes each), their
//     open incidents and the recent ones, without the series counts,
//     which the shards' join events rebuild after a restart, so that a
//     group none of whose series came back can be told and removed
//     (RestoreDone) instead of waiting for leaves that never come.
//   - Warm-up (warm.go, optional): a new series holds up to
//     warmup.max_buffered_samples live samples while a Warmer reads its
//     history, which the shard then feeds to the detectors without emitting
//     it, before replaying the held samples. The state of warming series
//     sits in a per-shard map, so other series pay one flag bit. Feeding
//     history costs the shard what scoring does (go test ./detectors
//     -bench SetUpdate) per history sample; the Warmer's rate limit
//     (warmup.max_series_per_second) bounds the total.
//   - Several senders of one series (a Prometheus HA pair without ha:)
//     are noticed from the shards' own counters (senders.go): one
//     goroutine sums them once a minute and logs one warning when, five
//     minutes in a row, 10% or more of the samples were out of order or
//     conflicting duplicates. Nothing is added per sample.
package window
