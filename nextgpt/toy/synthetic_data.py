"""The embedded default's dataset: the reference's JSON sets over small synthetic media with truthful captions.

`generate(OUTDIR)` (the `nextgpt synthetic OUTDIR` command) writes, deterministically from the seed and in a few
seconds, the media of `nextgpt.toy.synthetic_media` and JSON files in the reference's formats, each at the path its
entry of the dataset catalog (`nextgpt/dataset/catalog.py`) gives, so the catalog reads ``OUTDIR`` as ``data.root``
(the layout is drawn in data/README.md). ``OUTDIR/manifest.json`` lists the counts, the catalog entries served and
a sha256 of every file written.

Caption embeddings are not made here: ``preprocess_embeddings.py`` computes them with a decoder's text encoder into
the entries' embedding folders, under the names the JSON files give.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nextgpt.dataset.catalog import CATALOG
from nextgpt.errors import ConfigError, DataError

from .synthetic_media import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    audio_item,
    image_item,
    pick,
    video_item,
    write_audio,
    write_image,
    write_video,
)
from .synthetic_heldout import HELDOUT_CATALOG_NAMES, HeldoutCounts, write_heldout
from .synthetic_records import (
    alpaca_record,
    comprehension_record,
    generation_record,
    llava_dialogue,
    mosit_dialogue,
    t2x_record,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CATALOG_NAMES",
    "SyntheticCounts",
    "catalog_hints",
    "generate",
]

# ----------------------------------------------------------------------------------------------------------------
# counts
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticCounts:
    """How many items of each kind to write (defaults: the embedded default's dataset)."""

    images: int = 200  # cc3m-style image-caption pairs
    videos: int = 40  # webvid-style video-caption pairs
    audios: int = 40  # audiocaps-style audio-caption pairs
    it_image: int = 60  # T-T+X instruction samples per output modality
    it_video: int = 60
    it_audio: int = 60
    mosit: int = 24  # multi-turn modality-switching dialogues
    llava: int = 40  # image question-answering dialogues
    alpaca: int = 60  # text-only instructions
    align: int = 40  # MiniGPT-4 stage-2 style image descriptions (cc_sbu_align/filter_cap.json)

    def validate(self) -> None:
        for key, value in asdict(self).items():
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"SyntheticCounts.{key} must be a non-negative integer, got {value!r}")
        for key, src in (("it_image", "images"), ("it_video", "videos"), ("it_audio", "audios")):
            if getattr(self, key) and not getattr(self, src):
                raise ConfigError(f"SyntheticCounts.{key} > 0 needs {src} > 0 (its captions come from those items)")




def _rng(seed: int, part: int) -> np.random.Generator:
    """Independent stream per part, so changing one count does not reshuffle the others."""
    return np.random.default_rng([seed, part])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4, ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------------------------------------------------------------
# layout (the catalog's) and driver
# ----------------------------------------------------------------------------------------------------------------
#: The catalog entries this dataset serves (every file is written where its entry looks; the LEGACY entries read the
#: raw pair files `<set>.json` of the same folders).
CATALOG_NAMES = (
    "cc3m_enc", "webvid_enc", "audiocap_enc", "cc3m_dec", "webvid_dec", "audiocap_dec",
    "image_instruction", "video_instruction", "audio_instruction", "mosit_instruction",
    "llava_instruction", "alpaca_instruction", "cc3m_pairs_minigpt4", "cc_sbu_align", *HELDOUT_CATALOG_NAMES,
)
_PAIR_SETS = (("cc3m", "image"), ("webvid", "video"), ("audiocap", "audio"))  # (set, modality of its media)


def _where(name: str, key: str = "data_path") -> str:
    """A path of catalog entry `name`, relative to the data root."""
    return CATALOG[name].params[key]


def catalog_hints() -> dict[str, dict[str, str]]:
    """{catalog entry: its paths relative to OUTDIR}, with the embedding folder under the reference's key
    `caption_emb_folder` (recorded in the manifest)."""
    return {name: {("caption_emb_folder" if key == "embed_folder" else key): value
                   for key, value in CATALOG[name].params.items() if value is not None}
            for name in CATALOG_NAMES}


