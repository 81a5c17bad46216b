"""Train one NExT-GPT stage: `python train.py --config configs/stage_1.yaml [section.key=value ...]`.

Run it through the DeepSpeed launcher for several GPUs or nodes (see scripts/pretrain_enc.sh).
`--print-config` prints the fully resolved configuration as YAML and exits.
"""
from __future__ import annotations

import argparse
import sys

from nextgpt.cli.common import ArgumentParser
from nextgpt.config import load_config
from nextgpt.errors import NextGPTError


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="train.py", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (may `extends:` others)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-4 data.strict=true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(config.to_yaml())
            return 0
        from nextgpt.train.trainer import finish_distributed, train

        train(config)
        finish_distributed()
    except NextGPTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
