"""Parameters per module (`nextgpt summary --config C [--json]`), computed without weights.

Every module is built on PyTorch's META device from the config alone (no weights are read or allocated), with the
same builders the real model uses: ImageBind (huge, or the sizes stored in its .safetensors checkpoint's header) or
BLIP-2 (eva-vit-g, or the config.json of its transformers folder),
the input projector and the three output projectors (with `input_projector_options` / `output_projector_options`),
the LLaMA from `model.llm`'s config.json when that directory exists, else from the named architecture
`model.llm_arch`, and the LoRA adapter through peft on the meta LLaMA when the config's stage trains LoRA.
"trainable" follows the stage table of `nextgpt/stages.py`.

The rows partition the reference architecture exactly:
  encoder                 ImageBind, all modality branches, or BLIP-2's vision model + Q-Former + queries (frozen)
  input_projector         linear / mlp / group / qformer
  llm                     LLaMA with its BASE vocabulary (frozen; with model.train_full_embeddings its input
                          embedding and LM head train: those are its trainable parameters)
  lora                    LoRA A/B matrices (0 when the stage trains no LoRA)
  signal_rows             registered tokens x hidden x 2 (their embedding rows and LM-head rows); llm + signal_rows
                          = the reference's resized LLaMA (vocab 32000 + 36 NEW, + 38 LEGACY)
  output_projector.<m>    image / video / audio
Our in-memory model also keeps stale copies of the signal rows inside the frozen, resized base matrices (the rows
that train live in separate parameters, see `SignalTokenEmbedding`); those copies are not counted here.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import Config, LoraAdapterConfig, ModelConfig
from ..constants import MODALITIES
from ..conversation import tokens_to_register
from ..errors import CheckpointError, ConfigError
from ..stages import stage_preset
from .language_model import peft_lora_config
from .multimodal_encoder.factory import describe as describe_encoder

logger = logging.getLogger(__name__)

# Named LLaMA architectures for configs whose `model.llm` is not on disk (summary, planning).
# vicuna-7b: LLaMA-7B shapes, shared by Vicuna-7B v0 (LLaMA-1) and v1.5 (LLaMA-2); base vocabulary 32000, untied.
LLM_ARCHS: dict[str, dict[str, Any]] = {
    "vicuna-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
}

ROWS = ("encoder", "input_projector", "llm", "lora", "signal_rows",
        "output_projector.image", "output_projector.video", "output_projector.audio")


@dataclass
class ModuleCount:
    params: int
    trainable: int


# ------------------------------------------------------------------------------------------ meta builders


def llm_config(config: ModelConfig):
    """The LlamaConfig of the configured LLM: `model.llm`'s config.json when it is a local directory, else the
    named `model.llm_arch`. Raises ConfigError when neither is available."""
    from transformers import LlamaConfig

    if config.llm and (Path(config.llm) / "config.json").is_file():
        try:
            return LlamaConfig.from_pretrained(config.llm)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{config.llm}/config.json: cannot read the LLM config: {exc}") from None
    if config.llm_arch is None:
        raise ConfigError(f"model.llm ({config.llm!r}) is not a local directory with a config.json and "
                          f"model.llm_arch is not set; set model.llm_arch to one of {sorted(LLM_ARCHS)}")
    return LlamaConfig(**LLM_ARCHS[config.llm_arch])


def llm_source(config: ModelConfig) -> str:
    """Where `llm_config` takes the LLM's shapes from (for messages)."""
    if config.llm and (Path(config.llm) / "config.json").is_file():
        return f"{config.llm}/config.json"
    return f"llm_arch {config.llm_arch}"


