"""Fold a stage-3 LoRA adapter into the LLM: `python merge_lora_weights.py --model CKPT --output DIR`.

The same as `nextgpt merge`; the options are in nextgpt/cli/merge.py.
"""
import sys

from nextgpt.cli.merge import main

if __name__ == "__main__":
    sys.exit(main())
