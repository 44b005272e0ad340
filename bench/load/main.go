// Command load is anomalyd's load harness: it replays deterministic,
// Prometheus-like remote-write traffic against a receiver on this machine
// and measures what the receiver pays for it.
//
//	go run ./bench/load [flags]                       # load a receiver (anomalyd on :9700 by default)
//	go run ./bench/load -serve-floor -listen ADDR     # the decode-only reference receiver
//
// Every request is encoded before the timed rounds start, so the sender
// costs almost no CPU while it runs; see doc.go for the design and its
// trade-offs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/anomalyd/anomalyd/bench/internal/procs"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags.
type options struct {
	url, metricsURL, delayMetrics, out, listen string
	pid                                        int
	series, samplesPerRequest, concurrency     int
	protocol                                   int
	seed                                       uint64
	interval, day, duration, timeout           time.Duration
	warmupRounds, rounds, maxRounds            int
	delayRounds, anomalies, maxAttempts        int
	anomalyEvery, faults                       int
	maxBufferMB                                int
	startMs                                    int64
	realtime, serveFloor, honorRetryAfter      bool
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "floor" { // `load floor -listen ADDR` = `load -serve-floor -listen ADDR`
		args = append([]string{"-serve-floor"}, args[1:]...)
	}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.url, "url", "http://127.0.0.1:9700/api/v1/write", "Remote-write URL of the receiver (loopback only).")
	fs.StringVar(&o.metricsURL, "metrics-url", "", "Receiver /metrics URL, e.g. http://127.0.0.1:9700/metrics: measure the score delay (-delay-rounds).")
	fs.StringVar(&o.delayMetrics, "delay-metrics", "anomalyd_window_samples_analysed_total,anomalyd_window_samples_not_analysed_total",
		"Counters (comma-separated, all series summed) that reach the number of accepted samples once the receiver has processed them. The floor receiver: bench_floor_samples_total.")
	fs.IntVar(&o.pid, "pid", 0, "Process id of the receiver: measure its CPU (/proc/PID/stat) and memory (/proc/PID/status). 0: not measured.")
	fs.IntVar(&o.series, "series", 100_000, "Number of series.")
	fs.IntVar(&o.samplesPerRequest, "samples-per-request", 2000, "Samples per request (Prometheus's max_samples_per_send).")
	fs.IntVar(&o.concurrency, "concurrency", 4, "Connections (Prometheus shards); series i always goes through connection i % concurrency.")
	fs.IntVar(&o.protocol, "protocol", 1, "Remote-write protocol: 1 (prometheus.WriteRequest) or 2 (io.prometheus.write.v2.Request).")
	fs.Uint64Var(&o.seed, "seed", 1, "Seed: the same seed and flags give the same bytes.")
	fs.DurationVar(&o.interval, "interval", 15*time.Second, "Sample timestamp step per round (the scrape interval); with -realtime also the wall time between rounds.")
	fs.DurationVar(&o.day, "day", 10*time.Minute, "Period of the daily-seasonal gauges, in sample time (a compressed day).")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "Length of the timed phase when -rounds is 0.")
	fs.IntVar(&o.warmupRounds, "warmup-rounds", 2, "Rounds sent before timing (series creation); excluded from every figure.")
	fs.IntVar(&o.rounds, "rounds", 0, "Timed rounds. 0: as many as fit in -duration.")
	fs.IntVar(&o.maxRounds, "max-rounds", 2000, "Upper bound of timed rounds when -rounds is 0.")
	fs.IntVar(&o.delayRounds, "delay-rounds", 5, "With -metrics-url: rounds sent one at a time after the timed phase to measure the score delay.")
	fs.IntVar(&o.anomalyEvery, "anomaly-every", 0, "Place the anomalies from round N after warm-up on, one per N rounds on average (demos), instead of over the last two thirds of the timed rounds.")
	fs.IntVar(&o.anomalies, "anomalies", 60, "Anomalies injected (spikes, level shifts, drifts) in the timed rounds; listed in the JSON output.")
	fs.IntVar(&o.faults, "faults", 0, "Target-wide faults injected besides the anomalies: two thirds of one target's series shift together, as a failing host's do, for 10 rounds, going round the targets (with -anomaly-every: one per N rounds from round 270 after warm-up on, halfway between two anomalies); listed in the JSON output with their fault index.")
	fs.IntVar(&o.maxAttempts, "max-attempts", 30, "Attempts per request before it counts as failed (retries on 5xx, 429 and network errors).")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "Timeout of one HTTP request.")
	fs.BoolVar(&o.honorRetryAfter, "honor-retry-after", false, "Wait Retry-After (capped at 10s) instead of the 5-500 ms backoff after a 503 or 429.")
	fs.IntVar(&o.maxBufferMB, "max-buffer-mb", 2048, "Memory for pre-encoded rounds, MiB: caps the timed rounds.")
	fs.Int64Var(&o.startMs, "start-ms", 0, "Timestamp of round 0 in ms. 0: chosen so that the last round is not in the future (throughput) or round warmup-rounds is now (-realtime).")
	fs.BoolVar(&o.realtime, "realtime", false, "Send one round every -interval of wall time (demos) instead of as fast as possible.")
	fs.StringVar(&o.out, "out", "", "Write every figure as JSON to this file.")
	fs.BoolVar(&o.serveFloor, "serve-floor", false, "Run the decode-only reference receiver on -listen instead (also: `load floor -listen ADDR`).")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9701", "Listen address of -serve-floor.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "load: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if o.serveFloor {
		return serveFloor(o.listen, stdout, stderr)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "load: %v\n", err)
		return 2
	}
	flags := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { flags[f.Name] = f.Value.String() })

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := runLoad(ctx, &o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "load: %v\n", err)
		return 1
	}
	rep.Flags = flags
	printReport(stdout, rep)
	if o.out != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(o.out, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "load: cannot write -out %s: %v\n", o.out, err)
			return 1
		}
	}
	return 0
}

