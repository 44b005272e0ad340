#!/usr/bin/env bash
# make demo: anomalyd on its defaults plus a real-time load of a few hundred
# series (one round a second, an anomaly in one series every minute or so
# and, from 4.5 minutes on, a fault of a whole target every minute, which the
# page shows as an incident). Shows the most anomalous series every 10 s;
# Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v curl >/dev/null 2>&1; then
  echo "make demo reads /metrics with curl: apt-get install -y curl" >&2
  exit 1
fi
ADDR=${DEMO_ADDR:-127.0.0.1:9700}
SERIES=${DEMO_SERIES:-300}

# A state of its own, dropped at the end: a demo restored from an earlier
# demo's checkpoint would see every synthetic target restart at once (the
# load's counters start over) and open an incident for each.
STATE=$(mktemp -d)
./bin/anomalyd --web.listen-address="$ADDR" --storage.path="$STATE" --log.level=warn &
APID=$!
LPID=
cleanup() {
  trap - INT TERM EXIT
  [ -n "$LPID" ] && kill "$LPID" 2>/dev/null || true
  kill "$APID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$STATE"
  echo
  echo "demo stopped"
}
trap cleanup INT TERM EXIT

for _ in $(seq 50); do
  curl -fs "http://$ADDR/-/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
./bin/load -realtime -interval 1s -series "$SERIES" -warmup-rounds 0 -rounds 3600 \
  -anomalies 60 -anomaly-every 60 -faults 55 -url "http://$ADDR/api/v1/write" -out bench/results/demo.json >/dev/null 2>&1 &
LPID=$!

cat <<MSG
anomalyd is running at http://$ADDR with $SERIES series arriving every second
(counters, noisy gauges, a compressed day, constants); an anomaly (spike,
level shift or drift) is injected in one series about once a minute after the
first minute, and from 4.5 minutes on a fault of a whole target (two thirds of
its series shift at once) once a minute: the page lists each as an incident.
The detectors give verdicts after about 200 samples (3-4 minutes).

  the page (incidents, the most anomalous series, why): http://$ADDR/
  scores and self metrics:  curl -s http://$ADDR/metrics | less
  one series' band:          curl -s http://$ADDR/metrics | grep 'metric="<name>"'
  anomalous right now:       curl -s http://$ADDR/metrics | awk '/^anomaly_score/ && \$2 > 1'

The 5 highest anomaly scores follow every 10 s (score > 1 = outside the band).
Ctrl-C stops the demo. The injected anomalies are listed in bench/results/demo.json at the end.
MSG
while kill -0 "$LPID" 2>/dev/null; do
  sleep 10
  echo "--- $(date +%T) top scores"
  curl -fs "http://$ADDR/metrics" | awk '/^anomaly_score\{/ {print $2, $1}' | sort -gr | head -5 || true
done
