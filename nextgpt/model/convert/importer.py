"""The conversion itself: map, check and write a reference checkpoint as one of ours (see the package docstring)."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch

from ...config import Config, LoraAdapterConfig
from ...constants import MODALITIES
from ...dtypes import DTYPES
from ...errors import CheckpointError, ConfigError
from ...stages import stage_preset
from ..checkpoint_format import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS_NAME,
    FULL_EMBED_KEY,
    FULL_HEAD_KEY,
    SIGNAL_EMBED_KEY,
    SIGNAL_HEAD_KEY,
    WEIGHTS_NAME,
    write_trained_checkpoint,
)
from ..modeling import NextGPTModel, check_model_config
from ..language_model import load_tokenizer, peft_lora_config, register_signal_tokens
from ..summary import attach_meta_lora, build_projectors, encoder_width, llm_config, meta_llm
from .keys import PEFT_PREFIX, group_of, map_legacy_key, map_minigpt4_key, map_new_key, reference_name
from .report import ConversionReport
from .sources import ADAPTER_CONFIG, SourceTensor, collect_sources, read_llm_tensors, read_minigpt4_sources

logger = logging.getLogger(__name__)

FORMATS = ("new", "legacy", "minigpt4")
REPORT_NAME = "conversion.json"
# peft adapter features the model's loader (`NextGPTModel.load_adapter`) does not reproduce.
_UNSUPPORTED_ADAPTER = ("use_rslora", "use_dora", "modules_to_save", "layers_to_transform", "rank_pattern",
                        "alpha_pattern", "trainable_token_indices")


def _needed_groups(stage: int, recipe: str = "nextgpt") -> set[str]:
    """The groups trained in this stage or an earlier one: a checkpoint of this stage must carry them."""
    needed: set[str] = set()
    for s in range(1, stage + 1):
        needed.update(stage_preset(s, recipe).groups())
    needed.discard("signal_rows")  # absent rows start at the mean (reported), never an error
    return needed



def _fresh_lora(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """peft's default LoRA init: A ~ kaiming-uniform(a=√5) (nn.Linear's default), B = 0 (a no-op adapter)."""
    if ".lora_B." in key:
        return torch.zeros(shape)
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def _adapter_settings(fmt: str, config: Config, lora_entries: dict[str, SourceTensor], adapter_cfg: dict | None,
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


def _source_index(matrix: SourceTensor, names: list[str], our_ids: list[int], vocab_rows: int, src_tokenizer,
                  hidden: int, report: ConversionReport) -> torch.Tensor | None:
    """For every id of our vocabulary (base tokens, then the registered ones) the row of the source matrix that
    holds it; None (reported as mis-shaped) when the matrix does not fit."""
    t = matrix.tensor
    if t.ndim != 2 or t.shape[1] != hidden:
        report.misshaped.append(f"{matrix.origin}: expected (vocab, {hidden}), found {tuple(t.shape)}")
        return None
    index = torch.arange(vocab_rows)
    if src_tokenizer is not None:
        src_ids = src_tokenizer.convert_tokens_to_ids(names)
        absent = [n for n, i in zip(names, src_ids) if i is None or i == src_tokenizer.unk_token_id]
        if absent:
            report.misshaped.append(f"{matrix.origin}: the source tokenizer has no {absent[:5]}")
            return None
        index[torch.tensor(our_ids)] = torch.tensor(src_ids)
    elif t.shape[0] != vocab_rows:
        report.misshaped.append(f"{matrix.origin}: expected ({vocab_rows}, {hidden}) (our tokenizer with the "
                                f"signal tokens; give --source-tokenizer if the source's ids differ), found "
                                f"{tuple(t.shape)}")
        return None
    if int(index.max()) >= t.shape[0]:
        report.misshaped.append(f"{matrix.origin}: {t.shape[0]} rows, but the source tokenizer puts the tokens up "
                                f"to id {int(index.max())}")
        return None
    return index


def _drift(matrix: torch.Tensor, base: torch.Tensor) -> dict[str, float | int]:
    """How far the original-vocabulary rows of an imported matrix are from the base LLM's."""
    n = base.shape[0]
    changed, max_diff, total = 0, 0.0, 0.0
    for start in range(0, n, 4096):  # in chunks: the 7B matrices are 32000 x 4096
        stop = min(start + 4096, n)
        diff = (matrix[start:stop].float() - base[start:stop].float()).abs()
        changed += int((diff.amax(dim=1) > 0).sum())
        max_diff = max(max_diff, float(diff.max()))
        total += float(diff.sum(dtype=torch.float64))
    return {"original_rows": n, "original_rows_changed": changed, "original_rows_max_abs_diff": max_diff,
            "original_rows_mean_abs_diff": total / (n * base.shape[1])}