func (o *options) validate() error {
	for _, u := range []struct{ flag, val string }{{"url", o.url}, {"metrics-url", o.metricsURL}} {
		if u.val == "" && u.flag == "metrics-url" {
			continue
		}
		pu, err := url.Parse(u.val)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("-%s %q: want an http URL", u.flag, u.val)
		}
		host := pu.Host
		if pu.Port() == "" {
			host += ":80"
		}
		if err := checkLoopback(host); err != nil {
			return fmt.Errorf("-%s: %w", u.flag, err)
		}
	}
	switch {
	case o.series < 1:
		return fmt.Errorf("-series must be at least 1, got %d", o.series)
	case o.samplesPerRequest < 1:
		return fmt.Errorf("-samples-per-request must be at least 1, got %d", o.samplesPerRequest)
	case o.concurrency < 1 || o.concurrency > 1024:
		return fmt.Errorf("-concurrency must be between 1 and 1024, got %d", o.concurrency)
	case o.protocol != 1 && o.protocol != 2:
		return fmt.Errorf("-protocol must be 1 or 2, got %d", o.protocol)
	case o.interval < time.Millisecond:
		return fmt.Errorf("-interval must be at least 1ms, got %s", o.interval)
	case o.day < time.Millisecond:
		return fmt.Errorf("-day must be at least 1ms, got %s", o.day)
	case o.warmupRounds < 0 || o.rounds < 0 || o.delayRounds < 0 || o.anomalies < 0 || o.faults < 0:
		return errors.New("-warmup-rounds, -rounds, -delay-rounds, -anomalies and -faults must not be negative")
	case o.rounds == 0 && o.duration <= 0:
		return fmt.Errorf("-duration must be positive when -rounds is 0, got %s", o.duration)
	case o.maxRounds < 1:
		return fmt.Errorf("-max-rounds must be at least 1, got %d", o.maxRounds)
	case o.maxAttempts < 1:
		return fmt.Errorf("-max-attempts must be at least 1, got %d", o.maxAttempts)
	case o.maxBufferMB < 1:
		return fmt.Errorf("-max-buffer-mb must be at least 1, got %d", o.maxBufferMB)
	case o.pid < 0:
		return fmt.Errorf("-pid must not be negative, got %d", o.pid)
	}
	return nil
}

