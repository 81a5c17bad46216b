"""MiniGPT-4's training data as conversation samples: image-caption pairs (stage 1) and its curated image
descriptions with an instruction (stage 2), through the same code path as every other dataset.

Files:
* a JSON list of pairs ``{"image_name" (or "image"), "caption"}`` (our ``cc3m.json``; LAION / CC / SBU pairs
  exported to this form, see data/README.md);
* MiniGPT-4's ``cc_sbu_align/filter_cap.json``: ``{"annotations": [{"image_id", "caption"}, ...]}``, images
  ``<image_id>.jpg``.

``task="pretrain"`` (stage 1): human ``<image>``, gpt the caption after BLIP's caption processing (MiniGPT-4's
``blip_caption`` text processor). With the ``plain`` template this renders as MiniGPT-4's stage-1 text
``<BOS><image tokens>caption\\n``.
``task="align"`` (stage 2): human ``<image> <instruction>``, one of MiniGPT-4's four instructions
(``prompts/alignment.txt``) drawn per sample, gpt the description as written. With the ``minigpt4`` template this
renders as ``###Human: <Img><image></Img> Describe this image in detail. ###Assistant: description###``.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..constants import PLACEHOLDER_TOKEN
from ..errors import ConfigError, DataError
from .embeddings import read_json_list
from .json_datasets import ConversationDataset

__all__ = ["ALIGNMENT_INSTRUCTIONS", "CaptionPairDataset", "blip_caption"]

#: MiniGPT-4's stage-2 instructions (prompts/alignment.txt, after its "<Img><ImageHere></Img> ").
ALIGNMENT_INSTRUCTIONS = (
    "Describe this image in detail.",
    "Take a look at this image and describe what you notice.",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
)
TASKS = ("pretrain", "align")
_BLIP_STRIP = re.compile(r"([.!\"()*#:;~])")


def blip_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's caption processing: lower case, ``. ! " ( ) * # : ; ~`` -> space, whitespace runs collapsed,
    at most `max_words` words."""
    text = re.sub(r"\s{2,}", " ", _BLIP_STRIP.sub(" ", caption.lower())).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


class CaptionPairDataset(ConversationDataset):
    """Image-caption pairs read as MiniGPT-4 stage-1 (`task="pretrain"`) or stage-2 (`task="align"`) samples."""

    def __init__(self, data_path, tokenizer: Any, signal, options=None, *, task: str, seed: int = 0,
                 **kwargs: Any) -> None:
        if task not in TASKS:
            raise ConfigError(f"caption pairs: task must be one of {TASKS}, got {task!r}")
        self.task, self.instruction_seed = task, seed
        super().__init__(data_path, tokenizer, signal, options, **kwargs)

    def _pairs(self) -> list[tuple[str, str]]:
        """(image file name, caption) of every record, whichever of the two file layouts it is."""
        if self.data_path.suffix == ".json":
            import json

            try:
                raw = json.loads(self.data_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{self.data_path}: cannot read JSON: {exc}") from None
            if isinstance(raw, dict) and "annotations" in raw:
                rows, layout = raw["annotations"], "filter_cap"
            else:
                rows, layout = read_json_list(self.data_path), "pairs"
        else:
            rows, layout = read_json_list(self.data_path), "pairs"
        if not isinstance(rows, list):
            raise DataError(f"{self.data_path}: 'annotations' must be a list")
        pairs = []
        for i, row in enumerate(rows):
            where = f"{self.data_path} sample {i}"
            if not isinstance(row, dict) or not isinstance(row.get("caption"), str):
                raise DataError(f"{where}: a pair needs a string 'caption'")
            if layout == "filter_cap":
                if not isinstance(row.get("image_id"), (str, int)):
                    raise DataError(f"{where}: a filter_cap.json annotation needs an 'image_id'")
                name = f"{row['image_id']}.jpg"
            else:
                name = row.get("image_name", row.get("image"))
                if not isinstance(name, str):
                    raise DataError(f"{where}: a pair needs a string 'image_name' (or 'image')")
            pairs.append((name, row["caption"]))
        return pairs

    def _read_records(self) -> list[Any]:
        token = PLACEHOLDER_TOKEN["image"]
        rng = np.random.default_rng(self.instruction_seed)
        records = []
        for name, caption in self._pairs():
            if self.task == "pretrain":
                human, answer = token, blip_caption(caption)
            else:
                human = f"{token} {ALIGNMENT_INSTRUCTIONS[int(rng.integers(len(ALIGNMENT_INSTRUCTIONS)))]}"
                answer = caption.strip()
            records.append({"input_image": name, "conversations": [
                {"from": "human", "value": human}, {"from": "gpt", "value": answer}]})
        return records
