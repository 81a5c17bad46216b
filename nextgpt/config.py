"""Typed configuration: dataclasses, YAML files with `extends:`, dotted command-line overrides, strict checks.

A config file has up to four sections, `model`, `data`, `train` and `generate`, plus an optional
`extends: other.yaml` (a path relative to the file, or a list of them; later entries and the file itself
override earlier ones, dictionaries merge key by key, lists are replaced). Command-line overrides are
`section.key=value` with the value parsed as YAML (`true`, `3`, `1e-4`, `[a, b]`, `null`).

Every key is checked: an unknown key (with a did-you-mean suggestion), a value of the wrong type and a value
out of range all raise `ConfigError` naming the dotted key and the file (or "command line") that set it.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from .config_schema import (
    AudioTargetConfig,
    Config,
    DataConfig,
    ENCODER_ARCHS,
    EncoderConfig,
    GenerateConfig,
    ImageTargetConfig,
    InputProjectorConfig,
    LoraAdapterConfig,
    LossConfig,
    ModalityLossConfig,
    ModelConfig,
    OutputModalityConfig,
    OutputProjectorConfig,
    REPORTERS,
    TrainConfig,
    VideoTargetConfig,
)
from .constants import MODALITIES
from .errors import ConfigError
from .stages import stage_preset

CLI_SOURCE = "command line"

# The schema classes are re-exported: `from nextgpt.config import ModelConfig` is the public path.
__all__ = [
    "AudioTargetConfig",
    "CLI_SOURCE",
    "Config",
    "DataConfig",
    "ENCODER_ARCHS",
    "EncoderConfig",
    "GenerateConfig",
    "ImageTargetConfig",
    "InputProjectorConfig",
    "LoraAdapterConfig",
    "LossConfig",
    "ModalityLossConfig",
    "ModelConfig",
    "OutputModalityConfig",
    "OutputProjectorConfig",
    "REPORTERS",
    "TrainConfig",
    "VideoTargetConfig",
    "check_config",
    "config_from_dict",
    "load_config",
    "packaged_configs",
    "parse_override",
    "resolve_config_file",
    "type_name",
]


# ------------------------------------------------------------------------------------ load and check


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, sources: dict, source: str, prefix: str = "") -> dict:
    """Deep-merge `over` into a copy of `base`, recording which source set every leaf key."""
    out = dict(base)
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, sources, source, dotted + ".")
        else:
            out[key] = value
            _record(value, sources, source, dotted)
    return out


def _record(value: Any, sources: dict, source: str, dotted: str) -> None:
    sources[dotted] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, sources, source, f"{dotted}.{k}")


def _load_file(path: Path, sources: dict, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: `extends` cycle through {' -> '.join(str(p) for p in chain + (path,))}")
    data = _read_yaml(path)
    parents = data.pop("extends", None)
    merged: dict = {}
    if parents is not None:
        if isinstance(parents, str):
            parents = [parents]
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise ConfigError(f"{path}: `extends` must be a path or a list of paths")
        for parent in parents:
            merged = _merge(merged, _load_file(path.parent / parent, sources, chain + (path,)), sources,
                            str(path.parent / parent))
    return _merge(merged, data, sources, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", parsed value). The value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"{CLI_SOURCE}: override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{CLI_SOURCE}: override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; convert only the lossless cases (int -> float, '1e-4')."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            # NaN compares false with every bound, so a min/max check alone would let it through
            if not math.isfinite(number):
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r} ({type(value).__name__})")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    # resolving the string annotations is most of the cost of building a config (the server does it per request)
    return typing.get_type_hints(cls)


def _build(cls: type, data: dict, sources: dict, prefix: str = "") -> Any:
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        where = f"{sources.get(dotted, CLI_SOURCE)}: {dotted}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]!s}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{sources.get(dotted, CLI_SOURCE)}: unknown key {dotted!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
            kwargs[key] = _build(tp, value, sources, dotted + ".")
            continue
        value = _coerce(value, tp, where)
        meta = fields[key].metadata
        for item in value if isinstance(value, list) else [value]:
            if meta.get("choices") is not None and item not in meta["choices"]:
                raise ConfigError(f"{where}: {item!r} is not one of {list(meta['choices'])}")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if meta.get("min") is not None and item < meta["min"]:
                    raise ConfigError(f"{where}: {item!r} is below the minimum {meta['min']}")
                if meta.get("max") is not None and item > meta["max"]:
                    raise ConfigError(f"{where}: {item!r} is above the maximum {meta['max']}")
        kwargs[key] = value
    return cls(**kwargs)


def packaged_configs() -> Path:
    """The shipped `configs/` folder: inside the installed package (`nextgpt/configs`), which in a checkout is a
    link to the repository's `configs/`."""
    return Path(__file__).resolve().parent / "configs"


def resolve_config_file(path: str | Path) -> Path:
    """`path` if it exists; otherwise, for a relative `configs/...` path, the packaged copy (so that
    `nextgpt train --config configs/stage_1.yaml` works from any folder after `pip install`)."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] != "configs":
        return path
    packaged = packaged_configs().joinpath(*path.parts[1:])
    return packaged if packaged.exists() else path


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (following `extends:`), apply dotted overrides, validate, return a `Config`.

    `data.catalog_files` named in a file are resolved against that file's folder (on the command line: against
    the working directory)."""
    sources: dict[str, str] = {}
    data = _load_file(resolve_config_file(path), sources) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        data = _merge(data, _nest(key, value), sources, CLI_SOURCE)
    config = _build(Config, data, sources)
    source = sources.get("data.catalog_files", CLI_SOURCE)
    base = Path(source).parent if source != CLI_SOURCE else Path()
    config.data.catalog_files = [str(p if Path(p).is_absolute() else base / p) for p in config.data.catalog_files]
    check_config(config)
    return config


def config_from_dict(data: dict, source: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a plain dictionary (e.g. the resolved config saved in a checkpoint), then apply dotted
    `overrides` (`model.llm=/new/place`)."""
    sources: dict[str, str] = {}
    for key, value in data.items():
        _record(value, sources, source, key)
    for text in overrides:
        key, value = parse_override(text)
        data = _merge(data, _nest(key, value), sources, CLI_SOURCE)
    config = _build(Config, data, sources)
    check_config(config)
    return config


def check_config(config: Config) -> None:
    """Cross-field checks that a single key's type/range cannot express."""
    if config.train.offload_optimizer and config.train.zero_stage == 0:
        raise ConfigError("train.offload_optimizer needs ZeRO stage 1-3, but train.zero_stage is 0")
    enc = config.model.encoder
    if enc.arch not in ENCODER_ARCHS[enc.kind]:
        raise ConfigError(f"model.encoder.arch={enc.arch!r} is not a {enc.kind} architecture; expected one of "
                          f"{list(ENCODER_ARCHS[enc.kind])}")
    if enc.kind == "blip2" and enc.output != "tokens":
        raise ConfigError("model.encoder.output must be tokens for the blip2 encoder (its Q-Former's query outputs)")
    stage_preset(config.train.stage, config.train.recipe)
    if config.train.eval_every and not config.data.eval_datasets:
        raise ConfigError("train.eval_every is set but data.eval_datasets is empty: name the held-out datasets")
    if config.train.keep_best is not None:
        known = ["total", "text"] + [f"{m}_{k}" for m in MODALITIES for k in ("caption", "denoise")]
        if config.train.keep_best not in known:
            raise ConfigError(f"train.keep_best: {config.train.keep_best!r} is not one of {known}")
        if not config.train.eval_every:
            raise ConfigError("train.keep_best needs validation: set train.eval_every and data.eval_datasets")
