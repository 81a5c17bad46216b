"""Build input and output projectors from a kind name, sizes and options (the config's projector sections).

Input projectors map encoder tokens (B, L, in_dim) to LLM tokens:
    linear   Linear(in_dim -> out_dim) per token (NEW `linear`; LEGACY `llama_proj` on the pooled (B, 1, 1024))
    mlp      Linear, GELU, Linear per token (`num_layers` option, 2 by default)
    group    GroupProjector: any L -> 8 tokens (options: GroupProjector's keyword arguments)
    qformer  QFormerProjector: any L -> `num_query_tokens` tokens (default 32; other QFormerProjector options)
    identity passthrough, only when in_dim == out_dim

Output projectors map (hidden_states, input_embs), both (N, L, in_dim), to (N, num_query_tokens, out_features):
    transformer  TransformersProjector (the reference's choice)
    linear       LinearOutputProjector (option `num_input_tokens` = span length when it differs from the queries)
    qformer      QFormerProjector
"""
from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from nextgpt.errors import ConfigError

from .group import GroupProjector
from .mlp import MLPProjector
from .output import LinearOutputProjector, TransformersProjector
from .qformer import QFormerProjector

__all__ = ["INPUT_PROJECTOR_KINDS", "OUTPUT_PROJECTOR_KINDS", "build_input_projector", "build_output_projector"]

INPUT_PROJECTOR_KINDS = ("linear", "mlp", "group", "qformer", "identity")
OUTPUT_PROJECTOR_KINDS = ("transformer", "linear", "qformer")
DEFAULT_INPUT_QFORMER_QUERIES = 32  # BLIP-2's number of query tokens


def _check_size(side: str, kind: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{side} projector {kind!r}: {name} must be a positive integer, got {value!r}")


def _check_options(side: str, kind: str, cls: type, options: dict[str, Any], fixed: tuple[str, ...]) -> None:
    """Reject option names the constructor does not take (or that the builder sets itself)."""
    accepted = {
        name for name, p in inspect.signature(cls).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in fixed
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"{side} projector {kind!r}: unknown option(s) {unknown}; accepted: {sorted(accepted) or 'none'}"
        )


def build_input_projector(kind: str, in_dim: int, out_dim: int, **options: Any) -> nn.Module:
    """Input projector of `kind` from encoder width `in_dim` (1024 for ImageBind) to LLM width `out_dim`."""
    if kind not in INPUT_PROJECTOR_KINDS:
        raise ConfigError(f"unknown input projector kind {kind!r}; expected one of {list(INPUT_PROJECTOR_KINDS)}")
    _check_size("input", kind, "in_dim", in_dim)
    _check_size("input", kind, "out_dim", out_dim)
    if kind in ("linear", "identity"):
        if options:
            raise ConfigError(f"input projector {kind!r} takes no options, got {sorted(options)}")
        if kind == "linear":
            return nn.Linear(in_dim, out_dim)
        if in_dim != out_dim:
            raise ConfigError(f"input projector 'identity' needs in_dim == out_dim, got {in_dim} and {out_dim}")
        return nn.Identity()
    if kind == "mlp":
        _check_options("input", kind, MLPProjector, options, ("in_features", "out_features"))
        return MLPProjector(in_dim, out_dim, **options)
    if kind == "group":
        _check_options("input", kind, GroupProjector, options, ("in_features", "out_features"))
        return GroupProjector(in_dim, out_dim, **options)
    options = dict(options)
    num_queries = options.pop("num_query_tokens", DEFAULT_INPUT_QFORMER_QUERIES)
    _check_size("input", kind, "num_query_tokens", num_queries)
    _check_options("input", kind, QFormerProjector, options, ("in_features", "out_features", "num_query_token"))
    return QFormerProjector(in_dim, out_dim, num_queries, **options)


_OUTPUT_CLASSES: dict[str, type] = {
    "transformer": TransformersProjector,
    "linear": LinearOutputProjector,
    "qformer": QFormerProjector,
}


def build_output_projector(
    kind: str, in_dim: int, out_features: int, num_query_tokens: int, **options: Any
) -> nn.Module:
    """Output projector of `kind`: LLM width `in_dim` -> `num_query_tokens` x `out_features` decoder conditioning.

    The result is called as `projector(hidden_states, input_embs)` with two (N, L, in_dim) tensors.
    """
    if kind not in _OUTPUT_CLASSES:
        raise ConfigError(f"unknown output projector kind {kind!r}; expected one of {list(OUTPUT_PROJECTOR_KINDS)}")
    _check_size("output", kind, "in_dim", in_dim)
    _check_size("output", kind, "out_features", out_features)
    _check_size("output", kind, "num_query_tokens", num_query_tokens)
    cls = _OUTPUT_CLASSES[kind]
    _check_options("output", kind, cls, options, ("in_features", "out_features", "num_query_token"))
    return cls(in_dim, out_features, num_query_tokens, **options)
