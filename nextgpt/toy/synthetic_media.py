"""The synthetic dataset's media: coloured shapes (JPEG), moving shapes (H.264 MP4) and tones / noises / chirps /
beeps (16 kHz mono 16-bit WAV), each drawn from a random item that also carries its truthful caption.

`image_item` / `video_item` / `audio_item` sample an item (caption included) from a numpy Generator;
`write_image` / `write_video` / `write_audio` render it to a file. `nextgpt.toy.synthetic_data` builds the JSON sets
around them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "BACKGROUNDS",
    "COLOURS",
    "MOTIONS",
    "POSITIONS",
    "SHAPES",
    "WRITERS",
    "article",
    "audio_item",
    "image_item",
    "pick",
    "video_item",
    "with_article",
    "write_audio",
    "write_image",
    "write_video",
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
# small helpers
# ----------------------------------------------------------------------------------------------------------------
def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """One element of `seq`, drawn with `rng`."""
    return seq[int(rng.integers(len(seq)))]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


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


def image_item(rng: np.random.Generator, theme: tuple[str, str, str] | None = None) -> dict[str, Any]:
    """A random single- or two-shape picture and its caption. ``theme`` = (colour, shape, bg) fixes the first shape."""
    size = int(pick(rng, (64, 80, 96)))
    if theme is not None:
        colour, shape, bg = theme
    else:
        bg = pick(rng, tuple(BACKGROUNDS))
        colour, shape = pick(rng, tuple(COLOURS)), pick(rng, SHAPES)
    if theme is None and rng.random() < 0.3:
        colour2 = pick(rng, tuple(c for c in COLOURS if c != colour))
        shape2 = pick(rng, SHAPES)
        if rng.random() < 0.5:
            shapes = [(shape, colour, 0.27, 0.5, 0.17), (shape2, colour2, 0.73, 0.5, 0.17)]
            caption = pick(rng, (
                "{a1} {c1} {s1} on the left and {a2} {c2} {s2} on the right, on a {bg} background",
                "two shapes on a {bg} background: {a1} {c1} {s1} on the left and {a2} {c2} {s2} on the right",
            ))
        else:
            shapes = [(shape, colour, 0.5, 0.27, 0.17), (shape2, colour2, 0.5, 0.73, 0.17)]
            caption = pick(rng, (
                "{a1} {c1} {s1} above {a2} {c2} {s2} on a {bg} background",
                "two shapes on a {bg} background: {a1} {c1} {s1} at the top and {a2} {c2} {s2} at the bottom",
            ))
        caption = caption.format(a1=article(colour), c1=colour, s1=shape, a2=article(colour2), c2=colour2,
                                 s2=shape2, bg=bg)
    else:
        if rng.random() < 0.3:
            size_word, position, radius = "large", "in the center", 0.3
        else:
            size_word, position, radius = "small", pick(rng, tuple(POSITIONS)), 0.12
        fx, fy = POSITIONS[position]
        shapes = [(shape, colour, fx, fy, radius)]
        template = pick(rng, (
            "a {size} {c} {s} {pos} on a {bg} background",
            "a {size} {c} {s} {pos}, on a plain {bg} background",
            "{a} {c} {s} ({size}) {pos} against a {bg} background",
            "a {size} {c} {s} drawn {pos} of a {bg} background",
        ))
        caption = template.format(a=article(colour), size=size_word, c=colour, s=shape, pos=position, bg=bg)
    return {"width": size, "height": size, "bg": bg, "shapes": shapes, "caption": caption}


def write_image(path: Path, item: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _render(item["width"], item["height"], item["bg"], item["shapes"])
    image.save(path, format="JPEG", quality=95, subsampling=0)


# ----------------------------------------------------------------------------------------------------------------
# videos
# ----------------------------------------------------------------------------------------------------------------
def video_item(rng: np.random.Generator, theme: tuple[str, str, str] | None = None) -> dict[str, Any]:
    if theme is not None:
        colour, shape, bg = theme
    else:
        colour, shape, bg = pick(rng, tuple(COLOURS)), pick(rng, SHAPES), pick(rng, tuple(BACKGROUNDS))
    motion = pick(rng, tuple(MOTIONS))
    width, height = pick(rng, ((64, 64), (96, 64)))
    fps = int(pick(rng, (8, 10)))
    seconds = int(rng.integers(1, 5))
    phrase = pick(rng, MOTIONS[motion])
    template = pick(rng, (
        "{a} {c} {s} {m} on a {bg} background",
        "{a} {c} {s} {m} across a plain {bg} background",
        "{a} {c} {s} {m} against a {bg} background",
    ))
    caption = template.format(a=article(colour), c=colour, s=shape, m=phrase, bg=bg)
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


def write_video(path: Path, item: dict[str, Any]) -> None:
    """Lossless H.264 (qp 0, yuv420p) in MP4; decord reads it. Lossless, so the decoded frames are a function of
    the drawn frames alone: x264's rate decisions (which may vary with threads and timing) cannot change them."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=item["fps"])
        stream.width, stream.height = item["width"], item["height"]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "medium", "threads": "1"}
        stream.thread_count = 1
        for array in _video_frames(item):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ----------------------------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------------------------
