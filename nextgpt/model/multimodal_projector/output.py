"""Output projectors: signal-token hidden states -> conditioning embeddings of a diffusion decoder.

Every output projector is called as `projector(hidden_states, input_embs)` with both tensors (N, L, in_features):
the LLM hidden states over a signal-token span and the LLM *input* embeddings of the same span's tokens.  It
returns (N, Q, out_features), Q = `num_query_token` (77 text-encoder positions for SD / ZeroScope, 1 CLAP vector
for AudioLDM).

* `TransformersProjector` (`transformer`, used by every reference script): NEW's class of the same name and
  LEGACY's `TextFcLayer(mode='transformer')`.
* `LinearOutputProjector` (`linear`): the reference's per-token Linear, made callable.
* the Q-Former kind lives in `qformer.py`.
"""
from __future__ import annotations

import re
import warnings

import torch
import torch.nn as nn

from nextgpt.errors import CheckpointError, ConfigError

__all__ = ["TransformersProjector", "LinearOutputProjector", "legacy_textfc_key_map"]


def _require_positive(kind: str, **sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"output projector {kind!r}: {name} must be a positive integer, got {value!r}")


def _require_same_shape(kind: str, x: torch.Tensor, input_embs: torch.Tensor) -> None:
    if x.shape != input_embs.shape:
        raise ValueError(
            f"output projector {kind!r}: hidden states {tuple(x.shape)} and input embeddings "
            f"{tuple(input_embs.shape)} must have the same shape"
        )


