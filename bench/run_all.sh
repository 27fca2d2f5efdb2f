#!/usr/bin/env bash
# Every benchmark in one go, merged into
# bench/results/<date>-<device>.json; run it from the repo root of any machine with the package.
#   THROUGHPUT_BUDGET_S  train-step sweep budget, state inits not counted (default 600: on an
#                        H200 host XLA compiled each step in 71-105 s, 8 at a time)
#   FID_SAMPLES          N of the end-to-end FID-N timing (default 50000)
#   QUALITY_MINUTES      training minutes of the learning curve (default 1.5)
#   INCEPTION_WEIGHTS    FID Inception weights for the learning curve (default: the loader's search)
#   DATA                 uint8 .npz of real images for the learning curve
#   THROUGHPUT_ARGS      more train_throughput flags, e.g. '--steps 10 --trace /tmp/trace'
#   QUALITY_ARGS         more learning_curve flags, e.g. '--fid_samples 2000'
#   PARTS                folder for the part JSONs and the log (default: a fresh temporary one)
#   QUICK=1              the --quick modes instead (CPU check of this script; no learning curve)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
PYTHON=${PYTHON:-python3}
PARTS=${PARTS:-$(mktemp -d)}
mkdir -p "$PARTS"
# A fresh persistent compilation cache: no compile time is ever read from an earlier run's.
export JAX_COMPILATION_CACHE_DIR="$(mktemp -d)/jax_cache"
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
  part train_throughput 900 "$PYTHON" -m bench.train_throughput --quick
  part fid_speed 900 "$PYTHON" -m bench.fid_speed --quick
else
  part train_throughput $(( ${THROUGHPUT_BUDGET_S:-600} + 300 )) "$PYTHON" \
    -m bench.train_throughput --budget_s "${THROUGHPUT_BUDGET_S:-600}" ${THROUGHPUT_ARGS:-}
  part fid_speed 150 "$PYTHON" -m bench.fid_speed --num_samples "${FID_SAMPLES:-50000}"
  # The library's own trainer on real images, ViTGAN's D only, FID every 30 s.
  part learning_curve $(python3 -c "print(int(${QUALITY_MINUTES:-1.5} * 60 + 150))") \
    "$PYTHON" -m bench.learning_curve --rows vitgan \
    --minutes "${QUALITY_MINUTES:-1.5}" --eval_every_minutes 0.5 ${QUALITY_ARGS:-} \
    ${DATA:+--data "$DATA"} ${INCEPTION_WEIGHTS:+--inception_weights "$INCEPTION_WEIGHTS"}
fi

MERGED=$("$PYTHON" -m bench.merge_results "$PARTS"/*.json \
         --command "${QUICK:+QUICK=1 }bash bench/run_all.sh" | tail -n 1)
echo "merged: $MERGED" | tee -a "$LOG"
CURVE="$PARTS/learning_curve.png"
if [[ -f "$CURVE" && -f "$MERGED" ]]; then
  cp "$CURVE" "${MERGED%.json}-learning_curve.png"
fi
"$PYTHON" -m bench.make_table "$MERGED" | tee -a "$LOG"
