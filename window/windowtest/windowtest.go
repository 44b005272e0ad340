// Package windowtest has test helpers for packages that feed the shards or
// read what they emit: a recorder standing in for the sink (the window's
// Appender), as net/http/httptest stands in for a client or server.
package windowtest

import (
	"sync"

	"github.com/anomalyd/anomalyd/window/series"
)

// Recorder is a window.Appender that keeps every record appended to it. It
// is safe for concurrent use; the zero value is ready.
type Recorder struct {
	mu   sync.Mutex
	recs []series.Record
}

// Append keeps recs.
func (r *Recorder) Append(recs []series.Record) {
	r.mu.Lock()
	r.recs = append(r.recs, recs...)
	r.mu.Unlock()
}

// Records returns a copy of the records kept so far.
func (r *Recorder) Records() []series.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]series.Record(nil), r.recs...)
}

// Take returns the records kept so far and forgets them.
func (r *Recorder) Take() []series.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.recs
	r.recs = nil
	return out
}

// Of returns the records kept so far of the series whose metric name is
// name.
func (r *Recorder) Of(name string) []series.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []series.Record
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
