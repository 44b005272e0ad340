package metrics

import (
	"bufio"
	"math"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/window/series"
)

// SnapshotSource gives the latest output of every series: one immutable
// slice per shard (window.Shards implements it).
type SnapshotSource interface {
	Snapshots(dst [][]series.Record) [][]series.Record
}

// families are the output families in the order /metrics writes them: a
// record's output (series.Names.Name), the slots it covers, its help.
var families = [...]struct {
	out   int
	slots uint16
	help  string
}{
	{series.OutScore, 1 << series.OutScore, "Anomaly score of the input series: 0 as expected, 1 on the band edge, above 1 anomalous."},
	{series.OutExpected, 1 << series.OutExpected, "Value the detector expected for the input series."},
	{series.OutLower, 1 << series.OutLower, "Lower edge of the expected band."},
	{series.OutUpper, 1 << series.OutUpper, "Upper edge of the expected band."},
	{series.OutDriver, (1<<detectors.NumKinds - 1) << series.OutDriver, "Detector that drove the combined score (a state set): 1 for it, 0 for the other enabled detectors."},
	{series.OutValue, 1 << series.OutValue, "Value the detectors analysed, of input series analysed as a per-second rate (counters, gauges that only grow): the value expected, lower and upper bound."},
}

// Handler serves /metrics: the latest value of every output series,
// then anomalyd's own metrics. It streams straight from the shard snapshots,
// so a scrape of a million series holds no more than a write buffer.
//
// With inc not nil the incident series of every group follow the output
// series.
func Handler(names func() series.Names, src SnapshotSource, inc IncidentSource, reg *prometheus.Registry) http.Handler {
	var pool sync.Pool
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw, _ := pool.Get().(*bufio.Writer)
		if bw == nil {
			bw = bufio.NewWriterSize(w, 64<<10)
		} else {
			bw.Reset(w)
		}
		defer pool.Put(bw)
		n := names()
		if err := WriteScores(bw, &n, src.Snapshots(nil)); err != nil {
			return // the client went away
		}
		if inc != nil {
			if err := WriteIncidents(bw, inc.IncidentGroups()); err != nil {
				return
			}
		}
		if err := bw.Flush(); err != nil {
			return
		}
		_ = promreg.WriteText(w, reg)
	})
}

// WriteScores writes the output series of snaps in the text format, one
// family after the other (the format wants a family's lines together): the
// four outputs, then the driver and value series if any record has them.
// Timestamps are left out: Prometheus scrapes them as of the scrape.
func WriteScores(w *bufio.Writer, names *series.Names, snaps [][]series.Record) error {
	var lbls []prompb.Label
	var seen uint16 = series.BandSlots // outputs of any record, gathered by the first family's pass
	for _, fam := range families {
		if seen&fam.slots == 0 {
			continue
		}
		name := names.Name(fam.out)
		header := false
		for _, snap := range snaps {
			for i := range snap {
				r := &snap[i]
				m := r.Slots()
				seen |= m
				m &= fam.slots
				for ; m != 0; m &= m - 1 {
					if !header {
						header = true
						w.WriteString("# HELP ")
						w.WriteString(name)
						w.WriteByte(' ')
						w.WriteString(fam.help)
						w.WriteString("\n# TYPE ")
						w.WriteString(name)
						w.WriteString(" gauge\n")
					}
					o := bits.TrailingZeros16(m)
					lbls = series.AppendOutputLabels(lbls[:0], r.Series, name, r.DetectorOf(o))
					if err := writeSample(w, lbls, name, r.Value(o)); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// writeSample writes one line: name{lbls} v, leaving out __name__.
func writeSample(w *bufio.Writer, lbls []prompb.Label, name string, v float64) error {
	w.WriteString(name)
	w.WriteByte('{')
	first := true
	for _, l := range lbls {
		if l.Name == "__name__" {
			continue
		}
		if !first {
			w.WriteByte(',')
		}
		first = false
		writeLabelName(w, l.Name)
		w.WriteString(`="`)
		if strings.ContainsAny(l.Value, "\\\"\n") {
			w.WriteString(escapeLabelValue(l.Value))
		} else {
			w.WriteString(l.Value)
		}
		w.WriteByte('"')
	}
	w.WriteString("} ")
	w.Write(appendFloat(w.AvailableBuffer(), v))
	return w.WriteByte('\n')
}

// writeLabelName writes n. Names the text format 0.0.4 does not allow
// (remote write 2.0 allows any UTF-8) are written with Prometheus 3's
// reversible "values" escaping: U__, then "__" for '_', the character for
// a legal one and _<hex code point>_ for any other. Unlike replacing with
// '_', two different names never collide.
func writeLabelName(w *bufio.Writer, n string) {
	ok := n != ""
	for i := 0; i < len(n); i++ {
		if !isLabelChar(n[i], i) {
			ok = false
			break
		}
	}
	if ok {
		w.WriteString(n)
		return
	}
	w.WriteString("U__")
	for i, r := range n {
		switch {
		case r == '_':
			w.WriteString("__")
		case r < utf8.RuneSelf && isLabelChar(byte(r), i):
			w.WriteRune(r)
		default:
			w.WriteByte('_')
			w.WriteString(strconv.FormatInt(int64(r), 16))
			w.WriteByte('_')
		}
	}
}

func isLabelChar(c byte, i int) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
}

// appendFloat appends v as the text format writes it (NaN, +Inf, -Inf).
func appendFloat(dst []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(dst, "NaN"...)
	case math.IsInf(v, 1):
		return append(dst, "+Inf"...)
	case math.IsInf(v, -1):
		return append(dst, "-Inf"...)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

var labelValueEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

// escapeLabelValue escapes a label value for the text format.
func escapeLabelValue(s string) string { return labelValueEscaper.Replace(s) }
