"""The training data of a run in one call: dataset, DataLoader and the resumable position (what the trainer needs).

Two kinds of data sources, chosen by the catalog entries `data.datasets` names:

* reference-format JSON (map-style datasets): ``ModalityGroupedBatchSampler`` (or LEGACY's
  ``RoundRobinBatchSampler``, `data.sampler`) orders them; its position is the resume state;
* WebDataset shards (`nextgpt.dataset.webdataset`): a ``ShardStream`` reads the tar files sequentially, split
  across ranks and DataLoader workers, shuffled with a buffer; it is its own resume state.

Either way the returned ``position`` object has ``set_epoch``, ``advance``, ``state_dict``, ``load_state_dict``,
``steps_per_epoch`` and ``global_batch_size``. ``data.feature_cache`` is opened here, with the identity of the
model's encoder (a cache made by another encoder or other settings is refused).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..errors import ConfigError
from .collator import DataCollator
from .feature_cache import FeatureCache, encoder_identity
from .mixture import build_train_dataset
from .sampler import ModalityGroupedBatchSampler

__all__ = ["TrainData", "build_train_data", "open_feature_cache"]


@dataclass
class TrainData:
    dataset: Any  # has set_epoch(epoch, seed)
    loader: Any  # iterable of collated micro-batches of this rank
    position: Any  # the resumable order (see the module docstring)


def open_feature_cache(config: Any, dtype: torch.dtype) -> FeatureCache | None:
    """The run's feature cache (`data.feature_cache`), checked against the encoder of `config.model` in `dtype`."""
    if not config.data.feature_cache:
        return None
    identity = encoder_identity(config.model.encoder, config.data.image_aspect_ratio, dtype)
    return FeatureCache(config.data.feature_cache, identity, config.data.root)


def build_train_data(config: Any, dataset_args: Mapping[str, Any], *, world_size: int, rank: int,
                     dtype: torch.dtype) -> TrainData:
    """Dataset, loader and position of a training run (`config`: the whole `Config`; `dataset_args`: the keyword
    arguments of `build_train_dataset` that the model decides: tokenizer, signal, template, max_length,
    media_tokens, target_modalities, model_config)."""
    from torch.utils.data import DataLoader

    from .round_robin import RoundRobinBatchSampler
    from .webdataset import ShardStream

    t = config.train
    dataset, modalities, lengths = build_train_dataset(
        config.data, **dataset_args, feature_cache=open_feature_cache(config, dtype),
        micro_batch_size=t.micro_batch_size, world_size=world_size, rank=rank,
        gradient_accumulation_steps=t.gradient_accumulation_steps, seed=t.seed)
    collate = DataCollator.from_tokenizer(dataset_args["tokenizer"])
    workers = config.data.num_workers
    if isinstance(dataset, ShardStream):
        if config.data.sampler != "modality_grouped":
            raise ConfigError(f"data.sampler={config.data.sampler!r} orders map-style JSON datasets; WebDataset "
                              "shards are read as a shuffled stream (use data.sampler: modality_grouped)")
        loader = DataLoader(dataset, batch_size=None, collate_fn=collate, num_workers=workers,
                            pin_memory=torch.cuda.is_available())
        return TrainData(dataset, loader, dataset)
    if config.data.sampler == "round_robin":  # LEGACY: one dataset per batch, in turn, oversampled
        sampler = RoundRobinBatchSampler(
            [len(d) for d in dataset.datasets], t.micro_batch_size, world_size=world_size, rank=rank,
            gradient_accumulation_steps=t.gradient_accumulation_steps, seed=t.seed)
    else:
        sampler = ModalityGroupedBatchSampler(
            modalities, lengths, t.micro_batch_size, world_size=world_size, rank=rank,
            gradient_accumulation_steps=t.gradient_accumulation_steps, seed=t.seed, drop_last=True,
            group_by_modality=config.data.group_by_modality_length)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        pin_memory=torch.cuda.is_available(),
                        # its own generator: creating an iterator must not draw from the global RNG, or a resumed
                        # run (which creates one mid-epoch) would see other dropout / Gumbel noise
                        generator=torch.Generator().manual_seed(t.seed))
    return TrainData(dataset, loader, sampler)
