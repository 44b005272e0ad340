package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/window/series"
)

// A series' checkpoint record: everything a shard keeps of the series
// except what is rebuilt from it (its hash, its rule, its incident group)
// or what belongs to this process (when it last arrived, for the TTL).
// Little-endian, no padding:
//
//	version u8 (seriesRecordVersion)
//	uvarint len(labels) ‖ labels (the canonical key)
//	params u64: the paramsKey of the rule the detector state was built under
//	flags u8, trial u8, lastT i64, lastV f64
//	last: lastOut (outSize bytes)
//	per u8 (0 or 1) ‖ NumKinds × lastOut when 1
//	the detector state (detectors.Set.AppendState) to the end
//
// A lastOut is t i64, score, expected, lower, upper f64, warmup u8,
// driver u8, shown u8, peak f32. Floats are their IEEE 754 bits.
const (
	seriesRecordVersion = 1
	outSize             = 8 + 4*8 + 3 + 4
)

// savedFlags are the flags a record keeps: flagWarming is not among them,
// since a warming series is not checkpointed (its held samples and its
// request are this process's), and it reads its history again after a
// restart as any new series does.
const savedFlags = flagCounter | flagSeen | flagPrimed | flagStale | flagHasOutput | flagDeriv | flagFractional

// paramsKey identifies detector settings in a checkpoint: the state a Set
// builds under one Params means nothing under another (an alpha, a season),
// and a Set does not record them, so a series whose rule's settings changed
// between a checkpoint and the restore starts its detectors over, as it
// does on a reload (Rules.sameTreatment). %v prints every float exactly
// (the shortest form that reads back to the same bits).
func paramsKey(p *detectors.Params) uint64 {
	return series.Hash([]byte(fmt.Sprintf("%+v", *p)))
}

// appendSeries appends se's checkpoint record to dst.
func (s *shard) appendSeries(dst []byte, se *seriesState) []byte {
	ru := &s.rules.rules[se.rule]
	dst = append(dst, seriesRecordVersion)
	dst = binary.AppendUvarint(dst, uint64(len(se.info.Labels)))
	dst = append(dst, se.info.Labels...)
	dst = binary.LittleEndian.AppendUint64(dst, ru.paramsKey)
	dst = append(dst, se.flags&savedFlags, se.trial)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(se.lastT))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(se.lastV))
	dst = se.last.appendTo(dst)
	if se.per == nil {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
		for k := range se.per {
			dst = se.per[k].appendTo(dst)
		}
	}
	return se.det.AppendState(dst)
}

func (l *lastOut) appendTo(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(l.t))
	for _, f := range [...]float64{l.score, l.expected, l.lower, l.upper} {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	dst = append(dst, b2u(l.warmup), uint8(l.driver), b2u(l.shown))
	return binary.LittleEndian.AppendUint32(dst, math.Float32bits(l.peak))
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// errRecord is the cause of every record that cannot be read: the file's
// checksums passed, so the bytes are what a shard wrote, and a record that
// does not parse was written by a build that encodes otherwise.
var errRecord = errors.New("invalid series record")

// savedSeries is a series record parsed; labels and det point into the
// record.
type savedSeries struct {
	labels        string
	params        uint64
	flags, trial  uint8
	lastT         int64
	lastV         float64
	last          lastOut
	hasPer        bool
	per           [detectors.NumKinds]lastOut
	det           []byte
	nameStart, ne uint32
}

// parseSeries parses a series record, checking what the shard relies on:
// a canonical key, known flags, drivers that are detectors.
func parseSeries(rec []byte) (savedSeries, error) {
	var sv savedSeries
	if len(rec) == 0 || rec[0] != seriesRecordVersion {
		if len(rec) == 0 {
			return sv, fmt.Errorf("%w: empty", errRecord)
		}
		return sv, fmt.Errorf("%w: version %d, want %d", errRecord, rec[0], seriesRecordVersion)
	}
	n, k := binary.Uvarint(rec[1:])
	if k <= 0 || n == 0 || n > uint64(len(rec)) {
		return sv, fmt.Errorf("%w: bad label length", errRecord)
	}
	p := rec[1+k:]
	if uint64(len(p)) < n {
		return sv, fmt.Errorf("%w: truncated labels", errRecord)
	}
	sv.labels, p = string(p[:n]), p[n:]
	if err := checkKey(sv.labels); err != nil {
		return sv, err
	}
	const fixed = 8 + 2 + 8 + 8 + outSize + 1
	if len(p) < fixed {
		return sv, fmt.Errorf("%w: truncated: %d bytes after the labels", errRecord, len(p))
	}
	le := binary.LittleEndian
	sv.params = le.Uint64(p)
	sv.flags, sv.trial = p[8], p[9]
	if sv.flags&^savedFlags != 0 {
		return sv, fmt.Errorf("%w: unknown flags %#x", errRecord, sv.flags)
	}
	sv.lastT, sv.lastV = int64(le.Uint64(p[10:])), math.Float64frombits(le.Uint64(p[18:]))
	p = p[26:]
	var err error
	if p, err = sv.last.parse(p); err != nil {
		return sv, err
	}
	sv.hasPer, p = p[0] == 1, p[1:]
	if sv.hasPer {
		if len(p) < len(sv.per)*outSize {
			return sv, fmt.Errorf("%w: truncated per-detector outputs", errRecord)
		}
		for k := range sv.per {
			if p, err = sv.per[k].parse(p); err != nil {
				return sv, err
			}
		}
	}
	sv.det = p
	s, e := series.NameSpan([]byte(sv.labels))
	sv.nameStart, sv.ne = s, e
	return sv, nil
}

// parse reads a lastOut from the front of p (at least outSize bytes).
func (l *lastOut) parse(p []byte) ([]byte, error) {
	le := binary.LittleEndian
	l.t = int64(le.Uint64(p))
	l.score = math.Float64frombits(le.Uint64(p[8:]))
	l.expected = math.Float64frombits(le.Uint64(p[16:]))
	l.lower = math.Float64frombits(le.Uint64(p[24:]))
	l.upper = math.Float64frombits(le.Uint64(p[32:]))
	w, d, sh := p[40], p[41], p[42]
	if w > 1 || sh > 1 || d > uint8(detectors.NumKinds) {
		return nil, fmt.Errorf("%w: bad output flags %d %d %d", errRecord, w, d, sh)
	}
	l.warmup, l.driver, l.shown = w == 1, detectors.Kind(d), sh == 1
	l.peak = math.Float32frombits(le.Uint32(p[43:]))
	return p[outSize:], nil
}

// checkKey checks that s is a canonical key: name and value each ended by
// series.LabelSep, names non-empty and strictly increasing, values
// non-empty.
func checkKey(s string) error {
	if s == "" || s[len(s)-1] != series.LabelSep || strings.Count(s, string(series.LabelSep))%2 != 0 {
		return fmt.Errorf("%w: labels are not a canonical key", errRecord)
	}
	prev := ""
	for rest := s; rest != ""; {
		var n, v string
		n, v, rest = series.NextLabel(rest)
		if n == "" || v == "" || n <= prev {
			return fmt.Errorf("%w: labels are not a canonical key", errRecord)
		}
		prev = n
	}
	return nil
}
