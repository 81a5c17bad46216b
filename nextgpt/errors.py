"""Project exceptions: every error a user can cause names what was wrong and where."""


class NextGPTError(Exception):
    """Base class of all errors raised on purpose by this project."""


class ConfigError(NextGPTError):
    """A bad configuration: unknown key, wrong type, out-of-range value, bad YAML."""


class MediaError(NextGPTError):
    """A media file that is missing, cannot be decoded, or decodes to unusable values. `path` names the file;
    `cause` is one of "missing", "undecodable", "too_large", "non_finite", "constant" (how skips are counted)."""

    def __init__(self, path, reason: str, cause: str = "undecodable"):
        self.path = str(path)
        self.reason = reason
        self.cause = cause
        super().__init__(f"{self.path}: {reason}")


class DataError(NextGPTError):
    """Malformed dataset content (JSON, placeholders, caption embeddings)."""


class CheckpointError(NextGPTError):
    """A checkpoint that cannot be loaded strictly: missing, unexpected or mis-shaped keys."""
