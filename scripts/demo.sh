#!/usr/bin/env bash
# The embedded default, end to end on the CPU: tiny models + synthetic data -> stages 1, 2, 3 -> LoRA merge ->
# predictions -> evaluation. Everything lands in checkpoints/demo/ (stage_1, stage_2, stage_3, merged, predictions,
# eval).
# Re-running resumes / reuses what is already there; delete checkpoints/demo for a fresh run.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
source scripts/_env.sh

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
