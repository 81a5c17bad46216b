"""Import reference NExT-GPT checkpoints into our checkpoint directory format.

    python -m nextgpt.model.convert --format new|legacy --src PATH [--src PATH ...] --config CONFIG.yaml \
        --output OUT_DIR [--allow-unmatched] [--dtype keep|float32|bfloat16|float16] [--source-tokenizer DIR] \
        [--overwrite] [--verify] [section.key=value ...]

The output is what `NextGPTModel.save_pretrained` writes and `NextGPTModel.from_pretrained` / `predict.py` load:
`config.yaml` (the given config, resolved, with `model.lora` set from the imported adapter), `model.safetensors`
(`input_projector.*`, `output_projectors.{image,video,audio}.*`, `signal_rows.embed`, `signal_rows.lm_head`),
`adapter/` (peft LoRA adapter) when the source has LoRA weights, the tokenizer with the signal tokens registered,
and `conversion.json` (what was mapped, dropped, left over, initialised).

Sources (spec §10):
* NEW (`--format new`): directories or files of the reference's training outputs, in the order given (a later
  tensor replaces an earlier one; inside a directory: the peft adapter `adapter_config.json` +
  `adapter_model.safetensors|.bin`, then `mm_input_projector.bin`, `mm_output_projector.bin`,
  `non_lora_trainables.bin`).
  Keys `model.mm_input_projector.*`, `model.mm_output_{img,vid,aud}_projector.*`, `model.embed_tokens.weight`,
  `lm_head.weight`, optionally under the peft prefix `base_model.model.` (non_lora_trainables.bin).
* LEGACY (`--format legacy`): `7b_tiva_v0/pytorch_model.pt` (or its directory): `llama_proj.*` -> the linear input
  projector, `gen_text_hidden_fcs{,_video,_audio}.0.*` -> the output projectors (`legacy_textfc_key_map`), LoRA
  `llama_model.base_model.model.….lora_{A,B}.default.weight` -> the peft adapter (r from the tensor shapes, alpha /
  dropout / bias from the config, targets from the keys), embedding / LM-head matrices if present.

Signal-token rows: the reference trains (NEW) the WHOLE embedding and LM-head matrices (§12.34); only the rows of
the registered signal tokens are imported (the drift of the other rows is reported). Row ids are looked up by token
string in the source's tokenizer when one is found next to the source (or given with --source-tokenizer), else
the ids of our registration are used and the matrix must have exactly len(tokenizer) rows. Rows the source does
not have (LEGACY never trained nor saved them, §12.47) start at the mean of the base LLM's rows, our rule (§2.1),
and are reported.

What a conversion needs: the base LLM directory `model.llm` (its tokenizer and config.json; its weight files too
when signal rows must be mean-initialised — only the two matrices are read). The encoder and decoders are not read.

Strictness: every source key is mapped, dropped for a stated reason (a buffer with no counterpart), or reported
as left over. Missing tensors of the groups trained up to the config's stage (input projector from stage 1, output
projectors from stage 2, LoRA in stage 3), unexpected / left-over keys and mis-shaped tensors raise
CheckpointError naming them, unless `allow_unmatched` (CLI `--allow-unmatched`), which still reports them and fills
the holes with a fresh initialisation. Groups not trained by the stage and absent from the source are freshly
initialised (as our own training would have left them) and reported.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config, LoraAdapterConfig, load_config
from ..constants import MODALITIES
from ..errors import CheckpointError, ConfigError, NextGPTError
from ..stages import STAGE_PRESETS
from .language_model import load_tokenizer, register_signal_tokens
from .multimodal_projector import legacy_textfc_key_map
from .modeling import (
    ADAPTER_DIR,
    CONFIG_NAME,
    FORMAT_TAG,
    WEIGHTS_NAME,
    absolutize_paths,
    check_model_config,
)
from .summary import attach_meta_lora, build_projectors, encoder_width, llm_config, meta_llm

logger = logging.getLogger(__name__)

FORMATS = ("new", "legacy")
NEW_WEIGHT_FILES = ("mm_input_projector.bin", "mm_output_projector.bin", "non_lora_trainables.bin")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
LEGACY_FILE = "pytorch_model.pt"
REPORT_NAME = "conversion.json"
EMBED_KEY, HEAD_KEY = "signal_rows.embed", "signal_rows.lm_head"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_NEW_MODALITY = {"img": "image", "vid": "video", "aud": "audio"}
_LEGACY_SUFFIX = {"image": "", "video": "_video", "audio": "_audio"}
_PEFT_PREFIX = "base_model.model."
# peft adapter features the model's loader (`NextGPTModel.load_adapter`) does not reproduce.
_UNSUPPORTED_ADAPTER = ("use_rslora", "use_dora", "modules_to_save", "layers_to_transform", "rank_pattern",
                        "alpha_pattern", "trainable_token_indices")


# --------------------------------------------------------------------------------------------- report


@dataclass
class ConversionReport:
    """What happened to every source key and every target tensor."""

    format: str
    sources: list[str] = field(default_factory=list)
    mapped: dict[str, int] = field(default_factory=dict)  # target group -> number of tensors imported
    signal_rows: dict[str, str] = field(default_factory=dict)  # embed / lm_head -> where the rows came from
    dropped: list[str] = field(default_factory=list)  # source keys with no counterpart, and why
    replaced: list[str] = field(default_factory=list)  # a later source replaced an earlier tensor
    left_over: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    misshaped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # target tensors / groups freshly initialised
    notes: list[str] = field(default_factory=list)
    lora: dict[str, Any] | None = None
    output: str = ""

    @property
    def problems(self) -> bool:
        return bool(self.left_over or self.missing or self.misshaped)

    def problem_text(self, limit: int = 20) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected / left over", self.left_over),
                             ("mis-shaped", self.misshaped)):
            if items:
                shown = items[:limit] + ([f"… and {len(items) - limit} more"] if len(items) > limit else [])
                lines.append(f"  {title} ({len(items)}): " + "; ".join(shown))
        return "\n".join(lines)

    def lines(self) -> list[str]:
        out = [f"converted {self.format.upper()} checkpoint from {', '.join(self.sources)} -> {self.output}"]
        out += [f"  imported {n} tensor(s) into {group}" for group, n in self.mapped.items()]
        out += [f"  {name}: {how}" for name, how in self.signal_rows.items()]
        if self.lora:
            out.append(f"  LoRA adapter: r={self.lora['r']} alpha={self.lora['alpha']} dropout={self.lora['dropout']} "
                       f"targets={self.lora['target_modules']}")
        out += [f"  note: {n}" for n in self.notes]
        out += [f"  dropped: {d}" for d in self.dropped]
        out += [f"  replaced: {r}" for r in self.replaced]
        out += [f"  freshly initialised: {f}" for f in self.fresh]
        if self.problems:
            out.append("  UNMATCHED (allowed by --allow-unmatched):\n" + self.problem_text())
        return out


# --------------------------------------------------------------------------------------------- reading


def read_tensor_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a safetensors file or a pickle read with `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, truncated files, foreign formats
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a flat state dict {{name: tensor}}, got {type(state).__name__}")
    return {k: v.detach() for k, v in state.items()}


def read_llm_tensors(llm_dir: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Read only `names` from a transformers checkpoint directory (single or sharded, safetensors or .bin)."""
    llm_dir = Path(llm_dir)
    where: dict[str, Path] = {}
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = llm_dir / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            where = {n: llm_dir / weight_map[n] for n in names if n in weight_map}
            break
    else:
        for single in ("model.safetensors", "pytorch_model.bin"):
            if (llm_dir / single).is_file():
                where = {n: llm_dir / single for n in names}
                break
    if not where:
        raise CheckpointError(f"{llm_dir}: no LLM weight files (model.safetensors, pytorch_model.bin or a sharded "
                              f"index) to read {', '.join(names)} from")
    out: dict[str, torch.Tensor] = {}
    for path in sorted(set(where.values())):
        wanted = [n for n, p in where.items() if p == path]
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                present = set(f.keys())
                out.update({n: f.get_tensor(n) for n in wanted if n in present})
        else:
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            out.update({n: state[n] for n in wanted if n in state})
    absent = [n for n in names if n not in out]
    if absent:
        raise CheckpointError(f"{llm_dir}: the LLM weights have no {', '.join(absent)}")
    return out


