"""Stable Diffusion (``StableDiffusionPipeline``) as the image decoder."""
from __future__ import annotations

from typing import Any

import torch

from .base import Decoder


class ImageDecoder(Decoder):
    """SD: CLIP caption embeddings (77, D) with left truncation; PIL images out; targets (N, 3, H, W)."""

    modality = "image"
    pipeline_class = "StableDiffusionPipeline"

    def _tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Over-long captions keep their END, each caption on its own: ``[BOS] + last (L-2) tokens + [EOS]``.

        This is the truncation the reference's custom SD pipeline intends; the reference re-decoded the whole
        batch when any caption was too long, corrupting the short ones (docs/deviations.md,
        "preprocess_embeddings.py").
        """
        tok = self.tokenizer
        max_len = int(tok.model_max_length)
        rows, masks = [], []
        for caption in captions:
            ids = tok(caption, truncation=False, verbose=False).input_ids
            if len(ids) > max_len:
                ids = ids[:1] + ids[len(ids) - (max_len - 1):]
            pad = max_len - len(ids)
            rows.append(ids + [tok.pad_token_id] * pad)
            masks.append([1] * len(ids) + [0] * pad)
        return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)

    def _run_pipeline(self, options: dict[str, Any], common: dict[str, Any]) -> list[Any]:
        out = self.pipeline(height=options["height"], width=options["width"], output_type="pil", **common)
        return list(out.images)

    def _target_layout(self, target: torch.Tensor) -> tuple[bool, str]:
        return target.dim() == 4 and target.shape[1] == 3, "(N, 3, H, W)"
