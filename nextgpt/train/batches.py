"""Batch helpers shared by the training step and validation: moving a batch to the device, the counts the losses
are averaged over, and the all-reduce of plain numbers across ranks."""
from __future__ import annotations

from typing import Any

import torch

from ..constants import MODALITIES

__all__ = ["NORMALIZER_KEYS", "all_reduce", "loss_normalizers", "to_device"]

NORMALIZER_KEYS = ["text"] + [f"{m}_{kind}" for m in MODALITIES for kind in ("caption", "denoise")]


def to_device(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move a batch: float tensors to the training dtype, integer tensors as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype if value.is_floating_point() else None)
    if isinstance(value, dict):
        return {k: to_device(v, device, dtype) for k, v in value.items()}
    return value


def loss_normalizers(batches: list[dict]) -> list[float]:
    """Local counts the losses of one optimizer step are averaged over, in `NORMALIZER_KEYS` order."""
    text = sum(float((b["labels"][:, 1:] != -100).sum()) for b in batches)
    counts = [text]
    for m in MODALITIES:
        counts.append(sum(float(len(b["caption_embeddings"][m])) if m in b["caption_embeddings"]
                          else float(len(b["captions"].get(m, []))) for b in batches))
        counts.append(sum(float(len(b["targets"][m])) for b in batches if m in b["targets"]))
    return counts


def all_reduce(values: list[float], device: torch.device) -> list[float]:
    """Sum plain numbers over the ranks (float64)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()