def audio_item(rng: np.random.Generator) -> dict[str, Any]:
    kind = pick(rng, ("sine", "sine", "square", "noise", "chirp_up", "chirp_down", "beeps", "two_tone"))
    seconds = int(rng.integers(2, 5))
    item: dict[str, Any] = {"kind": kind, "seconds": seconds, "noise_seed": int(rng.integers(2**31))}
    if kind == "sine":
        f = int(pick(rng, (220, 330, 440, 523, 660, 880, 1000)))
        item["freqs"] = [f]
        caption = pick(rng, ("a steady {f} Hz sine tone", "a pure sine tone at {f} Hz", "a constant {f} Hz tone"))
        caption = caption.format(f=f)
    elif kind == "square":
        f = int(pick(rng, (110, 220, 330)))
        item["freqs"] = [f]
        caption = pick(rng, ("a buzzing square wave at {f} Hz", "a harsh {f} Hz square wave buzz")).format(f=f)
    elif kind == "noise":
        item["freqs"] = []
        caption = pick(rng, ("white noise", "steady white noise hiss", "a burst of white noise static"))
    elif kind in ("chirp_up", "chirp_down"):
        lo, hi = int(pick(rng, (150, 200, 300))), int(pick(rng, (1500, 2000, 3000)))
        f0, f1 = (lo, hi) if kind == "chirp_up" else (hi, lo)
        item["freqs"] = [f0, f1]
        if kind == "chirp_up":
            caption = pick(rng, ("a rising chirp sweeping from {a} Hz up to {b} Hz",
                                  "a tone rising in pitch from {a} Hz to {b} Hz"))
        else:
            caption = pick(rng, ("a falling chirp sweeping from {a} Hz down to {b} Hz",
                                  "a tone falling in pitch from {a} Hz to {b} Hz"))
        caption = caption.format(a=f0, b=f1)
    elif kind == "beeps":
        f = int(pick(rng, (800, 1000, 1200)))
        count = int(rng.integers(2, min(5, int(seconds / 0.4)) + 1))
        item["freqs"], item["count"] = [f], count
        caption = pick(rng, ("{n} short beeps at {f} Hz", "a sequence of {n} beeps at {f} Hz"))
        caption = caption.format(n=_NUMBER_WORDS[count], f=f)
    else:  # two_tone
        f0, f1 = int(pick(rng, (500, 600, 700))), int(pick(rng, (900, 1000, 1100)))
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


def write_audio(path: Path, item: dict[str, Any]) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(_audio_samples(item), -1.0, 1.0) * 32767).astype(np.int16)
    sf.write(str(path), pcm, AUDIO_SAMPLE_RATE, subtype="PCM_16", format="WAV")


WRITERS = {"image": write_image, "video": write_video, "audio": write_audio}
