"""What generation takes and returns: requests and conversation turns, media outputs, results, stream events, and
the generation options (a checkpoint's `generate` section with per-call overrides)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import torch

from ..config import GenerateConfig, config_from_dict

if TYPE_CHECKING:
    from PIL import Image

MediaItem = Union[str, os.PathLike, "Image.Image"]  # PIL images are accepted for the image modality
LogitsHook = Callable[[int, torch.Tensor], torch.Tensor]
ForceSpec = Union[str, Sequence[str], None]  # one modality, several, or none

AUDIO_SAMPLE_RATE = 16000  # the WAV rate of an audio output that does not state its own

# ------------------------------------------------------------------------------------------------ data types


@dataclass
class Turn:
    """One exchange of a conversation: the user text (with one placeholder per input medium), the projected
    features of those media by modality (in placeholder order), and the answer (None while it is generated)."""

    user: str
    media: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    answer: str | None = None


@dataclass
class Request:
    """One prompt for `NextGPTGenerator.generate` / `generate_batch`. Media are file paths (PIL images also work
    for images). Placeholders in `prompt` mark where each medium goes; without them, one placeholder per medium is
    put before the text (images, then videos, then audios)."""

    prompt: str
    images: Sequence[MediaItem] = ()
    videos: Sequence[MediaItem] = ()
    audios: Sequence[MediaItem] = ()
    history: Sequence[Turn] = ()


@dataclass
class MediaOutput:
    """One generated medium: PIL image, uint8 frames (F, H, W, 3) or float32 waveform at `sample_rate`."""

    modality: str
    data: Any
    span: tuple[int, int]  # [start, end) of its signal span in `GenerationResult.token_ids`
    sample_rate: int | None = None


@dataclass
class GenerationResult:
    text: str  # the answer; each output's signal span is shown as its placeholder (<image>, <video>, <audio>)
    token_ids: list[int]  # generated ids, signal spans included, the stop token / string excluded
    outputs: list[MediaOutput]  # in the order of their spans
    finish_reason: str  # "stop" (EOS or stop string) or "length" (max_new_tokens)
    prompt_tokens: int = 0  # positions the LLM read before answering: text tokens plus each medium's embeddings

    def media(self, modality: str) -> list[Any]:
        return [o.data for o in self.outputs if o.modality == modality]

    @property
    def images(self) -> list[Any]:
        return self.media("image")

    @property
    def videos(self) -> list[Any]:
        return self.media("video")

    @property
    def audios(self) -> list[Any]:
        return self.media("audio")


@dataclass
class StreamEvent:
    """What `NextGPTGenerator.stream` yields: "text" (a piece of the answer), "media" (one decoded output) and, last,
    "done" (the complete result)."""

    kind: str
    text: str = ""
    output: MediaOutput | None = None
    result: GenerationResult | None = None


# -------------------------------------------------------------------------------------------------- options


def resolve_options(base: GenerateConfig | None = None, **overrides: Any) -> GenerateConfig:
    """`base` (default: the reference's generation defaults) with `overrides` applied, validated like a config file
    (an unknown option or an out-of-range value raises ConfigError naming `generate.<key>`). None values are
    ignored, except for the optional image size."""
    data = dataclasses.asdict(base or GenerateConfig())
    nullable = {"image_height", "image_width"}
    for key, value in overrides.items():
        if value is None and key not in nullable:
            continue
        data[key] = value
    return config_from_dict({"generate": data}, "generation options").generate


def decoder_options(options: GenerateConfig, modality: str) -> dict[str, Any]:
    """The keyword arguments of `Decoder.generate` for one modality."""
    if modality == "image":
        return dict(guidance_scale=options.image_guidance_scale, num_inference_steps=options.image_steps,
                    height=options.image_height, width=options.image_width)
    if modality == "video":
        return dict(guidance_scale=options.video_guidance_scale, num_inference_steps=options.video_steps,
                    height=options.video_height, width=options.video_width, num_frames=options.video_frames)
    return dict(guidance_scale=options.audio_guidance_scale, num_inference_steps=options.audio_steps,
                audio_length_in_s=options.audio_length_s)

