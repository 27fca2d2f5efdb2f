#!/usr/bin/env bash
# Runs ON each Cloud TPU VM worker (tpu_vm.sh calls it with --worker=all): starts, stops or
# reports `vitgan-train`. On a pod slice it exports JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
# JAX_PROCESS_ID from the TPU metadata server, so every worker joins one jax.distributed job
# (vitgan_jax.sharding.maybe_initialize_distributed reads them).
#
# Usage: tpu_train_worker.sh start|run|stop|status|env [vitgan-train flags...]
#   start   training in the background (survives the ssh session); log in $VITGAN_LOG
#   run     training in the foreground
#   stop    SIGTERM, then SIGKILL after $VITGAN_STOP_TIMEOUT seconds
#   status  whether training runs here, and the last lines of the log
#   env     print the multi-host variables this worker would use
# Environment: VITGAN_VENV (~/vitgan_venv), VITGAN_LOG (~/vitgan_train.log),
#   VITGAN_PIDFILE (~/vitgan_train.pid), VITGAN_COORDINATOR_PORT (8482),
#   VITGAN_TPU_WORKER_ID / VITGAN_TPU_WORKER_ENDPOINTS (override the metadata server; tests).
set -euo pipefail

VENV="${VITGAN_VENV:-$HOME/vitgan_venv}"
LOG="${VITGAN_LOG:-$HOME/vitgan_train.log}"
PIDFILE="${VITGAN_PIDFILE:-$HOME/vitgan_train.pid}"
PORT="${VITGAN_COORDINATOR_PORT:-8482}"
STOP_TIMEOUT="${VITGAN_STOP_TIMEOUT:-60}"
CODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MDS="http://metadata.google.internal/computeMetadata/v1/instance/attributes"

metadata() {
  curl -sf --max-time 5 -H 'Metadata-Flavor: Google' "$MDS/$1" || true
}

# Exports the jax.distributed variables when this TPU VM is one of several workers.
export_multihost_env() {
  local worker_id endpoints first num
  worker_id="${VITGAN_TPU_WORKER_ID:-$(metadata agent-worker-number)}"
  endpoints="${VITGAN_TPU_WORKER_ENDPOINTS:-$(metadata worker-network-endpoints)}"
  [[ -n "$worker_id" && -n "$endpoints" ]] || return 0  # not a TPU VM: one process
  num="$(tr ',' '\n' <<<"$endpoints" | grep -c .)"
  (( num > 1 )) || return 0                             # single host (v2-8, v3-8, v4-8)
  # Entries are 'hostname' or 'name:id:ip' (as parsed by jax's GceTpuCluster); worker 0 leads.
  first="${endpoints%%,*}"
  export JAX_COORDINATOR_ADDRESS="${first##*:}:$PORT"
  export JAX_NUM_PROCESSES="$num"
  export JAX_PROCESS_ID="$worker_id"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd="${1:-status}"
shift || true
case "$cmd" in
  start|run)
    if pid="$(running_pid)"; then
      echo "vitgan-train already runs here (pid $pid); stop it first." >&2
      exit 1
    fi
    export_multihost_env
    cd "$CODE_DIR"
    if [[ "$cmd" == run ]]; then
      exec "$VENV/bin/python" -m vitgan_jax.main "$@"
    fi
    setsid nohup "$VENV/bin/python" -m vitgan_jax.main "$@" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    echo "$(hostname): vitgan-train started (pid $!, process ${JAX_PROCESS_ID:-0} of" \
         "${JAX_NUM_PROCESSES:-1}), log $LOG"
    ;;
  stop)
    if ! pid="$(running_pid)"; then
      echo "$(hostname): vitgan-train is not running."
      exit 0
    fi
    kill -TERM "$pid"
    for _ in $(seq "$STOP_TIMEOUT"); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    rm -f "$PIDFILE"
    echo "$(hostname): stopped vitgan-train (pid $pid)."
    ;;
  status)
    if pid="$(running_pid)"; then
      echo "$(hostname): vitgan-train running (pid $pid)"
    else
      echo "$(hostname): vitgan-train not running"
    fi
    if [[ -f "$LOG" ]]; then tail -n 5 "$LOG"; fi
    ;;
  env)
    export_multihost_env
    echo "JAX_COORDINATOR_ADDRESS=${JAX_COORDINATOR_ADDRESS:-}"
    echo "JAX_NUM_PROCESSES=${JAX_NUM_PROCESSES:-}"
    echo "JAX_PROCESS_ID=${JAX_PROCESS_ID:-}"
    ;;
  *)
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
