package ingest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/window/series"
)

// canonicalKey validates the labels of s, sorting them in place, and
// appends its canonical key (see appendKey) to dst. It returns reasonOK or
// why the series is invalid, with a readable detail; the key is only
// meaningful with reasonOK.
//
// Senders almost always send a series' labels sorted by name, so for them
// it checks the order, validates and builds the key in one pass over the
// labels, which is most of ingest's work per sample after decoding: the
// answers are those of canonicalise and appendKey, which take over at the
// first label out of order or invalid.
func (h *Handler) canonicalKey(dst []byte, req *request, s *wireSeries, proto string, opts *Options, skip string) ([]byte, reason, string) {
	if s.badRef != refOK || (proto == protoV2 && s.histograms > 0 && s.samplesEnd > s.samplesStart) {
		why, detail := h.canonicalise(req, s, proto, opts)
		return dst, why, detail
	}
	ls := req.labels[s.labelsStart:s.labelsEnd]
	checkUTF8 := needUTF8Check(req, ls, proto)
	start := len(dst)
	n := 0
	hasName := false
	var prev []byte
	for i, l := range ls {
		name, value := req.str(l.name), req.str(l.value)
		// Out of order, or invalid: the general path sorts first, so it
		// gives the answer (an invalid series' first fault is that of its
		// sorted labels). Most adjacent names differ in their first byte.
		if i > 0 {
			if len(name) > 0 && len(prev) > 0 && name[0] != prev[0] {
				if name[0] < prev[0] {
					return h.sortedKey(dst[:start], req, s, proto, opts, skip)
				}
			} else if bytes.Compare(name, prev) <= 0 {
				return h.sortedKey(dst[:start], req, s, proto, opts, skip)
			}
		}
		prev = name
		if len(name) == 0 || len(name) > opts.MaxLabelNameLength || len(value) > opts.MaxLabelValueLength ||
			(checkUTF8 && (!utf8.Valid(name) || !utf8.Valid(value))) {
			return h.sortedKey(dst[:start], req, s, proto, opts, skip)
		}
		if len(value) == 0 {
			continue // an empty value means the label is absent
		}
		if string(name) == labels.MetricName { // no allocation: the compiler optimises the conversion
			hasName = true
		}
		n++
		if skip == "" || string(name) != skip {
			dst = series.AppendLabel(dst, name, value)
		}
	}
	if why, detail := checkCounts(s, proto, opts, hasName, n); why != reasonOK {
		return dst, why, detail
	}
	return dst, reasonOK, ""
}

// sortedKey is canonicalKey's general path: canonicalise, then appendKey.
func (h *Handler) sortedKey(dst []byte, req *request, s *wireSeries, proto string, opts *Options, skip string) ([]byte, reason, string) {
	if why, detail := h.canonicalise(req, s, proto, opts); why != reasonOK {
		return dst, why, detail
	}
	return appendKey(dst, req, s, skip, ""), reasonOK, ""
}

// canonicalise sorts the labels of s in place and validates them. It
// returns reasonOK or why the series is invalid, with a readable detail.
func (h *Handler) canonicalise(req *request, s *wireSeries, proto string, opts *Options) (reason, string) {
	if s.badRef != refOK {
		return reasonBadSymbolRef, badRefDetail(s, len(req.symbols))
	}
	if proto == protoV2 && s.histograms > 0 && s.samplesEnd > s.samplesStart {
		return reasonSamplesAndHistograms, "a series must not carry both samples and histograms"
	}
	ls := req.labels[s.labelsStart:s.labelsEnd]
	checkUTF8 := needUTF8Check(req, ls, proto)
	// Insertion sort by name: senders almost always send sorted labels, so
	// this is one pass; it does not allocate, unlike sort.Slice.
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && bytes.Compare(req.str(ls[j].name), req.str(ls[j-1].name)) < 0; j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
	n := 0
	hasName := false
	var prev []byte
	for i, l := range ls {
		name, value := req.str(l.name), req.str(l.value)
		if len(name) == 0 {
			return reasonEmptyLabelName, "empty label name"
		}
		if i > 0 && bytes.Equal(name, prev) {
			return reasonDuplicateLabel, fmt.Sprintf("duplicate label name %q", name)
		}
		prev = name
		if len(name) > opts.MaxLabelNameLength {
			return reasonNameTooLong, fmt.Sprintf("label name of %d bytes exceeds limit %d (ingest.max_label_name_length)", len(name), opts.MaxLabelNameLength)
		}
		if len(value) > opts.MaxLabelValueLength {
			return reasonValueTooLong, fmt.Sprintf("value of label %q of %d bytes exceeds limit %d (ingest.max_label_value_length)", name, len(value), opts.MaxLabelValueLength)
		}
		if checkUTF8 && (!utf8.Valid(name) || !utf8.Valid(value)) {
			return reasonInvalidUTF8, fmt.Sprintf("label %q is not valid UTF-8", name)
		}
		if len(value) == 0 {
			continue // an empty value means the label is absent
		}
		if string(name) == labels.MetricName { // no allocation: the compiler optimises the conversion
			hasName = true
		}
		n++
	}
	return checkCounts(s, proto, opts, hasName, n)
}

