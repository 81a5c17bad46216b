"""WebDataset tar shards as training data: streaming, shuffled with a buffer, split across ranks and DataLoader
workers without overlap, and exactly resumable.

The layout is img2dataset's / video2dataset's: a ``.tar`` of consecutive members sharing a key, ``KEY.EXT``
(the key is the member path up to the first dot of its file name). A sample is either

* a caption pair: one medium (``jpg`` / ``jpeg`` / ``png`` / ``webp``, ``mp4`` / ``webm`` / ``avi`` / ``mkv``, or
  ``wav`` / ``flac`` / ``mp3``) + ``txt`` (the caption) [+ ``npy``: its caption embedding], read with the catalog
  entry's ``modality`` and ``task`` as the 2023 pair text (`nextgpt.dataset.legacy_pairs`); or
* a NEW-schema record: a ``json`` member with ``conversations`` whose media / caption-embedding names are other
  members' extensions (what ``make_shards.py`` writes from a reference JSON: ``input_image.0.jpg`` …).

Members are read with Python's ``tarfile`` (no dependency): the reader needs nothing beyond sequential reads,
and owning it keeps the order a pure function of (seed, epoch), which exact resuming needs.

Order. The shards are dealt once to ``world_size x max(1, num_workers)`` streams (largest first, to the stream
with the fewest samples): stream ``rank * W + worker``. Each epoch a stream reads its shards in a seeded order and
shuffles samples through a buffer of ``data.shuffle_buffer`` samples per catalog entry; micro-batches hold samples
of one catalog entry (as modality grouping does for JSON data). Every rank takes the same number of optimizer
steps: the smallest rank's full batches; the rest of an epoch's samples are left over, like ``drop_last``.

Resume. The position is counted in optimizer steps, as the JSON sampler's is. From it each worker recomputes how
many micro-batches of its stream the rank consumed (the DataLoader takes workers' batches in turn) and regenerates
the stream up to there without decoding: it resumes mid-shard exactly where an uninterrupted run would be. (The
shards done and the offset in the current one follow from the position; they alone would not do, because the
shuffle buffer holds samples of several shards.)
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from ..conversation import SignalVocab
from ..errors import CheckpointError, ConfigError, DataError
from .json_datasets import ConversationDataset, SampleOptions
from .legacy_pairs import check_pair_task, pair_record

logger = logging.getLogger(__name__)

__all__ = ["MEDIA_EXTENSIONS", "ShardSource", "ShardStream", "expand_shards", "read_tar_samples", "scan_tar"]

MEDIA_EXTENSIONS = {"image": ("jpg", "jpeg", "png", "webp"), "video": ("mp4", "webm", "avi", "mkv"),
                    "audio": ("wav", "flac", "mp3")}
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_KEY = re.compile(r"^((?:.*/|)[^./][^.]*)\.([^/]+)$")


def expand_shards(pattern: str | os.PathLike) -> list[Path]:
    """Shard files of a pattern: ``{00000..00099}`` ranges (zero padding kept) and glob wildcards."""
    text = str(pattern)
    patterns = [text]
    while any(_BRACES.search(p) for p in patterns):
        expanded = []
        for p in patterns:
            m = _BRACES.search(p)
            if not m:
                expanded.append(p)
                continue
            lo, hi, width = int(m.group(1)), int(m.group(2)), len(m.group(1))
            expanded += [p[:m.start()] + f"{i:0{width}d}" + p[m.end():] for i in range(lo, hi + 1)]
        patterns = expanded
    paths = sorted({Path(f) for p in patterns for f in (glob.glob(p) if glob.has_magic(p) else [p])})
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"shards {text}: {len(missing)} file(s) not found, e.g. {missing[0]}")
    if not paths:
        raise DataError(f"shards {text}: no file matches")
    return paths


def _split_name(name: str) -> tuple[str, str] | None:
    m = _KEY.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"shard {path}: cannot read as a tar file: {err}") from None


def scan_tar(path: str | os.PathLike) -> list[str]:
    """The sample keys of a shard, in order (headers only)."""
    keys: list[str] = []
    try:
        with _open_tar(Path(path)) as tar:
            for info in tar:
                parts = _split_name(info.name) if info.isfile() else None
                if parts and (not keys or keys[-1] != parts[0]):
                    keys.append(parts[0])
    except tarfile.TarError as err:
        raise DataError(f"shard {path}: damaged tar file: {err}") from None
    return keys


def read_tar_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of every sample of a shard, in order."""
    key, members = None, {}
    try:
        with _open_tar(Path(path)) as tar:
            for info in tar:
                parts = _split_name(info.name) if info.isfile() else None
                if not parts:
                    continue
                if parts[0] != key:
                    if key is not None:
                        yield key, members
                    key, members = parts[0], {}
                members[parts[1]] = tar.extractfile(info).read()
    except tarfile.TarError as err:
        raise DataError(f"shard {path}: damaged tar file: {err}") from None
    if key is not None:
        yield key, members


