package backtest

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/anomalyd/anomalyd/window/incident"
)

// incidentsFile is the incident stage's output in every output folder
// whose input folder directly holds CSV files.
const incidentsFile = "incidents.csv"

// incSample is one row of a file for the incident stage: its time and its
// combined score, -1 when the row was not analysed or the detectors were
// not ready.
type incSample struct {
	t      int64
	score  float64
	record float64
	age    uint32
}

// writeIncidents runs the incident stage over every group of files, the
// files an input folder directly holds (one target), with the server's
// code: their rows in merged time order, as a live target delivers them.
// Each group's OUTPUT/<folder>/incidents.csv has one row per distinct
// timestamp of the group, in time order: timestamp (in the format of the
// group's first file), incident_score (the native score, ≥ 1 an incident),
// open (0 or 1) and series (the series whose evidence is live). It
// returns the number of groups written.
func writeIncidents(jobs []backtestJob, results []backtestResult, p *incident.Params) (int, error) {
	byDir := map[string][]int{}
	var dirs []string
	for i, j := range jobs {
		d := filepath.Dir(j.out)
		if filepath.Base(j.out) == incidentsFile {
			return 0, fmt.Errorf("%s: an input file called %s would be overwritten by the group's incidents; rename it", j.in, incidentsFile)
		}
		if _, ok := byDir[d]; !ok {
			dirs = append(dirs, d)
		}
		byDir[d] = append(byDir[d], i)
	}
	for _, d := range dirs {
		if err := writeGroup(filepath.Join(d, incidentsFile), byDir[d], results, p); err != nil {
			return 0, err
		}
	}
	return len(dirs), nil
}

// groupSample is a sample of one file of a group.
type groupSample struct {
	t     int64
	file  int
	dt    int64 // since the file's previous row; 0 for its first
	score float64
	d     incident.Detail
}

func writeGroup(path string, files []int, results []backtestResult, p *incident.Params) error {
	var all []groupSample
	for _, i := range files {
		var prev int64
		for k, s := range results[i].samples {
			dt := int64(0)
			if k > 0 && s.t > prev {
				dt = s.t - prev
			}
			all = append(all, groupSample{t: s.t, file: i, dt: dt, score: s.score,
				d: incident.Detail{Score: s.score, Record: s.record, Age: s.age}})
			prev = s.t
		}
	}
	// Stable: rows of one time keep file order, the order a scrape has.
	slices.SortStableFunc(all, func(a, b groupSample) int { return cmp.Compare(a.t, b.t) })
	format := results[files[0]].format

	out, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 64<<10)
	w.WriteString("timestamp,incident_score,open,series\n")
	g := incident.NewGroup(p)
	keys := make(map[int]string, len(files))
	for _, i := range files {
		keys[i] = strconv.Itoa(i)
	}
	var buf []byte
	for k := 0; k < len(all); {
		t := all[k].t
		for ; k < len(all) && all[k].t == t; k++ {
			if s := all[k]; s.score >= 0 {
				g.ObserveDetail(keys[s.file], s.t, s.dt, s.score, s.d)
			}
		}
		st := g.Evaluate(t, len(files), nil)
		buf = appendTimestamp(buf[:0], format, t)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, st.Score, 'g', 6, 64)
		buf = append(buf, ',')
		if st.Open {
			buf = append(buf, '1')
		} else {
			buf = append(buf, '0')
		}
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, int64(st.Series), 10)
		buf = append(buf, '\n')
		w.Write(buf)
	}
	err = w.Flush()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// appendTimestamp formats t (milliseconds) as format writes it.
func appendTimestamp(b []byte, format tsFormat, t int64) []byte {
	tm := time.UnixMilli(t).UTC()
	switch format {
	case tsDateTime:
		return tm.AppendFormat(b, "2006-01-02 15:04:05")
	case tsRFC3339:
		return tm.AppendFormat(b, time.RFC3339Nano)
	}
	if t%1000 == 0 {
		return strconv.AppendInt(b, t/1000, 10)
	}
	return strconv.AppendFloat(b, float64(t)/1000, 'f', 3, 64)
}
