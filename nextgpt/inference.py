"""Any-to-any generation: prompt (text + media) → streamed text and decoded images, videos and audio.

The pieces, in order:

1. **Prompt.** The user turn (plus the earlier turns of a chat) is rendered with the conversation template of the
   MODEL's training config (the reference rendered its prompt with a different template than it trained with,
   spec §12.8) and tokenized; every input medium (an ``<image>`` / ``<video>`` / ``<audio>`` placeholder) is
   encoded (frozen ImageBind → input projector) and spliced in, so input media really reach the LLM (the reference's
   ``predict.py`` loaded the image and dropped it, §12.41).
2. **Decoding.** An explicit loop on the LLM with the KV cache (the reference switched it off, §12.41) starting
   from the spliced ``inputs_embeds``; greedy or temperature / top-k / top-p sampling from a seeded
   ``torch.Generator``; stop on EOS or the template's stop string; ``max_new_tokens``. ``use_cache=False``
   recomputes the whole sequence every step (same tokens, slower; kept for checking).
3. **Signal spans.** When the model emits the FIRST signal token of a modality, the rest of the span (2n−1 tokens
   with separators NEW, n LEGACY) is forced token by token, so a span is always complete (the reference asserted and
   crashed, or looped, on partial spans). Every other signal token is never sampled freely. A modality gets at most
   ``max_outputs_per_modality`` outputs per answer; after that (or when it has no decoder, or when its span would
   not fit in ``max_new_tokens``) its first signal token is suppressed.
4. **Forced output** (``force_modality``, one modality or several): while the answer still lacks an output of a
   forced modality, (a) a stop (EOS / stop string) the model chooses is replaced by that modality's first signal
   token, and (b) when only the forced spans' total length is left of ``max_new_tokens``, the first missing one is
   started; the span is then completed as in 3 and the model continues (and usually stops). Other spans are only
   allowed where they leave room for the forced ones.
5. **Media.** The hidden states at ``model.config.layer_idx`` of every span token — each taken when that token is
   fed to the LLM, the training convention — plus the span's input embeddings go through the output projector
   (``model.project_signal``) and the decoder (``Decoder.generate``) with the per-modality options and a seeded CPU
   generator (output k of an answer uses ``seed + k``).

The displayed text keeps one placeholder (``<image>`` / ``<video>`` / ``<audio>``) where each output's span was,
which is also the training format of an assistant turn, so a chat's history round-trips through the tokenizer.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union

import numpy as np
import torch

from .config import GenerateConfig, config_from_dict
from .constants import MODALITIES, PLACEHOLDER_TOKEN
from .conversation import SepStyle, get_template, tokenize_conversation
from .errors import ConfigError, DataError, NextGPTError

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

MediaItem = Union[str, os.PathLike, "Image.Image"]  # PIL images are accepted for the image modality
LogitsHook = Callable[[int, torch.Tensor], torch.Tensor]
ForceSpec = Union[str, Sequence[str], None]  # one modality, several, or none

RESULT_NAME = "result.json"
MEDIA_EXTENSIONS = {"image": "png", "video": "mp4", "audio": "wav"}
RESULT_KEYS = {"image": "images", "video": "videos", "audio": "audios"}
AUDIO_SAMPLE_RATE = 16000


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


def _as_force(force: ForceSpec) -> tuple[str, ...]:
    if force is None:
        return ()
    if isinstance(force, str):
        return (force,)
    return tuple(dict.fromkeys(force))


def stop_strings(template: str) -> list[str]:
    """Text that ends an answer besides EOS: the separator the template puts after an assistant message."""
    conv = get_template(template)
    if conv.sep_style in (SepStyle.TWO, SepStyle.LLAMA_2):
        return [conv.sep2] if conv.sep2 else []
    return [conv.sep] if conv.sep else []


# ------------------------------------------------------------------------------------------ decoding state


@dataclass
class _Row:
    """Decoding state of one answer."""

    prompt_len: int
    tokens: list[int] = field(default_factory=list)
    fed: int = 0  # how many of `tokens` the LLM has seen
    forced: deque = field(default_factory=deque)
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (modality, start, end)
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # position in tokens -> hidden state
    done: bool = False
    finish_reason: str = "length"
    text_ids: list[int] = field(default_factory=list)  # tokens outside spans
    marker_at: list[tuple[int, str]] = field(default_factory=list)  # (char offset in text, modality)
    stop_at: int | None = None  # char offset of a stop string in the decoded text

    def count(self, modality: str) -> int:
        return sum(1 for m, _, _ in self.spans if m == modality)

    def in_span(self, position: int) -> bool:
        return any(s <= position < e for _, s, e in self.spans)


class NextGPTGenerator:
    """Generation with a loaded `NextGPTModel` (see the module docstring).

    `options`: the generation defaults (a checkpoint's `generate` section); every call may override them.
    `image_aspect_ratio`: the encoder-side image preprocessing the model was trained with (`data.image_aspect_ratio`;
    default: "pad" for the NEW layout, "square" for LEGACY).
    `offload`: keep the encoder and the decoders on the CPU and move each to `device` only while it runs
    (decoders through diffusers' `enable_model_cpu_offload`), so that a 7B LLM and three decoders fit one 24 GB GPU.
    """

    def __init__(self, model, options: GenerateConfig | None = None, *, image_aspect_ratio: str | None = None,
                 offload: bool = False):
        self.model = model.eval()
        self.options = options or GenerateConfig()
        if image_aspect_ratio is None:  # the configs' defaults: NEW pads, LEGACY crops
            image_aspect_ratio = "square" if model.config.signal_layout == "legacy" else "pad"
        self.image_aspect_ratio = image_aspect_ratio
        self.template = model.config.template
        self.stops = [s for s in stop_strings(self.template) if s != model.tokenizer.eos_token]
        self.offload = offload
        self._offloaded: set[str] = set()
        tok = model.tokenizer
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        gen_eos = getattr(getattr(model.base_llm, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos] if gen_eos is not None else [])
        self.eos_ids = eos
        self.signal_ids = sorted(model.signal.all_ids())
        if offload:
            model.encoder.to("cpu")
            model.decoders.to(device="cpu")

    # ------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        offload: bool = False) -> "NextGPTGenerator":
        """Load a checkpoint directory (training output, merged or converted) with its `generate` defaults."""
        from .model.modeling import NextGPTModel, read_checkpoint_config

        path = Path(path)
        if not path.is_dir():
            raise NextGPTError(f"{path}: checkpoint directory not found")
        config = read_checkpoint_config(path)
        model = NextGPTModel.from_pretrained(path, dtype=dtype, device=device)
        return cls(model, config.generate, image_aspect_ratio=config.data.image_aspect_ratio, offload=offload)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------------------------- prompt

    def preprocess(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        """Media files → the encoder's input tensor (ImageBind preprocessing; MediaError names a bad file)."""
        from .model.multimodal_encoder.imagebind.data import preprocess

        return preprocess(list(items), modality, aspect_ratio=self.image_aspect_ratio)

    @torch.inference_mode()
    def encode(self, modality: str, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Encoder inputs (N, …) → one projected feature block (T, hidden) per item."""
        with self._encoder_on_device():
            features = self.model.encode_media(modality, inputs)
        return [f.to(self.device) for f in features]

    def prepare_turn(self, prompt: str, images: Sequence[MediaItem] = (), videos: Sequence[MediaItem] = (),
                     audios: Sequence[MediaItem] = ()) -> Turn:
        """A user turn with its media encoded. Placeholders in `prompt` must match the media given, one each."""
        given = {"image": list(images), "video": list(videos), "audio": list(audios)}
        text = prompt
        prefix = ""
        for modality in MODALITIES:
            n_marks = text.count(PLACEHOLDER_TOKEN[modality])
            n_items = len(given[modality])
            if n_marks == 0:
                prefix += (PLACEHOLDER_TOKEN[modality] + "\n") * n_items
            elif n_marks != n_items:
                raise DataError(f"the prompt has {n_marks} {PLACEHOLDER_TOKEN[modality]} placeholder(s) but "
                                f"{n_items} {modality} file(s) were given")
        media = {m: self.encode(m, self.preprocess(m, items)) for m, items in given.items() if items}
        return Turn(prefix + text, media)

    def prompt_ids(self, turns: Sequence[Turn]) -> list[int]:
        """The turns rendered with the model's template (an open assistant turn at the end) and tokenized: input
        media as placeholder ids, earlier answers' outputs as their signal spans."""
        messages: list[dict] = []
        for i, turn in enumerate(turns):
            messages.append({"from": "human", "value": turn.user})
            if turn.answer is not None:
                messages.append({"from": "gpt", "value": turn.answer})
            elif i != len(turns) - 1:
                raise DataError(f"turn {i} of the conversation has no answer")
        return tokenize_conversation(self.template, messages, self.model.tokenizer, self.model.signal,
                                     add_generation_prompt=True, where="prompt").input_ids

    def prompt_embeds(self, turns: Sequence[Turn]) -> torch.Tensor:
        """`prompt_ids` with every input medium's features spliced in: (L, hidden) input embeddings."""
        from .model.splice import splice_multimodal

        model = self.model
        features: dict[str, list[torch.Tensor]] = {m: [] for m in MODALITIES}
        for turn in turns:
            for m, blocks in turn.media.items():
                features[m].extend(blocks)
        ids = torch.tensor([self.prompt_ids(turns)], device=self.device)
        stacked = {m: torch.stack(b) for m, b in features.items() if b}
        with torch.inference_mode():
            spliced = splice_multimodal(ids, None, None, stacked, model.embed_tokens, None,
                                        pad_id=model.tokenizer.pad_token_id or 0)
        length = spliced.inputs_embeds.shape[1]
        if length >= model.config.max_length:
            raise DataError(f"the prompt is {length} tokens after splicing the media, the model's limit is "
                            f"{model.config.max_length} (model.max_length); start a new conversation")
        return spliced.inputs_embeds[0]

    # ------------------------------------------------------------------------------------- public API

    def generate(self, prompt: str | Request, images: Sequence[MediaItem] = (), videos: Sequence[MediaItem] = (),
                 audios: Sequence[MediaItem] = (), *, force_modality: ForceSpec = None, use_cache: bool = True,
                 on_text: Callable[[str], None] | None = None, logits_hook: LogitsHook | None = None,
                 **options: Any) -> GenerationResult:
        """One answer to one prompt. `on_text` receives the text as it is generated; `options` override the
        generation defaults (`GenerateConfig` field names); `logits_hook(step, logits)` may edit the raw logits
        (tests, constrained decoding)."""
        result = None
        for event in self.stream(prompt, images, videos, audios, force_modality=force_modality,
                                 use_cache=use_cache, logits_hook=logits_hook, **options):
            if event.kind == "text" and on_text is not None:
                on_text(event.text)
            elif event.kind == "done":
                result = event.result
        return result

    def stream(self, prompt: str | Request, images: Sequence[MediaItem] = (), videos: Sequence[MediaItem] = (),
               audios: Sequence[MediaItem] = (), *, force_modality: ForceSpec = None, use_cache: bool = True,
               logits_hook: LogitsHook | None = None, **options: Any) -> Iterator[StreamEvent]:
        """Like `generate`, as an iterator of `StreamEvent`s (text pieces, then each decoded medium, then done)."""
        request = prompt if isinstance(prompt, Request) else Request(prompt, images, videos, audios)
        turns = list(request.history) + [self.prepare_turn(request.prompt, request.images, request.videos,
                                                           request.audios)]
        yield from self._stream_turns(turns, force_modality, use_cache, logits_hook, options)

    def _stream_turns(self, turns: list[Turn], force_modality: ForceSpec, use_cache: bool,
                      logits_hook: LogitsHook | None, options: dict) -> Iterator[StreamEvent]:
        opts = resolve_options(self.options, **options)
        force = _as_force(force_modality)
        embeds = self.prompt_embeds(turns)
        rows = None
        for event in self._decode([embeds], opts, force, use_cache, logits_hook, stream=True):
            if isinstance(event, str):
                yield StreamEvent("text", text=event)
            else:
                rows = event
        row = rows[0]
        outputs = []
        for output in self._decode_media(row, opts):
            outputs.append(output)
            yield StreamEvent("media", output=output)
        yield StreamEvent("done", result=self._result(row, outputs))

    def generate_batch(self, requests: Sequence[Request | str], *, force_modality: ForceSpec = None,
                       use_cache: bool = True, logits_hook: LogitsHook | None = None,
                       **options: Any) -> list[GenerationResult]:
        """Answers to several prompts decoded together (left-padded batch, one KV cache)."""
        opts = resolve_options(self.options, **options)
        requests = [r if isinstance(r, Request) else Request(r) for r in requests]
        if not requests:
            return []
        embeds = []
        for r in requests:
            turns = list(r.history) + [self.prepare_turn(r.prompt, r.images, r.videos, r.audios)]
            embeds.append(self.prompt_embeds(turns))
        rows = None
        for event in self._decode(embeds, opts, _as_force(force_modality), use_cache, logits_hook, stream=False):
            rows = event
        return [self._result(row, list(self._decode_media(row, opts))) for row in rows]

    # ------------------------------------------------------------------------------------- decoding

    def _check_force(self, force: tuple[str, ...], opts: GenerateConfig) -> None:
        for m in force:
            if m not in MODALITIES:
                raise ConfigError(f"force_modality must be among {list(MODALITIES)}, got {m!r}")
            if m not in self.model.decoders:
                raise ConfigError(f"cannot force a {m} output: the model has no {m} decoder")
        if force and opts.max_outputs_per_modality < 1:
            raise ConfigError("force_modality needs max_outputs_per_modality >= 1")
        need = sum(self.model.signal.span_length(m) for m in force)
        if need > opts.max_new_tokens:
            raise ConfigError(f"max_new_tokens={opts.max_new_tokens} cannot hold the forced output(s) "
                              f"{', '.join(force)} ({need} signal tokens)")

    def _pending(self, row: _Row, force: tuple[str, ...]) -> list[str]:
        return [m for m in force if row.count(m) == 0]

    def _allowed_starts(self, row: _Row, opts: GenerateConfig, force: tuple[str, ...]) -> dict[int, str]:
        """First signal ids the model may choose now → their modality. A span must fit in what is left of
        max_new_tokens next to the forced outputs still missing."""
        signal = self.model.signal
        room = opts.max_new_tokens - len(row.tokens)
        pending = self._pending(row, force)
        reserve = sum(signal.span_length(m) for m in pending)
        allowed = {}
        for m in MODALITIES:
            if m not in self.model.decoders or row.count(m) >= opts.max_outputs_per_modality:
                continue
            need = reserve + (0 if m in pending else signal.span_length(m))
            if need <= room:
                allowed[signal.token_ids[m][0]] = m
        return allowed

    def _sample(self, logits: torch.Tensor, opts: GenerateConfig, generator: torch.Generator) -> int:
        """Greedy when temperature is 0 or top_k is 1 (the reference's default), else temperature → top-k → top-p
        (transformers' logits warpers, in the order its `generate` applies them) and a draw from `generator`."""
        if opts.temperature == 0 or opts.top_k == 1:
            return int(torch.argmax(logits))
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        scores = logits[None]
        scores = TemperatureLogitsWarper(opts.temperature)(None, scores)
        if opts.top_k > 0:
            scores = TopKLogitsWarper(opts.top_k)(None, scores)
        if opts.top_p < 1.0:
            scores = TopPLogitsWarper(opts.top_p)(None, scores)
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator)[0, 0])

    def _decode(self, prompts: list[torch.Tensor], opts: GenerateConfig, force: tuple[str, ...], use_cache: bool,
                logits_hook: LogitsHook | None, stream: bool) -> Iterator[str | list[_Row]]:
        """The token loop over a left-padded batch. Yields text pieces of row 0 when `stream`, the rows last.

        Each pass feeds every row's newest token (the prompt on the first pass) and returns that token's hidden
        state (kept when it belongs to a signal span) and the logits of the next one. A row that ends on a span
        token gets one more pass to collect that token's hidden state.
        """
        self._check_force(force, opts)
        model, tok = self.model, self.model.tokenizer
        device = self.device
        batch = len(prompts)
        longest = max(p.shape[0] for p in prompts)
        embeds = prompts[0].new_zeros(batch, longest, prompts[0].shape[-1])
        mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
        for b, p in enumerate(prompts):
            embeds[b, longest - len(p):] = p
            mask[b, longest - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [_Row(p.shape[0]) for p in prompts]
        generator = torch.Generator(device=device).manual_seed(opts.seed)
        signal_ids = torch.tensor(self.signal_ids, device=device)
        pad_id = min(self.eos_ids) if self.eos_ids else (tok.pad_token_id or 0)
        layer = model.config.layer_idx
        past = None
        streamed = ""
        step_embeds, step_pos = embeds, positions
        feeding: list[int | None] = [None] * batch  # position (in row.tokens) of the token each row feeds
        step = 0
        with torch.inference_mode():
            while True:
                want_hidden = [f is not None and rows[b].in_span(f) for b, f in enumerate(feeding)]
                out = model.llm(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_pos,
                                past_key_values=past, use_cache=use_cache, output_hidden_states=any(want_hidden),
                                logits_to_keep=1)
                past = out.past_key_values if use_cache else None
                if any(want_hidden):
                    states = out.hidden_states[layer][:, -1]
                    for b, f in enumerate(feeding):
                        if want_hidden[b]:
                            rows[b].hidden[f] = states[b]
                logits = out.logits[:, -1].float()
                if logits_hook is not None and not all(r.done for r in rows):
                    logits = logits_hook(step, logits)
                for b, row in enumerate(rows):
                    if not row.done:
                        self._next_token(row, logits[b], opts, force, generator, signal_ids)
                if stream:
                    text = self._visible_text(rows[0], final=rows[0].done)
                    if len(text) > len(streamed) and text.startswith(streamed):
                        yield text[len(streamed):]
                        streamed = text
                step += 1
                # next feed: the newest token of every row that still decodes, or whose last span token has
                # no hidden state yet
                feeding = []
                for row in rows:
                    last = len(row.tokens) - 1
                    needs = 0 <= last and row.fed <= last and (not row.done or row.in_span(last))
                    feeding.append(last if needs else None)
                    if needs:
                        row.fed = last + 1
                if all(f is None for f in feeding):
                    break
                ids = torch.tensor([rows[b].tokens[f] if f is not None else pad_id for b, f in enumerate(feeding)],
                                   device=device)
                new = model.embed_tokens(ids[:, None])
                mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
                new_pos = torch.tensor([[r.prompt_len + (f if f is not None else len(r.tokens))]
                                        for r, f in zip(rows, feeding)], device=device)
                if use_cache:
                    step_embeds, step_pos = new, new_pos
                else:
                    step_embeds = torch.cat([step_embeds, new], dim=1)
                    step_pos = torch.cat([step_pos, new_pos], dim=1)
        yield rows

    def _next_token(self, row: _Row, logits: torch.Tensor, opts: GenerateConfig, force: tuple[str, ...],
                    generator: torch.Generator, signal_ids: torch.Tensor) -> int | None:
        """Choose, append and account for the next token of one row; None when the row stops without a token."""
        signal = self.model.signal
        position = len(row.tokens)
        if row.forced:
            token = row.forced.popleft()
            forced = True
        else:
            forced = False
            allowed = self._allowed_starts(row, opts, force)
            banned = signal_ids[~torch.isin(signal_ids, torch.tensor(list(allowed), dtype=signal_ids.dtype,
                                                                         device=signal_ids.device))]
            logits = logits.clone()
            logits[banned] = float("-inf")
            pending = self._pending(row, force)
            if pending and opts.max_new_tokens - position <= sum(signal.span_length(m) for m in pending):
                token = signal.token_ids[pending[0]][0]  # last moment the forced spans still fit
            else:
                token = self._sample(logits, opts, generator)
                if pending and (token in self.eos_ids or self._completes_stop(row, token)):
                    token = signal.token_ids[pending[0]][0]  # the model would stop: put the forced output here
        start_modality = None if forced else signal.modality_of_start(token)
        if start_modality is not None:
            span = signal.span(start_modality)
            row.forced.extend(span[1:])
            row.spans.append((start_modality, position, position + len(span)))
            row.marker_at.append((len(self._decode_text(row.text_ids)), start_modality))
        if not forced and token in self.eos_ids:
            row.done, row.finish_reason = True, "stop"
            return None
        row.tokens.append(token)
        if not forced and start_modality is None:
            row.text_ids.append(token)
            if self.stops:
                text = self._decode_text(row.text_ids)
                hits = [text.find(s) for s in self.stops if s in text]
                if hits:
                    row.stop_at = min(hits)
                    row.done, row.finish_reason = True, "stop"
        if not row.done and not row.forced and len(row.tokens) >= opts.max_new_tokens:
            row.done, row.finish_reason = True, "length"
        return token

    def _completes_stop(self, row: _Row, token: int) -> bool:
        if not self.stops:
            return False
        text = self._decode_text(row.text_ids + [token])
        return any(s in text for s in self.stops)

    def _decode_text(self, ids: list[int]) -> str:
        return self.model.tokenizer.decode(ids, skip_special_tokens=True)

    def _visible_text(self, row: _Row, final: bool = False) -> str:
        """The answer so far with placeholders at the spans; while generating, text that may still turn into a
        stop string or an incomplete character is held back."""
        text = self._decode_text(row.text_ids)
        if row.stop_at is not None:
            text = text[:row.stop_at]
        elif not final:
            text = text.rstrip("\ufffd")
            for s in self.stops:  # hold back a partial stop string at the end
                for k in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        text = text[:-k]
                        break
        for offset, modality in reversed(row.marker_at):  # offsets never decrease
            offset = min(offset, len(text))
            text = text[:offset] + PLACEHOLDER_TOKEN[modality] + text[offset:]
        return text

    # ------------------------------------------------------------------------------------- media

    @torch.inference_mode()
    def _decode_media(self, row: _Row, opts: GenerateConfig) -> Iterator[MediaOutput]:
        model = self.model
        for k, (modality, start, end) in enumerate(row.spans):
            missing = [p for p in range(start, end) if p not in row.hidden]
            if missing:  # cannot happen: every span is complete and fed; guard against silent garbage
                raise NextGPTError(f"internal error: no hidden state for positions {missing} of a {modality} span")
            hidden = torch.stack([row.hidden[p] for p in range(start, end)])[None]
            ids = torch.tensor(row.tokens[start:end], device=self.device)
            embeds = model.embed_tokens(ids)[None]
            condition = model.project_signal(modality, hidden, embeds)
            decoder = self._decoder(modality)
            logger.info("decoding %s output %d (span %d-%d)", modality, k, start, end)
            generator = torch.Generator("cpu").manual_seed(opts.seed + k)
            data = decoder.generate(condition, generator=generator, **decoder_options(opts, modality))[0]
            rate = None
            if modality == "audio":
                vocoder = getattr(decoder.pipeline, "vocoder", None)
                rate = int(getattr(getattr(vocoder, "config", None), "sampling_rate", AUDIO_SAMPLE_RATE))
            yield MediaOutput(modality, data, (start, end), rate)

    def _decoder(self, modality: str):
        decoder = self.model.decoders.get(modality)
        if self.offload and modality not in self._offloaded and torch.device(self.device).type != "cpu":
            decoder.pipeline.enable_model_cpu_offload(device=self.device)
            self._offloaded.add(modality)
        return decoder

    @contextmanager
    def _encoder_on_device(self):
        """With offload, the encoder visits the GPU only while it encodes."""
        encoder = self.model.encoder
        if not self.offload or encoder.device == torch.device(self.device):
            yield
            return
        encoder.to(self.device)
        try:
            yield
        finally:
            encoder.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _result(self, row: _Row, outputs: list[MediaOutput]) -> GenerationResult:
        return GenerationResult(self._visible_text(row, final=True).strip(), list(row.tokens), outputs,
                                row.finish_reason)


# ---------------------------------------------------------------------------------------------------- chat


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
        for event in self.generator._stream_turns(turns, force_modality, use_cache, logits_hook, options):
            if event.kind == "done":
                turn.answer = event.result.text
                self.turns.append(turn)
            yield event


# --------------------------------------------------------------------------------------------------- files


def save_image(image, path: str | Path) -> Path:
    image.save(str(path), format="PNG")
    return Path(path)


def save_audio(waveform: np.ndarray, path: str | Path, sample_rate: int = AUDIO_SAMPLE_RATE) -> Path:
    """16-bit PCM WAV (soundfile); samples are clipped to [-1, 1]."""
    import soundfile

    data = np.clip(np.asarray(waveform, dtype=np.float32).reshape(-1), -1.0, 1.0)
    soundfile.write(str(path), data, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)


def save_video(frames: np.ndarray, path: str | Path, fps: int = 10) -> Path:
    """uint8 frames (F, H, W, 3) → H.264 MP4 (PyAV; MPEG-4 part 2 when no H.264 encoder is available). Odd sizes
    are padded by one edge pixel (yuv420p needs even sides)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(f"video frames must be (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def _free_name(outdir: Path, stem: str, ext: str) -> Path:
    """`stem.ext`, or `stem_1.ext`, … : never overwrite (and never use prompt text in a file name, §12.41)."""
    path = outdir / f"{stem}.{ext}"
    k = 1
    while path.exists():
        path = outdir / f"{stem}_{k}.{ext}"
        k += 1
    return path


def write_result(result: GenerationResult, outdir: str | Path, video_fps: int = 10) -> dict[str, Any]:
    """Write every output (PNG / 16 kHz WAV / MP4) and `result.json` = {"text", "images", "audios", "videos"}
    with paths relative to `outdir`; returns that dictionary."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"text": result.text, "images": [], "audios": [], "videos": []}
    counts = {m: 0 for m in MODALITIES}
    for output in result.outputs:
        m = output.modality
        path = _free_name(outdir, f"{m}_{counts[m]:02d}", MEDIA_EXTENSIONS[m])
        counts[m] += 1
        if m == "image":
            save_image(output.data, path)
        elif m == "audio":
            save_audio(output.data, path, output.sample_rate or AUDIO_SAMPLE_RATE)
        else:
            save_video(output.data, path, video_fps)
        summary[RESULT_KEYS[m]].append(path.name)
    (outdir / RESULT_NAME).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


# ------------------------------------------------------------------------------------------- terminal chat

_COMMAND = re.compile(r"^/(\w+)\s*(.*)$")
CHAT_HELP = ("commands: /image PATH, /video PATH, /audio PATH (attach to the next message), "
             "/force image|video|audio [...] or /force off, /reset, /help, /quit")


def interactive_loop(chat: Chat, outdir: str | Path, *, read: Callable[[str], str] = input,
                     write: Callable[[str], None] | None = None, force_modality: ForceSpec = None,
                     use_cache: bool = True, **options: Any) -> int:
    """A terminal chat: streams each answer, saves its media under `outdir/turn_NNN/` (with result.json) and
    prints their paths. Returns the number of answered turns."""
    if write is None:
        def write(s: str) -> None:
            sys.stdout.write(s)
            sys.stdout.flush()
    outdir = Path(outdir)
    attached: dict[str, list[str]] = {m: [] for m in MODALITIES}
    answered = 0
    fps = resolve_options(chat.generator.options, **options).video_fps
    write(CHAT_HELP + "\n")
    while True:
        try:
            line = read("USER> ")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        command = _COMMAND.match(line)
        if command:
            name, arg = command.group(1).lower(), command.group(2).strip()
            if name in ("quit", "exit", "q"):
                break
            if name == "reset":
                chat.reset()
                attached = {m: [] for m in MODALITIES}
                write("(conversation cleared)\n")
            elif name == "help":
                write(CHAT_HELP + "\n")
            elif name in MODALITIES:
                try:
                    chat.generator.preprocess(name, [arg])  # fail now, not after typing the question
                except NextGPTError as err:
                    write(f"error: {err}\n")
                    continue
                attached[name].append(arg)
                write(f"(attached {name}: {arg})\n")
            elif name == "force":
                wanted = [] if arg in ("", "off", "none") else arg.replace(",", " ").split()
                if any(m not in MODALITIES for m in wanted):
                    write(f"error: /force takes {', '.join(MODALITIES)} (one or more) or off\n")
                else:
                    force_modality = wanted or None
                    write(f"(forced output: {', '.join(wanted) or 'off'})\n")
            else:
                write(f"error: unknown command /{name}; {CHAT_HELP}\n")
            continue
        write("ASSISTANT> ")
        try:
            result = chat.send(line, attached["image"], attached["video"], attached["audio"], on_text=write,
                               force_modality=force_modality, use_cache=use_cache, **options)
        except NextGPTError as err:
            write(f"\nerror: {err}\n")
            continue
        attached = {m: [] for m in MODALITIES}
        answered += 1
        write("\n")
        if result.outputs:
            turn_dir = outdir / f"turn_{answered:03d}"
            summary = write_result(result, turn_dir, fps)
            for key in ("images", "videos", "audios"):
                for name in summary[key]:
                    write(f"[saved {key[:-1]}: {turn_dir / name}]\n")
    return answered
