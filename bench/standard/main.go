// Command standard runs the standard load scenario behind `make bench`: the
// same bench/load traffic against anomalyd (built-in defaults: the four
// detectors) and against the decode-only floor receiver, each run on a
// freshly started receiver, several runs each. It prints the median and
// min–max of every figure and the ratio of anomalyd's CPU per sample to
// the floor's, and writes everything as JSON.
//
//	go run ./bench/standard -anomalyd bin/anomalyd -load bin/load [-runs 3] [-out bench/results]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anomalyd/anomalyd/bench/internal/procs"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	anomalyd, load    string
	runs              int
	addr, floorAddr   string
	outDir            string
	loadFlags         string
	receiverTimeout   time.Duration
	skipFloor, noSave bool
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("standard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.anomalyd, "anomalyd", "bin/anomalyd", "anomalyd binary.")
	fs.StringVar(&o.load, "load", "bin/load", "bench/load binary.")
	fs.IntVar(&o.runs, "runs", 3, "Runs per receiver (a fresh receiver each).")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:19800", "Listen address for anomalyd.")
	fs.StringVar(&o.floorAddr, "floor-addr", "127.0.0.1:19801", "Listen address for the floor receiver.")
	fs.StringVar(&o.outDir, "out", "bench/results", "Folder for the JSON results.")
	fs.StringVar(&o.loadFlags, "load-flags", "-series 100000 -duration 20s -warmup-rounds 2", "Flags passed to every bench/load run.")
	fs.DurationVar(&o.receiverTimeout, "receiver-timeout", 15*time.Second, "How long a receiver may take to start listening.")
	fs.BoolVar(&o.skipFloor, "skip-floor", false, "Measure anomalyd only.")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.runs < 1 {
		fmt.Fprintln(stderr, "standard: -runs must be at least 1")
		return 2
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		fmt.Fprintf(stderr, "standard: %v\n", err)
		return 1
	}
	res := result{Date: time.Now().UTC().Format(time.RFC3339), LoadFlags: o.loadFlags, Runs: o.runs}
	receivers := []string{"anomalyd", "floor"}
	if o.skipFloor {
		receivers = receivers[:1]
	}
	for _, name := range receivers {
		for i := range o.runs {
			fmt.Fprintf(stderr, "standard: %s run %d/%d\n", name, i+1, o.runs)
			rep, err := o.once(name, i, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "standard: %s run %d: %v\n", name, i+1, err)
				return 1
			}
			res.add(name, rep)
		}
	}
	res.summarise()
	res.print(stdout)
	file := filepath.Join(o.outDir, "bench-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintf(stderr, "standard: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nJSON: %s\n", file)
	return 0
}

