#!/usr/bin/env bash
# The embedded default, end to end on the CPU: tiny models + synthetic data -> stages 1, 2, 3 -> LoRA merge ->
# predictions -> evaluation. Everything lands in checkpoints/demo/ (stage_1, stage_2, stage_3, merged, predictions,
# eval).
# Re-running resumes / reuses what is already there; delete checkpoints/demo for a fresh run.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  cat <<'HELP'
usage: bash scripts/demo.sh

The embedded default, end to end on the CPU, with no downloads: builds tiny random models in the real on-disk
formats (checkpoints/tiny) and a synthetic dataset (data/synthetic), trains stages 1, 2 and 3
(checkpoints/demo/stage_{1,2,3}), merges the LoRA adapter (checkpoints/demo/merged), writes predictions
(checkpoints/demo/predictions) and prints each stage's losses. Creates .venv from requirements.txt on first use.
Re-running resumes / reuses what is already there; delete checkpoints/demo for a fresh run.
It takes no arguments.
HELP
  exit 0
fi
cd "$(dirname "$0")/.."
started=$(date +%s)
source scripts/_env.sh
# One thread and the same CPU kernels on every x86-64 machine with AVX2 (PyTorch's, MKL's and oneDNN's AVX2 code
# paths), so that the demo's floats depend as little as possible on the machine (docs/performance.md says what was
# measured). One thread is also far faster than two when other work shares the cores (no spinning barriers).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

step() { echo; echo "=== $* ($(( $(date +%s) - started )) s)"; }

step "tiny models (checkpoints/tiny), synthetic data (data/synthetic), caption embeddings"
python -m nextgpt demo prepare --models checkpoints/tiny --data data/synthetic

for stage in 1 2 3; do
  step "stage $stage"
  python train.py --config "configs/tiny/stage_$stage.yaml"
done

step "merge the stage-3 LoRA adapter into the LLM"
python merge_lora_weights.py --model checkpoints/demo/stage_3 --output checkpoints/demo/merged --overwrite

step "predictions"
python -m nextgpt demo predict --model checkpoints/demo/merged --output-dir checkpoints/demo/predictions \
  --data data/synthetic

step "evaluation on the synthetic held-out split, and the loss curves (checkpoints/demo/eval)"
python -m nextgpt demo evaluate --model checkpoints/demo/merged --output-dir checkpoints/demo/eval \
  --data data/synthetic --models checkpoints/tiny --runs checkpoints/demo

step "summary"
python -m nextgpt demo report checkpoints/demo
echo "demo finished in $(( $(date +%s) - started )) s"

echo
echo "Serve the demo model:"
echo "  python -m nextgpt.webui --model checkpoints/demo/merged   # chat page on http://127.0.0.1:7860"
echo "  python -m nextgpt.serve --model checkpoints/demo/merged   # OpenAI-compatible API on http://127.0.0.1:8000/v1"
