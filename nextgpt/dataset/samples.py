"""What building a training sample may decide: the options of a run, and the samples it skips and why.

A sample that cannot be trained on is not an error of the run (under ``data.strict: false``): ``__getitem__``
returns a :class:`SkippedSample`, the collator drops and counts it, and the trainer's epoch summary lists the
counts by reason (:data:`SKIP_REASONS`). With ``data.strict: true`` each of them is a ``DataError`` naming the file
and the sample instead. :func:`content_problem` holds the checks made from the JSON alone (empty text, media the
project does not know).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..constants import MAX_MEDIA_PER_SAMPLE, MODALITIES
from ..conversation import TEMPLATES
from ..errors import ConfigError, MediaError
from ..media_guard import DEFAULT_MAX_IMAGE_PIXELS

__all__ = [
    "SKIP_BAD_EMBEDDING", "SKIP_BAD_MEDIA", "SKIP_BAD_VALUES", "SKIP_EMPTY_TEXT", "SKIP_MEDIA_TOO_LARGE",
    "SKIP_MISSING_MEDIA", "SKIP_REASONS", "SKIP_TOO_LONG", "SKIP_UNKNOWN_MEDIA", "SampleOptions", "SkippedSample",
    "UNKNOWN_MEDIA", "UNKNOWN_PLACEHOLDER", "content_problem", "media_skip_reason",
]

# Why a sample was skipped (keys of the per-epoch summary).
SKIP_MISSING_MEDIA = "missing_media"
SKIP_BAD_MEDIA = "bad_media"  # the file cannot be decoded
SKIP_MEDIA_TOO_LARGE = "media_too_large"  # over data.max_image_pixels
SKIP_BAD_VALUES = "bad_media_values"  # decodes to NaN / Inf, or to a constant signal where that makes no sense
SKIP_BAD_EMBEDDING = "bad_caption_embedding"  # NaN / Inf in a caption-embedding file
SKIP_EMPTY_TEXT = "empty_text"  # an empty answer or an empty caption
SKIP_UNKNOWN_MEDIA = "unknown_media"  # a media key or placeholder of a modality the project does not serve
SKIP_TOO_LONG = "too_long"
SKIP_REASONS = (SKIP_MISSING_MEDIA, SKIP_BAD_MEDIA, SKIP_MEDIA_TOO_LARGE, SKIP_BAD_VALUES, SKIP_BAD_EMBEDDING,
                SKIP_EMPTY_TEXT, SKIP_UNKNOWN_MEDIA, SKIP_TOO_LONG)
_MEDIA_CAUSES = {"missing": SKIP_MISSING_MEDIA, "undecodable": SKIP_BAD_MEDIA, "too_large": SKIP_MEDIA_TOO_LARGE,
                 "non_finite": SKIP_BAD_VALUES, "constant": SKIP_BAD_VALUES}

#: Media kinds of ImageBind and of other multimodal datasets that NExT-GPT does not serve: a key
#: (``input_depth``, ``output_thermal``, ``depth_captions`` …) or a placeholder (``<depth>``) naming one would
#: otherwise be read as plain text and train a sample without its media.
UNKNOWN_MEDIA = ("depth", "thermal", "imu", "point", "pointcloud", "speech", "music", "sound")
_UNKNOWN_KEY = re.compile(r"^(?:(?:input|output)_(?P<a>\w+)|(?P<b>\w+)_(?:captions|caption_embeddings))$")
UNKNOWN_PLACEHOLDER = re.compile(r"<(%s)>" % "|".join(UNKNOWN_MEDIA))


def media_skip_reason(error: MediaError) -> str:
    """The skip reason of a media failure (by its cause)."""
    return _MEDIA_CAUSES.get(getattr(error, "cause", "undecodable"), SKIP_BAD_MEDIA)


def content_problem(record: Mapping[str, Any], turns: list[dict]) -> tuple[str, str] | None:
    """(skip reason, message) for a sample that parses but cannot be trained on as written, else None:
    a key or placeholder of an unknown media kind, an answer (gpt turn) with no text and no signal span, no
    answer at all, or an empty caption."""
    for key in record:
        match = _UNKNOWN_KEY.match(str(key))
        kind = (match.group("a") or match.group("b")) if match else None
        if kind in UNKNOWN_MEDIA:
            return SKIP_UNKNOWN_MEDIA, f"key {key!r} names a media kind this project does not serve " \
                                       f"(known: {', '.join(MODALITIES)})"
    for k, turn in enumerate(turns):
        found = UNKNOWN_PLACEHOLDER.search(turn["value"])
        if found:
            return SKIP_UNKNOWN_MEDIA, f"turn {k} holds the placeholder {found.group(0)!r}, a media kind this " \
                                       f"project does not serve (known: {', '.join(MODALITIES)})"
    answers = turns[1::2]
    if not answers:
        return SKIP_EMPTY_TEXT, "the conversation has no answer (gpt turn)"
    for k, turn in enumerate(turns):
        if k % 2 == 1 and not turn["value"].strip():
            return SKIP_EMPTY_TEXT, f"turn {k} is an empty answer"
    for m in MODALITIES:
        captions = record.get(f"{m}_captions")
        for j, caption in enumerate([captions] if isinstance(captions, str) else captions or []):
            if isinstance(caption, str) and not caption.strip():
                return SKIP_EMPTY_TEXT, f"{m}_captions[{j}] is empty"
    return None


@dataclass(frozen=True)
class SkippedSample:
    """Returned by ``__getitem__`` instead of a sample; the collator drops it and counts it by ``reason``."""

    sample_id: str
    reason: str
    message: str


@dataclass
class SampleOptions:
    """How samples are built; the same for every dataset of a run (per-dataset folders live in the catalog).

    ``max_length`` / ``media_tokens``: the model's longest spliced sequence and the LLM tokens one input item of
    each modality becomes (e.g. 8 for the group projector); ``max_length=None`` disables the length check.
    ``targets``: modalities whose ``output_*`` media are loaded as decoder targets (for the denoising loss).
    """

    template: str = "v1"
    caption_embeddings: str = "cache"  # "cache" (read .npy) | "online" (raw captions)
    targets: tuple[str, ...] = ()
    image_aspect_ratio: str = "pad"
    encoder: str = "imagebind"  # model.encoder.kind: whose preprocessing the input media get
    max_media_per_sample: int = MAX_MEDIA_PER_SAMPLE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_length: int | None = None
    media_tokens: Mapping[str, int] | None = None
    strict: bool = False
    image_target: Mapping[str, Any] = field(default_factory=dict)  # load_target_image keyword arguments
    video_target: Mapping[str, Any] = field(default_factory=dict)
    audio_target: Mapping[str, Any] = field(default_factory=dict)
    # Per modality: the width the model's output projector gives its decoder (model.<m>.out_features) and the
    # decoder; caption embeddings of another width stop the run when the dataset is built.
    caption_widths: Mapping[str, int] | None = None
    caption_decoders: Mapping[str, str | None] | None = None
    feature_cache: Any = None  # a nextgpt.dataset.feature_cache.FeatureCache: read encoder features from it

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ConfigError(f"unknown conversation template {self.template!r}; known: {', '.join(TEMPLATES)}")
        if self.caption_embeddings not in ("cache", "online"):
            raise ConfigError(f"caption_embeddings must be 'cache' or 'online', got {self.caption_embeddings!r}")
        self.targets = tuple(self.targets)
        bad = [m for m in self.targets if m not in MODALITIES]
        if bad:
            raise ConfigError(f"target modalities must be among {MODALITIES}, got {bad}")
        if self.image_aspect_ratio not in ("pad", "square"):
            raise ConfigError(f"image_aspect_ratio must be 'pad' or 'square', got {self.image_aspect_ratio!r}")
        if not isinstance(self.max_image_pixels, int) or self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels must be a positive integer, got {self.max_image_pixels!r}")
        if not isinstance(self.max_media_per_sample, int) or self.max_media_per_sample < 1:
            raise ConfigError(f"max_media_per_sample must be a positive integer, got {self.max_media_per_sample!r}")
        if self.max_length is not None:
            if not isinstance(self.max_length, int) or self.max_length < 1:
                raise ConfigError(f"max_length must be a positive integer or None, got {self.max_length!r}")
            tokens = dict(self.media_tokens or {})
            missing = [m for m in MODALITIES if not isinstance(tokens.get(m), int) or tokens[m] < 1]
            if missing:
                raise ConfigError(f"media_tokens must give a positive number of LLM tokens per item for every "
                                  f"modality when max_length is set; missing or bad: {missing}")
            self.media_tokens = tokens

    @classmethod
    def from_config(cls, data_config: Any, template: str, max_length: int | None = None,
                    media_tokens: Mapping[str, int] | None = None,
                    targets: Iterable[str] = (), model_config: Any = None) -> "SampleOptions":
        """Options from a `DataConfig` (nextgpt/config.py) plus what the model decides (`model_config`: the
        `ModelConfig`, for the encoder's preprocessing and the caption-embedding widths)."""
        widths = decoders = None
        encoder = "imagebind"
        if model_config is not None:
            widths = {m: model_config.output(m).out_features for m in MODALITIES}
            decoders = {m: model_config.output(m).decoder for m in MODALITIES}
            encoder = model_config.encoder.kind
        return cls(template=template, caption_embeddings=data_config.caption_embeddings, targets=tuple(targets),
                   caption_widths=widths, caption_decoders=decoders,
                   image_aspect_ratio=data_config.image_aspect_ratio, encoder=encoder,
                   max_media_per_sample=data_config.max_media_per_sample,
                   max_image_pixels=data_config.max_image_pixels, max_length=max_length,
                   media_tokens=media_tokens, strict=data_config.strict,
                   image_target=dataclasses.asdict(data_config.image_target),
                   video_target=dataclasses.asdict(data_config.video_target),
                   audio_target=dataclasses.asdict(data_config.audio_target))