def _clear_previous(out: Path) -> None:
    """Remove the files a previous run listed in its manifest (only those), so stale items never linger."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        return
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        files = list(previous.get("files", {}))
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{manifest}: cannot read the previous synthetic manifest ({exc}); remove it by hand") from exc
    for rel in files:
        path = (out / rel).resolve()
        if out.resolve() in path.parents and path.is_file():
            path.unlink()
    manifest.unlink()


def generate(outdir: str | os.PathLike, seed: int = 0, counts: SyntheticCounts | None = None,
             heldout: HeldoutCounts | None = None) -> dict[str, Any]:
    """Write the synthetic dataset under ``outdir`` and return its manifest (also written as manifest.json).

    Deterministic: the same ``seed`` and ``counts`` give identical bytes (JSON, JPEG, WAV, MP4) with the same
    library versions.
    """
    counts = counts or SyntheticCounts()
    counts.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    started = time.perf_counter()
    json_counts: dict[str, int] = {}

    def dump(rel: str, records: list[Any]) -> None:
        path = out / rel
        _write_json(path, records)
        json_counts[path.relative_to(out).as_posix()] = len(records)

    # --- T-X pairs ------------------------------------------------------------------------------------------------
    images_dir, videos_dir, audios_dir = (out / _where(f"{s}_enc", f"{m}_folder") for s, m in _PAIR_SETS)
    rng = _rng(seed, 1)
    images = []
    for i in range(counts.images):
        item = image_item(rng)
        key = f"{i + 1:09d}"
        write_image(images_dir / f"{key}.jpg", item)
        images.append({"caption": item["caption"], "id": key, "image_name": f"{key}.jpg"})
    rng = _rng(seed, 2)
    videos = []
    for i in range(counts.videos):
        item = video_item(rng)
        name = f"{i + 1:08d}.mp4"
        write_video(videos_dir / name, item)
        videos.append({"caption": item["caption"], "id": 1_000_000 + i + 1, "video_name": name})
    rng = _rng(seed, 3)
    audios = []
    for i in range(counts.audios):
        item = audio_item(rng)
        audio_id = 100_001 + i
        write_audio(audios_dir / f"{audio_id}.wav", item)
        audios.append({"audio_id": audio_id, "audio_name": f"{audio_id}.wav", "caption": item["caption"]})

    rng = _rng(seed, 4)
    for (dataset, modality), records in zip(_PAIR_SETS, (images, videos, audios)):
        name_key = f"{modality}_name"
        dump(_where(f"{dataset}_enc_legacy"), records)  # the raw pair file
        dump(_where(f"{dataset}_enc"),
             [comprehension_record(rng, modality, r[name_key], r["caption"]) for r in records])
        dump(_where(f"{dataset}_dec"),
             [generation_record(rng, modality, r[name_key], r["caption"]) for r in records])

    # --- T-T+X instruction data -------------------------------------------------------------------------------------
    rng = _rng(seed, 5)
    sources = {
        "image": [{"caption": r["caption"], "name": r["image_name"]} for r in images],
        "video": [{"caption": r["caption"], "name": r["video_name"]} for r in videos],
        "audio": [{"caption": r["caption"], "name": r["audio_name"], "id": r["audio_id"]} for r in audios],
    }
    for modality, n in (("image", counts.it_image), ("video", counts.it_video), ("audio", counts.it_audio)):
        records = [t2x_record(rng, modality, idx, pick(rng, sources[modality])) for idx in range(n)]
        dump(_where(f"{modality}_instruction"), records)

    # --- MosIT --------------------------------------------------------------------------------------------------
    rng = _rng(seed, 6)
    media_dirs = {m: out / _where("mosit_instruction", f"{m}_folder") for m in ("image", "video", "audio")}
    dump(_where("mosit_instruction"), [mosit_dialogue(rng, k, media_dirs) for k in range(counts.mosit)])

    # --- LLaVA-style and Alpaca-style -------------------------------------------------------------------------------
    rng = _rng(seed, 7)
    llava = []
    for i in range(counts.llava):
        item = image_item(rng, theme=(pick(rng, tuple(COLOURS)), pick(rng, SHAPES), pick(rng, tuple(BACKGROUNDS))))
        name = f"{i + 1:012d}.jpg"
        write_image(out / _where("llava_instruction", "image_folder") / name, item)
        llava.append(llava_dialogue(rng, name, item))
    dump(_where("llava_instruction"), llava)
    rng = _rng(seed, 8)
    dump(_where("alpaca_instruction"), [alpaca_record(rng) for _ in range(counts.alpaca)])

    # --- MiniGPT-4 stage 2: curated descriptions in its filter_cap.json layout -----------------------------------
    rng = _rng(seed, 9)
    annotations = []
    for i in range(counts.align):
        item = image_item(rng)
        write_image(out / _where("cc_sbu_align", "image_folder") / f"{i + 2}.jpg", item)
        annotations.append({"image_id": str(i + 2), "caption": f"The image shows {item['caption']}. Nothing else "
                                                               f"is drawn in the picture."})
    path = out / _where("cc_sbu_align")
    _write_json(path, {"annotations": annotations})
    json_counts[path.relative_to(out).as_posix()] = len(annotations)

    # --- held-out split: validation sets and evaluation manifests ----------------------------------------------
    write_heldout(out, seed, heldout or HeldoutCounts(), dump)

    # --- manifest -----------------------------------------------------------------------------------------------
    embed_folders = {"T_X_pair_data": _where("cc3m_dec", "embed_folder"),
                     "IT_data": _where("image_instruction", "embed_folder"),
                     "heldout": _where("cc3m_dec_val", "embed_folder")}
    # caption embeddings belong to preprocess_embeddings: skip the folders that hold them
    skipped = tuple(f"{folder}/" for folder in embed_folders.values())
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        rel = path.relative_to(out).as_posix()
        if rel.startswith(skipped):
            continue
        data = path.read_bytes()
        files[rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    media_counts: dict[str, int] = {}
    for rel in files:
        if not rel.endswith(".json"):
            folder = rel.rsplit("/", 1)[0]
            media_counts[folder] = media_counts.get(folder, 0) + 1
    manifest = {
        "generator": __name__,
        "seed": seed,
        "counts": asdict(counts),
        "json_records": json_counts,
        "media_files": dict(sorted(media_counts.items())),
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "caption_embedding_folders": embed_folders,
        "catalog": catalog_hints(),
        "files": files,
    }
    _write_json(out / "manifest.json", manifest)
    logger.info("synthetic dataset: %d files, %.1f MB in %.1f s under %s", len(files),
                manifest["total_bytes"] / 1e6, time.perf_counter() - started, out)
    return manifest
