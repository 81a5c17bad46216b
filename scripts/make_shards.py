#!/usr/bin/env python
"""Convert a reference-format JSON + media folders into WebDataset shards: the same as `nextgpt shards`.

The options are in nextgpt/cli/shards.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nextgpt.cli.shards import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
