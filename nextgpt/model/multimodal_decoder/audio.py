"""AudioLDM (``AudioLDMPipeline``) as the audio decoder."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Decoder


class AudioDecoder(Decoder):
    """AudioLDM: one L2-normalised CLAP vector per caption (D,); the UNet takes it as ``class_labels``;
    float32 waveforms out; targets are log-mel spectrograms (N, T, bins).
    """

    modality = "audio"
    pipeline_class = "AudioLDMPipeline"

    @property
    def condition_shape(self) -> tuple[int, int]:
        """(1, CLAP projection dim): one conditioning vector."""
        return (1, int(self.text_encoder.config.projection_dim))

    @property
    def caption_shape(self) -> tuple[int, ...]:
        return (self.condition_shape[1],)

    def _encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """CLAP ``text_embeds``, L2-normalised (N, D)."""
        device = self.text_encoder.device
        out = self.text_encoder(input_ids.to(device), attention_mask=attention_mask.to(device))
        return F.normalize(out.text_embeds, dim=-1)

    def _prompt_layout(self, x: torch.Tensor) -> tuple[torch.Tensor | None, str]:
        """(N, D), also accepting (N, 1, D) and one (D,) vector."""
        d = self.condition_shape[1]
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        elif x.dim() == 1:
            x = x[None]
        ok = x.dim() == 2 and x.shape[1] == d
        return (x if ok else None), f"(N, {d}) or (N, 1, {d})"

    def _run_pipeline(self, options: dict[str, Any], common: dict[str, Any]) -> list[Any]:
        out = self.pipeline(audio_length_in_s=float(options["audio_length_in_s"]), output_type="np", **common)
        return list(np.asarray(out.audios, dtype=np.float32))

    def _target_layout(self, target: torch.Tensor) -> tuple[bool, str]:
        bins = int(self.pipeline.vocoder.config.model_in_dim)
        return target.dim() == 3 and target.shape[2] == bins, f"(N, T, {bins}) log-mel"

    def _to_vae_batch(self, target: torch.Tensor) -> torch.Tensor:
        """(N, T, bins) → (N, 1, T, bins): the mel spectrogram is a one-channel image."""
        return target.unsqueeze(1)

    def _conditioning_layout(self, conditioning: torch.Tensor) -> tuple[torch.Tensor | None, str]:
        """(N, 1, D) or (N, D), returned as (N, D)."""
        d = self.condition_shape[1]
        shape = tuple(conditioning.shape)
        ok = (conditioning.dim() == 3 and shape[1:] == (1, d)) or (conditioning.dim() == 2 and shape[1] == d)
        return (conditioning.reshape(shape[0], d) if ok else None), f"(N, 1, {d}) or (N, {d})"

    def _unet(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """AudioLDM's conditioning path: ``class_labels`` = (N, D), no cross-attention states."""
        return self.unet(x, t, encoder_hidden_states=None, class_labels=cond).sample
