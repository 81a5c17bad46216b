# Shared by pretrain_enc.sh / pretrain_dec.sh / finetune.sh: launch train.py through the DeepSpeed launcher.
# Expects STAGE_CONFIG and SCRIPT_NAME; see usage() for the environment variables. evaluate.sh sets ENTRY_SCRIPT
# (evaluate.py) instead of STAGE_CONFIG: the same launcher then starts that script with the arguments given.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  if [ -n "${ENTRY_SCRIPT:-}" ]; then
    echo "usage: bash scripts/${SCRIPT_NAME} ARGUMENTS OF ${ENTRY_SCRIPT} (python ${ENTRY_SCRIPT} --help)"
    echo "Runs ${ENTRY_SCRIPT} in NUM_GPUS processes per node through the DeepSpeed launcher (same variables as"
    echo "scripts/finetune.sh: NUM_GPUS, HOSTFILE, MASTER_ADDR, MASTER_PORT, DRY_RUN)."
    return
  fi
  cat <<USAGE
usage: bash scripts/${SCRIPT_NAME} [section.key=value ...]

Runs train.py --config \${CONFIG:-${STAGE_CONFIG}} through the DeepSpeed launcher. Every argument is passed on
as a config override, e.g.  train.micro_batch_size=8 train.lr=1e-4 data.root=/data/nextgpt

Environment:
  CONFIG       YAML config (default ${STAGE_CONFIG})
  NUM_GPUS     processes per node (default: all visible GPUs, or 1)
  HOSTFILE     DeepSpeed hostfile for multi-node runs, one "host slots=N" line per node
  MASTER_ADDR  address of the first node (default: the first host of HOSTFILE, else 127.0.0.1)
  MASTER_PORT  rendezvous port (default 28460, the reference's)
  DRY_RUN=1    print the launcher command instead of running it
USAGE
}

for arg in "$@"; do
  case "$arg" in -h|--help) usage; exit 0 ;; esac
done

cd "$ROOT"
CONFIG="${CONFIG:-${STAGE_CONFIG:-}}"
MASTER_PORT="${MASTER_PORT:-28460}"
if [ -z "${NUM_GPUS:-}" ]; then
  NUM_GPUS=$(python3 -c 'import torch; print(max(torch.cuda.device_count(), 1))' 2>/dev/null || echo 1)
fi
LAUNCHER="deepspeed"
[ -x "$ROOT/.venv/bin/deepspeed" ] && LAUNCHER="$ROOT/.venv/bin/deepspeed"

cmd=("$LAUNCHER")
if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] || { echo "error: HOSTFILE=$HOSTFILE not found" >&2; exit 2; }
  hosts=$(grep -Ev '^[[:space:]]*(#|$)' "$HOSTFILE" | awk '{print $1}')
  num_nodes=$(echo "$hosts" | grep -c .)
  MASTER_ADDR="${MASTER_ADDR:-$(echo "$hosts" | head -n 1)}"
  cmd+=(--hostfile "$HOSTFILE" --num_nodes "$num_nodes" --num_gpus "$NUM_GPUS" --master_addr "$MASTER_ADDR")
else
  MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
  cmd+=(--num_gpus "$NUM_GPUS" --master_addr "$MASTER_ADDR")
fi
if [ -n "${ENTRY_SCRIPT:-}" ]; then
  cmd+=(--master_port "$MASTER_PORT" "$ENTRY_SCRIPT" "$@")
else
  cmd+=(--master_port "$MASTER_PORT" train.py --config "$CONFIG" "$@")
fi

if [ "${DRY_RUN:-0}" = "1" ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
