"""Caption embeddings: where they live on disk, and how `preprocess_embeddings.py` computes them.

The caption-alignment loss compares the output projector's prediction with the decoder's own text encoding of the
caption. The reference precomputes these once per caption into ``<embedding name>.npy`` files, float16,
image/video ``(77, D)``, audio ``(D,)``; the dataset reads them back. Both sides map an embedding name
from the JSON to a file with :func:`embedding_file_name`, so they always agree:

* a plain name (letters, digits, ``_ . - ~``) is used unchanged: ``001312382.jpg.npy`` stays ``001312382.jpg.npy``
  (the shipped ``data/embed`` files keep working);
* every other character is percent-encoded (``/`` → ``%2F``, ``:`` → ``%3A``, ``%`` → ``%25``), so a name is always
  ONE file directly inside the embedding folder, never a path outside it (URLs, sub-folders, ``..``), and two
  different names never share a file;
* ``.npy`` is appended when the name lacks it; a name longer than 200 bytes after encoding keeps its first 150
  characters plus a SHA-256 digest of the full name (file-system name limits).

Existing files are never recomputed (checked by exact file name — the reference's ``str.strip('.npy')`` dropped
characters); each file is written to a temporary name in the same folder and renamed into place, so an
interrupted run leaves no half-written embedding.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..constants import MODALITIES
from ..errors import ConfigError, DataError
from ..json_files import read_json_list

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_SUFFIX",
    "EmbeddingReport",
    "caption_jobs",
    "embedding_file_name",
    "embedding_path",
    "load_caption_embedding",
    "precompute_caption_embeddings",
]

EMBEDDING_SUFFIX = ".npy"
_MAX_NAME_BYTES = 200


def embedding_file_name(name: str) -> str:
    """The file name (no folder) that stores the embedding the JSON calls `name`; see the module docstring."""
    if not isinstance(name, str) or not name:
        raise DataError(f"caption-embedding name must be a non-empty string, got {name!r}")
    safe = quote(name, safe="")  # keeps A-Z a-z 0-9 _ . - ~ ; encodes everything else, "/" and "%" included
    if not safe.endswith(EMBEDDING_SUFFIX):
        safe += EMBEDDING_SUFFIX
    if len(safe.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()
        safe = f"{safe[:150]}-{digest}{EMBEDDING_SUFFIX}"
    return safe


def embedding_path(folder: str | os.PathLike, name: str) -> Path:
    """`folder / embedding_file_name(name)`: always a direct child of `folder`."""
    return Path(folder) / embedding_file_name(name)


def load_caption_embedding(path: str | os.PathLike, where: str = "") -> np.ndarray:
    """Read one `.npy` embedding (no pickle). A missing or unreadable file is a `DataError` naming it."""
    prefix = f"{where}: " if where else ""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{prefix}caption embedding file not found: {path} (run preprocess_embeddings.py)") from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{prefix}cannot read caption embedding {path}: {err}") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{prefix}caption embedding {path} has dtype {array.dtype}, expected floating point")
    return array


# ------------------------------------------------------------------------------------------------------ JSON


def as_string_list(value: Any, key: str, where: str) -> list[str]:
    """A JSON field that holds one string or a list of strings, as a list; anything else is a DataError."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise DataError(f"{where}: {key!r} must be a string or a list of strings, got {value!r:.80}")


def caption_jobs(data_path: str | os.PathLike, modality: str,
                 skipped: list[tuple[int, str]] | None = None) -> list[tuple[str, str]]:
    """(embedding name, caption) pairs of one modality in a reference-format JSON, in file order, one per name.

    Accepted rows: generation / instruction samples with ``{m}_captions`` and ``{m}_caption_embeddings`` (strings
    or equally long lists, paired in order), and raw pair files (``cc3m.json`` …) with ``{m}_name`` + ``caption``,
    whose embedding name is ``<media name>.npy``. Rows passed over are appended to ``skipped`` as (row index,
    reason): rows with neither (e.g. MosIT turns of another modality), a pair row without a caption, and every
    empty caption (no embedding is made of empty text; the training data skips such samples). A name that appears
    again with another caption keeps its first caption (a warning says how often).
    """
    skipped = [] if skipped is None else skipped
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {MODALITIES}, got {modality!r}")
    records = read_json_list(data_path)
    jobs: dict[str, str] = {}
    conflicts = 0
    cap_key, emb_key, name_key = f"{modality}_captions", f"{modality}_caption_embeddings", f"{modality}_name"
    for i, row in enumerate(records):
        where = f"{data_path} sample {i}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: a sample must be a JSON object, got {type(row).__name__}")
        if cap_key in row or emb_key in row:
            captions = as_string_list(row.get(cap_key), cap_key, where)
            names = as_string_list(row.get(emb_key), emb_key, where)
            if len(captions) != len(names):
                raise DataError(f"{where}: {len(captions)} {cap_key} but {len(names)} {emb_key}")
            pairs = zip(names, captions)
        elif name_key in row:
            media = as_string_list(row[name_key], name_key, where)
            caption = as_string_list(row.get("caption"), "caption", where)
            if not caption:
                skipped.append((i, f"{name_key} {row[name_key]!r} without a 'caption'"))
                continue
            if len(media) != 1 or len(caption) != 1:
                raise DataError(f"{where}: a pair row needs one {name_key!r} and one 'caption'")
            pairs = [(media[0] + EMBEDDING_SUFFIX, caption[0])]
        else:
            skipped.append((i, f"no {modality} caption fields"))
            continue
        for name, caption in pairs:
            embedding_file_name(name)  # validates the name
            if not caption.strip():
                skipped.append((i, f"empty caption for {name!r}"))
                continue
            if name in jobs:
                conflicts += jobs[name] != caption
                continue
            jobs[name] = caption
    for index, reason in skipped:
        if not reason.startswith("no "):
            logger.warning("%s row %d skipped: %s", data_path, index, reason)
    others = [index for index, reason in skipped if reason.startswith("no ")]
    if others:
        logger.info("%s: %d row(s) without %s captions passed over: %s", data_path, len(others), modality,
                    ", ".join(map(str, others)))
    if not jobs:
        raise DataError(f"{data_path}: no {modality} captions found (expected {cap_key!r} + {emb_key!r}, "
                        f"or {name_key!r} + 'caption')")
    if conflicts:
        logger.warning("%s: %d embedding name(s) appear again with a different caption; the first caption is used",
                       data_path, conflicts)
    return list(jobs.items())


