"""Training samples from reference-format JSON files (NEW schema; the LEGACY pair files: `legacy_pairs.py`).

One class, :class:`ConversationDataset`, serves every NEW file (comprehension, generation, T-T+X, MosIT, LLaVA,
Alpaca, VideoChat): a sample is a ``conversations`` list plus optional media and caption fields. Placeholders in
HUMAN turns (``<image>`` / ``<video>`` / ``<audio>``) are encoder inputs (``input_*`` files, one per placeholder, in
order); placeholders in GPT turns are signal-token spans, each paired in order with one caption embedding
(``*_caption_embeddings``, or the raw ``*_captions`` when ``data.caption_embeddings: online``) and, when the caller
asks for decoder targets, one ``output_*`` file.

Loading the JSON validates every sample (structure, turn order, placeholder counts against media / caption counts)
and raises :class:`DataError` naming the file and the sample index. ``__getitem__`` is lazy: it tokenizes, checks
the spliced length, reads caption embeddings and decodes media. A missing or undecodable media file, or a sample
that cannot fit ``max_length``, yields a :class:`SkippedSample` (logged) that the collator drops and counts — the
counts travel inside the batch, so they reach the trainer from DataLoader workers; with ``strict`` it is a
``DataError`` instead. A missing caption-embedding file is always a ``DataError`` (a preprocessing mistake, not bad
data).

Length: the caller gives ``max_length`` and ``media_tokens`` (LLM positions per input item after the projector);
a sample longer than ``max_length`` after splicing loses trailing text when that cut crosses no placeholder and
no signal span and leaves a supervised token, and is skipped (``too_long``) otherwise.

Limits, without the reference's index errors: beyond ``max_media_per_sample`` input items of a modality,
or ``MAX_*_LENGTH`` (16) output spans of a modality, the extra items are dropped TOGETHER with their placeholders
(the first ones are kept, deterministically, instead of the reference's random pick), with a warning.
"""
from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import (
    IGNORE_INDEX,
    MAX_AUDIO_LENGTH,
    MAX_IMAGE_LENGTH,
    MAX_VIDEO_LENGTH,
    MODALITIES,
    PLACEHOLDER_TOKEN,
)
from ..conversation import SignalVocab, TokenizedExample, tokenize_conversation
from ..errors import DataError, MediaError
from ..json_files import read_json_list
from . import media as target_media
from .embeddings import as_string_list, embedding_path, load_caption_embedding
from .samples import (
    SKIP_BAD_EMBEDDING,
    SKIP_TOO_LONG,
    SampleOptions,
    SkippedSample,
    content_problem,
    media_skip_reason,
)

logger = logging.getLogger(__name__)

__all__ = ["ConversationDataset"]

MAX_OUTPUT_SPANS = {"image": MAX_IMAGE_LENGTH, "video": MAX_VIDEO_LENGTH, "audio": MAX_AUDIO_LENGTH}
_MAX_WARNINGS = 5  # per dataset and kind; further ones go to debug


@dataclass(slots=True)
class _Item:
    """One validated sample, as read from the JSON (after the limits above)."""

    turns: list[dict]
    inputs: dict[str, list[str]]  # input_* names per modality, in placeholder order
    outputs: dict[str, list[str]]  # output_* names (decoder targets), in span order; may be empty
    embeddings: dict[str, list[str]]  # *_caption_embeddings names, in span order
    captions: dict[str, list[str]]  # *_captions, in span order
    spans: dict[str, int]  # signal spans (gpt-side placeholders) per modality
    modality: str
    length: int
    problem: tuple[str, str] | None = None  # (skip reason, message): see samples.content_problem


_PLACEHOLDER_RE = {m: re.compile(re.escape(PLACEHOLDER_TOKEN[m]) + r"[ \t]?\n?") for m in MODALITIES}


def _drop_placeholders(turns: list[dict], side: int, modality: str, keep: int) -> list[dict]:
    """Remove the `modality` placeholders of one side (0 human, 1 gpt) after the first `keep` ones."""
    seen = 0

    def repl(match: re.Match) -> str:
        nonlocal seen
        seen += 1
        return match.group(0) if seen <= keep else ""

    out = []
    for k, turn in enumerate(turns):
        if k % 2 == side:
            turn = {**turn, "value": _PLACEHOLDER_RE[modality].sub(repl, turn["value"])}
        out.append(turn)
    return out


