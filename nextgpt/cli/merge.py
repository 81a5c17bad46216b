"""Fold a stage-3 LoRA adapter and the signal-token rows into a standalone LLaMA.

    python merge_lora_weights.py --model checkpoints/stage_3 --output checkpoints/merged [--dtype float16] \
        [model.llm=/where/the/llm/is/on/this/machine ...]

DIR/llm/ is then a plain transformers LLaMA (vocabulary including the signal tokens); DIR itself is a checkpoint
directory that `predict.py --model DIR` loads. The logic lives in `nextgpt/model/merge.py`.
"""
from __future__ import annotations

import logging
import sys

from nextgpt.cli.common import ArgumentParser
from nextgpt.dtypes import DTYPES


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="merge_lora_weights.py", description=__doc__)
    parser.add_argument("--model", "--model-path", dest="model", required=True,
                        help="stage-3 checkpoint directory (with adapter/)")
    parser.add_argument("--output", "--save-model-path", dest="output", required=True,
                        help="directory to write the merged checkpoint to")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="dtype of the merge and of the saved LLM (default: the checkpoint's train.precision)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.add_argument("overrides", nargs="*", metavar="model.KEY=VALUE",
                        help="replace saved model paths, e.g. model.llm=/data/vicuna-7b-v1.5 for a checkpoint "
                             "copied from another machine")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from nextgpt.errors import NextGPTError
    from nextgpt.preflight import check_checkpoint, format_problems

    problems = check_checkpoint(args.model, args.overrides)
    if any(p.fatal for p in problems):
        sys.stderr.write("error: " + format_problems(problems, f"merge {args.model}"))
        return 1
    from nextgpt.model.merge import merge_checkpoint

    try:
        out = merge_checkpoint(args.model, args.output, dtype=DTYPES[args.dtype] if args.dtype else None,
                               overwrite=args.overwrite, overrides=args.overrides)
    except NextGPTError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(out)
    return 0
