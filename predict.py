"""Any-to-any generation from a checkpoint: `python predict.py --model DIR --prompt TEXT --output-dir OUT`.

The same as `nextgpt predict` (also `--interactive` for a terminal chat); the options are in nextgpt/cli/predict.py.
"""
import sys

from nextgpt.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
