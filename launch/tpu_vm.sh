#!/usr/bin/env bash
# Train vitgan_jax on a Cloud TPU VM (v2-8, v3-8, v4-8) or a pod slice (v2-32, v3-32, v4-32...).
#
# Usage: launch/tpu_vm.sh [COMMAND] [OPTIONS] [-- vitgan-train flags]
#
# Commands:
#   up        create (or reuse) the TPU, set up every worker, start training (default)
#   create    create the TPU VM unless one with this name exists
#   setup     copy (or clone) the code and install it with jax[tpu] on every worker
#   train     start vitgan-train on all workers at once (same --config, same gs:// workdir)
#   logs      follow the training log of one worker (--worker, default 0)
#   status    TPU state, and whether training runs on each worker
#   stop      stop training on every worker (SIGTERM; the last checkpoint stays)
#   delete    delete the TPU VM (the gs:// workdir is kept)
#   ssh       open a shell on one worker (--worker, default 0)
#
# Options (flag, or environment variable):
#   --project P           TPU_PROJECT            default: gcloud's core/project
#   --zone Z              TPU_ZONE               default: gcloud's compute/zone
#   --accelerator-type T  TPU_ACCELERATOR_TYPE   default v3-8 (pods: v2-32, v3-32, v4-32, ...)
#   --version V           TPU_VERSION            TPU software (runtime) version; default by type:
#                                                tpu-ubuntu2204-base (v2, v3, v4),
#                                                v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p),
#                                                v2-alpha-tpuv6e (v6e)
#   --name N              TPU_NAME               default vitgan-<accelerator type>
#   --config C            VITGAN_CONFIG          default configs/vitgan_cifar10.py
#   --workdir gs://...    VITGAN_WORKDIR         required by train/up: checkpoints, logs, samples
#   --repo URL            VITGAN_REPO            git clone this on every worker instead of
#                                                copying the local checkout
#   --ref REF             VITGAN_REF             branch or tag for --repo (default: its HEAD)
#   --python BIN          VITGAN_PYTHON          default python3.11 (jax needs Python >= 3.11)
#   --spot                                       create a Spot TPU (preemptible, cheaper)
#   --create-flag F                              extra flag for `tpu-vm create` (repeatable),
#                                                e.g. --create-flag=--service-account=SA
#   --worker W                                   worker for logs / ssh (default 0)
#   --dry-run                                    print every command instead of running it
#
# Everything after `--` goes to vitgan-train, e.g. `-- --config.training.num_steps=100000`.
# Training resumes from the latest checkpoint in the workdir, so `train` after `stop` (or after
# a Spot preemption and `up`) continues where it left off.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_CODE='~/vitgan_jax'        # expanded by the worker's shell
REMOTE_VENV='~/vitgan_venv'
REMOTE_ARCHIVE='vitgan_jax_code.tgz'
WORKER_SCRIPT="$REMOTE_CODE/launch/tpu_train_worker.sh"

COMMAND=up
PROJECT="${TPU_PROJECT:-}"
ZONE="${TPU_ZONE:-}"
ACCELERATOR_TYPE="${TPU_ACCELERATOR_TYPE:-v3-8}"
VERSION="${TPU_VERSION:-}"
NAME="${TPU_NAME:-}"
CONFIG="${VITGAN_CONFIG:-configs/vitgan_cifar10.py}"
WORKDIR="${VITGAN_WORKDIR:-}"
REPO="${VITGAN_REPO:-}"
REF="${VITGAN_REF:-}"
PYTHON="${VITGAN_PYTHON:-python3.11}"
WORKER=0
SPOT=0
DRY_RUN=0
CREATE_FLAGS=()
TRAIN_ARGS=()

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; }

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

# Shows a command, then runs it unless --dry-run.
run() {
  echo "+ $(quote "$@")"
  if (( ! DRY_RUN )); then "$@"; fi
}

default_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default --version for --accelerator-type '$1'; pass --version" ;;
  esac
}

