// Package detectors scores samples of one time series for anomalies. It is
// pure math: no goroutines, I/O, clocks, logs or metrics.
//
// A shard keeps one Set per series and calls Set.Update once per input
// sample; Params are per rule, validated once at config load, shared
// read-only by every series and every shard. Update is O(1), allocates
// nothing and calls the four detectors directly (no interface); the
// Detector interface and New exist for the registry and tests. A Set is
// owned by one goroutine.
//
// # Detectors
//
// Each judges the sample against its state before the sample, then learns
// from it, and reports Expected, a band Lower..Upper = Expected ± K·σ_eff
// and a Score = distance / band half-width (1 = on the band edge):
//
//   - EWMA: exponentially weighted mean and variance (Finch 2009), with a
//     1/k start so the first samples give a plain mean and variance.
//   - ZScore: mean and sample standard deviation of the last Window samples.
//   - HoltWinters: additive Holt-Winters with Brutlag's (2000) seasonal mean
//     absolute deviation as the band. The season is a duration cut into
//     SeasonBuckets slots indexed by timestamp, floor((t mod S)·B/S), so gaps
//     and irregular scrapes land in the right slot; the seasonal term
//     interpolates between slot centres; the first season primes the model
//     (slot means → seasonal offsets) and a slot is used only once it was
//     seen in an earlier season.
//   - Slope: least-squares line through the last Window samples; its score
//     is how many band half-widths the line moved across the window, so a
//     sustained drift scores > 1 and a single spike ≈ 6/(K·√Window).
//
// # Combined score
//
// Among the Ready level detectors (EWMA, ZScore, HoltWinters) take the one
// with the median score (of two the lower, of one that one); if Slope is
// Ready with a strictly higher score it drives instead. Combined is the
// driver's Result and Output.Driver names it. The median makes one noisy
// level detector unable to raise an alarm alone; the slope term catches
// slow drifts that level detectors adapt to.
//
// # Guarantees
//
// Scores are finite, in [0, MaxScore]; bands are finite. Every σ is floored
// at max(σ, RelFloor·|Expected|, AbsFloor), so a constant series scores
// exactly 0 and a change of it scores high but finite. A detector is Ready
// once Warmup samples came before the current one (ZScore and Slope also
// need 3 in the ring); until then its Score is 0.
//
// # Memory
//
// A Set is 184 bytes plus one allocation of float32s: 2 per ring entry and 2
// per seasonal slot, 432 bytes with DefaultParams (616 in all, 632 after the
// allocator's size-class rounding). Disabled detectors cost no ring or slot
// memory. The state holds no pointers besides that slice, so it can be
// serialised.
//
// # Trade-offs
//
//   - float32 storage. Ring entries are float32 value and time offsets from
//     a per-window reference moved to the newest sample on every wrap, so
//     the 6e-8 relative error applies to the window's spread and span, not
//     to the value (1e12 ± 1 is stored to ±6e-8) or to Unix time (a 450 s
//     window to ±30 µs). Right after a level shift of D the entries before
//     the next wrap carry up to 6e-8·D of error until they are evicted.
//     Seasonal offsets and deviations are float32 too. A float64 ring would
//     not fit 700 bytes next to the seasonal slots.
//   - Running sums. ZScore and Slope add and subtract sums in O(1) and
//     recompute them exactly (Kahan-Neumaier, as Prometheus's
//     linearRegression) on every wrap and whenever an evicted term dwarfs
//     what remains (an outlier leaving), instead of O(Window) per sample.
//   - Per-sample smoothing. Alpha, beta and gamma weigh samples, not
//     seconds, so the same Params remember 10 samples = 2.5 min at a 15 s
//     scrape and 50 min at 5 min.
//   - Slope measures drift whatever its cause: a seasonal ramp is a drift
//     when the window is long next to the season (30 samples at 5 min cover
//     2.5 h of a daily curve and the slope then fires on most anomaly-free
//     samples, and so does Combined); at 15 s it spans 7.5 min and rarely
//     does. Raise slope.k or disable Slope for coarse scrapes of seasonal
//     series. It also fires while a level shift crosses its window: a step
//     in mid-window scores ≈ 6/K (1.4 measured with K = 4).
//   - Feed rates, not counters: a monotonic counter is a sustained drift.
//
// # Defaults
//
// DefaultParams, one sentence each:
//
//   - window 30: 7.5 min at a 15 s scrape, enough points for a stable mean and
//     28 residual degrees of freedom for the slope, short enough that a new
//     level is normal after 30 samples.
//   - warmup 10: a standard deviation from fewer points is off by more than
//     ~20% (its relative error is ≈ 1/√(2n)), which would make early bands
//     too narrow.
//   - ewma.alpha 0.1: a memory of ~1/α = 10 samples, so the mean follows a
//     new level within a few minutes at 15 s and a spike fades in ~20.
//   - ewma.k 4: a 4σ band is crossed by Gaussian noise once in ~16 000
//     samples, leaving room for the extra spread of a σ estimated from ~10
//     samples.
//   - zscore.k 4: the same band over the window's 30 samples.
//   - holt_winters.alpha 0.1: the level remembers ~10 samples, the
//     seasonal shape being carried by the slots.
//   - holt_winters.beta 0.005: the trend remembers ~200 samples, so noise
//     barely tilts the forecast.
//   - holt_winters.gamma 0.1: each slot's offset and deviation follow its
//     last ~10 samples, so a changed daily pattern is learned within a day
//     or two.
//   - holt_winters.season 24h: the daily cycle of human-driven load (the
//     season Brutlag used).
//   - holt_winters.season_buckets 24: hourly slots; with interpolation 24
//     knots follow a smooth daily curve to ≈ 1% of its amplitude.
//   - holt_winters.k 4: Brutlag's δ (he suggests 2 to 3) applied to a mean
//     absolute deviation, which is ≈ 0.8σ for Gaussian noise, so ≈ 3.2σ.
//   - slope.k 4: the fitted line must move more than 4 residual deviations
//     across the window; a spike moves it ≈ 0.27 band widths, a real drift
//     several.
package detectors
