"""Decoder-side targets: the media tensors the latent-denoising loss encodes with the frozen decoders' VAEs.

Only built when a denoising loss is switched on (the caller decides). Each loader reproduces the reference's
preprocessing with its bugs fixed:

* image -> (3, H, W) in [-1, 1] through diffusers' ``VaeImageProcessor`` (Lanczos, ``resize_mode='crop'``);
* video -> (3, F, H, W) in [-1, 1]: frames sampled at ``sample_fps`` from a random window, padded with black
  frames to ``max_frames``, resized by diffusers' ``VideoProcessor``;
* audio -> (T, n_mels) float32 AudioLDM log-mel spectrogram.

A missing or undecodable file raises :class:`~nextgpt.errors.MediaError`; nothing here silently substitutes a zero
tensor (the reference did for missing audio), so the dataset layer can skip and count the sample instead.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import random
from typing import Union

import numpy as np
import torch

from nextgpt.errors import ConfigError, MediaError
from nextgpt.media_guard import check_finite, check_not_constant, decoding, open_image, require_file

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
RNG = Union[np.random.Generator, random.Random, None]

__all__ = [
    "load_target_image",
    "load_target_video",
    "load_target_audio",
    "read_video_frames",
    "sample_frame_indices",
    "read_audio_window",
    "mel_filterbank",
    "log_mel_spectrogram",
]


# ----------------------------------------------------------------------------------------------------------------
# random draws from whichever generator the caller passes
# ----------------------------------------------------------------------------------------------------------------
def _randint(rng: RNG, low: int, high: int) -> int:
    """Uniform integer in [low, high] (both inclusive)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    if isinstance(rng, random.Random):
        return rng.randint(low, high)
    if rng is None:
        # The module-level generator: DataLoader workers seed it per worker.
        return random.randint(low, high)
    raise ConfigError(f"rng must be a numpy.random.Generator, a random.Random or None, got {type(rng).__name__}")


