package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything a run measured; -out writes it as JSON.
type Report struct {
	Date     string            `json:"date"`
	Machine  Machine           `json:"machine"`
	Flags    map[string]string `json:"flags"`
	Receiver struct {
		URL        string  `json:"url"`
		PID        int     `json:"pid,omitempty"`
		Cmdline    string  `json:"cmdline,omitempty"`
		ClockTicks float64 `json:"clock_ticks_per_second,omitempty"`
	} `json:"receiver"`
	Generator struct {
		Series             int            `json:"series"`
		Targets            int            `json:"targets"`
		Kinds              map[string]int `json:"series_by_kind"`
		LabelBytesMean     float64        `json:"label_bytes_mean"`
		LabelBytesMin      int            `json:"label_bytes_min"`
		LabelBytesMax      int            `json:"label_bytes_max"`
		StartMs            int64          `json:"round0_timestamp_ms"`
		RequestsPerRound   int            `json:"requests_per_round"`
		BytesPerRound      int            `json:"encoded_bytes_per_round"`
		Buffering          string         `json:"buffering"`
		PreEncodedRounds   int            `json:"pre_encoded_rounds,omitempty"`
		PreEncodedBytes    int64          `json:"pre_encoded_bytes,omitempty"`
		EncodeSeconds      float64        `json:"encode_seconds"`
		CounterResetsTimed int            `json:"counter_resets_in_timed_rounds"`
	} `json:"generator"`
	Warmup struct {
		Rounds       int       `json:"rounds"`
		RoundSeconds []float64 `json:"round_seconds"`
		Stats        Summary   `json:"stats"`
	} `json:"warmup"`
	Timed struct {
		Rounds         int     `json:"rounds"`
		Seconds        float64 `json:"seconds_to_last_answer"`
		SecondsToIdle  float64 `json:"seconds_to_receiver_idle"`
		RanOutOfRounds bool    `json:"ran_out_of_pre_encoded_rounds"`
		Stats          Summary `json:"stats"`
	} `json:"timed"`
	ReceiverCPU struct {
		Seconds           float64 `json:"seconds"`
		PerMillionSamples float64 `json:"seconds_per_million_samples"`
		CoresUsed         float64 `json:"cores_used"`
	} `json:"receiver_cpu"`
	ReceiverMemory struct {
		VmHWMBytes           int64   `json:"vm_hwm_bytes"`
		VmRSSBytes           int64   `json:"vm_rss_bytes"`
		VmRSSBeforeBytes     int64   `json:"vm_rss_before_bytes"`
		VmHWMPerSeries       float64 `json:"vm_hwm_bytes_per_series"`
		VmRSSPerSeries       float64 `json:"vm_rss_bytes_per_series"`
		VmRSSGrowthPerSeries float64 `json:"vm_rss_growth_bytes_per_series"`
	} `json:"receiver_memory"`
	Loader struct {
		CPUSeconds                  float64 `json:"cpu_seconds"`
		CPUSecondsPerMillionSamples float64 `json:"cpu_seconds_per_million_samples"`
	} `json:"loader"`
	ScoreDelay struct {
		Counters   []string  `json:"counters,omitempty"`
		Rounds     int       `json:"rounds"`
		Measured   int       `json:"measured"`
		TimedOut   int       `json:"timed_out"`
		P50Ms      float64   `json:"p50_ms"` // upper bounds; see delays_lower_ms
		LowerP50Ms float64   `json:"lower_p50_ms"`
		P99Ms      float64   `json:"p99_ms"`
		MaxMs      float64   `json:"max_ms"`
		DelaysMs   []float64 `json:"delays_ms,omitempty"`
		// DelaysLowerMs are the lower bounds: the delay of round k is in
		// [DelaysLowerMs[k], DelaysMs[k]]; the gap is one scrape.
		DelaysLowerMs []float64 `json:"delays_lower_ms,omitempty"`
		// CountedMinusAccepted is how far the counters' growth over the
		// whole run differs from the samples accepted (negative: samples
		// the receiver accepted but never counted).
		CountedMinusAccepted float64 `json:"counted_minus_accepted"`
		Scrapes              int     `json:"scrapes"`
		ScrapeP50Ms          float64 `json:"scrape_p50_ms"`
		ScrapeBytes          int64   `json:"scrape_bytes"`
	} `json:"score_delay"`
	Anomalies []AnomalyReport `json:"anomalies"`
}

// faultRounds is how long a target-wide fault (-faults) lasts.
const faultRounds = 10

// demoReady is the round after warm-up from which -anomaly-every places
// target-wide faults: anomalyd's default detectors give Ready verdicts
// after about 200 samples, and the demo sends one a second.
const demoReady = 270

// AnomalyReport is an injected anomaly and whether its first round was sent.
type AnomalyReport struct {
	Anomaly
	Sent bool `json:"sent"`
}

func anomalyReports(as []Anomaly) []AnomalyReport {
	out := make([]AnomalyReport, len(as))
	for i, a := range as {
		out[i].Anomaly = a
	}
	return out
}

// Machine describes where the run happened.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OSArch    string `json:"os_arch"`
	Kernel    string `json:"kernel"`
	Hostname  string `json:"hostname"`
}

func machineInfo() Machine {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	host, _ := os.Hostname()
	return Machine{NProc: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(),
		OSArch: runtime.GOOS + "/" + runtime.GOARCH, Kernel: strings.TrimSpace(string(kernel)), Hostname: host}
}

