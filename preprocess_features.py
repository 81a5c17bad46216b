#!/usr/bin/env python
"""Encoder feature cache: the same as `nextgpt features`.

    python preprocess_features.py --config configs/stage_1.yaml --output-dir DIR [section.key=value ...]

The options are in nextgpt/cli/features.py.
"""
from nextgpt.cli.common import exit_launched
from nextgpt.cli.features import main

if __name__ == "__main__":
    exit_launched(main())
