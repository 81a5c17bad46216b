"""Distributed, resumable batch sampler that groups training samples by modality and length.

The reference groups samples LLaVA-style: shuffle, cut into "megabatches" of one optimizer step
(micro batch x world size x gradient-accumulation steps), sort each megabatch by length and split it into
micro-batches of balanced total length, then shuffle the megabatches of the multimodal and the text-only pools
together. It decided "multimodal" from keys the data does not have, mixed modalities in its leftover
megabatch, returned a batch sampler where HF expected an index sampler and was not resumable.

Here every sample carries an explicit modality key (e.g. ``"image"``, ``"video"``, ``"audio"``, ``"text"``; the
dataset decides), and:

* with grouping on, every global batch (one optimizer step over all ranks) holds samples of ONE modality; inside a
  global batch samples are sorted by length (descending) and dealt into micro-batches of balanced total length
  (the reference's ``split_to_even_chunks``); the global batches of all modalities are shuffled together;
* with grouping off, it is a plain seeded shuffle cut into global batches;
* micro-batch ``j`` of a global batch goes to rank ``j % world_size`` as accumulation step ``j // world_size``
  (the layout HF/accelerate give the reference's flat list), so all ranks see the same global order and disjoint
  samples;
* the order is a pure function of ``(seed, epoch)``; ``position`` counts the global batches (optimizer steps)
  already consumed in the epoch, so a restored sampler yields exactly the remainder of an uninterrupted run. The
  position is in global batches, not per-rank samples, so it stays valid if a run resumes with a different world
  size but the same global batch size (the order depends only on the global batch size).

It is a *batch* sampler (it yields this rank's micro-batches as lists of dataset indices), used as
``DataLoader(dataset, batch_sampler=sampler, ...)``: the micro-batch boundaries are what make batches
single-modality, so they are fixed here rather than left to a DataLoader ``batch_size`` that could disagree, and
resuming skips whole batches.

Incomplete global batches: with ``drop_last=True`` each modality's last incomplete global batch is dropped (each
sample is used at most once per epoch); with ``drop_last=False`` it is completed by repeating that modality's
samples from the start of its shuffled order (each sample at least once), as ``DistributedSampler`` pads.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from nextgpt.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["ModalityGroupedBatchSampler", "split_to_even_chunks"]


def split_to_even_chunks(indices: Sequence[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal ``indices`` into ``num_chunks`` chunks of equal size and balanced total length.

    Each index goes to the chunk with the smallest total length that is not yet full (the reference's greedy rule).
    If the count is not divisible by ``num_chunks`` it falls back to a strided split, as the reference does.
    """
    if len(indices) % num_chunks:
        return [list(indices[i::num_chunks]) for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        k = totals.index(min(totals))
        chunks[k].append(index)
        totals[k] += lengths[index]
        if len(chunks[k]) == per_chunk:
            totals[k] = math.inf
    return chunks


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class ModalityGroupedBatchSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of dataset indices); see the module docstring.

    Args:
        modalities: one modality key per sample (any string; samples with equal keys may share a batch).
        lengths: one non-negative length per sample (e.g. word or token count), used to sort within a global
            batch; ``None`` means all equal (no length sorting).
        micro_batch_size: samples per rank per forward pass.
        world_size, rank: data-parallel size and this process's rank.
        gradient_accumulation_steps: micro-batches per rank per optimizer step.
        seed: base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        drop_last: drop (True) or complete by repetition (False) each pool's last incomplete global batch.
        group_by_modality: single-modality, length-grouped global batches (True) or a plain shuffle (False).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        lengths: Sequence[int] | None,
        micro_batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        gradient_accumulation_steps: int = 1,
        seed: int = 42,
        drop_last: bool = True,
        group_by_modality: bool = True,
    ) -> None:
        self.micro_batch_size = _positive_int("micro_batch_size", micro_batch_size)
        self.world_size = _positive_int("world_size", world_size)
        self.gradient_accumulation_steps = _positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.world_size:
            raise ConfigError(f"rank must be an integer in [0, world_size={self.world_size}), got {rank!r}")
        self.rank = int(rank)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.group_by_modality = bool(group_by_modality)

        self.modalities = [str(m) for m in modalities]
        n = len(self.modalities)
        if n == 0:
            raise DataError("cannot sample from an empty dataset (no modalities given)")
        if lengths is None:
            self.lengths = [1] * n
        else:
            if len(lengths) != n:
                raise DataError(f"got {n} modalities but {len(lengths)} lengths")
            self.lengths = [int(x) for x in lengths]
            bad = [i for i, x in enumerate(self.lengths) if x < 0]
            if bad:
                raise DataError(f"lengths must be non-negative; sample {bad[0]} has length {self.lengths[bad[0]]}")

        # sorted keys: the pool order (and so the result) does not depend on the order samples first appear
        self.pools: dict[str, np.ndarray] = {}
        for key in sorted(set(self.modalities)):
            self.pools[key] = np.array([i for i, m in enumerate(self.modalities) if m == key], dtype=np.int64)

        self.epoch = 0
        self.position = 0
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"no complete global batch: {n} samples, global batch size {self.global_batch_size} "
                f"(micro {self.micro_batch_size} x world {self.world_size} x accumulation "
                f"{self.gradient_accumulation_steps}), drop_last={self.drop_last}, "
                f"group_by_modality={self.group_by_modality}; pool sizes {self.pool_sizes}"
            )
        if self.drop_last:
            dropped = {k: v for k, v in self.dropped_per_epoch.items() if v}
            if dropped:
                logger.info("sampler drops %s samples per epoch (incomplete global batches)", dropped)

    # ------------------------------------------------------------------------------------------------------------
    # sizes
    # ------------------------------------------------------------------------------------------------------------
    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step over all ranks."""
        return self.micro_batch_size * self.world_size * self.gradient_accumulation_steps

    @property
    def pool_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.pools.items()}

    def _pool_counts(self) -> dict[str, int]:
        if self.group_by_modality:
            return self.pool_sizes
        return {"*": len(self.modalities)}

    def _batches_in(self, count: int) -> int:
        g = self.global_batch_size
        return count // g if self.drop_last else -(-count // g)

    @property
    def steps_per_epoch(self) -> int:
        """Global batches (optimizer steps) per epoch."""
        return sum(self._batches_in(c) for c in self._pool_counts().values())

    @property
    def dropped_per_epoch(self) -> dict[str, int]:
        """Samples left out per epoch by ``drop_last``, per pool (``"*"`` when grouping is off)."""
        g = self.global_batch_size
        return {k: (c % g if self.drop_last else 0) for k, c in self._pool_counts().items()}

    def __len__(self) -> int:
        """Micro-batches this rank yields over a whole epoch (stable, for schedules; a resumed iteration yields
        ``(steps_per_epoch - position) * gradient_accumulation_steps``)."""
        return self.steps_per_epoch * self.gradient_accumulation_steps

    # ------------------------------------------------------------------------------------------------------------
    # order
    # ------------------------------------------------------------------------------------------------------------
    def _fit(self, shuffled: np.ndarray) -> np.ndarray:
        """Cut (drop_last) or cyclically extend the shuffled pool to a whole number of global batches."""
        g = self.global_batch_size
        size = self._batches_in(len(shuffled)) * g
        return shuffled[:size] if size <= len(shuffled) else np.resize(shuffled, size)

    def _split(self, global_batch: list[int], by_length: bool) -> list[list[int]]:
        chunks = self.world_size * self.gradient_accumulation_steps
        if by_length:
            ordered = sorted(global_batch, key=lambda i: -self.lengths[i])  # stable: ties keep the shuffled order
            return split_to_even_chunks(ordered, self.lengths, chunks)
        b = self.micro_batch_size
        return [global_batch[k * b : (k + 1) * b] for k in range(chunks)]

    def epoch_batches(self, epoch: int) -> list[list[list[int]]]:
        """The whole epoch for all ranks: a list of global batches, each a list of ``world_size x accumulation``
        micro-batches (micro-batch ``j`` belongs to rank ``j % world_size``). A pure function of (seed, epoch)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be non-negative, got {epoch}")
        rng = np.random.default_rng([self.seed, int(epoch)])
        g = self.global_batch_size
        batches: list[list[list[int]]] = []
        if self.group_by_modality:
            for pool in self.pools.values():
                order = self._fit(pool[rng.permutation(len(pool))])
                for s in range(0, len(order), g):
                    batches.append(self._split(order[s : s + g].tolist(), by_length=True))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            order = self._fit(rng.permutation(len(self.modalities)))
            for s in range(0, len(order), g):
                batches.append(self._split(order[s : s + g].tolist(), by_length=False))
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        ws = self.world_size
        for gb in self.epoch_batches(self.epoch)[self.position :]:
            for j in range(self.rank, len(gb), ws):
                yield list(gb[j])

    # ------------------------------------------------------------------------------------------------------------
    # epoch and resume state
    # ------------------------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate. Moving to another epoch restarts at position 0; setting the current epoch
        again keeps the position (so ``load_state_dict`` followed by ``set_epoch(saved epoch)`` resumes)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    def advance(self, num_global_batches: int = 1) -> None:
        """Record that the trainer finished ``num_global_batches`` optimizer steps of the current epoch.

        The trainer calls this (rather than the sampler counting what it yields) because DataLoader workers
        prefetch batches ahead of what has been trained on."""
        new = self.position + int(num_global_batches)
        if not 0 <= new <= self.steps_per_epoch:
            raise ConfigError(f"position {new} outside [0, {self.steps_per_epoch}] global batches of epoch {self.epoch}")
        self.position = new

    def state_dict(self) -> dict[str, Any]:
        """``epoch`` and ``position`` (global batches consumed in that epoch), plus what the order depends on."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "num_samples": len(self.modalities),
            "group_by_modality": self.group_by_modality,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``epoch`` and ``position``; the settings the order depends on must match (CheckpointError)."""
        for key in ("epoch", "position"):
            if key not in state:
                raise CheckpointError(f"sampler state lacks {key!r} (has {sorted(state)})")
        mine = self.state_dict()
        for key in ("seed", "global_batch_size", "num_samples", "group_by_modality", "drop_last"):
            if key in state and state[key] != mine[key]:
                raise CheckpointError(
                    f"sampler state was saved with {key}={state[key]!r} but this run has {key}={mine[key]!r}; "
                    "the sample order would differ"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.steps_per_epoch:
            raise CheckpointError(
                f"sampler state epoch={epoch}, position={position} is outside [0, {self.steps_per_epoch}]"
            )
        self.epoch, self.position = epoch, position
