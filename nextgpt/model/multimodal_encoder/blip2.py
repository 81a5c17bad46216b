"""The frozen BLIP-2 visual encoder of MiniGPT-4: EVA ViT-g (with BLIP-2's final LayerNorm, LAVIS's `ln_vision`)
and the Q-Former with its 32 learned query tokens, built from transformers' `Blip2VisionModel`,
`Blip2QFormerModel` and a `query_tokens` parameter, exactly as `Blip2Model.get_qformer_features` runs them.

Weights come from a transformers BLIP-2 checkpoint, a local folder or a hub id (e.g. Salesforce/blip2-flan-t5-xxl,
whose vision model, `ln_vision` and Q-Former are the LAVIS `blip2_pretrained_flant5xxl` weights MiniGPT-4 loads).
Only `vision_model.*`, `qformer.*` and `query_tokens` are read, strictly (every tensor of the three present, none
extra under those prefixes, shapes equal); the language model's files are never opened.

Images are preprocessed as BLIP-2's eval processor does: bicubic resize to 224 x 224 (no crop), CLIP
normalisation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from nextgpt.errors import CheckpointError, ConfigError, DataError

from ..checkpoint_format import check_state_dict

#: The parts of a BLIP-2 checkpoint this encoder takes (key prefixes in transformers' format).
PARTS = ("vision_model.", "qformer.", "query_tokens")
EVA_VIT_G = "eva-vit-g"  # transformers' Blip2Config defaults: EVA ViT-g/14 (39 of 40 blocks), Q-Former, 32 queries
FROM_CHECKPOINT = "checkpoint"
_CONFIG = "config.json"
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class Blip2Encoder(nn.Module):
    """Frozen BLIP-2 vision tower + Q-Former: ``forward(pixel_values, "image")`` -> (B, num_query_tokens, 768)."""

    output_mode = "tokens"

    def __init__(self, config) -> None:
        super().__init__()
        from transformers import Blip2QFormerModel, Blip2VisionModel

        self.blip2_config = config
        self.vision_model = Blip2VisionModel(config.vision_config)
        self.qformer = Blip2QFormerModel(config.qformer_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.requires_grad_(False)
        self.train(False)

    @property
    def hidden_size(self) -> int:
        """Width of the features (the Q-Former's hidden size, 768)."""
        return self.blip2_config.qformer_config.hidden_size

    @property
    def num_query_tokens(self) -> int:
        return self.blip2_config.num_query_tokens

    @property
    def image_size(self) -> int:
        return self.blip2_config.vision_config.image_size

    @property
    def dtype(self) -> torch.dtype:
        return self.query_tokens.dtype

    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    def train(self, mode: bool = True) -> "Blip2Encoder":
        """Always eval: the encoder is frozen."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, modality: str = "image") -> torch.Tensor:
        if modality != "image":
            raise ConfigError(f"the blip2 encoder takes images only, not {modality!r} (model.encoder.kind=blip2)")
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values)
            raise DataError(f"image input for the blip2 encoder must be a (N, 3, H, W) tensor, got {shape}")
        x = pixel_values.to(device=self.device, dtype=self.dtype)
        image_embeds = self.vision_model(pixel_values=x, return_dict=True).last_hidden_state
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.query_tokens.expand(image_embeds.shape[0], -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask,
                           return_dict=True)
        return out.last_hidden_state.to(self.dtype)


# ------------------------------------------------------------------------------------------------ files


def _is_hub_id(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def _local_folder(source: str, files: Sequence[str] = ()) -> Path:
    """`source` itself when it is a folder; for a hub id, the cached snapshot with `files` (glob patterns)."""
    path = Path(source)
    if path.is_dir():
        return path
    if not _is_hub_id(source):
        raise CheckpointError(f"{source}: BLIP-2 checkpoint folder not found")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=list(files)))
    except Exception as exc:  # offline, unknown repository, network errors
        raise CheckpointError(f"{source}: cannot fetch {', '.join(files)} from the hub: {exc}") from None


def blip2_config(source: str | None, arch: str = FROM_CHECKPOINT):
    """transformers' Blip2Config: from `source`'s config.json (arch "checkpoint") or the named arch "eva-vit-g"."""
    from transformers import Blip2Config

    if arch == EVA_VIT_G:
        return Blip2Config()
    if arch != FROM_CHECKPOINT:
        raise ConfigError(f"unknown blip2 arch {arch!r}; expected {EVA_VIT_G} or {FROM_CHECKPOINT}")
    if not source:
        raise ConfigError("model.encoder.arch=checkpoint needs model.encoder.checkpoint (a transformers BLIP-2 "
                          "folder or hub id)")
    folder = _local_folder(source, [_CONFIG, *_INDEX_FILES])
    if not (folder / _CONFIG).is_file():
        raise CheckpointError(f"{source}: no {_CONFIG} (not a transformers BLIP-2 checkpoint)")
    try:
        config = Blip2Config.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{folder / _CONFIG}: not a BLIP-2 config: {exc}") from None
    if getattr(config, "model_type", None) != "blip-2":
        raise CheckpointError(f"{folder / _CONFIG}: model_type {config.model_type!r} is not blip-2")
    return config


def _wanted(key: str) -> bool:
    return key.startswith(PARTS[:2]) or key == PARTS[2]


def read_blip2_parts(source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The vision-model, Q-Former and query-token tensors of a transformers BLIP-2 checkpoint, and the files read.
    Sharded checkpoints: only the shards holding those tensors are opened (or downloaded)."""
    folder = _local_folder(source, [_CONFIG, *_INDEX_FILES])
    files: list[Path] = []
    for index_name in _INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a readable shard index: {exc}") from None
            shards = sorted({f for k, f in weight_map.items() if _wanted(k)})
            folder = _local_folder(source, shards) if _is_hub_id(source) else folder
            files = [folder / s for s in shards]
            break
    else:
        single = [name for name in _SINGLE_FILES if (folder / name).is_file()]
        if not single and _is_hub_id(source):
            folder = _local_folder(source, [_SINGLE_FILES[0]])
            single = [name for name in _SINGLE_FILES if (folder / name).is_file()]
        files = [folder / single[0]] if single else []
    if not files:
        raise CheckpointError(f"{source}: no BLIP-2 weights ({', '.join(_SINGLE_FILES + _INDEX_FILES)}) holding "
                              f"{', '.join(PARTS)}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if not path.is_file():
            raise CheckpointError(f"{path}: shard named by the index is missing")
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                state.update({k: f.get_tensor(k) for k in f.keys() if _wanted(k)})
        else:
            try:
                loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as exc:  # unpickling refusals, truncated files
                raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from None
            state.update({k: v for k, v in loaded.items() if _wanted(k)})
    return state, [str(p) for p in files]


def build_blip2_encoder(checkpoint: str | None, arch: str = FROM_CHECKPOINT, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> Blip2Encoder:
    """The frozen encoder with its weights loaded strictly from `checkpoint` (a folder or hub id); without a
    checkpoint (arch eva-vit-g), transformers' random initialisation (timing, summaries)."""
    config = blip2_config(checkpoint, arch)
    encoder = Blip2Encoder(config)
    if checkpoint:
        state, files = read_blip2_parts(checkpoint)
        source = f"BLIP-2 checkpoint {checkpoint} ({', '.join(Path(f).name for f in files)})"
        check_state_dict(encoder.state_dict(), state, source)
        encoder.load_state_dict(state, strict=True)
    return encoder.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------- preprocessing


def preprocess_images(items: Sequence, image_size: int = 224, aspect_ratio: str = "square",
                      max_pixels: int | None = None) -> torch.Tensor:
    """Images (paths or PIL images) -> (N, 3, size, size): BLIP-2's eval processor (bicubic resize of the whole
    image to size x size, no crop; CLIP mean / std). `aspect_ratio="pad"` first pads to a square as NExT-GPT does."""
    import torchvision.transforms.functional as TF

    from .imagebind.data import ASPECT_RATIOS, CLIP_MEAN, CLIP_STD, _open_image, expand2square

    if aspect_ratio not in ASPECT_RATIOS:
        raise ConfigError(f"aspect_ratio must be one of {ASPECT_RATIOS}, got {aspect_ratio!r}")
    out = []
    for item in items:
        image = _open_image(item, max_pixels)
        if aspect_ratio == "pad":
            image = expand2square(image)
        image = TF.resize(image, [image_size, image_size], interpolation=TF.InterpolationMode.BICUBIC)
        out.append(TF.normalize(TF.to_tensor(image), mean=CLIP_MEAN, std=CLIP_STD))
    return torch.stack(out)
