#!/usr/bin/env bash
# The performance table (issue 6): builds in Release into build-bench, runs every measurement
# and prints one markdown table (what, figure, reference measured in the same run, ratio,
# target, holds).
#
#   bench/run.sh            the default run (about 5 minutes on the 2-core machine)
#   bench/run.sh --quick    shorter windows and fewer repetitions (about 2 minutes)
#   bench/run.sh --soak     also the zero-loss soak: BENCH_SOAK_SECONDS (300) at half the bare
#                           pair's rate (or BENCH_SOAK_RATE messages/s)
#
# Durations: BENCH_SECONDS (throughput window, 20), BENCH_LATENCY_SECONDS (10),
# BENCH_LATENCY_RATE (10000), BENCH_STEP_REPETITIONS (5), BENCH_REPLAY_REPEATS (5),
# BENCH_MEM_HISTOGRAMS (100000), BENCH_JOURNAL_RUNS (32), BENCH_STATE_REPEATS (3),
# BENCH_SEND_HWM (10000). BENCH_BUILD_DIR (build-bench).
# Every process started here is stopped on exit, failure included; endpoints are free
# loopback ports.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-bench}
QUICK=0
SOAK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    --soak) SOAK=1 ;;
    *) echo "usage: bench/run.sh [--quick] [--soak]" >&2; exit 2 ;;
  esac
done
if [[ $QUICK == 1 ]]; then
  : "${BENCH_SECONDS:=5}" "${BENCH_LATENCY_SECONDS:=5}" "${BENCH_STEP_REPETITIONS:=3}"
  : "${BENCH_REPLAY_REPEATS:=3}" "${BENCH_MEM_HISTOGRAMS:=20000}"
fi
SECONDS_WINDOW=${BENCH_SECONDS:-20}
LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-10}
LATENCY_RATE=${BENCH_LATENCY_RATE:-10000}
STEP_REPS=${BENCH_STEP_REPETITIONS:-5}
REPLAY_REPEATS=${BENCH_REPLAY_REPEATS:-5}
MEM_HISTOGRAMS=${BENCH_MEM_HISTOGRAMS:-100000}
JOURNAL_RUNS=${BENCH_JOURNAL_RUNS:-32}
STATE_REPEATS=${BENCH_STATE_REPEATS:-3}
SOAK_SECONDS=${BENCH_SOAK_SECONDS:-300}
HISTOGRAMS=1000  # names on the bus in the throughput and latency runs
# In the throughput runs the publisher's send waits once this many messages are queued for the
# subscriber (ZMQ_XPUB_NODROP): the subscriber's pace sets the rate, and the publisher does not
# spend the cores on filling gigabytes of queue while the subscriber runs behind.
SEND_HWM=${BENCH_SEND_HWM:-10000}

BENCH_TAG=bench
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------------------------------------
# Build: only the targets measured here.
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDINAMO_WITH_TORCH=OFF \
    -DDINAMO_BUILD_TESTS=OFF >"$WORK/cmake.log" || { cat "$WORK/cmake.log" >&2; exit 1; }
fi
log "building in $BUILD"
cmake --build "$BUILD" -j2 --target step_bench zmq_pair state_bench dinamod dinamo-sim \
  dinamo-replay >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
BIN_SIM=$BUILD/tools/dinamo-sim
BIN_REPLAY=$BUILD/tools/dinamo-replay
BIN_DAEMON=$BUILD/daemon/dinamod
BIN_PAIR=$BUILD/bench/zmq_pair
BIN_STATE=$BUILD/bench/state_bench
BIN_STEP=$BUILD/bench/step_bench

ROWS=$WORK/rows.txt
: >"$ROWS"
# row WHAT FIGURE REFERENCE RATIO TARGET HOLDS
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$@" >>"$ROWS"; }
py() { python3 -c "$@"; }
json() { py "import json,sys; d=json.load(open('$1')); print($2)"; }

