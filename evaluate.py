"""Evaluation on the paper's benchmarks: `python evaluate.py --model DIR --task TASK --data MANIFEST --output-dir OUT`,
or `python evaluate.py score --metric METRIC --pred P --ref R`.

The same as `nextgpt evaluate`; the options are in nextgpt/cli/evaluate.py. Several processes:
`NUM_GPUS=8 bash scripts/evaluate.sh --model ... --task ...` (the training launcher).
"""
import sys

from nextgpt.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
