package series

import (
	"testing"

	"github.com/anomalyd/anomalyd/detectors"
)

// An input that already has exported_metric must not produce two labels of
// that name: Prometheus would reject the whole scrape.
func TestOutputLabelsNeverRepeat(t *testing.T) {
	s := &Info{Labels: "__name__\xffm\xffexported_exported_metric\xffz\xffexported_metric\xffy\xffmetric\xffx\xff", Name: "m"}
	got := AppendOutputLabels(nil, s, "anomaly_score", detectors.KindCombined)
	seen := map[string]string{}
	for i, l := range got {
		if _, dup := seen[l.Name]; dup {
			t.Fatalf("label %q repeats in %v", l.Name, got)
		}
		seen[l.Name] = l.Value
		if i > 0 && got[i-1].Name > l.Name {
			t.Fatalf("labels not sorted: %v", got)
		}
	}
	if seen["exported_exported_exported_metric"] != "x" || seen["exported_metric"] != "y" || seen["metric"] != "m" {
		t.Fatalf("got %v", got)
	}
}
