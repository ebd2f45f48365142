#!/usr/bin/env bash
# Verdict latency of the EWMA histograms while transformer templates train (issue 5): the same
# dinamo-sim load twice, once with every histogram on ewma, once with the histograms matching
# MATCH on transformer; a subscriber measures publication -> verdict (receive time minus the
# verdict's histogram_time_unix_ns) per method. With PAIRS > 1 the two alternate, ABBA..., so
# that a drift of the machine's load does not favour one of them, and each quantile is taken
# over all the verdicts of its configuration. Prints one markdown table.
#
#   bench/transformer_latency.sh
#
# Settings (environment): BUILD_DIR (build, with libtorch), HISTOGRAMS (20), BINS (20),
# RUNS (150), RATE (messages/s, 300), MATCH ("VELO/*": 5 of 20 names), WORKERS (1),
# MAX_STEPS (training.max_steps, 50: at this rate a training must be back within a few runs),
# AHEAD (training.expect_ahead, 256: the runs until the histogram's next training is back),
# BUSY (0: nice-19 busy loops kept running through both runs, so that neither run profits from
# idle CPUs, as on a machine busy with other work), PAIRS (1: runs of each configuration).
# Every process started here is stopped on exit; endpoints are free loopback ports.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
HISTOGRAMS=${HISTOGRAMS:-20}
BINS=${BINS:-20}
RUNS=${RUNS:-150}
RATE=${RATE:-300}
MATCH=${MATCH:-VELO/*}
WORKERS=${WORKERS:-1}
MAX_STEPS=${MAX_STEPS:-50}
AHEAD=${AHEAD:-256}
BUSY=${BUSY:-0}
PAIRS=${PAIRS:-1}
PY=/usr/bin/python3

BENCH_TAG=tlat
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmake --build "$BUILD" -j2 --target dinamod dinamo-sim >"$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log" >&2; exit 1; }
mkdir -p "$WORK/py"
protoc -I"$ROOT/proto" --python_out="$WORK/py" "$ROOT"/proto/dinamo/v1/*.proto

free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The subscriber: per method, every latency in µs; stops 3 s after the last verdict.
cat >"$WORK/sub.py" <<'EOF'
import json, sys, time
sys.path.insert(0, sys.argv[3])
import zmq
from dinamo.v1 import verdict_pb2
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.connect(sys.argv[1])
s.setsockopt(zmq.SUBSCRIBE, b"verdict/")
s.setsockopt(zmq.RCVTIMEO, 3000)
lat = {}
started = False
deadline = time.time() + 120
while time.time() < deadline:
    try:
        topic, body = s.recv_multipart()
    except zmq.Again:
        if started:
            break
        continue
    now = time.time_ns()
    started = True
    v = verdict_pb2.Verdict()
    v.ParseFromString(body)
    lat.setdefault(v.method, []).append((now - v.histogram_time_unix_ns) / 1e3)
json.dump(lat, open(sys.argv[2], "w"))
EOF

run() {  # run NAME RULES
  local name=$1 rules=$2 in out ctl http
  in=$(free_port); out=$(free_port); ctl=$(free_port); http=$(free_port)
  cat >"$WORK/$name.yaml" <<EOF
input: {connect: ["tcp://127.0.0.1:$in"]}
output: {bind: "tcp://127.0.0.1:$out"}
control: {bind: "tcp://127.0.0.1:$ctl"}
http: {bind: "127.0.0.1:$http"}
state: {directory: "$WORK/state_$name", snapshot_interval_s: 3600}
log: {level: warn}
training: {workers: $WORKERS, max_steps: $MAX_STEPS, expect_ahead: $AHEAD}
$rules
EOF
  "$BUILD/daemon/dinamod" --config "$WORK/$name.yaml" 2>"$WORK/$name.log" &
  local daemon=$!
  PIDS+=("$daemon")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$http/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  $PY "$WORK/sub.py" "tcp://127.0.0.1:$out" "$WORK/$name.json" "$WORK/py" &
  local sub=$!
  PIDS+=("$sub")
  log "$name: $HISTOGRAMS histograms x $RUNS runs at $RATE/s"
  "$BUILD/tools/dinamo-sim" --publish "tcp://127.0.0.1:$in" --histograms "$HISTOGRAMS" \
    --bins "$BINS" --runs "$RUNS" --rate "$RATE" --wait-s 2 --labels off \
    >"$WORK/sim_$name.log" 2>&1
  wait "$sub" || true
  curl -sf "http://127.0.0.1:$http/metrics" | grep -E '^dinamo_(train|transformer)' \
    >"$WORK/$name.metrics" || true
  kill -TERM "$daemon"
  wait "$daemon" || true
}

for _ in $(seq "$BUSY"); do
  nice -n 19 bash -c 'while :; do :; done' &
  PIDS+=("$!")
done
TRANSFORMER_RULES="rules: [{match: \"$MATCH\", method: transformer}]"
for pair in $(seq "$PAIRS"); do
  if ((pair % 2)); then
    run "ewma_$pair" ""
    run "transformer_$pair" "$TRANSFORMER_RULES"
  else
    run "transformer_$pair" "$TRANSFORMER_RULES"
    run "ewma_$pair" ""
  fi
done

$PY - "$WORK" "$PAIRS" <<'EOF'
import json, sys
w, pairs = sys.argv[1], int(sys.argv[2])
def pooled(config):
    lat = {}
    for pair in range(1, pairs + 1):
        for method, xs in json.load(open(f"{w}/{config}_{pair}.json")).items():
            lat.setdefault(method, []).extend(xs)
    out = {}
    for method, xs in lat.items():
        xs.sort()
        q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
        out[method] = {"n": len(xs), "p50": q(0.5), "p99": q(0.99), "max": xs[-1]}
    return out
e, t = pooled("ewma"), pooled("transformer")
def row(what, d):
    return f"| {what} | {d['n']} | {d['p50']:.0f} | {d['p99']:.0f} | {d['max']:.0f} |"
print(f"{pairs} run(s) of each configuration" + (", alternating" if pairs > 1 else ""))
print()
print("| run, verdicts of method | verdicts | p50 µs | p99 µs | max µs |")
print("|---|---|---|---|---|")
print(row("all ewma: ewma", e["ewma"]))
print(row("with transformer: ewma", t["ewma"]))
if "transformer" in t:
    print(row("with transformer: transformer", t["transformer"]))
ratio = t["ewma"]["p99"] / e["ewma"]["p99"]
print(f"\newma p99 with transformer / without: {ratio:.3f} (target <= 1.10: "
      f"{'holds' if ratio <= 1.10 else 'does not hold'})")
print("\ntraining metrics at the end of the last transformer run:")
print(open(f"{w}/transformer_{pairs}.metrics").read())
EOF