class ConversationDataset(Dataset):
    """Samples of one NEW-schema JSON file (see the module docstring).

    Args:
        data_path: the JSON file.
        tokenizer, signal: the LLM tokenizer with signal tokens registered, and their `SignalVocab`.
        options: `SampleOptions` (template, caption mode, targets, limits, strictness).
        image_folder / video_folder / audio_folder: where that modality's media names are resolved (a name
            with no folder is used as given: absolute, or relative to the working directory).
        embed_folder: where caption embeddings are read (cache mode).
        name: the catalog name (sample ids are ``"<name>:<index>"``).
    """

    def __init__(self, data_path: str | os.PathLike, tokenizer: Any, signal: SignalVocab | None,
                 options: SampleOptions | None = None, *, image_folder: str | os.PathLike | None = None,
                 video_folder: str | os.PathLike | None = None, audio_folder: str | os.PathLike | None = None,
                 embed_folder: str | os.PathLike | None = None, name: str | None = None) -> None:
        self.data_path = Path(data_path)
        self.tokenizer = tokenizer
        self.signal = signal
        self.options = options or SampleOptions()
        self.folders = {"image": image_folder, "video": video_folder, "audio": audio_folder}
        self.embed_folder = Path(embed_folder) if embed_folder is not None else None
        self.name = name or self.data_path.stem
        self._warned: dict[str, int] = {}
        self.seed, self.epoch = 0, 0  # random draws of sample i come from (seed, epoch, i): see set_epoch
        records = self._read_records()
        self.items = [self._parse(record, i) for i, record in enumerate(records)]
        self._check_embedding_widths()
        logger.info("dataset %s: %d samples from %s", self.name, len(self.items), self.data_path)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Random draws (the window of a long target video / audio) of sample i come from a generator seeded by
        (seed, epoch, i): the same in every DataLoader worker layout and after a resume. Call before each epoch's
        iterator is created (workers receive a copy of the dataset then)."""
        self.seed, self.epoch = int(seed), int(epoch)

    # ------------------------------------------------------------------------------------------------- loading

    def _read_records(self) -> list[Any]:
        return read_json_list(self.data_path)

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        count = self._warned.get(kind, 0)
        self._warned[kind] = count + 1
        if count == _MAX_WARNINGS - 1:
            message += " (further ones of this kind are logged at debug level)"
        logger.log(logging.WARNING if count < _MAX_WARNINGS else logging.DEBUG, message, *args)

    def _parse(self, record: Any, index: int) -> _Item:
        where = f"{self.data_path} sample {index}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: a sample must be a JSON object, got {type(record).__name__}")
        turns = record.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{where}: 'conversations' must be a non-empty list of turns")
        for k, turn in enumerate(turns):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) \
                    or turn.get("from") not in ("human", "gpt"):
                raise DataError(f"{where}: turn {k} must be {{'from': 'human'|'gpt', 'value': str}}, got {turn!r:.80}")
        if turns[0]["from"] != "human":  # the reference drops a leading non-human turn
            turns = turns[1:]
            if not turns:
                raise DataError(f"{where}: no human turn")
        for k, turn in enumerate(turns):
            expected = "human" if k % 2 == 0 else "gpt"
            if turn["from"] != expected:
                raise DataError(f"{where}: turn {k} is from {turn['from']!r}, expected {expected!r} "
                                "(turns must alternate human, gpt, ...)")
        turns = [{"from": t["from"], "value": t["value"]} for t in turns]
        problem = content_problem(record, turns)
        if problem and self.options.strict:
            raise DataError(f"{where}: {problem[1]} (data.strict is true)")

        def strings(key: str) -> list[str]:
            return as_string_list(record.get(key), key, where)

        cache = self.options.caption_embeddings == "cache"
        inputs, outputs, embeddings, captions = {}, {}, {}, {}
        n_in, n_out = {}, {}
        for m in MODALITIES:
            token = PLACEHOLDER_TOKEN[m]
            n_in[m] = sum(t["value"].count(token) for t in turns[0::2])
            n_out[m] = sum(t["value"].count(token) for t in turns[1::2])
            inputs[m] = strings(f"input_{m}")
            if len(inputs[m]) != n_in[m]:
                raise DataError(f"{where}: {n_in[m]} {token} placeholder(s) in human turns but "
                                f"{len(inputs[m])} file(s) in 'input_{m}'")
            embeddings[m] = strings(f"{m}_caption_embeddings")
            captions[m] = strings(f"{m}_captions")
            key, listed = (f"{m}_caption_embeddings", embeddings[m]) if cache else (f"{m}_captions", captions[m])
            if len(listed) != n_out[m]:
                raise DataError(f"{where}: {n_out[m]} {token} placeholder(s) in gpt turns (signal spans) but "
                                f"{len(listed)} entr{'y' if len(listed) == 1 else 'ies'} in {key!r}")
            outputs[m] = strings(f"output_{m}")
            if m in self.options.targets and outputs[m] and len(outputs[m]) != n_out[m]:
                raise DataError(f"{where}: {n_out[m]} {token} placeholder(s) in gpt turns but "
                                f"{len(outputs[m])} file(s) in 'output_{m}'")
            if n_out[m] and cache and self.embed_folder is None:
                raise DataError(f"{where}: the sample has {m} signal spans but dataset {self.name!r} has no "
                                "caption-embedding folder (catalog 'embed_folder' or data.embed_dir)")

        # Limits: drop the extra items together with their placeholders.
        for m in MODALITIES:
            keep = self.options.max_media_per_sample
            if n_in[m] > keep:
                self._warn("max_media", "%s: %d input %s items, keeping the first %d (max_media_per_sample)",
                           where, n_in[m], m, keep)
                turns = _drop_placeholders(turns, 0, m, keep)
                inputs[m], n_in[m] = inputs[m][:keep], keep
            keep = MAX_OUTPUT_SPANS[m]
            if n_out[m] > keep:
                self._warn("max_output", "%s: %d output %s spans, keeping the first %d (MAX_%s_LENGTH)",
                           where, n_out[m], m, keep, m.upper())
                turns = _drop_placeholders(turns, 1, m, keep)
                n_out[m] = keep
                for lists in (embeddings, captions, outputs):
                    lists[m] = lists[m][:keep]

        involved = [m for m in MODALITIES if n_in[m] or n_out[m]]
        key = "+".join(involved) or "text"
        if any(n_out[m] and outputs[m] for m in self.options.targets):
            key += ":targets"  # batches never mix samples with and without decoder targets
        length = sum(len(t["value"].split()) for t in turns)
        per_item = self.options.media_tokens or {}
        for m in MODALITIES:
            length += n_in[m] * (per_item.get(m, 1) - 1)
            if self.signal is not None and n_out[m]:
                length += n_out[m] * (self.signal.span_length(m) - 1)
        return _Item(turns, inputs, outputs, embeddings, captions, n_out, key, max(1, length), problem)

    def _check_embedding_widths(self) -> None:
        """The first caption embedding of each modality must be as wide as the model's decoder conditioning (a
        file from another decoder's text encoder, e.g. SD-2's 1024 for LEGACY's SD-1.5 768, fails here, naming the
        command that recomputes it, rather than as a reshape error at the first batch)."""
        widths = self.options.caption_widths
        if not widths or self.options.caption_embeddings != "cache" or self.embed_folder is None:
            return
        for m in MODALITIES:
            name = next((item.embeddings[m][0] for item in self.items if item.embeddings[m]), None)
            path = embedding_path(self.embed_folder, name) if name is not None else None
            if path is None or not path.is_file():
                continue  # a missing file is reported when its sample is read
            width = load_caption_embedding(path, str(self.data_path)).shape[-1]
            if width != widths[m]:
                decoder = (self.options.caption_decoders or {}).get(m) or "<the " + m + " decoder>"
                raise DataError(
                    f"{path}: {m} caption embedding of width {width}, but the configured {m} decoder is conditioned "
                    f"on width {widths[m]} (model.{m}.out_features, decoder {decoder}); the embeddings come from "
                    f"another decoder's text encoder. Recompute them: python preprocess_embeddings.py --data "
                    f"{self.data_path} --modality {m} --decoder {decoder} --output-dir {self.embed_folder}")

    # --------------------------------------------------------------------------------------------- properties

    def __len__(self) -> int:
        return len(self.items)

    @property
    def modalities(self) -> list[str]:
        """Per sample: the modalities it involves on either side, joined by "+" ("image", "image+audio", …), or
        "text", with ":targets" appended when it carries requested decoder targets — the key the sampler groups
        batches on (so a batch's spans all have targets or none has). Read from the JSON only."""
        return [item.modality for item in self.items]

    @property
    def lengths(self) -> list[int]:
        """Per sample: an estimate of its spliced length in tokens (words + media tokens + signal spans), from the
        JSON only (no tokenizing, no media decoding); the sampler balances micro-batches with it."""
        return [item.length for item in self.items]

    def sample_id(self, index: int) -> str:
        return f"{self.name}:{index}"

    # ------------------------------------------------------------------------------------------------ samples

    def _skip(self, index: int, reason: str, message: str, error: Exception | None = None) -> SkippedSample:
        where = f"{self.data_path} sample {index}"
        if self.options.strict:
            raise DataError(f"{where}: {message} (data.strict is true)") from error
        sid = self.sample_id(index)
        self._warn(reason, "skipping %s (%s): %s", sid, where, message)
        return SkippedSample(sid, reason, message)

    def _media_path(self, modality: str, name: str) -> Path:
        """Where a medium is (and its feature-cache key)."""
        folder = self.folders[modality]
        return Path(folder) / name if folder is not None else Path(name)

    def _media_file(self, modality: str, name: str) -> Path:
        """The file to decode (shards extract their members here)."""
        return self._media_path(modality, name)

    def _embedding_file(self, name: str) -> Path:
        return embedding_path(self.embed_folder, name)

    def _fit_length(self, ex: TokenizedExample, index: int) -> TokenizedExample | SkippedSample:
        """Keep the spliced length within max_length: cut trailing text only, never a placeholder or a span."""
        opts = self.options
        if opts.max_length is None:
            return ex
        positions = [p for p, tok in enumerate(ex.input_ids) if tok < 0]
        extra = sum(opts.media_tokens[m] - 1 for m in ex.input_media)
        total = len(ex.input_ids) + extra
        if total <= opts.max_length:
            return ex
        protected = max([p + 1 for p in positions] + [s.end for s in ex.output_spans] + [0])
        keep = opts.max_length - extra  # token positions that fit
        if protected > keep:
            return self._skip(index, SKIP_TOO_LONG,
                              f"{total} tokens after splicing exceed max_length {opts.max_length} and the cut "
                              "would go through an input placeholder or a signal span")
        labels = ex.labels[:keep]
        if all(label == IGNORE_INDEX for label in labels):
            return self._skip(index, SKIP_TOO_LONG,
                              f"{total} tokens after splicing exceed max_length {opts.max_length} and no "
                              "supervised token would be left")
        return TokenizedExample(ex.input_ids[:keep], labels, ex.input_media, ex.output_spans)

    def _load_inputs(self, item: _Item) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
        """Encoder inputs per modality: image (K,3,224,224), video (K,15,3,2,224,224), audio (K,3,1,128,204);
        with a feature cache (`options.feature_cache`), the cached encoder features (K, T, D) instead for every
        modality whose items are all cached. Returns (inputs, features, items that fell back to decoding)."""
        from ..model.multimodal_encoder.factory import preprocess_media

        inputs, features, fallbacks = {}, {}, 0
        cache = self.options.feature_cache
        for m in MODALITIES:
            names = item.inputs[m]
            if not names:
                continue
            unique = list(dict.fromkeys(names))  # LLaVA lists one image once per placeholder: decode it once
            order = [unique.index(n) for n in names]
            if cache is not None:
                cached = [cache.get(m, self._media_path(m, n)) for n in unique]
                if all(c is not None for c in cached):
                    features[m] = torch.stack(cached)[order]
                    continue
                fallbacks += sum(c is None for c in cached)
            tensor = preprocess_media([self._media_file(m, n) for n in unique], m, self.options.image_aspect_ratio,
                                      self.options.encoder, max_pixels=self.options.max_image_pixels)
            inputs[m] = tensor[order] if len(unique) != len(names) else tensor
        return inputs, features, fallbacks

    def input_media(self) -> list[tuple[str, Path]]:
        """(modality, path) of every encoder input of the dataset, in sample order (what the feature cache holds)."""
        return [(m, self._media_path(m, n)) for item in self.items for m in MODALITIES for n in item.inputs[m]]

    def _load_targets(self, item: _Item, index: int | str) -> dict[str, torch.Tensor]:
        """Decoder targets per requested modality, one per span: image (K,3,H,W), video (K,3,F,H,W), audio (K,T,M)."""
        number = index if isinstance(index, int) else zlib.crc32(str(index).encode())
        rng = np.random.default_rng([self.seed, self.epoch, number])
        loaders = {"image": (target_media.load_target_image,
                             dict(self.options.image_target, max_pixels=self.options.max_image_pixels)),
                   "video": (target_media.load_target_video, dict(self.options.video_target, rng=rng)),
                   "audio": (target_media.load_target_audio, dict(self.options.audio_target, rng=rng))}
        out = {}
        for m in self.options.targets:
            if not item.outputs[m]:
                continue
            load, kwargs = loaders[m]
            out[m] = torch.stack([load(self._media_file(m, n), **kwargs) for n in item.outputs[m]])
        return out

    def _load_embeddings(self, item: _Item, index: int) -> dict[str, torch.Tensor] | SkippedSample:
        where = f"{self.data_path} sample {index}"
        out = {}
        for m in MODALITIES:
            names = item.embeddings[m]
            if not names:
                continue
            paths = [self._embedding_file(n) for n in names]
            arrays = [load_caption_embedding(path, where) for path in paths]
            bad = [str(path) for path, a in zip(paths, arrays) if not np.isfinite(a).all()]
            if bad:  # NaN / Inf would reach the caption-alignment loss
                return self._skip(index, SKIP_BAD_EMBEDDING, f"caption embedding {', '.join(bad)} holds NaN or "
                                  "infinite values (recompute it with preprocess_embeddings.py)")
            shapes = {a.shape for a in arrays}
            if len(shapes) != 1:
                raise DataError(f"{where}: {m} caption embeddings of different shapes {sorted(shapes)}")
            out[m] = torch.stack([torch.from_numpy(a) for a in arrays])
        return out

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        """A sample dict (see `nextgpt.dataset.collator`) or a `SkippedSample`."""
        if index < 0:
            index += len(self.items)
        return self._sample(self.items[index], index)

    def _sample(self, item: _Item, index: int | str) -> dict[str, Any] | SkippedSample:
        """The sample of a parsed item; `index` names it (an int here, a shard member key for shards)."""
        if item.problem:
            return self._skip(index, *item.problem)
        where = f"{self.data_path} sample {index}"
        ex = tokenize_conversation(self.options.template, item.turns, self.tokenizer, self.signal, where=where)
        for m in MODALITIES:
            spans = sum(s.modality == m for s in ex.output_spans)
            if ex.input_media.count(m) != len(item.inputs[m]) or spans != item.spans[m]:
                raise DataError(f"{where}: the {m} placeholders of the rendered prompt do not match the sample's "
                                f"media / caption lists (template {self.options.template!r})")
        fitted = self._fit_length(ex, index)
        if isinstance(fitted, SkippedSample):
            return fitted
        truncated = len(fitted.input_ids) < len(ex.input_ids)

        sample: dict[str, Any] = {
            "id": self.sample_id(index),
            "modality": item.modality,
            "input_ids": torch.tensor(fitted.input_ids, dtype=torch.long),
            "labels": torch.tensor(fitted.labels, dtype=torch.long),
            "truncated": truncated,
            "spans": {m: n for m, n in item.spans.items() if n},
            "caption_embeddings": {},
            "captions": {},
        }
        if self.options.caption_embeddings == "cache":
            sample["caption_embeddings"] = self._load_embeddings(item, index)
            if isinstance(sample["caption_embeddings"], SkippedSample):
                return sample["caption_embeddings"]
        else:
            sample["captions"] = {m: list(item.captions[m]) for m in MODALITIES if item.captions[m]}
        try:
            sample["media"], sample["features"], sample["cache_fallbacks"] = self._load_inputs(item)
            sample["targets"] = self._load_targets(item, index)
        except MediaError as err:
            return self._skip(index, media_skip_reason(err), str(err), err)
        return sample
