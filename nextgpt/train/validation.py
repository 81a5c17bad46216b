"""Validation during training: every loss component on held-out data (`data.eval_datasets`), without updating
anything, every `train.eval_every` optimizer steps and at the end of the stage.

The held-out datasets are read like the training data (same sample options, decoder targets included), in fixed
micro-batches dealt round-robin to the ranks, each sample once. Each component is averaged over the whole held-out
set (supervised tokens, signal spans, denoising samples over all batches and ranks), and the total is the
loss-weighted sum of the component averages, as in training. The denoising noise and timesteps come from a fixed
seed, so values at different steps are comparable; the training RNG state is left untouched (exact resume).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch

from ..config import Config
from ..constants import MODALITIES
from ..errors import ConfigError
from ..dataset.collator import model_inputs
from .batches import NORMALIZER_KEYS, all_reduce, loss_normalizers, to_device

logger = logging.getLogger(__name__)

__all__ = ["Validator", "weighted_total"]


def weighted_total(config: Config, means: dict[str, float]) -> float:
    """The training total's weighting applied to component averages."""
    losses = config.train.losses
    total = losses.text_weight * means.get("text", 0.0)
    for m in MODALITIES:
        cfg = getattr(losses, m)
        total += cfg.caption_weight * means.get(f"{m}_caption", 0.0)
        total += cfg.denoise_weight * means.get(f"{m}_denoise", 0.0)
    return total


class Validator:
    """Built once per run (`dataset_args`: the keyword arguments the training data was built with)."""

    def __init__(self, config: Config, dataset_args: dict[str, Any], rank: int, world: int):
        from torch.utils.data import DataLoader

        from ..dataset import DataCollator, build_train_dataset

        self.config = config
        data = dataclasses.replace(config.data, datasets=list(config.data.eval_datasets))
        self.dataset, modalities, _ = build_train_dataset(data, **dataset_args)
        if modalities is None:  # a ShardStream: no fixed set of samples to average over
            raise ConfigError(f"data.eval_datasets {list(config.data.eval_datasets)}: validation reads JSON datasets "
                              "(a fixed held-out set); WebDataset shard entries stream without an end")
        size = config.train.micro_batch_size
        batches: list[list[int]] = []
        for modality in dict.fromkeys(modalities):  # one modality per micro-batch, in dataset order
            indices = [i for i, m in enumerate(modalities) if m == modality]
            batches += [indices[k:k + size] for k in range(0, len(indices), size)]
        self.num_samples = len(modalities)
        self.steps = math.ceil(len(batches) / world)  # every rank runs as many forwards (ZeRO-3 gathers)
        self.loader = DataLoader(self.dataset, batch_sampler=batches[rank::world],
                                 collate_fn=DataCollator.from_tokenizer(dataset_args["tokenizer"]),
                                 num_workers=config.data.num_workers)

    @torch.no_grad()
    def run(self, trainer) -> dict[str, float]:
        """{component: average, ..., "total": weighted sum} over the held-out set (every rank gets the same)."""
        engine, device = trainer.engine, trainer.device
        sums = [0.0] * len(NORMALIZER_KEYS)
        counts = [0.0] * len(NORMALIZER_KEYS)
        devices = [device] if device.type == "cuda" else []
        engine.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                generator = torch.Generator(device=device).manual_seed(self.config.train.seed)
                batches = iter(self.loader)
                for _ in range(self.steps):
                    batch = next(batches, None)
                    if batch is None or batch["num_samples"] == 0:
                        trainer._empty_step_loss()  # this rank has no batch left: still join the collectives
                        continue
                    local = loss_normalizers([batch])
                    out = engine(**to_device(model_inputs(batch), device, trainer.dtype), generator=generator)
                    for k, key in enumerate(NORMALIZER_KEYS):
                        if key in out.losses:  # a mean over this batch's `local[k]` items
                            sums[k] += float(out.losses[key]) * local[k]
                            counts[k] += local[k]
        finally:
            engine.train()
        reduced = all_reduce(sums + counts, device)
        n = len(NORMALIZER_KEYS)
        means = {key: s / c for key, s, c in zip(NORMALIZER_KEYS, reduced[:n], reduced[n:]) if c > 0}
        return {**means, "total": weighted_total(self.config, means)}
