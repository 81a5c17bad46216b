"""Train one NExT-GPT stage: `python train.py --config configs/stage_1.yaml [section.key=value ...]`.

Run it through the DeepSpeed launcher for several GPUs or nodes (see scripts/pretrain_enc.sh).
Before anything loads, every path (LLM, ImageBind, decoders, data files, media and caption-embedding folders,
train.init_from) and every dataset name is checked, and all problems are listed with their fixes.

    --check                      only these checks (about a second; exit status 1 if something is missing)
    --print-config               the fully resolved configuration as YAML
    --print-config --explain     every config key with its value, type, allowed values and description
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from nextgpt.cli.common import ArgumentParser
from nextgpt.config import Config, load_config, type_name
from nextgpt.errors import NextGPTError


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="train.py", description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config (may `extends:` others)")
    parser.add_argument("--check", action="store_true",
                        help="check every path and dataset name, list the problems with their fixes, and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--explain", action="store_true",
                        help="with --print-config: every key with its type, allowed values and description")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=2e-4 data.strict=true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config or args.explain:
            sys.stdout.write(explain_config(config) if args.explain else config.to_yaml())
            return 0
        from nextgpt.preflight import check_training, format_problems

        problems = check_training(config, args.config)
        if args.check or any(p.fatal for p in problems):
            text = format_problems(problems, f"train.py --config {args.config}")
            if args.check:
                sys.stdout.write(text)
            else:
                sys.stderr.write(f"error: {text}")
            return 1 if any(p.fatal for p in problems) else 0
        from nextgpt.train.trainer import finish_distributed, train

        train(config)
        finish_distributed()
    except NextGPTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def explain_config(config: Config) -> str:
    """Every key with its value, type, allowed values and description (the config dataclasses' help strings)."""

    lines: list[str] = []

    def walk(obj: typing.Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            meta = f.metadata
            bits = [type_name(hints[f.name])]
            if meta.get("choices") is not None:
                bits.append("one of " + ", ".join("null" if c is None else str(c) for c in meta["choices"]))
            if meta.get("min") is not None:
                bits.append(f">= {meta['min']}")
            if meta.get("max") is not None:
                bits.append(f"<= {meta['max']}")
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
            lines.append(f"{prefix}{f.name} = {shown}    ({'; '.join(bits)})")
            if meta.get("help"):
                lines.append(f"    {meta['help']}")

    walk(config, "")
    return "\n".join(lines) + "\n"
