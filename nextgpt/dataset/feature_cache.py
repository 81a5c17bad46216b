"""Encoder feature cache: the frozen encoder's output for every input medium, computed once and read back.

Stage 1 (and every stage) runs the frozen ImageBind on every image, clip and sound at every epoch. Its output
depends only on the medium, the encoder's weights, its output kind, its dtype and the preprocessing, so
``preprocess_features.py`` computes it once and training reads it instead (``data.feature_cache: DIR``). The
input projector still runs on the cached features, so the math is unchanged.

Layout of a cache folder::

    DIR/identity.json                 the encoder identity (see `encoder_identity`); a cache is used only by a
                                      model whose identity is equal
    DIR/index.json                    {media key: [shard file, modality]}, merged at the end of every run
    DIR/shards/shard-SSSSS-rR.safetensors   up to `shard_size` features each, tensor name = media key, in the
                                      encoder's output dtype: tokens (T, D) (NEW) or pooled (1, D) (LEGACY)

A media key is the media path relative to ``data.root`` (POSIX separators; absolute when outside it), so a cache
survives moving the data root. Every shard is written to a temporary name and renamed, so a killed run leaves only
complete shards; a rerun keeps them (and every entry of the index) and computes the rest. Under a launcher each
rank encodes a disjoint part (``todo[rank::world]``), writes its own shards, and rank 0 merges the index.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..errors import ConfigError, DataError, MediaError

logger = logging.getLogger(__name__)

__all__ = ["FeatureCache", "FeatureCacheReport", "build_feature_cache", "encoder_identity", "media_key"]

FORMAT = 1
# Bump when ImageBind's input preprocessing changes (nextgpt/model/multimodal_encoder/imagebind/data.py).
PREPROCESS_VERSION = 1
IDENTITY_FILE = "identity.json"
INDEX_FILE = "index.json"
SHARD_DIR = "shards"
_SHARD_RE = re.compile(r"^shard-(\d+)-r(\d+)\.safetensors$")
_INFO_ONLY = ("checkpoint",)  # recorded for people, not compared
_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _HASHES[memo] = digest.hexdigest()
    return _HASHES[memo]


def encoder_identity(encoder_config: Any, image_aspect_ratio: str, dtype: torch.dtype | str) -> dict[str, Any]:
    """What a cached feature depends on: the checkpoint's SHA-256, the architecture, the output kind (tokens /
    pooled), the dtype and the preprocessing settings. `encoder_config` is a `model.encoder` section."""
    from ..dtypes import as_dtype, dtype_name
    from ..model.multimodal_encoder.encoder import imagebind_kwargs

    if getattr(encoder_config, "kind", "imagebind") != "imagebind":
        raise ConfigError(f"data.feature_cache: the feature cache holds ImageBind features; model.encoder.kind is "
                          f"{encoder_config.kind!r} (unset data.feature_cache for this model)")
    checkpoint = encoder_config.checkpoint
    if not checkpoint or not Path(checkpoint).is_file():
        raise ConfigError(f"a feature cache needs the encoder's checkpoint file (model.encoder.checkpoint = "
                          f"{checkpoint!r}): a randomly initialised encoder has no identity")
    kwargs = imagebind_kwargs(encoder_config.arch, checkpoint)
    arch = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()
    return {"format": FORMAT, "checkpoint": str(checkpoint), "checkpoint_sha256": _file_sha256(Path(checkpoint)),
            "arch_sha256": arch, "output": encoder_config.output, "dtype": dtype_name(as_dtype(dtype)),
            "preprocess": {"image_aspect_ratio": image_aspect_ratio, "version": PREPROCESS_VERSION}}


def _differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    keys = sorted((set(have) | set(want)) - set(_INFO_ONLY))
    return [f"{k}: cache {have.get(k)!r}, model {want.get(k)!r}" for k in keys if have.get(k) != want.get(k)]


def media_key(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """The cache key of a media file: its path relative to `root`, or its absolute path when outside it."""
    path, root = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _check_identity(root: Path, identity: dict[str, Any]) -> None:
    stored = _read_json(root / IDENTITY_FILE)
    diff = _differences(stored, identity)
    if diff:
        raise ConfigError(f"feature cache {root} was made by another encoder or other settings; refusing it "
                          f"({'; '.join(diff)}). Rebuild it with preprocess_features.py or unset data.feature_cache")


class FeatureCache:
    """Reads a cache folder for training. Opening checks its identity against the model's (ConfigError when they
    differ); `get` returns a feature tensor or None (then the caller decodes the medium: a counted fallback).
    Picklable (DataLoader workers reopen the shard files)."""

    def __init__(self, folder: str | os.PathLike, identity: dict[str, Any], root: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.root = Path(root)
        if not (self.folder / IDENTITY_FILE).is_file():
            raise ConfigError(f"data.feature_cache: {self.folder} is not a feature cache (no {IDENTITY_FILE}); "
                              "make one with preprocess_features.py")
        _check_identity(self.folder, identity)
        index_path = self.folder / INDEX_FILE
        self.index: dict[str, list[str]] = _read_json(index_path) if index_path.is_file() else {}
        self._handles: dict[str, Any] = {}
        logger.info("feature cache %s: %d entries", self.folder, len(self.index))

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}

    def get(self, modality: str, path: str | os.PathLike) -> torch.Tensor | None:
        key = media_key(path, self.root)
        entry = self.index.get(key)
        if entry is None or entry[1] != modality:
            return None
        shard = entry[0]
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(self.folder / SHARD_DIR / shard), framework="pt")
        return self._handles[shard].get_tensor(key)


# ---------------------------------------------------------------------------------------------------- writing


@dataclass
class FeatureCacheReport:
    total: int = 0  # distinct media items of the datasets
    existing: int = 0  # already in the cache
    written: int = 0  # encoded by this rank
    failed: list[str] = field(default_factory=list)  # keys this rank could not decode (left out; retried next run)
    output_dir: Path | None = None


def _scan_shards(folder: Path) -> dict[str, list[str]]:
    """{key: [shard, modality]} of every complete shard (temporary files are ignored)."""
    from safetensors import safe_open

    index: dict[str, list[str]] = {}
    for path in sorted((folder / SHARD_DIR).glob("shard-*.safetensors")):
        if not _SHARD_RE.match(path.name):
            continue
        with safe_open(str(path), framework="pt") as f:
            modalities = json.loads((f.metadata() or {}).get("modalities", "{}"))
        for key, modality in modalities.items():
            index[key] = [path.name, modality]
    return index


def _next_sequence(folder: Path) -> int:
    seqs = [int(m.group(1)) for p in (folder / SHARD_DIR).iterdir() if (m := _SHARD_RE.match(p.name))]
    return max(seqs, default=-1) + 1


def _write_shard(folder: Path, name: str, tensors: dict[str, torch.Tensor], modalities: dict[str, str]) -> None:
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=folder / SHARD_DIR, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                  metadata={"format": "pt", "modalities": json.dumps(modalities)})
        os.replace(tmp, folder / SHARD_DIR / name)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_feature_cache(items: Iterable[tuple[str, str | os.PathLike]], encoder: Any, identity: dict[str, Any],
                        output_dir: str | os.PathLike, root: str | os.PathLike, *, image_aspect_ratio: str,
                        batch_size: int = 32, shard_size: int = 1024, rank: int = 0, world_size: int = 1,
                        barrier: Callable[[], None] = lambda: None) -> FeatureCacheReport:
    """Encode every (modality, media path) of `items` that the cache at `output_dir` lacks (see the module
    docstring). `encoder` is a `MultimodalEncoder`; `identity` its `encoder_identity`. Every rank of a launcher
    run calls this with the same items; `barrier` synchronises them before rank 0 merges the index."""
    from ..model.multimodal_encoder.imagebind.data import preprocess

    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size must be positive, got {batch_size}, {shard_size}")
    out = Path(output_dir)
    if rank == 0:
        (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        if (out / IDENTITY_FILE).is_file():
            _check_identity(out, identity)
        else:
            _write_json(out / IDENTITY_FILE, identity)
    barrier()
    _check_identity(out, identity)
    wanted: dict[str, tuple[str, Path]] = {}
    for modality, path in items:
        wanted.setdefault(media_key(path, root), (modality, Path(path)))
    done = _scan_shards(out)
    todo = sorted(k for k in wanted if k not in done)
    report = FeatureCacheReport(total=len(wanted), existing=len(wanted) - len(todo), output_dir=out)
    mine = todo[rank::world_size]
    seq = _next_sequence(out)
    barrier()  # every rank has chosen its sequence number before any new shard appears
    pending: dict[str, torch.Tensor] = {}
    pending_modality: dict[str, str] = {}

    def flush() -> None:
        nonlocal seq
        if pending:
            _write_shard(out, f"shard-{seq:05d}-r{rank}.safetensors", pending, pending_modality)
            seq += 1  # (sequence numbers are per rank: the name carries the rank)
            pending.clear()
            pending_modality.clear()

    by_modality: dict[str, list[str]] = {}
    for key in mine:
        by_modality.setdefault(wanted[key][0], []).append(key)
    for modality, keys in by_modality.items():
        for start in range(0, len(keys), batch_size):
            ok, inputs = [], []
            for key in keys[start:start + batch_size]:
                try:
                    inputs.append(preprocess([wanted[key][1]], modality, aspect_ratio=image_aspect_ratio))
                    ok.append(key)
                except MediaError as err:
                    logger.warning("feature cache: cannot decode %s: %s", wanted[key][1], err)
                    report.failed.append(key)
            if not ok:
                continue
            features = encoder(torch.cat(inputs), modality).cpu()
            for key, feature in zip(ok, features):
                pending[key] = feature.clone()
                pending_modality[key] = modality
                if len(pending) >= shard_size:
                    flush()
            report.written += len(ok)
    flush()
    barrier()
    if rank == 0:
        _write_json(out / INDEX_FILE, _scan_shards(out))
        for leftover in (out / SHARD_DIR).glob(".tmp-*"):  # from a killed run
            leftover.unlink(missing_ok=True)
    barrier()
    return report


def dataset_media(datasets: Sequence[Any]) -> list[tuple[str, Path]]:
    """(modality, path) of every encoder input of the given datasets (each with an `input_media()` method)."""
    return [pair for dataset in datasets for pair in dataset.input_media()]
