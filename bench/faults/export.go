package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/anomalyd/anomalyd/bench/internal/procs"
	"github.com/anomalyd/anomalyd/detectors"
	wseries "github.com/anomalyd/anomalyd/window/series"
)

// -export DIR writes a run's input as `anomalyd backtest` reads it, for
// -replay: every series anomalyd analysed (the run's anomaly_score
// {detector="combined"} series; not histogram buckets, not excluded
// series), one CSV per series, "timestamp,value" with decimal Unix
// seconds, in DIR/<job>/ (one folder per target: the backtest's group);
// DIR/<job>/series.txt names each file's label set, and DIR/faults.json is
// the run's report, whose schedule -replay scores against.

// exportedSeries is one analysed input series and its raw samples.
type exportedSeries struct {
	lset labels.Labels // the input labels, __name__ included
	ps   []point
}

// scoreKey is the label set, formatted as formatLabels does, of the
// combined anomaly_score series anomalyd writes for input series m, built
// by the server's own rule (metric, detector, le and quantile renamed).
func scoreKey(m map[string]string) string {
	var key []byte
	labels.FromMap(m).Range(func(l labels.Label) {
		if l.Value != "" {
			key = wseries.AppendLabel(key, l.Name, l.Value)
		}
	})
	info := wseries.Info{Labels: string(key), Name: m[labels.MetricName]}
	out := map[string]string{}
	for _, l := range wseries.AppendOutputLabels(nil, &info, "anomaly_score", detectors.KindCombined) {
		out[l.Name] = l.Value
	}
	return formatLabels(out)
}

// readInputs reads from Prometheus at base the raw samples, from from to
// to, of the input series of the analysed output series all. It also
// returns the label sets of the analysed series it found no input for.
func readInputs(base string, all []*series, from, to time.Time, chunk time.Duration) ([]*exportedSeries, []string, error) {
	want := map[string]bool{}
	var jobs []string
	for _, s := range all {
		want[s.labels] = true
		if j := regexp.QuoteMeta(s.lset["job"]); !slices.Contains(jobs, j) {
			jobs = append(jobs, j)
		}
	}
	slices.Sort(jobs)
	q := fmt.Sprintf(`{job=~%q,__name__!~"anomaly_.*|ALERTS.*"}`, strings.Join(jobs, "|"))
	byKey := map[string]*exportedSeries{}
	err := readRawSeries(base, q, from, to, chunk, func(m map[string]string, ps []point) {
		k := scoreKey(m)
		if !want[k] {
			return
		}
		s := byKey[k]
		if s == nil {
			s = &exportedSeries{lset: labels.FromMap(m)}
			byKey[k] = s
		}
		s.ps = append(s.ps, ps...)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read the input series: %w", err)
	}
	var out []*exportedSeries
	var missing []string
	for _, s := range all {
		if in := byKey[s.labels]; in != nil {
			out = append(out, in)
		} else {
			missing = append(missing, s.labels)
		}
	}
	return out, missing, nil
}

// exportFileNames names the CSV files of one job's series: <metric>.csv
// when the metric has one series in the job, else x<8 hex digits of a hash
// of the label set>_<metric>.csv, so the name stays a metric name that
// ends as the metric does (a counter's _total, _count or _sum). Characters
// a metric name cannot have become _; "incidents" always gets the prefix,
// as the backtest writes incidents.csv in each group.
func exportFileNames(lsets []labels.Labels) []string {
	metrics := make([]string, len(lsets))
	count := map[string]int{}
	for i, ls := range lsets {
		metrics[i] = metricFileName(ls.Get(labels.MetricName))
		count[metrics[i]]++
	}
	names := make([]string, len(lsets))
	used := map[string]bool{}
	for i := range lsets {
		m := metrics[i]
		if count[m] == 1 && m != "incidents" {
			names[i] = m + ".csv"
			used[names[i]] = true
		}
	}
	for i, ls := range lsets {
		if names[i] != "" {
			continue
		}
		// A collision of the hash (unlikely) hashes again, salted.
		for salt := 0; ; salt++ {
			h := fnv.New32a()
			io.WriteString(h, ls.String())
			if salt > 0 {
				fmt.Fprintf(h, "\xff%d", salt)
			}
			n := fmt.Sprintf("x%08x_%s.csv", h.Sum32(), metrics[i])
			if !used[n] {
				names[i] = n
				used[n] = true
				break
			}
		}
	}
	return names
}

// metricFileName makes name a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*,
// as the backtest checks) by replacing what it cannot have with _.
func metricFileName(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// appendRow appends one CSV row: the time as decimal Unix seconds with
// milliseconds (Prometheus's resolution; the backtest reads a bare number
// as seconds), and the value in the fewest digits that read back the same.
func appendRow(b []byte, p point) []byte {
	ms := int64(math.Round(p.t * 1000))
	if ms < 0 {
		b = append(b, '-')
		ms = -ms
	}
	b = strconv.AppendInt(b, ms/1000, 10)
	f := ms % 1000
	b = append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10), ',')
	b = strconv.AppendFloat(b, p.v, 'g', -1, 64)
	return append(b, '\n')
}

