package detectors

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

func TestHoltWintersHandComputed(t *testing.T) {
	p := smallParams() // alpha = beta = gamma = 0.5, K 2, no season, Warmup 2
	var d HoltWinters
	d.Init(&p)
	f := func(i int, v float64, want Result) {
		t.Helper()
		checkResult(t, i, d.Update(int64(i)*60000, v), want)
	}
	// 1: a = 10, b = 0, dev = 0.
	f(1, 10, Result{})
	// 2: ŷ = 10 + 0, d = dev = 0 → σ_eff = 1e-9·10, not ready.
	// a = 10 + 0.5·(12−10) = 11, b = 0.5·((11−10) − 0) = 0.5,
	// dev: weight max(0.5, 1/1) = 1 → |12−10| = 2.
	f(2, 12, band(10, 2*1e-8, 0, false))
	// 3: ŷ = 11 + 0.5 = 11.5, band ± 2·2, score 2.5/4.
	// a = 11.5 + 0.5·(14−11.5) = 12.75, b = 0.5 + 0.5·((12.75−11) − 0.5) = 1.125,
	// dev = 2 + 0.5·(2.5 − 2) = 2.25.
	f(3, 14, band(11.5, 4, 0.625, true))
	// 4: ŷ = 12.75 + 1.125 = 13.875, band ± 4.5, score 0.875/4.5.
	// a = 13.875 + 0.5·(13 − 13.875) = 13.4375,
	// b = 1.125 + 0.5·((13.4375−12.75) − 1.125) = 0.90625,
	// dev = 2.25 + 0.5·(0.875 − 2.25) = 1.5625.
	f(4, 13, band(13.875, 4.5, 0.875/4.5, true))
	// 5: ŷ = 13.4375 + 0.90625 = 14.34375, band ± 3.125, score 5.65625/3.125.
	f(5, 20, band(14.34375, 3.125, 5.65625/3.125, true))
}

func TestHoltWintersSeasonalHandComputed(t *testing.T) {
	p := smallParams()
	hw := &p.HoltWinters
	hw.Season, hw.SeasonBuckets, hw.Beta, hw.K = model.Duration(4*time.Second), 4, 0, 1
	var d HoltWinters
	d.Init(&p)
	f := func(ms int64, v float64, want Result) {
		t.Helper()
		checkResult(t, int(ms), d.Update(ms, v), want)
	}
	// Season 4 s in four 1-s slots, samples at the slot centres (no
	// interpolation); beta 0 keeps b = 0.
	// Priming, t₀ = 0.5 s until 4.5 s: Holt's linear model, band from dev,
	// c[i] = mean of v − v₀ over slot i.
	f(500, 10, Result{}) // a = v₀ = 10, c[0] = 0
	// ŷ = 10, dev = 0 → σ_eff 1e-8, not ready. a = 11, dev = 2 (weight 1), c[1] = 2.
	f(1500, 12, band(10, 1e-8, 0, false))
	// ŷ = 11, d = dev = 2, score 1/2. a = 10.5, dev = 2 + 0.5·(1−2) = 1.5, c[2] = 0.
	f(2500, 10, band(11, 2, 0.5, true))
	// ŷ = 10.5, d = 1.5, score 2.5/1.5. a = 9.25, dev = 1.5 + 0.5·(2.5−1.5) = 2, c[3] = −2.
	f(3500, 8, band(10.5, 1.5, 2.5/1.5, true))
	if d.h.trusted != 0 || d.h.primed {
		t.Fatalf("trusted %b primed %v during priming", d.h.trusted, d.h.primed)
	}
	// t − t₀ = 4 s = S: prime. M = mean(0, 2, 0, −2) = 0, so c stays,
	// every d[i] = dev = 2, a = v₀ + M = 10, b = 0, all slots trusted.
	// Slot 0: ŷ = 10 + c[0] = 10, d[0] = 2, score 1/2.
	// Then a = 10 + 0.5·((11−0) − 10) = 10.5, dev = 1.5,
	// c[0] += 0.5·((11 − 10.5) − 0) = 0.25, d[0] += 0.5·(1 − 2) → 1.5.
	f(4500, 11, band(10, 2, 0.5, true))
	// Slot 1: ŷ = 10.5 + 2, d[1] = 2, score 0.5/2.
	// a = 10.5 + 0.5·((13−2) − 10.5) = 10.75, c[1] = 2 + 0.5·((13−10.75) − 2) = 2.125,
	// d[1] = 2 + 0.5·(0.5 − 2) = 1.25.
	f(5500, 13, band(12.5, 2, 0.25, true))
	// t = 6 s is halfway between the centres of slots 1 and 2:
	// c = ½·2.125 + ½·0 = 1.0625, d = ½·1.25 + ½·2 = 1.625,
	// ŷ = 10.75 + 1.0625 = 11.8125, score 0.1875/1.625.
	// a = 10.75 + 0.5·((12 − 1.0625) − 10.75) = 10.84375,
	// error of the seasonal (12 − 10.84375) − 1.0625 = 0.09375, shared ½ ½:
	// c[1] = 2.125 + 0.5·½·0.09375 = 2.1484375, c[2] = 0.0234375,
	// d[1] = 1.25 + 0.5·½·(0.1875 − 1.25) = 0.984375, d[2] = 2 + 0.25·(0.1875 − 2) = 1.546875.
	f(6000, 12, band(11.8125, 1.625, 0.1875/1.625, true))
	if d.seasonal[1] != 2.1484375 || d.seasonal[2] != 0.0234375 || d.deviation[1] != 0.984375 || d.deviation[2] != 1.546875 {
		t.Fatalf("got c %v d %v, want c[1] 2.1484375 c[2] 0.0234375 d[1] 0.984375 d[2] 1.546875",
			d.seasonal[:4], d.deviation[:4])
	}
	// t = 8.25 s (0.25 s into season 2), ¾ of the way from the centre of
	// slot 3 (3.5 s, previous season) to that of slot 0 (4.5 s):
	// c = ¼·c[3] + ¾·c[0] = ¼·(−2) + ¾·0.25 = −0.3125.
	a := d.h.level
	r := d.Update(8250, a)
	if want := a - 0.3125; r.Expected != want {
		t.Fatalf("wrapped interpolation: got expected %g, want %g", r.Expected, want)
	}
}

