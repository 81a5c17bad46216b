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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .conversation import TEMPLATES
from .errors import ConfigError

CLI_SOURCE = "command line"


def _opt(default: Any = dataclasses.MISSING, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, help: str = "", factory: Any = None):
    """A dataclass field with validation metadata (choices / numeric range) and a one-line description."""
    meta = {"choices": choices, "min": min, "max": max, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------- model


@dataclass
class EncoderConfig:
    arch: str = _opt("huge", choices=("huge", "checkpoint"),
                     help="ImageBind architecture: huge, or checkpoint (the sizes stored in the .safetensors file)")
    checkpoint: Optional[str] = _opt(None, help="imagebind_huge.pth or a .safetensors file; null = random init")
    output: str = _opt("tokens", choices=("tokens", "pooled"),
                       help="tokens: every patch token (NEW); pooled: one CLS vector per item (LEGACY)")


@dataclass
class InputProjectorConfig:
    kind: str = _opt("group", choices=("linear", "mlp", "group", "qformer"))
    num_query_tokens: int = _opt(32, min=1, help="qformer only: number of learned queries = LLM tokens per item")
    # group only (GroupProjector; the reference's values, not exposed by its CLI):
    width: int = _opt(512, min=1, help="group: working width (embed_dim)")
    depths: list[int] = _opt(factory=lambda: [6, 3, 3], min=1)
    num_heads: list[int] = _opt(factory=lambda: [8, 8, 8], min=1)
    num_group_tokens: list[int] = _opt(factory=lambda: [64, 8, 0], min=0)
    num_output_groups: list[int] = _opt(factory=lambda: [64, 8], min=1, help="the last = LLM tokens per item")


@dataclass
class OutputProjectorConfig:
    """Sizes of the `transformer` output projectors (shared by the three modalities; the reference's values)."""

    hidden_dim: int = _opt(512, min=1)
    num_heads: int = _opt(4, min=1)
    encoder_layers: int = _opt(4, min=1)
    decoder_layers: int = _opt(4, min=1)
    dim_feedforward: int = _opt(2048, min=1)


@dataclass
class OutputModalityConfig:
    """Everything on the output side of one modality: its signal tokens, projector and decoder."""

    signal_tokens: int = _opt(4, min=1, max=99, help="number of signal tokens n (span 2n-1 NEW, n LEGACY)")
    decoder: Optional[str] = _opt(None, help="diffusers pipeline directory (or hub id); null = no decoder")
    projector: str = _opt("transformer", choices=("transformer", "linear", "qformer"))
    num_query_tokens: int = _opt(77, min=1, help="decoder conditioning length Q")
    out_features: int = _opt(1024, min=1, help="decoder conditioning width D")


def _image_out() -> OutputModalityConfig:
    return OutputModalityConfig(signal_tokens=4, num_query_tokens=77, out_features=1024)


def _video_out() -> OutputModalityConfig:
    return OutputModalityConfig(signal_tokens=24, num_query_tokens=77, out_features=1024)


def _audio_out() -> OutputModalityConfig:
    return OutputModalityConfig(signal_tokens=8, num_query_tokens=1, out_features=512)


@dataclass
class LoraAdapterConfig:
    r: int = _opt(128, min=1)
    alpha: int = _opt(256, min=1)
    dropout: float = _opt(0.05, min=0.0, max=1.0)
    bias: str = _opt("none", choices=("none", "all", "lora_only"))
    target_modules: list[str] = _opt(factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"])


@dataclass
class ModelConfig:
    llm: str = _opt("", help="LLaMA/Vicuna directory (or hub id) with its tokenizer")
    llm_arch: Optional[str] = _opt(None, choices=(None, "vicuna-7b"),
                                   help="named architecture for `summary` when `llm` is not on disk")
    template: str = _opt("v1", choices=tuple(TEMPLATES), help="conversation template (nextgpt/conversation.py)")
    max_length: int = _opt(2048, min=8, help="model_max_length: longest spliced sequence")
    signal_layout: str = _opt("new", choices=("new", "legacy"))
    layer_idx: int = _opt(-1, help="hidden-state layer fed to the output projectors (-1 = final norm)")
    encoder: EncoderConfig = _opt(factory=EncoderConfig)
    input_projector: InputProjectorConfig = _opt(factory=InputProjectorConfig)
    output_projector: OutputProjectorConfig = _opt(factory=OutputProjectorConfig)
    image: OutputModalityConfig = _opt(factory=_image_out)
    video: OutputModalityConfig = _opt(factory=_video_out)
    audio: OutputModalityConfig = _opt(factory=_audio_out)
    lora: LoraAdapterConfig = _opt(factory=LoraAdapterConfig)

    def output(self, modality: str) -> OutputModalityConfig:
        return getattr(self, modality)


# ---------------------------------------------------------------------------------------------- data


@dataclass
class ImageTargetConfig:
    height: int = _opt(224, min=8)
    width: int = _opt(224, min=8)
    resize_mode: str = _opt("crop", choices=("crop", "fill", "default"))


@dataclass
class VideoTargetConfig:
    height: int = _opt(320, min=8)
    width: int = _opt(576, min=8)
    sample_fps: float = _opt(1.0, min=0.01)
    max_frames: int = _opt(16, min=1)


@dataclass
class AudioTargetConfig:
    sampling_rate: int = _opt(16000, min=1000)
    duration: float = _opt(10.4, min=0.1, help="seconds; 10.4 s -> 1040 mel frames")
    n_mel_channels: int = _opt(64, min=1)
    mel_fmin: float = _opt(0.0, min=0.0)
    mel_fmax: float = _opt(8000.0, min=1.0)


@dataclass
class DataConfig:
    root: str = _opt("data", help="data root; catalog paths are relative to it")
    datasets: list[str] = _opt(factory=list, help="catalog names (nextgpt/dataset/catalog.py)")
    embed_dir: Optional[str] = _opt(None, help="override every dataset's caption-embedding folder")
    caption_embeddings: str = _opt("cache", choices=("cache", "online"),
                                   help="cache: read .npy files; online: encode captions with the decoder")
    strict: bool = _opt(False, help="true: a missing/undecodable media file is an error instead of a skip")
    image_aspect_ratio: str = _opt("pad", choices=("pad", "square"))
    max_media_per_sample: int = _opt(8, min=1)
    group_by_modality_length: bool = _opt(True)
    num_workers: int = _opt(4, min=0)
    feature_cache: Optional[str] = _opt(None, help="encoder feature cache folder (preprocess_features.py): read "
                                        "features instead of decoding media and running the encoder")
    shuffle_buffer: int = _opt(1000, min=1, help="WebDataset shards: samples held for shuffling, per stream")
    image_target: ImageTargetConfig = _opt(factory=ImageTargetConfig)
    video_target: VideoTargetConfig = _opt(factory=VideoTargetConfig)
    audio_target: AudioTargetConfig = _opt(factory=AudioTargetConfig)


# --------------------------------------------------------------------------------------------- train


@dataclass
class ModalityLossConfig:
    caption_weight: float = _opt(1.0, min=0.0)
    denoise_weight: float = _opt(1.0, min=0.0, help="0 turns the latent-denoising loss off")
    min_snr_gamma: Optional[float] = _opt(None, min=0.0, help="Min-SNR weighting; null = plain MSE")


@dataclass
class LossConfig:
    text_weight: float = _opt(1.0, min=0.0)
    image: ModalityLossConfig = _opt(factory=lambda: ModalityLossConfig(min_snr_gamma=5.0))
    video: ModalityLossConfig = _opt(factory=ModalityLossConfig)
    audio: ModalityLossConfig = _opt(factory=ModalityLossConfig)


@dataclass
class TrainConfig:
    stage: int = _opt(1, min=1, max=3, help="1 encoder alignment, 2 decoder alignment, 3 instruction tuning")
    output_dir: str = _opt("checkpoints/stage_1")
    init_from: Optional[str] = _opt(None, help="previous stage's output directory")
    resume: str = _opt("auto", help="auto (latest complete checkpoint if any), never, or a checkpoint path")
    deepspeed: str = _opt("configs/deepspeed/zero2.json")
    zero_stage: Optional[int] = _opt(None, choices=(None, 0, 1, 2, 3), help="override the JSON's ZeRO stage")
    offload_optimizer: bool = _opt(False)
    precision: str = _opt("bf16", choices=("bf16", "fp16", "fp32"))
    epochs: float = _opt(1.0, min=0.0)
    max_steps: int = _opt(-1, min=-1, help="optimizer steps; -1 = from epochs")
    micro_batch_size: int = _opt(4, min=1, help="per-device batch")
    gradient_accumulation_steps: int = _opt(1, min=1)
    lr: float = _opt(1e-3, min=0.0, help="learning rate of LoRA and of anything without its own rate")
    input_projector_lr: Optional[float] = _opt(None, min=0.0)
    output_projector_lr: Optional[float] = _opt(None, min=0.0)
    signal_tokens_lr: Optional[float] = _opt(None, min=0.0)
    weight_decay: float = _opt(0.0, min=0.0)
    adam_beta1: float = _opt(0.9, min=0.0, max=1.0)
    adam_beta2: float = _opt(0.999, min=0.0, max=1.0)
    adam_eps: float = _opt(1e-8, min=0.0)
    scheduler: str = _opt("cosine", choices=("cosine", "linear", "constant"))
    warmup_ratio: float = _opt(0.03, min=0.0, max=1.0)
    min_warmup_steps: int = _opt(0, min=0, help="LEGACY: max(10, 10% of steps)")
    max_grad_norm: float = _opt(1.0, min=0.0, help="0 disables clipping")
    gradient_checkpointing: bool = _opt(True)
    save_steps: int = _opt(1000, min=1)
    save_total_limit: int = _opt(1, min=1)
    logging_steps: int = _opt(1, min=1)
    log_sample_ids: bool = _opt(False, help="append every step's sample ids to OUTPUT_DIR/samples-rank-N.jsonl")
    seed: int = _opt(42)
    losses: LossConfig = _opt(factory=LossConfig)


# ------------------------------------------------------------------------------------------ generate


@dataclass
class GenerateConfig:
    max_new_tokens: int = _opt(512, min=1)
    temperature: float = _opt(0.2, min=0.0)
    top_p: float = _opt(1.0, min=0.0, max=1.0)
    top_k: int = _opt(1, min=0, help="1 = greedy (the reference's default); 0 = no top-k filter")
    max_outputs_per_modality: int = _opt(5, min=0)
    seed: int = _opt(0)
    image_guidance_scale: float = _opt(7.5, min=0.0)
    image_steps: int = _opt(50, min=1)
    image_height: Optional[int] = _opt(None, min=8, help="null = the decoder's default size")
    image_width: Optional[int] = _opt(None, min=8)
    video_guidance_scale: float = _opt(7.5, min=0.0)
    video_steps: int = _opt(50, min=1)
    video_height: int = _opt(320, min=8)
    video_width: int = _opt(576, min=8)
    video_frames: int = _opt(16, min=1)
    video_fps: int = _opt(10, min=1, help="frame rate of the written MP4")
    audio_guidance_scale: float = _opt(7.5, min=0.0)
    audio_steps: int = _opt(50, min=1)
    audio_length_s: float = _opt(5.0, min=0.1)


@dataclass
class Config:
    model: ModelConfig = _opt(factory=ModelConfig)
    data: DataConfig = _opt(factory=DataConfig)
    train: TrainConfig = _opt(factory=TrainConfig)
    generate: GenerateConfig = _opt(factory=GenerateConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, width=110)


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


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
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
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, data: dict, sources: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
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
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ConfigError(f"{where}: {value!r} is not one of {list(meta['choices'])}")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if meta.get("min") is not None and item < meta["min"]:
                    raise ConfigError(f"{where}: {item!r} is below the minimum {meta['min']}")
                if meta.get("max") is not None and item > meta["max"]:
                    raise ConfigError(f"{where}: {item!r} is above the maximum {meta['max']}")
        kwargs[key] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (following `extends:`), apply dotted overrides, validate, return a `Config`."""
    sources: dict[str, str] = {}
    data = _load_file(Path(path), sources) if path is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        data = _merge(data, _nest(key, value), sources, CLI_SOURCE)
    config = _build(Config, data, sources)
    check_config(config)
    return config


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    """Validate a plain dictionary (e.g. the resolved config saved in a checkpoint)."""
    sources: dict[str, str] = {}
    for key, value in data.items():
        _record(value, sources, source, key)
    config = _build(Config, data, sources)
    check_config(config)
    return config


def check_config(config: Config) -> None:
    """Cross-field checks that a single key's type/range cannot express."""
    if config.train.offload_optimizer and config.train.zero_stage == 0:
        raise ConfigError("train.offload_optimizer needs ZeRO stage 1-3, but train.zero_stage is 0")
