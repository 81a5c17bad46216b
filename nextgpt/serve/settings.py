"""What a server is allowed to do: its limits, authentication and media options (one `ServeSettings` per app)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass
class ServeSettings:
    """Server-side settings. Generation defaults are not here: they are the generator's `options` (the
    checkpoint's `generate` section with the command line's overrides), which every request may override."""

    model_id: str = "nextgpt"  # the name /v1/models lists and requests must use (or omit)
    api_key: str | None = None  # when set, /v1/* requires "Authorization: Bearer <api_key>"
    max_queue: int = 16  # requests waiting behind the running one; one more answers 429
    max_body_bytes: int = 32 * 2**20  # request bodies above this answer 413
    max_input_pixels: int = 4096 * 4096  # an input image or video frame above this answers 413
    max_input_seconds: float = 60.0  # an input audio or video longer than this answers 413
    max_tokens: int | None = None  # the largest max_tokens a request may ask (default: the model's max_length)
    max_output_pixels: int = 1024 * 1024  # largest image / video frame a request may ask for (height x width)
    max_output_seconds: float = 30.0  # longest audio (audio_length_s) or video (frames / fps) a request may ask for
    max_steps: int = 200  # most denoising steps a request may ask for, per output
    local_files: Path | None = None  # a folder whose files requests may name by path (off when None)
    media_urls: bool = False  # answer media as /v1/files/... URLs instead of base64 data
    media_dir: Path | None = None  # where media are kept for /v1/files (default: a temporary folder)
    keep_media: int = 256  # answers whose media stay downloadable; older ones are deleted
    warmup: bool = True  # one short generation and every decoder loaded before the first request

    def __post_init__(self):
        for name in ("max_queue", "max_body_bytes", "max_input_pixels", "max_output_pixels", "max_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_media < 1:
            raise ConfigError(f"keep_media must be >= 1, got {self.keep_media}")
        if self.local_files is not None:
            self.local_files = Path(self.local_files).resolve()
            if not self.local_files.is_dir():
                raise ConfigError(f"{self.local_files}: the local-files folder does not exist")
