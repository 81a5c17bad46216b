"""Q-Former projector (BLIP-2 style), usable on both sides of the LLM.

Learned query tokens self-attend and cross-attend (every layer) to the projected source tokens through
transformers' `Blip2QFormerModel` (query branch only: no word / position embeddings, no text feed-forward, which is
exactly what the reference deletes from its LAVIS BERT), then a Linear maps the Q-Former width to the target width.

* Output side (`qformer` output kind): `forward(hidden_states, input_embs)` adds the two first, as the reference.
* Input side (`qformer` input kind): `forward(encoder_tokens)`.

A fix (docs/deviations.md): the Q-Former width (`hidden_size`, 768 as BERT-base) and the cross-attention source width
(`encoder_width`, 768 by default, LEGACY's choice) are independent of `out_features`; `out_fc` maps 768 ->
out_features.  The reference initialises the Q-Former from `bert-base-uncased`; no hub is reachable here, so it is
randomly initialised (transformers' BLIP-2 init, std 0.02) unless weights are loaded afterwards.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from nextgpt.errors import ConfigError

__all__ = ["QFormerProjector"]


class QFormerProjector(nn.Module):
    """(N, L, in_features) -> (N, num_query_token, out_features) for any L.

    Parameters: `in_fc` Linear(in_features -> encoder_width), `qformer` (Blip2QFormerModel), `query_tokens`
    (1, Q, hidden_size) ~ N(0, 0.02), `out_fc` Linear(hidden_size -> out_features).  Defaults follow the
    reference's Q-Former (BERT-base width, 12 heads, 2 layers, cross-attention in every layer, dropout 0.1).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_query_token: int,
        cross_attention_freq: int = 1,
        num_hidden_layers: int = 2,
        *,
        hidden_size: int = 768,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        encoder_width: int | None = None,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        encoder_width = hidden_size if encoder_width is None else encoder_width
        sizes = {
            "in_features": in_features, "out_features": out_features, "num_query_token": num_query_token,
            "cross_attention_freq": cross_attention_freq, "num_hidden_layers": num_hidden_layers,
            "hidden_size": hidden_size, "num_attention_heads": num_attention_heads,
            "intermediate_size": intermediate_size, "encoder_width": encoder_width,
        }
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"projector 'qformer': {name} must be a positive integer, got {value!r}")
        if hidden_size % num_attention_heads != 0:
            raise ConfigError(
                f"projector 'qformer': hidden_size={hidden_size} is not divisible by "
                f"num_attention_heads={num_attention_heads}"
            )
        self.num_query_token = num_query_token
        config = Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            initializer_range=initializer_range,
            cross_attention_frequency=cross_attention_freq,
            encoder_hidden_size=encoder_width,
        )
        self.in_fc = nn.Linear(in_features, encoder_width)
        self.qformer = Blip2QFormerModel(config)
        self.query_tokens = nn.Parameter(torch.empty(1, num_query_token, hidden_size))
        nn.init.normal_(self.query_tokens, mean=0.0, std=initializer_range)
        self.out_fc = nn.Linear(hidden_size, out_features)

    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    @property
    def dtype(self) -> torch.dtype:
        return self.query_tokens.dtype

    def forward(self, x: torch.Tensor, input_embs: torch.Tensor | None = None) -> torch.Tensor:
        """Output side: (hidden_states, input_embs), summed first.  Input side: (encoder_tokens,)."""
        if input_embs is not None:
            if input_embs.shape != x.shape:
                raise ValueError(
                    f"projector 'qformer': hidden states {tuple(x.shape)} and input embeddings "
                    f"{tuple(input_embs.shape)} must have the same shape"
                )
            x = x + input_embs
        x = self.in_fc(x)
        source_mask = torch.ones(x.shape[:-1], dtype=torch.long, device=x.device)
        queries = self.query_tokens.expand(x.shape[0], -1, -1)
        out = self.qformer(
            query_embeds=queries, encoder_hidden_states=x, encoder_attention_mask=source_mask, return_dict=True
        ).last_hidden_state
        return self.out_fc(out)
