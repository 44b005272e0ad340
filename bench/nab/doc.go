package main

// Design notes and trade-offs.
//
// Reference. NAB v1.1 as numenta/NAB scores today: nab/sweeper.py (commit
// d62afec, the version whose scaledSigmoid is −1 only for x > 3; an
// earlier one had x ≥ 3), nab/optimizer.py (one exhaustive sweep over the
// whole corpus, since January 2019) and runner.py normalize(). The code
// here is written from those rules, not translated.
//
// Scoring, per file of n rows. The first min(floor(0.15·n), 750) rows are
// probationary: never scored. A row is a detection when its anomaly score
// is ≥ the threshold. A window (rows s..e, width w = e − s + 1, both ends
// given as timestamps in combined_windows.json) is worth its earliest
// detection, TP·S(−(e − i + 1)/w)/S(−1) (exactly TP on row s, falling to
// TP·S(−1/w)/S(−1) on row e), or −FN without one. A detection outside
// windows costs FP·S(|i − e′|/(w′ − 1)) after a window e′ of width w′
// (−0.56·FP a quarter-width after it, −FP beyond three widths) and −FP
// before the file's first window. S(x) = 2·sigmoid(−5x) − 1 = tanh(−5x/2),
// −1 for x > 3. A window with no scorable row (wholly probationary) counts
// neither way, as in NAB; NAB v1.1 has none.
//
// Threshold. Each profile gets one threshold for the whole corpus: the one
// with the highest total. File.prepare computes what every row would be
// worth as a detection (profile-free); newSweep sorts the scorable rows of
// all files by decreasing anomaly score once; sweep.best then lowers the
// threshold through every distinct score, adding a false positive's value
// or raising a window's part to a detection's value, and keeps the best
// total — O(rows·log rows) for the sort, O(rows + changes·windows) per
// profile (a window's part changes only when an earlier detection appears).
// The start threshold is 1.1 (never fires); ties keep the higher threshold,
// as NAB's stable sort does. evaluate then scores each file at the chosen
// threshold (scoreFile) and panics if the files do not add up to the
// sweep's total: the two paths are independent implementations of the
// same rule. TestSweepMatchesBruteForce checks the sweep against every
// candidate threshold.
//
// Normalisation. 100·(raw − null)/(perfect − null), null = the raw score of
// NAB's null detector (a constant; computed, not assumed: −FN per scorable
// window), perfect = windows in the labels × TP (runner.py). A detector
// that fires on the first row of every window and nowhere else scores 100.
//
// Check against NAB. The random baseline is NAB's random detector bit for
// bit: CPython's Mersenne Twister, random.seed(42) at the start of every
// file (its initialize()), uniform(0, 1) per row — the values of NAB's
// published results/random/*.csv. It scores 17.66 / 7.48 / 27.57, the
// figures the dataset README gives for those results re-scored with the
// exhaustive sweep (final_results.json's 16.83 / 5.76 / 25.88 came from
// the older hill-climbing search, which can miss the best threshold; the
// NAB README's 11.0 / 1.2 / 19.5 is a mean over seeds).
//
// Where this is stricter than NAB. A window boundary must be the timestamp
// of exactly one row (NAB takes the first match; several files repeat a
// timestamp or step back in time, none at a boundary); windows must be
// sorted, disjoint and ≥ 2 rows wide (NAB divides by w − 1); data files and
// labels must list the same files. A results file must have the data
// file's rows in its order (timestamps compared as text or, failing that,
// as times; values, when present, to 1e-9 relative) and every anomaly
// score in [0, 1], NaN excluded. Every results file is checked before
// anything is scored and the first five problems are reported.
//
// Where it differs in the last bits. Float sums are taken in another
// order than Python's dict sums, so raw scores can differ in the 13th
// digit; an exact tie between two thresholds could in principle resolve
// differently. NAB's per-file scoreDataSet can find no row for a threshold
// below every score of a file; scoreFile has no such case.
//
// Cost. The 58 files (365,558 rows) load in ~0.4 s; each detector then
// takes ~0.1 s on one core. Files are read one after the other: the
// machine is shared and the run is short.