parse_args() {
  if [[ $# -gt 0 && "$1" != -* ]]; then COMMAND="$1"; shift; fi
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --) shift; TRAIN_ARGS=("$@"); break ;;
      --dry-run) DRY_RUN=1 ;;
      --spot) SPOT=1 ;;
      -h|--help) usage; exit 0 ;;
      --*=*) set_option "${1%%=*}" "${1#*=}" ;;
      --*) [[ $# -ge 2 ]] || die "$1 needs a value"; set_option "$1" "$2"; shift ;;
      *) die "unexpected argument '$1' (see --help)" ;;
    esac
    shift
  done
  NAME="${NAME:-vitgan-$ACCELERATOR_TYPE}"
}

set_option() {
  case "$1" in
    --project) PROJECT="$2" ;;
    --zone) ZONE="$2" ;;
    --accelerator-type) ACCELERATOR_TYPE="$2" ;;
    --version) VERSION="$2" ;;
    --name) NAME="$2" ;;
    --config) CONFIG="$2" ;;
    --workdir) WORKDIR="$2" ;;
    --repo) REPO="$2" ;;
    --ref) REF="$2" ;;
    --python) PYTHON="$2" ;;
    --worker) WORKER="$2" ;;
    --create-flag) CREATE_FLAGS+=("$2") ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
}

# --zone / --project for every gcloud call (omitted: gcloud's configured defaults).
location_flags() {
  LOCATION=()
  if [[ -n "$ZONE" ]]; then LOCATION+=("--zone=$ZONE"); fi
  if [[ -n "$PROJECT" ]]; then LOCATION+=("--project=$PROJECT"); fi
}

tpu_ssh() {  # tpu_ssh WORKER COMMAND
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" "--worker=$1" "--command=$2"
}

cmd_create() {
  local create=(gcloud compute tpus tpu-vm create "$NAME" "${LOCATION[@]}"
                "--accelerator-type=$ACCELERATOR_TYPE" "--version=$VERSION")
  if (( SPOT )); then create+=(--spot); fi
  create+=("${CREATE_FLAGS[@]}")
  local state
  if (( DRY_RUN )); then
    echo "# reuses $NAME if \`gcloud compute tpus tpu-vm describe $NAME\` finds it, else:"
  elif state="$(gcloud compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" \
                  --format='value(state)' 2>/dev/null)"; then
    case "$state" in
      PREEMPTED|TERMINATED) die "TPU VM $NAME is $state: delete it (launch/tpu_vm.sh delete)," \
                                "then run up again; training resumes from the workdir." ;;
    esac
    echo "Reusing TPU VM $NAME${state:+ ($state)}."
    return 0
  fi
  run "${create[@]}"
}

copy_code() {
  if [[ -n "$REPO" ]]; then
    local clone="git clone --depth 1 ${REF:+--branch $(quote "$REF") }$(quote "$REPO") $REMOTE_CODE"
    tpu_ssh all "set -e; rm -rf $REMOTE_CODE; $clone"
    return
  fi
  # The local checkout as it is now: tracked and untracked-but-not-ignored files.
  local archive="${TMPDIR:-/tmp}/$REMOTE_ARCHIVE"
  echo "+ git -C $(quote "$ROOT") ls-files -z --cached --others --exclude-standard" \
       "| tar -C $(quote "$ROOT") --null --ignore-failed-read -czf $(quote "$archive") -T -"
  if (( ! DRY_RUN )); then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
      | tar -C "$ROOT" --null --ignore-failed-read -czf "$archive" -T -
  fi
  run gcloud compute tpus tpu-vm scp "$archive" "$NAME:$REMOTE_ARCHIVE" "${LOCATION[@]}" \
      --worker=all
  tpu_ssh all "set -e; rm -rf $REMOTE_CODE; mkdir -p $REMOTE_CODE; \
tar -xzf ~/$REMOTE_ARCHIVE -C $REMOTE_CODE"
}

