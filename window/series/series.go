// Package series is the series model every stage shares: the canonical
// label key that identifies an input series (built by ingest, owned by the
// shards), the Info a shard keeps for it, the Record a shard emits for each
// sample, and the output series a record becomes (names, labels, values).
//
// The canonical key is the label set sorted by name, empty values dropped,
// each label written as name 0xff value 0xff: exactly the bytes Prometheus's
// labels.StableHash hashes, so Hash(key) equals labels.StableHash of the same
// labels (pinned by a test) and a series keeps its shard and send queue
// across versions.
package series

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/detectors"
)

// LabelSep separates names and values in a canonical key. 0xff never
// occurs in valid UTF-8, so it cannot appear inside a name or a value.
const LabelSep = '\xff'

// AppendLabel appends one label to the canonical key dst. Labels must be
// appended sorted by name, and empty values left out.
func AppendLabel[S ~string | ~[]byte](dst []byte, name, value S) []byte {
	dst = append(dst, name...)
	dst = append(dst, LabelSep)
	dst = append(dst, value...)
	return append(dst, LabelSep)
}

// Hash returns the hash of a canonical key: xxhash64, equal to
// labels.StableHash of the same labels. It picks the shard that owns the
// series and its send queue, so it must never change.
func Hash(key []byte) uint64 { return xxhash.Sum64(key) }

// NameSpan returns the offsets of the __name__ value in a canonical key
// (0, 0 without one).
func NameSpan(key []byte) (start, end uint32) {
	for i := 0; i < len(key); {
		n := bytes.IndexByte(key[i:], LabelSep)
		if n < 0 {
			break
		}
		vs := i + n + 1
		m := bytes.IndexByte(key[vs:], LabelSep)
		if m < 0 {
			break
		}
		if string(key[i:i+n]) == "__name__" {
			return uint32(vs), uint32(vs + m)
		}
		i = vs + m + 1
	}
	return 0, 0
}

// counterSuffixes end the names of counters (and of histograms' and
// summaries' _count and _sum).
var counterSuffixes = [...]string{"_total", "_count", "_sum"}

// IsCounterName reports whether a metric name ends as counters' names do:
// the half of ingest's counter rule that needs no metadata (the other half
// is the remote-write metadata's type). The backtest uses it alone.
func IsCounterName[S ~string | ~[]byte](name S) bool {
	for _, suf := range counterSuffixes {
		// No allocation: a conversion compared at once is not copied.
		if len(name) >= len(suf) && string(name[len(name)-len(suf):]) == suf {
			return true
		}
	}
	return false
}

// Info is the identity of one input series. It is created once, when a
// shard first sees the series, and never modified afterwards, so records
// and snapshots may share it between goroutines freely.
type Info struct {
	// Labels is the canonical key as a string: name 0xff value 0xff …,
	// sorted by name, empty values dropped, __name__ included.
	Labels string
	// Name is the value of __name__ (a substring of Labels).
	Name string
	// Hash is Hash(Labels); it picks the shard and the send queue.
	Hash uint64
}

// NextLabel splits the first label off a canonical key:
// for name, value, rest := NextLabel(s); name != ""; name, value, rest = NextLabel(rest) {…}
func NextLabel(s string) (name, value, rest string) {
	i := strings.IndexByte(s, LabelSep)
	if i < 0 {
		return "", "", ""
	}
	name, s = s[:i], s[i+1:]
	j := strings.IndexByte(s, LabelSep)
	if j < 0 {
		return name, s, ""
	}
	return name, s[:j], s[j+1:]
}

// LabelValue returns the value of label name in the canonical key key, ""
// when it has none, as Prometheus's matchers see an absent label.
func LabelValue(key, name string) string {
	for n, v, rest := NextLabel(key); n != ""; n, v, rest = NextLabel(rest) {
		if n == name {
			return v
		}
	}
	return ""
}

// Format returns a canonical key as Prometheus prints a label set,
// {a="1", b="2"}, for logs and errors.
func Format(key string) string {
	b := []byte{'{'}
	for n, v, rest := NextLabel(key); n != ""; n, v, rest = NextLabel(rest) {
		if len(b) > 1 {
			b = append(b, ", "...)
		}
		b = append(b, n...)
		b = append(b, '=')
		b = strconv.AppendQuote(b, v)
	}
	return string(append(b, '}'))
}

// Record is the outcome of one input sample for one detector: the four
// output values at the input sample's timestamp and, on a combined record
// with DriverSet, the driver series. Records are values; the slices that
// carry them are owned by whoever hands them on, and a receiver copies
// what it keeps.
type Record struct {
	Series   *Info
	T        int64 // milliseconds, the input sample's timestamp
	Detector detectors.Kind
	// Stale: the input series ended (stale marker or eviction); every output
	// series of this detector gets a stale marker at T.
	Stale bool
	// Warmup: the detector has not seen enough samples; only the score (0)
	// is meaningful and Expected, Lower, Upper and the driver series are
	// not sent.
	Warmup bool
	// Driver is the single detector whose result became the combined one
	// (detectors.Output.Driver); meaningful when DriverSet is not 0.
	Driver detectors.Kind
	// DriverSet has bit 1<<k set for each single detector k that has a
	// driver series (output.driver: the enabled detectors of the series'
	// rule): Names.Driver{detector=k} is 1 for Driver, 0 for the others,
	// an OpenMetrics state set. 0 (the default, and always for a record
	// of a single detector) means no driver series.
	DriverSet uint8
	// Rate: Analysed is a per-second rate (of a counter, or of a gauge
	// that only grows), and so are Expected, Lower and Upper: the one case
	// where they are not in the input's units.
	Rate bool
	// HasValue: the record has the value series, Names.Value carrying
	// Analysed (output.value, on a Rate record).
	HasValue bool
	// OnlyExtras, with Stale, limits the stale markers to the series beside
	// the four outputs: the driver series in DriverSet and, with HasValue, the
	// value series. They end while the input series goes on (a reload turned
	// output.driver, output.value or a detector off, or metadata made a
	// counter a gauge).
	OnlyExtras bool

	Score, Expected, Lower, Upper float64
	// Analysed is the value the detectors analysed: the sample, or for a
	// counter (and a gauge that only grows) its per-second rate, the
	// quantity Expected, Lower and Upper bound. It is no output series: it
	// is for readers that show the record beside its input (the UI); 0 on a
	// stale or warm-up record.
	Analysed float64
}

