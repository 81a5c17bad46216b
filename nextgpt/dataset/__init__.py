"""Training data: catalog, datasets, collator, sampler, decoder targets, caption embeddings.

The trainer's entry points::

    dataset, modalities, lengths = build_train_dataset(config.data, tokenizer, signal, config.model.template,
                                                       max_length, media_tokens, target_modalities)
    sampler = ModalityGroupedBatchSampler(modalities, lengths, micro_batch_size, ...)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=DataCollator.from_tokenizer(tokenizer),
                        num_workers=config.data.num_workers)
"""
from .mixture import NextGPTConcatDataset, build_dataset, build_train_dataset
from .catalog import CATALOG, CatalogEntry, conversation_data, get_entry, legacy_pair_data, register
from .collator import FORWARD_KEYS, DataCollator, SkipStats, is_empty_batch, model_inputs
from .json_datasets import ConversationDataset, LegacyPairDataset
from .samples import SKIP_BAD_MEDIA, SKIP_MISSING_MEDIA, SKIP_REASONS, SKIP_TOO_LONG, SampleOptions, SkippedSample
from .embeddings import embedding_file_name, embedding_path, precompute_caption_embeddings
from .sampler import ModalityGroupedBatchSampler

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "ConversationDataset",
    "DataCollator",
    "FORWARD_KEYS",
    "LegacyPairDataset",
    "ModalityGroupedBatchSampler",
    "NextGPTConcatDataset",
    "SKIP_BAD_MEDIA",
    "SKIP_MISSING_MEDIA",
    "SKIP_REASONS",
    "SKIP_TOO_LONG",
    "SampleOptions",
    "SkipStats",
    "SkippedSample",
    "build_dataset",
    "build_train_dataset",
    "conversation_data",
    "embedding_file_name",
    "embedding_path",
    "get_entry",
    "is_empty_batch",
    "legacy_pair_data",
    "model_inputs",
    "precompute_caption_embeddings",
    "register",
]
