"""Project exceptions: every error a user can cause names what was wrong and where."""


class NextGPTError(Exception):
    """Base class of all errors raised on purpose by this project."""


class ConfigError(NextGPTError):
    """A bad configuration: unknown key, wrong type, out-of-range value, bad YAML."""


class MediaError(NextGPTError):
    """A media file that is missing or cannot be decoded. `path` names the file."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataError(NextGPTError):
    """Malformed dataset content (JSON, placeholders, caption embeddings)."""


class CheckpointError(NextGPTError):
    """A checkpoint that cannot be loaded strictly: missing, unexpected or mis-shaped keys."""
