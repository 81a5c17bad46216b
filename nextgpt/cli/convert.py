"""Import reference NExT-GPT or MiniGPT-4 checkpoints into a checkpoint directory that predict.py and training load.

    nextgpt convert --format new|legacy|minigpt4 --src PATH [--src PATH ...] --config CONFIG.yaml --output OUT_DIR \
        [--allow-unmatched] [--dtype keep|float32|bfloat16|float16] [--source-tokenizer DIR] [--overwrite] \
        [--verify] [section.key=value ...]

NEW: mm_input_projector.bin / mm_output_projector.bin / non_lora_trainables.bin + the peft adapter; LEGACY:
7b_tiva_v0/pytorch_model.pt; MINIGPT4: pretrained_minigpt4*.pth (llama_proj). Needs the base LLM directory
(model.llm). What happens to every key is written to OUT_DIR/conversion.json (see nextgpt/model/convert/).
"""
from __future__ import annotations

import logging

from nextgpt.cli.common import ArgumentParser
from nextgpt.config import load_config
from nextgpt.dtypes import DTYPES
from nextgpt.errors import NextGPTError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from nextgpt.model.convert import FORMATS, convert_checkpoint, verify_conversion

    parser = ArgumentParser(prog="nextgpt convert", description=__doc__)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--src", required=True, action="append",
                        help="a reference output directory or file; repeat it to combine stages (later wins)")
    parser.add_argument("--config", required=True, help="config describing the model, e.g. configs/stage_3.yaml")
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--allow-unmatched", action="store_true",
                        help="convert even when keys are missing / unexpected / mis-shaped (they are still printed; "
                             "holes are freshly initialised)")
    parser.add_argument("--dtype", default="keep", choices=("keep", *DTYPES))
    parser.add_argument("--source-tokenizer", default=None,
                        help="tokenizer folder whose ids index the source's embedding / LM-head matrices "
                             "(default: one found beside the source)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.add_argument("--verify", action="store_true",
                        help="afterwards load the result with NextGPTModel.from_pretrained and compare")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.llm=/path/to/vicuna")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config, args.overrides)
        report = convert_checkpoint(args.format, args.src, config, args.output, allow_unmatched=args.allow_unmatched,
                                    dtype=args.dtype, source_tokenizer=args.source_tokenizer,
                                    overwrite=args.overwrite)
        for line in report.lines():
            logger.info("%s", line)
        if args.verify:
            verify_conversion(args.output)
            logger.info("verified: %s loads with NextGPTModel.from_pretrained and matches", args.output)
    except NextGPTError as exc:
        logger.error("error: %s", exc)
        return 2
    return 0
