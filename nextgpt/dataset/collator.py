"""Batching: samples (or skip markers) → one plain dict the trainer passes to `NextGPTModel.forward`.

A batch holds the keyword arguments of ``NextGPTModel.forward`` (:data:`FORWARD_KEYS`):

* ``input_ids`` (B, L) long, padded with the tokenizer's pad id; ``labels`` (B, L) padded with −100;
  ``attention_mask`` (B, L) long, 1 on real positions. L is the batch's longest sample: no fixed cut (the
  reference cut every batch to 1024 tokens; the dataset already keeps samples within max_length);
* ``media[m]``: encoder inputs of all m-items of the batch, concatenated in order (row by row, placeholder order):
  image (N, 3, 224, 224), video (N, 15, 3, 2, 224, 224), audio (N, 3, 1, 128, 204);
* ``features[m]``: with a feature cache, the cached encoder features of the m-items of samples whose m-items were
  all cached (N_c, T, D), and ``feature_mask[m]`` (N,) bool, True for those rows among all N m-items in order
  (the model encodes ``media[m]`` for the others and puts both back in order);
* ``caption_embeddings[m]``: one per m-signal span, in span order: image/video (S, 77, D), audio (S, D)
  (float16 as stored); or ``captions[m]`` (list of S strings) with ``data.caption_embeddings: online``;
* ``targets[m]``: decoder targets, one per m-span (only for requested modalities, and only when EVERY m-span of the
  batch has one — otherwise left out for that batch, noted in ``incomplete_targets``);

plus bookkeeping: ``ids`` and ``modalities`` (per kept sample), ``num_samples``, ``num_skipped``, ``skipped``
(list of (sample id, reason)), ``num_truncated``, ``num_cache_fallbacks`` (items decoded because the feature
cache lacked them). Skip markers are dropped here and only counted, which is how
counts made in DataLoader workers reach the main process. A batch whose samples were all skipped is still a valid
batch with ``num_samples == 0`` and (0, 0) tensors (:func:`is_empty_batch`).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import torch

from ..constants import IGNORE_INDEX, MODALITIES
from ..errors import DataError
from .samples import SkippedSample

logger = logging.getLogger(__name__)

__all__ = ["DataCollator", "FORWARD_KEYS", "SkipStats", "is_empty_batch", "model_inputs"]

FORWARD_KEYS = ("input_ids", "attention_mask", "labels", "media", "features", "feature_mask", "caption_embeddings",
                "captions", "targets")


def _cat(tensors: list[torch.Tensor], what: str, ids: list[str]) -> torch.Tensor:
    try:
        return torch.cat(tensors, dim=0)
    except RuntimeError as err:
        shapes = sorted({tuple(t.shape[1:]) for t in tensors})
        raise DataError(f"cannot batch {what} of shapes {shapes} (samples {', '.join(ids)}): {err}") from None


class DataCollator:
    """`collate_fn` for the DataLoader: see the module docstring."""

    def __init__(self, pad_token_id: int) -> None:
        if pad_token_id is None:
            raise DataError("the tokenizer has no pad token id")
        self.pad_token_id = int(pad_token_id)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "DataCollator":
        return cls(tokenizer.pad_token_id)

    def __call__(self, instances: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
        samples = [s for s in instances if not isinstance(s, SkippedSample)]
        skipped = [(s.sample_id, s.reason) for s in instances if isinstance(s, SkippedSample)]
        ids = [s["id"] for s in samples]
        batch_size = len(samples)
        length = max((len(s["input_ids"]) for s in samples), default=0)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = sample["input_ids"]
            labels[row, :n] = sample["labels"]
            attention_mask[row, :n] = 1

        media, features, feature_mask, caption_embeddings, captions, targets = {}, {}, {}, {}, {}, {}
        incomplete = []
        for m in MODALITIES:
            parts = [(s["id"], s["media"][m]) for s in samples if m in s.get("media", {})]
            if parts:
                media[m] = _cat([t for _, t in parts], f"{m} inputs", [i for i, _ in parts])
            cached = [(s["id"], s["features"][m]) for s in samples if m in s.get("features", {})]
            if cached:
                features[m] = _cat([t for _, t in cached], f"{m} cached features", [i for i, _ in cached])
                rows = [(len(s["features"][m]), True) if m in s.get("features", {}) else (len(s["media"][m]), False)
                        for s in samples if m in s.get("features", {}) or m in s.get("media", {})]
                feature_mask[m] = torch.cat([torch.full((n,), flag, dtype=torch.bool) for n, flag in rows])
            parts = [(s["id"], s["caption_embeddings"][m]) for s in samples if m in s.get("caption_embeddings", {})]
            if parts:
                caption_embeddings[m] = _cat([t for _, t in parts], f"{m} caption embeddings", [i for i, _ in parts])
            texts = [c for s in samples for c in s.get("captions", {}).get(m, [])]
            if texts:
                captions[m] = texts
            parts = [(s["id"], s["targets"][m]) for s in samples if m in s.get("targets", {})]
            if parts:
                spans = sum(s["spans"].get(m, 0) for s in samples)
                have = sum(len(t) for _, t in parts)
                if have == spans:
                    targets[m] = _cat([t for _, t in parts], f"{m} targets", [i for i, _ in parts])
                else:
                    incomplete.append(m)
                    logger.debug("batch %s: %d of %d %s spans have targets; targets left out", ids, have, spans, m)

        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "media": media,
            "features": features,
            "feature_mask": feature_mask,
            "caption_embeddings": caption_embeddings,
            "captions": captions,
            "targets": targets,
            "ids": ids,
            "modalities": [s["modality"] for s in samples],
            "num_samples": batch_size,
            "num_skipped": len(skipped),
            "skipped": skipped,
            "num_truncated": sum(bool(s.get("truncated")) for s in samples),
            "num_cache_fallbacks": sum(s.get("cache_fallbacks", 0) for s in samples),
            "incomplete_targets": incomplete,
        }


def is_empty_batch(batch: dict[str, Any]) -> bool:
    """True when every sample of the batch was skipped (nothing to train on)."""
    return batch["num_samples"] == 0


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `NextGPTModel.forward` from a batch (bookkeeping left out)."""
    return {key: batch[key] for key in FORWARD_KEYS}


class SkipStats:
    """Accumulates the bookkeeping of the batches of an epoch for the trainer's summary line."""

    def __init__(self, max_examples: int = 10) -> None:
        self.max_examples = max_examples
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.truncated = 0
        self.cache_fallbacks = 0
        self.empty_batches = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[tuple[str, str]] = []

    def update(self, batch: dict[str, Any]) -> None:
        self.samples += batch["num_samples"]
        self.truncated += batch["num_truncated"]
        self.cache_fallbacks += batch.get("num_cache_fallbacks", 0)
        self.empty_batches += is_empty_batch(batch)
        for sample_id, reason in batch["skipped"]:
            self.reasons[reason] += 1
            if len(self.examples) < self.max_examples:
                self.examples.append((sample_id, reason))

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "skipped": self.skipped, "skipped_by_reason": dict(self.reasons),
                "truncated": self.truncated, "cache_fallbacks": self.cache_fallbacks,
                "empty_batches": self.empty_batches, "examples": [f"{i} ({r})" for i, r in self.examples]}

    def __str__(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items())) or "none"
        return (f"{self.samples} samples, {self.skipped} skipped ({reasons}), {self.truncated} truncated, "
                f"{self.cache_fallbacks} feature-cache fallbacks, {self.empty_batches} empty batches")
