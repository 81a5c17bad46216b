"""ImageBind input loaders, numerically equal to the reference's ``data.py``.

Images go through torchvision's PIL transforms (Pillow's antialiased bicubic resize), audio is read with soundfile,
resampled with ``torchaudio.functional.resample`` and turned into Kaldi fbanks with
``torchaudio.compliance.kaldi.fbank``; video is decoded with decord. pytorchvideo's clip sampler, temporal
subsample, short-side scale and spatial crop are re-implemented here (a few lines each) because the pinned
pytorchvideo commit is not installable and its PyPI release differs (clip spacing K instead of K-1).
"""
from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from typing import Sequence, Union

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
import torchaudio
import torchvision.transforms.functional as TF
from PIL import Image

from nextgpt.errors import ConfigError, MediaError
from nextgpt.media_guard import check_finite, decoding, open_image, require_file

from .tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# expand2square's background: tuple(int(255 * m) for m in CLIP_MEAN)
PAD_BACKGROUND = tuple(int(255 * m) for m in CLIP_MEAN)  # (122, 116, 104)
IMAGE_SIZE = 224
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
KALDI_WINDOW_SAMPLES = 400  # 25 ms at 16 kHz: the shortest clip Kaldi's fbank accepts
ASPECT_RATIOS = ("square", "pad")


# --------------------------------------------------------------------------------------------------------------
# Clip sampling (pytorchvideo ConstantClipsPerVideoSampler at commit 28fe037d), exact rational arithmetic
# --------------------------------------------------------------------------------------------------------------


def clip_timepoints(duration: float, clip_duration: float, clips_per_video: int) -> list[tuple[Fraction, Fraction]]:
    """``clips_per_video`` windows [k*step, k*step + clip_duration] with step = max(duration - c, 0) / max(K-1, 1).

    ``duration`` is a float; ``duration - c`` is taken in float and converted exactly to a Fraction, then all
    arithmetic is exact (the reference's pytorchvideo sampler). Short media give K identical or overlapping clips.
    """
    if clips_per_video < 1:
        raise ConfigError(f"clips_per_video must be >= 1, got {clips_per_video}")
    max_start = Fraction(max(duration - clip_duration, 0))
    step = Fraction(max_start, max(clips_per_video - 1, 1))
    clip = Fraction(clip_duration)
    return [(step * k, step * k + clip) for k in range(clips_per_video)]


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


