#!/usr/bin/env python
"""Train one NExT-GPT stage: `python train.py --config configs/stage_1.yaml [section.key=value ...]`.

The same as `nextgpt train`; the options are in nextgpt/cli/train.py.
"""
from nextgpt.cli.common import exit_launched
from nextgpt.cli.train import main

if __name__ == "__main__":
    exit_launched(main())