// A slot first visited after priming (a gap in the first season) has no
// seasonal term and the global band until a later season.
func TestHoltWintersSlotAfterPriming(t *testing.T) {
	p := smallParams()
	hw := &p.HoltWinters
	hw.Season, hw.SeasonBuckets = model.Duration(4*time.Second), 4
	var d HoltWinters
	d.Init(&p)
	for _, ms := range []int64{500, 1500, 4500, 5500} { // slots 0, 1; prime at 4.5 s
		d.Update(ms, 10)
	}
	if d.h.seen != 0b0011 || d.h.trusted != 0b0011 {
		t.Fatalf("after priming: seen %b trusted %b, want 11 11", d.h.seen, d.h.trusted)
	}
	d.h.dev = 3 // a recognisable global band
	r := d.Update(6500, 20)
	if r.Expected != 10 || r.Upper-r.Expected != 2*3 {
		t.Fatalf("unseen slot 2: got %+v, want the level 10 and the global band K·3", r)
	}
	if want := float32(20 - d.h.level); d.seasonal[2] != want {
		t.Fatalf("slot 2 first visit: c %g, want v − a' = %g", d.seasonal[2], want)
	}
	if d.h.seen != 0b0111 || d.h.trusted != 0b0011 {
		t.Fatalf("slot 2 visited: seen %b trusted %b, want 111 11", d.h.seen, d.h.trusted)
	}
	d.Update(8500, 10) // next season
	if d.h.trusted != 0b0111 {
		t.Fatalf("next season: trusted %b, want 111", d.h.trusted)
	}
}

