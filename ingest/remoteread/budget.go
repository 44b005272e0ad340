package remoteread

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// budget is a FIFO weighted semaphore over decoded response bytes: the
// warmup.max_bytes that all requests in flight share. FIFO, so that a
// request waiting for a large share is not overtaken forever by small ones.
type budget struct {
	mu      sync.Mutex
	max     int64
	used    int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{} // closed when the bytes are granted
}

// acquire takes n ≤ max bytes, waiting behind earlier callers until they
// are free or ctx ends.
func (b *budget) acquire(ctx context.Context, n int64) error {
	if n > b.max {
		panic(fmt.Sprintf("BUG: remoteread: acquire %d bytes of a budget of %d", n, b.max))
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.max {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.used -= n
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
		}
		b.grant() // the head may have changed
		return ctx.Err()
	}
}

// tryAcquire takes n bytes if they are free and nobody is waiting.
func (b *budget) tryAcquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiters) > 0 || b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.used < 0 {
		panic("BUG: remoteread: budget released more than acquired")
	}
	b.grant()
}

// grant wakes waiters in order while their bytes fit. b.mu is held.
func (b *budget) grant() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if b.used+w.n > b.max {
			return
		}
		b.used += w.n
		close(w.ready)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
	}
}

// reservation is one request's share of the budget: held bytes taken from
// b (nil: no shared budget, only the limit), used bytes decoded so far.
// One goroutine uses it.
type reservation struct {
	b     *budget
	held  int64
	used  int64
	limit int64 // of one response
}

// growStep is the least a reservation grows by, so that a response larger
// than its first share takes the budget's lock once per MiB, not per frame.
const growStep = 1 << 20

// take charges n decoded bytes. Beyond the limit it fails with errTooLarge;
// beyond the bytes held it takes more from the budget without waiting, and
// fails with errBudget if they are not free.
func (r *reservation) take(n int64) error {
	r.used += n
	if r.used > r.limit {
		return fmt.Errorf("%w (%d bytes)", errTooLarge, r.limit)
	}
	if r.b != nil && r.used > r.held {
		more := min(max(r.used-r.held, growStep), r.limit-r.held)
		if !r.b.tryAcquire(more) {
			return errBudget
		}
		r.held += more
	}
	return nil
}

// release returns every byte held to the budget.
func (r *reservation) release() {
	if r.b != nil && r.held > 0 {
		r.b.release(r.held)
	}
	r.held, r.used = 0, 0
}

// tokenBucket limits the series read per second
// (warmup.max_series_per_second). Only the dispatcher goroutine uses it.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int) tokenBucket {
	return tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// wait takes n tokens, sleeping until the bucket has refilled enough or ctx
// ends. Tokens may go negative: the debt is what the sleep pays off.
func (tb *tokenBucket) wait(ctx context.Context, n int) error {
	now := time.Now()
	tb.tokens = min(tb.burst, tb.tokens+now.Sub(tb.last).Seconds()*tb.rate)
	tb.last = now
	tb.tokens -= float64(n)
	if tb.tokens >= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(-tb.tokens / tb.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
