"""The pretrained weights a real run needs: where each comes from, about how large it is, where the configs expect
it, and `download` (huggingface_hub for hub repositories, plain HTTPS for the ImageBind file).

The sizes are approximate download sizes as the hosting pages list them (not measured here). README.md and
data/README.md show the same table for people; `nextgpt download` and the checks before training read this one.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import NextGPTError

logger = logging.getLogger(__name__)

#: Files of a diffusers pipeline repository that are not needed (single-file checkpoints, other frameworks,
#: half-precision duplicates): a plain snapshot of such a repository can be several times larger.
DIFFUSERS_IGNORE = ("*.ckpt", "*.pth", "*.pt", "*.fp16.*", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.pb",
                    "*.png", "*.jpg", "*.gif", "*.mp4", "*.wav")


@dataclass(frozen=True)
class Asset:
    name: str                       # `nextgpt download NAME`
    description: str
    config_key: str                 # the config key that points at it
    size: str                       # approximate download size
    hub_id: str | None = None       # a Hugging Face Hub model repository
    url: str | None = None          # or a single file
    folders: tuple[str, ...] = ()   # the paths the shipped configs use for it (relative to the working directory)
    ignore: tuple[str, ...] = ()    # hub files not needed
    manual: str = ""                # how to obtain it when it cannot be downloaded as is

    @property
    def source(self) -> str:
        return self.hub_id or self.url or "see notes"


ASSETS: tuple[Asset, ...] = (
    Asset("vicuna-7b-v1.5", "Vicuna-7B v1.5 (LLM of the NEW recipe, configs/stage_*.yaml)", "model.llm",
          "≈13.5 GB", hub_id="lmsys/vicuna-7b-v1.5", folders=("pretrain_ckpt/vicuna-7b-v1.5",)),
    Asset("vicuna-7b-v0", "Vicuna-7B v0 (LLM of the LEGACY 7b_tiva_v0 recipe)", "model.llm", "≈13.5 GB",
          folders=("pretrain_ckpt/vicuna_ckpt/7b_v0",),
          manual="Vicuna v0 is published as a delta (lmsys/vicuna-7b-delta-v0) on LLaMA-7B; build it with FastChat: "
                 "python -m fastchat.model.apply_delta --base-model-path LLAMA_7B_DIR "
                 "--target-model-path pretrain_ckpt/vicuna_ckpt/7b_v0 --delta-path lmsys/vicuna-7b-delta-v0"),
    Asset("imagebind-huge", "ImageBind-huge encoder weights (imagebind_huge.pth)", "model.encoder.checkpoint",
          "≈4.5 GB", url="https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth",
          folders=("pretrain_ckpt/imagebind/imagebind_huge.pth",
                   "pretrain_ckpt/imagebind_ckpt/huge/imagebind_huge.pth")),
    Asset("sd-2", "Stable Diffusion 2 (image decoder, NEW)", "model.image.decoder", "≈5 GB",
          hub_id="stabilityai/stable-diffusion-2", ignore=DIFFUSERS_IGNORE),
    Asset("zeroscope-v2-576w", "ZeroScope v2 576w (video decoder)", "model.video.decoder", "≈3.5 GB",
          hub_id="cerspense/zeroscope_v2_576w", ignore=DIFFUSERS_IGNORE),
    Asset("audioldm", "AudioLDM (audio decoder, NEW)", "model.audio.decoder", "≈3 GB", hub_id="cvssp/audioldm",
          ignore=DIFFUSERS_IGNORE),
    Asset("sd-1.5", "Stable Diffusion 1.5 (image decoder, LEGACY)", "model.image.decoder", "≈5 GB",
          hub_id="runwayml/stable-diffusion-v1-5", ignore=DIFFUSERS_IGNORE,
          manual="the runwayml repository was withdrawn in 2024; its mirror stable-diffusion-v1-5/stable-diffusion-v1-5 "
                 "holds the same files (set model.image.decoder to it)"),
    Asset("audioldm-l-full", "AudioLDM l-full (audio decoder, LEGACY)", "model.audio.decoder", "≈3 GB",
          hub_id="cvssp/audioldm-l-full", ignore=DIFFUSERS_IGNORE),
    Asset("nextgpt-7b-tiva-v0", "the released NExT-GPT 7b_tiva_v0 weights (convert with `nextgpt convert`)",
          "(none: `nextgpt convert --src`)", "≈0.5 GB", hub_id="ChocoWu/nextgpt_7b_tiva_v0",
          folders=("ckpt/delta_ckpt/nextgpt/7b_tiva_v0",)),
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def asset_named(name: str) -> Asset:
    for asset in ASSETS:
        if asset.name == name:
            return asset
    raise NextGPTError(f"unknown asset {name!r}; known: {', '.join(a.name for a in ASSETS)}")


def asset_for(value: str) -> Asset | None:
    """The asset a config value means: one of its default folders, or its hub id."""
    for asset in ASSETS:
        if value in asset.folders or (asset.hub_id and value == asset.hub_id):
            return asset
    return None


def looks_like_hub_id(value: str) -> bool:
    """`owner/name` that is not an existing or default local path (`pretrain_ckpt/...` is a folder)."""
    if not _HUB_ID.match(value) or Path(value).exists() or Path(value.split("/")[0]).exists():
        return False
    asset = asset_for(value)
    return asset is None or value == asset.hub_id


def hub_cached(repo_id: str) -> bool:
    """Whether a hub repository has a snapshot in the local Hugging Face cache (no network access)."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_files_only=True)
        return True
    except Exception:  # any "not found locally" flavour of huggingface_hub's errors
        return False


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_hint(key: str, value: str, config_path: str | None = None) -> str:
    """What to run (or do) to get the asset a config key points at."""
    asset = asset_for(value)
    where = f" --config {config_path}" if config_path else ""
    if asset is None:
        return f"fix the path, or set {key}=<hub id> (a folder with the files, or a Hugging Face repository id)"
    if asset.manual and not (asset.hub_id or asset.url):
        return asset.manual
    source = f"{asset.hub_id} from the Hugging Face Hub" if asset.hub_id else asset.url
    return f"run `nextgpt download{where}` (or `nextgpt download {asset.name}`): {source}, {asset.size}"


