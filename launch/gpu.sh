#!/usr/bin/env bash
# Train vitgan_jax on the GPUs of one machine: one process drives all visible GPUs (the batch is
# split over them). Rerunning with the same workdir resumes from its latest checkpoint.
#
# Usage: launch/gpu.sh [OPTIONS] [-- vitgan-train flags]
#
# Options (flag, or environment variable):
#   --config C          VITGAN_CONFIG     default configs/vitgan_cifar10.py (relative to
#                                         the current directory, else to the repo)
#   --workdir D         VITGAN_WORKDIR    default <repo>/workdirs/<config name> (may be gs://)
#   --gpus LIST         CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1,2,3 (default: all GPUs)
#   --mem-fraction F    XLA_PYTHON_CLIENT_MEM_FRACTION: share of each GPU's memory JAX
#                       preallocates (default 0.90; lower it to share a GPU)
#   --python BIN        VITGAN_PYTHON     default python3
#   --install           first run: pip install -U "jax[<cuda>]" -e <repo>
#   --cuda EXTRA        jax extra for --install: cuda12 (default) or cuda13 (CUDA 13 drivers)
#   --dry-run           print the commands instead of running them
#
# XLA_FLAGS gets --xla_gpu_enable_latency_hiding_scheduler=true (overlaps the gradient
# all-reduce with compute on several GPUs); flags already in XLA_FLAGS are kept.
# Everything after `--` goes to vitgan-train, e.g. `-- --config.training.batch_size=256`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GPU_XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true"

CONFIG="${VITGAN_CONFIG:-configs/vitgan_cifar10.py}"
WORKDIR="${VITGAN_WORKDIR:-}"
GPUS="${CUDA_VISIBLE_DEVICES:-}"
MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
PYTHON="${VITGAN_PYTHON:-python3}"
CUDA_EXTRA=cuda12
INSTALL=0
DRY_RUN=0
TRAIN_ARGS=()

die() { echo "gpu.sh: $*" >&2; exit 2; }

# Prints argv as one shell-quoted line (copy-pasteable; shlex.split gives the argv back).
quote() {
  local out=() arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

run() {
  echo "+ $(quote "$@")"
  if (( ! DRY_RUN )); then "$@"; fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --) shift; TRAIN_ARGS=("$@"); break ;;
    --dry-run) DRY_RUN=1 ;;
    --install) INSTALL=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    --config=*|--workdir=*|--gpus=*|--mem-fraction=*|--python=*|--cuda=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --config|--workdir|--gpus|--mem-fraction|--python|--cuda)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in
        --config) CONFIG="$2" ;;
        --workdir) WORKDIR="$2" ;;
        --gpus) GPUS="$2" ;;
        --mem-fraction) MEM_FRACTION="$2" ;;
        --python) PYTHON="$2" ;;
        --cuda) CUDA_EXTRA="$2" ;;
      esac
      shift ;;
    *) die "unexpected argument '$1' (see --help)" ;;
  esac
  shift
done

case "$CUDA_EXTRA" in cuda12|cuda13) ;; *) die "--cuda must be cuda12 or cuda13" ;; esac
if [[ -z "$WORKDIR" ]]; then
  name="$(basename "$CONFIG")"
  WORKDIR="$ROOT/workdirs/${name%.py}"
fi
# Paths given relative to the caller's directory stay valid after the `cd "$ROOT"` below.
if [[ "$WORKDIR" != gs://* && "$WORKDIR" != /* ]]; then WORKDIR="$PWD/$WORKDIR"; fi
if [[ "$CONFIG" != /* && -f "$CONFIG" ]]; then CONFIG="$PWD/$CONFIG"; fi

if (( INSTALL )); then
  run "$PYTHON" -m pip install -U "jax[$CUDA_EXTRA]" -e "$ROOT"
fi

if [[ -d "$WORKDIR/checkpoints" ]]; then
  echo "# $WORKDIR has checkpoints: training resumes from the latest one."
fi

env_args=("XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION"
          "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }$GPU_XLA_FLAGS")
if [[ -n "$GPUS" ]]; then env_args=("CUDA_VISIBLE_DEVICES=$GPUS" "${env_args[@]}"); fi
cd "$ROOT"
run env "${env_args[@]}" "$PYTHON" -m vitgan_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" \
    "${TRAIN_ARGS[@]}"