// Names are the output series names (config.OutputConfig).
type Names struct {
	Score, Expected, Lower, Upper string
	// Driver names the driver series (output.driver_name).
	Driver string
	// Value names the value series (output.value_name).
	Value string
}

// Outputs of one record: OutScore to OutUpper are the outputs of
// r.Detector; OutDriver+k is the driver series of single detector k (see
// Record.DriverSet); OutValue is the value series (Record.HasValue).
const (
	OutScore = iota
	OutExpected
	OutLower
	OutUpper
	NumOutputs // the score and band outputs

	// OutDriver is the output of the first driver series.
	OutDriver = NumOutputs
	// OutValue is the value series, after the driver series.
	OutValue = OutDriver + int(detectors.NumKinds)
	// NumSlots counts every output a record can have.
	NumSlots = OutValue + 1
	// BandSlots are the bits of OutScore to OutUpper in Record.Slots.
	BandSlots = 1<<NumOutputs - 1
)

// Name returns the series name of output o.
func (n *Names) Name(o int) string {
	switch o {
	case OutScore:
		return n.Score
	case OutExpected:
		return n.Expected
	case OutLower:
		return n.Lower
	case OutUpper:
		return n.Upper
	case OutValue:
		return n.Value
	default:
		return n.Driver
	}
}

// Value returns the value of output o in r: for a driver series 1 if its
// detector is r.Driver, else 0; for the value series r.Analysed.
func (r *Record) Value(o int) float64 {
	switch o {
	case OutScore:
		return r.Score
	case OutExpected:
		return r.Expected
	case OutLower:
		return r.Lower
	case OutUpper:
		return r.Upper
	case OutValue:
		return r.Analysed
	}
	if detectors.Kind(o-OutDriver) == r.Driver {
		return 1
	}
	return 0
}

// DetectorOf returns the detector label value of output o of r. The value
// series carries r's, so it has the labels of r's expected value.
func (r *Record) DetectorOf(o int) detectors.Kind {
	if o < OutDriver || o == OutValue {
		return r.Detector
	}
	return detectors.Kind(o - OutDriver)
}

// Slots returns the outputs r becomes, bit 1<<o for output o: the score
// alone during warm-up; otherwise the score, the band, the driver series
// in DriverSet and the value series with HasValue (stale markers
// included); with OnlyExtras the driver series in DriverSet and the value
// series alone.
func (r *Record) Slots() uint16 {
	var v uint16
	if r.HasValue {
		v = 1 << OutValue
	}
	switch {
	case r.OnlyExtras:
		return uint16(r.DriverSet)<<OutDriver | v
	case r.Warmup && !r.Stale:
		return 1 << OutScore
	}
	return BandSlots | uint16(r.DriverSet)<<OutDriver | v
}

// AppendOutputLabels appends the labels of output series `name` for
// detector det of input series s to dst, sorted by name: every input label
// except __name__, plus __name__=name, metric=<input name> and
// detector=<det>. Input labels called metric or detector are renamed
// exported_metric and exported_detector (as Prometheus does with
// honor_labels: false), and so are le and quantile, which mean histogram
// buckets and summary quantiles while every output series is a gauge. The label strings alias s.Labels; nothing is allocated
// when dst has room.
func AppendOutputLabels(dst []prompb.Label, s *Info, name string, det detectors.Kind) []prompb.Label {
	start := len(dst)
	dst = append(dst, prompb.Label{Name: "__name__", Value: name})
	for n, v, rest := NextLabel(s.Labels); n != ""; n, v, rest = NextLabel(rest) {
		switch n {
		case "__name__":
			continue
		case "metric", "detector", "le", "quantile":
			// metric and detector are ours; le and quantile would claim
			// histogram or summary meaning for a gauge.
			n = exportedName(s.Labels, n)
		}
		dst = append(dst, prompb.Label{Name: n, Value: v})
	}
	dst = append(dst, prompb.Label{Name: "metric", Value: s.Name}, prompb.Label{Name: "detector", Value: det.String()})
	// Insertion sort: the input labels are already sorted, only the four
	// added or renamed ones are out of place.
	ls := dst[start:]
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && ls[j].Name < ls[j-1].Name; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
	return dst
}

// exportedName returns "exported_"+n, with more "exported_" prefixes while
// the input already has a label of that name (as Prometheus does), so output
// label names never repeat. Only the rare clash allocates.
func exportedName(labels, n string) string {
	e := exportedNames[n]
	for hasLabel(labels, e) {
		e = "exported_" + e
	}
	return e
}

var exportedNames = map[string]string{"metric": "exported_metric", "detector": "exported_detector",
	"le": "exported_le", "quantile": "exported_quantile"}

func hasLabel(labels, name string) bool {
	for n, _, rest := NextLabel(labels); n != ""; n, _, rest = NextLabel(rest) {
		if n == name {
			return true
		}
	}
	return false
}
