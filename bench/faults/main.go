// Command faults is the field check behind `make bench-faults`: the
// default detectors on real metrics of this machine, with faults injected
// at known times. Debian's node_exporter exports the machine's metrics and
// shop, an HTTP service this command runs under a steady load, its RED
// metrics (see shop); a real Prometheus scrapes both (and itself, a
// service with request counters and latencies) every -scrape-interval and
// remote-writes everything to anomalyd, which remote-writes its scores
// back to that Prometheus, as README's "Send it your metrics" says. After
// -quiet of nothing, stress-ng loads the CPU, memory, disk, loopback
// network and the scheduler in turn, then the service slows down, fails
// and loses traffic, each for -fault-duration with -gap between starts. Then the scores are read
// back from Prometheus and the AnomalyDetected rule of
// deploy/prometheus/anomalyd-alerts.yml (max_over_time(anomaly_score
// {detector="combined"}[2m]) >= 2) is applied to every series:
//
//   - false alarms: firings that start while nothing is injected (after
//     -settle, and from -recovery after a fault's end to the next start),
//     per 1000 series-hours, and how many series fire;
//   - faults: how many series fire between a fault's start and -recovery
//     after its end, how soon the first does, which metrics they are, and
//     how many would have fired in that time at the quiet rate.
//
// Every alert of the rules file's anomalyd-scores group (-rules, by default
// deploy/prometheus/anomalyd-alerts.yml: AnomalyDetected and
// AnomalySustained) is then also evaluated by that Prometheus at every
// scrape interval of the run (a range query) and reported the same way,
// a firing being a run of steps where its expression holds.
//
// The incident stage is measured per target (job and instance): each
// fault must open an incident on its own target (node_exporter's for
// stress-ng, shop's for the service's faults) within -incident-within
// samples of its start, as GET /api/v1/incidents on anomalyd reports it
// (polled through the run) and as the alerts of the rules file's
// anomalyd-incidents group (AnomalyIncident: anomaly_incident_open == 1,
// which Prometheus scrapes from anomalyd's /metrics) fire; an incident
// that opens in a quiet span is a false one, counted per target-hour.
// -quiet sets the length of the quiet part before the first fault.
//
// There is no per-series ground truth: a fault moves whatever it moves.
// The figures say whether the defaults keep quiet on real metrics that
// nobody touches and speak up when something happens to the machine.
// The machine must be otherwise idle while it runs (about 47 minutes with
// the defaults): anything else that runs on it is an unlabelled fault.
//
// -export DIR also writes the input of every analysed series, one folder
// per target, as anomalyd backtest reads it, and the run's report;
// -replay DIR runs that through anomalyd backtest (the server's detectors
// and incident stage) and scores its incidents as the run's are scored,
// in seconds, to try the incident model on a recorded run (export.go,
// replay.go).
//
//	go run ./bench/faults -anomalyd bin/anomalyd [-out bench/results] [-export DIR]
//	go run ./bench/faults -replay DIR [-anomalyd bin/anomalyd] [-anomalyd-config FILE] [-json FILE]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/bench/internal/procs"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	anomalyd, prometheus, nodeExporter, stressNG string
	anomalydAddr, promAddr, nodeAddr, shopAddr   string
	outDir                                       string
	scrape, quiet, settle, faultDur, gap         time.Duration
	recovery, hold                               time.Duration
	faults                                       string
	keep                                         string
	rules                                        string
	alerts                                       []alertRule // read from rules by validate
	incidentAlerts                               []alertRule // the same, group incidentGroup
	within                                       int         // -incident-within
	withinSet                                    bool        // -incident-within given
	export, fromKept, fromReport                 string      // -export, -from-kept, -from-report
	replay, replayOut, replayJSON                string      // -replay, -replay-out, -json
	anomalydConfig                               string      // -anomalyd-config
	exportErr                                    error       // -export failed after the run
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.anomalyd, "anomalyd", "bin/anomalyd", "anomalyd binary.")
	fs.StringVar(&o.prometheus, "prometheus", "prometheus", "Prometheus binary.")
	fs.StringVar(&o.nodeExporter, "node-exporter", "prometheus-node-exporter", "node_exporter binary (Debian's name).")
	fs.StringVar(&o.stressNG, "stress-ng", "stress-ng", "stress-ng binary.")
	fs.StringVar(&o.anomalydAddr, "anomalyd-addr", "127.0.0.1:19810", "Listen address for anomalyd.")
	fs.StringVar(&o.promAddr, "prometheus-addr", "127.0.0.1:19811", "Listen address for Prometheus.")
	fs.StringVar(&o.nodeAddr, "node-exporter-addr", "127.0.0.1:19812", "Listen address for node_exporter.")
	fs.StringVar(&o.shopAddr, "service-addr", "127.0.0.1:19813", "Listen address for the RED service (shop) that the run puts under load.")
	fs.StringVar(&o.outDir, "out", "bench/results", "Folder for faults.json.")
	fs.DurationVar(&o.scrape, "scrape-interval", time.Second, "Prometheus scrape interval: one sample a series this often.")
	fs.DurationVar(&o.quiet, "quiet", 15*time.Minute, "Time before the first fault (the slow scale of the regime detector is Ready after 800 samples).")
	fs.DurationVar(&o.settle, "settle", 5*time.Minute, "Start of the run not counted (detectors warming up).")
	fs.DurationVar(&o.faultDur, "fault-duration", time.Minute, "How long each fault runs.")
	fs.DurationVar(&o.gap, "gap", 4*time.Minute, "Time from one fault's start to the next's (and after the last).")
	fs.DurationVar(&o.recovery, "recovery", 2*time.Minute, "Time after a fault's end still counted as the fault (the return to normal is part of the incident).")
	fs.DurationVar(&o.hold, "hold", 2*time.Minute, "The alert rule's max_over_time range.")
	fs.StringVar(&o.faults, "faults", "cpu,memory,disk,network,fork,latency,errors,traffic", "Faults to inject, in order: "+strings.Join(faultNames(), ", ")+" (the last three are the service's).")
	fs.StringVar(&o.rules, "rules", "deploy/prometheus/anomalyd-alerts.yml", "Alert rules file: every alert of its groups "+scoreGroup+" and "+incidentGroup+" is also evaluated over the run (every -scrape-interval) and reported like the rule above, or like the incidents.")
	fs.IntVar(&o.within, "incident-within", 3, "A fault is caught by the incident stage when an incident opens on its target at most this many samples (scrape intervals) after its start.")
	fs.StringVar(&o.keep, "keep", "", "Keep Prometheus's data (every input series and score) in this new folder, to query later with prometheus --storage.tsdb.path.")
	fs.StringVar(&o.export, "export", "", "After the run, write the input of every analysed series to this new or empty folder for -replay: <job>/<metric>.csv (\"timestamp,value\", Unix seconds), <job>/series.txt naming each file's labels, and faults.json, the run's report.")
	fs.StringVar(&o.fromKept, "from-kept", "", "With -export and -from-report: run nothing, export the run whose Prometheus data -keep kept in this folder (Prometheus is started on it and writes to it: give a copy).")
	fs.StringVar(&o.fromReport, "from-report", "", "The faults.json of the -from-kept run.")
	fs.StringVar(&o.replay, "replay", "", "Run nothing: replay the run -export wrote to this folder through anomalyd backtest (-anomalyd) and score its incidents against the run's schedule, as the live run's are scored.")
	fs.StringVar(&o.replayOut, "replay-out", "", "With -replay: the backtest's output folder (default: a temporary one, removed).")
	fs.StringVar(&o.replayJSON, "json", "", "With -replay: also write the report as JSON to this file.")
	fs.StringVar(&o.anomalydConfig, "anomalyd-config", "", "With -replay: the backtest's --config.file (its detectors and incidents settings; default: the built-in defaults).")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fs.Visit(func(f *flag.Flag) { o.withinSet = o.withinSet || f.Name == "incident-within" })
	if o.replay != "" || o.fromKept != "" {
		return o.offline(stdout, stderr)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 2
	}
	// Ctrl-C or SIGTERM stops the run, and the processes it started.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := o.run(ctx, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 1
	}
	rep.print(stdout)
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 1
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	p := filepath.Join(o.outDir, "faults.json")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 1
	}
	fmt.Fprintln(stdout, "wrote", p)
	if o.exportErr != nil {
		fmt.Fprintln(stderr, "faults:", o.exportErr)
		return 1
	}
	return 0
}

