package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"

	"github.com/anomalyd/anomalyd/config"
)

// The files under test, relative to deploy/.
const (
	unitFile      = "systemd/anomalyd.service"
	envFile       = "systemd/anomalyd.default"
	unitConfig    = "systemd/anomalyd.yml"
	kubernetesDir = "kubernetes"
)

// bytesPerSeries is anomalyd's peak RSS per series with the default
// settings, as `make bench` measured it (README, docs/performance.md): the
// memory a deployment must have for window.max_series series.
const bytesPerSeries = 2745

// minStartupBudget is the least time the startup probe may give the restore
// of a checkpoint before the kubelet restarts the container: a million
// series restore in about 3 s, a slow volume can take many times that, and
// a restart only starts the restore over.
const minStartupBudget = 5 * time.Minute

// anomalydBuild is the anomalyd built for this package's tests, once;
// TestMain removes it.
var anomalydBuild struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if anomalydBuild.dir != "" {
		os.RemoveAll(anomalydBuild.dir)
	}
	os.Exit(code)
}

// anomalydBinary builds cmd/anomalyd once for the tests of this package and
// returns its path.
func anomalydBinary(t *testing.T) string {
	t.Helper()
	b := &anomalydBuild
	b.once.Do(func() {
		goBin, err := exec.LookPath("go") // go test puts its own GOROOT/bin first on PATH
		if err != nil {
			b.err = fmt.Errorf("cannot build anomalyd: %w", err)
			return
		}
		if b.dir, b.err = os.MkdirTemp("", "anomalyd-deploy-"); b.err != nil {
			return
		}
		out := filepath.Join(b.dir, "anomalyd")
		cmd := exec.Command(goBin, "build", "-o", out, "./cmd/anomalyd")
		cmd.Dir = ".."
		if o, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/anomalyd: %w\n%s", err, o)
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var (
	usageFlag    = regexp.MustCompile(`^  -([a-z0-9][a-z0-9.-]*)`)
	usageDefault = regexp.MustCompile(`\(default "?(.*?)"?\)$`)
)

// anomalydFlags returns the server's flags and their defaults ("" when the
// usage text prints none), from `anomalyd -h`.
func anomalydFlags(t *testing.T) map[string]string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(anomalydBinary(t), "-h")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("anomalyd -h: %v\n%s", err, out.String())
	}
	flags := map[string]string{}
	var last string
	for line := range strings.Lines(out.String()) {
		line = strings.TrimRight(line, "\n")
		if m := usageFlag.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = ""
		} else if m := usageDefault.FindStringSubmatch(line); m != nil && last != "" {
			flags[last] = m[1]
		}
	}
	if len(flags) == 0 {
		t.Fatalf("anomalyd -h printed no flags:\n%s", out.String())
	}
	return flags
}

// parseArgs checks that every argument is `--flag=value` for a flag of
// anomalyd, given once, and returns the values; flags not given have their
// default.
func parseArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	known := anomalydFlags(t)
	got := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("%s: argument %q is not --flag=value", where, a)
			continue
		}
		if _, ok := known[name]; !ok {
			t.Errorf("%s: --%s is not a flag of anomalyd (anomalyd -h)", where, name)
		}
		if _, dup := got[name]; dup {
			t.Errorf("%s: --%s given twice", where, name)
		}
		got[name] = value
	}
	for name, def := range known {
		if _, ok := got[name]; !ok {
			got[name] = def
		}
	}
	return got
}

// loadConfig parses content as anomalyd does at start-up.
func loadConfig(t *testing.T, where string, content []byte) *config.Config {
	t.Helper()
	cfg, err := config.Load(content)
	if err != nil {
		t.Fatalf("%s does not load as an anomalyd configuration: %v", where, err)
	}
	return cfg
}

// duration parses a flag value, failing the test when it is not one.
func duration(t *testing.T, flag, value string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(value)
	if err != nil {
		t.Fatalf("--%s=%s: %v", flag, value, err)
	}
	return d
}