// once starts a fresh receiver, runs bench/load against it and stops it.
func (o *options) once(name string, i int, stderr io.Writer) (*loadReport, error) {
	addr := o.addr
	var cmd *exec.Cmd
	if name == "floor" {
		addr = o.floorAddr
		cmd = exec.Command(o.load, "floor", "-listen", addr)
	} else {
		// A fresh receiver: its own empty storage path, or it would restore
		// the previous run's series. Checkpoints stay on, as users run it.
		data, err := os.MkdirTemp("", "anomalyd-bench-data-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(data)
		cmd = exec.Command(o.anomalyd, "--web.listen-address="+addr, "--log.level=warn", "--storage.path="+data)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	defer procs.Stop(cmd, 30*time.Second)
	if err := procs.WaitListening(context.Background(), addr, o.receiverTimeout); err != nil {
		return nil, fmt.Errorf("%s did not start listening: %w", name, err)
	}
	out := filepath.Join(os.TempDir(), fmt.Sprintf("anomalyd-bench-%s-%d-%d.json", name, os.Getpid(), i))
	defer os.Remove(out)
	args := []string{"-url", "http://" + addr + "/api/v1/write", "-pid", fmt.Sprint(cmd.Process.Pid), "-out", out,
		"-metrics-url", "http://" + addr + "/metrics"}
	if name == "floor" {
		args = append(args, "-delay-metrics", "bench_floor_samples_total")
	}
	args = append(args, strings.Fields(o.loadFlags)...)
	load := exec.Command(o.load, args...)
	load.Stdout, load.Stderr = io.Discard, stderr
	if err := load.Run(); err != nil {
		return nil, fmt.Errorf("bench/load failed: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var rep loadReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("cannot read bench/load's JSON: %w", err)
	}
	rep.Raw = b
	return &rep, nil
}

// loadReport is the part of bench/load's JSON this command summarises.
type loadReport struct {
	Machine struct {
		CPUs  int    `json:"nproc"`
		Model string `json:"cpu_model"`
	} `json:"machine"`
	Timed struct {
		Stats struct {
			SamplesPerSecond float64 `json:"samples_per_second"`
			LatencyP50Ms     float64 `json:"latency_p50_ms"`
			LatencyP99Ms     float64 `json:"latency_p99_ms"`
			Retries          int64   `json:"retries"`
			SamplesFailed    int64   `json:"samples_failed"`
		} `json:"stats"`
	} `json:"timed"`
	CPU struct {
		PerMillionSamples float64 `json:"seconds_per_million_samples"`
	} `json:"receiver_cpu"`
	Memory struct {
		VmHWMPerSeries float64 `json:"vm_hwm_bytes_per_series"`
		VmRSSPerSeries float64 `json:"vm_rss_bytes_per_series"`
	} `json:"receiver_memory"`
	Delay struct {
		P50Ms float64 `json:"p50_ms"`
		P99Ms float64 `json:"p99_ms"`
	} `json:"score_delay"`
	Raw json.RawMessage `json:"-"`
}

// metric names one figure of a run.
type metric struct {
	Name string
	Unit string
	get  func(*loadReport) float64
}

var metrics = []metric{
	{"CPU per million samples", "CPU-s", func(r *loadReport) float64 { return r.CPU.PerMillionSamples }},
	{"samples accepted per second", "1/s", func(r *loadReport) float64 { return r.Timed.Stats.SamplesPerSecond }},
	{"request latency p50", "ms", func(r *loadReport) float64 { return r.Timed.Stats.LatencyP50Ms }},
	{"request latency p99", "ms", func(r *loadReport) float64 { return r.Timed.Stats.LatencyP99Ms }},
	{"peak RSS (VmHWM) per series", "bytes", func(r *loadReport) float64 { return r.Memory.VmHWMPerSeries }},
	{"RSS per series at the end", "bytes", func(r *loadReport) float64 { return r.Memory.VmRSSPerSeries }},
	{"score delay p50 (upper bound)", "ms", func(r *loadReport) float64 { return r.Delay.P50Ms }},
	{"score delay p99 (upper bound)", "ms", func(r *loadReport) float64 { return r.Delay.P99Ms }},
}

// Stat is the median and range of one figure over the runs.
type Stat struct {
	Median, Min, Max float64
	Values           []float64
}

func statOf(v []float64) Stat {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[n-1], Values: v}
}

type result struct {
	Date      string                     `json:"date"`
	Machine   string                     `json:"machine"`
	LoadFlags string                     `json:"load_flags"`
	Runs      int                        `json:"runs_per_receiver"`
	Summary   map[string]map[string]Stat `json:"summary"` // receiver → metric → stat
	CPURatio  float64                    `json:"cpu_ratio_anomalyd_to_floor,omitempty"`
	Reports   map[string][]json.RawMessage
	reports   map[string][]*loadReport
}

func (r *result) add(name string, rep *loadReport) {
	if r.reports == nil {
		r.reports, r.Reports = map[string][]*loadReport{}, map[string][]json.RawMessage{}
	}
	r.reports[name] = append(r.reports[name], rep)
	r.Reports[name] = append(r.Reports[name], rep.Raw)
	r.Machine = fmt.Sprintf("%d CPUs, %s", rep.Machine.CPUs, rep.Machine.Model)
}

func (r *result) summarise() {
	r.Summary = map[string]map[string]Stat{}
	for name, reps := range r.reports {
		r.Summary[name] = map[string]Stat{}
		for _, m := range metrics {
			var v []float64
			for _, rep := range reps {
				v = append(v, m.get(rep))
			}
			r.Summary[name][m.Name] = statOf(v)
		}
	}
	if a, f := r.Summary["anomalyd"], r.Summary["floor"]; a != nil && f != nil {
		if d := f["CPU per million samples"].Median; d > 0 {
			r.CPURatio = a["CPU per million samples"].Median / d
		}
	}
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "standard load scenario, %s, %s\nbench/load %s; %d runs per receiver, median (min–max)\n\n", r.Date, r.Machine, r.LoadFlags, r.Runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "figure\tunit\tanomalyd\tfloor (decode only)\n")
	cell := func(name, metric string) string {
		s, ok := r.Summary[name][metric]
		if !ok {
			return "-"
		}
		return fmt.Sprintf("%s (%s–%s)", num(s.Median), num(s.Min), num(s.Max))
	}
	for _, m := range metrics {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.Unit, cell("anomalyd", m.Name), cell("floor", m.Name))
	}
	tw.Flush()
	if r.CPURatio > 0 {
		fmt.Fprintf(w, "\nanomalyd / floor CPU per sample: %.2f×\n", r.CPURatio)
	}
}

func num(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
