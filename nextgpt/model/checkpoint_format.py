"""The trained-checkpoint format: one writer, one strict key check, config reading with path handling.

A checkpoint directory (what training, the reference-checkpoint converter and the LoRA merge write; what
`NextGPTModel.from_pretrained`, predict.py and the merge read):

    model.safetensors   trained tensors: input_projector.*, output_projectors.{image,video,audio}.*, and
                        signal_rows.embed, signal_rows.lm_head (the registered tokens' rows, in id order) or, when
                        model.train_full_embeddings, embeddings.embed, embeddings.lm_head (the whole matrices);
                        metadata: format tag, signal-token strings
    adapter/            the LoRA adapter in peft's format (adapter_config.json, adapter_model.safetensors)
    config.yaml         the resolved config, model paths as they were given (relative paths or hub ids), so a
                        checkpoint copied to another machine loads there with `model.*=` overrides for its new paths
    tokenizer files     the tokenizer with the signal tokens registered

Frozen parts (LLM base, ImageBind, decoders) are referenced by path, never copied.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import yaml

from ..config import Config, config_from_dict
from ..errors import CheckpointError

if TYPE_CHECKING:  # torch is imported where tensors are written, so that reading a config stays light
    import torch

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_TAG = "nextgpt-trained-weights"
SIGNAL_EMBED_KEY, SIGNAL_HEAD_KEY = "signal_rows.embed", "signal_rows.lm_head"
FULL_EMBED_KEY, FULL_HEAD_KEY = "embeddings.embed", "embeddings.lm_head"

#: The config keys under `model` that hold paths (or hub ids) of frozen parts.
_PATH_KEYS = (("llm",), ("encoder", "checkpoint"), ("image", "decoder"), ("video", "decoder"),
              ("audio", "decoder"))


def _get(obj: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        obj = getattr(obj, k)
    return obj


def _set(obj: Any, keys: tuple[str, ...], value: Any) -> None:
    for k in keys[:-1]:
        obj = getattr(obj, k)
    setattr(obj, keys[-1], value)


def resolve_model_paths(config: Config, checkpoint_dir: str | Path) -> Config:
    """Relative model paths that exist inside `checkpoint_dir` (e.g. a merged checkpoint's `llm`) made absolute, in
    place; other relative paths stay relative to the working directory, hub ids stay hub ids."""
    for keys in _PATH_KEYS:
        value = _get(config.model, keys)
        if value and not Path(value).is_absolute() and (Path(checkpoint_dir) / value).exists():
            _set(config.model, keys, str((Path(checkpoint_dir) / value).resolve()))
    return config


def read_checkpoint_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """The config saved in a checkpoint directory, with dotted `overrides` applied (`model.llm=/new/place` for a
    checkpoint whose frozen parts live elsewhere on this machine); relative model paths resolve against that
    directory first."""
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_NAME}; is this a NExT-GPT checkpoint directory?")
    overrides = list(overrides)
    bad = [o for o in overrides if not o.startswith(("model.", "generate."))]
    if bad:
        raise CheckpointError(f"checkpoint overrides must be model.* or generate.* keys, got {bad}")
    config = config_from_dict(yaml.safe_load(cfg_file.read_text()) or {}, str(cfg_file), overrides)
    return resolve_model_paths(config, path)


def check_state_dict(expected: dict[str, Any], found: dict[str, Any], source: str) -> None:
    """Strict loading, the one rule every loader uses: every expected key found, every found key expected, shapes
    equal. Values are tensors or shapes. Raises CheckpointError listing them (full lists in `.missing`,
    `.unexpected`, `.misshaped`)."""
    def shape(v: Any) -> tuple[int, ...]:
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(f"{k}: expected {shape(expected[k])}, found {shape(found[k])}"
                       for k in set(expected) & set(found) if shape(expected[k]) != shape(found[k]))
    if missing or unexpected or misshaped:
        lines = [f"{source} does not match the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = items[:20] + ([f"… and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title} keys ({len(items)}): " + ", ".join(shown))
        error = CheckpointError("\n".join(lines))
        error.missing, error.unexpected, error.misshaped = missing, unexpected, misshaped
        raise error


def write_trained_checkpoint(outdir: str | Path, config: Config, state: dict[str, torch.Tensor], tokenizer,
                             signal_tokens: list[str], *, adapter: tuple[Any, dict[str, torch.Tensor]] | None = None,
                             metadata: dict[str, str] | None = None,
                             model_overrides: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory (layout in the module docstring); returns `outdir`.

    `adapter`: (peft LoraConfig, adapter tensors in peft's saved key format), or None for no adapter (a stale
    `adapter/` left in `outdir` is removed: `from_pretrained` would attach it). `metadata`: extra safetensors
    metadata (e.g. where the weights came from). `model_overrides`: `model.*` values written into the saved
    config after the paths were made absolute (e.g. `{"llm": "llm"}` for a merged LLM inside the directory).
    """
    outdir = Path(outdir)
    tmp = outdir.parent / f".tmp-{outdir.name}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _write_checkpoint_files(tmp, config, state, tokenizer, signal_tokens, adapter, metadata, model_overrides)
        if adapter is None and (outdir / ADAPTER_DIR).exists():
            shutil.rmtree(outdir / ADAPTER_DIR)  # a stale adapter: from_pretrained would attach it
        replace_files(tmp, outdir)
    except OSError as err:  # disk full, permissions: nothing of `outdir` has been replaced yet
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write the checkpoint {outdir}: {err}; what was there before is unchanged"
                              ) from err
    return outdir


def replace_files(src: Path, dst: Path) -> None:
    """Move every entry of the fully written folder `src` into `dst`, each with an atomic rename (sub-folders
    replaced whole), then remove `src`. Renames need no space, so a full disk cannot interrupt this half-way."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dst / item.name
        if item.is_dir() and target.exists():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(src, ignore_errors=True)


def _write_checkpoint_files(outdir: Path, config: Config, state: dict[str, torch.Tensor], tokenizer,
                            signal_tokens: list[str], adapter, metadata, model_overrides) -> None:
    from safetensors.torch import save_file

    outdir.mkdir(parents=True)
    meta = {"format": FORMAT_TAG, "signal_tokens": json.dumps(list(signal_tokens)), **(metadata or {})}
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(outdir / WEIGHTS_NAME), metadata=meta)
    adapter_dir = outdir / ADAPTER_DIR
    if adapter is not None:
        peft_config, adapter_state = adapter
        peft_config = copy.deepcopy(peft_config)
        peft_config.inference_mode = True
        adapter_dir.mkdir()
        peft_config.save_pretrained(str(adapter_dir))
        save_file({k: v.detach().contiguous() for k, v in adapter_state.items()},
                  str(adapter_dir / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    saved = config_from_dict(config.to_dict(), "resolved config")  # a copy
    for key, value in (model_overrides or {}).items():
        setattr(saved.model, key, value)
    (outdir / CONFIG_NAME).write_text(saved.to_yaml())
    tokenizer.save_pretrained(str(outdir))
