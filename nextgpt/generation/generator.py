"""`NextGPTGenerator`: prompt (text + media) → streamed text and decoded media, with the decode loop on the LLM's
KV cache. The steps are described in the `nextgpt.generation` package docstring; the token rules (signal spans,
forced outputs, sampling) are in `forcing.py`."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..config import GenerateConfig
from ..constants import MODALITIES, PLACEHOLDER_TOKEN
from ..conversation import get_template, tokenize_conversation
from ..dataset.samples import UNKNOWN_PLACEHOLDER
from ..errors import DataError, NextGPTError
from .forcing import DecodeRow, allowed_starts, as_force, check_force, pending, sample, stop_strings
from .types import (
    AUDIO_SAMPLE_RATE,
    ForceSpec,
    GenerationResult,
    LogitsHook,
    MediaItem,
    MediaOutput,
    Request,
    StreamEvent,
    Turn,
    decoder_options,
    resolve_options,
)

logger = logging.getLogger(__name__)

# The KV cache's keyword in the LLM's forward and output: recent transformers renamed `past_key_values` to `cache`
# (the old name still works there, with a deprecation warning).
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class NextGPTGenerator:
    """Generation with a loaded `NextGPTModel` (see the `nextgpt.generation` package docstring).

    `options`: the generation defaults (a checkpoint's `generate` section); every call may override them.
    `image_aspect_ratio`: the encoder-side image preprocessing the model was trained with (`data.image_aspect_ratio`;
    default: "pad" for the NEW layout, "square" for LEGACY).
    `offload`: keep the encoder and the decoders on the CPU and move each to `device` only while it runs
    (decoders through diffusers' `enable_model_cpu_offload`), so that a 7B LLM and three decoders fit one 24 GB GPU.
    """

    def __init__(self, model, options: GenerateConfig | None = None, *, image_aspect_ratio: str | None = None,
                 offload: bool = False, max_image_pixels: int | None = None):
        self.model = model.eval()
        self.options = options or GenerateConfig()
        if image_aspect_ratio is None:  # the configs' defaults: NEW pads, LEGACY crops
            image_aspect_ratio = "square" if model.config.signal_layout == "legacy" else "pad"
        self.image_aspect_ratio = image_aspect_ratio
        self.max_image_pixels = max_image_pixels  # None: Pillow's limit (nextgpt/media_guard.py)
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
        # Registered tokens that are not signal tokens (LEGACY's <Img> / </Img>) are never generated: they wrap
        # encoder inputs only, and with mean-initialised rows their tied logits could otherwise win.
        self.never_ids = sorted(set(model.signal_token_ids) - set(self.signal_ids))
        if offload:
            model.encoder.to("cpu")
            model.decoders.to(device="cpu")

    # ------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        offload: bool = False, quantization: str | None = None,
                        overrides: Sequence[str] = (), merge_lora: bool = True) -> "NextGPTGenerator":
        """Load a checkpoint directory (training output, merged or converted) with its `generate` defaults;
        `quantization` "8bit" / "4bit" loads the LLM through bitsandbytes (CUDA only); `overrides`: `model.*=` /
        `generate.*=` values replacing the saved ones (e.g. paths on this machine). A LoRA adapter is merged into
        the LLM in memory (faster decoding) unless `merge_lora` is False or the LLM is quantized."""
        from ..model.checkpoint_format import read_checkpoint_config
        from ..model.modeling import NextGPTModel

        path = Path(path)
        if not path.is_dir():
            raise NextGPTError(f"{path}: checkpoint directory not found")
        config = read_checkpoint_config(path, overrides)
        model = NextGPTModel.from_pretrained(path, dtype=dtype, device=device, quantization=quantization,
                                             overrides=overrides)
        if merge_lora and quantization is None:
            from ..model.merge import merge_lora_in_memory

            merge_lora_in_memory(model)
        return cls(model, config.generate, image_aspect_ratio=config.data.image_aspect_ratio, offload=offload,
                   max_image_pixels=config.data.max_image_pixels)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------------------------- prompt

    def preprocess(self, modality: str, items: Sequence[MediaItem]) -> torch.Tensor:
        """Media files → the encoder's input tensor (its kind's preprocessing; MediaError names a bad file)."""
        from ..model.multimodal_encoder.factory import preprocess_media

        return preprocess_media(items, modality, self.image_aspect_ratio, self.model.config.encoder.kind,
                                max_pixels=self.max_image_pixels)

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
        unknown = UNKNOWN_PLACEHOLDER.search(text)
        if unknown:
            raise DataError(f"the prompt holds the placeholder {unknown.group(0)!r}, a media kind this model does "
                            f"not take (inputs: {', '.join(PLACEHOLDER_TOKEN.values())})")
        prefix = ""
        for modality in MODALITIES:
            n_marks = text.count(PLACEHOLDER_TOKEN[modality])
            n_items = len(given[modality])
            if n_marks == 0:
                prefix += (PLACEHOLDER_TOKEN[modality] + get_template(self.template).media_joiner) * n_items
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
        from ..model.splice import splice_multimodal

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
        yield from self.stream_turns(turns, force_modality=force_modality, use_cache=use_cache,
                                     logits_hook=logits_hook, **options)

    def stream_turns(self, turns: Sequence[Turn], *, force_modality: ForceSpec = None, use_cache: bool = True,
                     logits_hook: LogitsHook | None = None, **options: Any) -> Iterator[StreamEvent]:
        """`stream` for a conversation whose turns are already prepared (`prepare_turn`); the last one is answered."""
        opts = resolve_options(self.options, **options)
        force = as_force(force_modality)
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
        for event in self._decode(embeds, opts, as_force(force_modality), use_cache, logits_hook, stream=False):
            rows = event
        return [self._result(row, list(self._decode_media(row, opts))) for row in rows]

    # ------------------------------------------------------------------------------------- decoding

    def _decode(self, prompts: list[torch.Tensor], opts: GenerateConfig, force: tuple[str, ...], use_cache: bool,
                logits_hook: LogitsHook | None, stream: bool) -> Iterator[str | list[DecodeRow]]:
        """The token loop over a left-padded batch. Yields text pieces of row 0 when `stream`, the rows last.

        Each pass feeds every row's newest token (the prompt on the first pass) and returns that token's hidden
        state (kept when it belongs to a signal span) and the logits of the next one. A row that ends on a span
        token gets one more pass to collect that token's hidden state.
        """
        check_force(force, opts, self.model.signal, self.model.decoders)
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
        rows = [DecodeRow(p.shape[0]) for p in prompts]
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
                                use_cache=use_cache, output_hidden_states=any(want_hidden), logits_to_keep=1,
                                **{CACHE_ARG: past})
                past = getattr(out, CACHE_ARG) if use_cache else None
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

    def _next_token(self, row: DecodeRow, logits: torch.Tensor, opts: GenerateConfig, force: tuple[str, ...],
                    generator: torch.Generator, signal_ids: torch.Tensor) -> int | None:
        """Choose, append and account for the next token of one row; None when the row stops without a token."""
        signal = self.model.signal
        position = len(row.tokens)
        if row.forced:
            token = row.forced.popleft()
            forced = True
        else:
            forced = False
            allowed = allowed_starts(row, opts, force, signal, self.model.decoders)
            banned = signal_ids[~torch.isin(signal_ids, torch.tensor(list(allowed), dtype=signal_ids.dtype,
                                                                         device=signal_ids.device))]
            logits = logits.clone()
            logits[banned] = float("-inf")
            logits[self.never_ids] = float("-inf")
            missing = pending(row, force)
            if missing and opts.max_new_tokens - position <= sum(signal.span_length(m) for m in missing):
                token = signal.token_ids[missing[0]][0]  # last moment the forced spans still fit
            else:
                token = sample(logits, opts, generator)
                if missing and (token in self.eos_ids or self._completes_stop(row, token)):
                    token = signal.token_ids[missing[0]][0]  # the model would stop: put the forced output here
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

    def _completes_stop(self, row: DecodeRow, token: int) -> bool:
        if not self.stops:
            return False
        text = self._decode_text(row.text_ids + [token])
        return any(s in text for s in self.stops)

    def _decode_text(self, ids: list[int]) -> str:
        return self.model.tokenizer.decode(ids, skip_special_tokens=True)

    def _visible_text(self, row: DecodeRow, final: bool = False) -> str:
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
    def _decode_media(self, row: DecodeRow, opts: GenerateConfig) -> Iterator[MediaOutput]:
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

    def _result(self, row: DecodeRow, outputs: list[MediaOutput]) -> GenerationResult:
        return GenerationResult(self._visible_text(row, final=True).strip(), list(row.tokens), outputs,
                                row.finish_reason, row.prompt_len)

