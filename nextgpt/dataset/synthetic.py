"""The embedded default's dataset: small synthetic images, sounds and videos with truthful captions.

``python -m nextgpt.dataset.synthetic OUTDIR [--seed S]`` writes, deterministically from the seed and in a few
seconds, coloured shapes (JPEG), tones / noises / chirps / beeps (16 kHz mono 16-bit WAV) and moving shapes (H.264
MP4 that decord reads), together with JSON files in the reference's formats (spec §6.2) and its folder layout, so
the catalog entries that point at ``./data/...`` work unchanged with ``OUTDIR`` in place of ``./data``::

    OUTDIR/
      T_X_pair_data/cc3m/      cc3m.json  cc3m_comprehension.json  cc3m_generation.json  images/*.jpg
      T_X_pair_data/webvid/    webvid.json  webvid_comprehension.json  webvid_generation.json  videos/*.mp4
      T_X_pair_data/audiocap/  audiocap.json  audiocap_comprehension.json  audiocap_generation.json  audios/*.wav
      IT_data/T-T+X_data/      image_instruction_tuning.json  video_instruction_tuning.json
                               audio_instruction_tuning.json
      IT_data/MosIT_data/      mosit_instruction_tuning.json  images/  videos/  audios/
      IT_data/T+X-T_data/llava/   preprocessed_llava.json  images/
      IT_data/T+X-T_data/alpaca/  preprocessed_alpaca.json
      manifest.json            counts, layout and a sha256 of every file written

Caption embeddings are not made here: ``preprocess_embeddings.py`` computes them with a decoder's text encoder into
``OUTDIR/embed`` (pair data) and ``OUTDIR/it/embed`` (instruction data), under the names the JSON files give.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nextgpt.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "SyntheticCounts",
    "generate",
    "main",
    "COLOURS",
    "BACKGROUNDS",
    "SHAPES",
    "POSITIONS",
    "MOTIONS",
    "AUDIO_SAMPLE_RATE",
]

# ----------------------------------------------------------------------------------------------------------------
# vocabulary (public: tests check the media against the words used in the captions)
# ----------------------------------------------------------------------------------------------------------------
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 30),
    "orange": (245, 130, 20),
    "purple": (140, 50, 170),
    "pink": (245, 120, 190),
    "cyan": (30, 200, 210),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "beige": (235, 222, 195),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
# position phrase -> centre as fractions of (width, height)
POSITIONS: dict[str, tuple[float, float]] = {
    "in the center": (0.5, 0.5),
    "on the left": (0.2, 0.5),
    "on the right": (0.8, 0.5),
    "at the top": (0.5, 0.2),
    "at the bottom": (0.5, 0.8),
    "in the top left corner": (0.2, 0.2),
    "in the top right corner": (0.8, 0.2),
    "in the bottom left corner": (0.2, 0.8),
    "in the bottom right corner": (0.8, 0.8),
}
# motion key -> phrases used in captions (each contains the words tests look for)
MOTIONS: dict[str, tuple[str, ...]] = {
    "left_to_right": ("moving from left to right", "sliding from left to right"),
    "right_to_left": ("moving from right to left", "sliding from right to left"),
    "top_to_bottom": ("falling from top to bottom", "moving from top to bottom"),
    "bottom_to_top": ("rising from bottom to top", "moving from bottom to top"),
    "grow": ("growing larger in the center", "slowly growing in the center"),
    "shrink": ("shrinking in the center", "slowly shrinking in the center"),
}
AUDIO_SAMPLE_RATE = 16000
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

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

# ----------------------------------------------------------------------------------------------------------------
# counts
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticCounts:
    """How many items of each kind to write (defaults: the embedded default's dataset)."""

    images: int = 200  # cc3m-style image-caption pairs
    videos: int = 40  # webvid-style video-caption pairs
    audios: int = 40  # audiocaps-style audio-caption pairs
    it_image: int = 60  # T-T+X instruction samples per output modality
    it_video: int = 60
    it_audio: int = 60
    mosit: int = 24  # multi-turn modality-switching dialogues
    llava: int = 40  # image question-answering dialogues
    alpaca: int = 60  # text-only instructions

    def validate(self) -> None:
        for key, value in asdict(self).items():
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"SyntheticCounts.{key} must be a non-negative integer, got {value!r}")
        for key, src in (("it_image", "images"), ("it_video", "videos"), ("it_audio", "audios")):
            if getattr(self, key) and not getattr(self, src):
                raise ConfigError(f"SyntheticCounts.{key} > 0 needs {src} > 0 (its captions come from those items)")


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _rng(seed: int, part: int) -> np.random.Generator:
    """Independent stream per part, so changing one count does not reshuffle the others."""
    return np.random.default_rng([seed, part])


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=4, ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------------
def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.75 * r), (cx - 0.95 * r, cy + 0.75 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    raise ValueError(shape)


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = 0.85 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "cross":
        w = 0.32 * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r), fill=fill)


