"""The rules of the decode loop that are not the LLM: per-answer state, which signal spans may start, forced
outputs, stop strings and sampling. A signal span is always completed once its first token is out; every other
signal token is never sampled freely (see the `nextgpt.generation` package docstring)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Container

import torch

from ..config import GenerateConfig
from ..constants import MODALITIES
from ..conversation import SepStyle, SignalVocab, get_template
from ..errors import ConfigError
from .types import ForceSpec


@dataclass
class DecodeRow:
    """Decoding state of one answer."""

    prompt_len: int
    tokens: list[int] = field(default_factory=list)
    fed: int = 0  # how many of `tokens` the LLM has seen
    forced: deque = field(default_factory=deque)
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (modality, start, end)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # position in tokens -> hidden state
    done: bool = False
    finish_reason: str = "length"
    text_ids: list[int] = field(default_factory=list)  # tokens outside spans
    marker_at: list[tuple[int, str]] = field(default_factory=list)  # (char offset in text, modality)
    stop_at: int | None = None  # char offset of a stop string in the decoded text

    def count(self, modality: str) -> int:
        return sum(1 for m, _, _ in self.spans if m == modality)

    def in_span(self, position: int) -> bool:
        return any(s <= position < e for _, s, e in self.spans)


def as_force(force: ForceSpec) -> tuple[str, ...]:
    """`force_modality` as a tuple of distinct modalities, in the order given."""
    if force is None:
        return ()
    if isinstance(force, str):
        return (force,)
    return tuple(dict.fromkeys(force))


def stop_strings(template: str) -> list[str]:
    """Text that ends an answer besides EOS: the separator the template puts after an assistant message."""
    conv = get_template(template)
    if conv.sep_style in (SepStyle.TWO, SepStyle.LLAMA_2):
        return [conv.sep2] if conv.sep2 else []
    return [conv.sep] if conv.sep else []


def check_force(force: tuple[str, ...], opts: GenerateConfig, signal: SignalVocab, decoders: Container[str]) -> None:
    """ConfigError unless every forced modality has a decoder and all forced spans fit in max_new_tokens."""
    for m in force:
        if m not in MODALITIES:
            raise ConfigError(f"force_modality must be among {list(MODALITIES)}, got {m!r}")
        if m not in decoders:
            raise ConfigError(f"cannot force a {m} output: the model has no {m} decoder")
    if force and opts.max_outputs_per_modality < 1:
        raise ConfigError("force_modality needs max_outputs_per_modality >= 1")
    need = sum(signal.span_length(m) for m in force)
    if need > opts.max_new_tokens:
        raise ConfigError(f"max_new_tokens={opts.max_new_tokens} cannot hold the forced output(s) "
                          f"{', '.join(force)} ({need} signal tokens)")


def pending(row: DecodeRow, force: tuple[str, ...]) -> list[str]:
    """The forced modalities the answer still lacks."""
    return [m for m in force if row.count(m) == 0]


def allowed_starts(row: DecodeRow, opts: GenerateConfig, force: tuple[str, ...], signal: SignalVocab,
                   decoders: Container[str]) -> dict[int, str]:
    """First signal ids the model may choose now → their modality. A span must fit in what is left of
    max_new_tokens next to the forced outputs still missing."""
    room = opts.max_new_tokens - len(row.tokens)
    missing = pending(row, force)
    reserve = sum(signal.span_length(m) for m in missing)
    allowed = {}
    for m in MODALITIES:
        if m not in decoders or row.count(m) >= opts.max_outputs_per_modality:
            continue
        need = reserve + (0 if m in missing else signal.span_length(m))
        if need <= room:
            allowed[signal.token_ids[m][0]] = m
    return allowed


def sample(logits: torch.Tensor, opts: GenerateConfig, generator: torch.Generator) -> int:
    """Greedy when temperature is 0 or top_k is 1 (the reference's default), else temperature → top-k → top-p
    (transformers' logits warpers, in the order its `generate` applies them) and a draw from `generator`."""
    if opts.temperature == 0 or opts.top_k == 1:
        return int(torch.argmax(logits))
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    scores = logits[None]
    scores = TemperatureLogitsWarper(opts.temperature)(None, scores)
    if opts.top_k > 0:
        scores = TopKLogitsWarper(opts.top_k)(None, scores)
    if opts.top_p < 1.0:
        scores = TopPLogitsWarper(opts.top_p)(None, scores)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator)[0, 0])
