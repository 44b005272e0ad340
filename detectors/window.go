package detectors

import "math"

// The ring buffer shared by the rolling z-score and the trend slope.
//
// A ring of capacity c is a []float32 of length 2c owned by the caller:
// entry i is ring[2i] = y, ring[2i+1] = x, where
//
//	value = vRef + y       (y float32, relative to a per-window reference)
//	time  = tBase + 1000·x (x float32 seconds, relative to a per-window base)
//
// 8 bytes an entry instead of 16 (float64 value + int64 time). Both
// references are moved to the newest entry's value and time every time the
// ring wraps (every c samples), so |y| is a few window spreads and |x| at
// most about two window spans, and float32's 24-bit mantissa costs a
// relative error of 6e-8 *of the spread and of the span*, not of the value
// or of the Unix time: a series at 1e12 ± 1 is stored to ±6e-8, a 450 s
// window to ±30 µs. (The newest sample rather than the mean, so that after a
// gap or a level shift the samples that follow are the precise ones; like
// the intercept time of Prometheus's linearRegression, it centres x on a
// point of the window.) float32 seconds never overflow (uint32 milliseconds
// would after 49 days). The price: after a level shift of D
// the entries pushed before the next wrap carry an error of up to 6e-8·D
// until they are evicted, so a jump from 0 to 1e9 on a series whose noise
// is below ~60 looks noisier than it is for one window (wider band, never a
// false alarm). Values further than math.MaxFloat32 from the reference
// saturate.
//
// The sums Σx, Σy, Σx², Σxy, Σy² are kept running (add the new entry,
// subtract the evicted one: O(1)); the wrap recomputes them from the ring
// with Kahan-Neumaier summation, so rounding drift cannot build up over more
// than c samples (amortised O(1)), and so does the eviction of a term that
// dwarfs the rest (see push).
type window struct {
	tBase                 int64   // ms
	vRef                  float64 // value reference
	sx, sy, sxx, sxy, syy float64 // sums over the entries in the ring
	head, n               uint16  // index of the oldest entry; number of entries
	mae                   float64 // slow mean |v − window mean| (SlowAlpha), floors ZScore's sd
}

// maxOffset bounds |x| of a new sample, in seconds (2^16 s ≈ 18 h, where a
// float32 step is 7.8 ms). After a longer gap, or in a window spanning more
// than that, the base moves to the new sample first (O(c)), so the samples
// that follow keep offsets exact to 4 ms and the old ones, about to be
// evicted, get coarser ones.
const maxOffset = 1 << 16

// reset empties the window; the ring contents become irrelevant.
func (w *window) reset() {
	*w = window{}
}

// each calls f with the entries, oldest first, as time (ms) and value.
func (w *window) each(ring []float32, f func(t int64, v float64)) {
	c := len(ring) / 2
	for j, i := 0, int(w.head); j < int(w.n); j++ {
		x, y := float64(ring[2*i+1]), float64(ring[2*i])
		f(w.tBase+int64(math.Round(1000*x)), w.vRef+y)
		if i++; i == c {
			i = 0
		}
	}
}

