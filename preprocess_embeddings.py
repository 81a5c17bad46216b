"""Precompute caption embeddings with a decoder's own text encoder: the same as `nextgpt embeddings`.

    python preprocess_embeddings.py --data JSON --modality image|video|audio --decoder DIR --output-dir DIR

The options are in nextgpt/cli/embeddings.py.
"""
import os
import sys

from nextgpt.cli.embeddings import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os._exit(code)  # (as train.py: leave multi-process gloo runs without the exit handlers)
    sys.exit(code)
