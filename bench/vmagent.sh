#!/usr/bin/env bash
# make bench-vmagent: end-to-end throughput of the deploy/vmagent recipe
# against one anomalyd fed directly, on the same machine, in the same session.
#
# Each run starts fresh receivers: "direct" is bin/load -> anomalyd; "vmagent"
# is bin/load -> vmagent (deploy/vmagent/vmagent.flags) -> INSTANCES anomalyd.
# bin/load sends WARMUP + ROUNDS rounds of SERIES series as fast as they are
# taken. A run ends when every receiver process has been idle (no CPU tick)
# for 300 ms after the load finished; it then checks that the instances
# together analysed every sample (anomalyd_window_samples_analysed_total plus
# _not_analysed_total; the first sample of a counter series is in neither).
# Throughput is the samples sent over the wall time from the load's start to
# the last CPU tick of any receiver: vmagent answers before it forwards, so the
# load's own figures would measure vmagent alone. CPU is utime+stime of every
# receiver process over the run, per million samples. The modes alternate,
# RUNS runs each; the summary prints medians with min-max and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

ANOMALYD=${ANOMALYD:-bin/anomalyd}
LOAD=${LOAD:-bin/load}
VMAGENT=${VMAGENT:-bin/vmagent}
RUNS=${RUNS:-3}
SERIES=${SERIES:-100000}
ROUNDS=${ROUNDS:-30}
WARMUP=${WARMUP:-2}
INSTANCES=${INSTANCES:-2}
BASE_PORT=${BASE_PORT:-19810}
OUT=${OUT:-bench/results/vmagent.txt}

for b in "$ANOMALYD" "$LOAD" "$VMAGENT"; do
  [ -x "$b" ] || { echo "$b is missing: make build bin/load deps" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "curl is needed: apt-get install -y curl" >&2; exit 1; }

TCK=$(getconf CLK_TCK)
PIDS=()
DIR=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  [ -n "$DIR" ] && rm -rf "$DIR"
  DIR=
}
trap cleanup EXIT

ticks() { # utime+stime of the given pids, in clock ticks
  local sum=0 p f
  for p in "$@"; do
    f=$(sed 's/.*) //' "/proc/$p/stat")
    set -- $f
    sum=$((sum + ${12} + ${13}))
  done
  echo "$sum"
}

wait_ready() {
  for _ in $(seq 150); do
    curl -fs "http://$1/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 not ready" >&2
  exit 1
}

# vmagent_args ADDR QUEUE URL...: deploy/vmagent/vmagent.flags with the
# listen address, queue directory and URLs put in.
vmagent_args() {
  local addr=$1 queue=$2
  shift 2
  grep -v -e '^#' -e '^$' -e '^-httpListenAddr=' -e '^-remoteWrite.url=' -e '^-remoteWrite.tmpDataPath=' \
    deploy/vmagent/vmagent.flags
  echo "-httpListenAddr=$addr"
  echo "-remoteWrite.tmpDataPath=$queue"
  for u in "$@"; do echo "-remoteWrite.url=$u"; done
}

