#!/usr/bin/env bash
# Every benchmark in one device call (under 8 minutes on one H100), merged into
# bench/results/<date>-<device>.json and copied to $OUT when the device tool sets it.
#   THROUGHPUT_BUDGET_S  train-step sweep budget (default 210)
#   FID_SAMPLES          N of the end-to-end FID-N timing (default 50000)
#   QUALITY_MINUTES      training minutes of the quality run (default 1.5; 8 in its own call)
#   QUICK=1              the --quick modes instead (CPU check of this script)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
PYTHON=${PYTHON:-python3}
PARTS=$(mktemp -d)
# A fresh persistent compilation cache: the quality run reuses the sweep's cifar10 step, and
# no compile time is ever read from an earlier run's cache.
export JAX_COMPILATION_CACHE_DIR="$PARTS/jax_cache"
LOG="$PARTS/run_all.log"
QUICK_FLAG=${QUICK:+--quick}

part() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s) ===" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" --out "$PARTS/$name.json" 2>&1 | tee -a "$LOG"
  echo "=== $name exit ${PIPESTATUS[0]} ===" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  "$PYTHON" -c 'import jax; print(jax.__version__, jax.devices())'; } 2>&1 | tee -a "$LOG"

if [[ -n "${QUICK:-}" ]]; then
  part train_throughput 900 "$PYTHON" bench/train_throughput.py --quick
  part fid_speed 900 "$PYTHON" bench/fid_speed.py --quick
  part quality_run 600 "$PYTHON" bench/quality_run.py --quick
else
  part train_throughput $(( ${THROUGHPUT_BUDGET_S:-210} + 60 )) "$PYTHON" \
    bench/train_throughput.py --budget_s "${THROUGHPUT_BUDGET_S:-210}"
  part fid_speed 150 "$PYTHON" bench/fid_speed.py --num_samples "${FID_SAMPLES:-50000}"
  part quality_run 170 "$PYTHON" bench/quality_run.py --minutes "${QUALITY_MINUTES:-1.5}" \
    --eval_every_s 30
fi

MERGED=$("$PYTHON" bench/merge_results.py "$PARTS"/train_throughput.json \
         "$PARTS"/fid_speed.json "$PARTS"/quality_run.json \
         --command "${QUICK:+QUICK=1 }bash bench/run_all.sh" | tail -n 1)
echo "merged: $MERGED" | tee -a "$LOG"
SAMPLES="$PARTS/quality_run-samples.png"
if [[ -f "$SAMPLES" && -f "$MERGED" ]]; then
  cp "$SAMPLES" "${MERGED%.json}-samples.png"
fi
"$PYTHON" bench/make_table.py "$MERGED" | tee -a "$LOG"
if [[ -n "${OUT:-}" ]]; then
  cp "$MERGED" "$LOG" "$OUT"/
  [[ -f "$SAMPLES" ]] && cp "$SAMPLES" "$OUT/$(basename "${MERGED%.json}")-samples.png"
fi