// checkExportDir refuses an export folder that holds anything: an earlier
// export's files would be read as input too.
func checkExportDir(dir string) error {
	es, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("-export: %w", err)
	case len(es) > 0:
		return fmt.Errorf("-export %s is not empty", dir)
	}
	return nil
}

// writeExport writes ss to dir: dir/<job>/<file>.csv and dir/<job>/series.txt
// (file, tab, label set, one line per file, by file), and rep as
// dir/faults.json. A job must have one instance: a folder is one target.
func writeExport(dir string, rep *report, ss []*exportedSeries) error {
	if err := checkExportDir(dir); err != nil {
		return err
	}
	byJob := map[string][]*exportedSeries{}
	instance := map[string]string{}
	for _, s := range ss {
		job, inst := s.lset.Get("job"), s.lset.Get("instance")
		if i, ok := instance[job]; ok && i != inst {
			return fmt.Errorf("job %q has two instances, %q and %q: each folder of the export is one target", job, i, inst)
		}
		instance[job] = inst
		byJob[job] = append(byJob[job], s)
	}
	for job, list := range byJob {
		if job == "" || job == "." || job == ".." || strings.ContainsAny(job, `/\`) {
			return fmt.Errorf("job %q cannot name a folder", job)
		}
		slices.SortFunc(list, func(a, b *exportedSeries) int { return labels.Compare(a.lset, b.lset) })
		lsets := make([]labels.Labels, len(list))
		for i, s := range list {
			lsets[i] = s.lset
		}
		names := exportFileNames(lsets)
		jd := filepath.Join(dir, job)
		if err := os.MkdirAll(jd, 0o755); err != nil {
			return fmt.Errorf("-export: %w", err)
		}
		var index []string
		for i, s := range list {
			if err := writeSeriesCSV(filepath.Join(jd, names[i]), s.ps); err != nil {
				return err
			}
			index = append(index, names[i]+"\t"+s.lset.String()+"\n")
		}
		slices.Sort(index)
		if err := os.WriteFile(filepath.Join(jd, "series.txt"), []byte(strings.Join(index, "")), 0o644); err != nil {
			return fmt.Errorf("-export: %w", err)
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("-export: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "faults.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("-export: %w", err)
	}
	return nil
}

// writeSeriesCSV writes one series' samples, in time order, as a
// "timestamp,value" CSV file.
func writeSeriesCSV(path string, ps []point) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("-export: %w", err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("timestamp,value\n")
	var b []byte
	for _, p := range ps {
		b = appendRow(b[:0], p)
		w.Write(b)
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("-export: %s: %w", path, err)
	}
	return nil
}

// export reads the input of the analysed series all from Prometheus at base
// and writes it with rep to dir. from should precede the run's begin a
// little: anomalyd saw the samples scraped before it too.
func export(dir, base string, rep *report, all []*series, from, to time.Time, stderr io.Writer) error {
	ss, missing, err := readInputs(base, all, from, to, 2*time.Minute)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "faults: -export: no input found for %d of %d analysed series, e.g. %s\n", len(missing), len(all), missing[0])
	}
	if err := writeExport(dir, rep, ss); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "faults: exported %d series to %s\n", len(ss), dir)
	return nil
}

// exportKept is -export with -from-kept: it starts Prometheus on the data
// of a run that -keep kept, reads the run's analysed series from it as the
// run does, and exports them with the run's report, -from-report.
func (o *options) exportKept(ctx context.Context, stderr io.Writer) error {
	if err := checkExportDir(o.export); err != nil {
		return err
	}
	rep, err := readReport(o.fromReport)
	if err != nil {
		return err
	}
	end, err := runEnd(rep)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "anomalyd-faults-export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("scrape_configs: []\n"), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(o.prometheus, "--config.file="+cfg, "--storage.tsdb.path="+o.fromKept,
		"--storage.tsdb.retention.time=100y", "--web.listen-address="+o.promAddr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", o.prometheus, err)
	}
	defer procs.Stop(cmd, 30*time.Second)
	base := "http://" + o.promAddr
	if err := waitReady(ctx, base, 5*time.Minute); err != nil {
		b, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("prometheus on %s: %w\n%s", o.fromKept, err, tail(b, 2000))
	}
	all, err := readScores(base, rep.Begin, end, 5*time.Minute)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return fmt.Errorf("no anomaly_score series in %s from %s to %s", o.fromKept, rep.Begin, end)
	}
	return export(o.export, base, rep, all, rep.Begin.Add(-time.Minute), end.Add(10*time.Second), stderr)
}

// waitReady waits until the Prometheus at base answers /-/ready with 200
// (its TSDB loaded), for at most timeout.
func waitReady(ctx context.Context, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