free_port() {
  py 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
# (1) score+learn step against the floor kernel.
log "step_bench ($STEP_REPS repetitions)"
"$BIN_STEP" --benchmark_filter='^BM_(LibraryStep|FloorStep)/(100|1000)$' \
  --benchmark_repetitions="$STEP_REPS" --benchmark_report_aggregates_only=true \
  --benchmark_format=json >"$WORK/step.json" 2>"$WORK/step.err"
step_median() {
  py "import json; d=json.load(open('$WORK/step.json'))
print(next(b['cpu_time'] for b in d['benchmarks'] if b['name'] == '$1_median'))"
}
for bins in 100 1000; do
  lib=$(step_median "BM_LibraryStep/$bins")
  floor=$(step_median "BM_FloorStep/$bins")
  ratio=$(py "print(f'{$lib / $floor:.2f}')")
  if [[ $bins == 100 ]]; then
    target="≤ 300 ns"
    holds=$(py "print('yes' if $lib <= 300 else 'no')")
  else
    target="—"
    holds="—"
  fi
  row "score+learn step, $bins bins (CPU ns/step, median of $STEP_REPS)" \
    "$(py "print(f'{$lib:.0f} ns')")" "floor kernel $(py "print(f'{$floor:.0f} ns')")" \
    "$ratio" "$target" "$holds"
done

# ---------------------------------------------------------------------------------------------
# (2) dinamo-replay on a 5000-run file, parsing included; the reference is the library's full
# step (Normalise + score + learn) for 5000 runs, i.e. the replay without parsing and output.
log "dinamo-replay ($REPLAY_REPEATS repeats)"
"$BIN_SIM" --csv "$WORK/runs5000.csv" --runs 5000 --seed 7 >/dev/null
"$BIN_STEP" --benchmark_filter='^BM_LibraryFullStep/100$' --benchmark_repetitions="$STEP_REPS" \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"$WORK/full.json" 2>/dev/null
replay_times=()
for ((i = 0; i < REPLAY_REPEATS; i++)); do
  start=$(date +%s.%N)
  "$BIN_REPLAY" "$WORK/runs5000.csv" --out "$WORK/verdicts.csv" >/dev/null 2>&1
  end=$(date +%s.%N)
  replay_times+=("$(py "print($end - $start)")")
done
replay_s=$(py "import statistics; print(statistics.median([$(printf '%s,' "${replay_times[@]}")]))")
full_ns=$(py "import json; d=json.load(open('$WORK/full.json'))
print(next(b['cpu_time'] for b in d['benchmarks']
           if b['name'] == 'BM_LibraryFullStep/100_median'))")
row "dinamo-replay, 5000 runs of 100 bins, parsing included (median of $REPLAY_REPEATS)" \
  "$(py "print(f'{5000 / $replay_s:,.0f} runs/s')")" \
  "full step alone $(py "print(f'{1e9 / $full_ns:,.0f} runs/s')")" \
  "$(py "print(f'{(5000 / $replay_s) / (1e9 / $full_ns):.3f}')")" "—" "—"

# ---------------------------------------------------------------------------------------------
# The daemon, on free loopback ports, with its own state directory.
DAEMON_PID=
HTTP_PORT=
start_daemon() {  # start_daemon NAME INPUT_ENDPOINT
  local dir=$WORK/$1
  mkdir -p "$dir/state"
  local out_port ctl_port
  out_port=$(free_port)
  ctl_port=$(free_port)
  HTTP_PORT=$(free_port)
  OUTPUT_ENDPOINT=tcp://127.0.0.1:$out_port
  cat >"$dir/dinamod.yaml" <<EOF
input:
  connect: ["$2"]
  receive_hwm: 100000
output:
  bind: "$OUTPUT_ENDPOINT"
  send_hwm: 100000
  heartbeat_s: 5
control:
  bind: "tcp://127.0.0.1:$ctl_port"
http:
  bind: "127.0.0.1:$HTTP_PORT"
state:
  directory: "$dir/state"
  snapshot_interval_s: 86400
log:
  level: info
defaults:
  journal_runs: $JOURNAL_RUNS
EOF
  "$BIN_DAEMON" --config "$dir/dinamod.yaml" >"$dir/dinamod.log" 2>&1 &
  DAEMON_PID=$!
  PIDS+=("$DAEMON_PID")
  local i
  for ((i = 0; i < 100; i++)); do
    if curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "dinamod did not come up:" >&2
  cat "$dir/dinamod.log" >&2
  exit 1
}
stop_daemon() {
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
}
metric() {  # metric NAME: the value of an unlabelled counter
  curl -fs "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
rejected() {
  curl -fs "http://127.0.0.1:$HTTP_PORT/metrics" |
    awk '$1 ~ /^dinamo_rejected_messages_total/ { s += $2 } END { print s + 0 }'
}
sim_sent() { sed -n 's/.*done messages=\([0-9]*\).*/\1/p' "$1" | tail -1; }

# Waits until the daemon has taken every sent message, or nothing moved for 3 s.
wait_drained() {  # wait_drained SENT
  local last=-1 same=0 now
  while ((same < 30)); do
    now=$(metric dinamo_histograms_received_total)
    if [[ $now == "$1" ]]; then
      return 0
    fi
    if [[ $now == "$last" ]]; then
      same=$((same + 1))
    else
      same=0
    fi
    last=$now
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
# (3) throughput: the bare pair, then the daemon, each for SECONDS_WINDOW.
log "bare ZeroMQ pair for ${SECONDS_WINDOW}s"
port=$(free_port)
"$BIN_PAIR" sub "tcp://127.0.0.1:$port" --idle-s 3 --seconds 3600 >"$WORK/pair_sub.json" &
sub_pid=$!
PIDS+=("$sub_pid")
"$BIN_PAIR" pub "tcp://127.0.0.1:$port" --seconds "$SECONDS_WINDOW" --histograms $HISTOGRAMS \
  --send-hwm "$SEND_HWM" >"$WORK/pair_pub.json" &
pub_pid=$!
PIDS+=("$pub_pid")
wait "$pub_pid"
wait "$sub_pid"
pair_rate=$(json "$WORK/pair_sub.json" "d['rate']")
pair_lost=$(py "print($(json "$WORK/pair_pub.json" "d['sent']") - \
$(json "$WORK/pair_sub.json" "d['received']"))")

log "dinamod fed by dinamo-sim as fast as it can for ${SECONDS_WINDOW}s"
port=$(free_port)
start_daemon throughput "tcp://127.0.0.1:$port"
"$BIN_SIM" --publish "tcp://127.0.0.1:$port" --histograms $HISTOGRAMS --bins 100 --pool 16 \
  --runs 100000000 --labels off --send-hwm "$SEND_HWM" >"$WORK/sim_throughput.log" 2>&1 &
sim_pid=$!
PIDS+=("$sim_pid")
sleep 3  # connection, pool drawn, templates created
v0=$(metric dinamo_verdicts_published_total)
t0=$(date +%s.%N)
sleep "$SECONDS_WINDOW"
v1=$(metric dinamo_verdicts_published_total)
t1=$(date +%s.%N)
kill -INT "$sim_pid"
wait "$sim_pid" || true
sent=$(sim_sent "$WORK/sim_throughput.log")
wait_drained "$sent"
received=$(metric dinamo_histograms_received_total)
verdicts=$(metric dinamo_verdicts_published_total)
refused=$(rejected)
stop_daemon
daemon_rate=$(py "print(($v1 - $v0) / ($t1 - $t0))")
row "daemon throughput, 100-bin histograms over TCP loopback (${SECONDS_WINDOW} s)" \
  "$(py "print(f'{$daemon_rate:,.0f} verdicts/s')")" \
  "bare PUB/SUB pair $(py "print(f'{$pair_rate:,.0f} msg/s')")" \
  "$(py "print(f'{$daemon_rate / $pair_rate:.2f}')")" "≥ 0.8" \
  "$(py "print('yes' if $daemon_rate >= 0.8 * $pair_rate else 'no')")"
# With the send HWM nothing is dropped on the way: sent − received is what was still queued
# (at most SEND_HWM + the sockets' buffers) when the sim was stopped; received − verdicts and
# refused are losses inside the daemon.
row "throughput run: queued at stop (sent − received); received − verdicts; refused" \
  "$(py "print(f'{$sent - $received:,}; {$received - $verdicts}; {$refused} of {$sent:,}')")" \
  "pair: $pair_lost lost" "—" "— (at full speed)" "—"

# ---------------------------------------------------------------------------------------------
# (4) latency from publication to verdict at LATENCY_RATE, seen by a subscriber.
log "latency at ${LATENCY_RATE}/s for ${LATENCY_SECONDS}s"
latency_run() {  # latency_run NAME RATE SECONDS -> $WORK/NAME_sub.json, sent in $WORK/NAME.sent
  local port runs
  port=$(free_port)
  start_daemon "$1" "tcp://127.0.0.1:$port"
  "$BIN_PAIR" sub "$OUTPUT_ENDPOINT" --verdicts --idle-s 5 --seconds 100000 \
    >"$WORK/$1_sub.json" &
  local sub=$!
  PIDS+=("$sub")
  runs=$(py "import math; print(max(1, math.ceil($2 * $3 / $HISTOGRAMS)))")
  "$BIN_SIM" --publish "tcp://127.0.0.1:$port" --histograms $HISTOGRAMS --bins 100 --pool 16 \
    --runs "$runs" --rate "$2" --wait-s 2 --labels off >"$WORK/sim_$1.log" 2>&1
  sim_sent "$WORK/sim_$1.log" >"$WORK/$1.sent"
  wait "$sub" || true
  REFUSED=$(rejected)
  stop_daemon
}
latency_run latency "$LATENCY_RATE" "$LATENCY_SECONDS"
lat_sent=$(cat "$WORK/latency.sent")
# The reference: one hop of the bare bus at the same rate (the daemon's path is two hops, the
# input and the verdict, with the scoring in between).
port=$(free_port)
"$BIN_PAIR" sub "tcp://127.0.0.1:$port" --latency --idle-s 2 --seconds 100000 \
  >"$WORK/pair_latency.json" &
pair_sub=$!
PIDS+=("$pair_sub")
"$BIN_PAIR" pub "tcp://127.0.0.1:$port" --seconds "$LATENCY_SECONDS" --rate "$LATENCY_RATE" \
  --histograms $HISTOGRAMS >/dev/null
wait "$pair_sub"
p() { json "$WORK/latency_sub.json" "f\"{d['$1']:.0f}\""; }
pp() { json "$WORK/pair_latency.json" "f\"{d['$1']:.0f}\""; }
row "latency publication → verdict at ${LATENCY_RATE}/s, p50 / p99 / p99.9 (µs)" \
  "$(p p50_us) / $(p p99_us) / $(p p999_us)" \
  "bare pair, one hop: $(pp p50_us) / $(pp p99_us) / $(pp p999_us)" \
  "$(py "print(f'{float($(p p99_us)) / float($(pp p99_us)):.2f}')") (p99)" "p99 ≤ 1 ms" \
  "$(py "print('yes' if float($(p p99_us)) <= 1000 else 'no')")"
row "losses in the latency run (verdicts received of sent; input and output sequence gaps)" \
  "$(json "$WORK/latency_sub.json" "d['verdicts']") of $lat_sent; \
$(json "$WORK/latency_sub.json" "d['input_gaps']"); \
$(json "$WORK/latency_sub.json" "d['output_gaps']"); refused $REFUSED" \
  "—" "—" "0 lost" \
  "$(json "$WORK/latency_sub.json" \
    "'yes' if d['verdicts'] == $lat_sent and d['input_gaps'] == 0 and d['output_gaps'] == 0 \
else 'no'")"

# ---------------------------------------------------------------------------------------------
# (5) and (6): the daemon's state, built by its own Monitor (state_bench), no bus.
log "state_bench: $MEM_HISTOGRAMS templates, journal_runs 0 and $JOURNAL_RUNS"
# Write and restore vary by 2x from one process to the next on a shared machine: STATE_REPEATS
# processes, each restoring once into fresh memory as the daemon does at its start; medians.
for ((i = 0; i < STATE_REPEATS; i++)); do
  "$BIN_STATE" --histograms "$MEM_HISTOGRAMS" --runs 4 --journal-runs 0 \
    --snapshot-dir "$WORK/snap0" >"$WORK/state0_$i.json"
done
py "import json, statistics
runs = [json.load(open('$WORK/state0_%d.json' % i)) for i in range($STATE_REPEATS)]
d = runs[0]
for k in ('write_ms', 'restore_ms'):
    d[k] = statistics.median(r[k] for r in runs)
d['restore_all_ms'] = [r['restore_ms'] for r in runs]
json.dump(d, open('$WORK/state0.json', 'w'))"
"$BIN_STATE" --histograms "$MEM_HISTOGRAMS" --runs $((JOURNAL_RUNS + 2)) \
  --journal-runs "$JOURNAL_RUNS" >"$WORK/state_j.json"
s0() { json "$WORK/state0.json" "$1"; }
sj() { json "$WORK/state_j.json" "$1"; }
bpt0=$(s0 "d['bytes_per_template']")
bptj=$(sj "d['bytes_per_template']")
numbers0=2400  # weight, sum_mu and sum_sigma: 3 x 100 doubles
numbersj=$((2400 + JOURNAL_RUNS * 100 * 8))
row "memory per 100-bin template, $MEM_HISTOGRAMS templates, no journal (RSS delta / N)" \
  "$(py "print(f'{$bpt0:,.0f} B')")" "its numbers $numbers0 B" \
  "$(py "print(f'{$bpt0 / $numbers0:.2f}')")" "≤ 4096 B" \
  "$(py "print('yes' if $bpt0 <= 4096 else 'no')")"
row "memory per 100-bin template, journal_runs $JOURNAL_RUNS (journal full)" \
  "$(py "print(f'{$bptj:,.0f} B')")" "its numbers $numbersj B (raw doubles)" \
  "$(py "print(f'{$bptj / $numbersj:.2f}')")" "—" "—"
row "snapshot write, $MEM_HISTOGRAMS templates (SaveTo + Write, fsync; $(s0 \
  "f\"{d['snapshot_bytes'] / 1e6:.0f}\"") MB; median of $STATE_REPEATS)" \
  "$(s0 "f\"{d['write_ms']:.0f}\"") ms" "—" "—" "—" "—"
restore_each=$(s0 "', '.join(f'{x:.0f}' for x in d['restore_all_ms'])")
row "snapshot restore, $MEM_HISTOGRAMS templates (Load + RestoreFrom; median of $STATE_REPEATS)" \
  "$(s0 "f\"{d['restore_ms']:.0f}\"") ms (each: $restore_each)" "target 1000 ms" \
  "$(s0 "f\"{d['restore_ms'] / 1000:.2f}\"")" "≤ 1 s" \
  "$(s0 "'yes' if d['restore_ms'] <= 1000 else 'no'")"

# ---------------------------------------------------------------------------------------------
# Soak (optional): zero losses at half the bare pair's rate.
if [[ $SOAK == 1 ]]; then
  soak_rate=${BENCH_SOAK_RATE:-$(py "print(round($pair_rate / 2))")}
  soak_what=$([[ -n ${BENCH_SOAK_RATE:-} ]] && echo "BENCH_SOAK_RATE" || echo "half the pair")
  log "soak at ${soak_rate}/s for ${SOAK_SECONDS}s"
  # dinamo-sim queues without limit when the daemon falls behind (no HWM): the soak stops
  # as soon as the daemon is more than 5 s of messages behind, or memory would run out.
  port=$(free_port)
  start_daemon soak "tcp://127.0.0.1:$port"
  "$BIN_PAIR" sub "$OUTPUT_ENDPOINT" --verdicts --idle-s 5 --seconds 100000 \
    >"$WORK/soak_sub.json" &
  soak_sub=$!
  PIDS+=("$soak_sub")
  "$BIN_SIM" --publish "tcp://127.0.0.1:$port" --histograms $HISTOGRAMS --bins 100 --pool 16 \
    --runs "$(py "import math; print(math.ceil($soak_rate * $SOAK_SECONDS / $HISTOGRAMS))")" \
    --rate "$soak_rate" --wait-s 2 --labels off >"$WORK/sim_soak.log" 2>&1 &
  soak_sim=$!
  PIDS+=("$soak_sim")
  soak_start=$(date +%s.%N)
  behind_at=
  sleep 3
  while kill -0 "$soak_sim" 2>/dev/null; do
    got=$(metric dinamo_histograms_received_total)
    behind=$(py "print(int($soak_rate * ($(date +%s.%N) - $soak_start - 2) - ${got:-0}))")
    if ((behind > 5 * ${soak_rate%.*})); then
      behind_at=$(py "print(round($(date +%s.%N) - $soak_start - 2))")
      log "soak: the daemon is $behind messages behind after ${behind_at}s: stopping"
      kill -INT "$soak_sim" 2>/dev/null || true
      break
    fi
    sleep 1
  done
  wait "$soak_sim" || true
  sim_sent "$WORK/sim_soak.log" >"$WORK/soak.sent"
  wait "$soak_sub" || true
  stop_daemon
  soak_sent=$(cat "$WORK/soak.sent")
  if [[ -n $behind_at ]]; then
    row "soak at $soak_rate/s ($soak_what): daemon fell behind after ${behind_at} s" \
      "stopped" "—" "—" "0 lost for $SOAK_SECONDS s" "no"
  fi
  sk() { json "$WORK/soak_sub.json" "$1"; }
  row "soak at $soak_rate/s ($soak_what) for $SOAK_SECONDS s: verdicts of sent; gaps in/out" \
    "$(sk "d['verdicts']") of $soak_sent; $(sk "d['input_gaps']"); $(sk "d['output_gaps']")" \
    "p99 $(sk "f\"{d['p99_us']:.0f}\"") µs" "—" "0 lost" \
    "$(sk "'yes' if d['verdicts'] == $soak_sent and d['input_gaps'] == 0 \
and d['output_gaps'] == 0 else 'no'")"
fi

# ---------------------------------------------------------------------------------------------
echo
echo "| what | figure | reference (same run) | ratio | target | holds |"
echo "|---|---|---|---|---|---|"
cat "$ROWS"