class TransformersProjector(nn.Module):
    """`in_fc` (in -> 512), `nn.Transformer` (4 + 4 pre-LN layers, 4 heads, FF 2048, no dropout, no positional
    encodings) with learnable queries `query_embs` as the decoder input, `out_fc` (512 -> out_features).

    Forward: x = in_fc(x + input_embs); y = tfm(src=x, tgt=query_embs repeated over the batch); out_fc(y).

    Deviation: the reference (NEW) zero-initialises `query_embs`, so all queries are identical at
    init and, with no positional encodings anywhere, stay interchangeable.  They are drawn from N(0, std²) with
    `query_init_std` = 1.0 by default, which is LEGACY's `torch.randn` init (the init of the only released,
    trained weights, `7b_tiva_v0`).  The keyword-only sizes after `num_query_token` are additions for tiny
    configurations; their defaults are the reference's.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_query_token: int,
        *,
        hidden_dim: int = 512,
        num_heads: int = 4,
        num_encoder_layers: int = 4,
        num_decoder_layers: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        query_init_std: float = 1.0,
        **kwargs: object,
    ) -> None:
        super().__init__()
        if kwargs:
            # The reference accepts and ignores extra keyword arguments; we say so instead of hiding typos.
            raise ConfigError(f"output projector 'transformer': unknown option(s) {sorted(kwargs)}")
        _require_positive(
            "transformer", in_features=in_features, out_features=out_features, num_query_token=num_query_token,
            hidden_dim=hidden_dim, num_heads=num_heads,
        )
        if hidden_dim % num_heads != 0:
            raise ConfigError(
                f"output projector 'transformer': hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}"
            )
        if query_init_std <= 0:
            raise ConfigError(
                f"output projector 'transformer': query_init_std must be > 0 (identical queries), got {query_init_std}"
            )
        self.num_query_token = num_query_token
        self.in_fc = nn.Linear(in_features, hidden_dim)
        with warnings.catch_warnings():
            # torch warns that the nested-tensor fast path is off because norm_first=True: expected, irrelevant.
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            self.tfm = nn.Transformer(
                d_model=hidden_dim,
                nhead=num_heads,
                num_encoder_layers=num_encoder_layers,
                num_decoder_layers=num_decoder_layers,
                dim_feedforward=hidden_dim * 4 if dim_feedforward is None else dim_feedforward,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
            )
        self.out_fc = nn.Linear(hidden_dim, out_features)
        self.query_embs = nn.Parameter(torch.empty(1, num_query_token, hidden_dim))
        nn.init.normal_(self.query_embs, mean=0.0, std=query_init_std)

    @property
    def device(self) -> torch.device:
        return self.query_embs.device

    @property
    def dtype(self) -> torch.dtype:
        return self.query_embs.dtype

    def forward(self, x: torch.Tensor, input_embs: torch.Tensor) -> torch.Tensor:
        """(N, L, in_features) twice -> (N, num_query_token, out_features), for any L >= 1."""
        _require_same_shape("transformer", x, input_embs)
        x = self.in_fc(x + input_embs)
        x = self.tfm(x, self.query_embs.repeat(x.shape[0], 1, 1))
        return self.out_fc(x)


class LinearOutputProjector(nn.Module):
    """`linear` output kind: x + input_embs, a per-token Linear(in -> out_features) (`fc`), then exactly
    `num_query_token` outputs.

    A fix (docs/deviations.md; the reference's bare Linear cannot take the two arguments it is called with, and LEGACY's
    `linear` branch never runs).  How L span tokens become Q outputs:
    * `num_input_tokens` = L is fixed at construction (the signal-span length: NEW 2n-1, LEGACY n), defaulting
      to Q;
    * L == Q: one output per span token, nothing else (the reference's per-token map);
    * L != Q: a learned token-mixing Linear(L -> Q) over the token axis (`token_mix`, MLP-Mixer style), applied
      after `fc`.  It starts as the average of the span tokens for every query, plus a small random part, so
      queries differ at init.
    A span of another length raises ValueError.
    """

    def __init__(
        self, in_features: int, out_features: int, num_query_token: int, *, num_input_tokens: int | None = None
    ) -> None:
        super().__init__()
        num_input_tokens = num_query_token if num_input_tokens is None else num_input_tokens
        _require_positive(
            "linear", in_features=in_features, out_features=out_features, num_query_token=num_query_token,
            num_input_tokens=num_input_tokens,
        )
        self.num_query_token = num_query_token
        self.num_input_tokens = num_input_tokens
        self.fc = nn.Linear(in_features, out_features)
        self.token_mix: nn.Linear | None = None
        if num_input_tokens != num_query_token:
            self.token_mix = nn.Linear(num_input_tokens, num_query_token)
            with torch.no_grad():
                nn.init.normal_(self.token_mix.weight, mean=1.0 / num_input_tokens, std=0.02)
                nn.init.zeros_(self.token_mix.bias)

    def forward(self, x: torch.Tensor, input_embs: torch.Tensor) -> torch.Tensor:
        """(N, num_input_tokens, in_features) twice -> (N, num_query_token, out_features)."""
        _require_same_shape("linear", x, input_embs)
        if x.shape[1] != self.num_input_tokens:
            raise ValueError(
                f"output projector 'linear' was built for spans of {self.num_input_tokens} tokens "
                f"(num_input_tokens), got {x.shape[1]}"
            )
        out = self.fc(x + input_embs)
        if self.token_mix is not None:
            out = self.token_mix(out.transpose(1, 2)).transpose(1, 2)
        return out


# LEGACY `TextFcLayer` names -> ours.  Transformer mode: fc / tfm / model / query_embs.  Q-Former mode: fc /
# Qformer.bert.* (a LAVIS BERT) / query_tokens / model, mapped onto `QFormerProjector` (transformers'
# Blip2QFormerModel under `qformer`).
_LEGACY_TOP_LEVEL = {
    "fc": "in_fc", "model": "out_fc", "tfm": "tfm", "query_embs": "query_embs", "query_tokens": "query_tokens"
}
_LAVIS_QFORMER_RULES = [
    (re.compile(r"^Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)$"), r"qformer.layernorm.\1"),
    (re.compile(r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.(.+)$"),
     r"qformer.encoder.layer.\1.\2.attention.\3"),
    (re.compile(r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.(.+)$"),
     r"qformer.encoder.layer.\1.\2.output.\3"),
    (re.compile(r"^Qformer\.bert\.encoder\.layer\.(\d+)\.(intermediate_query|output_query)\.(.+)$"),
     r"qformer.encoder.layer.\1.\2.\3"),
]
# LAVIS keeps a `position_ids` buffer although its position embeddings were deleted: nothing to load it into.
_LEGACY_DROPPED = re.compile(r"^Qformer\.bert\.embeddings\.position_ids$")


def legacy_textfc_key_map(name: str) -> str | None:
    """Map one parameter name of a LEGACY `TextFcLayer` (relative to the layer, e.g. `fc.weight`, `tfm.encoder.
    layers.0.linear1.bias`, `model.bias`, `query_embs`, `Qformer.bert.encoder.layer.0.attention.self.query.weight`)
    to the name in our `TransformersProjector` / `QFormerProjector`.

    Returns None for tensors with no counterpart (LAVIS's `position_ids` buffer).  Raises CheckpointError for a
    name that belongs to neither mode (e.g. the linear mode's `model.0.weight` ModuleList, which LEGACY never ran).
    LEGACY's forward adds `input_embs` exactly as NEW does (x + input_embs before `fc`), so no flag is needed.
    """
    if _LEGACY_DROPPED.match(name):
        return None
    for pattern, replacement in _LAVIS_QFORMER_RULES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    head, _, rest = name.partition(".")
    if head in _LEGACY_TOP_LEVEL and (rest or head in ("query_embs", "query_tokens")):
        if head in ("query_embs", "query_tokens") and rest:
            raise CheckpointError(f"unexpected LEGACY TextFcLayer key {name!r}")
        if head in ("fc", "model") and rest not in ("weight", "bias"):
            raise CheckpointError(f"unexpected LEGACY TextFcLayer key {name!r} (expected {head}.weight / {head}.bias)")
        return _LEGACY_TOP_LEVEL[head] + ("." + rest if rest else "")
    raise CheckpointError(f"unknown LEGACY TextFcLayer key {name!r}")