// --- systemd -----------------------------------------------------------

// unit is a systemd unit file: section, then key, then its values in order
// (a key may be given several times).
type unit map[string]map[string][]string

// readUnit parses a unit file: sections, key=value lines, comments, and
// lines continued with a trailing backslash.
func readUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	var section, pending string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if pending != "" {
			line = pending + " " + line
			pending = ""
		} else if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSpace(strings.TrimSuffix(line, `\`))
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not key=value in a section: %q", path, i+1, line)
		}
		u[section][k] = append(u[section][k], v)
	}
	return u
}

// one returns the only value of section.key, failing when there is not
// exactly one.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("%s: [%s] %s: %d values, want 1", unitFile, section, key, len(v))
	}
	return v[0]
}

// readEnvFile parses an EnvironmentFile of NAME="value" lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not NAME=value: %q", path, i+1, line)
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		env[k] = v
	}
	return env
}

// execStartArgs returns the binary and the flags of ExecStart, with $NAME
// references to the environment file replaced by their words there (as
// systemd splits an unbraced $NAME).
func execStartArgs(t *testing.T, u unit, env map[string]string) (string, []string) {
	t.Helper()
	words := strings.Fields(u.one(t, "Service", "ExecStart"))
	var args []string
	for _, w := range words[1:] {
		if name, ok := strings.CutPrefix(w, "$"); ok {
			v, ok := env[name]
			if !ok {
				t.Errorf("%s: ExecStart uses $%s, which %s does not set", unitFile, name, envFile)
			}
			args = append(args, strings.Fields(v)...)
			continue
		}
		args = append(args, w)
	}
	return words[0], args
}

// parseSeconds parses a systemd time span of the forms this unit may use: a
// plain number of seconds, or a Go duration such as 90s.
func parseSeconds(t *testing.T, key, v string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %s=%s: %v", unitFile, key, v, err)
	}
	return d
}

func TestSystemdUnit(t *testing.T) {
	u := readUnit(t, unitFile)
	env := readEnvFile(t, envFile)
	bin, args := execStartArgs(t, u, env)
	if !filepath.IsAbs(bin) {
		t.Errorf("ExecStart binary %q: want an absolute path", bin)
	}
	flags := parseArgs(t, unitFile+" ExecStart", args)

	// The state directory is the only writable place: --storage.path must
	// be it, absolute, or anomalyd cannot write its checkpoints.
	state := u.one(t, "Service", "StateDirectory")
	if want := "/var/lib/" + state; flags["storage.path"] != want {
		t.Errorf("--storage.path=%q: want %q, the StateDirectory=%s", flags["storage.path"], want, state)
	}
	if got := u.one(t, "Service", "ExecReload"); got != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%s: want /bin/kill -HUP $MAINPID (SIGHUP reloads the configuration)", got)
	}
	stop := parseSeconds(t, "TimeoutStopSec", u.one(t, "Service", "TimeoutStopSec"))
	if shutdown := duration(t, "shutdown.timeout", flags["shutdown.timeout"]); stop <= shutdown {
		t.Errorf("TimeoutStopSec %v is not longer than --shutdown.timeout %v: systemd would SIGKILL a graceful shutdown", stop, shutdown)
	}

	// The unit's configuration file is the shipped one, and it loads.
	cfgPath := flags["config.file"]
	if cfgPath != "/etc/anomalyd/anomalyd.yml" {
		t.Errorf("--config.file=%q: want /etc/anomalyd/anomalyd.yml, where the docs install %s", cfgPath, unitConfig)
	}
	content, err := os.ReadFile(unitConfig)
	if err != nil {
		t.Fatal(err)
	}
	loadConfig(t, unitConfig, content)

	for key, want := range map[string]string{
		"DynamicUser":             "yes",
		"KillSignal":              "SIGTERM",
		"Restart":                 "on-failure",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"CapabilityBoundingSet":   "",
	} {
		if got := u.one(t, "Service", key); got != want {
			t.Errorf("[Service] %s=%s, want %s", key, got, want)
		}
	}
	if !slices.Contains(u["Service"]["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter %q: want @system-service", u["Service"]["SystemCallFilter"])
	}
	if n, err := strconv.Atoi(u.one(t, "Service", "LimitNOFILE")); err != nil || n < 4096 {
		t.Errorf("LimitNOFILE=%s: want a number of at least 4096", u.one(t, "Service", "LimitNOFILE"))
	}

	// systemd's own checks, when systemd is installed: the unit's syntax
	// and keys, and its sandbox's exposure score. They need ExecStart's
	// binary to exist, so a copy of the unit points at the one built here.
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze not on PATH: the unit is checked by the parsing above only")
		return
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "anomalyd.service")
	if err := os.WriteFile(copyPath, bytes.Replace(b, []byte("ExecStart="+bin), []byte("ExecStart="+anomalydBinary(t)), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"verify", "--man=no", copyPath},
		// 20 is an exposure of 2.0 out of 10, systemd's "OK" band.
		{"security", "--offline=yes", "--threshold=20", copyPath},
	} {
		var out bytes.Buffer
		cmd := exec.Command(sa, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		text := out.String()
		if args[0] == "security" {
			if i := strings.Index(text, "Overall exposure"); i >= 0 {
				text = text[i:] // the table of every setting is long
			}
		}
		// verify exits 0 on an unknown key or a bad value, and names the
		// unit in its warning.
		if err != nil || args[0] == "verify" && strings.Contains(text, "anomalyd.service") {
			t.Errorf("systemd-analyze %s: exit %v\n%s", strings.Join(args, " "), err, text)
		} else {
			t.Logf("systemd-analyze %s: ok %s", args[0], strings.TrimSpace(text))
		}
	}
}

// --- Kubernetes --------------------------------------------------------

// The parts of the Kubernetes objects the manifests use. Decoding is strict:
// a field in a manifest that is not here fails the test, so what is not
// checked is at least spelt as these structs spell it.

type objectMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type configMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type service struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type statefulSet struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		ServiceName string `yaml:"serviceName"`
		Replicas    int    `yaml:"replicas"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot        bool   `yaml:"runAsNonRoot"`
					RunAsUser           int    `yaml:"runAsUser"`
					RunAsGroup          int    `yaml:"runAsGroup"`
					FSGroup             *int   `yaml:"fsGroup"`
					FSGroupChangePolicy string `yaml:"fsGroupChangePolicy"`
					SeccompProfile      struct {
						Type string `yaml:"type"`
					} `yaml:"seccompProfile"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type kustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Resources  []string `yaml:"resources"`
	Images     []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

// decodeManifest decodes the one YAML document of deploy/kubernetes/name
// into v, rejecting fields v does not have.
func decodeManifest(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kubernetesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.SetStrict(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s/%s: %v", kubernetesDir, name, err)
	}
	var more any
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		t.Fatalf("%s/%s: want one YAML document, found more (%v)", kubernetesDir, name, err)
	}
}

// quantity parses a Kubernetes quantity of the forms the manifests use: an
// integer with an optional binary suffix (Ki, Mi, Gi, Ti) or "m".
func quantity(t *testing.T, what, q string) float64 {
	t.Helper()
	mult := 1.0
	for suffix, m := range map[string]float64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "m": 1e-3} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			q, mult = n, m
			break
		}
	}
	n, err := strconv.ParseFloat(q, 64)
	if err != nil {
		t.Fatalf("%s: quantity %q: %v", what, q, err)
	}
	return n * mult
}

// manifests are the decoded files of deploy/kubernetes.
type manifests struct {
	cm   configMap
	svc  service
	sts  statefulSet
	kust kustomization
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	var m manifests
	decodeManifest(t, "configmap.yaml", &m.cm)
	decodeManifest(t, "service.yaml", &m.svc)
	decodeManifest(t, "statefulset.yaml", &m.sts)
	decodeManifest(t, "kustomization.yaml", &m.kust)
	for _, o := range []struct{ file, apiVersion, kind, wantAPI, wantKind string }{
		{"configmap.yaml", m.cm.APIVersion, m.cm.Kind, "v1", "ConfigMap"},
		{"service.yaml", m.svc.APIVersion, m.svc.Kind, "v1", "Service"},
		{"statefulset.yaml", m.sts.APIVersion, m.sts.Kind, "apps/v1", "StatefulSet"},
		{"kustomization.yaml", m.kust.APIVersion, m.kust.Kind, "kustomize.config.k8s.io/v1beta1", "Kustomization"},
	} {
		if o.apiVersion != o.wantAPI || o.kind != o.wantKind {
			t.Errorf("%s: %s %s, want %s %s", o.file, o.apiVersion, o.kind, o.wantAPI, o.wantKind)
		}
	}
	if n := len(m.sts.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("statefulset.yaml: %d containers, want 1", n)
	}
	return &m
}

func (m *manifests) container() *container { return &m.sts.Spec.Template.Spec.Containers[0] }

// subset reports whether every label of sel is in labels with its value.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	sts, c := &m.sts, m.container()
	pod := &sts.Spec.Template
	flags := parseArgs(t, "statefulset.yaml args", c.Args)

	if sts.Spec.Replicas != 1 {
		t.Errorf("replicas %d: want 1 (one instance per volume, each series to one instance)", sts.Spec.Replicas)
	}
	if !subset(sts.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", sts.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	if !subset(m.svc.Spec.Selector, pod.Metadata.Labels) {
		t.Errorf("service.yaml selector %v does not select the pod labels %v", m.svc.Spec.Selector, pod.Metadata.Labels)
	}
	if sts.Spec.ServiceName != m.svc.Metadata.Name {
		t.Errorf("serviceName %q: want the Service %q", sts.Spec.ServiceName, m.svc.Metadata.Name)
	}

	mounts := map[string]string{} // mount path -> volume name
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	claims := map[string]bool{}
	for _, vct := range sts.Spec.VolumeClaimTemplates {
		claims[vct.Metadata.Name] = true
		if !slices.Equal(vct.Spec.AccessModes, []string{"ReadWriteOnce"}) {
			t.Errorf("volume claim %s: access modes %v, want [ReadWriteOnce] (one instance per directory)", vct.Metadata.Name, vct.Spec.AccessModes)
		}
		if quantity(t, "volume claim storage", vct.Spec.Resources.Requests["storage"]) < 1<<30 {
			t.Errorf("volume claim %s: storage %q, want at least 1Gi (checkpoints and a remote-write queue)", vct.Metadata.Name, vct.Spec.Resources.Requests["storage"])
		}
	}

	// --storage.path is the mount of a persistent volume claim, writable.
	storage := flags["storage.path"]
	if name, ok := mounts[storage]; !ok || !claims[name] {
		t.Errorf("--storage.path=%q is not the mount path of a volumeClaimTemplate (mounts %v)", storage, mounts)
	}
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == storage && vm.ReadOnly {
			t.Errorf("the volume at --storage.path=%s is read-only", storage)
		}
	}

	// --config.file is a key of the ConfigMap, mounted as a directory (a
	// subPath mount would never see an update), and it loads.
	cfgDir, cfgKey := filepath.Split(flags["config.file"])
	cfgVolume := mounts[filepath.Clean(cfgDir)]
	var cfgMap string
	for _, v := range pod.Spec.Volumes {
		if v.Name == cfgVolume && v.ConfigMap != nil {
			cfgMap = v.ConfigMap.Name
		}
	}
	if cfgMap != m.cm.Metadata.Name {
		t.Errorf("--config.file=%s: its directory is not the mount of the ConfigMap %q (mounts %v)", flags["config.file"], m.cm.Metadata.Name, mounts)
	}
	content, ok := m.cm.Data[cfgKey]
	if !ok {
		t.Fatalf("configmap.yaml has no key %q, the file --config.file names", cfgKey)
	}
	cfg := loadConfig(t, "configmap.yaml "+cfgKey, []byte(content))
	if shipped, err := os.ReadFile(unitConfig); err != nil {
		t.Fatal(err)
	} else if string(shipped) != content {
		t.Errorf("configmap.yaml %s differs from %s: keep the two examples the same", cfgKey, unitConfig)
	}

	// The probes and the Service reach the port anomalyd listens on.
	_, port, err := net.SplitHostPort(flags["web.listen-address"])
	if err != nil {
		t.Fatalf("--web.listen-address=%s: %v", flags["web.listen-address"], err)
	}
	portNames := map[string]int{}
	for _, p := range c.Ports {
		portNames[p.Name] = p.ContainerPort
	}
	if len(c.Ports) != 1 || strconv.Itoa(c.Ports[0].ContainerPort) != port {
		t.Errorf("container ports %+v: want one, %s of --web.listen-address", c.Ports, port)
	}
	for _, p := range []struct {
		name string
		p    *probe
		path string
	}{
		{"startupProbe", c.StartupProbe, "/-/ready"},
		{"livenessProbe", c.LivenessProbe, "/-/healthy"},
		{"readinessProbe", c.ReadinessProbe, "/-/ready"},
	} {
		if p.p == nil {
			t.Errorf("no %s", p.name)
			continue
		}
		if p.p.HTTPGet.Path != p.path {
			t.Errorf("%s: path %q, want %s", p.name, p.p.HTTPGet.Path, p.path)
		}
		if _, ok := portNames[p.p.HTTPGet.Port]; !ok {
			t.Errorf("%s: port %q is not a named container port", p.name, p.p.HTTPGet.Port)
		}
	}
	if sp := c.StartupProbe; sp != nil {
		if budget := time.Duration(sp.PeriodSeconds*sp.FailureThreshold) * time.Second; budget < minStartupBudget {
			t.Errorf("startupProbe allows %v for the restore, want at least %v", budget, minStartupBudget)
		}
	}
	if len(m.svc.Spec.Ports) != 1 {
		t.Fatalf("service.yaml: %d ports, want 1", len(m.svc.Spec.Ports))
	}
	if sp := m.svc.Spec.Ports[0]; portNames[sp.TargetPort] == 0 || strconv.Itoa(sp.Port) != port {
		t.Errorf("service.yaml port %d targetPort %q: want port %s to the container's named port", sp.Port, sp.TargetPort, port)
	}

	// The kubelet's SIGKILL must not cut a graceful shutdown short.
	grace := time.Duration(pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if shutdown := duration(t, "shutdown.timeout", flags["shutdown.timeout"]); grace <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %v is not longer than --shutdown.timeout %v", grace, shutdown)
	}

	// Memory for window.max_series series, as measured.
	req := quantity(t, "requests.memory", c.Resources.Requests["memory"])
	if want := float64(cfg.Window.MaxSeries) * bytesPerSeries; req < want {
		t.Errorf("requests.memory %s: under window.max_series %d × %d bytes = %.0f MiB", c.Resources.Requests["memory"], cfg.Window.MaxSeries, bytesPerSeries, want/(1<<20))
	}
	if lim, ok := c.Resources.Limits["memory"]; ok && quantity(t, "limits.memory", lim) < req {
		t.Errorf("limits.memory %s is below requests.memory %s", lim, c.Resources.Requests["memory"])
	}

	// Non-root, read-only root, and a volume the non-root user can write.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	if !psc.RunAsNonRoot || psc.RunAsUser == 0 {
		t.Errorf("pod securityContext: runAsNonRoot %v runAsUser %d, want true and non-zero", psc.RunAsNonRoot, psc.RunAsUser)
	}
	if psc.FSGroup == nil {
		t.Error("pod securityContext: no fsGroup, so the volume may not be writable by the non-root user")
	}
	if !csc.ReadOnlyRootFilesystem || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || !slices.Equal(csc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext %+v: want readOnlyRootFilesystem, no privilege escalation, drop ALL", csc)
	}

	// kustomization.yaml lists every manifest and names the image.
	files, err := filepath.Glob(filepath.Join(kubernetesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	if got := slices.Sorted(slices.Values(m.kust.Resources)); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %q, want every manifest %q", got, want)
	}
	if len(m.kust.Images) != 1 || m.kust.Images[0].Name != c.Image {
		t.Errorf("kustomization.yaml images %+v: want one, named %q as the container's image", m.kust.Images, c.Image)
	}
}

// --- running the shipped arguments -------------------------------------

// freeAddress returns a loopback address with a port that was free a moment
// ago.
func freeAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runShipped starts anomalyd with args as a deployment passes them, its
// absolute paths moved under a temporary root and the listen address on
// loopback, and checks what the deployment relies on: the readiness path
// answers 200 once the state is restored, the liveness path 200, SIGHUP
// reloads the configuration, and SIGTERM ends it within stopTimeout with a
// checkpoint in --storage.path.
func runShipped(t *testing.T, args []string, configContent string, readyPath, healthyPath string, stopTimeout time.Duration) {
	t.Helper()
	root := t.TempDir()
	addr := freeAddress(t)
	flags := parseArgs(t, "arguments", args)
	var run []string
	for _, a := range args {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case name == "web.listen-address":
			value = addr
		case filepath.IsAbs(value):
			value = filepath.Join(root, value)
		}
		run = append(run, "--"+name+"="+value)
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--web.listen-address=") }) {
		run = append(run, "--web.listen-address="+addr)
	}
	cfgPath := filepath.Join(root, flags["config.file"])
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(configContent), 0o644); err != nil {
		t.Fatal(err)
	}
	// The directory exists before the start, as systemd's StateDirectory and
	// a mounted volume do.
	storage := filepath.Join(root, flags["storage.path"])
	if err := os.MkdirAll(storage, 0o700); err != nil {
		t.Fatal(err)
	}

	var out syncBuffer
	cmd := exec.Command(anomalydBinary(t), run...)
	cmd.Dir = root // relative paths too stay in the temporary directory
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false // received from done
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("anomalyd %s:\n%s", strings.Join(run, " "), out.String())
		}
	}()

	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20s", what)
			}
			select {
			case err := <-done:
				exited = true
				t.Fatalf("anomalyd exited: %v", err)
			default:
			}
		}
	}
	waitFor("GET "+readyPath+" answers 200", func() bool { return get(readyPath) == http.StatusOK })
	if code := get(healthyPath); code != http.StatusOK {
		t.Errorf("GET %s: %d, want 200", healthyPath, code)
	}

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("SIGHUP reloads the configuration", func() bool { return strings.Contains(out.String(), "configuration reloaded") })

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("anomalyd after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(stopTimeout):
		t.Fatalf("anomalyd did not stop within %v of SIGTERM", stopTimeout)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if ckpts, _ := filepath.Glob(filepath.Join(storage, "checkpoints", "*.ckpt")); len(ckpts) == 0 {
		t.Errorf("no checkpoint in --storage.path after a graceful shutdown")
	}
}

func TestSystemdUnitRuns(t *testing.T) {
	u := readUnit(t, unitFile)
	_, args := execStartArgs(t, u, readEnvFile(t, envFile))
	content, err := os.ReadFile(unitConfig)
	if err != nil {
		t.Fatal(err)
	}
	stop := parseSeconds(t, "TimeoutStopSec", u.one(t, "Service", "TimeoutStopSec"))
	runShipped(t, args, string(content), "/-/ready", "/-/healthy", stop)
}

func TestKubernetesManifestsRun(t *testing.T) {
	m := loadManifests(t)
	c := m.container()
	flags := parseArgs(t, "statefulset.yaml args", c.Args)
	grace := time.Duration(m.sts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Fatal("statefulset.yaml: no readiness or liveness probe")
	}
	runShipped(t, c.Args, m.cm.Data[filepath.Base(flags["config.file"])],
		c.ReadinessProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path, grace)
}