def convert_checkpoint(fmt: str, sources: list[str | Path], config: Config, output: str | Path, *,
                       allow_unmatched: bool = False, dtype: str = "keep",
                       source_tokenizer: str | Path | None = None, overwrite: bool = False) -> ConversionReport:
    """Import reference weights (`fmt` "new", "legacy" or "minigpt4") into a checkpoint directory for `config`'s
    model.

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
    elif fmt == "minigpt4":
        if model_cfg.encoder.kind != "blip2" or model_cfg.input_projector.kind != "linear":
            raise ConfigError(f"a MiniGPT-4 checkpoint needs a MiniGPT-4 config (encoder kind blip2, input projector "
                              f"linear; e.g. configs/minigpt4_stage_2.yaml), got model.encoder.kind="
                              f"{model_cfg.encoder.kind!r}, model.input_projector.kind="
                              f"{model_cfg.input_projector.kind!r}")
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
    if fmt == "minigpt4":
        entries, files_read, training_state = read_minigpt4_sources([Path(s) for s in sources])
        adapter_cfg, tokenizer_dirs = None, []
        report.dropped += [f"{k} (training state, not weights)" for k in training_state]
    else:
        entries, adapter_cfg, tokenizer_dirs, files_read = collect_sources(fmt, [Path(s) for s in sources])
    report.sources = files_read
    map_key = {"new": lambda e: map_new_key(e.key, e.adapter), "legacy": lambda e: map_legacy_key(e.key),
               "minigpt4": lambda e: map_minigpt4_key(e.key)}[fmt]
    params: dict[str, SourceTensor] = {}
    lora: dict[str, SourceTensor] = {}
    matrices: dict[str, SourceTensor] = {}

    def put(table: dict[str, SourceTensor], key: str, entry: SourceTensor) -> None:
        if key in table:
            report.replaced.append(f"{key}: {entry.origin} replaces {table[key].origin}")
        table[key] = entry

    for entry in entries:
        target = map_key(entry)
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
    needed = _needed_groups(config.train.stage, config.train.recipe)
    for key, entry in params.items():
        if key not in expected:
            report.left_over.append(f"{entry.origin} (maps to {key}, which the configured model does not have)")
        elif tuple(entry.tensor.shape) != expected[key]:
            report.misshaped.append(f"{entry.origin}: expected {expected[key]}, found {tuple(entry.tensor.shape)}")
    good = {k: e for k, e in params.items() if k in expected and tuple(e.tensor.shape) == expected[k]}
    fresh_keys = {k for k in expected if k not in good}  # filled with a fresh initialisation
    present_groups = {group_of(k) for k in params if k in expected}
    absent_groups = sorted({group_of(k) for k in expected} - present_groups)
    for key in expected:
        if key not in params and group_of(key) in needed:
            report.missing.append(f"{reference_name(fmt, key)} (-> {key})")
    for group in absent_groups:
        if group not in needed:
            report.fresh.append(f"{group}: not in the source (stages 1-{config.train.stage} of the "
                                f"{config.train.recipe} recipe do not train it)")

    # ---- LoRA adapter
    lora_settings: LoraAdapterConfig | None = None
    lora_state: dict[str, torch.Tensor] = {}
    if lora:
        lora_settings = _adapter_settings(fmt, config, lora, adapter_cfg, report)
        peft_llm = attach_meta_lora(meta_llm(llm_cfg), lora_settings)
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

    # ---- the embedding and LM-head matrices: whole (model.train_full_embeddings, when the source has both) or the
    # registered tokens' rows only; rows the source does not have start at the mean of the base LLM's rows
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
    index = {kind: _source_index(m, names, our_ids, len(tokenizer), src_tok, hidden, report)
             for kind, m in matrices.items()}
    full = model_cfg.train_full_embeddings and all(index.get(k) is not None for k in base_names)
    if model_cfg.train_full_embeddings and not full:
        report.notes.append("model.train_full_embeddings set to false in the converted config: the source lacks "
                            "usable embedding and LM-head matrices, so only the registered tokens' rows are written")
    signal: dict[str, torch.Tensor] = {}
    for kind, what in (("embed", "embedding"), ("head", "LM-head")):
        key = (FULL_EMBED_KEY if kind == "embed" else FULL_HEAD_KEY) if full else \
            (SIGNAL_EMBED_KEY if kind == "embed" else SIGNAL_HEAD_KEY)
        base_matrix = base.get(base_names[kind])
        if index.get(kind) is not None:
            source = matrices[kind]
            whole = source.tensor[index[kind]]
            signal[key] = whole.clone() if full else whole[torch.tensor(our_ids)].clone()
            entry = {"source": source.origin, "rows_from_source": int(signal[key].shape[0]),
                     "row_ids": "from the source tokenizer" if src_tok is not None else "those of our registration"}
            if base_matrix is not None:
                entry.update(_drift(whole, base_matrix))
            report.embeddings[key] = entry
            report.mapped[key] = 1
            continue
        if base_matrix is None:
            base_matrix = read_llm_tensors(model_cfg.llm, [base_names[kind]])[base_names[kind]]
        signal[key] = base_matrix.float().mean(dim=0, keepdim=True).expand(len(our_ids), -1).clone()
        why = "absent from the source" if kind not in matrices else "not usable (see mis-shaped)"
        report.embeddings[key] = {"rows_from_source": 0, "rows_mean_initialised": len(our_ids), "why": why,
                                  "note": f"the registered tokens' {what} rows start at the mean of the base LLM's "
                                          f"{base_matrix.shape[0]} rows (as training starts them)"}
    overrides = {"train_full_embeddings": False} if model_cfg.train_full_embeddings and not full else {}

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
        partly = sorted({group_of(k) for k in fresh_keys} - set(absent_groups))
        report.fresh += [f"{g}: {sum(1 for k in fresh_keys if group_of(k) == g)} tensor(s)" for g in partly]
        report.fresh += [f"{g}: all tensors" for g in absent_groups if g in needed]
    for key, entry in good.items():
        group = group_of(key)
        report.mapped[group] = report.mapped.get(group, 0) + 1
    state.update(signal)
    if dtype != "keep":
        state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state.items()}
        lora_state = {k: v.to(DTYPES[dtype]) for k, v in lora_state.items()}

    # ---- write
    if lora_settings is not None:
        overrides["lora"] = lora_settings
    _write_checkpoint(output, config, state, lora_settings, lora_state if lora_settings else None, tokenizer,
                      names, report, overrides)
    return report


def _write_checkpoint(output: Path, config: Config, state: dict[str, torch.Tensor], lora: LoraAdapterConfig | None,
                      lora_state: dict[str, torch.Tensor] | None, tokenizer, signal_names: list[str],
                      report: ConversionReport, overrides: dict) -> None:
    adapter = None
    if lora is not None and lora_state is not None:
        adapter = (peft_lora_config(lora, base_model=str(Path(config.model.llm).resolve())), lora_state)
    write_trained_checkpoint(output, config, {k: v.clone() for k, v in state.items()}, tokenizer, signal_names,
                             adapter=adapter, metadata={"converted_from": f"reference {report.format.upper()}"},
                             model_overrides=overrides or None)
    report.output = str(output)
    (output / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n")


def verify_conversion(output: str | Path) -> None:
    """Load the converted directory with `NextGPTModel.from_pretrained` (builds the full model: the LLM, encoder
    checkpoint etc. must be on disk) and check its trained tensors equal the written ones."""
    from safetensors.torch import load_file

    output = Path(output)
    model = NextGPTModel.from_pretrained(output)
    written = load_file(str(output / WEIGHTS_NAME))
    loaded = model.trainable_state_dict()
    bad = [k for k, v in written.items() if not torch.equal(loaded[k], v.to(loaded[k].dtype))]
    adapter = output / ADAPTER_DIR / ADAPTER_WEIGHTS_NAME
    if adapter.is_file():
        from peft import get_peft_model_state_dict

        peft_state = get_peft_model_state_dict(model.llm, save_embedding_layers=False)
        for k, v in load_file(str(adapter)).items():
            if k not in peft_state or not torch.equal(peft_state[k].cpu(), v.to(peft_state[k].dtype)):
                bad.append(f"adapter {k}")
    if bad:
        raise CheckpointError(f"{output}: the loaded model differs from the written tensors: {bad[:10]}")
