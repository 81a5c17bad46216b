"""The work of one answer, run in the generation thread: encode the turns' media, stream the answer, write each
output, and report the token counts. Its events: ("text", piece), ("media", part), and last
("done", finish_reason, prompt_tokens, completion_tokens)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from ..constants import MODALITIES
from .inputs import TurnSpec
from .outputs import output_part, write_output
from .worker import Job


def answer_work(generator, decode: Callable[[], list[TurnSpec]], options: dict[str, Any], force: list[str],
                video_fps: int, scratch: Callable[[], Path], media_folder: Callable[[], Path] | None,
                media_url: str | None, stream: bool = True) -> Callable[[Job], Iterator[tuple]]:
    """The job function answering the last of the turns `decode()` gives (it raises ApiError on bad input). Media
    are written to `media_folder()` and answered as `media_url/<name>` when given; otherwise written to `scratch()`
    and answered as base64 data. Without `stream` the text comes as one piece before "done" (fewer hand-overs
    between threads)."""

    def work(job: Job) -> Iterator[tuple]:
        turns = []
        for spec in decode():
            job.check()
            turn = generator.prepare_turn(spec.text, spec.images, spec.videos, spec.audios)
            turn.answer = spec.answer
            turns.append(turn)

        def cancel_point(step, logits):
            job.check()
            return logits

        counts = {m: 0 for m in MODALITIES}
        trim = TextTrim()
        folder = None
        for event in generator.stream_turns(turns, force_modality=force or None, logits_hook=cancel_point,
                                            **options):
            job.check()
            if event.kind == "text":
                piece = trim.feed(event.text)
                if piece and stream:
                    yield ("text", piece)
            elif event.kind == "media":
                output = event.output
                if folder is None:
                    folder = media_folder() if media_folder is not None else scratch()
                path = write_output(output, folder, counts[output.modality], video_fps)
                counts[output.modality] += 1
                yield ("media", output_part(output, path, f"{media_url}/{path.name}" if media_url else None))
            else:
                result = event.result
                rest = trim.finish(result.text) if stream else result.text
                if rest:
                    yield ("text", rest)
                yield ("done", result.finish_reason, result.prompt_tokens, len(result.token_ids))

    return work


class ScratchFolder:
    """A request's temporary folder, made on first use (a text-only request needs none); `remove` deletes it."""

    def __init__(self):
        self._path: Path | None = None

    def __call__(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="nextgpt-request-"))
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)


class TextTrim:
    """Streamed pieces whose concatenation is the final answer text, which is stripped: leading whitespace is
    dropped and trailing whitespace is held back until more text follows."""

    def __init__(self):
        self.sent = ""
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self.sent:
            piece = (self._held + piece).lstrip()
            self._held = ""
        text = self._held + piece
        body = text.rstrip()
        self._held = text[len(body):]
        self.sent += body
        return body

    def finish(self, final: str) -> str:
        """What is still missing of `final` (normally nothing: the text so far is its beginning)."""
        if final.startswith(self.sent):
            rest = final[len(self.sent):]
            self.sent = final
            return rest
        return ""