run() { # run MODE: prints "samples seconds cpu_seconds anomalyd_cpu_seconds"
  local mode=$1 n=1 i urls=() target
  trap cleanup EXIT # run is a subshell: the caller's trap does not stop its processes
  DIR=$(mktemp -d)
  [ "$mode" = vmagent ] && n=$INSTANCES
  local apids=()
  for i in $(seq 0 $((n - 1))); do
    local addr=127.0.0.1:$((BASE_PORT + 1 + i))
    mkdir -p "$DIR/a$i"
    "$ANOMALYD" --web.listen-address="$addr" --log.level=warn --storage.path="$DIR/a$i" >>"$DIR/anomalyd.log" 2>&1 &
    PIDS+=($!)
    apids+=($!)
    urls+=("http://$addr/api/v1/write")
  done
  for i in $(seq 0 $((n - 1))); do wait_ready 127.0.0.1:$((BASE_PORT + 1 + i)); done
  if [ "$mode" = vmagent ]; then
    mapfile -t args < <(vmagent_args 127.0.0.1:$BASE_PORT "$DIR/vmq" "${urls[@]}")
    "$VMAGENT" "${args[@]}" -loggerLevel=WARN >>"$DIR/vmagent.log" 2>&1 &
    PIDS+=($!)
    wait_ready 127.0.0.1:$BASE_PORT
    target=http://127.0.0.1:$BASE_PORT/api/v1/write
  else
    target=${urls[0]}
  fi
  local c0 a0 t0 t1 last cur idle
  c0=$(ticks "${PIDS[@]}")
  a0=$(ticks "${apids[@]}")
  t0=$(date +%s.%N)
  "$LOAD" -url "$target" -series "$SERIES" -rounds "$ROUNDS" -warmup-rounds "$WARMUP" >"$DIR/load.log" 2>&1
  last=$(ticks "${PIDS[@]}")
  t1=$(date +%s.%N)
  idle=0
  while [ $idle -lt 3 ]; do
    sleep 0.1
    cur=$(ticks "${PIDS[@]}")
    if [ "$cur" = "$last" ]; then
      idle=$((idle + 1))
    else
      idle=0
      last=$cur
      t1=$(date +%s.%N)
    fi
  done
  local a1
  a1=$(ticks "${apids[@]}")
  local got=0 m
  for i in $(seq 0 $((n - 1))); do
    m=$(curl -fs "http://127.0.0.1:$((BASE_PORT + 1 + i))/metrics" |
      awk '/^anomalyd_window_samples_(not_)?analysed_total/ {s += $NF} END {printf "%.0f", s}')
    got=$((got + m))
  done
  local sent=$(((ROUNDS + WARMUP) * SERIES))
  if [ "$got" -lt $((sent - SERIES)) ]; then
    echo "$mode: the instances analysed $got of $sent samples" >&2
    tail -5 "$DIR"/*.log >&2
    exit 1
  fi
  cleanup
  awk -v s="$sent" -v t0="$t0" -v t1="$t1" -v c="$((last - c0))" -v a="$((a1 - a0))" -v tck="$TCK" \
    'BEGIN {printf "%d %.3f %.2f %.2f\n", s, t1 - t0, c / tck, a / tck}'
}

declare -A rate cpu acpu
for r in $(seq "$RUNS"); do
  for mode in direct vmagent; do
    read -r s sec c a < <(run "$mode")
    rate[$mode]+="$(awk -v s="$s" -v t="$sec" 'BEGIN {printf "%.0f", s / t}') "
    cpu[$mode]+="$(awk -v s="$s" -v c="$c" 'BEGIN {printf "%.3f", c / (s / 1e6)}') "
    acpu[$mode]+="$(awk -v s="$s" -v c="$a" 'BEGIN {printf "%.3f", c / (s / 1e6)}') "
    echo "run $r $mode: $s samples in $sec s, $c CPU-s ($a in anomalyd)"
  done
done

stats() { # median (min-max) of the numbers given
  printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    printf "%g (%g-%g)", m, a[1], a[NR]}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

{
  echo "bench/vmagent.sh $(date -u +%Y-%m-%dT%H:%MZ): SERIES=$SERIES ROUNDS=$ROUNDS WARMUP=$WARMUP INSTANCES=$INSTANCES RUNS=$RUNS, $(nproc) cores"
  for mode in direct vmagent; do
    # shellcheck disable=SC2086
    echo "$mode: samples/s $(stats ${rate[$mode]}), CPU-s per million samples $(stats ${cpu[$mode]}), of which anomalyd $(stats ${acpu[$mode]})"
  done
  # shellcheck disable=SC2086
  awk -v v="$(median ${rate[vmagent]})" -v d="$(median ${rate[direct]})" -v cv="$(median ${cpu[vmagent]})" -v cd="$(median ${cpu[direct]})" \
    'BEGIN {printf "vmagent/direct: throughput %.2f, CPU per sample %.2f\n", v / d, cv / cd}'
} | tee "$OUT"
