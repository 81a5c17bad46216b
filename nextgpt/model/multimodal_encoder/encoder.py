"""The frozen multimodal encoder the NExT-GPT model core uses, and how to build, save and feed it.

``MultimodalEncoder`` wraps an ImageBindModel the way NExT-GPT's ``ImageBindTower`` does: frozen, always in eval
mode, run without gradients, routing "image" and "video" to the vision branch and "audio" to the audio branch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from nextgpt.errors import CheckpointError, ConfigError, DataError

from .imagebind.data import preprocess
from .imagebind.model import IMAGEBIND_HUGE_KWARGS, OUTPUT_MODES, ImageBindModel, build_imagebind

ARCHS: dict[str, dict[str, Any]] = {"huge": IMAGEBIND_HUGE_KWARGS}
# The arch value that takes the kwargs `save_imagebind` stored in the .safetensors checkpoint (e.g. the tiny models).
FROM_CHECKPOINT = "checkpoint"
METADATA_KEY = "imagebind_kwargs"

# modality -> (ImageBind input key, accepted input ranks)
_ROUTES: dict[str, tuple[str, tuple[int, ...]]] = {
    "image": ("vision", (4,)),
    "video": ("vision", (6,)),
    "audio": ("audio", (4, 5)),
}


class MultimodalEncoder(nn.Module):
    """Frozen ImageBind: ``forward(pixel_values, modality)`` -> features (B, T, D).

    Tokens mode: image/video (B, 256, D), audio (B, 228, D) for the huge model. Pooled mode: (B, 1, D).
    Parameters never require gradients, the module stays in eval mode whatever ``train()`` is called with (so drop
    path stays off), and the input is cast to the encoder's dtype (fp32 or bf16).
    """

    def __init__(self, model: ImageBindModel) -> None:
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.train(False)

    @property
    def hidden_size(self) -> int:
        """Width of the features (the ImageBind out_embed_dim; 1024 for huge)."""
        return self.model.out_embed_dim

    @property
    def output_mode(self) -> str:
        return self.model.output_mode

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> "MultimodalEncoder":
        """Always eval: the encoder is frozen (a parent's ``.train()`` must not switch on drop path/dropout)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, modality: str) -> torch.Tensor:
        if modality not in _ROUTES:
            raise ConfigError(f"unknown encoder modality {modality!r}; expected one of {tuple(_ROUTES)}")
        key, ranks = _ROUTES[modality]
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim not in ranks:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise DataError(f"{modality} input for the encoder must be a tensor of rank {ranks}, got {shape}")
        x = pixel_values.to(device=self.device, dtype=self.dtype)
        features = self.model({key: x})[key]
        if features.ndim == 2:  # pooled mode: one vector per item
            features = features.unsqueeze(1)
        return features


def _read_saved_kwargs(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    if path.suffix != ".safetensors":
        raise ConfigError(f"ImageBind arch '{FROM_CHECKPOINT}' needs a .safetensors checkpoint written by "
                          f"save_imagebind, got {path}")
    if not path.is_file():
        raise CheckpointError(f"{path}: ImageBind checkpoint not found (arch '{FROM_CHECKPOINT}' reads its sizes "
                              "from this file)")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ConfigError(f"{path}: no '{METADATA_KEY}' metadata; pass arch='huge' or a dict of ImageBind kwargs")
    return json.loads(metadata[METADATA_KEY])


def imagebind_kwargs(arch: str | Mapping[str, Any] | None,
                     checkpoint_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """ImageBindModel's constructor kwargs for ``arch``: "huge", "checkpoint" or None (the kwargs that
    ``save_imagebind`` stored in the .safetensors ``checkpoint_path``; only its header is read), or a dict."""
    if arch is None or arch == FROM_CHECKPOINT:
        if checkpoint_path is None:
            raise ConfigError(f"ImageBind arch '{FROM_CHECKPOINT}' needs a .safetensors checkpoint written by "
                              "save_imagebind")
        return _read_saved_kwargs(Path(checkpoint_path))
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ConfigError(f"unknown ImageBind arch {arch!r}; expected one of "
                              f"{(*ARCHS, FROM_CHECKPOINT)} or a dict of kwargs")
        return ARCHS[arch]
    if isinstance(arch, Mapping):
        kwargs = dict(arch)
        kwargs.pop("output_mode", None)
        return kwargs
    raise ConfigError(f"ImageBind arch must be a name or a dict of kwargs, got {type(arch).__name__}")


def build_multimodal_encoder(
    checkpoint_path: str | os.PathLike | None,
    arch: str | Mapping[str, Any] | None = "huge",
    output_mode: str = "tokens",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MultimodalEncoder:
    """Build the frozen encoder: ``arch`` is "huge", "checkpoint" or None (read the kwargs that ``save_imagebind``
    stored in the safetensors file), or a dict of ImageBindModel kwargs. The checkpoint is loaded strictly;
    without one the reference's random initialisation is used (tests, timing)."""
    if output_mode not in OUTPUT_MODES:
        raise ConfigError(f"encoder output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
    kwargs = imagebind_kwargs(arch, checkpoint_path)
    try:
        model = build_imagebind(kwargs, checkpoint_path, output_mode)
    except TypeError as err:  # unknown constructor keyword
        raise ConfigError(f"bad ImageBind arch kwargs: {err}") from err
    model = model.to(device=device, dtype=dtype)
    return MultimodalEncoder(model)


def save_imagebind(model: ImageBindModel | MultimodalEncoder, path: str | os.PathLike) -> Path:
    """Write the model's state dict (float32, reference key names) to a safetensors file, with its constructor
    kwargs as metadata, so that ``build_multimodal_encoder(path, "checkpoint")`` or ``imagebind_huge(path)``
    loads it."""
    from safetensors.torch import save_file

    if isinstance(model, MultimodalEncoder):
        model = model.model
    if not isinstance(model, ImageBindModel):
        raise ConfigError(f"save_imagebind expects an ImageBindModel or MultimodalEncoder, got {type(model).__name__}")
    out = Path(path)
    if out.suffix != ".safetensors":
        raise ConfigError(f"{out}: save_imagebind writes a .safetensors file")
    if any(v.is_meta for v in model.state_dict().values()):
        raise CheckpointError(f"{out}: the model has unmaterialised (meta) tensors; nothing to save")
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"format": "pt", METADATA_KEY: json.dumps(model.config)})
    return out


__all__ = [
    "FROM_CHECKPOINT",
    "MultimodalEncoder",
    "build_multimodal_encoder",
    "imagebind_kwargs",
    "preprocess",
    "save_imagebind",
]
