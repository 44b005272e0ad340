package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/anomalyd/anomalyd/config"
	"github.com/anomalyd/anomalyd/ingest"
	"github.com/anomalyd/anomalyd/ingest/remoteread"
	"github.com/anomalyd/anomalyd/sink"
	"github.com/anomalyd/anomalyd/sink/promreg"
	"github.com/anomalyd/anomalyd/sink/ui"
	"github.com/anomalyd/anomalyd/window"
)

// server wires ingest → window → sink and owns their lifecycle.
type server struct {
	logger     *zap.Logger
	configFile string
	// webConfigFile is --web.config.file: TLS and basic auth of every
	// endpoint; "" serves plain HTTP without authentication.
	webConfigFile string
	reg           *prometheus.Registry
	// storage is --storage.path, locked; nil when it is empty.
	storage *storage

	mu     sync.Mutex // serialises reload and shutdown
	cfg    *config.Config
	out    *sink.Outputs // remote write and the history; the shards' Appender
	shards *window.Shards
	// incidents is the incident stage the shards send evidence to.
	incidents *window.Incidents
	ingest    *ingest.Handler
	http      *http.Server
	ready     atomic.Bool

	// ckpt keeps the series state under --storage.path; nil without one.
	ckpt *window.Checkpointer

	// warmer reads the history of new series from Prometheus
	// (warmup.remote_read); nil when warm-up is off.
	warmer *remoteread.Warmer

	reloadOK      prometheus.Gauge
	reloadSuccess prometheus.Gauge
}

// serverOptions are the command-line settings of a server.
type serverOptions struct {
	configFile string
	// storagePath is --storage.path: "" keeps nothing on disk.
	storagePath        string
	checkpointInterval time.Duration
	// webConfigFile is --web.config.file ("": plain HTTP, no auth).
	webConfigFile string
	// enableLifecycle is --web.enable-lifecycle: POST /-/reload.
	enableLifecycle bool
	// enablePprof is --web.enable-pprof: /debug/pprof/.
	enablePprof bool
}

