#!/usr/bin/env bash
# Stage 1, encoding-side alignment (input projector on X->T captions).
# bash scripts/pretrain_enc.sh --help  for the options (NUM_GPUS, HOSTFILE, MASTER_ADDR, MASTER_PORT, CONFIG, DRY_RUN).
SCRIPT_NAME=pretrain_enc.sh
STAGE_CONFIG=configs/stage_1.yaml
source "$(dirname "$0")/_launch.sh"