def meta_llm(llm_cfg) -> nn.Module:
    """transformers' LlamaForCausalLM on the meta device."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(llm_cfg)


def attach_meta_lora(llm: nn.Module, lora: LoraAdapterConfig) -> nn.Module:
    """Wrap a (meta) LLaMA with peft LoRA exactly as `NextGPTModel.enable_lora` does; returns the PeftModel."""
    from peft import get_peft_model

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(llm, peft_lora_config(lora))


def meta_encoder(config: ModelConfig) -> nn.Module:
    """The configured encoder (ImageBind or BLIP-2) on the meta device."""
    from .multimodal_encoder.factory import meta_encoder as build

    return build(config.encoder)


def build_projectors(config: ModelConfig, encoder_dim: int, hidden: int, device: str = "cpu"
                     ) -> tuple[nn.Module, dict[str, nn.Module]]:
    """`nextgpt.model.modeling.build_projectors` on `device` (`"meta"` allocates nothing), quietly."""
    from .modeling import build_projectors as build

    with torch.device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(config, encoder_dim, hidden)


def encoder_width(config: ModelConfig) -> int:
    """Width of the encoder's features (ImageBind out_embed_dim, BLIP-2's Q-Former width) without building it."""
    from .multimodal_encoder.factory import encoder_width as width

    return width(config.encoder)


def num_signal_rows(config: ModelConfig) -> int:
    """Rows the model registers (and trains): NEW 36 signal tokens; LEGACY also `<Img>`, `</Img>` (38)."""
    counts = {m: config.output(m).signal_tokens for m in MODALITIES}
    return len(tokens_to_register(config.signal_layout, counts))


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ the summary


def summarize(config: Config) -> dict[str, ModuleCount]:
    """Parameters per module and how many train in `config.train.stage`, plus "total"; nothing is allocated."""
    model = config.model
    # the same rule as check_model_config (which also insists on model.llm, not needed here)
    if model.encoder.output == "pooled" and model.input_projector.kind not in ("linear", "mlp"):
        raise ConfigError(f"model.encoder.output=pooled gives one vector per item; model.input_projector.kind must "
                          f"be linear or mlp, not {model.input_projector.kind!r}")
    trains = set(stage_preset(config.train.stage, config.train.recipe).groups(model.train_full_embeddings))
    llm_cfg = llm_config(model)
    if getattr(llm_cfg, "tie_word_embeddings", False):
        raise ConfigError(f"{llm_source(model)}: tied input/output embeddings are not supported")
    hidden = llm_cfg.hidden_size

    counts: dict[str, int] = {"encoder": _numel(meta_encoder(model))}
    inp, out = build_projectors(model, encoder_width(model), hidden, device="meta")
    counts["input_projector"] = _numel(inp)
    llm = meta_llm(llm_cfg)
    counts["llm"] = _numel(llm)
    counts["lora"] = 0
    if "lora" in trains:
        lora = model.lora
        peft_llm = attach_meta_lora(llm, lora)
        counts["lora"] = sum(p.numel() for n, p in peft_llm.named_parameters() if "lora_" in n)
    counts["signal_rows"] = num_signal_rows(model) * hidden * 2
    for m in MODALITIES:
        counts[f"output_projector.{m}"] = _numel(out[m])

    result: dict[str, ModuleCount] = {}
    for name in ROWS:
        trainable = counts[name] if name in trains else 0
        result[name] = ModuleCount(counts[name], trainable)
    if "embeddings" in trains:  # the base-vocabulary rows of the input embedding and the LM head
        result["llm"].trainable = 2 * llm_cfg.vocab_size * hidden
    result["total"] = ModuleCount(sum(c.params for c in result.values()),
                                  sum(c.trainable for c in result.values()))
    return result


def _human(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} K"
    return str(n)


def format_table(summary: dict[str, ModuleCount], config: Config, source: str = "") -> str:
    """A readable table of `summarize`'s result."""
    model = config.model
    head = [
        f"{'MiniGPT-4' if config.train.recipe == 'minigpt4' else 'NExT-GPT'} parameters"
        f"{f' ({source})' if source else ''}: stage {config.train.stage}, "
        f"layout {model.signal_layout}"
        + (", whole input embedding and LM head train (model.train_full_embeddings)"
           if model.train_full_embeddings else ""),
        f"  LLM from {llm_source(model)}; {describe_encoder(model.encoder)}; "
        f"input projector {model.input_projector.kind}; LoRA "
        + (f"r{model.lora.r} alpha {model.lora.alpha} on {', '.join(model.lora.target_modules)}"
           if "lora" in stage_preset(config.train.stage, config.train.recipe).groups() else "off in this stage"),
        "",
        f"{'module':<26}{'params':>17}{'':>10}{'trainable':>17}{'':>10}",
    ]
    rows = []
    for name, c in summary.items():
        if name == "total":
            rows.append("-" * 80)
        rows.append(f"{name:<26}{c.params:>17,}{_human(c.params):>10}{c.trainable:>17,}{_human(c.trainable):>10}")
    return "\n".join(head + rows)
