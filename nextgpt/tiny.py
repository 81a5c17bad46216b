"""`python -m nextgpt.tiny OUTDIR`: the embedded default's tiny random models, in their real on-disk formats.

    OUTDIR/llm/                   LLaMA (config.json, model.safetensors) + SentencePiece tokenizer
    OUTDIR/imagebind.safetensors  a tiny ImageBind (reference key names; its kwargs in the metadata)
    OUTDIR/sd/                    StableDiffusionPipeline (SD-2 style, v-prediction)
    OUTDIR/zeroscope/             TextToVideoSDPipeline
    OUTDIR/audioldm/              AudioLDMPipeline

Each folder loads offline with its own library's `from_pretrained`; configs/tiny/ point at checkpoints/tiny.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .model.language_model import build_tiny_llm
from .model.multimodal_decoder.tiny import build_tiny_audioldm, build_tiny_sd, build_tiny_zeroscope
from .model.multimodal_encoder.encoder import build_multimodal_encoder, save_imagebind

logger = logging.getLogger(__name__)

# Conditioning widths of the tiny decoders = out_features of the tiny output projectors (configs/tiny/base.yaml).
TINY_CONDITION_WIDTH = {"image": 32, "video": 24, "audio": 16}


def build_tiny_models(outdir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny model under `outdir`; returns their paths by name."""
    import torch

    outdir = Path(outdir)
    paths = {
        "llm": build_tiny_llm(outdir / "llm", seed=seed),
        "sd": build_tiny_sd(outdir / "sd", TINY_CONDITION_WIDTH["image"], seed=seed),
        "zeroscope": build_tiny_zeroscope(outdir / "zeroscope", TINY_CONDITION_WIDTH["video"], seed=seed),
        "audioldm": build_tiny_audioldm(outdir / "audioldm", TINY_CONDITION_WIDTH["audio"], seed=seed),
    }
    torch.manual_seed(seed)
    paths["imagebind"] = save_imagebind(build_multimodal_encoder(None, "tiny"), outdir / "imagebind.safetensors")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="folder to write the tiny models into (e.g. checkpoints/tiny)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, path in build_tiny_models(args.outdir, args.seed).items():
        logger.info("%-10s %s", name, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
