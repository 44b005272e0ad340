package series

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// The hash picks the shard that owns a series and its send queue: changing
// it silently re-shards every series (and, across instances, every vmagent
// mapping).
func TestHashGolden(t *testing.T) {
	key := AppendLabel(AppendLabel(nil, "__name__", "http_requests_total"), "job", "api")
	if string(key) != "__name__\xffhttp_requests_total\xffjob\xffapi\xff" {
		t.Fatalf("canonical key %q", key)
	}
	if got, want := Hash(key), uint64(0x6db86f43e7370663); got != want {
		t.Fatalf("Hash of canonical key: got %#x, want %#x", got, want)
	}
}

// TestHashIsStableHash pins the canonical key to Prometheus's own: the key
// of a label set hashes to labels.StableHash of the same labels, so it
// never changes with the Prometheus version either.
func TestHashIsStableHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"__name__", "job", "instance", "le", "method", "code", "ü", "a_b", "zone"}
	for i := range 1000 {
		b := labels.NewScratchBuilder(0)
		for _, n := range names {
			if rng.IntN(2) == 0 || n == "__name__" {
				b.Add(n, "v"+strconv.Itoa(rng.IntN(1000))+string(rune('a'+rng.IntN(26))))
			}
		}
		b.Sort()
		ls := b.Labels()
		var key []byte
		ls.Range(func(l labels.Label) { key = AppendLabel(key, l.Name, l.Value) })
		if got, want := Hash(key), labels.StableHash(ls); got != want {
			t.Fatalf("case %d %s: Hash %#x, labels.StableHash %#x", i, ls, got, want)
		}
		var got []string
		for n, v, rest := NextLabel(string(key)); n != ""; n, v, rest = NextLabel(rest) {
			got = append(got, n, v)
		}
		var want []string
		ls.Range(func(l labels.Label) { want = append(want, l.Name, l.Value) })
		if !slices.Equal(got, want) {
			t.Fatalf("NextLabel walked %q, want %q", got, want)
		}
		s, e := NameSpan(key)
		if string(key[s:e]) != ls.Get("__name__") {
			t.Fatalf("NameSpan of %q gives %q, want %q", key, key[s:e], ls.Get("__name__"))
		}
	}
}

func TestNameSpanWithoutName(t *testing.T) {
	for _, k := range []string{"", "job\xffa\xff", "job\xffa", "__name__"} {
		if s, e := NameSpan([]byte(k)); s != 0 || e != 0 {
			t.Errorf("NameSpan(%q) = %d, %d; want 0, 0", k, s, e)
		}
	}
}

func TestIsCounterName(t *testing.T) {
	for name, want := range map[string]bool{"x_total": true, "x_count": true, "x_sum": true,
		"backtest_value": false, "x_bucket": false, "total": false, "x_total_bytes": false} {
		if got := IsCounterName(name); got != want {
			t.Errorf("IsCounterName(%q) = %v, want %v", name, got, want)
		}
		if got := IsCounterName([]byte(name)); got != want {
			t.Errorf("IsCounterName([]byte(%q)) = %v, want %v", name, got, want)
		}
	}
	b := []byte("node_network_receive_bytes_total")
	if n := testing.AllocsPerRun(100, func() { IsCounterName(b) }); n != 0 {
		t.Errorf("IsCounterName([]byte) allocates %v times", n)
	}
}

func TestFormat(t *testing.T) {
	key := string(AppendLabel(AppendLabel(nil, "__name__", "up"), "job", `a"b`))
	if got, want := Format(key), `{__name__="up", job="a\"b"}`; got != want {
		t.Errorf("Format = %s, want %s", got, want)
	}
	if got := Format(""); got != "{}" {
		t.Errorf("Format(\"\") = %s, want {}", got)
	}
}