func newServer(cfg *config.Config, opts serverOptions, logger *zap.Logger) (_ *server, err error) {
	// The web config is checked before anything is opened: a typo in a
	// password hash or a missing certificate must stop the start, not
	// turn every later request into a 500 or a failed handshake.
	if err := web.Validate(opts.webConfigFile); err != nil {
		return nil, fmt.Errorf("invalid --web.config.file %s: %w", opts.webConfigFile, err)
	}
	s := &server{logger: logger, configFile: opts.configFile, webConfigFile: opts.webConfigFile, reg: prometheus.NewRegistry(), cfg: cfg}
	if opts.storagePath != "" {
		if s.storage, err = openStorage(opts.storagePath); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				s.storage.close()
			}
		}()
	}
	var queueDir string // "" without --storage.path: memory queues only
	if s.storage != nil {
		if queueDir, err = s.storage.dir("queue"); err != nil {
			return nil, err
		}
	}
	out, err := sink.NewOutputs(cfg, queueDir, s.reg, logger)
	if err != nil {
		return nil, err
	}
	s.out = out
	wopts := window.OptionsFromConfig(cfg) // warm-up lookback: cfg.Warmup.LookbackFor(cfg)
	if cfg.Warmup.Enabled() {
		w, err := remoteread.NewWarmer(&cfg.Warmup, version.ComponentUserAgent("anomalyd"), s.reg, logger)
		if err != nil {
			return nil, err
		}
		if cfg.HA.Enabled {
			w.SetIgnoreLabel(cfg.HA.ReplicaLabel)
		}
		s.warmer = w
		wopts.Warmup.Warmer = w
	}
	s.incidents = window.NewIncidents(cfg.Incidents.Params(), cfg.Incidents.MaxGroups, s.out, s.reg)
	wopts.Incidents = s.incidents
	wopts.Logger = logger
	s.shards = window.New(wopts, window.CompileRules(cfg), s.out, s.reg)
	if s.storage != nil {
		dir, err := s.storage.dir("checkpoints")
		if err != nil {
			return nil, err
		}
		if s.ckpt, err = window.NewCheckpointer(s.shards, s.incidents, dir, opts.checkpointInterval, s.reg, logger); err != nil {
			return nil, err
		}
	}
	s.ingest = ingest.NewHandler(ingestOptions(cfg), s.shards, s.reg, logger)
	s.registerProcessMetrics()

	mux := http.NewServeMux()
	mux.Handle("/api/v1/write", s.ingest)
	if h := s.out.ReadHandler(); h != nil {
		mux.Handle("/api/v1/read", h)
	}
	mux.Handle("/metrics", s.out.MetricsHandler(s.shards, s.incidents))
	mux.Handle("/api/v1/incidents", ui.IncidentsHandler(s.incidents))
	uiAPI := ui.NewAPI(s.out.Recent(), s.shards, func() []string {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cfg.Incidents.GroupBy
	})
	mux.HandleFunc("/api/v1/anomalies", uiAPI.Anomalies)
	mux.HandleFunc("/api/v1/series", uiAPI.Series)
	mux.HandleFunc("/api/v1/detail", uiAPI.Detail)
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "anomalyd is Healthy.")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "anomalyd is not ready.", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "anomalyd is Ready.")
	})
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "use POST or PUT to reload", http.StatusMethodNotAllowed)
			return
		}
		// As in Prometheus, anyone who can reach the port must not be able
		// to make the process re-read its files unless the operator asked
		// for it; SIGHUP needs access to the host and always reloads.
		if !opts.enableLifecycle {
			http.Error(w, "Lifecycle API is not enabled: start anomalyd with --web.enable-lifecycle to reload over HTTP (SIGHUP always reloads).", http.StatusForbidden)
			return
		}
		if err := s.reload(); err != nil {
			http.Error(w, fmt.Sprintf("failed to reload config: %v", err), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "configuration reloaded")
	})
	// The effective configuration, defaults filled in and secrets hidden, in
	// the shape of Prometheus's own endpoint: what a built-in default (the
	// exclude list, the rules) is, is one request away.
	mux.HandleFunc("/api/v1/status/config", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		text := s.cfg.String()
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]string{"yaml": text}})
	})
	// Go's profiler, for operators chasing CPU or memory, only on request:
	// it shows the command line and lets any client burn CPU for the
	// length of a profile.
	if opts.enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	reloadNote, pprofNote := "", ""
	if !opts.enableLifecycle {
		reloadNote = "  (403: needs --web.enable-lifecycle)"
	}
	if !opts.enablePprof {
		pprofNote = "  (404: needs --web.enable-pprof)"
	}
	// The page, and under /api the list of endpoints for scripts and curl.
	mux.Handle("/", ui.PageHandler())
	mux.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "anomalyd %s\n\nGET  /             the page: incidents, the most anomalous series, and why\nPOST /api/v1/write  remote write 1.0 and 2.0\nPOST /api/v1/read   remote read of recent scores (history.retention > 0)\nGET  /metrics       anomaly scores and self metrics\nGET  /api/v1/status/config  the effective configuration\nGET  /api/v1/incidents  open and recent incidents\nGET  /api/v1/anomalies  the most anomalous series, now or over a range\nGET  /api/v1/series?match[]=…  recent samples of the series the page keeps\nGET  /api/v1/detail?match[]=…  one series: verdict, recent samples, trend, similar series of its group\nGET  /-/healthy /-/ready\nPOST /-/reload%s\nGET  /debug/pprof/%s\n", version.Version, reloadNote, pprofNote)
	})
	s.http = &http.Server{
		Handler: mux,
		// The server's own complaints (a failed TLS handshake, a client
		// speaking HTTP to the HTTPS port) in anomalyd's log format.
		ErrorLog:          zap.NewStdLog(logger.With(zap.String("component", "http"))),
		ReadHeaderTimeout: 10 * time.Second,
		// Senders time out after 30 s (Prometheus's remote_timeout); a body
		// still arriving after a minute is a stuck or hostile client.
		ReadTimeout: time.Minute,
		IdleTimeout: 5 * time.Minute,
	}
	return s, nil
}

// start restores the state saved last, then starts every stage and
// reports ready. The listener may already serve meanwhile: writes queue
// in the shards (503 once the queues are full), /-/ready says 503. An
// error (a remote-write queue on disk that cannot be opened) leaves the
// server to be shut down.
func (s *server) start() error {
	if err := s.out.Start(); err != nil {
		return err
	}
	if s.warmer != nil {
		s.warmer.Start()
	}
	if s.ckpt != nil {
		s.ckpt.Restore() // starts the incident stage: restored series rejoin their groups
	}
	s.incidents.Start()
	s.shards.Start()
	if s.ckpt != nil {
		s.ckpt.Start()
	}
	s.ready.Store(true)
	return nil
}

