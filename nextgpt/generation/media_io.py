"""Writing generated media: PNG images, 16-bit WAV audio, MP4 video, and `result.json` = {"text", "images",
"audios", "videos"} (file names relative to the output directory)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import MODALITIES
from ..errors import DataError
from .types import AUDIO_SAMPLE_RATE, GenerationResult

RESULT_NAME = "result.json"
MEDIA_EXTENSIONS = {"image": "png", "video": "mp4", "audio": "wav"}
RESULT_KEYS = {"image": "images", "video": "videos", "audio": "audios"}


def save_image(image, path: str | Path) -> Path:
    image.save(str(path), format="PNG")
    return Path(path)


def save_audio(waveform: np.ndarray, path: str | Path, sample_rate: int = AUDIO_SAMPLE_RATE) -> Path:
    """16-bit PCM WAV (soundfile); samples are clipped to [-1, 1]."""
    import soundfile

    data = np.clip(np.asarray(waveform, dtype=np.float32).reshape(-1), -1.0, 1.0)
    soundfile.write(str(path), data, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)


def save_video(frames: np.ndarray, path: str | Path, fps: int = 10) -> Path:
    """uint8 frames (F, H, W, 3) → H.264 MP4 (PyAV; MPEG-4 part 2 when no H.264 encoder is available). Odd sizes
    are padded by one edge pixel (yuv420p needs even sides)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"video frames must be (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def _free_name(outdir: Path, stem: str, ext: str) -> Path:
    """`stem.ext`, or `stem_1.ext`, … : never overwrite; no prompt text in file names (the reference did that)."""
    path = outdir / f"{stem}.{ext}"
    k = 1
    while path.exists():
        path = outdir / f"{stem}_{k}.{ext}"
        k += 1
    return path


def write_result(result: GenerationResult, outdir: str | Path, video_fps: int = 10) -> dict[str, Any]:
    """Write every output (PNG / 16 kHz WAV / MP4) and `result.json` = {"text", "images", "audios", "videos"}
    with paths relative to `outdir`; returns that dictionary."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"text": result.text, "images": [], "audios": [], "videos": []}
    counts = {m: 0 for m in MODALITIES}
    for output in result.outputs:
        m = output.modality
        path = _free_name(outdir, f"{m}_{counts[m]:02d}", MEDIA_EXTENSIONS[m])
        counts[m] += 1
        if m == "image":
            save_image(output.data, path)
        elif m == "audio":
            save_audio(output.data, path, output.sample_rate or AUDIO_SAMPLE_RATE)
        else:
            save_video(output.data, path, video_fps)
        summary[RESULT_KEYS[m]].append(path.name)
    (outdir / RESULT_NAME).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
