package config

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// docConfigFile is the configuration reference. Its key tables are those
// whose header row starts with "| key |"; in them every row's first cell is
// one key path in backticks (`remote_write[].queue_config.capacity`: dots
// between keys, [] for a list entry) and its second cell the default, whose
// first backticked value is compared with the built-in default.
const docConfigFile = "../docs/configuration.md"

// docFreeMaps are keys whose value is a map of names the user chooses
// (HTTP header names): documented as one key, not walked into.
var docFreeMaps = map[string]bool{
	"remote_write[].headers":                     true,
	"warmup.remote_read.headers":                 true,
	"remote_write[].proxy_connect_header":        true,
	"remote_write[].oauth2.proxy_connect_header": true,
	"remote_write[].oauth2.endpoint_params":      true,
}

// docAliases are blocks that take the keys of another block. A key under
// prefix is documented when the block itself (prefix without the dot) and
// the same key under as are: a rule's detectors block overrides the
// top-level detectors keys, warmup.remote_read has the connection keys of a
// remote_write entry, and oauth2.tls_config the keys of tls_config.
var docAliases = []struct{ prefix, as string }{
	{"rules[].detectors.", "detectors."},
	{"warmup.remote_read.", "remote_write[]."},
	{"remote_write[].oauth2.tls_config.", "remote_write[].tls_config."},
}

// docRow is one row of a key table.
type docRow struct {
	line     int
	defaults string // the default cell, \| unescaped
}

var docKeyPath = regexp.MustCompile("^`([a-z0-9_]+(\\[\\])?(\\.[a-z0-9_]+(\\[\\])?)*)`$")

// readDocKeys returns the rows of the key tables of the markdown in md.
func readDocKeys(t *testing.T, name, md string) map[string]docRow {
	t.Helper()
	keys := map[string]docRow{}
	inTable := false
	for i, line := range strings.Split(md, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		if !inTable {
			inTable = len(cells) > 0 && cells[0] == "key"
			continue
		}
		if strings.Trim(cells[0], "-: ") == "" { // the |---| line
			continue
		}
		m := docKeyPath.FindStringSubmatch(cells[0])
		if m == nil {
			t.Errorf("%s:%d: first cell %q is not one `key.path` in backticks", name, i+1, cells[0])
			continue
		}
		if len(cells) < 3 {
			t.Errorf("%s:%d: row of %s has %d cells, want key | default | meaning", name, i+1, m[1], len(cells))
			continue
		}
		if prev, dup := keys[m[1]]; dup {
			t.Errorf("%s:%d: %s documented again (first on line %d)", name, i+1, m[1], prev.line)
		}
		keys[m[1]] = docRow{line: i + 1, defaults: cells[1]}
	}
	return keys
}

