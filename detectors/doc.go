// Package detectors scores samples of one time series for anomalies. It is
// pure math: no goroutines, I/O, clocks, logs or metrics.
//
// A shard keeps one Set per series and calls Set.Update once per input
// sample; Params are per rule, validated once at config load, shared
// read-only by every series and every shard. Update is O(1), allocates
// nothing and calls the five detectors directly (no interface); the
// Detector interface and New exist for the registry and tests. A Set is
// owned by one goroutine.
//
// # Detectors
//
// Each judges the sample against its state before the sample, then learns
// from it, and reports Expected, a band Lower..Upper = Expected ± K·σ_eff
// and a raw score z = distance / band half-width (1 = on the band edge),
// which the calibration then turns into Score (see below):
//
//   - EWMA: exponentially weighted mean and variance (Finch 2009), with a
//     1/k start so the first samples give a plain mean and variance; σ is
//     floored at the slow mean absolute error (see SlowAlpha).
//   - ZScore: mean and sample standard deviation of the last Window
//     samples; the standard deviation is floored in the same way.
//   - HoltWinters: additive Holt-Winters with Brutlag's (2000) seasonal mean
//     absolute deviation as the band. The season is a duration cut into
//     SeasonBuckets slots indexed by timestamp, floor((t mod S)·B/S), so gaps
//     and irregular scrapes land in the right slot; the seasonal term
//     interpolates between slot centres; the first season primes the model
//     (slot means → seasonal offsets) and a slot is used only once it was
//     seen in an earlier season.
//   - Slope: least-squares line through the last Window samples; its score
//     is how many band half-widths the line moved across the window, so a
//     sustained drift scores > 1 and a single spike ≈ 6/(K·√Window),
//     scaled by how much of the slope the window's newer half shows (a
//     level shift that came and went tilts the line, not the newer half).
//   - Entropy: the histogram of the last Entropy.Window values against up
//     to Entropy.Regimes histograms the series showed before (relative
//     entropy, G-test at p = 0.01); a window unlike all of them is a new
//     regime and scores ≥ 2 once it is confirmed: at once if a value lands
//     in a bin no regime ever had (and for Window−1 values after an
//     alarm, its echo, only such a value alarms again: the same
//     incident), else only if the window half a window
//     later is very unlike every older regime (p = 0.0001) or the one a
//     whole window later still is (p = 0.001), because pure noise makes
//     about one window in 300 that no regime explains and a window later
//     is ordinary again. Ready after Warmup + EntropyWarmup (100)
//     samples, as the calibrated detectors are. A slow scale does the same with the means of
//     Entropy.SlowScale consecutive values (16 means of 8 by default, 8
//     regimes of their own), so a change too small or too slow for 16
//     single values is seen; its new regimes are always candidates to be
//     confirmed, and it is Ready after 100 means. Its score is not
//     calibrated and it joins Combined as a maximum. See entropyState for
//     the details. Records: a value beyond every value the series has
//     taken by more than RecordK noise σ (1.25 × the EWMA's slow mean
//     absolute error, kept even with EWMA disabled) alarms at once,
//     2·excess/(RecordK·σ), even where its bin has mass (a new high just
//     above a daily peak).
//
// # Calibration
//
// A raw score means different things on different series: on a bursty or
// quantised series z > 1 happens every hour, on a smooth one never. With
// calibration enabled (the default), each detector's raw score z is judged
// against the distribution of its own raw scores on the same series over
// the last ~1000 samples (an anomaly likelihood, after HTM's: Ahmad et al.
// 2017): with g = ln(1 + z) and m, s² the exponentially weighted mean and
// variance of g, Score = max(0, (g − m) / (K·max(s, 0.05))), and the band
// is rescaled so that Score 1 is still on its edge. O(1), 12 bytes a
// detector. The first CalibWarmup = 100 samples past warm-up seed m and s²
// (plain mean and variance) and the detector is not Ready yet (score 0): a
// raw score means nothing before the series' own scores are known, and a
// detector that alarmed on it would page at every start. After that each
// sample weighs CalibAlpha = 0.001, so an incident is not learnt as normal within
// a few samples (with a weight of 1/k, ~1/100 right after warm-up, it
// would be).
// Every raw score is learnt, anomalous or not, so a kind of burst that
// recurs stops alarming and a level shift is one alert, not hours of them.
//
// # Combined score
//
// Among the Ready level detectors (EWMA, ZScore, HoltWinters) take the one
// with the lowest score; if Slope is Ready with a strictly higher score it
// drives instead. Combined is the driver's Result and Output.Driver names
// it, except that Slope drives only while its raw score is above 1: the
// line must have moved more than slope.k residual deviations across the
// window, not just more than usual for the series: on pure noise the
// line tilts by chance, and a tilt that is unusual for the series can
// still be inside the slope's own band. The minimum asks all level
// detectors to agree: one noisy detector cannot raise an alarm alone, and
// a daily swing that Holt-Winters expects does not alarm although EWMA and
// ZScore, which know no season, see it as a jump (a median of the three
// would follow those two and fire on every daily step). The slope term
// catches slow drifts that level detectors adapt to, and holds the score
// up while a step crosses its window.
//
// A run beyond the band holds Combined.Score at 1 or more: once the level
// vote scores ≥ 1, each next sample on the same side, farther from the
// level vote's Expected than that band's half-width at the run's start,
// scores at least 1, for at most HoldMax more samples; its band is then
// that half-width around the level vote's Expected, the band the sample
// is beyond. The
// detectors learn every sample, as a lasting shift needs, and their
// spreads take one sample far outside the band in at once (the EWMA's
// variance grows by α(1−α)·error²): a series pinned at 100 after 30 ± 5
// widens the EWMA's band to [−86, 158] in one sample, and the lowest-score
// vote alone would call the second sample normal. 1 is the band edge, not
// the alarm level: the first sample has raised the alarm, so an alert at 2
// fires once while a rule on score ≥ 1 sees the whole plateau. A spike is
// a run of one (the next sample is back on the band's side); a lasting
// shift ends the run once the level vote's Expected is within the old
// half-width of it, or after HoldMax samples. Bounding how far one sample
// can widen a spread (winsorising the residual fed into the EWMA's
// variance or Holt-Winters' deviation, capping the window's σ growth)
// would keep the plateau outside the band too, but it changes what every
// detector learns on every series: the calibration then sees larger raw
// scores after bursts and lowers the score of later first samples.
//
// # Guarantees
//
// Scores are finite, in [0, MaxScore]; bands are finite. Every σ is floored
// at max(σ, RelFloor·|Expected|, AbsFloor), so a constant series scores
// exactly 0 and a change of it scores high but finite (calibrated:
// ln(1 + MaxScore)/(K·0.05) ≈ 55 at most after a constant stretch). A detector is Ready
// once Warmup samples came before the current one (ZScore and Slope also
// need 3 in the ring, Entropy a full ring and EntropyWarmup more samples)
// and, with calibration on, its calibration has CalibWarmup raw scores;
// until then its Score is 0.
//
// # Memory
//
// A Set is 312 bytes plus one allocation of float32s: 2 per ring entry, 2
// per seasonal slot (432 bytes with DefaultParams), and Entropy's 1 per
// ring entry plus its Regimes·Bins uint8 masses at each scale (160 fast,
// 112 slow): 1016 bytes in all, 1024 after the allocator's size-class
// rounding (704 is a class, 320 the one above 312). Of the 312, 48 are the
// four calibrations, 16 the two slow mean absolute errors, 56 Entropy's
// reference value, the two scales' ranges and pending confirmations and
// the running mean, 16 the G statistics of its last matches (which spare
// it the G-tests of a window whose histogram did not change), and 5 the
// run hold (see Combined score). Disabled detectors cost no ring or slot
// memory (Entropy disabled: 744 bytes). The state holds no pointers
// besides that allocation, so it can be serialised.
//
// # State
//
// Set.AppendState writes a series' complete state, so that a restart from
// a checkpoint loses nothing, and Set.RestoreState
// reads it back: a restored Set gives, sample for sample, bit for bit, the
// Outputs the saved one would have (TestSetStateResume). The encoding is
// explicit and fixed little-endian, no reflection or gob: a version byte
// (setStateVersion), the sizes Init derived from the Params (ring w u16,
// seasonal slots b u8, entropy slots e u8, len(buf) u32), every field of
// the Set and of its nested states (floats as IEEE 754 bits, bools one
// byte), then buf as float32 bits. StateSize is 275 + 4·len(buf) bytes:
// 979 with DefaultParams (275 + 4·176), 707 with Entropy disabled. Neither
// appending nor restoring allocates (BenchmarkSetState measures both).
//
// Versions: bump setStateVersion whenever a field is added, removed,
// reordered, resized or changes meaning; RestoreState refuses any other
// version (the series starts cold), because a state read under the wrong
// layout is wrong without a sign. TestSetStateComplete fills every field
// of a Set, recursively, with random values and fails if one does not
// come back, so an addition cannot be forgotten.
//
// What is checked: a state whose sizes differ from those Init(p) gives, or
// whose entropy positions and regime counts do not fit p, is refused with
// ErrStateParams (the series starts cold); so is a NaN or ±Inf where the
// detectors keep values finite, or a ring index beyond the ring, so that a
// restored Set can neither panic nor carry NaN. The rest is trusted: the
// checkpoint file's checksum protects the bytes, and it should record the
// Params, since a Set does not keep them and a change that keeps every
// size (an alpha, the season's length, entropy.slow_scale) restores
// without error.
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
//     2.5 h of a daily curve and the raw slope then fires on most
//     anomaly-free samples); at 15 s it spans 7.5 min and rarely does. The
//     calibration absorbs such routine drifts, since a slope that fires on
//     most samples of a series is normal for that series, but the slope
//     term still raises alarms of its own that the level detectors would
//     not, not all of them wanted: it is kept for drifts and for steps,
//     which it holds above 1 while they cross its window (a raw step in
//     mid-window scores ≈ 6/K).
//   - The calibration learns what is normal from the series itself, so a
//     lasting drift or a new kind of burst becomes normal within its
//     memory of ~1000 samples; one huge score raises s and makes the next
//     few hundred samples need a larger error to alarm. An incident inside
//     the first CalibWarmup samples seeds m and s² with its own scores (a
//     step right at the end of warm-up stays above 1 for fewer samples
//     than one later on). Winsorising the calibration's input at its band
//     edge would prevent that, but then an incident is learnt far more
//     slowly and keeps alarming sample after sample; an alarm is wanted
//     once, not for every sample of an incident.
//   - The slow mean absolute error is winsorised at the band (one spike of
//     height h would otherwise floor the band at h/100 for hundreds of
//     samples); the EWMA's and the ZScore's own mean and σ are not, so a
//     level shift still becomes normal within ~1/α samples (winsorised,
//     the mean would creep towards a new level by at most α band
//     half-widths a sample and the shift would keep alarming long after).
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
//     across the window; a spike moves it ≈ 0.27 band half-widths, a real
//     drift several.
//   - entropy.record_k 1: a new extreme more than one noise σ beyond the
//     old one; Gaussian noise's own records exceed it by a fraction of σ,
//     so noise alone does not trip the rule, while a smaller margin starts
//     to let noise records through.
//   - calibration.enabled true: raw scores are not comparable between
//     series, and one set of defaults has to serve every series, so each
//     detector is judged against its own recent raw scores.
//   - calibration.k 5: ln(1 + z) must lie 5 of its own recent standard
//     deviations above its mean, a tail rare enough that noise-only series
//     stay below 1 while a step on a constant series scores ≈ 55. Higher k
//     quiets real metrics but from k 6 the +25 anomaly on an irregularly
//     sampled daily sine is missed (TestSeasonal).
//   - SlowAlpha 0.01 (constant): the σ floor remembers ~100 samples, ten
//     times the EWMA, so a few quiet or quantised samples cannot shrink a
//     band below the noise the series usually has.
//   - CalibAlpha 0.001 (constant): the calibration remembers ~1000 samples
//     (4 h at 15 s, 3.5 days at 5 min), enough to hold many ordinary bursts;
//     a shorter memory forgets a series' rarer bursts and alarms on them
//     again, a longer one gains little more and is slower to accept a
//     lasting change.
//   - CalibMinSpread 0.05 (constant): after raw scores of exactly 0 (a
//     constant series) a raw z ≈ 0.28 is needed to alarm, not rounding noise.
//   - CalibWarmup 100 (constant): s from 100 samples is within ~7%
//     (1/√(2n)); before that a calibrated detector is not Ready.
//   - HoldMax 10 (constant): a run beyond the band is held at score 1 for
//     at most ~1/ewma.alpha samples, as long as the EWMA and Holt-Winters
//     take to learn a new level, so a slow ramp ahead of a lagging mean is
//     not held for hours (the slope is there for drifts).
package detectors
