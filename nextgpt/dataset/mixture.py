"""Build the training dataset of a run from `data.datasets` (catalog names) and `data.root`."""
from __future__ import annotations

import bisect
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from torch.utils.data import ConcatDataset

from ..conversation import SignalVocab
from ..errors import ConfigError
from .catalog import catalog_for, get_entry, resolve_class
from .samples import SampleOptions

logger = logging.getLogger(__name__)

__all__ = ["NextGPTConcatDataset", "build_dataset", "build_train_dataset", "resolve_params"]


class NextGPTConcatDataset(ConcatDataset):
    """The configured datasets one after another; `modalities` / `lengths` are the concatenated per-sample lists
    the sampler needs, `names` the catalog names."""

    def __init__(self, datasets: list[Any], names: list[str]) -> None:
        super().__init__(datasets)
        self.names = list(names)

    @property
    def modalities(self) -> list[str]:
        return [m for d in self.datasets for m in d.modalities]

    @property
    def lengths(self) -> list[int]:
        return [n for d in self.datasets for n in d.lengths]

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """See `ConversationDataset.set_epoch`."""
        for dataset in self.datasets:
            dataset.set_epoch(epoch, seed)

    def locate(self, index: int) -> tuple[str, int]:
        """(catalog name, index inside that dataset) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[k - 1] if k else 0
        return self.names[k], index - start


def resolve_params(params: Mapping[str, Any], root: str | os.PathLike,
                   embed_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Catalog parameters with every `*_path` / `*_folder` joined to `root` (absolute ones kept); `embed_dir`
    (data.embed_dir, itself relative to `root`) replaces the entry's `embed_folder`."""
    root = Path(root)
    out = dict(params)
    if embed_dir is not None:
        out["embed_folder"] = embed_dir
    for key, value in out.items():
        if value is not None and (key.endswith("_path") or key.endswith("_folder")):
            out[key] = root / Path(value)
    return out


def build_dataset(name: str, data_config: Any, tokenizer: Any, signal: SignalVocab | None,
                  options: SampleOptions, catalog: Mapping[str, Any] | None = None) -> Any:
    """One catalog dataset (of `catalog`, default: the built-in one plus `data_config.catalog_files`), its relative
    paths resolved against `data_config.root`."""
    if catalog is None:
        catalog = catalog_for(getattr(data_config, "catalog_files", ()))
    entry = get_entry(name, catalog)
    cls = resolve_class(entry)
    params = resolve_params(entry.params, data_config.root, data_config.embed_dir)
    kwargs = dict(tokenizer=tokenizer, signal=signal, options=options, name=name, **params)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:  # a catalog entry with a parameter its class does not take
        raise ConfigError(f"catalog entry {name!r} does not fit {cls.__name__}: {err}") from None
    return cls(**kwargs)


def build_train_dataset(data_config: Any, tokenizer: Any, signal: SignalVocab | None, template: str,
                        max_length: int | None = None, media_tokens: Mapping[str, int] | None = None,
                        target_modalities: Iterable[str] = (), model_config: Any = None, feature_cache: Any = None,
                        **stream: Any) -> tuple[Any, list[str] | None, list[int] | None]:
    """The datasets named in `data_config.datasets`, concatenated, with the per-sample modality keys and length
    estimates for `ModalityGroupedBatchSampler`; or, when they are WebDataset shard entries, one `ShardStream`
    (and None, None): `stream` then gives its `micro_batch_size`, `world_size`, `rank`,
    `gradient_accumulation_steps` and `seed`.

    `template`: conversation template (model.template); `max_length`: model.max_length; `media_tokens`: LLM tokens
    per input item and modality after the input projector; `target_modalities`: modalities whose `output_*` media
    are loaded as decoder targets (those with a denoising loss); `model_config`: the `ModelConfig`, whose encoder
    kind decides the input preprocessing and whose output widths the caption embeddings must match;
    `feature_cache`: a `FeatureCache` to read encoder features from.
    """
    names = list(data_config.datasets)
    if not names:
        raise ConfigError("data.datasets is empty: name at least one dataset of nextgpt/dataset/catalog.py")
    if len(set(names)) != len(names):
        raise ConfigError(f"data.datasets names a dataset twice: {names}")
    catalog = catalog_for(data_config.catalog_files)
    root = Path(data_config.root)
    relative = [n for n in names if any(v is not None and (k.endswith("_path") or k.endswith("_folder"))
                                        and not Path(v).is_absolute() for k, v in get_entry(n, catalog).params.items())]
    if relative and not root.is_dir():
        raise ConfigError(f"data.root: {root} is not a directory, but {', '.join(relative)} read files below it "
                          "(see data/README.md to prepare the data)")
    options = SampleOptions.from_config(data_config, template, max_length, media_tokens, target_modalities,
                                        model_config)
    options.feature_cache = feature_cache
    datasets = [build_dataset(name, data_config, tokenizer, signal, options, catalog) for name in names]
    from .webdataset import ShardSource, ShardStream

    shards = [isinstance(d, ShardSource) for d in datasets]
    if any(shards):
        if not all(shards):
            raise ConfigError(f"data.datasets mixes WebDataset shard entries with JSON entries ({names}); a run "
                              "reads one kind")
        defaults = dict(micro_batch_size=1, world_size=1, rank=0, gradient_accumulation_steps=1, seed=42)
        stream = ShardStream(datasets, names, buffer_size=data_config.shuffle_buffer,
                             num_workers=data_config.num_workers, **{**defaults, **stream})
        return stream, None, None
    concat = NextGPTConcatDataset(datasets, names)
    logger.info("training data: %s", ", ".join(f"{n} ({len(d)})" for n, d in zip(names, datasets)))
    return concat, concat.modalities, concat.lengths