cmd_setup() {
  copy_code
  # jax >= 0.10 needs Python >= 3.11; Ubuntu 22.04 (the TPU images) ships 3.10.
  local apt="sudo apt-get -o DPkg::Lock::Timeout=600"
  local steps=(
    "set -e"
    "if ! command -v $PYTHON >/dev/null; then sudo add-apt-repository -y ppa:deadsnakes/ppa \
&& $apt update -q && $apt install -y -q $PYTHON $PYTHON-venv; fi"
    "$PYTHON -m venv $REMOTE_VENV"
    "$REMOTE_VENV/bin/pip install -q -U pip"
    "$REMOTE_VENV/bin/pip install -q -U 'jax[tpu]' -e $REMOTE_CODE"
    "$REMOTE_VENV/bin/python -c 'import jax, vitgan_jax; print(\"jax\", jax.__version__)'"
  )
  local joined
  joined="$(printf '%s; ' "${steps[@]}")"
  tpu_ssh all "${joined%; }"
}

cmd_train() {
  local args=("--config=$CONFIG" "--workdir=$WORKDIR" "${TRAIN_ARGS[@]}")
  tpu_ssh all "bash $WORKER_SCRIPT start $(quote "${args[@]}")"
  echo "# Follow: launch/tpu_vm.sh logs --name=$NAME${ZONE:+ --zone=$ZONE}" \
       " |  TensorBoard: tensorboard --logdir=$WORKDIR"
}

# Every argument is checked here, before the first gcloud call: a mistake must not leave a
# billed TPU created and set up behind a refusal.
validate() {
  case "$COMMAND" in
    up|create|setup|train|logs|status|stop|delete|ssh) ;;
    *) die "unknown command '$COMMAND' (see --help)" ;;
  esac
  [[ "$ACCELERATOR_TYPE" =~ ^v[0-9]+[a-z]*(pod)?-[0-9]+$ ]] || die "--accelerator-type \
'$ACCELERATOR_TYPE' is not a TPU type such as v3-8, v4-32 or v5litepod-16"
  [[ -n "$NAME" ]] || die "--name must not be empty"
  [[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$NAME': lowercase letters, \
digits and hyphens, starting with a letter (a TPU name)"
  [[ "$WORKER" == all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker must be a number or 'all'; \
got '$WORKER'"
  if [[ "$COMMAND" == up || "$COMMAND" == train ]]; then
    [[ -n "$WORKDIR" ]] || die "$COMMAND needs --workdir gs://BUCKET/PATH (or VITGAN_WORKDIR)"
    [[ "$WORKDIR" =~ ^gs://[^/]+ ]] || die "--workdir must be a gs:// path: every worker (and \
you, after the TPU is deleted) must see the same checkpoints and logs; got '$WORKDIR'"
    [[ -n "$CONFIG" ]] || die "--config must not be empty"
    # Workers run from their copy of the code, so the config is a path inside the checkout.
    if [[ -z "$REPO" && ! -f "$ROOT/$CONFIG" ]]; then
      die "--config $CONFIG: no such file in $ROOT (give a path relative to the checkout, \
e.g. configs/vitgan_cifar10.py)"
    fi
  fi
  if [[ "$COMMAND" == up || "$COMMAND" == setup ]]; then
    [[ -n "$PYTHON" ]] || die "--python must not be empty"
    if [[ -z "$REPO" ]]; then
      git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$ROOT is not a git checkout: \
the code copied to the workers is its git ls-files; pass --repo URL instead"
    fi
  fi
  if [[ -n "$REF" && -z "$REPO" ]]; then die "--ref needs --repo"; fi
  VERSION="${VERSION:-$(default_version "$ACCELERATOR_TYPE")}"
}

main() {
  parse_args "$@"
  validate
  location_flags
  case "$COMMAND" in
    up) cmd_create; cmd_setup; cmd_train ;;
    create) cmd_create ;;
    setup) cmd_setup ;;
    train) cmd_train ;;
    logs) tpu_ssh "$WORKER" "tail -n 200 -F ~/vitgan_train.log" ;;
    status)
      run gcloud compute tpus tpu-vm describe "$NAME" "${LOCATION[@]}" --format='value(state)'
      tpu_ssh all "bash $WORKER_SCRIPT status" ;;
    stop) tpu_ssh all "bash $WORKER_SCRIPT stop" ;;
    delete) run gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet ;;
    ssh) run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" "--worker=$WORKER" ;;
    *) die "unknown command '$COMMAND' (see --help)" ;;
  esac
}

main "$@"