@dataclass
class _Entry:
    key: str
    tensor: torch.Tensor
    origin: str  # "file:key"
    adapter: bool = False


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tokenizer_config.json", "tokenizer.model", "tokenizer.json"))


def _collect_sources(fmt: str, sources: list[Path]) -> tuple[list[_Entry], dict | None, list[Path], list[str]]:
    """Read every source: (entries in precedence order, NEW adapter config, tokenizer folders, files read)."""
    entries: list[_Entry] = []
    adapter_cfg: dict | None = None
    tokenizer_dirs: list[Path] = []
    files_read: list[str] = []

    def add_file(path: Path, adapter: bool = False) -> None:
        files_read.append(str(path))
        for k, v in read_tensor_file(path).items():
            entries.append(_Entry(k, v, f"{path.name}:{k}", adapter))

    def read_adapter_config(folder: Path) -> dict:
        cfg_path = folder / ADAPTER_CONFIG
        if not cfg_path.is_file():
            raise CheckpointError(f"{folder}: adapter weights without {ADAPTER_CONFIG}")
        try:
            return json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg_path}: not valid JSON: {exc}") from None

    for src in sources:
        src = Path(src)
        if not src.exists():
            raise CheckpointError(f"{src}: no such file or directory")
        folder = src if src.is_dir() else src.parent
        if _has_tokenizer(folder) and folder not in tokenizer_dirs:
            tokenizer_dirs.append(folder)
        if fmt == "legacy":
            path = src / LEGACY_FILE if src.is_dir() else src
            if not path.is_file():
                raise CheckpointError(f"{src}: no {LEGACY_FILE} (the LEGACY release's delta checkpoint)")
            add_file(path)
            continue
        if src.is_file():
            is_adapter = src.name in ADAPTER_WEIGHTS
            if is_adapter:
                adapter_cfg = read_adapter_config(folder)
            add_file(src, adapter=is_adapter)
            continue
        found = [src / n for n in NEW_WEIGHT_FILES if (src / n).is_file()]
        adapter_file = next((src / n for n in ADAPTER_WEIGHTS if (src / n).is_file()), None)
        if not found and adapter_file is None:
            raise CheckpointError(f"{src}: none of the NEW reference checkpoint files "
                                  f"({', '.join(NEW_WEIGHT_FILES + ADAPTER_WEIGHTS)})")
        if adapter_file is not None:  # first: the explicitly saved trainables below take precedence
            adapter_cfg = read_adapter_config(src)
            add_file(adapter_file, adapter=True)
        for path in found:
            add_file(path)
    return entries, adapter_cfg, tokenizer_dirs, files_read