# --------------------------------------------------------------------------------------------------- compute


@dataclass
class EmbeddingReport:
    total: int  # distinct embedding names in the file
    existing: int  # already on disk, not recomputed
    written: int  # computed and written by this run
    output_dir: Path
    shape: tuple[int, ...] | None = None  # of one written array
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason): see caption_jobs


def _atomic_save(path: Path, array: np.ndarray) -> None:
    """Write through a temporary file and a rename: a full disk or a permission error leaves no partial file
    and stops with a `DataError` (every file written before is complete; a rerun computes only the rest)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=EMBEDDING_SUFFIX)
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise DataError(f"cannot write caption embedding {path}: {err}; the files written before it are "
                            "complete (a rerun computes only the missing ones)") from err
        raise


def precompute_caption_embeddings(data_path: str | os.PathLike, modality: str, decoder: Any,
                                  output_dir: str | os.PathLike, batch_size: int = 128,
                                  device: str | None = None, dtype: str | None = None, rank: int = 0,
                                  world_size: int = 1) -> EmbeddingReport:
    """Write the caption embeddings of `data_path` into `output_dir` with the decoder's own text encoder.

    Under a launcher, rank `rank` of `world_size` computes the missing files among every `world_size`-th caption
    (a disjoint part; files are written one by one, atomically, so there is no index to merge); `written` counts
    this rank's.

    `decoder` is a diffusers pipeline folder (or hub id) or an already loaded `Decoder`. Only missing files are
    computed (the decoder is not even loaded when nothing is missing). Defaults as the reference: CUDA in fp16
    when available, else CPU in fp32. Arrays are stored as float16: image/video (77, D), audio (D,).
    """
    import torch
    from tqdm import tqdm

    from ..model.multimodal_decoder import load_decoder

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    skipped: list[tuple[int, str]] = []
    jobs = caption_jobs(data_path, modality, skipped)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    todo = [(name, caption) for name, caption in jobs if not embedding_path(out, name).is_file()]
    report = EmbeddingReport(total=len(jobs), existing=len(jobs) - len(todo), written=0, output_dir=out,
                             skipped=skipped)
    if world_size > 1:  # split the whole list (not what is missing now: other ranks are writing)
        todo = [(n, c) for n, c in jobs[rank::world_size] if not embedding_path(out, n).is_file()]
    if not todo:
        logger.info("%s: all %d %s caption embeddings already in %s", data_path, len(jobs), modality, out)
        return report

    if isinstance(decoder, (str, os.PathLike)):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("float16" if str(device).startswith("cuda") else "float32")
        decoder = load_decoder(modality, decoder, dtype=dtype, device=device)
    elif getattr(decoder, "modality", None) != modality:
        raise ConfigError(f"a {getattr(decoder, 'modality', type(decoder).__name__)} decoder cannot embed "
                          f"{modality} captions")
    expected_ndim = 1 if modality == "audio" else 2
    batches = range(0, len(todo), batch_size)
    for start in tqdm(batches, desc=f"{modality} caption embeddings", unit="batch", disable=len(batches) < 2):
        chunk = todo[start:start + batch_size]
        embeddings = decoder.encode_captions([caption for _, caption in chunk], batch_size=len(chunk))
        arrays = embeddings.detach().float().cpu().numpy().astype(np.float16)
        for (name, _), array in zip(chunk, arrays):
            if array.ndim != expected_ndim:
                raise DataError(f"{modality} decoder returned an embedding of shape {array.shape}")
            if not np.isfinite(array).all():  # e.g. float16 overflow: never store what the loss cannot use
                raise DataError(f"{modality} decoder returned NaN or infinite values for {name!r}")
            _atomic_save(embedding_path(out, name), array)
            report.shape = tuple(array.shape)
        report.written += len(chunk)
    logger.info("%s: wrote %d %s caption embeddings %s to %s (%d already there)", data_path, report.written,
                modality, report.shape, out, report.existing)
    return report
