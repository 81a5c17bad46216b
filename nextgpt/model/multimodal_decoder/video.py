"""ZeroScope (``TextToVideoSDPipeline``) as the video decoder."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Decoder


class VideoDecoder(Decoder):
    """ZeroScope: CLIP caption embeddings (77, D); uint8 frames out; targets (N, 3, F, H, W) encoded frame by frame."""

    modality = "video"
    pipeline_class = "TextToVideoSDPipeline"

    def _run_pipeline(self, options: dict[str, Any], common: dict[str, Any]) -> list[Any]:
        out = self.pipeline(height=options["height"], width=options["width"], num_frames=int(options["num_frames"]),
                            output_type="np", **common)
        frames = np.asarray(out.frames)  # (N, F, H, W, 3) floats in [0, 1]
        frames = (frames * 255.0).round().clip(0, 255).astype(np.uint8)
        return list(frames)

    def _target_layout(self, target: torch.Tensor) -> tuple[bool, str]:
        return target.dim() == 5 and target.shape[1] == 3, "(N, 3, F, H, W)"

    def _to_vae_batch(self, target: torch.Tensor) -> torch.Tensor:
        """(N, 3, F, H, W) → (N·F, 3, H, W): the VAE sees single frames."""
        n, c, f, h, w = target.shape
        return target.permute(0, 2, 1, 3, 4).reshape(n * f, c, h, w)

    def _from_vae_batch(self, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N·F, C, h, w) → (N, C, F, h, w)."""
        n, f = target.shape[0], target.shape[2]
        return latents.reshape(n, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
