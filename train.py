#!/usr/bin/env python
"""Train one NExT-GPT stage: `python train.py --config configs/stage_1.yaml [section.key=value ...]`.

The same as `nextgpt train`; the options are in nextgpt/cli/train.py.
"""
import os
import sys

from nextgpt.cli.train import main

if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # DeepSpeed's comm layer with gloo can abort at interpreter exit in multi-process runs
        # (DeepSpeed 0.19): leave without running the exit handlers once the work is done.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
