#!/usr/bin/env bash
# Caption embeddings, one process per GPU (and node): each rank computes a disjoint part of the missing files.
# Example: bash scripts/preprocess_embeddings.sh --data data/T_X_pair_data/cc3m/cc3m_generation.json \
#     --modality image --decoder pretrain_ckpt/stable-diffusion-2 --output-dir data/embed
# bash scripts/preprocess_embeddings.sh --help  for the launcher's variables; python preprocess_embeddings.py --help
# for the arguments.
SCRIPT_NAME=preprocess_embeddings.sh
ENTRY_SCRIPT=preprocess_embeddings.py
source "$(dirname "$0")/_launch.sh"
