"""The dataset catalog: the one place users edit to add a dataset (`data.datasets: [name, ...]` selects them).

Each entry names a dataset class and its parameters. Parameters ending in ``_path`` or ``_folder`` are paths
RELATIVE to ``data.root`` (absolute paths are used as given); the layout below is the reference's ``data/`` folder.
This is the one place that knows it: the embedded default's synthetic dataset (``nextgpt synthetic DIR``) writes
its files at these entries' paths, so the same entries serve real data and synthetic data. Unlike the reference,
every entry has its OWN folders (docs/deviations.md, "Catalog folders").

Adding a dataset is one line, e.g. for a JSON in the NEW schema (spec §6.2)::

    CATALOG["my_pets"] = conversation_data("my_pets/pets.json", image_folder="my_pets/images",
                                           embed_folder="my_pets/embed")

(or call :func:`register` from your own code before building the dataset). See ``data/README.md``.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..constants import MODALITIES
from ..errors import ConfigError

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "LEGACY_PROMPT",
    "conversation_data",
    "get_entry",
    "legacy_pair_data",
    "register",
    "webdataset_data",
    "resolve_class",
]

CONVERSATION_DATASET = "nextgpt.dataset.json_datasets.ConversationDataset"
LEGACY_PAIR_DATASET = "nextgpt.dataset.pair_data.LegacyPairDataset"
SHARD_DATASET = "nextgpt.dataset.webdataset.ShardSource"
LEGACY_PROMPT = "generate a caption"  # the 2023 release's stage-1 prompt (its config key `prompt`)


@dataclass(frozen=True)
class CatalogEntry:
    """A dataset class (a class or its dotted path) and the keyword parameters it is built with."""

    target: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


def conversation_data(data_path: str, *, image_folder: str | None = None, video_folder: str | None = None,
                      audio_folder: str | None = None, embed_folder: str | None = None,
                      description: str = "") -> CatalogEntry:
    """An entry for a JSON in the NEW schema: `conversations` + `input_*` / `output_*` / `*_captions` /
    `*_caption_embeddings`. Media names are relative to the folder of their modality; caption embeddings are
    read from `embed_folder`."""
    return CatalogEntry(CONVERSATION_DATASET, {
        "data_path": data_path, "image_folder": image_folder, "video_folder": video_folder,
        "audio_folder": audio_folder, "embed_folder": embed_folder}, description)


def legacy_pair_data(data_path: str, *, modality: str, task: str, media_folder: str,
                     embed_folder: str | None = None, prompt: str = LEGACY_PROMPT,
                     description: str = "") -> CatalogEntry:
    """An entry for a raw LEGACY pair file (`cc3m.json`: `image_name` + `caption`, …) read as stage-1
    (`task="comprehension"`: media → caption) or stage-2 (`task="generation"`: caption → caption + signal)
    samples, with the 2023 release's text (spec §6.8)."""
    if modality not in MODALITIES:
        raise ConfigError(f"legacy pair data: modality must be one of {MODALITIES}, got {modality!r}")
    return CatalogEntry(LEGACY_PAIR_DATASET, {
        "data_path": data_path, f"{modality}_folder": media_folder, "embed_folder": embed_folder,
        "modality": modality, "task": task, "prompt": prompt}, description)


def webdataset_data(shards: str, *, modality: str | None = None, task: str | None = None,
                    embed_folder: str | None = None, prompt: str = LEGACY_PROMPT,
                    description: str = "") -> CatalogEntry:
    """An entry for WebDataset ``.tar`` shards (img2dataset / video2dataset layout; `shards` is a pattern such as
    ``cc3m/{00000..00331}.tar`` or ``cc3m/*.tar``). Caption pairs (a medium + ``txt``) are read with `modality`
    and `task` ("comprehension" or "generation", the pair text of the LEGACY files); samples with a ``json``
    member holding ``conversations`` (what ``make_shards.py`` writes from a reference JSON) as they are."""
    return CatalogEntry(SHARD_DATASET, {"shards_path": shards, "modality": modality, "task": task,
                                        "embed_folder": embed_folder, "prompt": prompt}, description)


_PAIRS = "T_X_pair_data"
_T2X = "IT_data/T-T+X_data"
_MOSIT = "IT_data/MosIT_data"
_TX2T = "IT_data/T+X-T_data"
_EMBED = "embed"  # caption embeddings of the pair data (the reference's data/embed)
_IT_EMBED = "it/embed"  # caption embeddings of the instruction data (the reference's data/it/embed)