def _render(width: int, height: int, bg: str, shapes: Sequence[tuple[str, str, float, float, float]]):
    """PIL RGB image: ``shapes`` = (shape, colour, cx_frac, cy_frac, r_frac of min(width, height))."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), BACKGROUNDS[bg])
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for shape, colour, fx, fy, fr in shapes:
        _draw_shape(draw, shape, fx * width, fy * height, fr * side, COLOURS[colour])
    return image


def _image_item(rng: np.random.Generator, theme: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """A random single- or two-shape picture and its caption. ``theme`` = (colour, shape, bg) fixes the first shape."""
    size = int(_pick(rng, (64, 80, 96)))
    if theme is not None:
        colour, shape, bg = theme
    else:
        bg = _pick(rng, tuple(BACKGROUNDS))
        colour, shape = _pick(rng, tuple(COLOURS)), _pick(rng, SHAPES)
    if theme is None and rng.random() < 0.3:
        colour2 = _pick(rng, tuple(c for c in COLOURS if c != colour))
        shape2 = _pick(rng, SHAPES)
        if rng.random() < 0.5:
            shapes = [(shape, colour, 0.27, 0.5, 0.17), (shape2, colour2, 0.73, 0.5, 0.17)]
            caption = _pick(rng, (
                "{a1} {c1} {s1} on the left and {a2} {c2} {s2} on the right, on a {bg} background",
                "two shapes on a {bg} background: {a1} {c1} {s1} on the left and {a2} {c2} {s2} on the right",
            ))
        else:
            shapes = [(shape, colour, 0.5, 0.27, 0.17), (shape2, colour2, 0.5, 0.73, 0.17)]
            caption = _pick(rng, (
                "{a1} {c1} {s1} above {a2} {c2} {s2} on a {bg} background",
                "two shapes on a {bg} background: {a1} {c1} {s1} at the top and {a2} {c2} {s2} at the bottom",
            ))
        caption = caption.format(a1=_article(colour), c1=colour, s1=shape, a2=_article(colour2), c2=colour2,
                                 s2=shape2, bg=bg)
    else:
        if rng.random() < 0.3:
            size_word, position, radius = "large", "in the center", 0.3
        else:
            size_word, position, radius = "small", _pick(rng, tuple(POSITIONS)), 0.12
        fx, fy = POSITIONS[position]
        shapes = [(shape, colour, fx, fy, radius)]
        template = _pick(rng, (
            "a {size} {c} {s} {pos} on a {bg} background",
            "a {size} {c} {s} {pos}, on a plain {bg} background",
            "{a} {c} {s} ({size}) {pos} against a {bg} background",
            "a {size} {c} {s} drawn {pos} of a {bg} background",
        ))
        caption = template.format(a=_article(colour), size=size_word, c=colour, s=shape, pos=position, bg=bg)
    return {"width": size, "height": size, "bg": bg, "shapes": shapes, "caption": caption}


def _write_image(path: Path, item: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _render(item["width"], item["height"], item["bg"], item["shapes"])
    image.save(path, format="JPEG", quality=95, subsampling=0)


# ----------------------------------------------------------------------------------------------------------------
# videos
# ----------------------------------------------------------------------------------------------------------------
def _video_item(rng: np.random.Generator, theme: tuple[str, str, str] | None = None) -> dict[str, Any]:
    if theme is not None:
        colour, shape, bg = theme
    else:
        colour, shape, bg = _pick(rng, tuple(COLOURS)), _pick(rng, SHAPES), _pick(rng, tuple(BACKGROUNDS))
    motion = _pick(rng, tuple(MOTIONS))
    width, height = _pick(rng, ((64, 64), (96, 64)))
    fps = int(_pick(rng, (8, 10)))
    seconds = int(rng.integers(1, 5))
    phrase = _pick(rng, MOTIONS[motion])
    template = _pick(rng, (
        "{a} {c} {s} {m} on a {bg} background",
        "{a} {c} {s} {m} across a plain {bg} background",
        "{a} {c} {s} {m} against a {bg} background",
    ))
    caption = template.format(a=_article(colour), c=colour, s=shape, m=phrase, bg=bg)
    return {"width": width, "height": height, "fps": fps, "seconds": seconds, "colour": colour, "shape": shape,
            "bg": bg, "motion": motion, "caption": caption}


def _video_frames(item: dict[str, Any]) -> list[np.ndarray]:
    n = item["fps"] * item["seconds"]
    frames = []
    for k in range(n):
        t = k / max(1, n - 1)
        fx, fy, fr = 0.5, 0.5, 0.15
        motion = item["motion"]
        if motion == "left_to_right":
            fx = 0.2 + 0.6 * t
        elif motion == "right_to_left":
            fx = 0.8 - 0.6 * t
        elif motion == "top_to_bottom":
            fy = 0.2 + 0.6 * t
        elif motion == "bottom_to_top":
            fy = 0.8 - 0.6 * t
        elif motion == "grow":
            fr = 0.1 + 0.25 * t
        elif motion == "shrink":
            fr = 0.35 - 0.25 * t
        image = _render(item["width"], item["height"], item["bg"], [(item["shape"], item["colour"], fx, fy, fr)])
        frames.append(np.asarray(image))
    return frames


def _write_video(path: Path, item: dict[str, Any]) -> None:
    """H.264 (yuv420p) in MP4, single-threaded so the bytes are reproducible; decord reads it."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=item["fps"])
        stream.width, stream.height = item["width"], item["height"]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        stream.thread_count = 1
        for array in _video_frames(item):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ----------------------------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------------------------
