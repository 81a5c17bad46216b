"""Precompute caption embeddings with a decoder's own text encoder: the same as `nextgpt embeddings`.

    python preprocess_embeddings.py --data JSON --modality image|video|audio --decoder DIR --output-dir DIR

The options are in nextgpt/cli/embeddings.py.
"""
from nextgpt.cli.common import exit_launched
from nextgpt.cli.embeddings import main

if __name__ == "__main__":
    exit_launched(main())