def expand2square(image: Image.Image, background: tuple[int, ...] = PAD_BACKGROUND) -> Image.Image:
    """NExT-GPT's training-time padding: paste the image centred on a square canvas of its longer side."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _open_image(item: PathLike | Image.Image, max_pixels: int | None = None) -> Image.Image:
    if isinstance(item, Image.Image):
        # The reference uses PIL inputs as they are; converting RGB -> RGB is an identical copy, and other modes
        # (which crash the reference's normalisation) become RGB.
        return item if item.mode == "RGB" else item.convert("RGB")
    return open_image(item, max_pixels)  # MediaError for anything wrong, 16-bit scaled, pixel limit


def transform_image(image: Image.Image, aspect_ratio: str = "square") -> torch.Tensor:
    """RGB PIL image -> [3, 224, 224] float32: (pad,) Resize(224, bicubic), CenterCrop(224), /255, CLIP norm."""
    if aspect_ratio == "pad":
        image = expand2square(image)
    elif aspect_ratio != "square":
        raise ConfigError(f"aspect_ratio must be one of {ASPECT_RATIOS}, got {aspect_ratio!r}")
    image = TF.resize(image, IMAGE_SIZE, interpolation=TF.InterpolationMode.BICUBIC)
    image = TF.center_crop(image, IMAGE_SIZE)
    return TF.normalize(TF.to_tensor(image), mean=CLIP_MEAN, std=CLIP_STD)


def load_and_transform_vision_data(
    paths: Sequence[PathLike | Image.Image] | None,
    device: torch.device | str = "cpu",
    aspect_ratio: str = "square",
    max_pixels: int | None = None,
) -> torch.Tensor | None:
    """Images (paths or PIL images) -> [N, 3, 224, 224]. ``aspect_ratio="pad"`` is NExT-GPT's training-time
    expand2square with the CLIP-mean background (122, 116, 104); ``"square"`` (the default) crops.
    ``max_pixels``: the largest width x height accepted (default Pillow's limit; nextgpt/media_guard.py)."""
    if paths is None:
        return None
    if isinstance(paths, (str, os.PathLike, Image.Image)):
        paths = [paths]
    images = [transform_image(_open_image(p, max_pixels), aspect_ratio) for p in paths]
    return torch.stack(images, dim=0).to(device)


# --------------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------------


def read_audio(path: PathLike) -> tuple[torch.Tensor, int]:
    """Channels-first float32 [C, L] (integer PCM scaled to [-1, 1)) and the sample rate, via soundfile.

    For WAV this is bit-identical to ``torchaudio.load``; the array is made contiguous so that later reductions
    run in the same order as on torchaudio's tensor.
    """
    text = require_file(path, "audio file")
    with decoding(path, "audio"):
        data, sr = soundfile.read(text, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise MediaError(path, "audio file holds no samples")
    check_finite(data, path, "decoded audio")  # float WAVs can hold NaN / Inf samples
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def waveform_to_melspec(
    clip: torch.Tensor, sample_rate: int, num_mel_bins: int, target_length: int
) -> torch.Tensor:
    """One clip -> [1, num_mel_bins, target_length] log-mel (Kaldi fbank), not yet normalised.

    ``clip`` is a view into the shared waveform and its DC offset is removed **in place**, like the reference:
    later overlapping clips see the already shifted samples.
    """
    clip -= clip.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        clip,
        htk_compat=True,
        sample_frequency=sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=num_mel_bins,
        dither=0.0,
        frame_length=25,
        frame_shift=10,
    ).transpose(0, 1)
    n_frames = fbank.size(1)
    gap = target_length - n_frames
    if abs(gap) / n_frames > 0.2:
        logger.warning(
            "Large gap between audio n_frames (%d) and target_length (%d); is the target length right?",
            n_frames, target_length,
        )
    if gap > 0:
        fbank = F.pad(fbank, (0, gap), mode="constant", value=0)
    elif gap < 0:
        fbank = fbank[:, :target_length]
    return fbank.unsqueeze(0)


def load_and_transform_audio_data(
    paths: Sequence[PathLike] | None,
    device: torch.device | str = "cpu",
    num_mel_bins: int = 128,
    target_length: int = 204,
    sample_rate: int = 16000,
    clip_duration: float = 2,
    clips_per_video: int = 3,
    mean: float = AUDIO_MEAN,
    std: float = AUDIO_STD,
) -> torch.Tensor | None:
    """Audio files -> [N, clips_per_video, 1, num_mel_bins, target_length] normalised log-mel clips.

    Audio shorter than ``clip_duration`` yields ``clips_per_video`` copies of its (shorter, zero-padded) fbank,
    as the reference does; a file under 25 ms after resampling cannot be framed and raises MediaError.
    """
    if paths is None:
        return None
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    outputs = []
    for path in paths:
        waveform, sr = read_audio(path)
        with decoding(path, "audio"):
            if sr != sample_rate:
                waveform = torchaudio.functional.resample(waveform, orig_freq=sr, new_freq=sample_rate)
            num_samples = waveform.size(1)
            clips = []
            for start, end in clip_timepoints(num_samples / sample_rate, clip_duration, clips_per_video):
                view = waveform[:, int(start * sample_rate) : int(end * sample_rate)]
                if view.size(1) < KALDI_WINDOW_SAMPLES:
                    raise MediaError(
                        path,
                        f"audio clip too short for a 25 ms fbank frame ({view.size(1)} samples at {sample_rate} "
                        f"Hz; the whole file has {num_samples})",
                    )
                clips.append(waveform_to_melspec(view, sample_rate, num_mel_bins, target_length))
            clips = [TF.normalize(c, mean=[mean], std=[std]) for c in clips]
        outputs.append(torch.stack(clips, dim=0))
        check_finite(outputs[-1], path, "audio fbank")
    return torch.stack(outputs, dim=0).to(device)


# --------------------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------------------


def _open_video(path: PathLike):
    import decord

    text = require_file(path, "video file")
    with decoding(path, "video"):
        reader = decord.VideoReader(text, ctx=decord.cpu(0), width=-1, height=-1, num_threads=0)
    if len(reader) == 0:
        raise MediaError(path, "video holds no frames")
    fps = float(reader.get_avg_fps())
    if not (math.isfinite(fps) and fps > 0):
        raise MediaError(path, f"video has no usable frame rate (avg_frame_rate {fps})")
    return reader, fps


def clip_frame_indices(
    fps: float, num_frames: int, start: Fraction, end: Fraction, num_samples: int
) -> tuple[range, list[int]]:
    """The decoded window range(ceil(fps*start), min(ceil(fps*end), N)) and the ``num_samples`` frames that
    UniformTemporalSubsample keeps from it (linspace(0, T-1) in float32, clamped, truncated)."""
    window = range(math.ceil(fps * start), min(math.ceil(fps * end), num_frames))
    t = len(window)
    if t == 0:
        return window, []
    picks = torch.linspace(0, t - 1, num_samples).clamp(0, t - 1).long().tolist()
    return window, [window[i] for i in picks]


def short_side_scale(video: torch.Tensor, size: int) -> torch.Tensor:
    """[C, T, H, W] -> short side ``size`` (long side floored), bilinear, no antialias (pytorchvideo)."""
    _, _, h, w = video.shape
    if w < h:
        new_h, new_w = int(math.floor(float(h) / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(float(w) / h * size))
    return F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False)


def spatial_crops(video: torch.Tensor, size: int = IMAGE_SIZE) -> list[torch.Tensor]:
    """Three ``size`` crops along the long side: start, centre (ceil offset), end."""
    h, w = video.shape[-2:]
    y0 = int(math.ceil((h - size) / 2))
    x0 = int(math.ceil((w - size) / 2))
    crops = []
    for index in range(3):
        y, x = y0, x0
        if h > w:
            y = (0, y0, h - size)[index]
        else:
            x = (0, x0, w - size)[index]
        crops.append(video[..., y : y + size, x : x + size])
    return crops


def load_and_transform_video_data(
    paths: Sequence[PathLike] | None,
    device: torch.device | str = "cpu",
    clip_duration: float = 2,
    clips_per_video: int = 5,
    sample_rate: int = 16000,
) -> torch.Tensor | None:
    """Videos -> [N, clips_per_video * 3, 3, clip_duration, 224, 224] (clip-major, crop-minor).

    As in the reference, ``clip_duration`` is also the number of frames kept per clip (the first and last decoded
    frame of each 2-s window); fps is the stream's average frame rate from its header and the duration is
    frames / fps. ``sample_rate`` is unused (kept for the reference's signature). Only the kept frames are decoded.
    """
    if paths is None:
        return None
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1, 1)
    num_samples = int(clip_duration)
    outputs = []
    for path in paths:
        reader, fps = _open_video(path)
        num_frames = len(reader)
        duration = num_frames / fps
        entries: list[torch.Tensor] = []
        for start, end in clip_timepoints(duration, clip_duration, clips_per_video):
            if start > duration:
                raise MediaError(path, f"clip start {float(start):.3f}s lies beyond the video ({duration:.3f}s)")
            _, picks = clip_frame_indices(fps, num_frames, start, end, num_samples)
            if not picks:
                raise MediaError(path, f"no frames in the window [{float(start):.3f}s, {float(end):.3f}s)")
            with decoding(path, f"video frames {picks}"):
                batch = reader.get_batch(picks)
                # decord's global bridge may have been switched to torch by other code in the process
                frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
                clip = torch.from_numpy(frames).to(torch.float32).permute(3, 0, 1, 2)  # [T,H,W,3] -> [3,T,H,W]
                clip = clip / 255.0
                clip = short_side_scale(clip, IMAGE_SIZE)
                clip = (clip - mean) / std
                entries.extend(spatial_crops(clip, IMAGE_SIZE))
        outputs.append(torch.stack(entries, dim=0))
        del reader
    return torch.stack(outputs, dim=0).to(device)


