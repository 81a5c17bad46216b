"""Training data: catalog, datasets, collator, sampler, decoder targets, caption embeddings.

The trainer's entry point::

    data = build_train_data(config, tokenizer, signal, media_tokens=..., targets=..., world_size=..., rank=...,
                            dtype=...)   # data.dataset, data.loader, data.position (resumable)

(JSON datasets: `build_train_dataset` + `ModalityGroupedBatchSampler` + `DataCollator`; WebDataset shards: a
`ShardStream`; see `loader.py`.)
"""
from .mixture import NextGPTConcatDataset, build_dataset, build_train_dataset
from .catalog import CATALOG, CatalogEntry, conversation_data, get_entry, legacy_pair_data, register
from .collator import FORWARD_KEYS, DataCollator, SkipStats, is_empty_batch, model_inputs
from .json_datasets import (
    SKIP_BAD_MEDIA,
    SKIP_MISSING_MEDIA,
    SKIP_TOO_LONG,
    ConversationDataset,
    SampleOptions,
    SkippedSample,
)
from .embeddings import embedding_file_name, embedding_path, precompute_caption_embeddings
from .pair_data import LegacyPairDataset
from .sampler import ModalityGroupedBatchSampler
from .feature_cache import FeatureCache, build_feature_cache, encoder_identity
from .loader import TrainData, build_train_data

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "ConversationDataset",
    "DataCollator",
    "FeatureCache",
    "FORWARD_KEYS",
    "LegacyPairDataset",
    "ModalityGroupedBatchSampler",
    "NextGPTConcatDataset",
    "SKIP_BAD_MEDIA",
    "SKIP_MISSING_MEDIA",
    "SKIP_TOO_LONG",
    "SampleOptions",
    "SkipStats",
    "SkippedSample",
    "TrainData",
    "build_dataset",
    "build_feature_cache",
    "build_train_data",
    "build_train_dataset",
    "conversation_data",
    "embedding_file_name",
    "embedding_path",
    "encoder_identity",
    "get_entry",
    "is_empty_batch",
    "legacy_pair_data",
    "model_inputs",
    "precompute_caption_embeddings",
    "register",
]
