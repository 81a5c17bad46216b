"""The latent denoising loss of a frozen decoder conditioned on projector outputs, and its Min-SNR-γ weights.

Fixes relative to the reference (docs/deviations.md, "Denoising noise" and "Min-SNR"): latents are noised with a
DDPM forward process built from the decoder's scheduler config (not the inference scheduler's ``add_noise``), the
target follows the model's own prediction type (ε or v), and Min-SNR-γ weights apply per sample.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from nextgpt.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction")


class DenoisingDecoder(Protocol):
    """What the loss needs from a decoder (:class:`.base.Decoder` provides it)."""

    modality: str

    @property
    def training_scheduler(self) -> Any: ...

    @property
    def prediction_type(self) -> str: ...

    def check_target(self, target: torch.Tensor) -> None: ...

    def check_conditioning(self, conditioning: torch.Tensor, batch_size: int | None = None) -> torch.Tensor: ...

    def encode_target_latents(self, target: torch.Tensor, generator: torch.Generator | None = None
                              ) -> torch.Tensor: ...

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor
                ) -> torch.Tensor: ...


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of a discrete diffusion process at integer ``timesteps``."""
    a = alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)[timesteps.long()]
    return (a / (1.0 - a)).float()


def min_snr_weights(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Min-SNR-γ loss weights per sample (Hang et al. 2023): ε-target min(snr, γ)/snr, v-target min(snr, γ)/(snr+1).

    The v form equals the ε form expressed for a velocity target, since ||v − v̂||² = (snr+1)·||ε − ε̂||².
    """
    if gamma <= 0:
        raise ConfigError(f"min_snr_gamma must be > 0, got {gamma}")
    s = snr(alphas_cumprod, timesteps)
    clipped = torch.clamp(s, max=float(gamma))
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    raise ConfigError(f"unsupported prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
           ) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (so CPU generators work for GPU tensors)."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(device=device, dtype=dtype)


def denoising_loss(
    decoder: DenoisingDecoder,
    target: torch.Tensor,
    conditioning: torch.Tensor,
    min_snr_gamma: float | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Latent diffusion loss of the frozen ``decoder`` conditioned on projector outputs; returns (N,) per sample.

    ``target``: image (N, 3, H, W) in [-1, 1]; video (N, 3, F, H, W) in [-1, 1]; audio log-mel (N, T, 64).
    ``conditioning``: image/video (N, 77, D); audio (N, 1, D) or (N, D). Steps: VAE latents (posterior sample ×
    scaling factor) → Gaussian noise → one uniform integer timestep per sample in [0, num_train_timesteps) →
    DDPM forward noising → UNet → MSE against the noise (ε models) or the velocity (v models) per sample →
    optional Min-SNR-γ weights (the reference uses γ = 5 for images only). Gradients reach ``conditioning`` only;
    the decoder stays frozen. ``generator`` (CPU or on the decoder's device) makes the draws reproducible.
    """
    n = target.shape[0]
    decoder.check_target(target)
    decoder.check_conditioning(conditioning, n)
    scheduler = decoder.training_scheduler
    prediction_type = decoder.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"{decoder.modality} decoder: unsupported prediction_type {prediction_type!r}")

    latents = decoder.encode_target_latents(target, generator=generator)
    device = latents.device
    noise = _randn(tuple(latents.shape), generator, device, latents.dtype)
    where = generator.device if generator is not None else device
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator,
                              device=where).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)

    pred = decoder.predict(noisy, timesteps, conditioning)
    goal = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    per_sample = F.mse_loss(pred.float(), goal.float(), reduction="none").flatten(1).mean(dim=1)
    if min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weights(scheduler.alphas_cumprod, timesteps, min_snr_gamma,
                                                  prediction_type).to(per_sample.device)
    return per_sample