// Summary is the condensed stats of a phase.
type Summary struct {
	Requests         int64            `json:"requests"`
	Accepted         int64            `json:"requests_accepted"`
	Failed           int64            `json:"requests_failed"`
	Attempts         int64            `json:"attempts"`
	Retries          int64            `json:"retries"`
	SamplesSent      int64            `json:"samples_sent"`
	SamplesAccepted  int64            `json:"samples_accepted"`
	SamplesFailed    int64            `json:"samples_failed"`
	SamplesConfirmed int64            `json:"samples_confirmed_rw2,omitempty"`
	Unconfirmed      int64            `json:"rw2_answers_without_written_header,omitempty"`
	BytesSent        int64            `json:"bytes_sent"`
	StatusCodes      map[string]int64 `json:"status_codes"` // "error": network error
	SamplesPerSecond float64          `json:"samples_per_second,omitempty"`
	LatencyP50Ms     float64          `json:"latency_p50_ms"`
	LatencyP90Ms     float64          `json:"latency_p90_ms"`
	LatencyP99Ms     float64          `json:"latency_p99_ms"`
	LatencyMaxMs     float64          `json:"latency_max_ms"`
}

func summarize(st *stats, elapsed time.Duration) Summary {
	s := Summary{Requests: st.Requests, Accepted: st.Accepted, Failed: st.Failed, Attempts: st.Attempts, Retries: st.Retries,
		SamplesSent: st.SamplesSent, SamplesAccepted: st.SamplesAccepted, SamplesFailed: st.SamplesFailed,
		SamplesConfirmed: st.SamplesConfirmed, Unconfirmed: st.Unconfirmed, BytesSent: st.Bytes, StatusCodes: map[string]int64{}}
	for code, n := range st.Codes {
		k := strconv.Itoa(code)
		if code == codeNetworkError {
			k = "error"
		}
		s.StatusCodes[k] = n
	}
	if elapsed > 0 {
		s.SamplesPerSecond = float64(st.SamplesAccepted) / elapsed.Seconds()
	}
	s.LatencyP50Ms, s.LatencyP90Ms = pct(st.Latencies, 50), pct(st.Latencies, 90)
	s.LatencyP99Ms, s.LatencyMaxMs = pct(st.Latencies, 99), pct(st.Latencies, 100)
	return s
}

func codesString(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// printReport writes the human table.
func printReport(w io.Writer, r *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	t := &r.Timed.Stats
	g := &r.Generator
	row("machine", "%d × %s, %s", r.Machine.NProc, r.Machine.CPUModel, r.Date)
	row("receiver", "%s pid %d %s", r.Receiver.URL, r.Receiver.PID, r.Receiver.Cmdline)
	row("traffic", "%d series (%s), labels %.0f B mean, protocol %s, %d requests/round of ≤%s samples, %.1f MiB/round, %s connections",
		g.Series, kindsString(g.Kinds), g.LabelBytesMean, r.Flags["protocol"], g.RequestsPerRound, r.Flags["samples-per-request"],
		float64(g.BytesPerRound)/(1<<20), r.Flags["concurrency"])
	row("timed rounds", "%d (+%d warm-up excluded), %.2f s to the last answer, %.2f s to receiver idle%s",
		r.Timed.Rounds, r.Warmup.Rounds, r.Timed.Seconds, r.Timed.SecondsToIdle, ranOut(r.Timed.RanOutOfRounds))
	row("samples accepted", "%d of %d (%d failed)", t.SamplesAccepted, t.SamplesSent, t.SamplesFailed)
	row("samples/s", "%.0f", t.SamplesPerSecond)
	row("requests", "%d, %d attempts, %d retries, status %s", t.Requests, t.Attempts, t.Retries, codesString(t.StatusCodes))
	row("latency", "p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (per attempt)", t.LatencyP50Ms, t.LatencyP90Ms, t.LatencyP99Ms, t.LatencyMaxMs)
	if r.Receiver.PID > 0 {
		c := &r.ReceiverCPU
		m := &r.ReceiverMemory
		row("receiver CPU", "%.2f s = %.3f CPU-s per million samples (%.2f cores)", c.Seconds, c.PerMillionSamples, c.CoresUsed)
		row("receiver memory", "VmHWM %.1f MiB = %.0f B/series, VmRSS %.1f MiB = %.0f B/series (%.0f B/series grown since start)",
			float64(m.VmHWMBytes)/(1<<20), m.VmHWMPerSeries, float64(m.VmRSSBytes)/(1<<20), m.VmRSSPerSeries, m.VmRSSGrowthPerSeries)
	}
	row("loader CPU", "%.2f s = %.3f CPU-s per million samples", r.Loader.CPUSeconds, r.Loader.CPUSecondsPerMillionSamples)
	if d := &r.ScoreDelay; d.Rounds > 0 {
		row("score delay", "p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d rounds (%d timed out; lower bounds p50 %.1f ms); one /metrics scrape %.1f ms, %.1f MiB",
			d.P50Ms, d.P99Ms, d.MaxMs, d.Measured, d.TimedOut, d.LowerP50Ms, d.ScrapeP50Ms, float64(d.ScrapeBytes)/(1<<20))
		row("counted − accepted", "%.0f samples (counters %s over the whole run)", d.CountedMinusAccepted, strings.Join(d.Counters, " + "))
	}
	sent := 0
	for _, a := range r.Anomalies {
		if a.Sent {
			sent++
		}
	}
	row("anomalies", "%d injected, %d of them started in the rounds sent; %d counter resets", len(r.Anomalies), sent, g.CounterResetsTimed)
	tw.Flush()
}

func ranOut(b bool) string {
	if b {
		return " (ran out of pre-encoded rounds)"
	}
	return ""
}

func kindsString(m map[string]int) string {
	var parts []string
	for _, k := range kindNames {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}