// splitRow splits a markdown table row into trimmed cells; \| is a pipe
// inside a cell.
func splitRow(line string) []string {
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// yamlPaths walks a decoded YAML value. leaves are the keys with a value of
// their own (a scalar, a list of scalars, a free map); nodes are every key,
// blocks included. A list of blocks adds [] to the path of its entries.
func yamlPaths(prefix string, v any, leaves map[string]any, nodes map[string]bool) {
	switch v := v.(type) {
	case map[any]any:
		if docFreeMaps[prefix] || len(v) == 0 {
			leaves[prefix] = v
			return
		}
		for k, e := range v {
			p := fmt.Sprint(k)
			if prefix != "" {
				p = prefix + "." + p
			}
			nodes[p] = true
			yamlPaths(p, e, leaves, nodes)
		}
	case []any:
		blocks := false
		for _, e := range v {
			if _, ok := e.(map[any]any); ok {
				blocks = true
			}
		}
		if !blocks {
			leaves[prefix] = v
			return
		}
		for _, e := range v {
			yamlPaths(prefix+"[]", e, leaves, nodes)
		}
	default:
		leaves[prefix] = v
	}
}

func decodeYAMLPaths(t *testing.T, prefix string, b []byte) (map[string]any, map[string]bool) {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	leaves, nodes := map[string]any{}, map[string]bool{}
	yamlPaths(prefix, doc, leaves, nodes)
	return leaves, nodes
}

func readDocConfig(t *testing.T) map[string]docRow {
	t.Helper()
	md, err := os.ReadFile(docConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	keys := readDocKeys(t, docConfigFile, string(md))
	if len(keys) == 0 {
		t.Fatalf("%s has no key table (a table whose header starts with | key |)", docConfigFile)
	}
	return keys
}

// TestDocConfigurationKeys closes the loop that TestFullConfigHasEveryKey
// opens: every key of the Config struct is set in testdata/full.good.yml,
// every key set there is documented in docs/configuration.md, and the
// document names no key that full.good.yml does not set.
func TestDocConfigurationKeys(t *testing.T) {
	doc := readDocConfig(t)
	b, err := os.ReadFile("testdata/full.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	leaves, nodes := decodeYAMLPaths(t, "", b)

	documented := func(p string) bool {
		if _, ok := doc[p]; ok {
			return true
		}
		for _, a := range docAliases {
			if rest, ok := strings.CutPrefix(p, a.prefix); ok {
				_, block := doc[strings.TrimSuffix(a.prefix, ".")]
				_, key := doc[a.as+rest]
				return block && key
			}
		}
		return false
	}
	for _, p := range slices.Sorted(maps.Keys(leaves)) {
		if !documented(p) {
			t.Errorf("testdata/full.good.yml sets %s, which %s does not document", p, docConfigFile)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(doc)) {
		if !nodes[p] {
			t.Errorf("%s:%d documents %s, which testdata/full.good.yml does not set", docConfigFile, doc[p].line, p)
		}
	}
}

// TestDocConfigurationDefaults checks the default column against the
// built-in defaults: for every documented key with a default value in
// Default() (remote_write entries: DefaultRemoteWriteConfig; remote_read:
// DefaultWarmupRemoteRead), the first backticked value of its default cell
// is that value; for a list (exclude), every entry appears in backticks.
// Empty strings (required or derived values) are described in words and not
// compared; rules, a list of blocks, neither.
func TestDocConfigurationDefaults(t *testing.T) {
	doc := readDocConfig(t)
	defaults := map[string]any{}
	add := func(prefix string, v any) {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		leaves, _ := decodeYAMLPaths(t, prefix, b)
		for p, v := range leaves {
			defaults[p] = v
		}
	}
	add("", Default())
	add("remote_write[]", DefaultRemoteWriteConfig)
	add("warmup.remote_read", DefaultWarmupRemoteRead)

	backticked := regexp.MustCompile("`([^`]*)`")
	checked := 0
	for _, p := range slices.Sorted(maps.Keys(doc)) {
		want, ok := defaults[p]
		if !ok || strings.HasPrefix(p, "rules") {
			continue
		}
		row := doc[p]
		var got []string
		for _, m := range backticked.FindAllStringSubmatch(row.defaults, -1) {
			got = append(got, m[1])
		}
		switch want := want.(type) {
		case []any:
			for _, e := range want {
				if !slices.Contains(got, fmt.Sprint(e)) {
					t.Errorf("%s:%d: default of %s lacks `%v`", docConfigFile, row.line, p, e)
				}
			}
		case string:
			if want == "" {
				continue
			}
			if len(got) == 0 || got[0] != want {
				t.Errorf("%s:%d: default of %s is %q, want `%s` first", docConfigFile, row.line, p, row.defaults, want)
			}
		default:
			if w := fmt.Sprint(want); len(got) == 0 || got[0] != w {
				t.Errorf("%s:%d: default of %s is %q, want `%s` first", docConfigFile, row.line, p, row.defaults, w)
			}
		}
		checked++
	}
	if checked < 50 {
		t.Errorf("compared %d defaults, want every documented key with a built-in default (at least 50)", checked)
	}
}