// needUTF8Check reports whether the labels ls of a series must be
// checked one by one for UTF-8. RW2 symbols were checked once per request.
// RW1 labels of a series sit together in the buffer, so one ASCII pass
// over their span (tags and one-byte lengths are ASCII too) usually
// settles it.
func needUTF8Check(req *request, ls []labelRef, proto string) bool {
	if proto == protoV2 {
		return !req.symbolsUTF8
	}
	if len(ls) == 0 {
		return true
	}
	lo, hi := ls[0].name.off, ls[0].value.off+ls[0].value.len
	total := uint32(0)
	for _, l := range ls {
		lo = min(lo, l.name.off, l.value.off)
		hi = max(hi, l.name.off+l.name.len, l.value.off+l.value.len)
		total += l.name.len + l.value.len
	}
	// Only when the span is the labels and their framing: per label a
	// TimeSeries tag and length, a Label tag and length for the name and
	// for the value (6 bytes with one-byte lengths; 8 allows longer).
	return hi-lo > total+8*uint32(len(ls)) || !isASCII(req.buf[lo:hi])
}

// checkCounts is the validation of a series after its labels: a name,
// at most ingest.max_labels_per_series labels (n, the non-empty ones),
// and in RW2 a sample or a histogram.
func checkCounts(s *wireSeries, proto string, opts *Options, hasName bool, n int) (reason, string) {
	if !hasName {
		return reasonMissingName, "no __name__ label"
	}
	if n > opts.MaxLabelsPerSeries {
		return reasonTooManyLabels, fmt.Sprintf("%d labels exceed limit %d (ingest.max_labels_per_series)", n, opts.MaxLabelsPerSeries)
	}
	// RW2: a series must carry a sample or a histogram; exemplars alone are
	// malformed (the spec, and Prometheus's receiver answers 400). RW1 has
	// no such rule, and Prometheus's RW1 sender puts exemplars in series of
	// their own, so there they are only ignored.
	if proto == protoV2 && s.samplesEnd == s.samplesStart && s.histograms == 0 {
		return reasonNoSamples, fmt.Sprintf("a series must carry at least one sample or histogram (it has %d exemplars)", s.exemplars)
	}
	return reasonOK, ""
}

// badRefDetail describes the symbol reference fault of s for a 400 body;
// nSymbols is the size of the request's symbol table.
func badRefDetail(s *wireSeries, nSymbols int) string {
	switch s.badRef {
	case refLabelsOdd:
		return fmt.Sprintf("labels_refs has odd length %d", s.badRefValue)
	case refLabels:
		return fmt.Sprintf("labels_refs reference %d is beyond the symbols table (size %d)", s.badRefValue, nSymbols)
	case refHelp:
		return fmt.Sprintf("metadata.help_ref %d is beyond the symbols table (size %d)", s.badRefValue, nSymbols)
	case refUnit:
		return fmt.Sprintf("metadata.unit_ref %d is beyond the symbols table (size %d)", s.badRefValue, nSymbols)
	}
	panic(fmt.Sprintf("BUG: badRefDetail called with fault %d", s.badRef))
}

// appendKey appends the canonical key (series.AppendLabel) of the sorted,
// valid series s, without the label called skip ("" skips none): the HA
// replica label, so that the replicas of a pair write one series. suffix
// is appended to the metric name: "_count" and "_sum" name the two series
// derived from a native histogram. Only __name__ changes and labels are
// sorted by name, so the key stays canonical.
func appendKey(dst []byte, req *request, s *wireSeries, skip, suffix string) []byte {
	for _, l := range req.labels[s.labelsStart:s.labelsEnd] {
		name := req.str(l.name)
		if l.value.len == 0 || (skip != "" && string(name) == skip) {
			continue
		}
		dst = series.AppendLabel(dst, name, req.str(l.value))
		if suffix != "" && string(name) == labels.MetricName {
			dst = append(dst[:len(dst)-1], suffix...)
			dst = append(dst, series.LabelSep)
		}
	}
	return dst
}

// isCounter: metadata says COUNTER, or the name ends as counters do.
func isCounter(name []byte, metricType uint8, types map[string]uint8) bool {
	if metricType == metricTypeCounter {
		return true
	}
	if series.IsCounterName(name) {
		return true
	}
	return len(types) > 0 && types[string(name)] == metricTypeCounter
}

// learnMetadata records RW1 metadata types, copying the map only when
// something changed.
func (h *Handler) learnMetadata(req *request) {
	types := *h.metricTypes.Load()
	changed := false
	for _, m := range req.metadata {
		if t, ok := types[string(req.str(m.name))]; !ok || t != m.metricType {
			changed = true
			break
		}
	}
	if !changed {
		return
	}
	h.metaMu.Lock()
	defer h.metaMu.Unlock()
	old := *h.metricTypes.Load()
	next := make(map[string]uint8, len(old)+len(req.metadata))
	for k, v := range old {
		next[k] = v
	}
	for _, m := range req.metadata {
		if m.name.len > 0 {
			next[string(req.str(m.name))] = m.metricType
		}
	}
	h.metricTypes.Store(&next)
	h.m.metadata.Add(float64(len(req.metadata)))
}

// formatLabels renders a series for an error message (error path only).
func formatLabels(req *request, s *wireSeries) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, l := range req.labels[s.labelsStart:s.labelsEnd] {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(req.str(l.name)))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(string(req.str(l.value))))
		if b.Len() > 512 {
			b.WriteString(", …")
			break
		}
	}
	b.WriteByte('}')
	return b.String()
}

// isASCII reports whether every byte of b is below 0x80, eight at a time.
func isASCII(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