# --------------------------------------------------------------------------------------------- key maps

# A mapped target: ("param", our key) | ("lora", peft adapter key) | ("embed",) | ("head",) | ("drop", why) |
# ("unmatched", why)
Target = tuple


def _lora_key(name: str) -> str | None:
    """peft's saved adapter key for a LoRA weight name with or without the adapter name ("default")."""
    m = re.fullmatch(r"(base_model\.model\..+\.lora_(?:A|B))(?:\.default)?\.weight", name)
    return f"{m.group(1)}.weight" if m else None


def map_new_key(key: str, adapter: bool = False) -> Target:
    """Where a NEW reference tensor goes."""
    if adapter:
        lora = _lora_key(key)
        if lora:
            return ("lora", lora)
        # peft also saves the whole (resized) embedding / LM head when it sees the vocabulary grew
        if key == f"{_PEFT_PREFIX}model.embed_tokens.weight":
            return ("embed",)
        if key == f"{_PEFT_PREFIX}lm_head.weight":
            return ("head",)
        return ("unmatched", "not a LoRA A/B weight of the adapter")
    k = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
    m = re.fullmatch(r"model\.mm_input_projector\.(.+)", k)
    if m:
        return ("param", f"input_projector.{m.group(1)}")
    m = re.fullmatch(r"model\.mm_output_(img|vid|aud)_projector\.(.+)", k)
    if m:
        return ("param", f"output_projectors.{_NEW_MODALITY[m.group(1)]}.{m.group(2)}")
    if k == "model.embed_tokens.weight":
        return ("embed",)
    if k == "lm_head.weight":
        return ("head",)
    return ("unmatched", "no counterpart in NExT-GPT's trained weights")


def map_legacy_key(key: str) -> Target:
    """Where a LEGACY (`7b_tiva_v0/pytorch_model.pt`) tensor goes."""
    m = re.fullmatch(r"llama_proj\.(weight|bias)", key)
    if m:
        return ("param", f"input_projector.{m.group(1)}")
    m = re.fullmatch(r"gen_text_hidden_fcs(|_video|_audio)\.0\.(.+)", key)
    if m:
        modality = {"": "image", "_video": "video", "_audio": "audio"}[m.group(1)]
        try:
            ours = legacy_textfc_key_map(m.group(2))
        except CheckpointError as exc:
            return ("unmatched", str(exc))
        if ours is None:
            return ("drop", "LAVIS buffer with no counterpart in our Q-Former")
        return ("param", f"output_projectors.{modality}.{ours}")
    if key.startswith("llama_model.") and "lora_" in key:
        lora = _lora_key(key[len("llama_model."):])
        return ("lora", lora) if lora else ("unmatched", "not a LoRA A/B weight")
    if key in ("llama_model.model.embed_tokens.weight", "llama_model.base_model.model.model.embed_tokens.weight"):
        return ("embed",)
    if key in ("llama_model.lm_head.weight", "llama_model.base_model.model.lm_head.weight"):
        return ("head",)
    return ("unmatched", "no counterpart in NExT-GPT's trained weights")


