"""The one table of floating-point dtypes by name, used by configs, command lines, loaders and converters."""
from __future__ import annotations

import torch

from .errors import ConfigError

#: Canonical names (what command lines offer and configs write) → torch dtypes.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Short forms accepted everywhere a dtype name is read (`train.precision` uses bf16 / fp16 / fp32).
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch dtype from itself or one of its names (``"bf16"``, ``"float16"``, ``"torch.float32"``, ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES) + sorted(_ALIASES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype | str) -> str:
    """The canonical name of a dtype or of one of its names (the inverse of `as_dtype`)."""
    dtype = as_dtype(dtype)
    return next(name for name, value in DTYPES.items() if value == dtype)
