package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// logfmtEncoder writes each entry as one logfmt line, key=value pairs in
// the order zap's JSON encoder gives them (ts, level, msg, caller, the
// fields), the format Prometheus and node_exporter log in and that log
// pipelines parse: zap has no logfmt encoder, and its console encoder's
// tab-separated columns with a JSON tail are no format a parser knows.
// It lets the JSON encoder do every field type, then rewrites its one
// object: a nested object's keys are joined with dots, an array is kept
// as its JSON text. Logging is not on the per-sample path, so the second
// pass costs nothing that matters.
type logfmtEncoder struct {
	zapcore.Encoder // JSON
}

var logfmtPool = buffer.NewPool()

func newLogfmtEncoder(ec zapcore.EncoderConfig) zapcore.Encoder {
	ec.LineEnding = "\n"
	return logfmtEncoder{zapcore.NewJSONEncoder(ec)}
}

func (e logfmtEncoder) Clone() zapcore.Encoder { return logfmtEncoder{e.Encoder.Clone()} }

func (e logfmtEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	js, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return nil, err
	}
	defer js.Free()
	out := logfmtPool.Get()
	dec := json.NewDecoder(bytes.NewReader(js.Bytes()))
	dec.UseNumber()
	if err := logfmtObject(dec, "", out); err != nil {
		out.Free()
		return nil, fmt.Errorf("cannot write the log entry as logfmt: %w", err)
	}
	out.AppendByte('\n')
	return out, nil
}

// logfmtObject writes the members of the JSON object next in dec as
// key=value pairs, keys prefixed with prefix.
func logfmtObject(dec *json.Decoder, prefix string, out *buffer.Buffer) error {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("want an object, got %v %v", t, err)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key := prefix + t.(string)
		if !dec.More() {
			return fmt.Errorf("key %q without a value", key)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if len(raw) > 0 && raw[0] == '{' {
			sub := json.NewDecoder(bytes.NewReader(raw))
			sub.UseNumber()
			if err := logfmtObject(sub, key+".", out); err != nil {
				return err
			}
			continue
		}
		var val string
		if len(raw) > 0 && raw[0] == '"' {
			if err := json.Unmarshal(raw, &val); err != nil {
				return err
			}
		} else {
			val = string(raw) // a number, true, false, null, or an array's JSON
		}
		if out.Len() > 0 {
			out.AppendByte(' ')
		}
		out.AppendString(logfmtKey(key))
		out.AppendByte('=')
		appendLogfmtValue(out, val)
	}
	_, err := dec.Token() // '}'
	return err
}

// logfmtKey replaces what a logfmt key cannot hold (space, '=', '"') by
// '_'.
func logfmtKey(k string) string {
	if k == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '=' || r == '"' {
			return '_'
		}
		return r
	}, k)
}

// appendLogfmtValue appends v, quoted (Go syntax, as go-kit's logfmt
// does) when it is empty or holds a space, '=', '"', a control character
// or invalid UTF-8.
func appendLogfmtValue(out *buffer.Buffer, v string) {
	if v != "" && utf8.ValidString(v) && !strings.ContainsFunc(v, func(r rune) bool {
		return r <= ' ' || r == '=' || r == '"' || r == 0x7f
	}) {
		out.AppendString(v)
		return
	}
	out.AppendString(fmt.Sprintf("%q", v))
}
