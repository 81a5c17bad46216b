"""The feature models of the generation metrics, pluggable by name or local path.

    fid          Inception-v3 as torch-fidelity ships it (a ``weights-inception-2015-12-05-6726825d.pth`` file;
                 the name ``inception-v3-compat`` means that file in torch's hub cache), or a CLIP directory
                 (FID on CLIP image features)
    clip_score   a CLIP model directory or hub id (transformers ``CLIPModel`` + ``CLIPProcessor``)
    clipsim      the same
    fad          a CLAP model directory or hub id (transformers ``ClapModel`` + ``ClapProcessor``)

Numbers are only comparable when computed with the same feature model, so every result records which one was used
(`FeatureModel.describe`). A model folder (or a file's sibling ``<file>.nextgpt_toy.json``) holding
``nextgpt_toy.json`` was built by ``nextgpt.toy`` with random weights; reports label its numbers as such.
Nothing is downloaded here: missing weights stop with the path and what to download.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_FEATURE_MODELS", "FeatureModel", "TOY_MARKER", "resolve_feature_model"]

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
DEFAULT_FEATURE_MODELS = {"fid": INCEPTION_NAME, "clip_score": "openai/clip-vit-base-patch32",
                          "clipsim": "openai/clip-vit-base-patch32", "fad": "laion/clap-htsat-unfused"}
TOY_MARKER = "nextgpt_toy.json"
_KINDS = {"fid": ("inception", "clip"), "clip_score": ("clip",), "clipsim": ("clip",), "fad": ("clap",)}


@dataclass(frozen=True)
class FeatureModel:
    metric: str
    kind: str  # inception | clip | clap
    spec: str  # as given (name or path)
    location: str  # the file / folder / hub id loaded

    @property
    def toy(self) -> bool:
        path = Path(self.location)
        return (path / TOY_MARKER).is_file() if path.is_dir() else Path(f"{self.location}.{TOY_MARKER}").is_file()

    @property
    def standard(self) -> bool:
        return self.spec == DEFAULT_FEATURE_MODELS[self.metric] and not self.toy

    def describe(self) -> dict[str, Any]:
        note = ("tiny RANDOM feature model built by nextgpt.toy: the number only checks the pipeline" if self.toy
                else "the field's standard feature model" if self.standard
                else "not the paper's feature model: not comparable with the paper's number")
        return {"kind": self.kind, "model": self.spec, "location": self.location, "toy": self.toy,
                "standard": self.standard, "note": note}


def _inception_cache_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _looks_like_hub_id(spec: str) -> bool:
    return not spec.startswith((".", "/", "~")) and spec.count("/") == 1 and not spec.endswith((".pth", ".pt"))


def _missing(metric: str, where: str, hint: str = "") -> CheckpointError:
    hub_id = _looks_like_hub_id(where) and not Path(where).exists()
    standard = where if hub_id else DEFAULT_FEATURE_MODELS[metric]
    if metric == "fid":
        get = f"download {INCEPTION_URL} (torch-fidelity's Inception-v3) to {_inception_cache_file()}"
    else:
        target = "DIR" if hub_id else where
        get = (f"download {standard} with `hf download {standard} --local-dir {target}` and pass "
               f"--feature-model {target}")
    return CheckpointError(f"{metric} feature model weights not found: {where}{f' ({hint})' if hint else ''}; "
                           f"{get}")


def resolve_feature_model(metric: str, spec: str | os.PathLike | None = None) -> FeatureModel:
    """Which feature model `metric` uses (`spec`: a name, a hub id or a local path; None = the standard one)."""
    if metric not in _KINDS:
        raise ConfigError(f"metric {metric!r} has no feature model")
    spec = str(spec) if spec is not None else DEFAULT_FEATURE_MODELS[metric]
    if metric == "fid" and spec == INCEPTION_NAME:
        path = _inception_cache_file()
        if not path.is_file():
            raise _missing(metric, str(path))
        return FeatureModel(metric, "inception", spec, str(path))
    path = Path(spec).expanduser()
    if path.is_file():
        if "inception" not in _KINDS[metric]:
            raise ConfigError(f"{metric}: feature model {path} is a file; expected a model folder")
        return FeatureModel(metric, "inception", spec, str(path))
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise _missing(metric, str(config), "a transformers model folder holds config.json and weights")
        model_type = json.loads(config.read_text()).get("model_type")
        kind = {"clip": "clip", "clap": "clap"}.get(model_type)
        if kind not in _KINDS[metric]:
            raise ConfigError(f"{metric}: {path} holds a {model_type!r} model; {metric} needs "
                              f"{' or '.join(_KINDS[metric])}")
        return FeatureModel(metric, kind, spec, str(path))
    if not _looks_like_hub_id(spec):
        raise _missing(metric, str(path), "no such file or folder")
    kind = "clap" if metric == "fad" else "clip"
    return FeatureModel(metric, kind, spec, spec)  # a hub id: found in the local cache when loaded


# ------------------------------------------------------------------------------------------------ loading


def _from_pretrained(cls, fm: FeatureModel):
    try:
        return cls.from_pretrained(fm.location)
    except OSError as err:
        raise _missing(fm.metric, fm.location, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None


@lru_cache(maxsize=4)
def _load(fm: FeatureModel):
    if fm.kind == "inception":
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:
            return FeatureExtractorInceptionV3(INCEPTION_NAME, ["2048"], feature_extractor_weights_path=fm.location)
        except (RuntimeError, KeyError) as err:
            raise CheckpointError(f"fid: {fm.location} is not torch-fidelity Inception-v3 weights ({err})") from None
    if fm.kind == "clip":
        from transformers import CLIPModel, CLIPProcessor

        return _from_pretrained(CLIPModel, fm).eval(), _from_pretrained(CLIPProcessor, fm)
    from transformers import ClapModel, ClapProcessor

    return _from_pretrained(ClapModel, fm).eval(), _from_pretrained(ClapProcessor, fm)


def _tensor(output: Any) -> torch.Tensor:
    """transformers 5 returns model outputs from get_*_features (the projected features in pooler_output)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _ClipForTorchmetrics(torch.nn.Module):
    """A CLIPModel whose get_*_features return tensors, as torchmetrics' CLIPScore expects."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.model.get_text_features(*args, **kwargs))


def clip_for_torchmetrics(fm: FeatureModel):
    """(model, processor) for torchmetrics' CLIPScore."""
    model, processor = _load(fm)
    return _ClipForTorchmetrics(model), processor


