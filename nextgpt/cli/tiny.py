"""Build the embedded default's tiny random models in their real on-disk formats.

    nextgpt tiny OUTDIR [--seed S]      (configs/tiny/ read them from checkpoints/tiny)

OUTDIR/llm/ (LLaMA + SentencePiece tokenizer), OUTDIR/imagebind.safetensors, OUTDIR/blip2/ (a tiny BLIP-2), and the diffusers pipelines
OUTDIR/sd/, OUTDIR/zeroscope/, OUTDIR/audioldm/; see nextgpt/toy/models.py.
"""
from __future__ import annotations

import logging

from nextgpt.cli.common import ArgumentParser

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nextgpt tiny", description=__doc__)
    parser.add_argument("outdir", help="folder to write the tiny models into (e.g. checkpoints/tiny)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nextgpt.toy.models import build_tiny_models

    for name, path in build_tiny_models(args.outdir, args.seed).items():
        logger.info("%-10s %s", name, path)
    return 0
