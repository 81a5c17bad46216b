"""Optimizer parameter groups, the learning-rate schedule and the DeepSpeed config of a run."""
from __future__ import annotations

import json
import math
from typing import Any

import torch

from ..config import Config, resolve_config_file
from ..errors import ConfigError


def group_learning_rates(config: Config) -> dict[str, float]:
    """Learning rate of each parameter group. A fix (docs/deviations.md): the output projectors use
    `output_projector_lr` (the reference gave them `input_projector_lr`, and only when that was set)."""
    t = config.train
    out_lr = t.output_projector_lr if t.output_projector_lr is not None else t.lr
    lrs = {"lora": t.lr, "input_projector": t.input_projector_lr if t.input_projector_lr is not None else t.lr,
           "signal_rows": t.signal_tokens_lr if t.signal_tokens_lr is not None else t.lr, "embeddings": t.lr}
    lrs.update({f"output_projector.{m}": out_lr for m in ("image", "video", "audio")})
    return lrs


def _decays(name: str, param: torch.nn.Parameter, config: Config) -> bool:
    """Weight decay on matrices, not on biases or normalisation weights (HF Trainer's rule, NEW); on every
    trainable parameter with `train.optimizer_setup: deepspeed` (the LEGACY DeepSpeed optimizer's rule)."""
    if config.train.optimizer_setup == "deepspeed":
        return True
    return param.ndim >= 2 and "norm" not in name.lower()


def parameter_groups(model, trainable: dict[str, list[torch.nn.Parameter]], config: Config) -> list[dict]:
    """Optimizer groups: one per (group, decay / no decay), each named and with its own learning rate."""
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = group_learning_rates(config)
    groups = []
    for group, params in trainable.items():
        for decay in (True, False):
            chosen = [p for p in params if _decays(names.get(id(p), ""), p, config) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lrs[group], "name": group + ("" if decay else ".no_decay"),
                               "weight_decay": config.train.weight_decay if decay else 0.0})
    if not groups:
        raise ConfigError(f"stage {config.train.stage} has no trainable parameters")
    return groups


def warmup_steps(config: Config, total_steps: int) -> int:
    """HF Trainer rounds the warmup up (NEW); the LEGACY agent takes `int(total × warmup_rate)`."""
    t = config.train
    steps = t.warmup_ratio * total_steps
    return max(t.min_warmup_steps, int(steps) if t.optimizer_setup == "deepspeed" else math.ceil(steps))


def lr_lambda(config: Config, total_steps: int):
    """Linear warmup from 0, then cosine (HF's), linear (DeepSpeed's WarmupDecayLR) or constant to the end; the
    decay ends at `min_lr_ratio` of the rate (0 by default, MiniGPT-4's min_lr / init_lr in its configs)."""
    warm = warmup_steps(config, total_steps)
    kind = config.train.scheduler
    floor = config.train.min_lr_ratio

    def factor(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if kind == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * (1.0 - progress)

    return factor


def offloads_optimizer(ds_config: dict[str, Any]) -> bool:
    offload = ds_config.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") == "cpu"


def build_optimizer(groups: list[dict], config: Config, ds_config: dict[str, Any]) -> torch.optim.Optimizer:
    t = config.train
    kwargs = dict(betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps)
    if offloads_optimizer(ds_config):  # ZeRO-Offload runs the optimizer on the CPU with DeepSpeed's own Adam
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def deepspeed_config(config: Config, world_size: int) -> dict[str, Any]:
    """The run's DeepSpeed config: the JSON file of `train.deepspeed` with batch sizes, precision, clipping,
    ZeRO stage and offload filled in from the YAML config (which wins over the file)."""
    t = config.train
    path = resolve_config_file(t.deepspeed)
    try:
        ds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"train.deepspeed: cannot read {path}: {exc}") from None
    ds["train_micro_batch_size_per_gpu"] = t.micro_batch_size
    ds["gradient_accumulation_steps"] = t.gradient_accumulation_steps
    ds["train_batch_size"] = t.micro_batch_size * t.gradient_accumulation_steps * world_size
    ds["gradient_clipping"] = t.max_grad_norm
    ds.pop("optimizer", None)  # the client optimizer (our parameter groups) is used
    ds.pop("scheduler", None)
    fp16 = ds.setdefault("fp16", {})
    bf16 = ds.setdefault("bf16", {})
    fp16["enabled"] = t.precision == "fp16"
    bf16["enabled"] = t.precision == "bf16"
    for section in (fp16, bf16):
        for key, value in list(section.items()):
            if value == "auto":
                section.pop(key)
    zero = ds.setdefault("zero_optimization", {})
    if t.zero_stage is not None:
        zero["stage"] = t.zero_stage
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if "offload_optimizer" in zero:
        zero["offload_optimizer"]["pin_memory"] = torch.cuda.is_available()
    if "offload_param" in zero:
        zero["offload_param"]["pin_memory"] = torch.cuda.is_available()
    for key, value in list(zero.items()):
        if value == "auto":
            zero.pop(key)
    ds.setdefault("steps_per_print", 10**9)
    ds.setdefault("wall_clock_breakdown", False)
    return ds
