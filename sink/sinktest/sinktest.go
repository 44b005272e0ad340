// Package sinktest has test helpers for packages that hand records to a
// sink: a recorder standing in for the remote-write queue and /metrics, as
// net/http/httptest stands in for a client or server.
package sinktest

import (
	"sync"

	"github.com/anomalyd/anomalyd/sink"
)

// Recorder is a sink.Appender that keeps every record appended to it. It
// is safe for concurrent use; the zero value is ready.
type Recorder struct {
	mu   sync.Mutex
	recs []sink.Record
}

var _ sink.Appender = (*Recorder)(nil)

// Append keeps recs.
func (r *Recorder) Append(recs []sink.Record) {
	r.mu.Lock()
	r.recs = append(r.recs, recs...)
	r.mu.Unlock()
}

// Records returns a copy of the records kept so far.
func (r *Recorder) Records() []sink.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sink.Record(nil), r.recs...)
}

// Take returns the records kept so far and forgets them.
func (r *Recorder) Take() []sink.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.recs
	r.recs = nil
	return out
}

// Of returns the records kept so far of the series whose metric name is
// name.
func (r *Recorder) Of(name string) []sink.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sink.Record
	for _, rec := range r.recs {
		if rec.Series.Name == name {
			out = append(out, rec)
		}
	}
	return out
}

// Series counts the records kept so far per series (by canonical label
// set).
func (r *Recorder) Series() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]int{}
	for _, rec := range r.recs {
		m[rec.Series.Labels]++
	}
	return m
}
