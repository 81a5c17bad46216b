"""Request messages → conversation turns: content parts decoded and checked against the server's limits.

Content parts of a user message, in order: ``text``; ``image_url`` ({"url": data: URL, or a file path / file://
URL when the server allows local files}); ``input_audio`` ({"data": base64, "format": wav|flac|ogg|mp3});
``video_url`` (like image_url). Each medium becomes a placeholder at its place in the text. Remote http(s) URLs
are refused: the server fetches nothing from the network. System messages are ignored: the model answers with the
system prompt of the template it was trained with. An assistant message is the answer to the user turn before it;
its text parts are kept (with their output placeholders), its media parts are not needed again.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from ..constants import PLACEHOLDER_TOKEN
from .protocol import ApiError, Message
from .settings import ServeSettings

AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]+)*?)(?P<b64>;base64)?,(?P<data>.*)$",
                       re.DOTALL)


@dataclass
class TurnSpec:
    """One user turn before encoding: its text with placeholders, its media (PIL images, file paths), and the
    answer that followed it (None for the turn to answer)."""

    text: str = ""
    images: list[Any] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    audios: list[str] = field(default_factory=list)
    answer: str | None = None

    def media_counts(self) -> dict[str, int]:
        return {"image": len(self.images), "video": len(self.videos), "audio": len(self.audios)}


def decode_messages(messages: list[Message], settings: ServeSettings, workdir: Callable[[], Path]) -> list[TurnSpec]:
    """The conversation as turns, the last one to be answered. Decoded audio / video are written under
    `workdir()`. ApiError(400 / 413) names the message and part at fault."""
    turns: list[TurnSpec] = []
    open_turn: TurnSpec | None = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in ("system", "developer"):
            continue
        if message.role == "user":
            if open_turn is None:
                open_turn = TurnSpec()
                turns.append(open_turn)
            pieces = [open_turn.text] if open_turn.text else []
            pieces += _user_pieces(message.content, open_turn, settings, workdir, where)
            open_turn.text = "\n".join(p for p in pieces if p)
        elif message.role == "assistant":
            if open_turn is None:
                raise ApiError(400, f"{where}: an assistant message must follow a user message", "messages")
            open_turn.answer = _assistant_text(message.content, where)
            open_turn = None
        else:
            raise ApiError(400, f"{where}: role {message.role!r} is not supported (user, assistant, system)",
                           "messages")
    if open_turn is None:
        raise ApiError(400, "the last message must be a user message (the one to answer)", "messages")
    return turns


def _user_pieces(content, turn: TurnSpec, settings: ServeSettings, workdir: Callable[[], Path],
                 where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    pieces = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict) or "type" not in part:
            raise ApiError(400, f"{at}: a content part must be an object with a 'type'", "messages")
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(400, f"{at}: a text part needs a string 'text'", "messages")
            pieces.append(part["text"])
        elif kind == "image_url":
            turn.images.append(_image(_url(part, "image_url", at), settings, at))
            pieces.append(PLACEHOLDER_TOKEN["image"])
        elif kind == "video_url":
            turn.videos.append(_video(_url(part, "video_url", at), settings, workdir, at))
            pieces.append(PLACEHOLDER_TOKEN["video"])
        elif kind == "input_audio":
            turn.audios.append(_audio(part.get("input_audio"), settings, workdir, at))
            pieces.append(PLACEHOLDER_TOKEN["audio"])
        else:
            raise ApiError(400, f"{at}: unknown content part type {kind!r} (this server reads text, image_url, "
                                "input_audio, video_url)", "messages")
    return pieces


def _assistant_text(content, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or "type" not in part:
            raise ApiError(400, f"{where}.content[{j}]: a content part must be an object with a 'type'", "messages")
        if part["type"] == "text":
            texts.append(str(part.get("text", "")))
    return "".join(texts)


# ------------------------------------------------------------------------------------------------ sources


def _url(part: dict, key: str, at: str) -> str:
    value = part.get(key)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{at}: a {key} part needs {{\"url\": ...}}", "messages")
    return url


def _source(url: str, settings: ServeSettings, at: str) -> bytes | Path:
    """A data: URL's bytes, or an allowed local file's path."""
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None or not match.group("b64"):
            raise ApiError(400, f"{at}: only base64 data: URLs are read (data:MIME;base64,...)", "messages")
        return _b64(match.group("data"), at)
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https", "ftp"):
        raise ApiError(400, f"{at}: remote URLs are not fetched; send the file as a base64 data: URL", "messages")
    if settings.local_files is None:
        raise ApiError(400, f"{at}: file paths are not allowed on this server (start it with --local-files DIR); "
                            "send a base64 data: URL", "messages")
    path = Path(unquote(urlparse(url).path) if scheme == "file" else url).expanduser().resolve()
    if not path.is_relative_to(settings.local_files):
        raise ApiError(400, f"{at}: {path} is outside the folder this server reads files from", "messages")
    if not path.is_file():
        raise ApiError(400, f"{at}: {path}: file not found", "messages")
    return path


def _b64(data: str, at: str) -> bytes:
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{at}: the data is not valid base64", "messages") from None


def _image(url: str, settings: ServeSettings, at: str):
    from PIL import Image

    source = _source(url, settings, at)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            _check_pixels(image.size[0] * image.size[1], settings, at, "image")
            image.load()
            return image.convert("RGB")
    except ApiError:
        raise
    except Exception as err:  # PIL raises several kinds for corrupt or truncated data
        raise ApiError(400, f"{at}: cannot decode the image ({type(err).__name__}: {err})", "messages") from None


def _audio(value, settings: ServeSettings, workdir: Callable[[], Path], at: str) -> str:
    import soundfile

    if not isinstance(value, dict) or not isinstance(value.get("data"), str):
        raise ApiError(400, f"{at}: an input_audio part needs {{\"data\": base64, \"format\": ...}}", "messages")
    fmt = str(value.get("format", "wav")).lower()
    if fmt not in AUDIO_FORMATS:
        raise ApiError(400, f"{at}: audio format {fmt!r} is not read (use one of {', '.join(AUDIO_FORMATS)})",
                       "messages")
    path = _write(workdir, _b64(value["data"], at), fmt)
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # libsndfile's own error kinds
        raise ApiError(400, f"{at}: cannot decode the {fmt} audio ({err})", "messages") from None
    _check_seconds(info.duration, settings, at, "audio")
    return str(path)


def _video(url: str, settings: ServeSettings, workdir: Callable[[], Path], at: str) -> str:
    import av

    source = _source(url, settings, at)
    path = _write(workdir, source, "mp4") if isinstance(source, bytes) else source
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ApiError(400, f"{at}: the file has no video stream", "messages")
            stream = container.streams.video[0]
            _check_pixels(stream.codec_context.width * stream.codec_context.height, settings, at, "video frame")
            if container.duration is not None:
                seconds = container.duration / 1_000_000
            elif stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = 0.0
            _check_seconds(seconds, settings, at, "video")
    except ApiError:
        raise
    except Exception as err:  # PyAV's error kinds
        raise ApiError(400, f"{at}: cannot decode the video ({err})", "messages") from None
    return str(path)


def _write(workdir: Callable[[], Path], data: bytes, suffix: str) -> Path:
    folder = workdir()
    path = folder / f"input_{len(list(folder.iterdir())):03d}.{suffix}"
    path.write_bytes(data)
    return path


def _check_pixels(pixels: int, settings: ServeSettings, at: str, what: str) -> None:
    if pixels > settings.max_input_pixels:
        raise ApiError(413, f"{at}: the {what} has {pixels} pixels, above this server's limit of "
                            f"{settings.max_input_pixels}", "messages")


def _check_seconds(seconds: float, settings: ServeSettings, at: str, what: str) -> None:
    if seconds > settings.max_input_seconds:
        raise ApiError(413, f"{at}: the {what} lasts {seconds:.1f} s, above this server's limit of "
                            f"{settings.max_input_seconds:g} s", "messages")
