"""The configured encoder (`model.encoder.kind`: imagebind or blip2): building it, its input preprocessing, and its
shapes without weights (for the parameter summary and the converter)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from nextgpt.config import EncoderConfig
from nextgpt.errors import ConfigError

BLIP2_IMAGE_SIZE = 224  # MiniGPT-4's image_size


def build_encoder(config: EncoderConfig, dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> nn.Module:
    """The frozen encoder of `config`, weights loaded strictly from `config.checkpoint` (none: random init)."""
    if config.kind == "blip2":
        from .blip2 import build_blip2_encoder

        return build_blip2_encoder(config.checkpoint, config.arch, dtype=dtype, device=device)
    from .encoder import build_multimodal_encoder

    return build_multimodal_encoder(config.checkpoint, config.arch, config.output, dtype=dtype, device=device)


def preprocess_media(items: Sequence, modality: str, aspect_ratio: str = "square",
                     kind: str = "imagebind", max_pixels: int | None = None) -> torch.Tensor:
    """Media files (or PIL images) of one modality -> the input tensor of the encoder `kind`
    (MediaError names a bad file; `max_pixels`: the image pixel limit, default Pillow's)."""
    if kind == "blip2":
        if modality != "image":
            raise ConfigError(f"the blip2 encoder (MiniGPT-4) takes images only, not {modality}")
        from .blip2 import preprocess_images

        return preprocess_images(list(items), BLIP2_IMAGE_SIZE, aspect_ratio, max_pixels)
    from .imagebind.data import preprocess

    return preprocess(list(items), modality, aspect_ratio=aspect_ratio, max_pixels=max_pixels)


def meta_encoder(config: EncoderConfig) -> nn.Module:
    """The configured encoder on the meta device (no weights read or allocated; only config headers)."""
    if config.kind == "blip2":
        from .blip2 import Blip2Encoder, blip2_config

        cfg = blip2_config(config.checkpoint, config.arch)
        with torch.device("meta"):
            return Blip2Encoder(cfg)
    from .encoder import imagebind_kwargs
    from .imagebind.model import ImageBindModel

    kwargs = imagebind_kwargs(config.arch, config.checkpoint)
    with torch.device("meta"):
        return ImageBindModel(**kwargs, output_mode=config.output)


def encoder_width(config: EncoderConfig) -> int:
    """Width of the encoder's features without building it."""
    if config.kind == "blip2":
        from .blip2 import blip2_config

        return int(blip2_config(config.checkpoint, config.arch).qformer_config.hidden_size)
    from .encoder import imagebind_kwargs

    return int(imagebind_kwargs(config.arch, config.checkpoint).get("out_embed_dim", 768))


def describe(config: EncoderConfig) -> str:
    """One line for tables: which encoder, which sizes."""
    if config.kind == "blip2":
        return f"BLIP-2 {config.arch} (Q-Former queries)"
    return f"ImageBind {config.arch} ({config.output})"
