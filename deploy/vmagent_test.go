package deploy

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// The scale-out recipe's files, relative to deploy/; cmd/anomalyd/e2e
// (TestVmagentShardE2E) runs vmagent.flags and anomalyd.yml as shipped.
const (
	vmagentFlagsFile = "vmagent/vmagent.flags"
	vmagentConfig    = "vmagent/anomalyd.yml"
	vmagentProm      = "vmagent/prometheus.yml"
)

// readVmagentFlags returns the flags of vmagent.flags, one a line, comments
// and blank lines left out.
func readVmagentFlags(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(vmagentFlagsFile)
	if err != nil {
		t.Fatal(err)
	}
	var flags []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !strings.HasPrefix(l, "-") || strings.ContainsAny(l, " \t") {
			t.Errorf("%s: %q is not one -flag or -flag=value", vmagentFlagsFile, l)
		}
		flags = append(flags, l)
	}
	return flags
}

// TestVmagentRecipe checks that the files of deploy/vmagent fit together:
// vmagent shards by the labels anomalyd groups incidents by, so a group is
// never split between instances; Prometheus writes to vmagent's address and
// scrapes every instance vmagent writes to; every instance warms up from
// Prometheus.
func TestVmagentRecipe(t *testing.T) {
	out := runPromtool(t, "vmagent", "check", "config", "prometheus.yml")
	t.Logf("promtool check config vmagent/prometheus.yml:\n%s", out)

	flags := readVmagentFlags(t)
	values := map[string][]string{}
	for _, f := range flags {
		name, value, _ := strings.Cut(f, "=")
		values[name] = append(values[name], value)
	}
	if !slices.Contains(flags, "-remoteWrite.shardByURL") {
		t.Errorf("%s does not set -remoteWrite.shardByURL: vmagent would send every series to every instance", vmagentFlagsFile)
	}
	shardLabels := strings.Split(strings.Join(values["-remoteWrite.shardByURL.labels"], ","), ",")

	content, err := os.ReadFile(vmagentConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, vmagentConfig, content)
	groupBy := slices.Clone(cfg.Incidents.GroupBy)
	for _, r := range cfg.Rules {
		groupBy = append(groupBy, r.Incidents.GroupBy...)
	}
	slices.Sort(groupBy)
	groupBy = slices.Compact(groupBy)
	slices.Sort(shardLabels)
	if !slices.Equal(shardLabels, groupBy) {
		t.Errorf("vmagent shards by %q (-remoteWrite.shardByURL.labels) but anomalyd groups incidents by %q: a group would be split over instances",
			shardLabels, groupBy)
	}
	if cfg.Warmup.RemoteRead == nil {
		t.Errorf("%s has no warmup.remote_read: a series that moves to another instance would start cold there", vmagentConfig)
	}

	var prom struct {
		RemoteWrite []struct {
			URL string `yaml:"url"`
		} `yaml:"remote_write"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			HonorLabels   bool   `yaml:"honor_labels"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	b, err := os.ReadFile(vmagentProm)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prom); err != nil {
		t.Fatalf("%s: %v", vmagentProm, err)
	}
	listen := values["-httpListenAddr"]
	if len(prom.RemoteWrite) != 1 || len(listen) != 1 {
		t.Fatalf("want one remote_write entry in %s and one -httpListenAddr in %s, got %d and %d",
			vmagentProm, vmagentFlagsFile, len(prom.RemoteWrite), len(listen))
	}
	rw, err := url.Parse(prom.RemoteWrite[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, port, _ := strings.Cut(listen[0], ":"); rw.Port() != port || rw.Path != "/api/v1/write" {
		t.Errorf("%s writes to %s, vmagent listens on %s", vmagentProm, rw, listen[0])
	}

	var instances []string
	for _, u := range values["-remoteWrite.url"] {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if p.Path != "/api/v1/write" {
			t.Errorf("-remoteWrite.url=%s is not anomalyd's /api/v1/write", u)
		}
		instances = append(instances, p.Host)
	}
	if len(instances) < 2 {
		t.Errorf("%s names %d anomalyd instances, want at least 2", vmagentFlagsFile, len(instances))
	}
	var scraped []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName != "anomalyd" {
			continue
		}
		if !sc.HonorLabels {
			t.Errorf("%s: the anomalyd job needs honor_labels: true to keep the input series' job and instance", vmagentProm)
		}
		for _, s := range sc.StaticConfigs {
			scraped = append(scraped, s.Targets...)
		}
	}
	if !slices.Equal(scraped, instances) {
		t.Errorf("%s scrapes %q, vmagent writes to %q: scrape every instance", vmagentProm, scraped, instances)
	}

	readme, err := os.ReadFile(filepath.Join("vmagent", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{vmagentFlagsFile, vmagentConfig, vmagentProm} {
		if !strings.Contains(string(readme), filepath.Base(f)) {
			t.Errorf("vmagent/README.md does not mention %s", filepath.Base(f))
		}
	}
}
