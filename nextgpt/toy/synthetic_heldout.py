"""The synthetic dataset's held-out split: new media and samples, never trained on, for validation losses during
training (`data.eval_datasets` with the catalog's `*_val` entries) and for `evaluate.py` (one manifest per task).

    heldout/images, videos, audios, llava_images   the held-out media
    heldout/*.json                                  the `*_val` catalog entries (training formats)
    heldout/embed/                                  their caption embeddings (written by preprocess_embeddings)
    heldout/eval/<task>.json                        evaluation manifests of the eight tasks (data/README.md)

Drawn from random streams of their own, so the training files stay byte for byte what they were.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nextgpt.dataset.catalog import CATALOG

from .synthetic_media import (COLOURS, BACKGROUNDS, SHAPES, audio_item, image_item, pick, video_item, write_audio,
                              write_image, write_video)
from .synthetic_records import (alpaca_record, comprehension_record, generation_record, llava_dialogue,
                                t2x_record)

__all__ = ["HELDOUT_CATALOG_NAMES", "HeldoutCounts", "write_heldout"]

#: the catalog entries of the held-out split
HELDOUT_CATALOG_NAMES = (
    "cc3m_enc_val", "webvid_enc_val", "audiocap_enc_val", "cc3m_dec_val", "webvid_dec_val", "audiocap_dec_val",
    "image_instruction_val", "video_instruction_val", "audio_instruction_val", "llava_instruction_val",
    "alpaca_instruction_val",
)
EVAL_FOLDER = "heldout/eval"


@dataclass(frozen=True)
class HeldoutCounts:
    images: int = 8
    videos: int = 8
    audios: int = 8
    llava: int = 8
    alpaca: int = 8
    validation: int = 4  # items per set in the *_val training-format files (validation runs at every eval_every)


def _where(name: str, key: str = "data_path") -> str:
    return CATALOG[name].params[key]


def write_heldout(out: Path, seed: int, counts: HeldoutCounts, dump: Callable[[str, list[Any]], None]) -> None:
    """Write the held-out media under `out` and every held-out JSON through `dump(relative path, records)`."""
    folder_entry = {"image": "cc3m_enc_val", "video": "webvid_enc_val", "audio": "audiocap_enc_val"}
    rng = np.random.default_rng([seed, 101])
    items: dict[str, list[dict[str, Any]]] = {"image": [], "video": [], "audio": []}
    makers = {"image": (image_item, write_image, "jpg", counts.images),
              "video": (video_item, write_video, "mp4", counts.videos),
              "audio": (audio_item, write_audio, "wav", counts.audios)}
    for modality, (make, write, ext, n) in makers.items():
        folder = out / _where(folder_entry[modality], f"{modality}_folder")
        for i in range(n):
            item = make(rng)
            name = f"val_{modality}_{i + 1:04d}.{ext}"
            write(folder / name, item)
            items[modality].append({"name": name, "caption": item["caption"], "item": item})

    # training-format files of the *_val catalog entries
    rng = np.random.default_rng([seed, 102])
    for modality, prefix in (("image", "cc3m"), ("video", "webvid"), ("audio", "audiocap")):
        held = items[modality][:counts.validation]
        dump(_where(f"{prefix}_enc_val"), [comprehension_record(rng, modality, x["name"], x["caption"]) for x in held])
        dump(_where(f"{prefix}_dec_val"), [generation_record(rng, modality, x["name"], x["caption"]) for x in held])
        sources = [{"caption": x["caption"], "name": x["name"], "id": 900_001 + k} for k, x in enumerate(held)]
        dump(_where(f"{modality}_instruction_val"),
             [t2x_record(rng, modality, idx, source) for idx, source in enumerate(sources)])
    rng = np.random.default_rng([seed, 103])
    llava = []
    for i in range(counts.llava):  # (all of them in the VQA manifest, the first `validation` for validation)
        item = image_item(rng, theme=(pick(rng, tuple(COLOURS)), pick(rng, SHAPES), pick(rng, tuple(BACKGROUNDS))))
        name = f"val_llava_{i + 1:04d}.jpg"
        write_image(out / _where("llava_instruction_val", "image_folder") / name, item)
        llava.append(llava_dialogue(rng, name, item))
    dump(_where("llava_instruction_val"), llava[:counts.validation])
    dump(_where("alpaca_instruction_val"), [alpaca_record(rng) for _ in range(min(counts.alpaca, counts.validation))])

    # evaluation manifests (paths relative to their folder)
    def rel(entry: str, modality: str, name: str) -> str:
        return os.path.relpath(out / _where(entry, f"{modality}_folder") / name, out / EVAL_FOLDER)

    common = {"dataset": "synthetic"}
    prompts = {"image": "Please create a picture of {c}.", "video": "Please animate {c}.",
               "audio": "Please make a sound clip of {c}."}
    for modality in ("image", "video", "audio"):
        entry = folder_entry[modality]
        dump(f"{EVAL_FOLDER}/{modality}_caption.json", [
            {"id": x["name"].rsplit(".", 1)[0], **common, modality: rel(entry, modality, x["name"]),
             "references": [x["caption"]]} for x in items[modality]])
        task = {"image": "t2i", "video": "t2v", "audio": "t2a"}[modality]
        dump(f"{EVAL_FOLDER}/{task}.json", [
            {"id": f"gen_{x['name'].rsplit('.', 1)[0]}", **common, "caption": x["caption"],
             "prompt": prompts[modality].format(c=x["caption"]), modality: rel(entry, modality, x["name"])}
            for x in items[modality]])
    vqa = []
    for record in llava:
        question = record["conversations"][0]["value"].replace("<image>", "").strip()
        answer = record["conversations"][1]["value"]
        vqa.append({"id": record["input_image"][0].rsplit(".", 1)[0], **common,
                    "image": rel("llava_instruction_val", "image", record["input_image"][0]),
                    "question": question, "prompt": question, "answers": [answer] * 10})
    dump(f"{EVAL_FOLDER}/vqa.json", vqa)
    # video QA in the wording of the MosIT dialogues the model was tuned on
    dump(f"{EVAL_FOLDER}/video_qa.json", [
        {"id": f"qa_{x['name'].rsplit('.', 1)[0]}", **common, "video": rel("webvid_enc_val", "video", x["name"]),
         "question": "What happens in this clip?", "prompt": "<video>\nWhat happens in this clip?",
         "answers": [f"The clip shows {x['caption']}."]} for x in items["video"]])