# --------------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------------


def load_and_transform_text(texts: Sequence[str] | None, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Captions -> [N, 77] int64 CLIP BPE ids ([SOT] ids [EOT], cut to 77 so long captions lose EOT, zero padded)."""
    if texts is None:
        return None
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = get_tokenizer()
    return torch.stack([tokenizer(t) for t in texts], dim=0).to(device)


# --------------------------------------------------------------------------------------------------------------
# One entry point for the data pipeline
# --------------------------------------------------------------------------------------------------------------

PREPROCESS_MODALITIES = ("image", "video", "audio", "text")


def preprocess(
    items: Sequence[PathLike | Image.Image | str] | PathLike | Image.Image,
    modality: str,
    aspect_ratio: str = "square",
    device: torch.device | str = "cpu",
    max_pixels: int | None = None,
) -> torch.Tensor:
    """Media of one modality -> the encoder's input tensor: image [N,3,224,224], video [N,15,3,2,224,224],
    audio [N,3,1,128,204], text [N,77] int64. ``aspect_ratio`` and ``max_pixels`` apply to images only."""
    if modality == "image":
        return load_and_transform_vision_data(items, device, aspect_ratio=aspect_ratio, max_pixels=max_pixels)
    if modality == "video":
        return load_and_transform_video_data(items, device)
    if modality == "audio":
        return load_and_transform_audio_data(items, device)
    if modality == "text":
        return load_and_transform_text(items, device)
    raise ConfigError(f"unknown modality {modality!r}; expected one of {PREPROCESS_MODALITIES}")