def reference_name(fmt: str, ours: str) -> str:
    """The reference's key for one of our target keys (for messages about missing tensors)."""
    if ours.startswith("input_projector."):
        rest = ours[len("input_projector."):]
        return f"model.mm_input_projector.{rest}" if fmt == "new" else f"llama_proj.{rest}"
    m = re.fullmatch(r"output_projectors\.(image|video|audio)\.(.+)", ours)
    if m:
        modality, rest = m.groups()
        if fmt == "new":
            short = {v: k for k, v in _NEW_MODALITY.items()}[modality]
            return f"model.mm_output_{short}_projector.{rest}"
        head, dot, tail = rest.partition(".")
        head = {"in_fc": "fc", "out_fc": "model"}.get(head, head)
        return f"gen_text_hidden_fcs{_LEGACY_SUFFIX[modality]}.0.{head}{dot}{tail}"
    if fmt == "legacy" and ours.startswith(_PEFT_PREFIX):
        return "llama_model." + ours[: -len(".weight")] + ".default.weight"
    return ours


def _group_of(key: str) -> str:
    if key.startswith("input_projector."):
        return "input_projector"
    return "output_projector." + key.split(".")[1]


def _needed_groups(stage: int) -> set[str]:
    """The groups trained in this stage or an earlier one: a checkpoint of this stage must carry them."""
    needed: set[str] = set()
    for s in range(1, stage + 1):
        needed.update(STAGE_PRESETS[s].groups())
    needed.discard("signal_rows")  # absent rows start at the mean (reported), never an error
    return needed


# --------------------------------------------------------------------------------------------- conversion


def _fresh_lora(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """peft's default LoRA init: A ~ kaiming-uniform(a=√5) (nn.Linear's default), B = 0 (a no-op adapter)."""
    if ".lora_B." in key:
        return torch.zeros(shape)
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _adapter_settings(fmt: str, config: Config, lora_entries: dict[str, _Entry], adapter_cfg: dict | None,
                      report: ConversionReport) -> LoraAdapterConfig:
    """The LoRA settings of the imported adapter (NEW: its adapter_config.json; LEGACY: r from the tensor shapes,
    alpha / dropout / bias from the config, target modules from the keys)."""
    wanted = config.model.lora
    if fmt == "new":
        if adapter_cfg is None:
            raise CheckpointError("LoRA weights without an adapter_config.json")
        if adapter_cfg.get("peft_type", "LORA") != "LORA":
            raise CheckpointError(f"{ADAPTER_CONFIG}: peft_type {adapter_cfg.get('peft_type')!r} is not LORA")
        bad = [k for k in _UNSUPPORTED_ADAPTER if adapter_cfg.get(k)]
        if bad:
            raise CheckpointError(f"{ADAPTER_CONFIG}: unsupported adapter option(s) {bad}")
        targets = adapter_cfg.get("target_modules")
        if isinstance(targets, str) or not targets:
            raise CheckpointError(f"{ADAPTER_CONFIG}: target_modules must be a list of module names, got {targets!r}")
        settings = LoraAdapterConfig(r=int(adapter_cfg["r"]), alpha=int(adapter_cfg["lora_alpha"]),
                              dropout=float(adapter_cfg.get("lora_dropout", 0.0)),
                              bias=adapter_cfg.get("bias", "none"), target_modules=sorted(targets))
    else:
        ranks = sorted({tuple(e.tensor.shape)[0] for k, e in lora_entries.items() if ".lora_A." in k
                        and e.tensor.ndim == 2})
        if len(ranks) != 1:
            raise CheckpointError(f"LEGACY LoRA weights: cannot tell the rank r from the lora_A shapes (ranks {ranks})")
        targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in lora_entries})
        settings = LoraAdapterConfig(r=ranks[0], alpha=wanted.alpha, dropout=wanted.dropout, bias=wanted.bias,
                              target_modules=targets)
    if sorted(settings.target_modules) == sorted(wanted.target_modules):
        settings.target_modules = list(wanted.target_modules)  # keep the config's order
    if settings.r != wanted.r or settings.alpha != wanted.alpha or settings.dropout != wanted.dropout \
            or settings.target_modules != list(wanted.target_modules) or settings.bias != wanted.bias:
        report.notes.append(
            f"model.lora set from the source adapter: r={settings.r} alpha={settings.alpha} "
            f"dropout={settings.dropout} bias={settings.bias} targets={settings.target_modules} (config had "
            f"r={wanted.r} alpha={wanted.alpha} dropout={wanted.dropout} bias={wanted.bias} "
            f"targets={list(wanted.target_modules)})")
    return settings


