"""The dataset catalog: the one place users edit to add a dataset (`data.datasets: [name, ...]` selects them).

Each entry names a dataset class and its parameters. Parameters ending in ``_path`` or ``_folder`` are paths
RELATIVE to ``data.root`` (absolute paths are used as given); the layout below is the reference's ``data/`` folder.
This is the one place that knows it: the embedded default's synthetic dataset (``nextgpt synthetic DIR``) writes
its files at these entries' paths, so the same entries serve real data and synthetic data. Unlike the reference,
every entry has its OWN folders (docs/deviations.md, "Catalog folders").

Adding a dataset is one line, e.g. for a JSON in the NEW schema::

    CATALOG["my_pets"] = conversation_data("my_pets/pets.json", image_folder="my_pets/images",
                                           embed_folder="my_pets/embed")

(or call :func:`register` from your own code before building the dataset). Without editing the package, a YAML
file named in ``data.catalog_files`` adds entries with the same fields (:func:`load_catalog_file`); its paths are
relative to the file's folder (or to its own ``root:``), not to ``data.root``. See ``data/README.md``.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..constants import MODALITIES
from ..errors import ConfigError

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "LEGACY_PROMPT",
    "caption_pair_data",
    "catalog_for",
    "conversation_data",
    "get_entry",
    "legacy_pair_data",
    "load_catalog_file",
    "register",
    "webdataset_data",
    "resolve_class",
]

CONVERSATION_DATASET = "nextgpt.dataset.json_datasets.ConversationDataset"
CAPTION_PAIR_DATASET = "nextgpt.dataset.caption_pairs.CaptionPairDataset"
LEGACY_PAIR_DATASET = "nextgpt.dataset.legacy_pairs.LegacyPairDataset"
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
    samples, with the 2023 release's text."""
    if modality not in MODALITIES:
        raise ConfigError(f"legacy pair data: modality must be one of {MODALITIES}, got {modality!r}")
    return CatalogEntry(LEGACY_PAIR_DATASET, {
        "data_path": data_path, f"{modality}_folder": media_folder, "embed_folder": embed_folder,
        "modality": modality, "task": task, "prompt": prompt}, description)


def caption_pair_data(data_path: str, *, image_folder: str, task: str, description: str = "") -> CatalogEntry:
    """An entry for MiniGPT-4's data: image-caption pairs (`task="pretrain"`, stage 1) or its curated descriptions
    with an instruction (`task="align"`, stage 2), from a pair list or MiniGPT-4's filter_cap.json."""
    return CatalogEntry(CAPTION_PAIR_DATASET, {"data_path": data_path, "image_folder": image_folder, "task": task},
                        description)


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
# LEGACY decodes images with SD-1.5, whose caption embeddings are (77, 768), not SD-2's (77, 1024): their own folders.
# (Its video and audio embeddings have the NEW widths, ZeroScope 1024 / AudioLDM 512, and share the NEW folders.)
_EMBED_SD15 = "embed_sd15"
_IT_EMBED_SD15 = "it/embed_sd15"
_HELD = "heldout"  # held-out splits (validation losses, evaluation manifests)
_HELD_EMBED = "heldout/embed"

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
    # ---- held-out splits for validation losses (data.eval_datasets); the synthetic dataset writes them --------
    "cc3m_enc_val": conversation_data(f"{_HELD}/cc3m_comprehension.json", image_folder=f"{_HELD}/images",
                                      description="held-out image captioning"),
    "webvid_enc_val": conversation_data(f"{_HELD}/webvid_comprehension.json", video_folder=f"{_HELD}/videos",
                                        description="held-out video captioning"),
    "audiocap_enc_val": conversation_data(f"{_HELD}/audiocap_comprehension.json", audio_folder=f"{_HELD}/audios",
                                          description="held-out audio captioning"),
    "cc3m_dec_val": conversation_data(f"{_HELD}/cc3m_generation.json", image_folder=f"{_HELD}/images",
                                      embed_folder=_HELD_EMBED, description="held-out text-to-image"),
    "webvid_dec_val": conversation_data(f"{_HELD}/webvid_generation.json", video_folder=f"{_HELD}/videos",
                                        embed_folder=_HELD_EMBED, description="held-out text-to-video"),
    "audiocap_dec_val": conversation_data(f"{_HELD}/audiocap_generation.json", audio_folder=f"{_HELD}/audios",
                                          embed_folder=_HELD_EMBED, description="held-out text-to-audio"),
    "image_instruction_val": conversation_data(f"{_HELD}/image_instruction_tuning.json", embed_folder=_HELD_EMBED,
                                               description="held-out T-T+X: text -> text + image"),
    "video_instruction_val": conversation_data(f"{_HELD}/video_instruction_tuning.json", embed_folder=_HELD_EMBED,
                                               description="held-out T-T+X: text -> text + video"),
    "audio_instruction_val": conversation_data(f"{_HELD}/audio_instruction_tuning.json", embed_folder=_HELD_EMBED,
                                               description="held-out T-T+X: text -> text + audio"),
    "llava_instruction_val": conversation_data(f"{_HELD}/llava.json", image_folder=f"{_HELD}/llava_images",
                                               description="held-out image + text -> text"),
    "alpaca_instruction_val": conversation_data(f"{_HELD}/alpaca.json", description="held-out text -> text"),
    # ---- LEGACY (2023 release, spec §6.8): the raw pair files with the legacy stage-1/2 text -------------------
    "cc3m_enc_legacy": legacy_pair_data(f"{_PAIRS}/cc3m/cc3m.json", modality="image", task="comprehension",
                                        media_folder=f"{_PAIRS}/cc3m/images"),
    "webvid_enc_legacy": legacy_pair_data(f"{_PAIRS}/webvid/webvid.json", modality="video", task="comprehension",
                                          media_folder=f"{_PAIRS}/webvid/videos"),
    "audiocap_enc_legacy": legacy_pair_data(f"{_PAIRS}/audiocap/audiocap.json", modality="audio",
                                            task="comprehension", media_folder=f"{_PAIRS}/audiocap/audios"),
    "cc3m_dec_legacy": legacy_pair_data(f"{_PAIRS}/cc3m/cc3m.json", modality="image", task="generation",
                                        media_folder=f"{_PAIRS}/cc3m/images", embed_folder=_EMBED_SD15,
                                        description="SD-1.5 caption embeddings (77x768) in embed_sd15/"),
    "webvid_dec_legacy": legacy_pair_data(f"{_PAIRS}/webvid/webvid.json", modality="video", task="generation",
                                          media_folder=f"{_PAIRS}/webvid/videos", embed_folder=_EMBED),
    "audiocap_dec_legacy": legacy_pair_data(f"{_PAIRS}/audiocap/audiocap.json", modality="audio",
                                            task="generation", media_folder=f"{_PAIRS}/audiocap/audios",
                                            embed_folder=_EMBED),
    # LEGACY stage 3 reads the NEW instruction files; only its image targets differ (SD-1.5, 77x768)
    "image_instruction_legacy": conversation_data(f"{_T2X}/image_instruction_tuning.json",
                                                  embed_folder=_IT_EMBED_SD15,
                                                  description="T-T+X: text -> text + image, SD-1.5 embeddings"),
    # ---- MiniGPT-4 (configs/minigpt4_stage_*.yaml): stage-1 pairs, stage-2 curated descriptions ----------------
    "cc3m_pairs_minigpt4": caption_pair_data(f"{_PAIRS}/cc3m/cc3m.json", image_folder=f"{_PAIRS}/cc3m/images",
                                             task="pretrain", description="CC3M image-caption pairs, MiniGPT-4 "
                                                                          "stage 1 text"),
    "cc_sbu_align": caption_pair_data("cc_sbu_align/filter_cap.json", image_folder="cc_sbu_align/image",
                                      task="align", description="MiniGPT-4's 3,500 curated image descriptions"),
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


