"""The embedded default's tiny ImageBind: real input sizes (224 px, 128x204 mel), small widths and depths.

The file `build_tiny_imagebind` writes stores these kwargs in its metadata, so configs load it with
`model.encoder.arch: checkpoint` and the library needs no tiny preset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nextgpt.model.multimodal_encoder.encoder import build_multimodal_encoder, save_imagebind

TINY_IMAGEBIND_KWARGS: dict[str, Any] = {
    "video_frames": 2,
    "kernel_size": (2, 14, 14),
    "audio_kernel_size": 16,
    "audio_stride": 10,
    "out_embed_dim": 32,
    "vision_embed_dim": 64,
    "vision_num_blocks": 2,
    "vision_num_heads": 4,
    "audio_embed_dim": 32,
    "audio_num_blocks": 2,
    "audio_num_heads": 4,
    "audio_num_mel_bins": 128,
    "audio_target_len": 204,
    "audio_drop_path": 0.1,
    "text_embed_dim": 16,
    "text_num_blocks": 1,
    "text_num_heads": 2,
    "depth_embed_dim": 16,
    "depth_kernel_size": 16,
    "depth_num_blocks": 1,
    "depth_num_heads": 2,
    "depth_drop_path": 0.0,
    "thermal_embed_dim": 16,
    "thermal_kernel_size": 16,
    "thermal_num_blocks": 1,
    "thermal_num_heads": 2,
    "thermal_drop_path": 0.0,
    "imu_embed_dim": 16,
    "imu_kernel_size": 8,
    "imu_num_blocks": 1,
    "imu_num_heads": 2,
    "imu_drop_path": 0.7,
}


def build_tiny_imagebind(path: str | Path, seed: int = 0) -> Path:
    """Write a random tiny ImageBind (reference key names, its kwargs in the metadata) to a .safetensors file."""
    torch.manual_seed(seed)
    return save_imagebind(build_multimodal_encoder(None, TINY_IMAGEBIND_KWARGS), path)