def _signal_rows(matrix: _Entry | None, name: str, what: str, names: list[str], our_ids: list[int],
                 vocab_rows: int, src_tokenizer, hidden: int, base: torch.Tensor | None,
                 report: ConversionReport) -> torch.Tensor | None:
    """The signal rows (in our sorted-id order) taken from a source matrix; None when it has none or mis-fits."""
    if matrix is None:
        return None
    t = matrix.tensor
    if t.ndim != 2 or t.shape[1] != hidden:
        report.misshaped.append(f"{matrix.origin}: expected (vocab, {hidden}), found {tuple(t.shape)}")
        return None
    if src_tokenizer is not None:
        src_ids = src_tokenizer.convert_tokens_to_ids(names)
        absent = [n for n, i in zip(names, src_ids) if i is None or i == src_tokenizer.unk_token_id]
        if absent:
            report.misshaped.append(f"{matrix.origin}: the source tokenizer has no {absent[:5]}")
            return None
        if max(src_ids) >= t.shape[0]:
            report.misshaped.append(f"{matrix.origin}: {t.shape[0]} rows, but the source tokenizer puts "
                                    f"signal tokens up to id {max(src_ids)}")
            return None
        how = "ids from the source tokenizer"
    else:
        if t.shape[0] != vocab_rows:
            report.misshaped.append(f"{matrix.origin}: expected ({vocab_rows}, {hidden}) (our tokenizer with the "
                                    f"signal tokens; give --source-tokenizer if the source's ids differ), found "
                                    f"{tuple(t.shape)}")
            return None
        src_ids = list(our_ids)
        how = "ids of our registration (no source tokenizer)"
    rows = t[torch.tensor(src_ids)].clone()
    msg = f"{len(names)} signal rows imported from {matrix.origin} ({how}); its other {t.shape[0] - len(names)} " \
          f"rows are not imported (the reference trains the whole {what} matrix, spec §12.34)"
    if base is not None:
        n = min(base.shape[0], t.shape[0])
        changed, max_diff = 0, 0.0
        for start in range(0, n, 4096):  # in chunks: the 7B matrices are 32000 x 4096
            stop = min(start + 4096, n)
            diff = (t[start:stop].float() - base[start:stop].float()).abs()
            changed += int((diff.amax(dim=1) > 0).sum())
            max_diff = max(max_diff, float(diff.max()))
        msg += f"; {changed} of the first {n} rows differ from the base LLM (max |Δ| {max_diff:.3g})"
    report.signal_rows[name] = msg
    return rows


