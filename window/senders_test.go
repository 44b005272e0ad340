package window

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/anomalyd/anomalyd/config"
)

func TestSenderWatchThresholds(t *testing.T) {
	var w senderWatch
	var seen, bad uint64
	minute := func(ds, db uint64) bool {
		t.Helper()
		seen, bad = seen+ds, bad+db
		warn, _ := w.observe(seen, bad)
		return warn
	}
	minute(0, 0) // the first call only sets the baseline
	for i := range sendersMinutes - 1 {
		if minute(1000, 300) {
			t.Fatalf("warned after %d minutes over the thresholds, want %d", i+1, sendersMinutes)
		}
	}
	if minute(1000, 50) { // 5%: below the share, the streak starts over
		t.Fatal("warned at a minute below the share")
	}
	for i := range sendersMinutes - 1 {
		if minute(1000, 300) {
			t.Fatalf("warned %d minutes after the streak restarted", i+1)
		}
	}
	if !minute(1000, 300) {
		t.Fatalf("no warning after %d minutes over the thresholds", sendersMinutes)
	}
	for range 2 * sendersMinutes {
		if minute(1000, 300) {
			t.Fatal("warned twice")
		}
	}

	// A quiet instance: a high share of very few samples is no second sender.
	w = senderWatch{}
	seen, bad = 0, 0
	minute(0, 0)
	for range 3 * sendersMinutes {
		if minute(sendersMinSamples, sendersMinSamples-1) {
			t.Fatal("warned about fewer than sendersMinSamples misordered samples a minute")
		}
	}
	// Counts that go down (a new set of shards) start over.
	w = senderWatch{}
	minute(0, 0)
	for range sendersMinutes - 1 {
		minute(1000, 300)
	}
	if warn, _ := w.observe(10, 3); warn {
		t.Fatal("counts that went down completed the streak")
	}
}

// Two senders of the same series, scraping at different phases, get one
// warning naming the documentation; one sender gets none.
func TestSeveralSendersLoggedOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		senders int
		want    int
	}{{"one sender", 1, 0}, {"two senders", 2, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				core, logs := observer.New(zapcore.WarnLevel)
				e := newEnv(t, config.Default(), func(o *Options) { o.Logger = zap.New(core) })
				start := time.Now().UnixMilli()
				// 20 series scraped every 10 s by each sender; the second
				// sender's scrapes are 5 s behind and arrive after the
				// first's next one, as batched remote write does.
				for tick := range (sendersMinutes + 2) * 6 {
					ts := start + int64(tick)*10_000
					for i := range 20 {
						name := string(rune('a' + i))
						e.send(t, false, []Sample{{T: ts, V: float64(tick % 3)}}, "__name__", name, "job", "x")
						if tc.senders == 2 && tick > 0 {
							e.send(t, false, []Sample{{T: ts - 5000, V: float64(tick % 4)}}, "__name__", name, "job", "x")
						}
					}
					time.Sleep(10 * time.Second)
				}
				got := logs.FilterMessageSnippet("several senders").All()
				if len(got) != tc.want {
					t.Fatalf("%d warnings about several senders, want %d: %v", len(got), tc.want, got)
				}
				if tc.want > 0 && !strings.Contains(got[0].Message, sendersDocs) {
					t.Fatalf("the warning does not point to %s: %q", sendersDocs, got[0].Message)
				}
			})
		})
	}
}
