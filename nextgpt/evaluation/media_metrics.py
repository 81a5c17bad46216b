"""Generation metrics: FID, CLIP score, CLIPSIM and FAD on media files, with the feature models of
`feature_models.py`. The Frechet distance is torch-fidelity's (mean and covariance of each set's features)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError, MediaError
from .feature_models import FeatureModel, audio_features, audio_rate, clip_for_torchmetrics, image_features

__all__ = ["clip_score", "clipsim", "fad", "fid", "frechet_distance", "load_audio", "load_image",
           "load_video_frames", "media_files"]

MEDIA_SUFFIXES = {"image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"), "video": (".mp4", ".avi", ".webm", ".mkv",
                                                                            ".mov", ".gif"),
                  "audio": (".wav", ".flac", ".mp3", ".ogg")}


# ------------------------------------------------------------------------------------------------ media files


def load_image(path: str | Path) -> torch.Tensor:
    """An image file -> uint8 (3, H, W) RGB."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise MediaError(f"{path}: cannot read the image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_video_frames(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """A video file -> uint8 (F, H, W, 3) RGB; with `max_frames`, that many frames spread evenly over the video."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (OSError, ValueError, av.error.FFmpegError) as err:
        raise MediaError(f"{path}: cannot read the video ({err})") from None
    if not frames:
        raise MediaError(f"{path}: the video has no frames")
    if max_frames is not None and len(frames) > max_frames:
        picks = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in picks]
    return np.stack(frames)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """An audio file -> mono float32 at `sample_rate` (torchaudio's resampling)."""
    import soundfile
    import torchaudio

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as err:
        raise MediaError(f"{path}: cannot read the audio ({err})") from None
    wave = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate:
        wave = torchaudio.functional.resample(wave, rate, sample_rate)
    return wave.numpy()


def media_files(folder: str | Path, modality: str) -> dict[str, Path]:
    """{sample id (file stem): path} of the `modality` files in a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of {modality} files")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in MEDIA_SUFFIXES[modality]:
            if path.stem in files:
                raise DataError(f"{folder}: two {modality} files for sample {path.stem!r}")
            files[path.stem] = path
    if not files:
        raise DataError(f"{folder}: no {modality} files ({', '.join(MEDIA_SUFFIXES[modality])})")
    return files


# ------------------------------------------------------------------------------------------------ metrics


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (torch-fidelity's statistics and
    formula: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2))."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    for name, feats in (("first", features_a), ("second", features_b)):
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise DataError(f"the Frechet distance needs at least 2 samples per set; the {name} set has "
                            f"{feats.shape[0] if feats.ndim else 0}")
    stats_a = fid_features_to_statistics(features_a.detach().double().cpu())
    stats_b = fid_features_to_statistics(features_b.detach().double().cpu())
    return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])


def fid(fm: FeatureModel, generated: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """FID between two sets of uint8 (3, H, W) images (video frames count as images)."""
    return frechet_distance(image_features(fm, list(generated)), image_features(fm, list(reference)))


def _clip_metric(fm: FeatureModel):
    from torchmetrics.multimodal.clip_score import CLIPScore

    return CLIPScore(model_name_or_path=lambda: clip_for_torchmetrics(fm))


def clip_score(fm: FeatureModel, images: Sequence[torch.Tensor], captions: Sequence[str]) -> float:
    """torchmetrics' CLIP score: max(100 x mean cosine(image, caption), 0)."""
    if len(images) != len(captions) or not images:
        raise DataError(f"CLIP score needs one caption per image ({len(images)} images, {len(captions)} captions)")
    metric = _clip_metric(fm)
    metric.update(list(images), list(captions))
    return float(metric.compute())


def clipsim(fm: FeatureModel, videos: Sequence[np.ndarray], captions: Sequence[str]) -> float:
    """CLIPSIM: each video's CLIP score over its frames (every frame with the caption), averaged over videos."""
    if len(videos) != len(captions) or not videos:
        raise DataError(f"CLIPSIM needs one caption per video ({len(videos)} videos, {len(captions)} captions)")
    metric = _clip_metric(fm)
    scores = []
    for frames, caption in zip(videos, captions):
        metric.reset()
        metric.update([torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1) for f in frames],
                      [caption] * len(frames))
        scores.append(float(metric.compute()))
    return float(np.mean(scores))


def fad(fm: FeatureModel, generated: Sequence[Path | np.ndarray], reference: Sequence[Path | np.ndarray]) -> float:
    """Frechet audio distance between two sets of audio files (or waveforms at the model's rate)."""
    rate = audio_rate(fm)

    def waves(items):
        return [load_audio(x, rate) if isinstance(x, (str, Path)) else np.asarray(x, np.float32) for x in items]

    return frechet_distance(audio_features(fm, waves(generated)), audio_features(fm, waves(reference)))