CATALOG: dict[str, CatalogEntry] = {
    # ---- stage 1, encoding side: X -> text captions (comprehension files) --------------------------------------
    "cc3m_enc": conversation_data(f"{_PAIRS}/cc3m/cc3m_comprehension.json", image_folder=f"{_PAIRS}/cc3m/images",
                                  description="CC3M image captioning"),
    "webvid_enc": conversation_data(f"{_PAIRS}/webvid/webvid_comprehension.json",
                                    video_folder=f"{_PAIRS}/webvid/videos", description="WebVid video captioning"),
    "audiocap_enc": conversation_data(f"{_PAIRS}/audiocap/audiocap_comprehension.json",
                                      audio_folder=f"{_PAIRS}/audiocap/audios",
                                      description="AudioCaps audio captioning"),
    # ---- stage 2, decoding side: text -> X (generation files; output media for the optional denoising loss) -----
    "cc3m_dec": conversation_data(f"{_PAIRS}/cc3m/cc3m_generation.json", image_folder=f"{_PAIRS}/cc3m/images",
                                  embed_folder=_EMBED, description="CC3M text-to-image"),
    "webvid_dec": conversation_data(f"{_PAIRS}/webvid/webvid_generation.json", video_folder=f"{_PAIRS}/webvid/videos",
                                    embed_folder=_EMBED, description="WebVid text-to-video"),
    "audiocap_dec": conversation_data(f"{_PAIRS}/audiocap/audiocap_generation.json",
                                      audio_folder=f"{_PAIRS}/audiocap/audios", embed_folder=_EMBED,
                                      description="AudioCaps text-to-audio"),
    # ---- stage 3, instruction tuning --------------------------------------------------------------------------
    "image_instruction": conversation_data(f"{_T2X}/image_instruction_tuning.json", embed_folder=_IT_EMBED,
                                           description="T-T+X: text -> text + image"),
    "video_instruction": conversation_data(f"{_T2X}/video_instruction_tuning.json", embed_folder=_IT_EMBED,
                                           description="T-T+X: text -> text + video"),
    "audio_instruction": conversation_data(f"{_T2X}/audio_instruction_tuning.json", embed_folder=_IT_EMBED,
                                           description="T-T+X: text -> text + audio"),
    "mosit_instruction": conversation_data(f"{_MOSIT}/mosit_instruction_tuning.json",
                                           image_folder=f"{_MOSIT}/images", video_folder=f"{_MOSIT}/videos",
                                           audio_folder=f"{_MOSIT}/audios", embed_folder=_IT_EMBED,
                                           description="MosIT: multi-turn modality-switching dialogues"),
    "llava_instruction": conversation_data(f"{_TX2T}/llava/preprocessed_llava.json",
                                           image_folder=f"{_TX2T}/llava/images",
                                           description="LLaVA-150K: image + text -> text"),
    "alpaca_instruction": conversation_data(f"{_TX2T}/alpaca/preprocessed_alpaca.json",
                                            description="Alpaca: text -> text"),
    "videochat_instruction": conversation_data(f"{_TX2T}/videochat/videochat.json",
                                               video_folder=f"{_TX2T}/videochat/video",
                                               description="VideoChat: video + text -> text"),
    # ---- LEGACY (2023 release, spec §6.8): the raw pair files with the legacy stage-1/2 text -------------------
    "cc3m_enc_legacy": legacy_pair_data(f"{_PAIRS}/cc3m/cc3m.json", modality="image", task="comprehension",
                                        media_folder=f"{_PAIRS}/cc3m/images"),
    "webvid_enc_legacy": legacy_pair_data(f"{_PAIRS}/webvid/webvid.json", modality="video", task="comprehension",
                                          media_folder=f"{_PAIRS}/webvid/videos"),
    "audiocap_enc_legacy": legacy_pair_data(f"{_PAIRS}/audiocap/audiocap.json", modality="audio",
                                            task="comprehension", media_folder=f"{_PAIRS}/audiocap/audios"),
    "cc3m_dec_legacy": legacy_pair_data(f"{_PAIRS}/cc3m/cc3m.json", modality="image", task="generation",
                                        media_folder=f"{_PAIRS}/cc3m/images", embed_folder=_EMBED),
    "webvid_dec_legacy": legacy_pair_data(f"{_PAIRS}/webvid/webvid.json", modality="video", task="generation",
                                          media_folder=f"{_PAIRS}/webvid/videos", embed_folder=_EMBED),
    "audiocap_dec_legacy": legacy_pair_data(f"{_PAIRS}/audiocap/audiocap.json", modality="audio",
                                            task="generation", media_folder=f"{_PAIRS}/audiocap/audios",
                                            embed_folder=_EMBED),
    # ---- WebDataset shards (data/README.md: img2dataset / video2dataset, or make_shards.py) -------------------
    "cc3m_enc_wds": webdataset_data("webdataset/cc3m/*.tar", modality="image", task="comprehension",
                                    description="CC3M shards, image captioning"),
    "webvid_enc_wds": webdataset_data("webdataset/webvid/*.tar", modality="video", task="comprehension",
                                      description="WebVid shards, video captioning"),
    "audiocap_enc_wds": webdataset_data("webdataset/audiocap/*.tar", modality="audio", task="comprehension",
                                        description="AudioCaps shards, audio captioning"),
}


def register(name: str, entry: CatalogEntry, overwrite: bool = False) -> None:
    """Add an entry from code (the same as editing CATALOG)."""
    if not isinstance(entry, CatalogEntry):
        raise ConfigError(f"catalog entry {name!r} must be a CatalogEntry, got {type(entry).__name__}")
    if name in CATALOG and not overwrite:
        raise ConfigError(f"catalog already has a dataset named {name!r}")
    CATALOG[name] = entry


def get_entry(name: str) -> CatalogEntry:
    """The entry called `name`; an unknown name is a `ConfigError` with a suggestion."""
    if name not in CATALOG:
        close = difflib.get_close_matches(str(name), list(CATALOG), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"data.datasets: unknown dataset {name!r}{hint} (known: {', '.join(CATALOG)}; "
                          "add one in nextgpt/dataset/catalog.py)")
    return CATALOG[name]


def resolve_class(entry: CatalogEntry) -> type:
    """The dataset class of an entry (`target` may be a class or `"package.module.Class"`)."""
    target = entry.target
    if isinstance(target, type):
        return target
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"catalog target must be a class or a dotted 'module.Class' path, got {target!r}")
    module_name, _, class_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"catalog target {target!r} cannot be imported: {err}") from None
    if not isinstance(cls, type):
        raise ConfigError(f"catalog target {target!r} is not a class")
    return cls
