#!/usr/bin/env bash
# Evaluation in several processes (GPUs or nodes) through the training launcher: each rank generates its share of
# the samples and writes its own part; rank 0 merges and scores. Example:
#   NUM_GPUS=8 bash scripts/evaluate.sh --model checkpoints/stage_3 --task t2i --data coco_t2i.json --output-dir out
# bash scripts/evaluate.sh --help  for the launcher's variables; python evaluate.py --help for the arguments.
SCRIPT_NAME=evaluate.sh
ENTRY_SCRIPT=evaluate.py
source "$(dirname "$0")/_launch.sh"
