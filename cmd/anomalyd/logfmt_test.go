package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestLogfmt: --log.format=logfmt writes one key=value line per entry, as
// Prometheus does: level, time, message, then the fields in order, values
// quoted when they must be, nested objects flattened with dots.
func TestLogfmt(t *testing.T) {
	var buf bytes.Buffer
	logger, err := newLogger("debug", "logfmt", &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.With(zap.String("component", "warmup")).Info("state restored",
		zap.Int("series", 832), zap.String("dir", "data/checkpoints"), zap.Duration("took", 5476015),
		zap.String("empty", ""), zap.String("quote", `say "hi"=x`), zap.Bool("ok", true),
		zap.Strings("list", []string{"a", "b"}), zap.Error(errors.New("disk full")),
		zap.Object("obj", zapcore.ObjectMarshalerFunc(func(e zapcore.ObjectEncoder) error {
			e.AddString("k", "v w")
			return nil
		})))
	logger.Warn("two words")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), buf.String())
	}
	// The time varies: cut it out.
	strip := func(line string) string {
		level, rest, _ := strings.Cut(line, " ")
		ts, rest, _ := strings.Cut(rest, " ")
		if !strings.HasPrefix(ts, "ts=20") {
			t.Errorf("second key is not the time: %s", line)
		}
		return level + " " + rest
	}
	want := `level=info msg="state restored" component=warmup series=832 dir=data/checkpoints took=0.005476015 empty="" quote="say \"hi\"=x" ok=true list="[\"a\",\"b\"]" error="disk full" obj.k="v w"`
	if got := strip(lines[0]); got != want {
		t.Errorf("logfmt line:\n got %s\nwant %s", got, want)
	}
	if got := strip(lines[1]); got != `level=warn msg="two words"` {
		t.Errorf("second line: %s", lines[1])
	}
}