def _audio_item(rng: np.random.Generator) -> dict[str, Any]:
    kind = _pick(rng, ("sine", "sine", "square", "noise", "chirp_up", "chirp_down", "beeps", "two_tone"))
    seconds = int(rng.integers(2, 5))
    item: dict[str, Any] = {"kind": kind, "seconds": seconds, "noise_seed": int(rng.integers(2**31))}
    if kind == "sine":
        f = int(_pick(rng, (220, 330, 440, 523, 660, 880, 1000)))
        item["freqs"] = [f]
        caption = _pick(rng, ("a steady {f} Hz sine tone", "a pure sine tone at {f} Hz", "a constant {f} Hz tone"))
        caption = caption.format(f=f)
    elif kind == "square":
        f = int(_pick(rng, (110, 220, 330)))
        item["freqs"] = [f]
        caption = _pick(rng, ("a buzzing square wave at {f} Hz", "a harsh {f} Hz square wave buzz")).format(f=f)
    elif kind == "noise":
        item["freqs"] = []
        caption = _pick(rng, ("white noise", "steady white noise hiss", "a burst of white noise static"))
    elif kind in ("chirp_up", "chirp_down"):
        lo, hi = int(_pick(rng, (150, 200, 300))), int(_pick(rng, (1500, 2000, 3000)))
        f0, f1 = (lo, hi) if kind == "chirp_up" else (hi, lo)
        item["freqs"] = [f0, f1]
        if kind == "chirp_up":
            caption = _pick(rng, ("a rising chirp sweeping from {a} Hz up to {b} Hz",
                                  "a tone rising in pitch from {a} Hz to {b} Hz"))
        else:
            caption = _pick(rng, ("a falling chirp sweeping from {a} Hz down to {b} Hz",
                                  "a tone falling in pitch from {a} Hz to {b} Hz"))
        caption = caption.format(a=f0, b=f1)
    elif kind == "beeps":
        f = int(_pick(rng, (800, 1000, 1200)))
        count = int(rng.integers(2, min(5, int(seconds / 0.4)) + 1))
        item["freqs"], item["count"] = [f], count
        caption = _pick(rng, ("{n} short beeps at {f} Hz", "a sequence of {n} beeps at {f} Hz"))
        caption = caption.format(n=_NUMBER_WORDS[count], f=f)
    else:  # two_tone
        f0, f1 = int(_pick(rng, (500, 600, 700))), int(_pick(rng, (900, 1000, 1100)))
        item["freqs"] = [f0, f1]
        caption = f"a two-tone siren alternating between {f0} Hz and {f1} Hz"
    item["caption"] = caption
    return item


