"""The 2023 release's raw pair files (`cc3m.json`, `webvid.json`, `audiocap.json`) as stage-1 / stage-2 samples."""
from __future__ import annotations

import os
import re
from typing import Any

from ..constants import MODALITIES, PLACEHOLDER_TOKEN
from ..conversation import SignalVocab
from ..errors import ConfigError, DataError
from .embeddings import read_json_list
from .json_datasets import ConversationDataset
from .samples import SampleOptions

__all__ = ["LegacyPairDataset", "normalize_legacy_caption"]

_LEGACY_STRIP = re.compile(r"[\"()*#:;~]")


def normalize_legacy_caption(caption: str) -> str:
    """The 2023 release's `process_caption`: lower case, `" ( ) * # : ; ~` → space, whitespace runs collapsed."""
    return " ".join(_LEGACY_STRIP.sub(" ", caption.lower()).split())


class LegacyPairDataset(ConversationDataset):
    """A raw pair file (`cc3m.json`: `{caption, id, image_name}`; `webvid.json`: `video_name`; `audiocap.json`:
    `audio_name`) read with the 2023 release's stage-1 / stage-2 text, through the same code path.

    `task="comprehension"`: human ``<image> generate a caption`` → gpt caption (rendered by the `legacy` template as
    ``### Human: <Img><image></Img> generate a caption\\n### Assistant: caption\\n###``). `task="generation"`:
    human caption → gpt ``caption<image>`` (signal tokens straight after the caption, as the release trained),
    caption embedding ``<media name>.npy``. The conversation text uses the release's normalised caption
    (`normalize_caption`), the caption embeddings / online captions the raw one, as the release did.
    """

    def __init__(self, data_path: str | os.PathLike, tokenizer: Any, signal: SignalVocab | None,
                 options: SampleOptions | None = None, *, modality: str, task: str, prompt: str = "generate a caption",
                 normalize_caption: bool = True, **kwargs: Any) -> None:
        if modality not in MODALITIES:
            raise ConfigError(f"legacy pair data: modality must be one of {MODALITIES}, got {modality!r}")
        if task not in ("comprehension", "generation"):
            raise ConfigError(f"legacy pair data: task must be 'comprehension' or 'generation', got {task!r}")
        self.modality, self.task, self.prompt, self.normalize_caption = modality, task, prompt, normalize_caption
        super().__init__(data_path, tokenizer, signal, options, **kwargs)

    def _read_records(self) -> list[Any]:
        m, token = self.modality, PLACEHOLDER_TOKEN[self.modality]
        records = []
        for i, row in enumerate(read_json_list(self.data_path)):
            where = f"{self.data_path} sample {i}"
            if not isinstance(row, dict) or not isinstance(row.get(f"{m}_name"), str) \
                    or not isinstance(row.get("caption"), str):
                raise DataError(f"{where}: a {m} pair needs string fields '{m}_name' and 'caption'")
            name, caption = row[f"{m}_name"], row["caption"]
            text = normalize_legacy_caption(caption) if self.normalize_caption else caption.strip()
            if self.task == "comprehension":
                records.append({f"input_{m}": name, "conversations": [
                    {"from": "human", "value": f"{token} {self.prompt}"}, {"from": "gpt", "value": text}]})
            else:
                records.append({f"output_{m}": name, f"{m}_captions": caption,
                                f"{m}_caption_embeddings": f"{name}.npy", "conversations": [
                                    {"from": "human", "value": text}, {"from": "gpt", "value": f"{text}{token}"}]})
        return records