def convert_checkpoint(fmt: str, sources: list[str | Path], config: Config, output: str | Path, *,
                       allow_unmatched: bool = False, dtype: str = "keep",
                       source_tokenizer: str | Path | None = None, overwrite: bool = False) -> ConversionReport:
    """Import reference weights (`fmt` "new" or "legacy") into a checkpoint directory for `config`'s model.

    Raises CheckpointError (naming every missing / unexpected / mis-shaped key) unless `allow_unmatched`, and
    ConfigError when the config does not describe the source's architecture.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if dtype != "keep" and dtype not in DTYPES:
        raise ConfigError(f"--dtype must be keep or one of {sorted(DTYPES)}, got {dtype!r}")
    if not sources:
        raise ConfigError("no --src given")
    model_cfg = config.model
    check_model_config(model_cfg)
    if fmt == "legacy":
        wrong = [f"{k}={v!r}" for k, v, want in (
            ("model.signal_layout", model_cfg.signal_layout, "legacy"),
            ("model.encoder.output", model_cfg.encoder.output, "pooled"),
            ("model.input_projector.kind", model_cfg.input_projector.kind, "linear")) if v != want]
        if wrong:
            raise ConfigError(f"a LEGACY checkpoint needs a LEGACY config (signal_layout legacy, encoder output "
                              f"pooled, input projector linear; e.g. configs/stage_3_legacy.yaml), got "
                              f"{', '.join(wrong)}")
    elif model_cfg.signal_layout != "new":
        raise ConfigError("a NEW checkpoint needs model.signal_layout=new (e.g. configs/stage_3.yaml)")
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise CheckpointError(f"{output}: exists and is not empty (pass --overwrite to replace its files)")
    if not Path(model_cfg.llm).is_dir():
        raise CheckpointError(f"model.llm={model_cfg.llm!r} is not a local directory: the conversion needs the base "
                              f"LLM's tokenizer and config.json (and its weights when signal rows are "
                              f"mean-initialised)")

    report = ConversionReport(format=fmt)
    # ---- the target: our tokenizer with the signal tokens, and the shapes of every trained tensor
    tokenizer = load_tokenizer(model_cfg.llm, model_cfg.max_length)
    counts = {m: model_cfg.output(m).signal_tokens for m in MODALITIES}
    _, token_ids = register_signal_tokens(tokenizer, None, model_cfg.signal_layout, counts)
    our_ids = sorted(token_ids)
    names = tokenizer.convert_ids_to_tokens(our_ids)
    llm_cfg = llm_config(model_cfg)
    if getattr(llm_cfg, "tie_word_embeddings", False):
        raise ConfigError(f"{model_cfg.llm}: LLMs with tied input/output embeddings are not supported")
    hidden = llm_cfg.hidden_size
    enc_dim = encoder_width(model_cfg)
    meta_in, meta_out = build_projectors(model_cfg, enc_dim, hidden, device="meta")
    expected = {f"input_projector.{k}": tuple(v.shape) for k, v in meta_in.state_dict().items()}
    for m in MODALITIES:
        expected.update({f"output_projectors.{m}.{k}": tuple(v.shape) for k, v in meta_out[m].state_dict().items()})

    # ---- read and map every source key
    entries, adapter_cfg, tokenizer_dirs, files_read = _collect_sources(fmt, [Path(s) for s in sources])
    report.sources = files_read
    params: dict[str, _Entry] = {}
    lora: dict[str, _Entry] = {}
    matrices: dict[str, _Entry] = {}

    def put(table: dict[str, _Entry], key: str, entry: _Entry) -> None:
        if key in table:
            report.replaced.append(f"{key}: {entry.origin} replaces {table[key].origin}")
        table[key] = entry

    for entry in entries:
        target = map_new_key(entry.key, entry.adapter) if fmt == "new" else map_legacy_key(entry.key)
        kind = target[0]
        if kind == "param":
            put(params, target[1], entry)
        elif kind == "lora":
            put(lora, target[1], entry)
        elif kind in ("embed", "head"):
            put(matrices, kind, entry)
        elif kind == "drop":
            report.dropped.append(f"{entry.origin} ({target[1]})")
        else:
            report.left_over.append(f"{entry.origin} ({target[1]})")

    # ---- projectors: strict against the model's expected shapes
    needed = _needed_groups(config.train.stage)
    for key, entry in params.items():
        if key not in expected:
            report.left_over.append(f"{entry.origin} (maps to {key}, which the configured model does not have)")
        elif tuple(entry.tensor.shape) != expected[key]:
            report.misshaped.append(f"{entry.origin}: expected {expected[key]}, found {tuple(entry.tensor.shape)}")
    good = {k: e for k, e in params.items() if k in expected and tuple(e.tensor.shape) == expected[k]}
    fresh_keys = {k for k in expected if k not in good}  # filled with a fresh initialisation
    present_groups = {_group_of(k) for k in params if k in expected}
    absent_groups = sorted({_group_of(k) for k in expected} - present_groups)
    for key in expected:
        if key not in params and _group_of(key) in needed:
            report.missing.append(f"{reference_name(fmt, key)} (-> {key})")
    for group in absent_groups:
        if group not in needed:
            report.fresh.append(f"{group}: not in the source (stage {config.train.stage} has not trained it yet)")

    # ---- LoRA adapter
    lora_settings: LoraAdapterConfig | None = None
    lora_state: dict[str, torch.Tensor] = {}
    if lora:
        lora_settings = _adapter_settings(fmt, config, lora, adapter_cfg, report)
        peft_llm = attach_meta_lora(meta_llm(llm_cfg), lora_settings.r, lora_settings.alpha, lora_settings.dropout,
                                    lora_settings.bias, lora_settings.target_modules)
        from peft import get_peft_model_state_dict

        lora_expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(peft_llm).items()}
        for key, entry in lora.items():
            if key not in lora_expected:
                report.left_over.append(f"{entry.origin} (maps to adapter key {key}, which the LLM does not have)")
            elif tuple(entry.tensor.shape) != lora_expected[key]:
                report.misshaped.append(f"{entry.origin}: expected {lora_expected[key]}, "
                                        f"found {tuple(entry.tensor.shape)}")
            else:
                lora_state[key] = entry.tensor
        gen = torch.Generator().manual_seed(config.train.seed)
        for key, shape in lora_expected.items():
            if key not in lora:
                report.missing.append(f"{reference_name(fmt, key)} (-> adapter {key})")
            if key not in lora_state:
                lora_state[key] = _fresh_lora(key, shape, gen)
                if key in lora:
                    report.fresh.append(f"adapter {key}")
        report.lora = asdict(lora_settings)
        report.mapped["lora"] = sum(1 for k in lora if k in lora_expected
                                    and tuple(lora[k].tensor.shape) == lora_expected[k])
    elif "lora" in needed:
        report.missing.append(f"the LoRA adapter (stage {config.train.stage} trains LoRA; the source has no LoRA "
                              f"weights)")
        report.fresh.append("LoRA adapter: none written (the model runs without LoRA)")

    # ---- signal rows
    src_tok = None
    if matrices:
        tok_dir = Path(source_tokenizer) if source_tokenizer is not None else (tokenizer_dirs[0] if tokenizer_dirs
                                                                               else None)
        if tok_dir is not None:
            src_tok = load_tokenizer(tok_dir)
            report.notes.append(f"source tokenizer: {tok_dir}")
    elif source_tokenizer is not None:
        report.notes.append("--source-tokenizer ignored: the source has no embedding / LM-head matrix")
    base_names = {"embed": "model.embed_tokens.weight", "head": "lm_head.weight"}
    try:
        base = read_llm_tensors(model_cfg.llm, list(base_names.values()))
    except CheckpointError as exc:
        if len(matrices) < 2:
            raise CheckpointError(f"signal rows absent from the source must start at the mean of the base LLM's rows, "
                                  f"but: {exc}") from None
        base = {}
        report.notes.append(f"base LLM matrices not read ({exc}); their drift is not reported")
    signal: dict[str, torch.Tensor] = {}
    for kind, key, what in (("embed", EMBED_KEY, "embedding"), ("head", HEAD_KEY, "LM-head")):
        base_matrix = base.get(base_names[kind])
        rows = _signal_rows(matrices.get(kind), key, what, names, our_ids, len(tokenizer), src_tok, hidden,
                            base_matrix, report)
        if rows is None:
            if base_matrix is None:
                base_matrix = read_llm_tensors(model_cfg.llm, [base_names[kind]])[base_names[kind]]
            mean = base_matrix.float().mean(dim=0, keepdim=True)
            rows = mean.expand(len(our_ids), -1).clone()
            why = "absent from the source" if kind not in matrices else "not usable (see mis-shaped)"
            report.signal_rows[key] = (f"{len(our_ids)} rows {why}: initialised to the mean of the base LLM's "
                                       f"{base_matrix.shape[0]} {what} rows (our rule, spec §2.1)")
        else:
            report.mapped[key] = 1
        signal[key] = rows

    # ---- strictness
    if report.problems:
        if not allow_unmatched:
            raise CheckpointError(f"the {fmt.upper()} checkpoint ({', '.join(files_read)}) does not match the "
                                  f"configured model:\n{report.problem_text()}\n(--allow-unmatched converts anyway, "
                                  f"initialising what is missing)")
        for line in report.problem_text().splitlines():
            logger.warning("allowed by --allow-unmatched: %s", line.strip())

    # ---- assemble the state: imported tensors, fresh ones for the holes
    state: dict[str, torch.Tensor] = {k: e.tensor for k, e in good.items()}
    if fresh_keys:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.train.seed)
            real_in, real_out = build_projectors(model_cfg, enc_dim, hidden, device="cpu")
        fresh_state = {f"input_projector.{k}": v for k, v in real_in.state_dict().items()}
        for m in MODALITIES:
            fresh_state.update({f"output_projectors.{m}.{k}": v for k, v in real_out[m].state_dict().items()})
        for key in sorted(fresh_keys):
            state[key] = fresh_state[key]
        partly = sorted({_group_of(k) for k in fresh_keys} - set(absent_groups))
        report.fresh += [f"{g}: {sum(1 for k in fresh_keys if _group_of(k) == g)} tensor(s)" for g in partly]
        report.fresh += [f"{g}: all tensors" for g in absent_groups if g in needed]
    for key, entry in good.items():
        group = _group_of(key)
        report.mapped[group] = report.mapped.get(group, 0) + 1
    state.update(signal)
    if dtype != "keep":
        state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state.items()}
        lora_state = {k: v.to(DTYPES[dtype]) for k, v in lora_state.items()}

    # ---- write
    _write_checkpoint(output, config, state, lora_settings, lora_state if lora_settings else None, tokenizer,
                      names, report)
    return report


def _write_checkpoint(output: Path, config: Config, state: dict[str, torch.Tensor], lora: LoraAdapterConfig | None,
                      lora_state: dict[str, torch.Tensor] | None, tokenizer, signal_names: list[str],
                      report: ConversionReport) -> None:
    from safetensors.torch import save_file

    output.mkdir(parents=True, exist_ok=True)
    adapter_dir = output / ADAPTER_DIR
    if adapter_dir.exists():  # only with overwrite: a stale adapter would be attached by from_pretrained
        shutil.rmtree(adapter_dir)
    metadata = {"format": FORMAT_TAG, "signal_tokens": json.dumps(signal_names),
                "converted_from": f"reference {report.format.upper()}"}
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(output / WEIGHTS_NAME),
              metadata=metadata)
    if lora is not None and lora_state is not None:
        from peft import LoraConfig as PeftLoraConfig

        adapter_dir.mkdir(exist_ok=True)
        PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                       target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
                       base_model_name_or_path=str(Path(config.model.llm).resolve())).save_pretrained(str(adapter_dir))
        save_file({k: v.detach().contiguous().clone() for k, v in lora_state.items()},
                  str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    saved = absolutize_paths(config)  # a copy
    if lora is not None:
        saved.model.lora = lora
    (output / CONFIG_NAME).write_text(saved.to_yaml())
    tokenizer.save_pretrained(str(output))
    report.output = str(output)
    (output / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n")


def verify_conversion(output: str | Path) -> None:
    """Load the converted directory with `NextGPTModel.from_pretrained` (builds the full model: the LLM, encoder
    checkpoint etc. must be on disk) and check its trained tensors equal the written ones."""
    from safetensors.torch import load_file

    from .modeling import NextGPTModel

    output = Path(output)
    model = NextGPTModel.from_pretrained(output)
    written = load_file(str(output / WEIGHTS_NAME))
    loaded = model.trainable_state_dict()
    bad = [k for k, v in written.items() if not torch.equal(loaded[k], v.to(loaded[k].dtype))]
    adapter = output / ADAPTER_DIR / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import get_peft_model_state_dict

        peft_state = get_peft_model_state_dict(model.llm, save_embedding_layers=False)
        for k, v in load_file(str(adapter)).items():
            if k not in peft_state or not torch.equal(peft_state[k].cpu(), v.to(peft_state[k].dtype)):
                bad.append(f"adapter {k}")
    if bad:
        raise CheckpointError(f"{output}: the loaded model differs from the written tensors: {bad[:10]}")


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nextgpt.model.convert",
        description="Import reference NExT-GPT checkpoints (NEW mm_*_projector.bin / non_lora_trainables.bin + peft "
                    "adapter; LEGACY 7b_tiva_v0/pytorch_model.pt) into a checkpoint directory that "
                    "NextGPTModel.from_pretrained and predict.py load. Needs the base LLM directory (model.llm).")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--src", required=True, action="append",
                        help="a reference output directory or file; repeat it to combine stages (later wins)")
    parser.add_argument("--config", required=True, help="config describing the model, e.g. configs/stage_3.yaml")
    parser.add_argument("--output", required=True, help="checkpoint directory to write")
    parser.add_argument("--allow-unmatched", action="store_true",
                        help="convert even when keys are missing / unexpected / mis-shaped (they are still printed; "
                             "holes are freshly initialised)")
    parser.add_argument("--dtype", default="keep", choices=("keep", *DTYPES))
    parser.add_argument("--source-tokenizer", default=None,
                        help="tokenizer folder whose ids index the source's embedding / LM-head matrices "
                             "(default: one found beside the source)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.add_argument("--verify", action="store_true",
                        help="afterwards load the result with NextGPTModel.from_pretrained and compare")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.llm=/path/to/vicuna")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config, args.overrides)
        report = convert_checkpoint(args.format, args.src, config, args.output, allow_unmatched=args.allow_unmatched,
                                    dtype=args.dtype, source_tokenizer=args.source_tokenizer,
                                    overwrite=args.overwrite)
        for line in report.lines():
            logger.info("%s", line)
        if args.verify:
            verify_conversion(args.output)
            logger.info("verified: %s loads with NextGPTModel.from_pretrained and matches", args.output)
    except NextGPTError as exc:
        logger.error("error: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
