"""Generated media → response parts: each output written with the generation package's writers (PNG, 16-bit WAV,
MP4), then answered as base64 data, or kept under the media folder and answered as a /v1/files/... URL."""
from __future__ import annotations

import base64
import re
import shutil
import tempfile
import threading
from pathlib import Path

from ..generation import save_audio, save_image, save_video
from ..generation.media_io import MEDIA_EXTENSIONS
from ..generation.types import AUDIO_SAMPLE_RATE, MediaOutput
from .protocol import media_part

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_FILE = re.compile(r"^(image|audio|video)_\d+\.(png|wav|mp4)$")


class MediaStore:
    """Folders of answer media, one per completion id; only the newest `keep` folders are kept."""

    def __init__(self, root: Path | None, keep: int):
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="nextgpt-media-")
        self.root = Path(root) if root is not None else Path(self._tmp.name)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()
        self._order: list[Path] = []

    def folder(self, answer_id: str) -> Path:
        folder = self.root / answer_id
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._order.append(folder)
            old = self._order[:-self.keep]
            del self._order[:-self.keep]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def find(self, answer_id: str, name: str) -> Path | None:
        """The file of a /v1/files/{answer_id}/{name} URL, or None (names are checked: no path tricks)."""
        if not _NAME.match(answer_id) or not _FILE.match(name):
            return None
        path = self.root / answer_id / name
        return path if path.is_file() else None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def write_output(output: MediaOutput, folder: Path, index: int, video_fps: int) -> Path:
    """One output as `<modality>_<index>.<ext>` in `folder`."""
    path = folder / f"{output.modality}_{index:02d}.{MEDIA_EXTENSIONS[output.modality]}"
    if output.modality == "image":
        save_image(output.data, path)
    elif output.modality == "audio":
        save_audio(output.data, path, output.sample_rate or AUDIO_SAMPLE_RATE)
    else:
        save_video(output.data, path, video_fps)
    return path


def output_part(output: MediaOutput, path: Path, url: str | None) -> dict:
    """The response part of a written output: base64 data, or `url` when given; with its decoded shape."""
    extra: dict = {}
    if output.modality == "image":
        extra = {"width": output.data.size[0], "height": output.data.size[1]}
    elif output.modality == "audio":
        extra = {"sample_rate": output.sample_rate or AUDIO_SAMPLE_RATE}
    else:
        extra = {"frames": int(output.data.shape[0]), "height": int(output.data.shape[1]),
                 "width": int(output.data.shape[2])}
    if url is not None:
        return media_part(output.modality, url=url, **extra)
    return media_part(output.modality, data=base64.b64encode(path.read_bytes()).decode("ascii"), **extra)