// push appends (t, v), evicting the oldest entry if the ring is full.
func (w *window) push(ring []float32, t int64, v float64) {
	c := len(ring) / 2
	if c == 0 {
		return
	}
	if w.n == 0 {
		*w = window{tBase: t, vRef: v, mae: w.mae}
	}
	x := float64(t-w.tBase) / 1000
	if !(math.Abs(x) <= maxOffset) {
		w.rebase(ring, t, w.vRef)
		x = 0
	}
	var i int
	exact := false
	if int(w.n) < c {
		i = int(w.head) + int(w.n)
		if i >= c {
			i -= c
		}
		w.n++
	} else {
		i = int(w.head)
		ox, oy := float64(ring[2*i+1]), float64(ring[2*i])
		w.sx -= ox
		w.sy -= oy
		w.sxx -= ox * ox
		w.sxy -= ox * oy
		w.syy -= oy * oy
		// Subtracting a term that dwarfs what remains (an outlier or a
		// pre-gap time leaving) cancels catastrophically: the rounding
		// error of the big sum would swamp the small one, e.g. Σy² after
		// a 1e9 spike on unit noise. Recompute exactly instead. A
		// remaining sum ≤ 0 (rounding) also triggers it.
		exact = ox*ox > 1e4*w.sxx || oy*oy > 1e4*w.syy
		w.head++
		if int(w.head) == c {
			w.head = 0
		}
	}
	y32, x32 := f32(v-w.vRef), float32(x)
	ring[2*i], ring[2*i+1] = y32, x32
	nx, ny := float64(x32), float64(y32)
	w.sx += nx
	w.sy += ny
	w.sxx += nx * nx
	w.sxy += nx * ny
	w.syy += ny * ny
	switch {
	case i == c-1:
		// The ring filled up or wrapped (every c pushes): move both
		// references to this newest sample and recompute the sums exactly.
		w.rebase(ring, t, v)
	case exact:
		w.rebase(ring, w.tBase, w.vRef)
	}
}

// rebase re-expresses every entry relative to tBase and vRef and
// recomputes the sums from the ring with Kahan-Neumaier summation. O(n).
func (w *window) rebase(ring []float32, tBase int64, vRef float64) {
	c := len(ring) / 2
	dx, dy := float64(tBase-w.tBase)/1000, vRef-w.vRef
	var sx, sy, sxx, sxy, syy, cx, cy, cxx, cxy, cyy float64
	for j, i := 0, int(w.head); j < int(w.n); j++ {
		x32 := float32(float64(ring[2*i+1]) - dx)
		y32 := f32(float64(ring[2*i]) - dy)
		ring[2*i], ring[2*i+1] = y32, x32
		x, y := float64(x32), float64(y32)
		sx, cx = kahanInc(x, sx, cx)
		sy, cy = kahanInc(y, sy, cy)
		sxx, cxx = kahanInc(x*x, sxx, cxx)
		sxy, cxy = kahanInc(x*y, sxy, cxy)
		syy, cyy = kahanInc(y*y, syy, cyy)
		if i++; i == c {
			i = 0
		}
	}
	w.tBase, w.vRef = tBase, vRef
	w.sx, w.sy, w.sxx, w.sxy, w.syy = sx+cx, sy+cy, sxx+cxx, sxy+cxy, syy+cyy
}

// kahanInc adds inc to sum with Kahan-Neumaier compensation c, as
// Prometheus's util/kahansum.Inc (used by promql linearRegression). The
// float64 conversions are not no-ops: they forbid fusing a multiply-add
// across the call, which would break the compensation.
func kahanInc(inc, sum, c float64) (newSum, newC float64) {
	inc, sum, c = float64(inc), float64(sum), float64(c)
	t := sum + inc
	switch {
	case t > math.MaxFloat64 || t < -math.MaxFloat64:
		c = 0
	case math.Abs(sum) >= math.Abs(inc):
		c += (sum - t) + inc
	default:
		c += (inc - t) + sum
	}
	return float64(t), float64(c)
}

// zscore is the rolling z-score verdict on v against the window before v:
// expected = window mean, band = mean ± k·sd with sd the sample standard
// deviation (n − 1 in the denominator):
//
//	mean = vRef + Σy/n,  sd² = (Σy² − (Σy)²/n) / (n − 1)
//
// (the shifted-data variance: y is relative to vRef, a recent sample a few
// spreads from the mean, so the subtraction does not cancel
// catastrophically). Ready needs ≥ 3 entries.
func (w *window) zscore(k float64, rdy bool, seen uint32, v float64) Result {
	if w.n == 0 {
		return Result{}
	}
	n := float64(w.n)
	my := w.sy / n
	var sd float64
	if w.n > 1 {
		if q := (w.syy - w.sy*my) / (n - 1); q > 0 {
			sd = math.Sqrt(q)
		}
	}
	mean := w.vRef + my
	sd = max(sd, w.mae)
	r := verdict(v, mean, sd, k, rdy && w.n >= 3)
	lim := math.Inf(1)
	if r.Ready {
		lim = k * sigmaFloor(sd, mean)
	}
	// |v − mean| overflows to +Inf for values near ±math.MaxFloat64 of
	// opposite signs; capped, the floor stays finite (it would otherwise
	// be +Inf, then NaN for good, and every later band too narrow).
	w.mae = slowMAD(w.mae, min(math.Abs(v-mean), math.MaxFloat64), lim, seen)
	return r
}

