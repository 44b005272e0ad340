// Command anomalyd receives Prometheus remote-write traffic, scores every
// series with streaming anomaly detectors and serves or forwards the scores.
//
//	anomalyd [--config.file=FILE] [--web.listen-address=:9700]
//	anomalyd check config FILE
//	anomalyd backtest --input PATH --output DIR [--config.file FILE] [--detector NAME]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/window/backtest"
)

func init() {
	// One version for --version, the log, anomalyd_build_info and every
	// User-Agent: github.com/prometheus/common/version's, which make build
	// sets with -ldflags; a plain go build or go install falls back to the
	// module version Go stamps into the binary.
	if version.Version == "" {
		version.Version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version.Version = bi.Main.Version
		}
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "check" {
		return checkCommand(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "backtest" {
		return backtest.Main(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("anomalyd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile  = fs.String("config.file", "", "Configuration file (YAML). Empty: built-in defaults.")
		listenAddr  = fs.String("web.listen-address", ":9700", "Address to listen on for remote write, /metrics and the management endpoints.")
		webConfig   = fs.String("web.config.file", "", "Web configuration file (YAML, as node_exporter's) enabling TLS and basic auth on every endpoint. Empty: plain HTTP, no authentication.")
		lifecycle   = fs.Bool("web.enable-lifecycle", false, "Enable reloading over HTTP (POST or PUT /-/reload). SIGHUP always reloads.")
		enablePprof = fs.Bool("web.enable-pprof", false, "Serve Go's profiler on /debug/pprof/.")
		logLevel    = fs.String("log.level", "info", "Log level: debug, info, warn, error.")
		logFormat   = fs.String("log.format", "logfmt", "Log format: logfmt (key=value lines, as Prometheus logs) or json.")
		shutdownTO  = fs.Duration("shutdown.timeout", 30*time.Second, "How long a graceful shutdown may take to drain shards and flush remote-write queues.")
		storagePath = fs.String("storage.path", "data", "Directory for the series state checkpoints and the remote-write queues; empty keeps nothing on disk.")
		ckptEvery   = fs.Duration("storage.checkpoint-interval", 5*time.Minute, "How often the series state is checkpointed to --storage.path (and at shutdown); 0: only at shutdown.")
		showVersion = fs.Bool("version", false, "Print the version and exit.")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: anomalyd [flags]\n       anomalyd check config FILE...\n       anomalyd backtest --input PATH --output DIR [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "anomalyd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Print("anomalyd"))
		return 0
	}
	// Most of anomalyd's heap is long-lived series state and ingest barely
	// allocates, so collections are rare whatever the target, and the
	// headroom a larger one leaves is memory per series for nothing (as
	// VictoriaMetrics keeps its GC target small). GOGC in the environment
	// still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(10)
	}
	logger, err := newLogger(*logLevel, *logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "anomalyd: %v\n", err)
		return 2
	}
	defer logger.Sync()

	cfg, err := loadConfig(*configFile)
	if err != nil {
		logger.Error("cannot load configuration", zap.Error(err))
		return 1
	}
	for _, w := range cfg.Warnings() {
		logger.Warn("configuration may be a mistake", zap.String("config_file", *configFile), zap.String("warning", w))
	}
	ln, err := net.Listen("tcp", *listenAddr)
	if err != nil {
		logger.Error("cannot listen", zap.String("address", *listenAddr), zap.Error(err))
		return 1
	}
	if *ckptEvery < 0 {
		fmt.Fprintf(stderr, "anomalyd: invalid --storage.checkpoint-interval %v: must not be negative\n", *ckptEvery)
		return 2
	}
	srv, err := newServer(cfg, serverOptions{
		configFile: *configFile, storagePath: *storagePath, checkpointInterval: *ckptEvery,
		webConfigFile: *webConfig, enableLifecycle: *lifecycle, enablePprof: *enablePprof,
	}, logger)
	if err != nil {
		logger.Error("cannot start", zap.Error(err))
		return 1
	}
	if *webConfig == "" {
		logger.Info("no --web.config.file: serving plain HTTP without TLS or authentication", zap.String("address", ln.Addr().String()))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	errc := make(chan error, 1)
	go func() { errc <- srv.serve(ln) }()
	if err := srv.start(); err != nil {
		logger.Error("cannot start", zap.Error(err))
		sctx, cancel := context.WithTimeout(context.Background(), *shutdownTO)
		srv.shutdown(sctx)
		cancel()
		return 1
	}
	logger.Info("anomalyd started", zap.String("version", version.Version), zap.String("revision", version.GetRevision()), zap.String("address", ln.Addr().String()),
		zap.String("config_file", *configFile), zap.Int("shards", srv.shards.N()), zap.Int("remote_writes", len(cfg.RemoteWrite)))
	for {
		select {
		case <-hup:
			if err := srv.reload(); err != nil {
				logger.Error("reload failed, keeping the old configuration", zap.Error(err))
			}
		case err := <-errc:
			logger.Error("HTTP server failed", zap.Error(err))
			sctx, cancel := context.WithTimeout(context.Background(), *shutdownTO)
			srv.shutdown(sctx)
			cancel()
			return 1
		case <-ctx.Done():
			logger.Info("shutting down", zap.Duration("timeout", *shutdownTO))
			sctx, cancel := context.WithTimeout(context.Background(), *shutdownTO)
			err := srv.shutdown(sctx)
			cancel()
			if err != nil {
				logger.Error("shutdown incomplete", zap.Error(err))
				return 1
			}
			logger.Info("shutdown complete")
			return 0
		}
	}
}

func loadConfig(file string) (*config.Config, error) {
	if file == "" {
		return config.Default(), nil
	}
	return config.LoadFile(file)
}

// checkCommand is `anomalyd check config FILE...`, like `promtool check config`.
func checkCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "config" {
		fmt.Fprintln(stderr, "usage: anomalyd check config FILE...")
		return 2
	}
	code := 0
	for _, f := range args[1:] {
		fmt.Fprintf(stdout, "Checking %s\n", f)
		cfg, err := config.LoadFile(f)
		if err != nil {
			fmt.Fprintf(stderr, "  FAILED: %v\n", err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "  SUCCESS: %d rules, %d remote_write targets\n", len(cfg.Rules), len(cfg.RemoteWrite))
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stdout, "  WARNING: %s\n", w)
		}
	}
	return code
}

func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("invalid --log.level %q: %w", level, err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.TimeKey = "ts"
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "logfmt":
		enc = newLogfmtEncoder(ec)
	default:
		return nil, fmt.Errorf("invalid --log.format %q: want logfmt or json", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}

// serve runs the HTTP server on ln until it is shut down, with the TLS
// and basic auth of --web.config.file as node_exporter and Prometheus
// serve them: the file is read again on every request and every TLS
// handshake, so certificates and passwords rotate without a restart.
func (s *server) serve(ln net.Listener) error {
	err := web.Serve(ln, s.http, &web.FlagConfig{WebConfigFile: &s.webConfigFile}, newSlogLogger(s.logger))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
