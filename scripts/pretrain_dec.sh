#!/usr/bin/env bash
# Stage 2, decoding-side alignment (output projectors + signal tokens on T->X pairs).
# bash scripts/pretrain_dec.sh --help  for the options (NUM_GPUS, HOSTFILE, MASTER_ADDR, MASTER_PORT, CONFIG, DRY_RUN).
SCRIPT_NAME=pretrain_dec.sh
STAGE_CONFIG=configs/stage_2.yaml
source "$(dirname "$0")/_launch.sh"
