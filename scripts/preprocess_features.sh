#!/usr/bin/env bash
# Encoder feature cache for a training config, one process per GPU (and node): each rank encodes a disjoint part,
# rank 0 merges the index. Example: CONFIG=configs/stage_1.yaml bash scripts/preprocess_features.sh \
#     --output-dir data/features
# bash scripts/preprocess_features.sh --help  for the launcher's options (NUM_GPUS, HOSTFILE, MASTER_ADDR, ...).
SCRIPT_NAME=preprocess_features.sh
STAGE_CONFIG=configs/stage_1.yaml
ENTRY=preprocess_features.py
source "$(dirname "$0")/_launch.sh"
