#!/usr/bin/env bash
# The main job: dinamod started with config/dinamod.yaml, fed by the synthetic readout
# (dinamo-sim), its alarms shown by a shifter console (dinamo-console). Builds what it needs
# first and stops everything it started, also on Ctrl-C. The ports are config/dinamod.yaml's
# (5550 readout, 5551 output, 5552 control, 8080 HTTP on 127.0.0.1); the state directory is a
# temporary one.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${DINAMO_BUILD_DIR:-$repo/build}
histograms=${DEMO_HISTOGRAMS:-12}
runs=${DEMO_RUNS:-200}
rate=${DEMO_RATE:-400}

cmake -S "$repo" -B "$build" >/dev/null
cmake --build "$build" -j2 --target dinamod dinamo-sim dinamo-console

work=$(mktemp -d)
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop_all EXIT

cd "$work"
echo "demo: dinamod --config config/dinamod.yaml (log: dinamod.log, state in $work/state)"
"$build/daemon/dinamod" --config "$repo/config/dinamod.yaml" >dinamod.log 2>&1 &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do
  "$build/tools/dinamo-console" --status --timeout-s 1 >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { cat dinamod.log; exit 1; }
  sleep 0.2
done

echo "demo: console following alarms; readout publishing $histograms histograms x $runs runs"
"$build/tools/dinamo-console" --connect tcp://127.0.0.1:5551 --summaries &
pids+=("$!")
sleep 0.5
"$build/tools/dinamo-sim" --publish tcp://127.0.0.1:5550 --histograms "$histograms" \
  --runs "$runs" --rate "$rate" --labels on --seed 7 --wait-s 1
sleep 1

echo "demo: the alarm table and the daemon's status, from the control socket"
"$build/tools/dinamo-console" --alarms || true
"$build/tools/dinamo-console" --status

kill -TERM "$daemon"
wait "$daemon" && echo "demo: dinamod stopped cleanly (exit 0); its log:"
grep -v " trace \| debug " dinamod.log | tail -n 15
