package window

// Sample is one float sample: t in milliseconds.
type Sample struct {
	T int64
	V float64
}

// BatchSeries is one series' share of a Batch. Offsets index Batch.Keys and
// Batch.Samples.
type BatchSeries struct {
	Hash                     uint64
	KeyStart, KeyEnd         uint32 // canonical labels in Batch.Keys
	NameStart, NameEnd       uint32 // the __name__ value, within the key
	SamplesStart, SamplesEnd uint32
	// Counter: the series is a counter (metadata or name suffix) and is
	// analysed as a per-second rate.
	Counter bool
}

// Batch carries one request's samples for one shard. The ingest side fills
// it (copying everything out of the request buffer) and hands it over with
// Shards.Enqueue; from then on the shard owns it and returns it to the pool.
type Batch struct {
	Keys    []byte
	Series  []BatchSeries
	Samples []Sample
}

// Reset empties b, keeping its memory.
func (b *Batch) Reset() {
	b.Keys = b.Keys[:0]
	b.Series = b.Series[:0]
	b.Samples = b.Samples[:0]
}

// Len returns the number of samples in b.
func (b *Batch) Len() int { return len(b.Samples) }

// GetBatch returns an empty batch, reusing one from the free list.
func (s *Shards) GetBatch() *Batch {
	select {
	case b := <-s.free:
		return b
	default:
		return &Batch{}
	}
}

// PutBatch returns b to the free list. The list is bounded (a sync.Pool is
// emptied by every GC, and regrowing batches showed in profiles); very large
// batches are dropped so one huge request does not pin memory.
func (s *Shards) PutBatch(b *Batch) {
	if cap(b.Keys) > 8<<20 || cap(b.Samples) > 1<<20 {
		return
	}
	b.Reset()
	select {
	case s.free <- b:
	default:
	}
}
