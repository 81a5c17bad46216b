"""Loading decoders from pipeline folders (or hub ids), and holding them lazily by modality."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nextgpt.constants import MODALITIES
from nextgpt.dtypes import as_dtype
from nextgpt.errors import CheckpointError, ConfigError

from .audio import AudioDecoder
from .base import Decoder
from .image import ImageDecoder
from .video import VideoDecoder

logger = logging.getLogger(__name__)

#: The adapter that serves each modality.
DECODER_CLASSES: dict[str, type[Decoder]] = {"image": ImageDecoder, "video": VideoDecoder, "audio": AudioDecoder}

#: The stock diffusers pipeline class that serves each modality (``model_index.json`` ``_class_name``).
PIPELINE_CLASSES: dict[str, str] = {m: cls.pipeline_class for m, cls in DECODER_CLASSES.items()}


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ConfigError(f"unknown decoder modality {modality!r}; expected one of {list(MODALITIES)}")
    return modality


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
    decoder = DECODER_CLASSES[modality](pipeline, source)
    decoder.to(device=device)
    logger.info("loaded %s decoder from %s (%s, scheduler %s, prediction %s)", modality, source, decoder.dtype,
                type(decoder.scheduler).__name__, decoder.prediction_type)
    return decoder


class LazyDecoders:
    """Decoders by modality, each loaded on first ``get`` (a stage never loads a decoder it does not use).

    ``paths`` maps modality → folder / hub id, or ``None`` when that modality has no decoder. The reference loads
    all three in every stage (docs/deviations.md, "Decoders in stage 1").
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