// The slot is the hour of the day (UTC) for a 24 h season in 24 slots,
// whatever the intervals, gaps and sign of t; a slot is trusted after
// priming or once a later season has started.
func TestHoltWintersSlots(t *testing.T) {
	p := DefaultParams() // 24 h in 24 slots
	var d HoltWinters
	d.Init(&p)
	nz := noise(3, 1)
	tm := int64(-3 * day) // before 1970: floored modulo
	var seen, trusted uint64
	var t0 int64
	primed := false
	prevDay := int64(-1 << 62)
	for i := range 3000 {
		switch {
		case i%500 == 499:
			tm += int64(float64(5*day) * (nz() + 1)) // gaps up to 10 days
		default:
			tm += 1 + int64(float64(40*time.Minute/time.Millisecond)*(nz()+1))
		}
		d.Update(tm, float64(i%7))
		ut := time.UnixMilli(tm).UTC()
		dayNo, _, _, _, _ := position(tm, day, 24)
		switch {
		case i == 0:
			t0 = tm
		case !primed && tm-t0 >= day:
			primed, trusted = true, seen // the first full day ends priming
		case primed && dayNo != prevDay:
			trusted = seen // a new day trusts what earlier days visited
		}
		seen |= 1 << ut.Hour()
		if d.h.seen != seen || d.h.trusted != trusted {
			t.Fatalf("sample %d (%s): seen %b trusted %b, want %b %b", i, ut, d.h.seen, d.h.trusted, seen, trusted)
		}
		prevDay = dayNo
	}
	if seen != 1<<24-1 {
		t.Fatalf("test visited only %b", seen)
	}

	f := func(tm int64, wantEpoch int64, wantSlot, wantI, wantJ int, wantF float64) {
		t.Helper()
		e, slot, i, j, fr := position(tm, day, 24)
		if e != wantEpoch || slot != wantSlot || i != wantI || j != wantJ || !closeTo(fr, wantF, 1e-12) {
			t.Errorf("position(%d): got %d %d %d %d %g, want %d %d %d %d %g", tm, e, slot, i, j, fr, wantEpoch, wantSlot, wantI, wantJ, wantF)
		}
	}
	const h = 3600 * 1000
	f(0, 0, 0, 23, 0, 0.5)                      // 00:00, halfway from the 23:30 centre to 00:30
	f(h/2, 0, 0, 0, 1, 0)                       // 00:30: slot 0's centre
	f(2*h+h/2+h/4, 0, 2, 2, 3, 0.25)            // 02:45
	f(day-1, 0, 23, 23, 0, 0.5-1.0/h)           // 23:59:59.999
	f(-1, -1, 23, 23, 0, 0.5-1.0/h)             // 1 ms before 1970
	f(-day-h, -2, 23, 22, 23, 0.5)              // 23:00 two days before 1970
	f(19700*day+13*h+h/2, 19700, 13, 13, 14, 0) // 13:30 on day 19700
}

// A season that is not a whole number of slot milliseconds still maps
// [0, S) onto exactly [0, B): floor((t mod S)·B / S).
func TestHoltWintersUnevenSlots(t *testing.T) {
	p := DefaultParams()
	p.HoltWinters.Season = model.Duration(10*time.Second + time.Millisecond) // 10001 ms
	p.HoltWinters.SeasonBuckets = 7
	var d HoltWinters
	d.Init(&p)
	for ms := range int64(10001) {
		d.Update(ms, 1)
	}
	if d.h.seen != 1<<7-1 {
		t.Fatalf("seen %b, want all 7 slots", d.h.seen)
	}
	if _, slot, _, _, _ := position(10000, 10001, 7); slot != 6 {
		t.Fatalf("last ms in slot %d, want 6", slot)
	}
}

// Values near math.MaxFloat64 overflow the level; the model restarts from
// the sample instead of staying Inf or NaN.
func TestHoltWintersOverflowRestarts(t *testing.T) {
	p := DefaultParams()
	p.Warmup = 2
	var d HoltWinters
	d.Init(&p)
	for i, v := range []float64{-math.MaxFloat64, math.MaxFloat64, math.MaxFloat64, -math.MaxFloat64, 1, 2, 3} {
		r := d.Update(int64(i)*3600*1000, v)
		if !(r.Score >= 0 && r.Score <= MaxScore) {
			t.Fatalf("sample %d: score %g", i, r.Score)
		}
		if !isFinite(d.h.level) || !isFinite(d.h.trend) || !isFinite(d.h.dev) {
			t.Fatalf("sample %d: state %+v", i, d.h)
		}
	}
}
