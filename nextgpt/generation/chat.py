"""A multi-turn conversation on top of `NextGPTGenerator`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .types import ForceSpec, GenerationResult, LogitsHook, MediaItem, StreamEvent, Turn

if TYPE_CHECKING:
    from .generator import NextGPTGenerator


class Chat:
    """A multi-turn conversation: every call sees the text and media of the earlier turns (rendered with the
    model's own template); the answers are kept with their output placeholders."""

    def __init__(self, generator: NextGPTGenerator):
        self.generator = generator
        self.turns: list[Turn] = []

    def reset(self) -> None:
        self.turns = []

    def send(self, text: str, images: Sequence[MediaItem] = (), videos: Sequence[MediaItem] = (),
             audios: Sequence[MediaItem] = (), *, on_text: Callable[[str], None] | None = None,
             **kwargs: Any) -> GenerationResult:
        """Ask; returns the answer (and remembers the exchange). Keyword arguments as `NextGPTGenerator.generate`."""
        result = None
        for event in self.stream(text, images, videos, audios, **kwargs):
            if event.kind == "text" and on_text is not None:
                on_text(event.text)
            elif event.kind == "done":
                result = event.result
        return result

    def stream(self, text: str, images: Sequence[MediaItem] = (), videos: Sequence[MediaItem] = (),
               audios: Sequence[MediaItem] = (), *, force_modality: ForceSpec = None, use_cache: bool = True,
               logits_hook: LogitsHook | None = None, **options: Any) -> Iterator[StreamEvent]:
        turn = self.generator.prepare_turn(text, images, videos, audios)
        turns = self.turns + [turn]
        for event in self.generator.stream_turns(turns, force_modality=force_modality, use_cache=use_cache,
                                                 logits_hook=logits_hook, **options):
            if event.kind == "done":
                turn.answer = event.result.text
                self.turns.append(turn)
            yield event
