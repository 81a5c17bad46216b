"""`mlp` input projector: Linear(in -> out), then (num_layers - 1) x [GELU, Linear(out -> out)], per token.

The submodule is called `layer` (an nn.Sequential) as in the reference's `MLP`, so its checkpoints
(`layer.0.weight`, `layer.2.weight`, ...) load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nextgpt.errors import ConfigError

__all__ = ["MLPProjector"]


class MLPProjector(nn.Module):
    """(B, L, in_features) -> (B, L, out_features); the reference builds it with num_layers=2."""

    def __init__(self, in_features: int, out_features: int, num_layers: int = 2) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"input projector 'mlp': {name} must be a positive integer, got {value!r}")
        modules: list[nn.Module] = [nn.Linear(in_features, out_features)]
        for _ in range(num_layers - 1):
            modules += [nn.GELU(), nn.Linear(out_features, out_features)]
        self.layer = nn.Sequential(*modules)

    @property
    def device(self) -> torch.device:
        return self.layer[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layer[0].weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)