// slope is the trend verdict on the sample at t from the least-squares
// line through the window before it (x in seconds, centred on the means):
//
//	Sxx = Σx² − (Σx)²/n,  Sxy = Σxy − Σx·Σy/n,  Syy = Σy² − (Σy)²/n
//	b = Sxy / Sxx                      (slope, value per second)
//	σ_res = √((Syy − b·Sxy) / (n − 2)) (residual standard deviation)
//	expected = vRef + Σy/n + b·(x_t − Σx/n)
//	band = expected ± k·σ_eff,  σ_eff = max(σ_res, RelFloor·|expected|, AbsFloor)
//	score = |b|·span / (k·σ_eff),  span = x_newest − x_oldest
//
// The score is how many band half-widths the fitted line moved across the
// window: a steady drift of more than k residual deviations over the window
// scores > 1, a single spike of any height h at the window's end moves the
// line by ≈ 6h/n and inflates σ_res to ≈ h/√n, so it scores ≈ 6/(k·√n)
// (0.27 for n = 30, k = 4). The score ignores v itself: the sample is judged
// by where the window was heading, not by its own value. Ready needs ≥ 3
// entries (σ_res has n − 2 degrees of freedom).
func (w *window) slope(ring []float32, k float64, rdy bool, t int64, gate float64) (r Result, agree float64) {
	if w.n < 3 {
		return Result{}, 1
	}
	n := float64(w.n)
	mx, my := w.sx/n, w.sy/n
	sxx := w.sxx - w.sx*mx
	sxy := w.sxy - w.sx*my
	syy := w.syy - w.sy*my
	var b float64
	if sxx > 0 {
		b = sxy / sxx
	}
	var sd float64
	if sse := syy - b*sxy; sse > 0 {
		sd = math.Sqrt(sse / (n - 2))
	}
	exp := w.vRef + my + b*(float64(t-w.tBase)/1000-mx)
	r, h := bandOf(exp, k*sigmaFloor(sd, exp), rdy)
	agree = 1
	if rdy {
		c := len(ring) / 2
		oldest := int(w.head)
		newest := oldest + int(w.n) - 1
		if newest >= c {
			newest -= c
		}
		span := float64(ring[2*newest+1]) - float64(ring[2*oldest+1])
		r.Score = clampScore(math.Abs(b) * span / h)
		if r.Score >= gate {
			agree = w.recentAgrees(ring, b)
		}
	}
	return r, agree
}

// agreeGate is the raw slope score below which the slope's final score
// cannot reach 1, so recentAgrees need not run (its O(Window) pass is the
// slope's whole cost otherwise): 1 uncalibrated; calibrated, a score of 1
// needs ln(1 + raw) ≥ K·CalibMinSpread, so raw ≥ expm1(K·CalibMinSpread) ≥
// K·CalibMinSpread.
func agreeGate(p *CalibrationParams) float64 {
	if !p.Enabled {
		return 1
	}
	return p.K * CalibMinSpread
}

