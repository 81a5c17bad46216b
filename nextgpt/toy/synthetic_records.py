"""The synthetic dataset's JSON records: one sample in the reference's formats per item of
`nextgpt.toy.synthetic_media`, worded from small pools written for this project in the style of the reference's
prompt lists (T-T+X, MosIT, LLaVA-style and Alpaca-style samples; the stage-1 comprehension and stage-2 generation
records are the ones `nextgpt prepare` writes for real data, from `nextgpt.dataset.records`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..dataset.records import COMPREHENSION_PROMPTS, PLACEHOLDER as _PLACEHOLDER, comprehension_record, \
    generation_record
from .synthetic_media import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    WRITERS,
    audio_item,
    image_item,
    pick,
    video_item,
    with_article,
)

__all__ = [
    "COMPREHENSION_PROMPTS",
    "alpaca_record",
    "comprehension_record",
    "generation_record",
    "llava_dialogue",
    "mosit_dialogue",
    "t2x_record",
]

_T2X_REQUESTS = {
    "image": (
        "I'd love to see {c}. Can you show me an image of it?",
        "Could you draw {c} for me?",
        "Please create a picture of {c}.",
        "I'm designing a poster and need {c}. Can you make that image?",
        "Show me what {c} looks like.",
    ),
    "video": (
        "Can you show me a short video of {c}?",
        "I'd like to watch {c}. Could you make a clip?",
        "Please animate {c}.",
        "Make me a video clip of {c}, please.",
    ),
    "audio": (
        "Can you play me {c}?",
        "I'd like to hear {c}.",
        "Please make a sound clip of {c}.",
        "What does {c} sound like? Let me hear it.",
    ),
}
# Each answer names its modality right away, so that which output follows is visible early in the answer.
_T2X_ANSWERS = {
    "image": (
        "Of course! Here is an image of {c}.",
        "Here is a picture of {c}.",
        "An image of {c}, as you asked.",
    ),
    "video": (
        "Absolutely! Here is a video of {c}.",
        "Here is a clip of {c}.",
        "A video of {c}, as you asked.",
    ),
    "audio": (
        "Sure thing! Here is a sound of {c}.",
        "Here is a recording of {c}.",
        "A sound of {c}, as you asked.",
    ),
}


def t2x_record(rng: np.random.Generator, modality: str, idx: int, source: dict[str, Any]) -> dict[str, Any]:
    """One T-T+X instruction sample (reference ``preprocess_it_*`` output format)."""
    caption = source["caption"]
    human = pick(rng, _T2X_REQUESTS[modality]).format(c=caption)
    gpt = pick(rng, _T2X_ANSWERS[modality]).format(c=caption)
    if modality == "image":
        emb = f"it_img_{idx}.jpg.npy"
        source_data = {"dataset": "cc3m", "image_name": source["name"], "caption": caption}
    elif modality == "video":
        emb = f"it_vid_{idx}.mp4.npy"
        source_data = {"dataset": "webvid", "video_name": source["name"], "caption": caption}
    else:
        emb = f"{source['id']}.wav.npy"
        source_data = {"dataset": "audiocap", "audiocap_id": source["id"], "audio_name": source["name"],
                       "caption": caption}
    return {
        f"{modality}_captions": [caption],
        f"{modality}_caption_embeddings": [emb],
        "conversations": [
            {"from": "human", "value": human, "input_modality": "text"},
            {"from": "gpt", "value": f"{gpt} {_PLACEHOLDER[modality]}", "caption": caption,
             "output_modality": modality},
        ],
        "source_data": source_data,
    }


# MosIT rounds: (human text, gpt text); {c} = caption of the medium involved
_MOSIT_INPUT = {
    "image": (("<image>\nI drew this earlier. What do you see?", "I see {c}."),
              ("<image>\nCan you describe this picture?", "The picture shows {c}."),
              ("What is in this image?\n<image>", "It is {c}.")),
    "video": (("<video>\nWhat happens in this clip?", "The clip shows {c}."),
              ("I made this animation. <video>\nCan you tell me what it shows?", "It shows {c}.")),
    "audio": (("<audio>\nI recorded this sound. What is it?", "It sounds like {c}."),
              ("Listen to this: <audio>\nHow would you describe it?", "That is {c}.")),
}
_MOSIT_OUTPUT = {
    "image": (("Now draw {c} for me.", "Here you go. <image>"),
              ("Could you make a picture of {c}?", "Sure, here is the picture: <image>"),
              ("Can I see it as a still image? Something like {c}.", "Of course. <image>")),
    "video": (("Can you animate it? I'd like {c}.", "Here is the clip. <video>"),
              ("Make a short video of {c}.", "Sure, this video shows it: <video>"),
              ("Show me a moving version: {c}.", "Here it is in motion. <video>")),
    "audio": (("What sound would go with it? Maybe {c}.", "Something like this: <audio>"),
              ("Play me {c}.", "Sure, listen to this: <audio>"),
              ("Add a sound to it, please: {c}.", "Here is the sound. <audio>")),
}
_MOSIT_OPENERS = (
    "Hi! I'm working on a small multimedia project about simple shapes and sounds.",
    "Hello, I want to put together a short presentation with pictures, clips and sounds.",
    "Hey, can you help me make some examples for a lesson on shapes and sounds?",
)
_MOSIT_OPENER_REPLIES = (
    "Happy to help. Tell me what you need.",
    "Sure, I can make images, videos and sounds. What would you like?",
    "Of course! Let's get started.",
)
_MOSIT_PREFIX = {"image": "mosit_i", "video": "mosit_v", "audio": "mosit_a"}
_EXT = {"image": "jpg", "video": "mp4", "audio": "wav"}


def mosit_dialogue(rng: np.random.Generator, d: int, media_dirs: dict[str, Path]) -> dict[str, Any]:
    """A multi-turn dialogue that switches modalities: inputs of some modalities, outputs of others."""
    theme = (pick(rng, tuple(COLOURS)), pick(rng, SHAPES), pick(rng, tuple(BACKGROUNDS)))
    modalities = ("image", "video", "audio")
    outputs = [modalities[i] for i in rng.permutation(3)[: int(rng.integers(2, 4))]]
    inputs = [modalities[i] for i in rng.permutation(3)[: int(rng.integers(1, 3))]]
    rounds = [("in", m) for m in inputs] + [("out", m) for m in outputs]
    rounds = [rounds[i] for i in rng.permutation(len(rounds))]

    conversations: list[dict[str, str]] = []
    if rng.random() < 0.5:
        conversations += [{"from": "human", "value": pick(rng, _MOSIT_OPENERS)},
                          {"from": "gpt", "value": pick(rng, _MOSIT_OPENER_REPLIES)}]
    record: dict[str, Any] = {}
    captions: dict[str, list[str]] = {m: [] for m in modalities}
    embeddings: dict[str, list[str]] = {m: [] for m in modalities}
    for k, (direction, modality) in enumerate(rounds):
        if modality == "image":
            item = image_item(rng, theme)
        elif modality == "video":
            item = video_item(rng, theme)
        else:
            item = audio_item(rng)
        name = f"{_MOSIT_PREFIX[modality]}_{d:07d}_{k:02d}.{_EXT[modality]}"
        WRITERS[modality](media_dirs[modality] / name, item)
        table = _MOSIT_INPUT if direction == "in" else _MOSIT_OUTPUT
        human, gpt = pick(rng, table[modality])
        conversations += [{"from": "human", "value": human.format(c=item["caption"])},
                          {"from": "gpt", "value": gpt.format(c=item["caption"])}]
        if direction == "in":
            record.setdefault(f"input_{modality}", []).append(name)
        else:
            captions[modality].append(item["caption"])
            embeddings[modality].append(f"{name}.npy")
    for modality in modalities:
        if captions[modality]:
            record[f"{modality}_captions"] = captions[modality]
            record[f"{modality}_caption_embeddings"] = embeddings[modality]
    record["conversations"] = conversations
    return record


def llava_dialogue(rng: np.random.Generator, name: str, item: dict[str, Any]) -> dict[str, Any]:
    """Image question answering over a single-shape picture, 2-3 rounds, answers read off the drawing."""
    shape, colour, fx, fy, fr = item["shapes"][0]
    bg = item["bg"]
    position = next(p for p, xy in POSITIONS.items() if xy == (fx, fy))
    other = pick(rng, tuple(c for c in COLOURS if c != colour))
    qa = [
        ("What colour is the shape in the image?", f"The {shape} is {colour}."),
        ("What shape is shown?", f"The image shows {with_article(shape)}."),
        ("What colour is the background?", f"The background is plain {bg}."),
        (f"Where is the {shape} located?", f"The {shape} is {position} of the image."),
        ("How many shapes are there?", f"There is exactly one shape, {with_article(colour + ' ' + shape)}."),
        (f"Is there {with_article(other)} shape in the picture?",
         f"No. The only shape is {with_article(colour + ' ' + shape)} on a {bg} background."),
        ("Is the shape large or small?",
         f"It is {'large, filling much of the picture' if fr >= 0.3 else 'small compared with the picture'}."),
    ]
    chosen = [qa[i] for i in rng.permutation(len(qa))[: int(rng.integers(2, 4))]]
    conversations = []
    for r, (q, a) in enumerate(chosen):
        if r == 0:  # the image is given once, in the first turn (docs/deviations.md, "LLaVA data")
            q = f"<image>\n{q}" if rng.random() < 0.5 else f"{q}\n<image>"
        conversations += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {"input_image": [name], "conversations": conversations}


_WORDS = ("circle", "square", "triangle", "yellow", "orange", "purple", "window", "garden", "music", "river",
          "planet", "rocket", "pencil", "banana", "spring", "silver", "guitar", "forest", "bridge", "candle")
_OPPOSITES = {"hot": "cold", "up": "down", "light": "dark", "early": "late", "open": "closed", "fast": "slow",
              "loud": "quiet", "happy": "sad", "full": "empty", "big": "small"}


def alpaca_record(rng: np.random.Generator) -> dict[str, Any]:
    """A text-only instruction with a computed (so correct) answer."""
    kind = int(rng.integers(8))
    a, b = int(rng.integers(2, 50)), int(rng.integers(2, 50))
    word = pick(rng, _WORDS)
    if kind == 0:
        instruction, inp, out = "Add the two numbers.", f"{a} and {b}", f"{a} plus {b} equals {a + b}."
    elif kind == 1:
        hi, lo = max(a, b), min(a, b)
        instruction, inp, out = f"What is {hi} minus {lo}?", "", f"{hi} minus {lo} is {hi - lo}."
    elif kind == 2:
        a, b = a % 13, b % 13
        instruction, inp, out = "Multiply the numbers.", f"{a} x {b}", f"{a} times {b} is {a * b}."
    elif kind == 3:
        instruction, inp, out = "Spell the word backwards.", word, f"{word} spelled backwards is {word[::-1]}."
    elif kind == 4:
        instruction, inp = "How many letters are in this word?", word
        out = f"The word {word} has {len(word)} letters."
    elif kind == 5:
        numbers = [int(x) for x in rng.integers(1, 100, size=int(rng.integers(4, 7)))]
        instruction, inp = "Sort these numbers in ascending order.", ", ".join(map(str, numbers))
        out = ", ".join(map(str, sorted(numbers)))
    elif kind == 6:
        key = pick(rng, tuple(_OPPOSITES))
        instruction, inp = f"Give the opposite of the word \"{key}\".", ""
        out = f"The opposite of {key} is {_OPPOSITES[key]}."
    else:
        vowels = sum(ch in "aeiou" for ch in word)
        instruction, inp = "Count the vowels in the word.", word
        out = f"The word {word} contains {vowels} vowel{'s' if vowels != 1 else ''}."
    return {"conversations": [{"from": "human", "value": (instruction + " " + inp).strip()},
                              {"from": "gpt", "value": out}]}
