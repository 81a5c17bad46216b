"""Caption pairs (one medium + its caption) as training samples: the 2023 release's raw pair files (`cc3m.json`,
`webvid.json`, `audiocap.json`) and WebDataset shard samples of a medium + a `txt` (`nextgpt.dataset.webdataset`).

`pair_record` turns a pair into a NEW-schema record with the 2023 release's stage-1 / stage-2 text;
`LegacyPairDataset` reads the raw pair files with it.
"""
from __future__ import annotations

import os
import re
from typing import Any

from ..constants import MODALITIES, PLACEHOLDER_TOKEN
from ..conversation import SignalVocab
from ..errors import ConfigError, DataError
from ..json_files import read_json_list
from .json_datasets import ConversationDataset
from .samples import SampleOptions

__all__ = ["LegacyPairDataset", "PAIR_TASKS", "check_pair_task", "normalize_legacy_caption", "pair_record"]

PAIR_TASKS = ("comprehension", "generation")
_LEGACY_STRIP = re.compile(r"[\"()*#:;~]")


def normalize_legacy_caption(caption: str) -> str:
    """The 2023 release's `process_caption`: lower case, `" ( ) * # : ; ~` → space, whitespace runs collapsed."""
    return " ".join(_LEGACY_STRIP.sub(" ", caption.lower()).split())


def check_pair_task(modality: str, task: str) -> None:
    if modality not in MODALITIES:
        raise ConfigError(f"pair data: modality must be one of {MODALITIES}, got {modality!r}")
    if task not in PAIR_TASKS:
        raise ConfigError(f"pair data: task must be one of {PAIR_TASKS}, got {task!r}")


def pair_record(modality: str, task: str, media_name: str, caption: str, embedding_name: str, prompt: str,
                normalize: bool = True) -> dict[str, Any]:
    """The record of one pair. `task="comprehension"`: human ``<image> {prompt}`` → gpt caption (rendered by the
    `legacy` template as ``### Human: <Img><image></Img> generate a caption\\n### Assistant: caption\\n###``);
    `task="generation"`: human caption → gpt ``caption<image>`` (signal tokens straight after the caption, as the
    release trained) with the caption embedding `embedding_name`. The conversation uses the normalised caption
    (`normalize`), the caption embedding / online caption the raw one, as the release did."""
    token = PLACEHOLDER_TOKEN[modality]
    text = normalize_legacy_caption(caption) if normalize else caption.strip()
    if task == "comprehension":
        return {f"input_{modality}": media_name, "conversations": [
            {"from": "human", "value": f"{token} {prompt}"}, {"from": "gpt", "value": text}]}
    return {f"output_{modality}": media_name, f"{modality}_captions": caption,
            f"{modality}_caption_embeddings": embedding_name, "conversations": [
                {"from": "human", "value": text}, {"from": "gpt", "value": f"{text}{token}"}]}


class LegacyPairDataset(ConversationDataset):
    """A raw pair file (`cc3m.json`: `{caption, id, image_name}`; `webvid.json`: `video_name`; `audiocap.json`:
    `audio_name`) read with the 2023 release's stage-1 / stage-2 text (`pair_record`), through the same code path;
    the caption embedding of a generation sample is ``<media name>.npy``."""

    def __init__(self, data_path: str | os.PathLike, tokenizer: Any, signal: SignalVocab | None,
                 options: SampleOptions | None = None, *, modality: str, task: str, prompt: str = "generate a caption",
                 normalize_caption: bool = True, **kwargs: Any) -> None:
        check_pair_task(modality, task)
        self.modality, self.task, self.prompt, self.normalize_caption = modality, task, prompt, normalize_caption
        super().__init__(data_path, tokenizer, signal, options, **kwargs)

    def _read_records(self) -> list[Any]:
        m = self.modality
        records = []
        for i, row in enumerate(read_json_list(self.data_path)):
            where = f"{self.data_path} sample {i}"
            if not isinstance(row, dict) or not isinstance(row.get(f"{m}_name"), str) \
                    or not isinstance(row.get("caption"), str):
                raise DataError(f"{where}: a {m} pair needs string fields '{m}_name' and 'caption'")
            name = row[f"{m}_name"]
            records.append(pair_record(m, self.task, name, row["caption"], f"{name}.npy", self.prompt,
                                       self.normalize_caption))
        return records
