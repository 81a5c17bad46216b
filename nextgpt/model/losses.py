"""The caption-alignment loss between output-projector embeddings and the decoders' caption embeddings.

The latent denoising loss lives next to the decoders (``multimodal_decoder/denoising.py``).
"""
from __future__ import annotations

import torch

from nextgpt.errors import DataError


def caption_alignment_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over batch and tokens of the per-token Euclidean distance ``||pred - target||_2`` (last dim).

    Not a squared MSE. Shapes must be equal, e.g. (N, 77, D) for image/video and (N, 1, D) for audio.
    Computed in float32; returns a scalar.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise DataError(f"caption alignment: prediction shape {tuple(pred.shape)} != target shape "
                        f"{tuple(target.shape)}")
    if pred.numel() == 0:
        raise DataError(f"caption alignment: empty tensors of shape {tuple(pred.shape)}")
    diff = pred.float() - target.to(device=pred.device).float()
    # vector_norm has a zero (not NaN) gradient where the distance is exactly 0.
    return torch.linalg.vector_norm(diff, ord=2, dim=-1).mean()
