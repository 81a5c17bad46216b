"""The LEGACY data order: one dataset per batch, datasets in turn, every dataset oversampled to the largest.

The 2023 release (`dataset/samplers.py`, `DistributedMultiDatasetBatchSampler`) walks the configured datasets
round-robin: global batch 1 from dataset 0, batch 2 from dataset 1, …, then dataset 0 again. Each dataset is read
in its own shuffled order, whole batches only; when it runs out it is reshuffled and read again, so every dataset
is oversampled to the length of the largest. An epoch has ``ceil(largest / global batch)`` rounds of one batch per
dataset, i.e. ``largest × number of datasets`` samples when the global batch divides the largest dataset (the
release's ``train_num``, from which it sets the WarmupDecayLR length).

As `ModalityGroupedBatchSampler`: it is a batch sampler yielding this rank's micro-batches (micro-batch ``j`` of a
global batch goes to rank ``j % world_size`` as accumulation step ``j // world_size``), the order is a pure
function of ``(seed, epoch)``, and ``position`` (global batches consumed, advanced by the trainer) makes a resumed
run yield exactly the remainder of the epoch. Batches are computed lazily (a 7B LEGACY epoch has millions of
samples); only the current permutation of each dataset is kept.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from nextgpt.errors import CheckpointError, ConfigError

__all__ = ["RoundRobinBatchSampler"]


class RoundRobinBatchSampler(Sampler[list[int]]):
    """Args: `dataset_sizes` (samples per dataset, in the concatenation's order), micro batch, world size, rank,
    accumulation steps and seed as `ModalityGroupedBatchSampler`."""

    def __init__(self, dataset_sizes: Sequence[int], micro_batch_size: int, world_size: int = 1, rank: int = 0,
                 gradient_accumulation_steps: int = 1, seed: int = 42) -> None:
        for name, value in (("micro_batch_size", micro_batch_size), ("world_size", world_size),
                            ("gradient_accumulation_steps", gradient_accumulation_steps)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        self.micro_batch_size, self.world_size, self.rank = int(micro_batch_size), int(world_size), int(rank)
        self.gradient_accumulation_steps, self.seed = int(gradient_accumulation_steps), int(seed)
        self.sizes = [int(n) for n in dataset_sizes]
        if not self.sizes:
            raise ConfigError("the round-robin sampler needs at least one dataset")
        small = [i for i, n in enumerate(self.sizes) if n < self.global_batch_size]
        if small:
            raise ConfigError(f"round-robin sampling needs at least one global batch ({self.global_batch_size} "
                              f"samples) per dataset; dataset(s) {small} have {[self.sizes[i] for i in small]}")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.epoch = 0
        self.position = 0
        self._perms: dict[tuple[int, int, int], np.ndarray] = {}

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.world_size * self.gradient_accumulation_steps

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch: ceil(largest / global batch) rounds x number of datasets."""
        return math.ceil(max(self.sizes) / self.global_batch_size) * len(self.sizes)

    def __len__(self) -> int:
        return self.steps_per_epoch * self.gradient_accumulation_steps

    def _permutation(self, epoch: int, dataset: int, cycle: int) -> np.ndarray:
        key = (epoch, dataset, cycle)
        if key not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k[:2] != key[:2]}  # one per dataset
            rng = np.random.default_rng([self.seed, epoch, dataset, cycle])
            self._perms[key] = rng.permutation(self.sizes[dataset])
        return self._perms[key]

    def global_batch(self, epoch: int, step: int) -> list[list[int]]:
        """Global batch `step` of `epoch` as its ``world_size x accumulation`` micro-batches (concat indices)."""
        k = len(self.sizes)
        dataset, batch = step % k, step // k
        per_cycle = self.sizes[dataset] // self.global_batch_size  # whole batches per pass (drop_last)
        cycle, within = divmod(batch, per_cycle)
        g = self.global_batch_size
        order = self._permutation(epoch, dataset, cycle)[within * g:(within + 1) * g] + self.offsets[dataset]
        b = self.micro_batch_size
        return [order[j * b:(j + 1) * b].tolist() for j in range(self.world_size * self.gradient_accumulation_steps)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.position, self.steps_per_epoch):
            micro = self.global_batch(self.epoch, step)
            for j in range(self.rank, len(micro), self.world_size):
                yield micro[j]

    # ------------------------------------------------------------------------------ epoch and resume state

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def advance(self, num_global_batches: int = 1) -> None:
        new = self.position + int(num_global_batches)
        if not 0 <= new <= self.steps_per_epoch:
            raise ConfigError(f"position {new} outside [0, {self.steps_per_epoch}] global batches of epoch {self.epoch}")
        self.position = new

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "kind": "round_robin",
                "global_batch_size": self.global_batch_size, "dataset_sizes": list(self.sizes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "kind", "global_batch_size", "dataset_sizes"):
            if state.get(key) != mine[key]:
                raise CheckpointError(f"sampler state was saved with {key}={state.get(key)!r} but this run has "
                                      f"{key}={mine[key]!r}; the sample order would differ")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.steps_per_epoch:
            raise CheckpointError(f"sampler state epoch={epoch}, position={position} is outside "
                                  f"[0, {self.steps_per_epoch}]")
        self.epoch, self.position = epoch, position