// runLoad runs the phases: warm-up, encoding of the timed rounds, timed
// rounds, then (with -metrics-url) the score-delay rounds.
func runLoad(ctx context.Context, o *options, logw io.Writer) (*Report, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "load: "+format+"\n", args...) }
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machineInfo()}
	rep.Receiver.URL, rep.Receiver.PID = o.url, o.pid

	var p *proc
	if o.pid > 0 {
		var err error
		if p, err = newProc(o.pid); err != nil {
			return nil, err
		}
		rep.Receiver.Cmdline = p.cmdline()
		rep.Receiver.ClockTicks = p.clkTck
	}
	var poller *counterPoller
	if o.metricsURL != "" {
		poller = newCounterPoller(o.metricsURL, strings.Split(o.delayMetrics, ","))
	}

	// Timestamps: samples must never be more than 10 min ahead of the
	// receiver's clock (Prometheus's rule, anomalyd's max_future).
	ivMs := o.interval.Milliseconds()
	timedMax := o.rounds
	if timedMax == 0 {
		timedMax = o.maxRounds
		if o.realtime {
			timedMax = max(1, int(o.duration/o.interval))
		}
	}
	delayRounds := 0
	if poller != nil && !o.realtime {
		delayRounds = o.delayRounds
	}
	start := o.startMs
	if start == 0 {
		now := time.Now().UnixMilli()
		if o.realtime {
			start = now - int64(o.warmupRounds)*ivMs
		} else {
			start = now - int64(o.warmupRounds+timedMax+delayRounds)*ivMs
		}
	}
	cfg := GenConfig{Seed: o.seed, Series: o.series, SamplesPerRequest: o.samplesPerRequest, Concurrency: o.concurrency,
		Protocol: o.protocol, StartMs: start, IntervalMs: ivMs, DayMs: o.day.Milliseconds()}
	t0 := time.Now()
	g := NewGenerator(cfg)
	gi := &rep.Generator
	gi.Series, gi.Targets, gi.Kinds = len(g.series), len(g.targets), g.KindCounts()
	gi.LabelBytesMean, gi.LabelBytesMin, gi.LabelBytesMax = g.LabelBytes()
	gi.StartMs = start
	logf("generated %d series over %d targets in %s (labels: mean %.0f bytes, %d–%d)",
		gi.Series, gi.Targets, time.Since(t0).Round(time.Millisecond), gi.LabelBytesMean, gi.LabelBytesMin, gi.LabelBytesMax)

	snd := newSender(o.url, o.protocol, o.concurrency, o.maxAttempts, o.timeout, o.honorRetryAfter)
	defer snd.close()

	if err := waitListening(ctx, o.url, 10*time.Second); err != nil {
		return nil, err
	}
	var mem0 procMem
	if p != nil {
		var err error
		if mem0, err = p.mem(); err != nil {
			return nil, fmt.Errorf("cannot read the receiver's memory: %w", err)
		}
	}
	var baseline float64
	if poller != nil {
		var err error
		if baseline, _, _, err = poller.read(ctx); err != nil {
			return nil, err
		}
	}
	accepted := 0.0 // samples accepted so far, all phases (for counted − accepted)

	// Warm-up: round by round, so the last one tells how long a round takes.
	W := o.warmupRounds
	t0 = time.Now()
	warm := g.EncodeRounds(0, W, 0)
	if W > 0 {
		gi.BytesPerRound, gi.RequestsPerRound = warm[0].Bytes(), warm[0].Requests()
	}
	gi.EncodeSeconds += time.Since(t0).Seconds()
	wst := newStats()
	var lastRound time.Duration // what the last warm-up round took
	for _, rd := range warm {
		var c0 uint64
		if p != nil {
			st, err := p.stat()
			if err != nil {
				return nil, fmt.Errorf("cannot read the receiver's CPU: %w", err)
			}
			c0 = st.Ticks()
		}
		rs := time.Now()
		snd.sendRound(ctx, rd, wst)
		lastRound = time.Since(rs)
		if p != nil {
			// A receiver that answers before it processes is not done
			// yet: count its CPU until idle, spread over every core.
			c1, err := p.waitIdle(30 * time.Second)
			if err != nil {
				return nil, fmt.Errorf("cannot read the receiver's CPU: %w", err)
			}
			cpu := time.Duration(p.cpuSeconds(c1-c0) / float64(runtime.NumCPU()) * float64(time.Second))
			lastRound = max(lastRound, cpu)
		}
		rep.Warmup.RoundSeconds = append(rep.Warmup.RoundSeconds, lastRound.Seconds())
	}
	warm = nil
	rep.Warmup.Rounds = W
	rep.Warmup.Stats = summarize(wst, 0)
	accepted += float64(wst.SamplesAccepted)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if wst.Failed > 0 {
		logf("warning: %d warm-up requests failed (codes %v)", wst.Failed, wst.Codes)
	}
	if W > 0 {
		logf("warm-up: %d rounds, the last took %s (to its last answer, or its receiver CPU / %d cores if longer)", W, lastRound.Round(time.Millisecond), runtime.NumCPU())
	}

	// How many timed rounds: -rounds, or twice what -duration should take
	// at the pace of the last warm-up round (all encoded up front, capped by
	// memory). Twice: later rounds cost more (detectors leave warm-up).
	T := o.rounds
	expected := T
	switch {
	case T > 0:
	case o.realtime:
		T, expected = timedMax, timedMax
	case W > 0 && lastRound > 0:
		expected = max(1, int(o.duration/lastRound))
		T = min(timedMax, 2*expected+2)
	default:
		T, expected = timedMax, timedMax
	}
	if !o.realtime {
		if gi.BytesPerRound == 0 {
			gi.BytesPerRound = g.EncodeRound(W).Bytes()
		}
		budget := int64(o.maxBufferMB) << 20
		fit := int(budget/int64(max(gi.BytesPerRound, 1))) - delayRounds
		if fit < 1 {
			return nil, fmt.Errorf("one round is %d bytes encoded: -max-buffer-mb %d holds none; raise it or lower -series", gi.BytesPerRound, o.maxBufferMB)
		}
		if T > fit {
			if o.rounds > 0 {
				return nil, fmt.Errorf("-rounds %d (+%d delay rounds) × %d bytes a round exceeds -max-buffer-mb %d; raise it or lower -rounds",
					o.rounds, delayRounds, gi.BytesPerRound, o.maxBufferMB)
			}
			T = fit
		}
	}
	var faultStarts []int
	if o.anomalyEvery > 0 {
		rep.Anomalies = anomalyReports(g.PlaceAnomalies(o.anomalies, W+o.anomalyEvery, W+o.anomalyEvery*(o.anomalies+1)))
		// Faults from demoReady on, halfway between two anomalies.
		for k := range o.faults {
			faultStarts = append(faultStarts, W+demoReady+o.anomalyEvery*k+o.anomalyEvery/2)
		}
	} else {
		rep.Anomalies = anomalyReports(g.PlaceAnomalies(o.anomalies, W+expected/3, W+max(expected, 1)))
		for k := range o.faults {
			faultStarts = append(faultStarts, W+expected/3+(k+1)*(expected-expected/3)/(o.faults+1))
		}
	}
	rep.Anomalies = append(rep.Anomalies, anomalyReports(g.PlaceFaults(faultStarts, faultRounds))...)

	st := newStats()
	var cpu0, cpu1 uint64
	var self0, selfUsed time.Duration
	var timedRounds int
	var ackTime, idleTime time.Duration
	var dm *delayMeter
	if poller != nil {
		dm = &delayMeter{poller: poller}
	}
	if o.realtime {
		// Each round is encoded while waiting for its turn; with
		// -metrics-url its delay is measured before the next one, and the
		// scrapes are part of the receiver's CPU figures.
		var err error
		if p != nil {
			if cpu0, err = p.waitIdle(30 * time.Second); err != nil {
				return nil, err
			}
		}
		self0 = selfCPU()
		tStart := time.Now()
		for r := W; r < W+T && ctx.Err() == nil; r++ {
			te := time.Now()
			rd := g.EncodeRounds(r, r+1, 0)[0]
			gi.EncodeSeconds += time.Since(te).Seconds()
			if gi.BytesPerRound == 0 {
				gi.BytesPerRound, gi.RequestsPerRound = rd.Bytes(), rd.Requests()
			}
			due := time.UnixMilli(g.Timestamp(r))
			rs := newStats()
			send := func() int64 {
				select {
				case <-time.After(time.Until(due)):
				case <-ctx.Done():
				}
				snd.sendRound(ctx, rd, rs)
				return rs.SamplesAccepted
			}
			if dm != nil {
				if err := dm.measure(ctx, send, o.interval); err != nil {
					return nil, err
				}
			} else {
				send()
			}
			st.merge(rs)
			accepted += float64(rs.SamplesAccepted)
			timedRounds++
			logf("round %d: %d samples accepted, %d failed, answered %s after its timestamp",
				r, rs.SamplesAccepted, rs.SamplesFailed, time.Since(due).Round(time.Millisecond))
		}
		ackTime = time.Since(tStart)
		if p != nil {
			if cpu1, err = p.waitIdle(30 * time.Second); err != nil {
				return nil, err
			}
		}
		idleTime = time.Since(tStart)
		selfUsed = selfCPU() - self0
		gi.Buffering = "realtime: each round encoded while waiting for its turn"
	} else {
		t0 = time.Now()
		rounds := g.EncodeRounds(W, W+T+delayRounds, 0)
		gi.EncodeSeconds += time.Since(t0).Seconds()
		gi.PreEncodedRounds = len(rounds)
		for _, rd := range rounds {
			gi.PreEncodedBytes += int64(rd.Bytes())
		}
		gi.Buffering = "all timed and delay rounds encoded before timing"
		logf("encoded %d rounds (%d timed at most, %d for the score delay) in %s: %.0f MiB",
			len(rounds), T, delayRounds, time.Duration(gi.EncodeSeconds*float64(time.Second)).Round(time.Millisecond),
			float64(gi.PreEncodedBytes)/(1<<20))
		runtime.GC() // the encoding's garbage is not collected during the timed rounds
		var err error
		if p != nil {
			if cpu0, err = p.waitIdle(30 * time.Second); err != nil {
				return nil, err
			}
		}
		var deadline time.Time
		if o.rounds == 0 {
			deadline = time.Now().Add(o.duration)
		}
		self0 = selfCPU()
		tStart := time.Now()
		timedRounds = snd.sendFree(ctx, rounds[:T], newRoundGate(deadline), st)
		ackTime = time.Since(tStart)
		selfUsed = selfCPU() - self0
		if p != nil {
			if cpu1, err = p.waitIdle(30 * time.Second); err != nil {
				return nil, err
			}
		}
		idleTime = time.Since(tStart)
		accepted += float64(st.SamplesAccepted)
		if o.rounds == 0 && timedRounds == T && ctx.Err() == nil {
			rep.Timed.RanOutOfRounds = ackTime < o.duration
		}
		if rep.Timed.RanOutOfRounds {
			logf("warning: the %d pre-encoded rounds took %s, less than -duration %s (raise -max-buffer-mb or -max-rounds)", T, ackTime.Round(time.Millisecond), o.duration)
		}
		// Score delay: the next rounds, one at a time, after the figures
		// above were taken (a scrape of every score costs the receiver).
		if dm != nil {
			for _, rd := range rounds[timedRounds : timedRounds+delayRounds] {
				if ctx.Err() != nil {
					break
				}
				ds := newStats()
				err := dm.measure(ctx, func() int64 {
					snd.sendRound(ctx, rd, ds)
					return ds.SamplesAccepted
				}, 30*time.Second)
				if err != nil {
					return nil, err
				}
				accepted += float64(ds.SamplesAccepted)
			}
		}
	}
	if dm != nil && ctx.Err() == nil {
		final, err := dm.settle(ctx)
		if err != nil {
			return nil, err
		}
		rep.ScoreDelay.CountedMinusAccepted = final - baseline - accepted
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i := range rep.Anomalies {
		rep.Anomalies[i].Sent = rep.Anomalies[i].StartRound < W+timedRounds
	}
	gi.CounterResetsTimed = g.CounterResets(W, W+timedRounds)

	tm := &rep.Timed
	tm.Rounds = timedRounds
	tm.Stats = summarize(st, ackTime)
	tm.Seconds = ackTime.Seconds()
	tm.SecondsToIdle = idleTime.Seconds()
	rep.Loader.CPUSeconds = selfUsed.Seconds()
	if st.SamplesAccepted > 0 {
		rep.Loader.CPUSecondsPerMillionSamples = selfUsed.Seconds() / (float64(st.SamplesAccepted) / 1e6)
	}
	if p != nil {
		mem, err := p.mem()
		if err != nil {
			return nil, err
		}
		c := &rep.ReceiverCPU
		c.Seconds = p.cpuSeconds(cpu1 - cpu0)
		if st.SamplesAccepted > 0 {
			c.PerMillionSamples = c.Seconds / (float64(st.SamplesAccepted) / 1e6)
		}
		if idleTime > 0 {
			c.CoresUsed = c.Seconds / idleTime.Seconds()
		}
		m := &rep.ReceiverMemory
		m.VmHWMBytes, m.VmRSSBytes, m.VmRSSBeforeBytes = mem.VmHWM, mem.VmRSS, mem0.VmRSS
		n := float64(o.series)
		m.VmHWMPerSeries = float64(mem.VmHWM) / n
		m.VmRSSPerSeries = float64(mem.VmRSS) / n
		m.VmRSSGrowthPerSeries = float64(mem.VmRSS-mem0.VmRSS) / n
	}
	if dm != nil {
		d := &rep.ScoreDelay
		d.Counters = strings.Split(o.delayMetrics, ",")
		d.Rounds, d.Measured, d.TimedOut = dm.rounds, len(dm.upper), dm.timeouts
		d.P50Ms, d.P99Ms, d.MaxMs = pct(dm.upper, 50), pct(dm.upper, 99), pct(dm.upper, 100)
		d.LowerP50Ms = pct(dm.lower, 50)
		for k := range dm.upper {
			d.DelaysMs = append(d.DelaysMs, ms(dm.upper[k]))
			d.DelaysLowerMs = append(d.DelaysLowerMs, ms(dm.lower[k]))
		}
		d.Scrapes = len(dm.scrapes)
		d.ScrapeP50Ms = pct(dm.scrapes, 50)
		d.ScrapeBytes = dm.scrapeBytes
	}
	return rep, nil
}

// waitListening waits until something accepts TCP connections at the
// URL's host (a receiver started just before), at most limit.
func waitListening(ctx context.Context, rawURL string, limit time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host += ":80"
	}
	return procs.WaitListening(ctx, host, limit)
}

// pct is the p-th percentile (nearest rank) of ds, in milliseconds.
func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return ms(s[min(max(k, 0), len(s)-1)])
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }
