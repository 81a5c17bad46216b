#!/usr/bin/env bash
# Stage 3, modality-switching instruction tuning (LoRA + both projector kinds).
# bash scripts/finetune.sh --help  for the options (NUM_GPUS, HOSTFILE, MASTER_ADDR, MASTER_PORT, CONFIG, DRY_RUN).
SCRIPT_NAME=finetune.sh
STAGE_CONFIG=configs/stage_3.yaml
source "$(dirname "$0")/_launch.sh"