def _is_path_param(key: str) -> bool:
    return key.endswith("_path") or key.endswith("_folder")


def load_catalog_file(path: str | Path) -> dict[str, CatalogEntry]:
    """The entries of a YAML catalog file, with their paths made absolute::

        root: /data/mine            # optional; default: this file's folder (a relative root is relative to it)
        datasets:
          my_pets:                  # a NEW-schema JSON: the fields of `conversation_data`
            data_path: pets/pets.json
            image_folder: pets/images
            embed_folder: pets/embed
            description: my pets, image + text -> text
          my_pairs:                 # a raw LEGACY pair file: `format: legacy_pair` + the fields of `legacy_pair_data`
            format: legacy_pair
            data_path: pairs.json
            modality: image
            task: comprehension
            media_folder: images
          my_custom:                # any dataset class: `target` and `params`, as in CatalogEntry
            target: mypackage.datasets.MyDataset
            params: {data_path: custom.json}
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"data.catalog_files: cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict) or set(data) - {"root", "datasets"}:
        raise ConfigError(f"{path}: a catalog file is a mapping with `datasets:` (name -> fields) and an optional "
                          f"`root:`; found keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    root = (path.resolve().parent / str(data.get("root") or ".")).resolve()
    entries = {}
    for name, fields in data["datasets"].items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: dataset {name!r}: expected a mapping of fields, got {fields!r}")
        fields = dict(fields)
        kind = fields.pop("format", "target" if "target" in fields else "conversation")
        try:
            if kind == "conversation":
                entry = conversation_data(**fields)
            elif kind == "legacy_pair":
                entry = legacy_pair_data(**fields)
            elif kind == "target":
                entry = CatalogEntry(**fields)
            else:
                raise ConfigError(f"format must be conversation, legacy_pair or target, got {kind!r}")
        except (TypeError, ConfigError) as err:
            raise ConfigError(f"{path}: dataset {name!r}: {err}") from None
        params = {k: str(root / v) if _is_path_param(k) and isinstance(v, str) else v
                  for k, v in dict(entry.params).items()}
        entries[str(name)] = replace(entry, params=params)
    return entries


def catalog_for(catalog_files: Iterable[str | Path] = ()) -> dict[str, CatalogEntry]:
    """The built-in catalog plus the entries of `catalog_files` (data.catalog_files); a name defined twice is an
    error."""
    catalog = dict(CATALOG)
    for file in catalog_files:
        for name, entry in load_catalog_file(file).items():
            if name in catalog:
                raise ConfigError(f"{file}: dataset {name!r} is already defined (built-in catalog or an earlier "
                                  "catalog file); choose another name")
            catalog[name] = entry
    return catalog


def unknown_dataset_message(name: str, catalog: Mapping[str, CatalogEntry]) -> str:
    close = difflib.get_close_matches(str(name), list(catalog), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown dataset {name!r}{hint} (known: {', '.join(catalog)}; add one in data.catalog_files or "
            "nextgpt/dataset/catalog.py)")


def get_entry(name: str, catalog: Mapping[str, CatalogEntry] | None = None) -> CatalogEntry:
    """The entry called `name` (in `catalog`, default the built-in one); an unknown name is a `ConfigError` with a
    suggestion."""
    catalog = CATALOG if catalog is None else catalog
    if name not in catalog:
        raise ConfigError(f"data.datasets: {unknown_dataset_message(name, catalog)}")
    return catalog[name]


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
