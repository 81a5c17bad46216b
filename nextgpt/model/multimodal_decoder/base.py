"""What every frozen diffusion decoder shares; the adapters (image.py, video.py, audio.py) fill in the rest.

A :class:`Decoder` wraps one STOCK diffusers pipeline and gives the rest of the project one interface:

* ``encode_captions`` — caption embeddings with the decoder's own tokenizer + text encoder, exactly the targets of
  the caption-alignment loss (reference: ``preprocess_embeddings.py`` through the custom pipelines);
* ``generate`` — media from projector outputs (``prompt_embeds``) with classifier-free guidance against the empty
  prompt's embedding;
* the pieces of the latent denoising loss (``encode_target_latents``, ``predict``, ``training_scheduler``); the
  loss itself is :func:`nextgpt.model.multimodal_decoder.denoising.denoising_loss`.

Decoders are not ``nn.Module`` children of the model: they are frozen, referenced by path in checkpoints, and
loaded on first use (see ``loading.py``).

The base class holds the common steps; an adapter overrides the hooks where its pipeline differs: caption
tokenization and encoding, the conditioning layout, the pipeline call of ``generate``, the target layout, the
VAE batch layout and the UNet call.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from nextgpt.dtypes import as_dtype
from nextgpt.errors import ConfigError, DataError

from .denoising import denoising_loss

#: Generation defaults: the values NExT-GPT's ``generate`` / ``predict.py`` pass to the pipelines, not the
#: pipelines' own defaults (which differ: video guidance 9.0, audio 10 steps / 2.5 / 10.24 s).
#: ``None`` height/width for images means the pipeline default, ``unet.sample_size * vae_scale_factor``
#: (768 for SD-2, 512 for SD-1.5). Each :class:`Decoder` copies its row into ``decoder.defaults``, which a
#: configuration may edit (e.g. small sizes for the tiny models).
GENERATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {"num_inference_steps": 50, "guidance_scale": 7.5, "height": None, "width": None},
    "video": {"num_inference_steps": 50, "guidance_scale": 7.5, "num_frames": 16, "height": 320, "width": 576},
    "audio": {"num_inference_steps": 50, "guidance_scale": 7.5, "audio_length_in_s": 5.0},
}


class Decoder:
    """One frozen diffusion pipeline behind the interface the model, trainer and inference use.

    Subclasses set ``modality`` ("image" | "video" | "audio") and ``pipeline_class`` (the stock diffusers class
    name, as in ``model_index.json``). Attributes: ``pipeline`` (the stock diffusers pipeline), ``source`` (the
    path or hub id it came from), ``defaults`` (generation defaults, see ``GENERATION_DEFAULTS``).
    """

    modality: str = ""
    pipeline_class: str = ""

    def __init__(self, pipeline: Any, source: str = "") -> None:
        if self.modality not in GENERATION_DEFAULTS:
            raise TypeError(f"{type(self).__name__} is not a decoder adapter (use ImageDecoder, VideoDecoder or "
                            "AudioDecoder)")
        self.pipeline = pipeline
        self.source = str(source)
        self.defaults: dict[str, Any] = dict(GENERATION_DEFAULTS[self.modality])
        self._negative: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._training_scheduler = None
        self.freeze()
        pipeline.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------------------------------- components

    @property
    def vae(self):
        return self.pipeline.vae

    @property
    def unet(self):
        return self.pipeline.unet

    @property
    def text_encoder(self):
        return self.pipeline.text_encoder

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    @property
    def scheduler(self):
        """The inference scheduler (Euler for SD-2, DDIM for ZeroScope / AudioLDM)."""
        return self.pipeline.scheduler

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def condition_shape(self) -> tuple[int, int]:
        """(Q, D) of one conditioning: the tokenizer's length and the text encoder's width (audio overrides)."""
        return (int(self.tokenizer.model_max_length), int(self.text_encoder.config.hidden_size))

    @property
    def caption_shape(self) -> tuple[int, ...]:
        """Shape of one caption embedding from ``encode_captions``: (Q, D) here, (D,) for audio."""
        return self.condition_shape

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts, from the scheduler config: ``"epsilon"`` or ``"v_prediction"``."""
        return str(self.scheduler.config.get("prediction_type", "epsilon"))

    @property
    def training_scheduler(self):
        """A ``DDPMScheduler`` built from the decoder's scheduler config: the forward process of the denoising loss.

        The reference noised with the inference scheduler's ``add_noise`` instead (docs/deviations.md, "Denoising
        noise").
        """
        if self._training_scheduler is None:
            from diffusers import DDPMScheduler

            accepted = set(inspect.signature(DDPMScheduler.__init__).parameters)
            config = {k: v for k, v in dict(self.scheduler.config).items() if k in accepted}
            self._training_scheduler = DDPMScheduler.from_config(config)
        return self._training_scheduler

    def modules(self) -> dict[str, torch.nn.Module]:
        """The pipeline's torch modules by component name (vae, unet, text_encoder, and vocoder for audio)."""
        return {k: v for k, v in self.pipeline.components.items() if isinstance(v, torch.nn.Module)}

    def freeze(self) -> Decoder:
        """Put every component in eval mode with ``requires_grad=False`` (decoders are never trained)."""
        for module in self.modules().values():
            module.requires_grad_(False)
            module.eval()
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None) -> Decoder:
        """Move / cast every component; returns self."""
        kwargs: dict[str, Any] = {}
        if device is not None:
            kwargs["device"] = torch.device(device)
        if dtype is not None:
            kwargs["dtype"] = as_dtype(dtype)
        if kwargs:
            self.pipeline.to(**kwargs)
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(modality={self.modality!r}, source={self.source!r}, "
                f"condition_shape={self.condition_shape}, device={self.device}, dtype={self.dtype})")

    # ------------------------------------------------------------------------------------------- captions

    def _tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded to the tokenizer's max length, over-long captions cut on the right."""
        tok = self.tokenizer
        enc = tok(captions, padding="max_length", max_length=int(tok.model_max_length), truncation=True,
                  return_tensors="pt")
        return enc.input_ids, enc.attention_mask

    def _encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The CLIP text encoder's last hidden state over all positions (SD / ZeroScope)."""
        device = self.text_encoder.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        # SD / ZeroScope pipelines pass the mask only when the text encoder was trained with one.
        use_mask = bool(getattr(self.text_encoder.config, "use_attention_mask", False))
        return self.text_encoder(input_ids, attention_mask=attention_mask if use_mask else None)[0]

    @torch.no_grad()
    def encode_captions(self, captions: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Caption embeddings as the reference computes them (the targets of the caption-alignment loss).

        Returns (N, *caption_shape): image/video (N, 77, D), the text encoder's last hidden state over all padded
        positions; audio (N, D), CLAP ``text_embeds``, L2-normalised. On the decoder's device, in the text
        encoder's dtype.
        """
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise DataError(f"encode_captions expects a list of strings, got {type(captions).__name__}")
        captions = list(captions)
        if not captions:
            return torch.empty((0, *self.caption_shape), device=self.text_encoder.device,
                               dtype=self.text_encoder.dtype)
        chunks = []
        for start in range(0, len(captions), batch_size):
            ids, mask = self._tokenize(captions[start:start + batch_size])
            chunks.append(self._encode_tokens(ids, mask))
        return torch.cat(chunks)

    def negative_embedding(self) -> torch.Tensor:
        """The empty prompt's embedding, the negative of classifier-free guidance: (1, *caption_shape)."""
        key = (self.text_encoder.device, self.text_encoder.dtype)
        if key not in self._negative:
            self._negative = {key: self.encode_captions([""])}
        return self._negative[key]

    # ------------------------------------------------------------------------------------------- generation

    def _prompt_layout(self, x: torch.Tensor) -> tuple[torch.Tensor | None, str]:
        """``x`` in the pipeline's prompt layout (None if it cannot be), and the accepted shapes in words.

        Here (N, Q, D), also accepting one (Q, D) row.
        """
        q, d = self.condition_shape
        if x.dim() == 2:
            x = x[None]
        ok = x.dim() == 3 and tuple(x.shape[1:]) == (q, d)
        return (x if ok else None), f"(N, {q}, {d}) or ({q}, {d})"

    def _check_prompt_embeds(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Bring projector outputs to the pipeline's layout, on the decoder's device, in the text encoder's dtype."""
        x, want = self._prompt_layout(prompt_embeds)
        if x is None:
            raise DataError(f"{self.modality} decoder: prompt_embeds of shape {tuple(prompt_embeds.shape)}, "
                            f"expected {want}")
        return x.to(device=self.device, dtype=self.text_encoder.dtype)

    def _run_pipeline(self, options: dict[str, Any], common: dict[str, Any]) -> list[Any]:
        """Call the pipeline with the shared arguments ``common`` and this modality's ``options``; one output a row.
        Every adapter (ImageDecoder, VideoDecoder, AudioDecoder) overrides it; the base is never instantiated."""
        raise TypeError(f"{type(self).__name__} must override _run_pipeline")

    @torch.no_grad()
    def generate(
        self,
        prompt_embeds: torch.Tensor,
        *,
        guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        audio_length_in_s: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> list[Any]:
        """Generate one output per row of ``prompt_embeds`` (used as-is; audio embeddings are NOT normalised).

        Classifier-free guidance uses the empty prompt's embedding as the negative. Arguments left ``None`` come
        from ``self.defaults``; an argument this modality does not take is a ConfigError. Returns a list with, per
        row: image → ``PIL.Image``; video → uint8 array (F, H, W, 3); audio → float32 waveform at the vocoder's
        rate (16 kHz), ``int(audio_length_in_s * 16000)`` samples.
        """
        embeds = self._check_prompt_embeds(prompt_embeds)
        given = {
            "guidance_scale": guidance_scale, "num_inference_steps": num_inference_steps, "height": height,
            "width": width, "num_frames": num_frames, "audio_length_in_s": audio_length_in_s,
        }
        opts = {k: given[k] if given.get(k) is not None else v for k, v in self.defaults.items()}
        unknown = [k for k, v in given.items() if v is not None and k not in self.defaults]
        if unknown:
            raise ConfigError(f"{self.modality} decoder: generate() does not take {unknown}")
        n = embeds.shape[0]
        negative = self.negative_embedding().to(embeds.dtype)
        negative = negative.expand(n, *negative.shape[1:]).contiguous()
        common = dict(prompt_embeds=embeds, negative_prompt_embeds=negative, generator=generator,
                      guidance_scale=float(opts["guidance_scale"]),
                      num_inference_steps=int(opts["num_inference_steps"]))
        return self._run_pipeline(opts, common)

    # ------------------------------------------------------------------------------------------- training

    def _target_layout(self, target: torch.Tensor) -> tuple[bool, str]:
        """Whether ``target`` has this decoder's target layout, and that layout in words (overridden by every
        adapter)."""
        raise TypeError(f"{type(self).__name__} must override _target_layout")

    def check_target(self, target: torch.Tensor) -> None:
        """Raise DataError unless ``target`` has this decoder's target layout (see ``encode_target_latents``)."""
        ok, want = self._target_layout(target)
        if not ok:
            raise DataError(f"{self.modality} decoder: target of shape {tuple(target.shape)}, expected {want}")

    def _to_vae_batch(self, target: torch.Tensor) -> torch.Tensor:
        """Targets as a batch of VAE inputs (N', C, H, W); here they already are."""
        return target

    def _from_vae_batch(self, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Undo ``_to_vae_batch`` on the latents; here nothing to undo."""
        return latents

    @torch.no_grad()
    def encode_target_latents(
        self,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        chunk_size: int = 16,
        sample: bool = True,
    ) -> torch.Tensor:
        """VAE latents (a posterior sample, or its mean if ``sample=False``, times ``scaling_factor``) of targets.

        image (N, 3, H, W) in [-1, 1] → (N, 4, H/8, W/8); video (N, 3, F, H, W) in [-1, 1], encoded frame by
        frame → (N, 4, F, H/8, W/8); audio log-mel (N, T, 64) → (N, 8, T/4, 16). ``chunk_size`` images/frames
        go through the VAE at a time (memory).
        """
        self.check_target(target)
        vae = self.vae
        x = self._to_vae_batch(target.to(device=vae.device, dtype=vae.dtype))
        parts = []
        for i in range(0, x.shape[0], chunk_size):
            posterior = vae.encode(x[i:i + chunk_size]).latent_dist
            parts.append(posterior.sample(generator=generator) if sample else posterior.mean)
        latents = torch.cat(parts) * vae.config.scaling_factor
        return self._from_vae_batch(latents, target)

    def _conditioning_layout(self, conditioning: torch.Tensor) -> tuple[torch.Tensor | None, str]:
        """``conditioning`` in the UNet's layout (None if it is not one), and the accepted shapes in words.

        Here exactly (N, Q, D).
        """
        q, d = self.condition_shape
        ok = conditioning.dim() == 3 and tuple(conditioning.shape[1:]) == (q, d)
        return (conditioning if ok else None), f"(N, {q}, {d})"

    def check_conditioning(self, conditioning: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Validate a projector output for the UNet; returns it as (N, 77, D) or, for audio, (N, D)."""
        shape = tuple(conditioning.shape)
        x, want = self._conditioning_layout(conditioning)
        if x is not None and batch_size is not None and shape[0] != batch_size:
            x, want = None, f"{batch_size} rows (one per target)"
        if x is None:
            raise DataError(f"{self.modality} decoder: conditioning of shape {shape}, expected {want}")
        return x

    def _unet(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet call: cross-attention on the conditioning (N, 77, D) here."""
        return self.unet(x, t, encoder_hidden_states=cond).sample

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor
                ) -> torch.Tensor:
        """The UNet's prediction for ``noisy_latents`` at ``timesteps`` (N,), differentiable w.r.t. conditioning."""
        cond = self.check_conditioning(conditioning, noisy_latents.shape[0]).to(self.unet.dtype)
        x = noisy_latents.to(device=self.unet.device, dtype=self.unet.dtype)
        t = timesteps.to(self.unet.device)
        return self._unet(x, t, cond)

    def denoising_loss(self, target: torch.Tensor, conditioning: torch.Tensor,
                       min_snr_gamma: float | None = None, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Per-sample latent denoising loss (N,); see :func:`.denoising.denoising_loss`."""
        return denoising_loss(self, target, conditioning, min_snr_gamma, generator=generator)
