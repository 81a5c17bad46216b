# Shared by pretrain_enc.sh / pretrain_dec.sh / finetune.sh: launch train.py through the DeepSpeed launcher.
# Expects STAGE_CONFIG and SCRIPT_NAME; see usage() for the environment variables. evaluate.sh,
# preprocess_features.sh and preprocess_embeddings.sh set ENTRY_SCRIPT (their .py) instead of STAGE_CONFIG: the
# same launcher then starts that script with the arguments given.
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
die() { echo "error: $*" >&2; exit 2; }
CONFIG="${CONFIG:-${STAGE_CONFIG:-}}"
MASTER_PORT="${MASTER_PORT:-28460}"
LAUNCHER="$ROOT/.venv/bin/deepspeed"
[ -x "$LAUNCHER" ] || LAUNCHER="$(command -v deepspeed || true)"
[ -n "$LAUNCHER" ] || die "the DeepSpeed launcher was found neither in $ROOT/.venv/bin nor on PATH (install requirements.txt)"
# Count GPUs with the interpreter the launcher itself runs (its #! line), not whatever python3 is first on PATH:
# without the project's environment activated, that one may not even have torch.
PY="$(head -n 1 "$LAUNCHER" | sed -n 's/^#![[:space:]]*//p' | awk '{print $1}')"
[ -n "$PY" ] && [ -x "$PY" ] || PY="$(dirname "$LAUNCHER")/python"
[ -x "$PY" ] || die "cannot find the interpreter of $LAUNCHER"
SEEN=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null) \
  || die "$PY (the interpreter of $LAUNCHER) cannot import torch"
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  listed=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
  [ "$SEEN" = "$listed" ] || die "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES lists $listed GPU(s) but $PY sees $SEEN"
  [ -z "${NUM_GPUS:-}" ] || [ "$NUM_GPUS" = "$listed" ] \
    || die "NUM_GPUS=$NUM_GPUS disagrees with CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES ($listed GPU(s))"
fi

cmd=("$LAUNCHER")
if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE not found"
  hosts=$(grep -Ev '^[[:space:]]*(#|$)' "$HOSTFILE" | awk '{print $1}')
  num_nodes=$(echo "$hosts" | grep -c .)
  [ "$num_nodes" -ge 1 ] || die "HOSTFILE=$HOSTFILE lists no host"
  slots=$(grep -Ev '^[[:space:]]*(#|$)' "$HOSTFILE" | sed -n 's/.*slots=\([0-9]*\).*/\1/p' | sort -u)
  [ "$(echo "$slots" | grep -c .)" = 1 ] && [ "$(grep -Ev '^[[:space:]]*(#|$)' "$HOSTFILE" | grep -c 'slots=')" = "$num_nodes" ] \
    || die "HOSTFILE=$HOSTFILE must give every host the same slots=N (found: $(echo $slots))"
  [ -z "${NUM_GPUS:-}" ] || [ "$NUM_GPUS" = "$slots" ] || die "NUM_GPUS=$NUM_GPUS disagrees with slots=$slots in $HOSTFILE"
  NUM_GPUS="$slots"
  MASTER_ADDR="${MASTER_ADDR:-$(echo "$hosts" | head -n 1)}"
  cmd+=(--hostfile "$HOSTFILE" --num_nodes "$num_nodes" --num_gpus "$NUM_GPUS" --master_addr "$MASTER_ADDR")
else
  num_nodes=1
  if [ -z "${NUM_GPUS:-}" ]; then
    NUM_GPUS=$(( SEEN > 0 ? SEEN : 1 ))
  elif [ "$SEEN" -gt 0 ] && [ "$NUM_GPUS" -gt "$SEEN" ]; then
    die "NUM_GPUS=$NUM_GPUS but $PY sees only $SEEN GPU(s) on this node"
  fi
  MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
  cmd+=(--num_gpus "$NUM_GPUS" --master_addr "$MASTER_ADDR")
fi
if [ -n "${ENTRY_SCRIPT:-}" ]; then
  cmd+=(--master_port "$MASTER_PORT" "$ENTRY_SCRIPT" "$@")
  WHAT="$ENTRY_SCRIPT $*"
else
  cmd+=(--master_port "$MASTER_PORT" train.py --config "$CONFIG" "$@")
  OUTPUT_DIR=$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c '
import sys
from nextgpt.config import load_config
print(load_config(sys.argv[1], sys.argv[2:]).train.output_dir)' "$CONFIG" "$@") || die "cannot read $CONFIG"
  WHAT="config $CONFIG; output $OUTPUT_DIR"
fi
echo "launch plan: $num_nodes node(s) x $NUM_GPUS process(es); GPUs seen by $PY on this node: $SEEN; $WHAT" >&2

if [ "${DRY_RUN:-0}" = "1" ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"