def _audio_samples(item: dict[str, Any]) -> np.ndarray:
    sr = AUDIO_SAMPLE_RATE
    n = sr * item["seconds"]
    t = np.arange(n, dtype=np.float64) / sr
    kind, freqs = item["kind"], item["freqs"]
    if kind == "sine":
        x = 0.5 * np.sin(2 * np.pi * freqs[0] * t)
    elif kind == "square":
        x = 0.3 * np.sign(np.sin(2 * np.pi * freqs[0] * t + 1e-3))
    elif kind == "noise":
        x = 0.4 * np.random.default_rng(item["noise_seed"]).uniform(-1.0, 1.0, n)
    elif kind in ("chirp_up", "chirp_down"):
        f0, f1 = freqs
        duration = item["seconds"]
        x = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    elif kind == "beeps":
        x = np.zeros(n)
        beep = int(0.15 * sr)
        for k in range(item["count"]):
            start = int((0.1 + 0.4 * k) * sr)
            x[start : start + beep] = 0.5 * np.sin(2 * np.pi * freqs[0] * t[:beep])
    else:  # two_tone
        which = (np.floor(t / 0.5).astype(int) % 2).astype(bool)
        x = 0.5 * np.sin(2 * np.pi * np.where(which, freqs[1], freqs[0]) * t)
    fade = int(0.01 * sr)
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return x


def _write_audio(path: Path, item: dict[str, Any]) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(_audio_samples(item), -1.0, 1.0) * 32767).astype(np.int16)
    sf.write(str(path), pcm, AUDIO_SAMPLE_RATE, subtype="PCM_16", format="WAV")


# ----------------------------------------------------------------------------------------------------------------
# JSON builders
# ----------------------------------------------------------------------------------------------------------------
_PLACEHOLDER = {"image": "<image>", "video": "<video>", "audio": "<audio>"}


def _comprehension(rng: np.random.Generator, modality: str, name: str, caption: str) -> dict[str, Any]:
    prompt = _pick(rng, COMPREHENSION_PROMPTS).format(modality)
    return {
        f"input_{modality}": name,
        "conversations": [
            {"from": "human", "value": f"{_PLACEHOLDER[modality]}\n{prompt}"},
            {"from": "gpt", "value": caption},
        ],
    }


