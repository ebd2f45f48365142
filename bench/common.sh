# Sourced by the benchmark scripts: a scratch directory and the processes started in it, all
# stopped (and the directory removed) when the script ends, also on Ctrl-C or failure.
# Usage: BENCH_TAG=name; source bench/common.sh; then PIDS+=("$!") after each process started.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dinamo-${BENCH_TAG:-bench}.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[${BENCH_TAG:-bench} $(date +%T)] $*" >&2; }