def _uniform01(rng: RNG) -> float:
    """Uniform float in [0, 1)."""
    if isinstance(rng, np.random.Generator):
        return float(rng.random())
    if isinstance(rng, random.Random):
        return rng.random()
    if rng is None:
        return random.random()
    raise ConfigError(f"rng must be a numpy.random.Generator, a random.Random or None, got {type(rng).__name__}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


# ----------------------------------------------------------------------------------------------------------------
# image
# ----------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _image_processor():
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor()  # defaults: Lanczos resize, normalise to [-1, 1]


def load_target_image(path: PathLike, height: int = 224, width: int = 224, resize_mode: str = "crop",
                      max_pixels: int | None = None) -> torch.Tensor:
    """Read an image as the diffusion target: (3, height, width) float32 in [-1, 1].

    ``resize_mode='crop'`` scales the image to cover the box, then centre-crops (the reference's setting).
    ``max_pixels``: the largest width x height accepted (default Pillow's limit; nextgpt/media_guard.py).
    """
    _positive("height", height)
    _positive("width", width)
    if resize_mode not in ("default", "fill", "crop"):
        raise ConfigError(f"resize_mode must be one of 'default', 'fill', 'crop', got {resize_mode!r}")
    image = open_image(path, max_pixels)  # MediaError for anything wrong; high bit depths scaled
    with decoding(path, "image"):
        out = _image_processor().preprocess(image, height=height, width=width, resize_mode=resize_mode)
    return out[0].float()


# ----------------------------------------------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------------------------------------------
def sample_frame_indices(
    num_frames: int, fps: float, sample_fps: float = 1, max_frames: int = 16, rng: RNG = None
) -> list[int]:
    """Frame indices to keep, following the reference's ``read_video`` without its off-by-one.

    ``stride = round(fps / sample_fps)`` (at least 1), ``cover = stride * max_frames``. A video shorter than
    ``cover + 5`` frames is read from frame 0 to its end; otherwise a window of ``cover`` frames starts at a uniform
    random frame in ``[0, num_frames - cover - 5]``. Every ``stride``-th frame of the window is kept, at most
    ``max_frames`` of them.
    """
    _positive("sample_fps", sample_fps)
    if not isinstance(max_frames, int) or max_frames <= 0:
        raise ConfigError(f"max_frames must be a positive integer, got {max_frames!r}")
    stride = max(1, round(fps / sample_fps))
    cover = stride * max_frames
    if num_frames < cover + 5:
        start, end = 0, num_frames
    else:
        start = _randint(rng, 0, num_frames - cover - 5)
        end = start + cover
    return list(range(start, end, stride))[:max_frames]


def read_video_frames(
    path: PathLike, sample_fps: float = 1, max_frames: int = 16, rng: RNG = None
) -> tuple[np.ndarray, int]:
    """Decode the sampled frames of a video with decord.

    Returns ``(frames, n_real)``: ``frames`` is uint8 (max_frames, H, W, 3) RGB, where frames past ``n_real`` are
    black padding (same H, W as the video; the reference transposed them).
    """
    import decord

    text = require_file(path)
    with decoding(path, "video"):
        reader = decord.VideoReader(text, num_threads=1)
        num_frames = len(reader)
        fps = float(reader.get_avg_fps())
    if num_frames <= 0:
        raise MediaError(path, "video has no frames")
    if not math.isfinite(fps) or fps <= 0:
        raise MediaError(path, f"video reports an invalid frame rate {fps!r}")
    indices = sample_frame_indices(num_frames, fps, sample_fps, max_frames, rng)
    with decoding(path, f"video frames {indices[0]}..{indices[-1]}"):
        frames = reader.get_batch(indices).asnumpy()
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3:
        raise MediaError(path, f"decoded no usable frames (shape {tuple(frames.shape)})")
    n_real = frames.shape[0]
    if n_real < max_frames:
        pad = np.zeros((max_frames - n_real, *frames.shape[1:]), dtype=frames.dtype)
        frames = np.concatenate([frames, pad], axis=0)
    return frames, n_real


@functools.lru_cache(maxsize=1)
def _video_processor():
    from diffusers.video_processor import VideoProcessor

    return VideoProcessor()


def load_target_video(
    path: PathLike,
    sample_fps: float = 1,
    max_frames: int = 16,
    height: int = 320,
    width: int = 576,
    rng: RNG = None,
) -> torch.Tensor:
    """Read a video as the diffusion target: (3, max_frames, height, width) float32 in [-1, 1].

    Frames are sampled as in :func:`sample_frame_indices`, padded with black frames (value -1 after
    normalisation), then every frame is resized to (height, width) by diffusers' ``VideoProcessor`` (Lanczos).
    ``rng`` (numpy Generator or random.Random) draws the random window start, so results are reproducible.
    """
    from PIL import Image

    _positive("height", height)
    _positive("width", width)
    frames, _ = read_video_frames(path, sample_fps=sample_fps, max_frames=max_frames, rng=rng)
    with decoding(path, "video"):
        pil_frames = [Image.fromarray(f) for f in frames]
        out = _video_processor().preprocess_video(pil_frames, height=height, width=width)  # (1, 3, F, H, W)
    return out[0].float()


# ----------------------------------------------------------------------------------------------------------------
# audio (AudioLDM log-mel)
# ----------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def mel_filterbank(
    sampling_rate: int = 16000, n_fft: int = 1024, n_mels: int = 64, fmin: float = 0.0, fmax: float = 8000.0
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-scale, Slaney-normalised mel filterbank (librosa's default)."""
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=float(fmin),
        f_max=float(fmax),
        n_mels=n_mels,
        sample_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return fb.T.contiguous()


def read_audio_window(
    path: PathLike, sampling_rate: int = 16000, duration: float = 10.4, rng: RNG = None
) -> torch.Tensor:
    """Read channel 0 of an audio file as a normalised 1-D float32 waveform of exactly ``sampling_rate*duration``.

    Follows the reference: at the native rate, a file longer than ``duration`` gets up to 10
    random window starts and keeps the first window holding any |sample| > 1e-4 (else the last tried); resample to
    ``sampling_rate``; channel 0; remove the mean; peak-normalise to 0.5; zero-pad at the end. Unlike the
    reference, a waveform that is still longer than the target after resampling is cut.
    """
    import soundfile as sf
    import torchaudio

    _positive("sampling_rate", sampling_rate)
    _positive("duration", duration)
    text = require_file(path)
    with decoding(path, "audio"):
        data, native_sr = sf.read(text, dtype="float32", always_2d=True)  # (frames, channels), PCM scaled to [-1, 1)
    if data.shape[0] == 0:
        raise MediaError(path, "audio has no samples")
    check_finite(data, path, "decoded audio")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (channels, frames)

    native_target = int(native_sr * duration)
    if wav.shape[-1] > native_target:
        span = wav.shape[-1] - native_target
        for _ in range(10):
            start = int(_uniform01(rng) * span)
            window = wav[:, start : start + native_target]
            if bool((window.abs() > 1e-4).any()):
                break
        wav = window

    if native_sr != sampling_rate:
        with decoding(path, "audio"):
            wav = torchaudio.functional.resample(wav, int(native_sr), int(sampling_rate))
    wav = wav[0]
    # a silent window cannot be a generation target (peak normalisation would divide by ~0)
    check_not_constant(wav, path, "the audio target window")
    wav = wav - wav.mean()
    wav = wav / (wav.abs().max() + 1e-8) * 0.5

    target = int(sampling_rate * duration)
    out = torch.zeros(target, dtype=torch.float32)
    n = min(target, wav.shape[0])
    out[:n] = wav[:n]
    return out


def log_mel_spectrogram(
    waveform: torch.Tensor,
    sampling_rate: int = 16000,
    n_mel_channels: int = 64,
    mel_fmin: float = 0,
    mel_fmax: float = 8000,
    hop_length: int = 160,
    filter_length: int = 1024,
    win_length: int = 1024,
    target_length: int | None = None,
) -> torch.Tensor:
    """AudioLDM log-mel of a 1-D waveform: (frames, n_mels) float32.

    Reflect-pad by (filter_length - hop_length) / 2 on both sides, |STFT| (Hann, ``center=False``), Slaney mel
    filterbank, ``log(clamp(x, 1e-5))``; then pad with zeros / cut to ``target_length`` frames and drop the last mel
    bin if the count is odd (as the reference does).
    """
    if waveform.dim() != 1:
        raise ConfigError(f"waveform must be 1-D, got shape {tuple(waveform.shape)}")
    pad = (filter_length - hop_length) // 2
    y = torch.nn.functional.pad(waveform.float()[None, None], (pad, pad), mode="reflect")[0]
    spec = torch.stft(
        y,
        n_fft=filter_length,
        hop_length=hop_length,
        win_length=win_length,
        window=torch.hann_window(win_length),
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    ).abs()[0]  # (n_fft//2+1, frames)
    mel = mel_filterbank(sampling_rate, filter_length, n_mel_channels, float(mel_fmin), float(mel_fmax)) @ spec
    log_mel = torch.log(torch.clamp(mel, min=1e-5)).T.contiguous()  # (frames, n_mels)
    if target_length is not None:
        if log_mel.shape[0] < target_length:
            log_mel = torch.nn.functional.pad(log_mel, (0, 0, 0, target_length - log_mel.shape[0]))
        else:
            log_mel = log_mel[:target_length]
    if log_mel.shape[-1] % 2:
        log_mel = log_mel[..., :-1]
    return log_mel


def load_target_audio(
    path: PathLike,
    sampling_rate: int = 16000,
    duration: float = 10.4,
    n_mel_channels: int = 64,
    mel_fmin: float = 0,
    mel_fmax: float = 8000,
    hop_length: int = 160,
    filter_length: int = 1024,
    win_length: int = 1024,
    rng: RNG = None,
) -> torch.Tensor:
    """Read an audio file as the diffusion target: the AudioLDM log-mel, (int(duration*sr/hop), n_mels) float32.

    With the training defaults (16 kHz, 10.4 s, hop 160) that is (1040, 64). ``rng`` draws the window start of
    files longer than ``duration``.
    """
    _positive("hop_length", hop_length)
    if not (filter_length >= win_length > 0 and filter_length > hop_length):
        raise ConfigError(
            f"need filter_length >= win_length > 0 and filter_length > hop_length, got filter_length={filter_length},"
            f" win_length={win_length}, hop_length={hop_length}"
        )
    waveform = read_audio_window(path, sampling_rate=sampling_rate, duration=duration, rng=rng)
    target_length = int(duration * sampling_rate / hop_length)
    return log_mel_spectrogram(
        waveform,
        sampling_rate=sampling_rate,
        n_mel_channels=n_mel_channels,
        mel_fmin=mel_fmin,
        mel_fmax=mel_fmax,
        hop_length=hop_length,
        filter_length=filter_length,
        win_length=win_length,
        target_length=target_length,
    )
