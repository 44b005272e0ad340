package main

// Design notes and trade-offs.
//
// Traffic. NewGenerator builds node_exporter-like targets (66 series:
// node_cpu_seconds_total by cpu and mode, network, disk, filesystem, memory,
// load) and HTTP-service-like targets (90 series: http_requests_total by
// handler, method and code, request duration _sum/_count, process and Go
// gauges), about half each, until -series is reached. Every series has
// __name__, job, instance and 3 to 6 more labels (env, region, cluster or
// namespace, plus the family's own), ~150 bytes of names and values. About
// 83% are counters (as on real targets), the rest noisy gauges, gauges
// following a sine of period -day, and constants. One target in four
// restarts every 100 to 1000 rounds and its counters start again from 0.
//
// Values are a pure function of (seed, series, round): a hash gives the
// per-sample noise, so any round can be encoded on its own, in parallel,
// and the bytes depend only on the seed and the flags. Anomalies (spikes,
// level shifts, drifts) are placed after the warm-up in series of targets
// that never restart, in the last two thirds of the expected timed rounds,
// and listed in the JSON output with their rounds and timestamps.
//
// Encoding. In throughput mode every timed round (and the score-delay
// rounds) is encoded before the timer starts and kept in memory
// (-max-buffer-mb, ~2.8 MiB a round at 100k series): sending then only
// writes bytes, at ~0.1 CPU-s per million samples, about half of what the
// decode-only floor receiver pays to read them. Without -rounds, the count
// is twice what -duration takes at the pace of the last warm-up round; a run
// that uses them all up before -duration says so. A bounded ring encoded
// ahead while sending would need less memory but would compete for the
// receiver's cores on a small machine. Remote write 1.0 is marshalled by
// hand from per-series pre-marshalled labels (byte-identical to prompb's
// Marshal, a test checks); 2.0 goes through prompb's writev2 types with one
// symbol table per request. -realtime encodes each round while waiting for
// its turn.
//
// Sending. Connection c carries the series i with i % C == c, one request
// in flight, rounds in order: a series' samples arrive in order, as from
// Prometheus's shards. The connections do not wait for each other; when
// -duration ends, each finishes the rounds another has started, so the
// timed phase holds whole rounds. 5xx, 429 and network errors are retried
// after a short backoff (5 ms doubling to 500 ms), other 4xx count as failed.
//
// Measuring. The receiver's CPU (utime+stime of /proc/PID/stat) is read
// when it is idle before the timed rounds and again when it is idle after
// them: receivers that answer before processing (anomalyd queues batches to
// its shards) are charged for the work they had queued. Idle means at most
// one clock tick in 100 ms. Memory is VmHWM and VmRSS of /proc/PID/status;
// bytes per series divide them by -series, so restart the receiver before
// each run (a reused receiver also has the previous run's timestamps and
// would see the new samples as out of order).
//
// Score delay. With -metrics-url, -delay-rounds more rounds are sent one at
// a time after the timed figures are taken, and /metrics is scraped until
// the -delay-metrics counters have grown by the round's samples. Growth,
// not the absolute value, because anomalyd does not count the first sample
// of a counter series in either counter. anomalyd writes these counters
// after every score series, so a scrape of 100k series (~90 MiB, ~350 ms)
// bounds the resolution: the delay lies between the reported lower and upper
// bounds. The counters are live, but the score series come from per-shard
// snapshots that a scrape refreshes only when they are older than
// publish_interval (1 s): a client polling faster than that sees scores up
// to 1 s older than the counters say; a Prometheus scraping every 15 s does
// not. The delay is measured with the receiver otherwise idle, not under
// the timed load.