// offline is -replay, or -export with -from-kept: nothing is run.
func (o *options) offline(stdout, stderr io.Writer) int {
	var err error
	switch {
	case o.replay != "" && (o.fromKept != "" || o.export != ""):
		err = errors.New("-replay runs nothing: it takes no -export or -from-kept")
	case o.replay != "":
		if o.within < 1 {
			err = fmt.Errorf("-incident-within must be at least 1 sample, got %d", o.within)
			break
		}
		err = o.replayExport(stdout, stderr)
	case o.export == "" || o.fromReport == "":
		err = errors.New("-from-kept needs -export and -from-report")
	default:
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer cancel()
		err = o.exportKept(ctx, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 1
	}
	return 0
}

func (o *options) validate() error {
	if o.scrape < 100*time.Millisecond {
		return fmt.Errorf("-scrape-interval must be at least 100ms, got %s", o.scrape)
	}
	if o.settle >= o.quiet {
		return fmt.Errorf("-settle (%s) must be shorter than -quiet (%s)", o.settle, o.quiet)
	}
	if o.faultDur <= 0 || o.gap < o.faultDur {
		return fmt.Errorf("-gap (%s) must be at least -fault-duration (%s), which must be positive", o.gap, o.faultDur)
	}
	for _, n := range strings.Split(o.faults, ",") {
		_, machine := faultSpecs[n]
		if _, service := shopFaults[n]; !machine && !service && n != "" {
			return fmt.Errorf("unknown fault %q in -faults (known: %s)", n, strings.Join(faultNames(), ", "))
		}
	}
	if o.within < 1 {
		return fmt.Errorf("-incident-within must be at least 1 sample, got %d", o.within)
	}
	if o.export != "" {
		if err := checkExportDir(o.export); err != nil {
			return err
		}
	}
	var err error
	if o.alerts, err = loadScoreAlerts(o.rules); err != nil {
		return err
	}
	o.incidentAlerts, err = loadAlerts(o.rules, incidentGroup)
	return err
}

// faults are the faults -faults can name: stress-ng's arguments
// (-timeout added) and the series each must move. One worker each, on a
// 2-core machine: a CPU busy, 2 GiB held, a file written and read,
// loopback TCP, processes forked and reaped.
var faultSpecs = map[string]struct {
	args    []string
	signals []selector
}{
	"cpu": {[]string{"--cpu", "1"}, []selector{
		{Metric: "node_cpu_seconds_total", Label: "mode", Value: "user"}, {Metric: "node_load1"}}},
	"memory": {[]string{"--vm", "1", "--vm-bytes", "2G", "--vm-keep"}, []selector{
		{Metric: "node_memory_MemAvailable_bytes"}, {Metric: "node_memory_AnonPages_bytes"}}},
	"disk": {[]string{"--hdd", "1", "--hdd-bytes", "512M"}, []selector{
		{Metric: "node_disk_written_bytes_total"}, {Metric: "node_disk_writes_completed_total"}}},
	"network": {[]string{"--sock", "1"}, []selector{
		{Metric: "node_network_transmit_bytes_total", Label: "device", Value: "lo"},
		{Metric: "node_network_receive_bytes_total", Label: "device", Value: "lo"},
		{Metric: "node_netstat_Tcp_ActiveOpens"}}},
	"fork": {[]string{"--fork", "1"}, []selector{
		{Metric: "node_forks_total"}, {Metric: "node_context_switches_total"}}},
}

func faultNames() []string {
	var n []string
	for k := range faultSpecs {
		n = append(n, k)
	}
	for k := range shopFaults {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

type report struct {
	Date     time.Time `json:"date"`
	Begin    time.Time `json:"begin"` // all three up; the quiet period starts
	End      time.Time `json:"end"`   // -gap after the last fault's start: the analysis ends
	Versions []string  `json:"versions"`
	Settings struct {
		ScrapeInterval, Quiet, Settle, FaultDuration, Gap, Recovery, Hold string
		Rule                                                              string
		RulesFile                                                         string // -rules
		IncidentWithin                                                    int    // -incident-within
	} `json:"settings"`
	Series      int            `json:"series"`
	SeriesByJob map[string]int `json:"series_by_job"`
	Quiet       quietResult    `json:"quiet"`
	Faults      []faultResult  `json:"faults"`
	// Rules: each alert of -rules, evaluated by Prometheus over the run.
	Rules []ruleResult `json:"rules"`
	// Incidents: what the incident stage and the alerts that page per
	// target did.
	Incidents incidentReport `json:"incidents"`
}

func (o *options) run(ctx context.Context, stderr io.Writer) (*report, error) {
	for _, b := range []string{o.prometheus, o.nodeExporter, o.stressNG, o.anomalyd} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s not found (apt-get install -y prometheus prometheus-node-exporter stress-ng; make build): %w", b, err)
		}
	}
	dir, err := os.MkdirTemp("", "anomalyd-faults-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	if o.keep != "" {
		if err := os.Mkdir(o.keep, 0o755); err != nil {
			return nil, fmt.Errorf("-keep: %w", err)
		}
		data = o.keep
	}

	rep := &report{Date: time.Now().UTC()}
	rep.Settings.ScrapeInterval, rep.Settings.Quiet, rep.Settings.Settle = o.scrape.String(), o.quiet.String(), o.settle.String()
	rep.Settings.FaultDuration, rep.Settings.Gap, rep.Settings.Recovery, rep.Settings.Hold = o.faultDur.String(), o.gap.String(), o.recovery.String(), o.hold.String()
	rep.Settings.Rule = fmt.Sprintf(`max_over_time(anomaly_score{detector="combined"}[%s]) >= 2`, o.hold)
	rep.Settings.RulesFile, rep.Settings.IncidentWithin = o.rules, o.within
	for _, v := range [][]string{{o.prometheus, "--version"}, {o.nodeExporter, "--version"}, {o.stressNG, "--version"}, {o.anomalyd, "--version"}} {
		out, _ := exec.Command(v[0], v[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(string(out), "\n")
		rep.Versions = append(rep.Versions, strings.TrimSpace(line))
	}

	anCfg := filepath.Join(dir, "anomalyd.yml")
	if err := os.WriteFile(anCfg, []byte(fmt.Sprintf(`remote_write:
  - url: http://%s/api/v1/write
    queue_config: {batch_send_deadline: 1s}
`, o.promAddr)), 0o644); err != nil {
		return nil, err
	}
	promCfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promCfg, []byte(o.prometheusConfig()), 0o644); err != nil {
		return nil, err
	}

	var running []*exec.Cmd
	defer func() {
		for _, p := range slices.Backward(running) {
			procs.Stop(p, 30*time.Second)
		}
	}()
	start := func(addr, name string, args ...string) error {
		cmd := exec.Command(name, args...)
		logf, err := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("cannot start %s: %w", name, err)
		}
		running = append(running, cmd)
		if err := procs.WaitListening(ctx, addr, 30*time.Second); err != nil {
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("%s did not listen on %s: %w\n%s", name, addr, err, tail(b, 2000))
		}
		return nil
	}
	if err := start(o.nodeAddr, o.nodeExporter, "--web.listen-address="+o.nodeAddr); err != nil {
		return nil, err
	}
	shop := newShop()
	ln, err := net.Listen("tcp", o.shopAddr)
	if err != nil {
		return nil, fmt.Errorf("shop service: %w", err)
	}
	defer serveShop(ctx, shop, ln)()
	if err := start(o.anomalydAddr, o.anomalyd, "--web.listen-address="+o.anomalydAddr, "--config.file="+anCfg, "--log.level=warn",
		"--storage.path="+filepath.Join(dir, "anomalyd-data")); err != nil {
		return nil, err
	}
	if err := start(o.promAddr, o.prometheus, "--config.file="+promCfg, "--storage.tsdb.path="+data,
		"--web.listen-address="+o.promAddr, "--web.enable-remote-write-receiver", "--log.level=warn"); err != nil {
		return nil, err
	}
	begin := time.Now()
	rep.Begin = begin.UTC()
	// The API keeps the open incidents and the last 100 closed ones: poll
	// it through the run so that none is lost.
	incs := newIncidentLog()
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() { incs.poll(pollCtx, "http://"+o.anomalydAddr, 5*time.Second); close(polled) }()
	defer func() { stopPoll(); <-polled }()
	fmt.Fprintf(stderr, "faults: node_exporter, the shop service, anomalyd and Prometheus up; %s quiet, then %s\n", o.quiet, o.faults)

	if err := sleep(ctx, o.quiet); err != nil {
		return nil, err
	}
	var faults []fault
	for _, name := range strings.Split(o.faults, ",") {
		if name == "" {
			continue
		}
		started := time.Now() // with the monotonic clock, for the schedule
		f := fault{Name: name, Start: started.UTC()}
		f.Target = target{"node", o.nodeAddr}
		if sf, ok := shopFaults[name]; ok {
			f.Command, f.Signals, f.Target = []string{"shop", sf.what}, sf.signals, target{"shop", o.shopAddr}
			fmt.Fprintf(stderr, "faults: %s: %s\n", name, sf.what)
			shop.inject(name)
			err := sleep(ctx, o.faultDur)
			shop.inject("")
			if err != nil {
				return nil, err
			}
		} else {
			args := append([]string{"--temp-path", dir}, faultSpecs[name].args...)
			args = append(args, "--timeout", strconv.Itoa(int(o.faultDur.Seconds()))+"s")
			f.Command, f.Signals = append([]string{filepath.Base(o.stressNG)}, args...), faultSpecs[name].signals
			fmt.Fprintf(stderr, "faults: %s: %s\n", name, strings.Join(f.Command, " "))
			if out, err := exec.CommandContext(ctx, o.stressNG, args...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("stress-ng for %s: %w\n%s", name, err, tail(out, 2000))
			}
		}
		f.End = time.Now().UTC()
		faults = append(faults, f)
		if err := sleep(ctx, o.gap-time.Since(started)); err != nil {
			return nil, err
		}
	}
	end := time.Now()
	rep.End = end.UTC()
	// Let the last scores travel: Prometheus's and anomalyd's queues send
	// partial batches after 1 s, retried if need be.
	if err := sleep(ctx, 10*time.Second); err != nil {
		return nil, err
	}

	stopPoll()
	<-polled
	last, err := fetchIncidents(ctx, "http://"+o.anomalydAddr)
	if err != nil {
		return nil, err
	}
	incs.add(last)

	all, err := readScores("http://"+o.promAddr, begin, end, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, errors.New("no anomaly_score series came back to Prometheus")
	}
	rep.Series = len(all)
	rep.SeriesByJob = map[string]int{}
	for _, s := range all {
		job := "?"
		if _, rest, ok := strings.Cut(s.labels, `job="`); ok {
			job, _, _ = strings.Cut(rest, `"`)
		}
		rep.SeriesByJob[job]++
	}
	quiet := quietSpans(begin.Add(o.settle), end, faults, o.recovery)
	rep.Quiet, rep.Faults = analyse(all, quiet, faults, o.hold, o.recovery, o.scrape)
	for _, r := range o.alerts {
		rr, err := applyRule("http://"+o.promAddr, r, all, begin, end, quiet, faults, o.recovery, o.scrape)
		if err != nil {
			return nil, err
		}
		rep.Rules = append(rep.Rules, rr)
	}
	if err := o.analyseIncidents(rep, incs, all, begin, end, quiet, faults); err != nil {
		return nil, err
	}
	if o.export != "" {
		// anomalyd saw the samples before begin too, and after end.
		o.exportErr = export(o.export, "http://"+o.promAddr, rep, all, begin.Add(-time.Minute), end.Add(10*time.Second), stderr)
	}
	return rep, nil
}

// prometheusConfig is the run's prometheus.yml: node_exporter, Prometheus
// itself and shop, remote-written to anomalyd, whose scores come back by
// remote write; anomalyd's /metrics is scraped for its incident series
// only (honor_labels keeps each group's job and instance), and nothing of
// anomalyd's own goes back to it.
func (o *options) prometheusConfig() string {
	return fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: %s
scrape_configs:
  - job_name: node
    static_configs: [{targets: ['%s']}]
  - job_name: prometheus
    static_configs: [{targets: ['%s']}]
  - job_name: shop
    static_configs: [{targets: ['%s']}]
  - job_name: anomalyd
    honor_labels: true
    static_configs: [{targets: ['%s']}]
    metric_relabel_configs:
      # The scores arrive by remote write, with the input's timestamps.
      - source_labels: [__name__]
        regex: "anomaly_(score|expected|lower|upper|driver|value)"
        action: drop
remote_write:
  - url: http://%s/api/v1/write
    write_relabel_configs:
      - source_labels: [__name__]
        regex: "ALERTS|ALERTS_FOR_STATE|.*:.*|anomaly_(score|expected|lower|upper|driver|value|incident_score|incident_series|incident_open|incidents_opened_total)"
        action: drop
      - source_labels: [job]
        regex: anomalyd
        action: drop
    queue_config: {batch_send_deadline: 1s}
`, o.scrape, o.scrape, o.nodeAddr, o.promAddr, o.shopAddr, o.anomalydAddr, o.anomalydAddr)
}

// analyseIncidents fills rep.Incidents: the incidents anomalyd reported,
// each alert of incidentGroup as Prometheus evaluates it, and the incident
// scores, against the schedule.
func (o *options) analyseIncidents(rep *report, incs *incidentLog, all []*series, begin, end time.Time, quiet []span, faults []fault) error {
	ir := &rep.Incidents
	ir.WithinSamples, ir.MaxFalsePerTargetHour = o.within, maxFalsePerTargetHour
	ir.Targets = targetsOf(all)
	ir.Incidents = openingsOf(incs.all())
	ir.PollGaps, ir.PollErrors = incs.gaps, incs.errors
	ir.Stage = analyseOpenings("incidents (GET /api/v1/incidents)", ir.Incidents, ir.Targets, quiet, faults, o.recovery, o.scrape, o.within)
	base := "http://" + o.promAddr
	for _, r := range o.incidentAlerts {
		held, err := evalRuleSeries(base, r.Expr, begin, end, o.scrape)
		if err != nil {
			return fmt.Errorf("alert %s: %w", r.Alert, err)
		}
		src := fmt.Sprintf("alert %s (%s, evaluated every %s)", r.Alert, o.rules, o.scrape)
		ir.Alerts = append(ir.Alerts, analyseOpenings(src, firings(held, o.scrape), ir.Targets, quiet, faults, o.recovery, o.scrape, o.within))
	}
	scores, err := readTargetSeries(base, "anomaly_incident_score", begin, end, 5*time.Minute)
	if err != nil {
		return err
	}
	ir.Scores = analyseScores(scores, ir.Targets, quiet, faults, o.recovery, o.scrape, o.within)
	return nil
}

// sleep waits for d or until ctx is done, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
}

// readScores reads every sample of anomaly_score{detector="combined"} from
// from to to (see readRaw).
func readScores(base string, from, to time.Time, chunk time.Duration) ([]*series, error) {
	byKey := map[string]*series{}
	var order []string
	err := readRaw(base, `anomaly_score{detector="combined"}`, from, to, chunk, func(m map[string]string, ts, x float64) {
		k := formatLabels(m)
		s := byKey[k]
		if s == nil {
			s = &series{metric: m["metric"], lset: m, labels: k}
			byKey[k] = s
			order = append(order, k)
		}
		s.times = append(s.times, ts)
		if x >= 2 {
			s.alarms = append(s.alarms, ts)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]*series, 0, len(order))
	for _, k := range order {
		out = append(out, byKey[k])
	}
	return out, nil
}

// apiQuery runs an instant query against Prometheus's HTTP API.
func apiQuery(base, q string, at time.Time, into any) error {
	form := url.Values{"query": {q}, "time": {strconv.FormatFloat(unix(at), 'f', 3, 64)}}
	return apiPost(base+"/api/v1/query", form, into)
}

// decodeAPI reads a Prometheus HTTP API response for query q and decodes
// its data.result into into.
func decodeAPI(resp *http.Response, q string, into any) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("query %s: %w", q, err)
	}
	var env struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("query %s: %s: %w", q, resp.Status, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("query %s: %s: %s", q, resp.Status, env.Error)
	}
	return json.Unmarshal(env.Data.Result, into)
}

// formatLabels formats a label set as {a="1", b="2"}, without __name__.
func formatLabels(m map[string]string) string {
	return labels.FromMap(m).DropMetricName().String()
}

func (r *report) print(w io.Writer) {
	q := r.Quiet
	fmt.Fprintf(w, "%d series (%v); rule %s\n", r.Series, r.SeriesByJob, r.Settings.Rule)
	fmt.Fprintf(w, "quiet: %.1f min in %d spans, %.1f series-hours: %d alerts (%.2f per 1000 series-hours), %d series alerting\n",
		q.Minutes, q.Spans, q.SeriesHours, q.Alerts, q.AlertsPer1000SeriesHours, q.SeriesAlerting)
	for _, sp := range q.BySpan {
		b := unix(r.Begin)
		rate := 0.0
		if sp.SeriesHours > 0 {
			rate = 1000 * float64(sp.Alerts) / sp.SeriesHours
		}
		fmt.Fprintf(w, "  minutes %4.1f–%4.1f: %d alerts, %.1f per 1000 series-hours\n", (sp.From-b)/60, (sp.To-b)/60, sp.Alerts, rate)
	}
	for i, m := range q.ByMetric {
		if i == 8 {
			break
		}
		fmt.Fprintf(w, "  %3d series  %s\n", m.Series, m.Metric)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tsignal series alarming\tfirst\tseries alerting\tby chance\tmetrics (series)")
	for _, f := range r.Faults {
		first := "none"
		if f.FirstSignalSeconds >= 0 {
			first = fmt.Sprintf("%.0f s", f.FirstSignalSeconds)
		}
		var ms []string
		for i, m := range f.ByMetric {
			if i == 6 {
				ms = append(ms, "…")
				break
			}
			ms = append(ms, fmt.Sprintf("%s (%d)", m.Metric, m.Series))
		}
		fmt.Fprintf(tw, "%s\t%d of %d\t%s\t%d\t%.1f\t%s\n", f.Name, f.SignalAlarming, f.SignalSeries, first, f.SeriesAlerting, f.ExpectedByChance, strings.Join(ms, ", "))
	}
	tw.Flush()
	for _, rr := range r.Rules {
		q := rr.Quiet
		fmt.Fprintf(w, "alert %s (%s, evaluated every %s): quiet: %d alerts (%.2f per 1000 series-hours), %d series alerting\n",
			rr.Alert, r.Settings.RulesFile, r.Settings.ScrapeInterval, q.Alerts, q.AlertsPer1000SeriesHours, q.SeriesAlerting)
		for i, m := range q.ByMetric {
			if i == 5 {
				break
			}
			fmt.Fprintf(w, "  %3d series  %s\n", m.Series, m.Metric)
		}
		for _, f := range rr.Faults {
			first := "not detected"
			if f.FirstSignalSeconds >= 0 {
				first = fmt.Sprintf("detected after %.0f s", f.FirstSignalSeconds)
			}
			fmt.Fprintf(w, "  %-8s %s (%d of %d signal series), %d series alerting, %.1f by chance\n",
				f.Name, first, f.SignalAlarming, f.SignalSeries, f.SeriesAlerting, f.ExpectedByChance)
		}
	}
	r.Incidents.print(w, r.Begin, r.Settings.Quiet, r.Settings.ScrapeInterval)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// readRaw calls fn with every raw sample of the series query selects from
// from to to, in time order per series (see readRawSeries).
func readRaw(base, query string, from, to time.Time, chunk time.Duration, fn func(metric map[string]string, ts, x float64)) error {
	return readRawSeries(base, query, from, to, chunk, func(m map[string]string, ps []point) {
		for _, p := range ps {
			fn(m, p.t, p.v)
		}
	})
}

// readRawSeries calls fn with the raw samples of each series query selects
// from from to to, chunk by chunk (raw samples of a range selector, so that
// no one-sample alarm falls between query steps): once per series and
// chunk, the chunks in time order, the samples of a call in time order;
// ps is reused once fn returns.
func readRawSeries(base, query string, from, to time.Time, chunk time.Duration, fn func(metric map[string]string, ps []point)) error {
	last := unix(from)
	var ps []point
	for t := from.Add(chunk); ; t = t.Add(chunk) {
		if t.After(to) {
			t = to
		}
		q := fmt.Sprintf(`%s[%ds]`, query, int(chunk.Seconds())+1)
		var res []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		if err := apiQuery(base, q, t, &res); err != nil {
			return err
		}
		for _, r := range res {
			ps = ps[:0]
			for _, v := range r.Values {
				ts, _ := v[0].(float64)
				vs, _ := v[1].(string)
				if ts <= last || ts > unix(t) {
					continue
				}
				x, err := strconv.ParseFloat(vs, 64)
				if err != nil {
					return fmt.Errorf("sample value %q of %s: %w", vs, formatLabels(r.Metric), err)
				}
				ps = append(ps, point{ts, x})
			}
			if len(ps) > 0 {
				fn(r.Metric, ps)
			}
		}
		last = unix(t)
		if !t.Before(to) {
			return nil
		}
	}
}