class ShardSource(ConversationDataset):
    """The samples of one catalog entry's shards (see the module docstring); `ShardStream` reads them.

    Args: `shards_path`: a shard pattern; `modality` / `task` / `prompt`: how caption pairs become samples
    (``task`` "comprehension" or "generation"); `embed_folder`: caption embeddings of samples without an ``npy``.
    """

    def __init__(self, shards_path: str | os.PathLike, tokenizer: Any, signal: SignalVocab | None,
                 options: SampleOptions | None = None, *, modality: str | None = None, task: str | None = None,
                 prompt: str = "generate a caption", normalize_caption: bool = True,
                 embed_folder: str | os.PathLike | None = None, name: str | None = None) -> None:
        if modality is not None or task is not None:
            check_pair_task(modality, task)
        self.shards = expand_shards(shards_path)
        self.modality, self.task, self.prompt, self.normalize_caption = modality, task, prompt, normalize_caption
        self._members: dict[str, bytes] = {}
        self._tmp: str | None = None
        super().__init__(shards_path, tokenizer, signal, options, embed_folder=embed_folder or self.shards[0].parent,
                         name=name or Path(shards_path).parent.name)
        self._shard: Path = self.shards[0]
        self._key = ""

    def _read_records(self) -> list[Any]:
        return []  # samples are read from the shards by ShardStream

    def record(self, key: str, members: dict[str, bytes], where: str) -> dict[str, Any]:
        """The NEW-schema record of a sample (its media names are member extensions)."""
        if "json" in members:
            try:
                record = json.loads(members["json"])
            except (ValueError, UnicodeDecodeError) as err:
                raise DataError(f"{where}: the json member is not valid JSON: {err}") from None
            if isinstance(record, dict) and "conversations" in record:
                return record
        if self.task is None:
            raise DataError(f"{where}: no json member with 'conversations', and catalog entry {self.name!r} has no "
                            "modality / task to read it as a caption pair")
        if "txt" not in members:
            raise DataError(f"{where}: a caption pair needs a txt member (has {sorted(members)})")
        ext = next((e for e in MEDIA_EXTENSIONS[self.modality] if e in members), MEDIA_EXTENSIONS[self.modality][0])
        return pair_record(self.modality, self.task, ext, members["txt"].decode("utf-8", "replace"), "npy",
                           self.prompt, self.normalize_caption)

    def build(self, shard: Path, key: str, members: dict[str, bytes]) -> Any:
        """The sample dict (or SkippedSample) of one shard sample."""
        index = f"{shard.name}/{key}"
        item = self._parse(self.record(key, members, f"shard {shard} sample {key}"), index)
        self._shard, self._key, self._members = shard, key, members
        try:
            return self._sample(item, index)
        finally:
            self._members = {}
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def _extract(self, name: str) -> Path:
        """A member as a file for the decoders (a path that does not exist when the sample lacks it)."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="nextgpt-shard-")
        path = Path(self._tmp) / f"{self._key.replace('/', '_')}.{name}"
        if name in self._members:
            path.write_bytes(self._members[name])
        return path

    def _media_path(self, modality: str, name: str) -> Path:
        return self._shard / f"{self._key}.{name}"  # the feature-cache key: the member inside its shard

    def _media_file(self, modality: str, name: str) -> Path:
        return self._extract(name)

    def _embedding_file(self, name: str) -> Path:
        return self._extract(name) if name in self._members else super()._embedding_file(name)


def _deal(counts: Sequence[int], streams: int) -> list[list[int]]:
    """Shard indices per stream: largest shard first, each to the stream with the fewest samples."""
    out: list[list[int]] = [[] for _ in range(streams)]
    totals = [0] * streams
    for shard in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        k = totals.index(min(totals))
        out[k].append(shard)
        totals[k] += counts[shard]
    return [sorted(s) for s in out]


def round_robin_state(counts: Sequence[int], n: int) -> tuple[list[int], list[int]]:
    """After a DataLoader yielded `n` batches of workers holding `counts` batches (it takes the workers' batches in
    turn, passing over exhausted ones): how many each worker gave, and the workers with batches left in the order
    the DataLoader would take them next."""
    workers = len(counts)
    taken, turn = [0] * workers, 0
    while n > 0 and any(t < c for t, c in zip(taken, counts)):
        if taken[turn] < counts[turn]:
            taken[turn] += 1
            n -= 1
        turn = (turn + 1) % workers
    order = [(turn + k) % workers for k in range(workers)]
    return taken, [w for w in order if taken[w] < counts[w]]


class ShardStream(IterableDataset):
    """The shards of every configured `ShardSource` as this rank's stream of micro-batches (lists of samples; the
    DataLoader runs with ``batch_size=None`` and the collator). Also its own resumable position (see the module
    docstring): ``set_epoch``, ``advance``, ``state_dict``, ``load_state_dict``, ``steps_per_epoch``."""

    def __init__(self, sources: Sequence[ShardSource], names: Sequence[str], *, micro_batch_size: int,
                 world_size: int = 1, rank: int = 0, gradient_accumulation_steps: int = 1, seed: int = 42,
                 buffer_size: int = 1000, num_workers: int = 0) -> None:
        self.sources, self.names = list(sources), list(names)
        self.micro_batch_size, self.world_size, self.rank = int(micro_batch_size), int(world_size), int(rank)
        self.gradient_accumulation_steps, self.seed = int(gradient_accumulation_steps), int(seed)
        self.buffer_size, self.num_workers = int(buffer_size), int(num_workers)
        if min(self.micro_batch_size, self.world_size, self.gradient_accumulation_steps, self.buffer_size) < 1:
            raise ConfigError("micro_batch_size, world_size, gradient_accumulation_steps and buffer_size must be "
                              "positive")
        self.shards = [(s, path) for s, source in enumerate(self.sources) for path in source.shards]
        self.keys = [scan_tar(path) for _, path in self.shards]
        self.workers = max(1, self.num_workers)
        self.assignment = _deal([len(k) for k in self.keys], self.world_size * self.workers)
        self.epoch, self.position = 0, 0
        self.batches = [[self._stream_batches(r * self.workers + w) for w in range(self.workers)]
                        for r in range(self.world_size)]
        self.steps_per_epoch = min(sum(b) for b in self.batches) // self.gradient_accumulation_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(f"shards {', '.join(self.names)}: no complete optimizer step for some rank ("
                              f"{len(self.shards)} shards, {self.num_samples} samples dealt to "
                              f"{self.world_size * self.workers} streams = ranks x DataLoader workers, micro batch "
                              f"{self.micro_batch_size}); use more shards or fewer workers")
        logger.info("shards: %d files, %d samples, %d streams, %d steps per epoch", len(self.shards),
                    self.num_samples, len(self.assignment), self.steps_per_epoch)

    @property
    def num_samples(self) -> int:
        return sum(len(k) for k in self.keys)

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.world_size * self.gradient_accumulation_steps

    def _stream_batches(self, stream: int) -> int:
        per_source: dict[int, int] = {}
        for shard in self.assignment[stream]:
            source = self.shards[shard][0]
            per_source[source] = per_source.get(source, 0) + len(self.keys[shard])
        return sum(c // self.micro_batch_size for c in per_source.values())

    # ------------------------------------------------------------------------------------------- position

    def set_epoch(self, epoch: int, seed: int | None = None) -> None:
        """Select the epoch (another epoch restarts at position 0); with `seed`, also the sources' target draws."""
        if int(epoch) != self.epoch:
            self.epoch, self.position = int(epoch), 0
        if seed is not None:
            for source in self.sources:
                source.set_epoch(epoch, seed)

    def advance(self, num_global_batches: int = 1) -> None:
        new = self.position + int(num_global_batches)
        if not 0 <= new <= self.steps_per_epoch:
            raise ConfigError(f"position {new} outside [0, {self.steps_per_epoch}] steps of epoch {self.epoch}")
        self.position = new

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "webdataset", "epoch": self.epoch, "position": self.position, "seed": self.seed,
                "global_batch_size": self.global_batch_size, "streams": len(self.assignment),
                "num_shards": len(self.shards), "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("kind", "seed", "global_batch_size", "streams", "num_shards", "num_samples"):
            if state.get(key) != mine[key]:
                raise CheckpointError(f"data position was saved with {key}={state.get(key)!r} but this run has "
                                      f"{key}={mine[key]!r}; the sample order would differ")
        if not 0 <= int(state["position"]) <= self.steps_per_epoch:
            raise CheckpointError(f"data position {state['position']} outside [0, {self.steps_per_epoch}]")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    # ------------------------------------------------------------------------------------------- reading

    def raw_batches(self, stream: int, epoch: int) -> Iterator[list[tuple[int, Path, str, dict[str, bytes]]]]:
        """The micro-batches of one stream in one epoch, undecoded: (source, shard, key, members) per sample."""
        rng = np.random.default_rng([self.seed, epoch, stream])
        buffers: dict[int, list] = {}
        pending: dict[int, list] = {}

        def push(sample: tuple) -> Iterator[list]:
            batch = pending.setdefault(sample[0], [])
            batch.append(sample)
            if len(batch) == self.micro_batch_size:
                pending[sample[0]] = []
                yield batch

        for shard in rng.permutation(self.assignment[stream]).tolist():
            source, path = self.shards[shard]
            for key, members in read_tar_samples(path):
                buffer = buffers.setdefault(source, [])
                buffer.append((source, path, key, members))
                if len(buffer) > self.buffer_size:
                    j = int(rng.integers(len(buffer)))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    yield from push(buffer.pop())
        for source in sorted(buffers):
            buffer = buffers[source]
            for j in rng.permutation(len(buffer)).tolist():
                yield from push(buffer[j])

    def _worker(self) -> int:
        info = get_worker_info()
        count = info.num_workers if info else 1
        if count != self.workers:
            raise ConfigError(f"the shard stream was planned for {self.workers} DataLoader worker(s) but runs "
                              f"in {count}")
        return info.id if info else 0

    def __iter__(self) -> Iterator[list[Any]]:
        """This worker's micro-batches from the position to the end of the rank's epoch. A fresh DataLoader takes
        its workers in turn from worker 0, so after a resume worker j plays the stream whose turn is j-th."""
        worker = self._worker()
        counts = self.batches[self.rank]
        gas = self.gradient_accumulation_steps
        taken, order = round_robin_state(counts, self.position * gas)
        if worker >= len(order):
            return
        logical = order[worker]
        skip, stop = taken[logical], round_robin_state(counts, self.steps_per_epoch * gas)[0][logical]
        for k, raw in enumerate(self.raw_batches(self.rank * self.workers + logical, self.epoch)):
            if k >= stop:
                return
            if k >= skip:
                yield [self.sources[source].build(path, key, members) for source, path, key, members in raw]
