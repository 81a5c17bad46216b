#!/usr/bin/env python
"""Encoder feature cache: the same as `nextgpt features`.

    python preprocess_features.py --config configs/stage_1.yaml --output-dir DIR [section.key=value ...]

The options are in nextgpt/cli/features.py.
"""
import os
import sys

from nextgpt.cli.features import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os._exit(code)  # (as train.py: leave multi-process gloo runs without the exit handlers)
    sys.exit(code)
