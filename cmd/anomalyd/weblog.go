package main

import (
	"context"
	"log/slog"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newSlogLogger returns a *slog.Logger writing through z: the web
// package (TLS and basic auth) logs with log/slog, and its lines must
// come out in anomalyd's own format, level and destination.
func newSlogLogger(z *zap.Logger) *slog.Logger {
	return slog.New(&zapSlogHandler{z: z})
}

// zapSlogHandler is a slog.Handler over a zap.Logger. Groups prefix the
// keys of their attributes ("group.key"), as slog's own text handler does.
type zapSlogHandler struct {
	z      *zap.Logger
	prefix string // the open groups, each followed by "."
}

func (h *zapSlogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.z.Core().Enabled(zapLevel(l))
}

func (h *zapSlogHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = appendAttr(fields, h.prefix, a)
		return true
	})
	if ce := h.z.Check(zapLevel(r.Level), r.Message); ce != nil {
		ce.Write(fields...)
	}
	return nil
}

func (h *zapSlogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, 0, len(attrs))
	for _, a := range attrs {
		fields = appendAttr(fields, h.prefix, a)
	}
	return &zapSlogHandler{z: h.z.With(fields...), prefix: h.prefix}
}

func (h *zapSlogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &zapSlogHandler{z: h.z, prefix: h.prefix + name + "."}
}

func appendAttr(fields []zap.Field, prefix string, a slog.Attr) []zap.Field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fields
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			fields = appendAttr(fields, p, g)
		}
		return fields
	}
	key := prefix + a.Key
	switch a.Value.Kind() {
	case slog.KindString:
		return append(fields, zap.String(key, a.Value.String()))
	case slog.KindInt64:
		return append(fields, zap.Int64(key, a.Value.Int64()))
	case slog.KindUint64:
		return append(fields, zap.Uint64(key, a.Value.Uint64()))
	case slog.KindFloat64:
		return append(fields, zap.Float64(key, a.Value.Float64()))
	case slog.KindBool:
		return append(fields, zap.Bool(key, a.Value.Bool()))
	case slog.KindDuration:
		return append(fields, zap.Duration(key, a.Value.Duration()))
	case slog.KindTime:
		return append(fields, zap.Time(key, a.Value.Time()))
	}
	if err, ok := a.Value.Any().(error); ok {
		return append(fields, zap.NamedError(key, err))
	}
	return append(fields, zap.Any(key, a.Value.Any()))
}

// zapLevel maps slog's levels onto zap's: anything above Error is Error,
// anything below Debug is Debug.
func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	}
	return zapcore.DebugLevel
}