# ---------------------------------------------------------------------------------------------- download


class NoNetworkError(NextGPTError):
    """The machine cannot reach the download source."""


def _no_network(source: str, target: str, reason: str) -> NoNetworkError:
    return NoNetworkError(f"cannot download {source}: {reason}. This machine seems to have no network access (or "
                          f"HF_HUB_OFFLINE=1 is set): download it on a machine that has, then copy it to {target}")


def fetch_url(url: str, target: Path) -> Path:
    """Download one file to `target` (through `target.part`, renamed when complete)."""
    if offline():
        raise _no_network(url, str(target), "HF_HUB_OFFLINE=1 is set")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=16 << 20)
    except OSError as err:  # URLError, timeouts, refused connections
        part.unlink(missing_ok=True)
        raise _no_network(url, str(target), str(getattr(err, "reason", err))) from None
    os.replace(part, target)
    return target


def fetch_hub(asset_or_id: Asset | str, local_dir: Path | None = None) -> Path:
    """A hub repository into `local_dir`, or into the Hugging Face cache when `local_dir` is None."""
    repo_id = asset_or_id.hub_id if isinstance(asset_or_id, Asset) else asset_or_id
    ignore = list(asset_or_id.ignore) if isinstance(asset_or_id, Asset) else None
    target = str(local_dir) if local_dir else "the Hugging Face cache (HF_HOME)"
    if offline():
        raise _no_network(repo_id, target, "HF_HUB_OFFLINE=1 is set")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, local_dir=str(local_dir) if local_dir else None, ignore_patterns=ignore)
    except Exception as err:  # huggingface_hub wraps connection failures in several exception types
        text = f"{type(err).__name__}: {err}"
        if any(s in text.lower() for s in ("connect", "resolve", "timed out", "network", "offline", "proxy")):
            raise _no_network(repo_id, target, text.splitlines()[0]) from None
        raise NextGPTError(f"downloading {repo_id} failed: {text}") from None
    return Path(path)


def download(key: str, value: str) -> str:
    """Fetch what config key `key` = `value` points at, to where the config expects it. Returns a one-line report."""
    path = Path(value)
    if path.exists():
        return f"{key}: {value} is present"
    asset = asset_for(value)
    if asset is not None and value in asset.folders:
        if asset.url:
            return f"{key}: downloaded {asset.url} to {fetch_url(asset.url, path)}"
        if asset.hub_id:
            return f"{key}: downloaded {asset.hub_id} to {fetch_hub(asset, path)}"
        raise NextGPTError(f"{key}: {value} cannot be downloaded as is: {asset.manual}")
    if looks_like_hub_id(value):
        return f"{key}: downloaded {value} to {fetch_hub(asset or value)}"
    raise NextGPTError(f"{key}: {value} does not exist and is neither a known asset folder nor a hub id; fix the path")
