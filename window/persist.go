package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/anomalyd/anomalyd/detectors"
	"github.com/anomalyd/anomalyd/detectors/statecodec"
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
//	last: lastOut, then its analysed value f64 (lastOut.value)
//	per u8 (0 or 1) ‖ NumKinds × lastOut when 1
//	count u8 (0 or 1) ‖ the count test's state (detectors.CountShift.StateFields) when 1
//	runN u32, runV f64, runT0 i64, asleep u8 (the run of equal values, see seriesState.hold)
//	the detector state (detectors.Set.AppendState) to the end, none when asleep
//
// A lastOut is t i64, score, expected, lower, upper f64, warmup u8,
// driver u8, shown u8, peak f32 (lastOut.fields). Floats are their IEEE
// 754 bits, bools a byte 0 or 1, in the encoding of detectors/statecodec.
//
// Version 1 records, written before the count test, have no count field
// and are read as count 0: the test learns the series again. Versions 1
// and 2, written before series slept, have no run fields and are read as
// a run already broken: the series never sleeps. Versions 1 to 3, written
// before records carried the analysed value, have none after last: it
// reads 0 until the series' next sample.
const (
	seriesRecordVersion = 4
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
	c := statecodec.Encoder(dst)
	params, flags, trial, lastT, lastV := ru.paramsKey, se.flags&savedFlags, se.trial, se.lastT, se.lastV
	c.U64(&params)
	c.U8(&flags)
	c.U8(&trial)
	c.I64(&lastT)
	c.F64(&lastV)
	se.last.fields(&c)
	value := se.last.value
	c.F64(&value)
	hasPer := se.per != nil
	c.Bool(&hasPer)
	if hasPer {
		for k := range se.per {
			se.per[k].fields(&c)
		}
	}
	hasCount := se.count != nil
	c.Bool(&hasCount)
	if hasCount {
		se.count.StateFields(&c)
	}
	runN, runV, runT0, asleep := se.runN, se.runV, se.runT0, se.asleep
	c.U32(&runN)
	c.F64(&runV)
	c.I64(&runT0)
	c.Bool(&asleep)
	if asleep {
		return c.Bytes()
	}
	return se.det.AppendState(c.Bytes())
}

// fields walks l in the order of the encoding (see seriesRecordVersion),
// appending or decoding and checking it.
func (l *lastOut) fields(c *statecodec.Codec) {
	c.I64(&l.t)
	c.F64(&l.score)
	c.F64(&l.expected)
	c.F64(&l.lower)
	c.F64(&l.upper)
	c.Bool(&l.warmup)
	c.U8((*uint8)(&l.driver))
	if l.driver > detectors.NumKinds {
		c.Fail("output driver %d", l.driver)
	}
	c.Bool(&l.shown)
	c.F32(&l.peak)
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
	hasCount      bool
	count         detectors.CountShift
	runN          uint32
	runV          float64
	runT0         int64
	asleep        bool
	det           []byte
	nameStart, ne uint32
}

// parseSeries parses a series record, checking what the shard relies on:
// a canonical key, known flags, drivers that are detectors.
func parseSeries(rec []byte) (savedSeries, error) {
	var sv savedSeries
	if len(rec) == 0 || rec[0] < 1 || rec[0] > seriesRecordVersion {
		if len(rec) == 0 {
			return sv, fmt.Errorf("%w: empty", errRecord)
		}
		return sv, fmt.Errorf("%w: version %d, want 1 to %d", errRecord, rec[0], seriesRecordVersion)
	}
	version := rec[0]
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
	c := statecodec.Decoder(p, len(rec)-len(p))
	c.U64(&sv.params)
	c.U8(&sv.flags)
	if sv.flags&^savedFlags != 0 {
		c.Fail("unknown flags %#x", sv.flags)
	}
	c.U8(&sv.trial)
	c.I64(&sv.lastT)
	c.F64(&sv.lastV)
	sv.last.fields(&c)
	if version >= 4 {
		c.F64(&sv.last.value)
	}
	c.Bool(&sv.hasPer)
	if sv.hasPer {
		for k := range sv.per {
			sv.per[k].fields(&c)
		}
	}
	if version >= 2 {
		c.Bool(&sv.hasCount)
		if sv.hasCount {
			sv.count.StateFields(&c)
		}
	}
	sv.runN = runBroken
	if version >= 3 {
		c.U32(&sv.runN)
		c.F64(&sv.runV)
		c.I64(&sv.runT0)
		c.Bool(&sv.asleep)
		if sv.asleep && (sv.runN < 2 || sv.runN == runBroken || sv.hasCount) {
			c.Fail("asleep with a run of %d and a count test %v", sv.runN, sv.hasCount)
		}
		if sv.asleep && len(c.Bytes()) > 0 {
			c.Fail("%d bytes of detector state after a series asleep", len(c.Bytes()))
		}
	}
	if err := c.Err(); err != nil {
		return sv, fmt.Errorf("%w: %v", errRecord, err)
	}
	if sv.hasCount {
		if err := sv.count.CheckState(); err != nil {
			return sv, fmt.Errorf("%w: %v", errRecord, err)
		}
	}
	p = c.Bytes()
	sv.det = p
	s, e := series.NameSpan([]byte(sv.labels))
	sv.nameStart, sv.ne = s, e
	return sv, nil
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
