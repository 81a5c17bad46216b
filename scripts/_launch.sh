# Shared by pretrain_enc.sh / pretrain_dec.sh / finetune.sh (train.py) and preprocess_features.sh /
# preprocess_embeddings.sh: launch ENTRY (default train.py) through the DeepSpeed launcher, one process per GPU.
# Expects SCRIPT_NAME and STAGE_CONFIG (empty: ENTRY takes no --config); see usage() for the environment variables.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<USAGE
usage: bash scripts/${SCRIPT_NAME} [arguments ...]

Runs ${ENTRY:-train.py}${STAGE_CONFIG:+ --config \${CONFIG:-${STAGE_CONFIG}}} through the DeepSpeed launcher. Every
argument is passed on (config overrides such as  train.micro_batch_size=8 data.root=/data/nextgpt, or the
entry's own options).

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
STAGE_CONFIG="${STAGE_CONFIG:-}"
CONFIG="${CONFIG:-$STAGE_CONFIG}"
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
ENTRY="${ENTRY:-train.py}"
cmd+=(--master_port "$MASTER_PORT" "$ENTRY")
[ -n "$STAGE_CONFIG" ] && cmd+=(--config "$CONFIG")
cmd+=("$@")

if [ "${DRY_RUN:-0}" = "1" ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
