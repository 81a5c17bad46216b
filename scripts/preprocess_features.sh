#!/usr/bin/env bash
# Encoder feature cache for a training config, one process per GPU (and node): each rank encodes a disjoint part,
# rank 0 merges the index. Example:
#   NUM_GPUS=8 bash scripts/preprocess_features.sh --config configs/stage_1.yaml --output-dir data/features
# bash scripts/preprocess_features.sh --help  for the launcher's variables; python preprocess_features.py --help for
# the arguments.
SCRIPT_NAME=preprocess_features.sh
ENTRY_SCRIPT=preprocess_features.py
source "$(dirname "$0")/_launch.sh"
