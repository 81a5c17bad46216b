"""The embedded default's tiny random models, in their real on-disk formats (`nextgpt tiny OUTDIR` writes them).

    OUTDIR/llm/                   LLaMA (config.json, model.safetensors) + SentencePiece tokenizer
    OUTDIR/imagebind.safetensors  a tiny ImageBind (reference key names; its kwargs in the metadata)
    OUTDIR/blip2/                 a tiny transformers Blip2Model (MiniGPT-4's encoder: configs/tiny/minigpt4_*)
    OUTDIR/sd/                    StableDiffusionPipeline (SD-2 style, v-prediction)
    OUTDIR/zeroscope/             TextToVideoSDPipeline
    OUTDIR/audioldm/              AudioLDMPipeline

Each folder loads offline with its own library's `from_pretrained`; configs/tiny/ point at checkpoints/tiny.
"""
from __future__ import annotations

from pathlib import Path

from .blip2 import build_tiny_blip2
from .decoders import TINY_DECODER_DIRS, build_tiny_audioldm, build_tiny_sd, build_tiny_zeroscope
from .imagebind import build_tiny_imagebind
from .llm import build_tiny_llm

# Conditioning widths of the tiny decoders = out_features of the tiny output projectors (configs/tiny/base.yaml).
TINY_CONDITION_WIDTH = {"image": 32, "video": 24, "audio": 16}


def build_tiny_models(outdir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny model under `outdir`; returns their paths by name (llm, sd, zeroscope, audioldm,
    imagebind, blip2)."""
    outdir = Path(outdir)
    paths = {"llm": build_tiny_llm(outdir / "llm", seed=seed)}
    for modality, build in (("image", build_tiny_sd), ("video", build_tiny_zeroscope), ("audio", build_tiny_audioldm)):
        folder = TINY_DECODER_DIRS[modality]
        paths[folder] = build(outdir / folder, TINY_CONDITION_WIDTH[modality], seed=seed)
    paths["imagebind"] = build_tiny_imagebind(outdir / "imagebind.safetensors", seed=seed)
    paths["blip2"] = build_tiny_blip2(outdir / "blip2", seed=seed)
    return paths
