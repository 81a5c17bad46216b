"""The OpenAI chat-completions protocol as this server speaks it: the request schema, the mapping of its options to
the generation options (the same names and defaults as predict.py), and the response / stream-chunk bodies.

Extension: a request may carry ``"nextgpt": {...}`` with any generation option (`GenerateConfig` field: top_k,
image_steps, image_guidance_scale, image_height, image_width, video_*, audio_*, max_outputs_per_modality); the
standard fields (max_tokens, temperature, top_p, seed) win over the same option given there.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..config import GenerateConfig
from ..constants import MODALITIES
from ..errors import ConfigError
from ..generation import resolve_options
from .settings import ServeSettings

MIME_TYPES = {"image": "image/png", "audio": "audio/wav", "video": "video/mp4"}


class ApiError(Exception):
    """An error answered to the client: HTTP status, message, and the request field it concerns."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Optional[str | list[Any]] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of a chat-completions request this server reads; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0)
    top_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    seed: Optional[int] = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    modalities: Optional[list[str]] = None
    nextgpt: dict[str, Any] = Field(default_factory=dict)


def validation_message(err) -> str:
    """A pydantic ValidationError as one line naming each bad field."""
    parts = []
    for e in err.errors():
        where = ".".join(str(x) for x in e.get("loc", ())) or "body"
        parts.append(f"{where}: {e.get('msg')}")
    return "; ".join(parts)


def generation_options(req: ChatRequest, defaults: GenerateConfig, settings: ServeSettings, model_max_length: int
                       ) -> tuple[dict[str, Any], list[str], GenerateConfig]:
    """The request's generation overrides, its forced output modalities and the resolved options (validated like
    a config file, then against the server's limits). ApiError(400) on a bad or too large value."""
    fields = set(GenerateConfig.__dataclass_fields__)
    unknown = sorted(set(req.nextgpt) - fields)
    if unknown:
        raise ApiError(400, f"unknown generation option(s) {unknown} in 'nextgpt'; known: {sorted(fields)}",
                       "nextgpt")
    options = dict(req.nextgpt)
    standard = {"max_new_tokens": req.max_completion_tokens or req.max_tokens, "temperature": req.temperature,
                "top_p": req.top_p, "seed": req.seed}
    options.update({k: v for k, v in standard.items() if v is not None})
    force: list[str] = []
    for m in req.modalities or ():
        if m != "text" and m not in MODALITIES:
            raise ApiError(400, f"unknown modality {m!r} in 'modalities' (known: text, {', '.join(MODALITIES)})",
                           "modalities")
        if m != "text" and m not in force:
            force.append(m)
    try:
        resolved = resolve_options(defaults, **options)
    except ConfigError as err:
        raise ApiError(400, str(err).replace("generation options: ", ""), "nextgpt") from None
    _check_limits(resolved, force, settings, model_max_length)
    return options, force, resolved


def _check_limits(opts: GenerateConfig, force: list[str], settings: ServeSettings, model_max_length: int) -> None:
    limit = settings.max_tokens or model_max_length
    if opts.max_new_tokens > limit:
        raise ApiError(400, f"max_tokens {opts.max_new_tokens} is above this server's limit of {limit}",
                       "max_tokens")
    for m in MODALITIES:
        steps = getattr(opts, f"{m}_steps")
        if steps > settings.max_steps:
            raise ApiError(400, f"{m}_steps {steps} is above this server's limit of {settings.max_steps}", "nextgpt")
    for m in ("image", "video"):
        h, w = getattr(opts, f"{m}_height"), getattr(opts, f"{m}_width")
        if h is not None and w is not None and h * w > settings.max_output_pixels:
            raise ApiError(400, f"{m}_height x {m}_width = {h * w} pixels is above this server's limit of "
                                f"{settings.max_output_pixels}", "nextgpt")
    seconds = {"audio_length_s": opts.audio_length_s, "video_frames / video_fps": opts.video_frames / opts.video_fps}
    for name, value in seconds.items():
        if value > settings.max_output_seconds:
            raise ApiError(400, f"{name} = {value:g} s is above this server's limit of "
                                f"{settings.max_output_seconds:g} s", "nextgpt")


# ------------------------------------------------------------------------------------------ responses


def media_part(modality: str, *, data: str | None = None, url: str | None = None, **extra: Any) -> dict:
    """One generated medium in an assistant message: type, MIME type, and base64 data or a URL."""
    part = {"type": modality, "mime_type": MIME_TYPES[modality]}
    part.update({"data": data} if url is None else {"url": url})
    part.update(extra)
    return part


def assistant_content(text: str, media: list[dict]) -> str | list[dict]:
    """The answer text alone (a plain string, as every client expects), or, when the answer has media, a list of
    parts: the text (with one placeholder where each output is) and then the media in answer order."""
    if not media:
        return text
    return [{"type": "text", "text": text}, *media]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(cid: str, model: str, content: str | list[dict], finish_reason: str, use: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": use}


def chunk_body(cid: str, model: str, delta: dict, finish_reason: str | None = None,
               use: dict | None = None, choices: bool = True) -> dict:
    body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                         "logprobs": None}] if choices else []}
    if use is not None:
        body["usage"] = use
    return body

