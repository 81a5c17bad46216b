"""The JSON records of the catalog's formats, built from (media name, caption) pairs and raw instruction data:
stage-1 comprehension and stage-2 generation samples (the reference's NEW pair formats), LLaVA, Alpaca, T-T+X and
MosIT samples. `nextgpt prepare` (nextgpt/dataset/prepare.py) writes real data with them; the embedded default's
synthetic data uses the same pair records.

The wording pools were written for this project in the style of the reference's prompt lists (the reference draws
a comprehension prompt, an instruction template with a verb and a media noun, and a response the same way).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from ..errors import DataError

__all__ = [
    "COMPREHENSION_PROMPTS",
    "PLACEHOLDER",
    "alpaca_record",
    "comprehension_record",
    "generation_record",
    "llava_record",
    "mosit_record",
    "pick",
    "t2x_record",
]


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """One element of `seq`, drawn with `rng`."""
    return seq[int(rng.integers(len(seq)))]


# ----------------------------------------------------------------------------------------------------------------
# wording pools (written for this project in the style of the reference's prompt lists)
# ----------------------------------------------------------------------------------------------------------------
COMPREHENSION_PROMPTS = (
    "Describe the {} briefly.",
    "What does the {} show?",
    "What is in the {}?",
    "Give a short caption for the {}.",
    "Summarize the content of the {}.",
    "Tell me what the {} contains.",
    "What can you observe in the {}?",
    "Write one sentence about the {}.",
    "Explain what the {} is about.",
    "What is depicted in the {}?",
    "Provide a caption for the {}.",
    "Could you describe the {} for me?",
    "What would you say the {} presents?",
    "Sum up the {} in a few words.",
    "What is the subject of the {}?",
    "I'd like a short description of the {}.",
)
GENERATION_TEMPLATES = (
    "{} me a {} of ",
    "{} a {} of ",
    "Please {} a {} of ",
    "Can you {} a {} of ",
    "Could you {} me a {} showing ",
    "I want you to {} a {} of ",
    "I'd like you to {} a {} of ",
    "I need you to {} a {} with ",
    "Would you {} a {} of ",
    "Kindly {} a {} depicting ",
    "Try to {} a {} of ",
    "Go ahead and {} a {} of ",
)
PRODUCE_VERBS = (
    "generate", "create", "make", "produce", "show", "render", "compose", "craft", "design", "build",
    "prepare", "synthesize", "draft", "put together", "come up with", "deliver",
)
MEDIA_NOUNS = {
    "image": ("picture", "image", "drawing", "illustration", "graphic", "sketch", "photo", "visual"),
    "video": ("video", "clip", "animation", "short film", "video clip", "moving picture", "footage"),
    "audio": ("sound", "audio clip", "recording", "sound clip", "audio", "sound effect"),
}
RESPONSES = (
    "Here is the {} you asked for.",
    "Sure, here it is.",
    "Of course!",
    "Certainly, this is the {}.",
    "No problem, take a look.",
    "Here you go.",
    "Done! Here is the {}.",
    "Absolutely.",
    "This {} should match your request.",
    "Happy to help.",
    "Okay, here is a {} for you.",
    "As requested.",
)


PLACEHOLDER = {"image": "<image>", "video": "<video>", "audio": "<audio>"}


def comprehension_record(rng: np.random.Generator, modality: str, name: str, caption: str) -> dict[str, Any]:
    prompt = pick(rng, COMPREHENSION_PROMPTS).format(modality)
    return {
        f"input_{modality}": name,
        "conversations": [
            {"from": "human", "value": f"{PLACEHOLDER[modality]}\n{prompt}"},
            {"from": "gpt", "value": caption},
        ],
    }


def generation_record(rng: np.random.Generator, modality: str, name: str, caption: str) -> dict[str, Any]:
    instruction = pick(rng, GENERATION_TEMPLATES).format(pick(rng, PRODUCE_VERBS), pick(rng, MEDIA_NOUNS[modality]))
    instruction = instruction[0].upper() + instruction[1:] + caption
    response = pick(rng, RESPONSES).format(modality)
    return {
        f"output_{modality}": name,
        f"{modality}_captions": caption,
        f"{modality}_caption_embeddings": f"{name}.npy",
        "conversations": [
            {"from": "human", "value": instruction},
            {"from": "gpt", "value": f"{response} {PLACEHOLDER[modality]}"},
        ],
    }


# ------------------------------------------------------------------------------------------ instruction data


def llava_record(item: dict[str, Any]) -> dict[str, Any]:
    """A LLaVA-Instruct-150K item (`image`, `conversations`; or the reference's `image_name`, `conversation`) in the
    NEW schema: one `<image>` placeholder, in the first human turn, and `input_image` naming the image once
    (docs/deviations.md, "LLaVA data")."""
    image = item.get("image", item.get("image_name"))
    turns = item.get("conversations", item.get("conversation"))
    if not isinstance(image, str) or not image or not isinstance(turns, list) or not turns:
        raise DataError("needs `image` and a non-empty `conversations` list")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(
                turn.get("value"), str):
            raise DataError(f"turn {i} is not {{'from': 'human'|'gpt', 'value': str}}")
        value = turn["value"].replace("<image>", "").strip()
        if i == 0:
            if turn["from"] != "human":
                raise DataError("the first turn is not from `human`")
            value = f"{PLACEHOLDER['image']}\n{value}"
        out.append({"from": turn["from"], "value": value})
    return {"input_image": [image], "conversations": out}


def alpaca_record(item: dict[str, Any]) -> dict[str, Any]:
    """An Alpaca item (`instruction`, `input`, `output`): human = instruction + " " + input, gpt = output."""
    instruction, inp, output = item.get("instruction"), item.get("input", ""), item.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str) or not instruction.strip():
        raise DataError("needs `instruction` and `output` strings")
    return {"conversations": [{"from": "human", "value": f"{instruction} {inp or ''}".strip()},
                              {"from": "gpt", "value": output}]}


_T2X_EMBEDDING = {"image": "it_img_{idx}.jpg.npy", "video": "it_vid_{idx}.mp4.npy"}


def t2x_record(item: dict[str, Any], modality: str, idx: int) -> dict[str, Any]:
    """A raw T-T+X item (`conversation`: a human turn and a gpt turn with `caption`; `source_data`) in the
    instruction-tuning format: the gpt answer ends in the placeholder, its caption and caption-embedding name are
    listed (images `it_img_<idx>.jpg.npy`, videos `it_vid_<idx>.mp4.npy`, audios `<AudioCaps id>.wav.npy`)."""
    turns = item.get("conversation", item.get("conversations"))
    if not isinstance(turns, list) or len(turns) < 2:
        raise DataError("needs a `conversation` with a human and a gpt turn")
    human, gpt = turns[0], turns[-1]
    caption = gpt.get("caption") if isinstance(gpt, dict) else None
    if not isinstance(caption, str) or not caption.strip() or not isinstance(human.get("value"), str):
        raise DataError("the gpt turn has no `caption`")
    source = item.get("source_data") or {}
    if modality == "audio":
        audio_id = source.get("audiocap_id", source.get("audio_id"))
        if audio_id is None:
            raise DataError("an audio item needs source_data.audiocap_id (the AudioCaps id of its caption)")
        embedding = f"{audio_id}.wav.npy"
    else:
        embedding = _T2X_EMBEDDING[modality].format(idx=idx)
    answer = re.sub(r"\s*<(image|video|audio)>\s*", " ", str(gpt.get("value", ""))).strip()
    return {
        f"{modality}_captions": [caption],
        f"{modality}_caption_embeddings": [embedding],
        "conversations": [
            {"from": "human", "value": human["value"], "input_modality": "text"},
            {"from": "gpt", "value": f"{answer} {PLACEHOLDER[modality]}".strip(), "caption": caption,
             "output_modality": modality},
        ],
        "source_data": source,
    }


_MOSIT_TAG = re.compile(r"<(Image|Video|Audio)>(.*?)</\1>", re.S)
_MOSIT_LOWER = re.compile(r"<(image|video|audio)>.*?</\1>", re.S)


def mosit_record(item: dict[str, Any]) -> dict[str, Any]:
    """A raw MosIT dialogue (`image_list` / `video_list` / `audio_list` of {name, caption}; `conversation` whose
    gpt turns embed `<Image>file</Image>` markers) in the training format: markers of listed files become
    placeholders with their captions and embedding names, other markup is removed, human turns lose all markup."""
    captions: dict[str, dict[str, str]] = {}
    for modality in ("image", "video", "audio"):
        for entry in item.get(f"{modality}_list") or []:
            name = entry.get(f"{modality}_name")
            if isinstance(name, str):
                captions.setdefault(modality, {})[name.strip()] = entry.get("caption", "")
    turns = item.get("conversation", item.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise DataError("needs a non-empty `conversation`")
    used: dict[str, list[str]] = {m: [] for m in captions}
    conversations = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt"):
            raise DataError(f"turn {i} is not from human or gpt")
        value = _MOSIT_LOWER.sub("", str(turn.get("value", "")))  # before placeholders are written in
        if turn["from"] == "gpt":
            def marker(match: re.Match) -> str:
                modality, name = match.group(1).lower(), match.group(2).strip()
                if name in captions.get(modality, {}):
                    used[modality].append(name)
                    return PLACEHOLDER[modality]
                return ""
            value = _MOSIT_TAG.sub(marker, value)
        else:
            value = _MOSIT_TAG.sub("", value)
        value = re.sub(r"[ \t]+", " ", value).strip()
        conversations.append({"from": turn["from"], "value": value})
    record: dict[str, Any] = {}
    for modality, names in used.items():
        if names:
            record[f"{modality}_captions"] = [captions[modality][n] for n in names]
            record[f"{modality}_caption_embeddings"] = [f"{n}.npy" for n in names]
    record["conversations"] = conversations
    return record
