"""Write WebDataset shards from a reference-format JSON and its media folders (`make_shards.py`).

Each JSON sample becomes one tar sample with the key ``%09d`` (its index in the file):

* a NEW-schema record (``conversations`` …): its media become members ``input_image.0.jpg``,
  ``output_video.0.mp4`` …, its caption embeddings ``image_caption_embeddings.0.npy`` … (when the file is in the
  embedding folder), and the record itself, with those names, the ``json`` member;
* a raw pair (``image_name`` / ``video_name`` / ``audio_name`` + ``caption``): the img2dataset layout, the medium
  as ``jpg`` / ``mp4`` / ``wav`` … (its own extension), the caption as ``txt``, its embedding ``<name>.npy`` as
  ``npy``, and the row as ``json``.

A listed medium that is missing is left out (training then skips the sample as it would skip the JSON sample).
Shards are written under a temporary name and renamed, members with a fixed mtime, so the output is reproducible.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..constants import MODALITIES
from ..errors import ConfigError, DataError
from ..json_files import read_json_list
from .embeddings import as_string_list, embedding_path

logger = logging.getLogger(__name__)

__all__ = ["ShardReport", "write_shards"]


@dataclass
class ShardReport:
    samples: int = 0
    shards: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # media / embedding files listed but not found


def _suffix(name: str) -> str:
    return Path(name).suffix.lstrip(".").lower() or "bin"


def _sample_members(record: Any, where: str, folders: Mapping[str, Any], embed_folder: Any,
                    report: ShardReport) -> dict[str, bytes]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: a sample must be a JSON object, got {type(record).__name__}")
    members: dict[str, bytes] = {}

    def add(ext: str, path: Path) -> bool:
        if path.is_file():
            members[ext] = path.read_bytes()
            return True
        report.missing.append(str(path))
        return False

    def media(m: str, name: str) -> Path:
        return Path(folders[m]) / name if folders.get(m) is not None else Path(name)

    if "conversations" in record:
        record = dict(record)
        for m in MODALITIES:
            for side in ("input", "output"):
                names = as_string_list(record.get(f"{side}_{m}"), f"{side}_{m}", where)
                renamed = [f"{side}_{m}.{j}.{_suffix(n)}" for j, n in enumerate(names)]
                for ext, name in zip(renamed, names):
                    add(ext, media(m, name))
                if names:
                    record[f"{side}_{m}"] = renamed
            key = f"{m}_caption_embeddings"
            names = as_string_list(record.get(key), key, where)
            if names and embed_folder is not None:
                renamed = [f"{key}.{j}.npy" for j in range(len(names))]
                if all(embedding_path(embed_folder, n).is_file() for n in names):
                    for ext, name in zip(renamed, names):
                        add(ext, embedding_path(embed_folder, name))
                    record[key] = renamed
        members["json"] = json.dumps(record, ensure_ascii=False).encode()
        return members
    for m in MODALITIES:
        name = record.get(f"{m}_name")
        if isinstance(name, str) and isinstance(record.get("caption"), str):
            add(_suffix(name), media(m, name))
            members["txt"] = record["caption"].encode()
            if embed_folder is not None and embedding_path(embed_folder, name + ".npy").is_file():
                add("npy", embedding_path(embed_folder, name + ".npy"))
            members["json"] = json.dumps(record, ensure_ascii=False).encode()
            return members
    raise DataError(f"{where}: neither a NEW-schema sample ('conversations') nor a caption pair "
                    "('image_name' / 'video_name' / 'audio_name' + 'caption')")


def _write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, members in samples:
                for ext, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_shards(data_path: str | os.PathLike, output_dir: str | os.PathLike, *,
                 folders: Mapping[str, str | os.PathLike | None] | None = None,
                 embed_folder: str | os.PathLike | None = None, shard_size: int = 1000,
                 prefix: str | None = None) -> ShardReport:
    """Convert `data_path` into ``output_dir/PREFIX-NNNNN.tar`` shards of `shard_size` samples (see the module
    docstring). `folders`: the media folder per modality (as the catalog entry's); `prefix`: the JSON's stem."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size must be a positive integer, got {shard_size!r}")
    data_path, out = Path(data_path), Path(output_dir)
    records = read_json_list(data_path)
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or data_path.stem
    report = ShardReport()
    folders = dict(folders or {})
    batch: list[tuple[str, dict[str, bytes]]] = []
    for i, record in enumerate(records):
        batch.append((f"{i:09d}", _sample_members(record, f"{data_path} sample {i}", folders, embed_folder, report)))
        if len(batch) == shard_size or i == len(records) - 1:
            path = out / f"{prefix}-{len(report.shards):05d}.tar"
            _write_tar(path, batch)
            report.shards.append(path)
            report.samples += len(batch)
            batch = []
    if report.missing:
        logger.warning("%s: %d listed file(s) not found, left out (e.g. %s)", data_path, len(report.missing),
                       report.missing[0])
    logger.info("%s: %d samples in %d shards in %s", data_path, report.samples, len(report.shards), out)
    return report
