"""A tiny random BLIP-2 in transformers' on-disk format (config.json + model.safetensors of a `Blip2Model`), for
MiniGPT-4's configuration on the CPU: BLIP-2's real input (224 px) and output (32 queries x 768), small everything
else. It holds a tiny OPT language model too, as every transformers BLIP-2 checkpoint holds one; the blip2
encoder never reads it."""
from __future__ import annotations

from pathlib import Path

import torch

TINY_BLIP2_VISION = dict(image_size=224, patch_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4)
TINY_BLIP2_QFORMER = dict(hidden_size=768, intermediate_size=128, num_hidden_layers=2, num_attention_heads=12,
                          cross_attention_frequency=2)
TINY_BLIP2_TEXT = dict(vocab_size=128, hidden_size=16, word_embed_proj_dim=16, ffn_dim=32, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=64)


def tiny_blip2_config():
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, OPTConfig

    return Blip2Config(vision_config=Blip2VisionConfig(**TINY_BLIP2_VISION).to_dict(),
                       qformer_config=Blip2QFormerConfig(**TINY_BLIP2_QFORMER).to_dict(),
                       text_config=OPTConfig(**TINY_BLIP2_TEXT).to_dict(), num_query_tokens=32)


def build_tiny_blip2(outdir: str | Path, seed: int = 0) -> Path:
    """Write a random tiny `Blip2Model` with `save_pretrained` (loads offline with `Blip2Model.from_pretrained`).
    The query tokens get a random normal init (transformers' is zeros, which would make every query equal)."""
    from transformers import Blip2Model

    torch.manual_seed(seed)
    model = Blip2Model(tiny_blip2_config())
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)  # BLIP-2's own initialisation (initializer_range)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(outdir))
    return outdir