def _generation(rng: np.random.Generator, modality: str, name: str, caption: str) -> dict[str, Any]:
    instruction = _pick(rng, GENERATION_TEMPLATES).format(_pick(rng, PRODUCE_VERBS), _pick(rng, MEDIA_NOUNS[modality]))
    instruction = instruction[0].upper() + instruction[1:] + caption
    response = _pick(rng, RESPONSES).format(modality)
    return {
        f"output_{modality}": name,
        f"{modality}_captions": caption,
        f"{modality}_caption_embeddings": f"{name}.npy",
        "conversations": [
            {"from": "human", "value": instruction},
            {"from": "gpt", "value": f"{response} {_PLACEHOLDER[modality]}"},
        ],
    }


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


def _t2x_item(rng: np.random.Generator, modality: str, idx: int, source: dict[str, Any]) -> dict[str, Any]:
    """One T-T+X instruction sample (reference ``preprocess_it_*`` output format)."""
    caption = source["caption"]
    human = _pick(rng, _T2X_REQUESTS[modality]).format(c=caption)
    gpt = _pick(rng, _T2X_ANSWERS[modality]).format(c=caption)
    if modality == "image":
        emb, source_data = f"it_img_{idx}.jpg.npy", {"dataset": "cc3m", "image_name": source["name"], "caption": caption}
    elif modality == "video":
        emb, source_data = f"it_vid_{idx}.mp4.npy", {"dataset": "webvid", "video_name": source["name"], "caption": caption}
    else:
        emb = f"{source['id']}.wav.npy"
        source_data = {"dataset": "audiocap", "audiocap_id": source["id"], "audio_name": source["name"], "caption": caption}
    return {
        f"{modality}_captions": [caption],
        f"{modality}_caption_embeddings": [emb],
        "conversations": [
            {"from": "human", "value": human, "input_modality": "text"},
            {"from": "gpt", "value": f"{gpt} {_PLACEHOLDER[modality]}", "caption": caption, "output_modality": modality},
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


def _mosit_dialogue(rng: np.random.Generator, d: int, media_dirs: dict[str, Path]) -> dict[str, Any]:
    """A multi-turn dialogue that switches modalities: inputs of some modalities, outputs of others."""
    theme = (_pick(rng, tuple(COLOURS)), _pick(rng, SHAPES), _pick(rng, tuple(BACKGROUNDS)))
    modalities = ("image", "video", "audio")
    outputs = [modalities[i] for i in rng.permutation(3)[: int(rng.integers(2, 4))]]
    inputs = [modalities[i] for i in rng.permutation(3)[: int(rng.integers(1, 3))]]
    rounds = [("in", m) for m in inputs] + [("out", m) for m in outputs]
    rounds = [rounds[i] for i in rng.permutation(len(rounds))]

    conversations: list[dict[str, str]] = []
    if rng.random() < 0.5:
        conversations += [{"from": "human", "value": _pick(rng, _MOSIT_OPENERS)},
                          {"from": "gpt", "value": _pick(rng, _MOSIT_OPENER_REPLIES)}]
    record: dict[str, Any] = {}
    captions: dict[str, list[str]] = {m: [] for m in modalities}
    embeddings: dict[str, list[str]] = {m: [] for m in modalities}
    for k, (direction, modality) in enumerate(rounds):
        if modality == "image":
            item = _image_item(rng, theme)
        elif modality == "video":
            item = _video_item(rng, theme)
        else:
            item = _audio_item(rng)
        name = f"{_MOSIT_PREFIX[modality]}_{d:07d}_{k:02d}.{_EXT[modality]}"
        _WRITERS[modality](media_dirs[modality] / name, item)
        table = _MOSIT_INPUT if direction == "in" else _MOSIT_OUTPUT
        human, gpt = _pick(rng, table[modality])
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


def _llava_dialogue(rng: np.random.Generator, name: str, item: dict[str, Any]) -> dict[str, Any]:
    """Image question answering over a single-shape picture, 2-3 rounds, answers read off the drawing."""
    shape, colour, fx, fy, fr = item["shapes"][0]
    bg = item["bg"]
    position = next(p for p, xy in POSITIONS.items() if xy == (fx, fy))
    other = _pick(rng, tuple(c for c in COLOURS if c != colour))
    qa = [
        ("What colour is the shape in the image?", f"The {shape} is {colour}."),
        ("What shape is shown?", f"The image shows {_with_article(shape)}."),
        ("What colour is the background?", f"The background is plain {bg}."),
        (f"Where is the {shape} located?", f"The {shape} is {position} of the image."),
        ("How many shapes are there?", f"There is exactly one shape, {_with_article(colour + ' ' + shape)}."),
        (f"Is there {_with_article(other)} shape in the picture?",
         f"No. The only shape is {_with_article(colour + ' ' + shape)} on a {bg} background."),
        ("Is the shape large or small?",
         f"It is {'large, filling much of the picture' if fr >= 0.3 else 'small compared with the picture'}."),
    ]
    chosen = [qa[i] for i in rng.permutation(len(qa))[: int(rng.integers(2, 4))]]
    conversations = []
    for r, (q, a) in enumerate(chosen):
        if r == 0:  # the image is given once, in the first turn (§12.16 fixed)
            q = f"<image>\n{q}" if rng.random() < 0.5 else f"{q}\n<image>"
        conversations += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {"input_image": [name], "conversations": conversations}


_WORDS = ("circle", "square", "triangle", "yellow", "orange", "purple", "window", "garden", "music", "river",
          "planet", "rocket", "pencil", "banana", "spring", "silver", "guitar", "forest", "bridge", "candle")
_OPPOSITES = {"hot": "cold", "up": "down", "light": "dark", "early": "late", "open": "closed", "fast": "slow",
              "loud": "quiet", "happy": "sad", "full": "empty", "big": "small"}


def _alpaca_item(rng: np.random.Generator) -> dict[str, Any]:
    """A text-only instruction with a computed (so correct) answer."""
    kind = int(rng.integers(8))
    a, b = int(rng.integers(2, 50)), int(rng.integers(2, 50))
    word = _pick(rng, _WORDS)
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
        key = _pick(rng, tuple(_OPPOSITES))
        instruction, inp, out = f"Give the opposite of the word \"{key}\".", "", f"The opposite of {key} is {_OPPOSITES[key]}."
    else:
        vowels = sum(ch in "aeiou" for ch in word)
        instruction, inp = "Count the vowels in the word.", word
        out = f"The word {word} contains {vowels} vowel{'s' if vowels != 1 else ''}."
    return {"conversations": [{"from": "human", "value": (instruction + " " + inp).strip()},
                              {"from": "gpt", "value": out}]}


_WRITERS = {"image": _write_image, "video": _write_video, "audio": _write_audio}

# ----------------------------------------------------------------------------------------------------------------
# layout and driver
# ----------------------------------------------------------------------------------------------------------------
LAYOUT = {
    "cc3m": "T_X_pair_data/cc3m",
    "webvid": "T_X_pair_data/webvid",
    "audiocap": "T_X_pair_data/audiocap",
    "t2x": "IT_data/T-T+X_data",
    "mosit": "IT_data/MosIT_data",
    "llava": "IT_data/T+X-T_data/llava",
    "alpaca": "IT_data/T+X-T_data/alpaca",
}
# which JSON file to use with which media folders (relative to OUTDIR), in the reference catalog's terms
CATALOG_HINTS = {
    "cc3m_enc": {"data_path": "T_X_pair_data/cc3m/cc3m_comprehension.json", "image_folder": "T_X_pair_data/cc3m/images"},
    "webvid_enc": {"data_path": "T_X_pair_data/webvid/webvid_comprehension.json", "video_folder": "T_X_pair_data/webvid/videos"},
    "audiocap_enc": {"data_path": "T_X_pair_data/audiocap/audiocap_comprehension.json", "audio_folder": "T_X_pair_data/audiocap/audios"},
    "cc3m_dec": {"data_path": "T_X_pair_data/cc3m/cc3m_generation.json", "image_folder": "T_X_pair_data/cc3m/images", "caption_emb_folder": "embed"},
    "webvid_dec": {"data_path": "T_X_pair_data/webvid/webvid_generation.json", "video_folder": "T_X_pair_data/webvid/videos", "caption_emb_folder": "embed"},
    "audiocap_dec": {"data_path": "T_X_pair_data/audiocap/audiocap_generation.json", "audio_folder": "T_X_pair_data/audiocap/audios", "caption_emb_folder": "embed"},
    "image_instruction": {"data_path": "IT_data/T-T+X_data/image_instruction_tuning.json", "caption_emb_folder": "it/embed"},
    "video_instruction": {"data_path": "IT_data/T-T+X_data/video_instruction_tuning.json", "caption_emb_folder": "it/embed"},
    "audio_instruction": {"data_path": "IT_data/T-T+X_data/audio_instruction_tuning.json", "caption_emb_folder": "it/embed"},
    "mosit_instruction": {"data_path": "IT_data/MosIT_data/mosit_instruction_tuning.json", "image_folder": "IT_data/MosIT_data/images",
                          "video_folder": "IT_data/MosIT_data/videos", "audio_folder": "IT_data/MosIT_data/audios", "caption_emb_folder": "it/embed"},
    "llava_instruction": {"data_path": "IT_data/T+X-T_data/llava/preprocessed_llava.json", "image_folder": "IT_data/T+X-T_data/llava/images"},
    "alpaca_instruction": {"data_path": "IT_data/T+X-T_data/alpaca/preprocessed_alpaca.json"},
}


def _clear_previous(out: Path) -> None:
    """Remove the files a previous run listed in its manifest (only those), so stale items never linger."""
    manifest = out / "manifest.json"
    if not manifest.exists():
        return
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        files = list(previous.get("files", {}))
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{manifest}: cannot read the previous synthetic manifest ({exc}); remove it by hand") from exc
    for rel in files:
        path = (out / rel).resolve()
        if out.resolve() in path.parents and path.is_file():
            path.unlink()
    manifest.unlink()


def generate(outdir: str | os.PathLike, seed: int = 0, counts: SyntheticCounts | None = None) -> dict[str, Any]:
    """Write the synthetic dataset under ``outdir`` and return its manifest (also written as manifest.json).

    Deterministic: the same ``seed`` and ``counts`` give identical bytes (JSON, JPEG, WAV, MP4) with the same
    library versions.
    """
    counts = counts or SyntheticCounts()
    counts.validate()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    started = time.perf_counter()
    d = {key: out / rel for key, rel in LAYOUT.items()}
    json_counts: dict[str, int] = {}

    def dump(path: Path, records: list[Any]) -> None:
        _write_json(path, records)
        json_counts[path.relative_to(out).as_posix()] = len(records)

    # --- T-X pairs ------------------------------------------------------------------------------------------------
    rng = _rng(seed, 1)
    images = []
    for i in range(counts.images):
        item = _image_item(rng)
        key = f"{i + 1:09d}"
        _write_image(d["cc3m"] / "images" / f"{key}.jpg", item)
        images.append({"caption": item["caption"], "id": key, "image_name": f"{key}.jpg"})
    rng = _rng(seed, 2)
    videos = []
    for i in range(counts.videos):
        item = _video_item(rng)
        name = f"{i + 1:08d}.mp4"
        _write_video(d["webvid"] / "videos" / name, item)
        videos.append({"caption": item["caption"], "id": 1_000_000 + i + 1, "video_name": name})
    rng = _rng(seed, 3)
    audios = []
    for i in range(counts.audios):
        item = _audio_item(rng)
        audio_id = 100_001 + i
        _write_audio(d["audiocap"] / "audios" / f"{audio_id}.wav", item)
        audios.append({"audio_id": audio_id, "audio_name": f"{audio_id}.wav", "caption": item["caption"]})

    rng = _rng(seed, 4)
    for dataset, modality, records, name_key in (("cc3m", "image", images, "image_name"),
                                                 ("webvid", "video", videos, "video_name"),
                                                 ("audiocap", "audio", audios, "audio_name")):
        dump(d[dataset] / f"{dataset}.json", records)
        dump(d[dataset] / f"{dataset}_comprehension.json",
             [_comprehension(rng, modality, r[name_key], r["caption"]) for r in records])
        dump(d[dataset] / f"{dataset}_generation.json",
             [_generation(rng, modality, r[name_key], r["caption"]) for r in records])

    # --- T-T+X instruction data -------------------------------------------------------------------------------------
    rng = _rng(seed, 5)
    sources = {
        "image": [{"caption": r["caption"], "name": r["image_name"]} for r in images],
        "video": [{"caption": r["caption"], "name": r["video_name"]} for r in videos],
        "audio": [{"caption": r["caption"], "name": r["audio_name"], "id": r["audio_id"]} for r in audios],
    }
    for modality, n in (("image", counts.it_image), ("video", counts.it_video), ("audio", counts.it_audio)):
        records = [_t2x_item(rng, modality, idx, _pick(rng, sources[modality])) for idx in range(n)]
        dump(d["t2x"] / f"{modality}_instruction_tuning.json", records)

    # --- MosIT --------------------------------------------------------------------------------------------------
    rng = _rng(seed, 6)
    media_dirs = {m: d["mosit"] / f"{m}s" for m in ("image", "video", "audio")}
    dump(d["mosit"] / "mosit_instruction_tuning.json",
         [_mosit_dialogue(rng, k, media_dirs) for k in range(counts.mosit)])

    # --- LLaVA-style and Alpaca-style -------------------------------------------------------------------------------
    rng = _rng(seed, 7)
    llava = []
    for i in range(counts.llava):
        item = _image_item(rng, theme=(_pick(rng, tuple(COLOURS)), _pick(rng, SHAPES), _pick(rng, tuple(BACKGROUNDS))))
        name = f"{i + 1:012d}.jpg"
        _write_image(d["llava"] / "images" / name, item)
        llava.append(_llava_dialogue(rng, name, item))
    dump(d["llava"] / "preprocessed_llava.json", llava)
    rng = _rng(seed, 8)
    dump(d["alpaca"] / "preprocessed_alpaca.json", [_alpaca_item(rng) for _ in range(counts.alpaca)])

    # --- manifest -----------------------------------------------------------------------------------------------
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        rel = path.relative_to(out).as_posix()
        if rel.startswith(("embed/", "it/")):  # caption embeddings belong to preprocess_embeddings
            continue
        data = path.read_bytes()
        files[rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    media_counts: dict[str, int] = {}
    for rel in files:
        if not rel.endswith(".json"):
            folder = rel.rsplit("/", 1)[0]
            media_counts[folder] = media_counts.get(folder, 0) + 1
    manifest = {
        "generator": "nextgpt.dataset.synthetic",
        "seed": seed,
        "counts": asdict(counts),
        "json_records": json_counts,
        "media_files": dict(sorted(media_counts.items())),
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "caption_embedding_folders": {"T_X_pair_data": "embed", "IT_data": "it/embed"},
        "catalog": CATALOG_HINTS,
        "files": files,
    }
    _write_json(out / "manifest.json", manifest)
    logger.info("synthetic dataset: %d files, %.1f MB in %.1f s under %s", len(files),
                manifest["total_bytes"] / 1e6, time.perf_counter() - started, out)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nextgpt.dataset.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder to write (plays the role of the reference's ./data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = generate(args.outdir, seed=args.seed)
    except (ConfigError, DataError) as exc:
        parser.exit(2, f"error: {exc}\n")
    summary = {k: manifest[k] for k in ("seed", "json_records", "media_files", "total_bytes")}
    logger.info("%s", json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