// recentAgrees returns how much of slope b the newer half of the window
// shows, in [0, 1]: its own least-squares slope over b. A trend holds
// across the window, so its newer half heads the same way (≈ 1, the
// noisier estimate either side). A block of shifted values in the older
// half, a level shift that came and went, tilts the line through the whole
// window while the newer half is flat (≈ 0): the line would call the
// return to normal a trend, on every series the shift moved, for as long
// as the block takes to leave the window. 1 with fewer than 6 entries.
func (w *window) recentAgrees(ring []float32, b float64) float64 {
	m := int(w.n) / 2
	if m < 3 || b == 0 {
		return 1
	}
	c := len(ring) / 2
	i := int(w.head) + int(w.n) - m
	if i >= c {
		i -= c
	}
	var sx, sy, sxx, sxy float64
	for range m {
		x, y := float64(ring[2*i+1]), float64(ring[2*i])
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
		if i++; i == c {
			i = 0
		}
	}
	n := float64(m)
	dxx := sxx - sx*sx/n
	if !(dxx > 0) {
		return 1
	}
	return min(max((sxy-sx*sy/n)/dxx/b, 0), 1)
}

// ZScore is the rolling z-score detector on its own: Expected = mean of the
// last Params.Window samples before the current one, band = mean ± K·sd
// (sample standard deviation), raw score |v − mean| / (K·sd), sd floored
// (at the slow mean absolute error too), then calibrated if
// Params.Calibration is enabled (see calib). Init it before use. A ZScore
// is not safe for concurrent use.
type ZScore struct {
	p    *Params
	n    uint32
	w    window
	cal  calib
	ring []float32
}

// Init binds p (which must be valid and must not change afterwards),
// allocates the ring (one allocation) and resets the state. It panics if p
// is invalid.
func (d *ZScore) Init(p *Params) {
	mustValid(p)
	*d = ZScore{p: p, ring: make([]float32, 2*p.Window)}
}

// Update scores v at time t (ms, strictly increasing) and includes it. It
// does not allocate.
func (d *ZScore) Update(t int64, v float64) Result {
	r := d.w.zscore(d.p.ZScore.K, ready(d.n, d.p.Warmup), d.n, v)
	calibrateBand(&r, d.cal.apply(&r, &d.p.Calibration))
	d.w.push(d.ring, t, v)
	d.n = inc(d.n)
	return r
}

// Reset forgets every sample and keeps the ring.
func (d *ZScore) Reset() {
	d.n, d.cal = 0, calib{}
	d.w.reset()
}

// Slope is the trend-slope detector on its own. It fits the least-squares
// line (slope b per second, residual deviation σ_res) through the last
// Params.Window samples before the current one and reports
//
//	Expected = the line at t,  band = Expected ± K·σ_eff
//	Score    = |b|·span / (K·σ_eff)
//
// with span the window's time span and σ_eff the floored σ_res: how many
// band half-widths the line moved across the window. A steady drift scores
// > 1, a single spike ≈ 6/(K·√Window). The score does not look at v. That
// is the raw score; it is calibrated if Params.Calibration is enabled (see
// calib). Init it before use. A Slope is not safe for concurrent use.
type Slope struct {
	p    *Params
	n    uint32
	w    window
	cal  calib
	ring []float32
}

// Init binds p (which must be valid and must not change afterwards),
// allocates the ring (one allocation) and resets the state. It panics if p
// is invalid.
func (d *Slope) Init(p *Params) {
	mustValid(p)
	*d = Slope{p: p, ring: make([]float32, 2*p.Window)}
}

// Update scores the drift of the window before (t, v), then includes the
// sample. t is in ms and strictly increasing. It does not allocate.
func (d *Slope) Update(t int64, v float64) Result {
	r, agree := d.w.slope(d.ring, d.p.Slope.K, ready(d.n, d.p.Warmup), t, agreeGate(&d.p.Calibration))
	calibrateBand(&r, d.cal.apply(&r, &d.p.Calibration))
	r.Score *= agree
	d.w.push(d.ring, t, v)
	d.n = inc(d.n)
	return r
}

// Reset forgets every sample and keeps the ring.
func (d *Slope) Reset() {
	d.n, d.cal = 0, calib{}
	d.w.reset()
}
