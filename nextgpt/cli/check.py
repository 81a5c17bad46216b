"""Check a training config before anything loads: `nextgpt check --config configs/stage_1.yaml [overrides]`.

The same as `python train.py --config ... --check`: every path (LLM, ImageBind, decoders, data files, media and
caption-embedding folders, train.init_from) and every dataset name, all problems at once with their fixes.
Exit status 1 when something is missing.
"""
from __future__ import annotations

from nextgpt.cli.train import main as train_main


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    return train_main(["--check", *argv])
