"""Training data: catalog, datasets, collator, sampler, decoder targets, caption embeddings.

The trainer's entry point::

    data = build_train_data(config, dataset_args, world_size=..., rank=..., dtype=...)
    # data.dataset, data.loader, data.position (the resumable order)

(JSON datasets: `build_train_dataset` + a batch sampler + `DataCollator`; WebDataset shards: a `ShardStream`;
see `loader.py`.)

The names below load their module on first use, so that `nextgpt.dataset.catalog` (read by the checks that run
before anything heavy) imports without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "mixture": ("NextGPTConcatDataset", "build_dataset", "build_train_dataset"),
    "catalog": ("CATALOG", "CatalogEntry", "catalog_for", "conversation_data", "get_entry", "legacy_pair_data",
                "webdataset_data",
                "load_catalog_file", "register"),
    "collator": ("FORWARD_KEYS", "DataCollator", "SkipStats", "is_empty_batch", "model_inputs"),
    "json_datasets": ("ConversationDataset",),
    "samples": ("SKIP_BAD_MEDIA", "SKIP_MISSING_MEDIA", "SKIP_REASONS", "SKIP_TOO_LONG", "SampleOptions",
                "SkippedSample"),
    "legacy_pairs": ("LegacyPairDataset",),
    "embeddings": ("embedding_file_name", "embedding_path", "precompute_caption_embeddings"),
    "sampler": ("ModalityGroupedBatchSampler",),
    "round_robin": ("RoundRobinBatchSampler",),
    "feature_cache": ("FeatureCache", "build_feature_cache", "encoder_identity"),
    "loader": ("TrainData", "build_train_data"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
