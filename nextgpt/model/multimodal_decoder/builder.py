"""Frozen diffusion decoders: Stable Diffusion (image), ZeroScope (video), AudioLDM (audio).

A :class:`Decoder` wraps one STOCK diffusers pipeline and gives the rest of the project one interface:

* ``encode_captions`` — caption embeddings with the decoder's own tokenizer + text encoder, exactly the targets of
  the caption-alignment loss (reference: ``preprocess_embeddings.py`` through the custom pipelines);
* ``generate`` — media from projector outputs (``prompt_embeds``) with classifier-free guidance against the empty
  prompt's embedding;
* the pieces of the latent denoising loss (``encode_target_latents``, ``predict``, ``training_scheduler``); the
  loss itself is :func:`nextgpt.model.losses.denoising_loss`.

Decoders are not ``nn.Module`` children of the model: they are frozen, referenced by path in checkpoints, and
loaded on first use through :class:`LazyDecoders` (the reference loads all three in every stage, §12.39).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nextgpt.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("image", "video", "audio")

#: The stock diffusers pipeline class that serves each modality (``model_index.json`` ``_class_name``).
PIPELINE_CLASSES: dict[str, str] = {
    "image": "StableDiffusionPipeline",
    "video": "TextToVideoSDPipeline",
    "audio": "AudioLDMPipeline",
}

#: Generation defaults: the values NExT-GPT's ``generate`` / ``predict.py`` pass to the pipelines (spec §9.1, §13),
#: not the pipelines' own defaults (which differ: video guidance 9.0, audio 10 steps / 2.5 / 10.24 s).
#: ``None`` height/width for images means the pipeline default, ``unet.sample_size * vae_scale_factor``
#: (768 for SD-2, 512 for SD-1.5). Each :class:`Decoder` copies its row into ``decoder.defaults``, which a
#: configuration may edit (e.g. small sizes for the tiny models).
GENERATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {"num_inference_steps": 50, "guidance_scale": 7.5, "height": None, "width": None},
    "video": {"num_inference_steps": 50, "guidance_scale": 7.5, "num_frames": 16, "height": 320, "width": 576},
    "audio": {"num_inference_steps": 50, "guidance_scale": 7.5, "audio_length_in_s": 5.0},
}

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept a torch dtype or one of its common names (``"bf16"``, ``"float16"``, ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[key]


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ConfigError(f"unknown decoder modality {modality!r}; expected one of {list(MODALITIES)}")
    return modality


class Decoder:
    """One frozen diffusion pipeline behind the interface the model, trainer and inference use.

    Attributes: ``modality`` ("image" | "video" | "audio"), ``pipeline`` (the stock diffusers pipeline),
    ``source`` (the path or hub id it came from), ``defaults`` (generation defaults, see ``GENERATION_DEFAULTS``).
    """

    def __init__(self, modality: str, pipeline: Any, source: str = "") -> None:
        self.modality = _check_modality(modality)
        self.pipeline = pipeline
        self.source = str(source)
        self.defaults: dict[str, Any] = dict(GENERATION_DEFAULTS[modality])
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
        """(Q, D) of one conditioning: image/video (77, text width), audio (1, CLAP projection dim)."""
        if self.modality == "audio":
            return (1, int(self.text_encoder.config.projection_dim))
        return (int(self.tokenizer.model_max_length), int(self.text_encoder.config.hidden_size))

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts, from the scheduler config: ``"epsilon"`` or ``"v_prediction"``."""
        return str(self.scheduler.config.get("prediction_type", "epsilon"))

    @property
    def training_scheduler(self):
        """A ``DDPMScheduler`` built from the decoder's scheduler config: the forward process of the denoising loss.

        The reference noised with the inference scheduler's ``add_noise`` (Euler's σ-scaled one for SD-2, §12.27).
        """
        if self._training_scheduler is None:
            import inspect

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
        return (f"Decoder(modality={self.modality!r}, source={self.source!r}, "
                f"condition_shape={self.condition_shape}, device={self.device}, dtype={self.dtype})")

    # ------------------------------------------------------------------------------------------- captions

    def _tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded to the tokenizer's max length.

        Image (SD): over-long captions keep their END (left truncation, as the reference's custom SD pipeline
        intends), each caption on its own: ``[BOS] + last (L-2) tokens + [EOS]``. The reference re-decoded the
        whole batch when any caption was too long, corrupting the short ones (§12.23). Video and audio: standard
        right truncation.
        """
        tok = self.tokenizer
        max_len = int(tok.model_max_length)
        if self.modality != "image":
            enc = tok(captions, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
            return enc.input_ids, enc.attention_mask
        rows, masks = [], []
        for caption in captions:
            ids = tok(caption, truncation=False, verbose=False).input_ids
            if len(ids) > max_len:
                ids = ids[:1] + ids[len(ids) - (max_len - 1):]
            pad = max_len - len(ids)
            rows.append(ids + [tok.pad_token_id] * pad)
            masks.append([1] * len(ids) + [0] * pad)
        return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)

    def _encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        device = self.text_encoder.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if self.modality == "audio":
            out = self.text_encoder(input_ids, attention_mask=attention_mask)
            return F.normalize(out.text_embeds, dim=-1)
        # SD / ZeroScope pipelines pass the mask only when the text encoder was trained with one.
        use_mask = bool(getattr(self.text_encoder.config, "use_attention_mask", False))
        return self.text_encoder(input_ids, attention_mask=attention_mask if use_mask else None)[0]

    @torch.no_grad()
    def encode_captions(self, captions: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Caption embeddings as the reference computes them (the targets of the caption-alignment loss).

        Returns image/video (N, 77, D): the text encoder's last hidden state over all padded positions;
        audio (N, D): CLAP ``text_embeds``, L2-normalised. On the decoder's device, in the text encoder's dtype.
        """
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise DataError(f"encode_captions expects a list of strings, got {type(captions).__name__}")
        captions = list(captions)
        if not captions:
            q, d = self.condition_shape
            shape = (0, d) if self.modality == "audio" else (0, q, d)
            return torch.empty(shape, device=self.text_encoder.device, dtype=self.text_encoder.dtype)
        chunks = []
        for start in range(0, len(captions), batch_size):
            ids, mask = self._tokenize(captions[start:start + batch_size])
            chunks.append(self._encode_tokens(ids, mask))
        return torch.cat(chunks)

    def negative_embedding(self) -> torch.Tensor:
        """The empty prompt's embedding, the negative of classifier-free guidance: (1, 77, D) or (1, D) for audio."""
        key = (self.text_encoder.device, self.text_encoder.dtype)
        if key not in self._negative:
            self._negative = {key: self.encode_captions([""])}
        return self._negative[key]

    # ------------------------------------------------------------------------------------------- generation

    def _check_prompt_embeds(self, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Bring projector outputs to the pipeline's layout: (N, Q, D) for image/video, (N, D) for audio."""
        q, d = self.condition_shape
        x = prompt_embeds
        if self.modality == "audio":
            if x.dim() == 3 and x.shape[1] == 1:
                x = x[:, 0]
            elif x.dim() == 1:
                x = x[None]
            ok = x.dim() == 2 and x.shape[1] == d
            want = f"(N, {d}) or (N, 1, {d})"
        else:
            if x.dim() == 2:
                x = x[None]
            ok = x.dim() == 3 and tuple(x.shape[1:]) == (q, d)
            want = f"(N, {q}, {d}) or ({q}, {d})"
        if not ok:
            raise DataError(f"{self.modality} decoder: prompt_embeds of shape {tuple(prompt_embeds.shape)}, "
                            f"expected {want}")
        return x.to(device=self.device, dtype=self.text_encoder.dtype)

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
        from ``self.defaults``. Returns a list with, per row: image → ``PIL.Image``; video → uint8 array
        (F, H, W, 3); audio → float32 waveform at the vocoder's rate (16 kHz), ``int(audio_length_in_s * 16000)``
        samples.
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
        if self.modality == "image":
            out = self.pipeline(height=opts["height"], width=opts["width"], output_type="pil", **common)
            return list(out.images)
        if self.modality == "video":
            out = self.pipeline(height=opts["height"], width=opts["width"], num_frames=int(opts["num_frames"]),
                                output_type="np", **common)
            frames = np.asarray(out.frames)  # (N, F, H, W, 3) floats in [0, 1]
            frames = (frames * 255.0).round().clip(0, 255).astype(np.uint8)
            return [frames[i] for i in range(n)]
        out = self.pipeline(audio_length_in_s=float(opts["audio_length_in_s"]), output_type="np", **common)
        audios = np.asarray(out.audios, dtype=np.float32)
        return [audios[i] for i in range(n)]

    # ------------------------------------------------------------------------------------------- training

    def check_target(self, target: torch.Tensor) -> None:
        """Raise DataError unless ``target`` has this decoder's target layout (see ``encode_target_latents``)."""
        shape = tuple(target.shape)
        if self.modality == "image":
            ok, want = target.dim() == 4 and shape[1] == 3, "(N, 3, H, W)"
        elif self.modality == "video":
            ok, want = target.dim() == 5 and shape[1] == 3, "(N, 3, F, H, W)"
        else:
            bins = int(self.pipeline.vocoder.config.model_in_dim)
            ok, want = target.dim() == 3 and shape[2] == bins, f"(N, T, {bins}) log-mel"
        if not ok:
            raise DataError(f"{self.modality} decoder: target of shape {shape}, expected {want}")

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
        x = target.to(device=vae.device, dtype=vae.dtype)
        if self.modality == "video":
            n, c, f, h, w = x.shape
            x = x.permute(0, 2, 1, 3, 4).reshape(n * f, c, h, w)
        elif self.modality == "audio":
            x = x.unsqueeze(1)
        parts = []
        for i in range(0, x.shape[0], chunk_size):
            posterior = vae.encode(x[i:i + chunk_size]).latent_dist
            parts.append(posterior.sample(generator=generator) if sample else posterior.mean)
        latents = torch.cat(parts) * vae.config.scaling_factor
        if self.modality == "video":
            latents = latents.reshape(n, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
        return latents

    def check_conditioning(self, conditioning: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Validate a projector output for the UNet; returns it as (N, 77, D) or, for audio, (N, D)."""
        q, d = self.condition_shape
        shape = tuple(conditioning.shape)
        if self.modality == "audio":
            ok = (conditioning.dim() == 3 and shape[1:] == (1, d)) or (conditioning.dim() == 2 and shape[1] == d)
            want = f"(N, 1, {d}) or (N, {d})"
            x = conditioning.reshape(shape[0], d) if ok else conditioning
        else:
            ok, want, x = conditioning.dim() == 3 and shape[1:] == (q, d), f"(N, {q}, {d})", conditioning
        if ok and batch_size is not None and shape[0] != batch_size:
            ok, want = False, f"{batch_size} rows (one per target)"
        if not ok:
            raise DataError(f"{self.modality} decoder: conditioning of shape {shape}, expected {want}")
        return x

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor
                ) -> torch.Tensor:
        """The UNet's prediction for ``noisy_latents`` at ``timesteps`` (N,), differentiable w.r.t. conditioning.

        image/video: cross-attention on the conditioning (N, 77, D); audio: ``class_labels`` = (N, D) with
        ``encoder_hidden_states=None`` (AudioLDM's conditioning path).
        """
        cond = self.check_conditioning(conditioning, noisy_latents.shape[0]).to(self.unet.dtype)
        x = noisy_latents.to(device=self.unet.device, dtype=self.unet.dtype)
        t = timesteps.to(self.unet.device)
        if self.modality == "audio":
            return self.unet(x, t, encoder_hidden_states=None, class_labels=cond).sample
        return self.unet(x, t, encoder_hidden_states=cond).sample

    def denoising_loss(self, target: torch.Tensor, conditioning: torch.Tensor,
                       min_snr_gamma: float | None = None, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Per-sample latent denoising loss (N,); see :func:`nextgpt.model.losses.denoising_loss`."""
        from nextgpt.model.losses import denoising_loss

        return denoising_loss(self, target, conditioning, min_snr_gamma, generator=generator)


# ----------------------------------------------------------------------------------------------- loading


def _is_sd2_style(source: str, pipeline: Any) -> bool:
    """SD-2 (768-v) family: the reference's exact id, or a v-prediction scheduler config."""
    name = source.rstrip("/").split("/")[-1]
    return name == "stable-diffusion-2" or pipeline.scheduler.config.get("prediction_type") == "v_prediction"


def load_decoder(
    modality: str,
    path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    *,
    image_scheduler: str = "auto",
) -> Decoder:
    """Load a frozen decoder from a local pipeline folder (offline) or a hub id (needs network).

    image: ``StableDiffusionPipeline`` without safety checker; ``image_scheduler`` "euler" replaces the scheduler
    by an ``EulerDiscreteScheduler`` built from the model's scheduler config (what the reference does for SD-2),
    "default" keeps the saved one, "auto" picks Euler for SD-2-style models (id ``stable-diffusion-2`` or a
    v-prediction scheduler). video: ``TextToVideoSDPipeline``; audio: ``AudioLDMPipeline``.
    """
    _check_modality(modality)
    if image_scheduler not in ("auto", "euler", "default"):
        raise ConfigError(f"image_scheduler must be 'auto', 'euler' or 'default', got {image_scheduler!r}")
    import diffusers

    source = os.fspath(path)
    local = Path(source).expanduser()
    expected = PIPELINE_CLASSES[modality]
    if local.exists():
        index = local / "model_index.json"
        if not index.is_file():
            raise ConfigError(f"{modality} decoder: {local} is not a diffusers pipeline folder (no model_index.json)")
        try:
            found = json.loads(index.read_text()).get("_class_name")
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{index}: unreadable ({err})") from err
        if found != expected:
            raise ConfigError(f"{modality} decoder: {index} declares {found!r}, expected {expected!r}")
        source, local_only = str(local), True
    elif source.count("/") == 1 and not source.startswith((".", "/", "~")):
        local_only = False  # a hub id such as "stabilityai/stable-diffusion-2"
    else:
        raise ConfigError(f"{modality} decoder: path {source!r} does not exist")

    cls = getattr(diffusers, expected)
    kwargs: dict[str, Any] = {"dtype": as_dtype(dtype), "local_files_only": local_only}
    if modality == "image":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipeline = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        if local_only:
            raise CheckpointError(f"{modality} decoder: cannot load {expected} from {source}: {err}") from err
        raise ConfigError(f"{modality} decoder: {source!r} is not a local folder, and loading it as a hub id "
                          f"failed: {err}") from err

    if modality == "image" and (image_scheduler == "euler"
                                or (image_scheduler == "auto" and _is_sd2_style(source, pipeline))):
        pipeline.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    decoder = Decoder(modality, pipeline, source)
    decoder.to(device=device)
    logger.info("loaded %s decoder from %s (%s, scheduler %s, prediction %s)", modality, source, decoder.dtype,
                type(decoder.scheduler).__name__, decoder.prediction_type)
    return decoder


class LazyDecoders:
    """Decoders by modality, each loaded on first ``get`` (a stage never loads a decoder it does not use).

    ``paths`` maps modality → folder / hub id, or ``None`` when that modality has no decoder.
    """

    def __init__(
        self,
        paths: Mapping[str, str | os.PathLike | None],
        dtype: torch.dtype | str = torch.float32,
        device: torch.device | str = "cpu",
        **load_kwargs: Any,
    ) -> None:
        for modality in paths:
            _check_modality(modality)
        self._paths = {m: paths.get(m) for m in MODALITIES}
        self._dtype = as_dtype(dtype)
        self._device = torch.device(device)
        self._load_kwargs = load_kwargs
        self._decoders: dict[str, Decoder] = {}

    @property
    def available(self) -> tuple[str, ...]:
        """Modalities that have a decoder path."""
        return tuple(m for m in MODALITIES if self._paths[m] is not None)

    @property
    def loaded(self) -> tuple[str, ...]:
        """Modalities whose decoder has been loaded."""
        return tuple(m for m in MODALITIES if m in self._decoders)

    def path(self, modality: str) -> str | None:
        return None if self._paths[_check_modality(modality)] is None else os.fspath(self._paths[modality])

    def __contains__(self, modality: object) -> bool:
        return modality in self.available

    def get(self, modality: str) -> Decoder:
        """The decoder of ``modality``, loading it now if needed."""
        _check_modality(modality)
        if modality not in self._decoders:
            if self._paths[modality] is None:
                raise ConfigError(f"no {modality} decoder configured (set {modality}_decoder to a pipeline folder)")
            self._decoders[modality] = load_decoder(modality, self._paths[modality], self._dtype, self._device,
                                                    **self._load_kwargs)
        return self._decoders[modality]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
           ) -> LazyDecoders:
        """Move loaded decoders and set where later ones are loaded."""
        if device is not None:
            self._device = torch.device(device)
        if dtype is not None:
            self._dtype = as_dtype(dtype)
        for decoder in self._decoders.values():
            decoder.to(device=device, dtype=dtype)
        return self