func ingestOptions(cfg *config.Config) ingest.Options {
	c := &cfg.Ingest
	return ingest.Options{
		MaxCompressedBytes:  c.MaxCompressedBytes,
		MaxDecodedBytes:     c.MaxDecodedBytes,
		MaxLabelsPerSeries:  c.MaxLabelsPerSeries,
		MaxLabelNameLength:  c.MaxLabelNameLength,
		MaxLabelValueLength: c.MaxLabelValueLength,
		MaxFuture:           time.Duration(c.MaxFuture),
		HA: ingest.HAOptions{
			Enabled:         cfg.HA.Enabled,
			ClusterLabel:    cfg.HA.ClusterLabel,
			ReplicaLabel:    cfg.HA.ReplicaLabel,
			FailoverTimeout: time.Duration(cfg.HA.FailoverTimeout),
			MaxClusters:     cfg.HA.MaxClusters,
		},
	}
}

// reload re-reads the config file and applies what can change at run time:
// limits, HA pairs, rules (series whose rule did not change keep their state), incident
// grouping, output names and remote_write targets. Window sizing needs a
// restart.
func (s *server) reload() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if err == nil {
			s.reloadOK.Set(1)
			s.reloadSuccess.Set(float64(time.Now().Unix()))
		} else {
			s.reloadOK.Set(0)
		}
	}()
	if s.configFile == "" {
		return errors.New("no --config.file given; nothing to reload")
	}
	cfg, err := config.LoadFile(s.configFile)
	if err != nil {
		return err
	}
	// group_by is compiled into the rules, which apply below; the other
	// incidents settings are the stage's, built once.
	oldInc, newInc := s.cfg.Incidents, cfg.Incidents
	oldInc.GroupBy, newInc.GroupBy = nil, nil
	if !reflect.DeepEqual(newInc, oldInc) {
		s.logger.Warn("incidents settings other than group_by changed; they take effect after a restart")
	}
	if cfg.Window != s.cfg.Window {
		s.logger.Warn("window settings changed; they take effect after a restart")
	}
	if !reflect.DeepEqual(cfg.Warmup, s.cfg.Warmup) {
		s.logger.Warn("warmup settings changed; they take effect after a restart")
	}
	if cfg.Warmup.Enabled() && (cfg.HA.Enabled != s.cfg.HA.Enabled || cfg.HA.ReplicaLabel != s.cfg.HA.ReplicaLabel) {
		s.logger.Warn("ha.enabled or ha.replica_label changed; warm-up ignores the new replica label in history answers after a restart")
	}
	for _, w := range cfg.Warnings() {
		s.logger.Warn("configuration may be a mistake", zap.String("config_file", s.configFile), zap.String("warning", w))
	}
	s.ingest.SetOptions(ingestOptions(cfg))
	if err := s.out.Reload(cfg); err != nil {
		return err
	}
	s.shards.ApplyRules(window.CompileRules(cfg), cfg.Output.PerDetector)
	s.cfg = cfg
	s.logger.Info("configuration reloaded", zap.String("config_file", s.configFile))
	return nil
}

// shutdown stops in reverse order of data flow: refuse new writes (503),
// finish in-flight requests, drain the shards, flush the sink.
func (s *server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready.Store(false)
	s.ingest.Shutdown()
	var errs []error
	if err := s.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("cannot finish in-flight requests: %w", err))
	}
	// Warm-up before the shards: its reads are no use any more, and the
	// shards score what their warming series hold when they stop.
	if s.warmer != nil {
		if err := s.warmer.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ckpt != nil {
		s.ckpt.Stop() // a periodic checkpoint in progress gives way to the final one
	}
	if err := s.shards.Stop(ctx); err != nil {
		errs = append(errs, err)
	} else if s.ckpt != nil {
		// The shards drained: their state is final, and what the next
		// start restores.
		if err := s.ckpt.Checkpoint(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.incidents.Stop()
	s.out.Stop(ctx)
	if s.storage != nil {
		if err := s.storage.close(); err != nil {
			errs = append(errs, fmt.Errorf("cannot release --storage.path: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *server) registerProcessMetrics() {
	reg := s.reg
	s.reloadOK = promreg.NewGauge(reg, "anomalyd_config_last_reload_successful", "Whether the last configuration reload succeeded.")
	s.reloadOK.Set(1)
	s.reloadSuccess = promreg.NewGauge(reg, "anomalyd_config_last_reload_success_timestamp_seconds", "Time of the last successful configuration load.")
	s.reloadSuccess.Set(float64(time.Now().Unix()))
	// The standard process_* and go_* metrics, which dashboards of every
	// Go program read, and anomalyd_build_info from
	// prometheus/common/version, the version source of --version and the
	// log.
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		versioncollector.NewCollector("anomalyd"),
	)
}
