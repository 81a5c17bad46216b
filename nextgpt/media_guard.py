"""The one boundary around media decoding: every failure while opening or decoding a file becomes a `MediaError`
naming the file, and decoded values are checked before they reach a model.

Used by the encoder-side loaders (`nextgpt/model/multimodal_encoder/imagebind/data.py`) and the decoder-target
loaders (`nextgpt/dataset/media.py`), so training, preprocessing, prediction and serving share it.

* :func:`decoding` — a context manager: any ``Exception`` raised inside (Pillow's ``DecompressionBombError``,
  libsndfile, decord, FFmpeg, ``MemoryError`` …) is re-raised as ``MediaError(path, cause)``. Decoders raise many
  unrelated types, so a whitelist always misses one; a ``MediaError`` passes through unchanged.
* :func:`open_image` — opens an image as 8-bit RGB under a pixel limit (default: Pillow's
  ``Image.MAX_IMAGE_PIXELS``, about 89.5 megapixels), checked from the header before any pixel is decoded, and
  scales high-bit-depth images (16-bit PNG / TIFF, 32-bit integer and float modes) to 8 bits instead of clipping.
* :func:`check_finite` / :func:`check_not_constant` — value checks after decoding.

`MediaError.cause` says which kind of failure it was ("missing", "undecodable", "too_large", "non_finite",
"constant"), so a skipped sample is counted by cause.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator, Union

import numpy as np
from PIL import Image as PILImage

from .errors import MediaError

PathLike = Union[str, os.PathLike]

#: Pillow's own default limit, read once at import (before anything in this process may have changed it).
DEFAULT_MAX_IMAGE_PIXELS: int = PILImage.MAX_IMAGE_PIXELS or 89_478_485

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def local_path(path: PathLike) -> str:
    """The path as a string that every decoder reads as a LOCAL file: a relative name such as ``http:x.mp4`` or
    ``a:b.wav`` is prefixed with ``./`` so that FFmpeg-based readers (decord) do not take ``http:`` for a protocol."""
    text = os.fspath(path)
    if not os.path.isabs(text) and ":" in text.split(os.sep, 1)[0]:
        text = os.path.join(os.curdir, text)
    return text


def require_file(path: PathLike, what: str = "file") -> str:
    """`local_path(path)` when it names an existing file, else ``MediaError(..., cause='missing')``."""
    text = local_path(path)
    if not os.path.isfile(text):
        raise MediaError(os.fspath(path), f"{what} not found", cause="missing")
    return text


@contextlib.contextmanager
def decoding(path: PathLike, what: str) -> Iterator[None]:
    """Turn any exception of the block into ``MediaError(path, "cannot decode <what> (<type>: <message>)")``."""
    try:
        yield
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - the point of the boundary: decoders raise many unrelated types
        raise MediaError(os.fspath(path), f"cannot decode {what} ({type(exc).__name__}: {exc})",
                         cause="undecodable") from exc


def check_finite(values, path: PathLike, what: str) -> None:
    """NaN or infinite values in decoded media are a ``MediaError`` (cause "non_finite")."""
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise MediaError(os.fspath(path), f"{what} holds {bad} NaN or infinite value(s)", cause="non_finite")


def check_not_constant(values, path: PathLike, what: str) -> None:
    """A decoded signal that is one value throughout (e.g. a silent audio file as a generation target) is a
    ``MediaError`` (cause "constant"): there is nothing to learn from it."""
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if array.size and float(array.max()) == float(array.min()):
        raise MediaError(os.fspath(path), f"{what} is constant ({float(array.flat[0])!r} everywhere)",
                         cause="constant")


def _to_8bit_rgb(image, path: PathLike):
    """Any Pillow image -> 8-bit RGB, scaling high-bit-depth modes to 0..255 instead of clipping them."""
    if image.mode not in _HIGH_BIT_MODES:
        return image.convert("RGB")  # a copy even for RGB: the file is closed afterwards
    array = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16"):
        scale = 65535.0  # 16 bits per sample
    elif image.mode == "I":  # 32-bit integer storage: 16-bit data (older Pillow PNGs) unless it only holds 8 bits
        scale = 65535.0 if array.max(initial=0) > 255 else 255.0
    else:  # "F": floats in [0, 1] are fractions, anything larger is read as 8-bit values
        check_finite(array, path, "float image")
        scale = 1.0 if array.max(initial=0) <= 1.0 else 255.0
    grey = np.clip(np.rint(array / scale * 255.0), 0, 255).astype(np.uint8)
    return PILImage.fromarray(grey, mode="L").convert("RGB")


def open_image(path: PathLike, max_pixels: int | None = None):
    """Open an image file as an 8-bit RGB Pillow image; every failure is a `MediaError` naming the file.

    ``max_pixels`` (default :data:`DEFAULT_MAX_IMAGE_PIXELS`) bounds width × height; it is checked from the
    header, so a decompression bomb is refused before it is decoded (cause "too_large").
    """
    limit = DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    text = require_file(path, "image file")
    with decoding(path, "image"):
        # Pillow itself refuses images over twice its global limit (DecompressionBombError, named below) and
        # warns over it: keep its limit at least ours, so that ours decides from the header.
        if PILImage.MAX_IMAGE_PIXELS is not None and limit > PILImage.MAX_IMAGE_PIXELS:
            PILImage.MAX_IMAGE_PIXELS = limit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            try:
                image = PILImage.open(text)
            except PILImage.DecompressionBombError as exc:
                raise MediaError(os.fspath(path), f"image is over the limit of {limit} pixels "
                                 f"(data.max_image_pixels): {exc}", cause="too_large") from exc
            with image:
                width, height = image.size
                if width * height > limit:
                    raise MediaError(os.fspath(path), f"image of {width} x {height} = {width * height} pixels is "
                                     f"over the limit of {limit} (data.max_image_pixels)", cause="too_large")
                return _to_8bit_rgb(image, path)
