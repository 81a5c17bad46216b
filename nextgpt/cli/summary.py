"""Parameters per module (total, and trainable in the config's stage), computed on the meta device: no weights.

    nextgpt summary --config configs/stage_3.yaml [--json] [section.key=value ...]
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict

from nextgpt.cli.common import ArgumentParser
from nextgpt.config import load_config
from nextgpt.errors import NextGPTError


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nextgpt summary", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (e.g. configs/stage_3.yaml)")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.stage=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from nextgpt.model.summary import format_table, summarize

    try:
        config = load_config(args.config, args.overrides)
        summary = summarize(config)
    except NextGPTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: asdict(v) for k, v in summary.items()}, indent=2))
    else:
        print(format_table(summary, config, args.config))
    return 0