@torch.inference_mode()
def image_features(fm: FeatureModel, images: list[torch.Tensor], batch_size: int = 16) -> torch.Tensor:
    """uint8 (3, H, W) images -> (N, D) float64 features (Inception pool3, or CLIP image embeddings)."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if fm.kind == "inception":
            model = _load(fm)
            size = chunk[0].shape[-2:]
            if any(im.shape[-2:] != size for im in chunk):  # the extractor resizes a batch to 299 x 299
                feats = torch.cat([model(im[None])[0] for im in chunk])
            else:
                feats = model(torch.stack(chunk))[0]
        else:
            model, processor = _load(fm)
            pixels = processor(images=[im for im in chunk], return_tensors="pt")["pixel_values"]
            feats = _tensor(model.get_image_features(pixel_values=pixels))
        out.append(feats.double())
    return torch.cat(out)


@torch.inference_mode()
def audio_features(fm: FeatureModel, waveforms: list[np.ndarray], batch_size: int = 16) -> torch.Tensor:
    """Mono float waveforms at `audio_rate(fm)` -> (N, D) float64 CLAP audio embeddings."""
    model, processor = _load(fm)
    rate = audio_rate(fm)
    out = []
    for start in range(0, len(waveforms), batch_size):
        inputs = processor(audio=waveforms[start:start + batch_size], sampling_rate=rate, return_tensors="pt")
        out.append(_tensor(model.get_audio_features(**inputs)).double())
    return torch.cat(out)


def audio_rate(fm: FeatureModel) -> int:
    return int(_load(fm)[1].feature_extractor.sampling_rate)
