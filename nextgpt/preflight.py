"""Checks before anything heavy loads: every path a run reads and every dataset name, all reported at once.

`check_training(config)` runs in train.py before the model is built (`train.py --check` runs only it);
`check_checkpoint(dir, overrides)` runs in predict.py / merge before the checkpoint loads. Neither imports torch
or reads weights, so they take about a second. Each problem names the config key, what is wrong and the fix (the
asset to download, the `nextgpt prepare` or `preprocess_embeddings.py` command to run). Notes are things that do
not stop the run (e.g. a decoder the stage does not use).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from .assets import download_hint, hub_cached, looks_like_hub_id, offline
from .config import Config, config_from_dict, resolve_config_file
from .constants import MODALITIES
from .errors import ConfigError, NextGPTError
from .stages import stage_preset

#: Keys that may change when a run is resumed: logging and run length (and where / whether to resume).
RESUMABLE_KEYS = ("train.logging_steps", "train.log_sample_ids", "train.report_to", "train.epochs", "train.max_steps",
                  "train.save_steps", "train.save_total_limit", "train.resume", "train.allow_config_change",
                  "train.output_dir", "data.num_workers")


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    fix: str = ""
    fatal: bool = True


def _weights(key: str, value: str | None, marker: str | None, config_path: str | None, needed: bool = True,
             why: str = "") -> list[Problem]:
    """A folder (holding `marker`) or file of pretrained weights, or a hub id."""
    if not value:
        return [Problem(key, "is empty", f"set {key}=<folder or hub id>")] if needed else []
    path = Path(value)
    later = "" if needed else f" (not needed {why}; needed later)"
    if path.exists():
        if marker and path.is_dir() and not (path / marker).is_file():
            return [Problem(key, f"{value} has no {marker}: not the expected model folder",
                            f"point {key} at the folder that holds {marker}", needed)]
        return []
    if looks_like_hub_id(value):
        if hub_cached(value):
            return []
        if not offline():
            return [Problem(key, f"{value} is not in the local Hugging Face cache; it will be downloaded when it "
                                 "is first loaded", download_hint(key, value, config_path), False)]
        return [Problem(key, f"{value} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set{later}",
                        download_hint(key, value, config_path), needed)]
    return [Problem(key, f"{value} not found{later}", download_hint(key, value, config_path), needed)]


def check_model_paths(config: Config, config_path: str | None = None,
                      decoders_needed: Iterable[str] = MODALITIES, why: str = "") -> list[Problem]:
    m = config.model
    problems = _weights("model.llm", m.llm, "config.json", config_path)
    if m.encoder.checkpoint:
        problems += _weights("model.encoder.checkpoint", m.encoder.checkpoint, None, config_path)
    for modality in MODALITIES:
        problems += _weights(f"model.{modality}.decoder", m.output(modality).decoder, "model_index.json",
                             config_path, needed=modality in decoders_needed, why=why)
    return problems


def _decoders_needed(config: Config) -> list[str]:
    preset = stage_preset(config.train.stage)
    if not preset.output_projectors:
        return []
    online = config.data.caption_embeddings == "online"
    return [m for m in MODALITIES if online or getattr(config.train.losses, m).denoise_weight > 0]


def check_data(config: Config) -> list[Problem]:
    from .dataset.catalog import catalog_for, unknown_dataset_message
    from .dataset.prepare import prepare_hint

    d = config.data
    try:
        catalog = catalog_for(d.catalog_files)
    except ConfigError as err:
        return [Problem("data.catalog_files", str(err), "fix the catalog file (data/README.md, 'Adding a dataset')")]
    if not d.datasets:
        return [Problem("data.datasets", "is empty", "name at least one dataset (data/README.md lists them)")]
    problems = []
    root = Path(d.root)
    uses_embeddings = stage_preset(config.train.stage).output_projectors and d.caption_embeddings == "cache"
    for name in d.datasets:
        if name not in catalog:
            problems.append(Problem("data.datasets", unknown_dataset_message(name, catalog),
                                    "correct the name, or add the dataset (data.catalog_files)"))
            continue
        params = dict(catalog[name].params)
        if d.embed_dir is not None:
            params["embed_folder"] = d.embed_dir
        for key, value in params.items():
            if value is None or not (key.endswith("_path") or key.endswith("_folder")):
                continue
            if key == "embed_folder" and not uses_embeddings:
                continue
            path = root / value
            if (path.is_file() if key.endswith("_path") else path.is_dir()):
                continue
            what = "file" if key.endswith("_path") else "folder"
            problems.append(Problem(f"data.datasets: {name}", f"{key} {path}: {what} not found",
                                    prepare_hint(name, key, root, params, config)))
    return problems


def check_training(config: Config, config_path: str | None = None) -> list[Problem]:
    """Everything `train.py` would fail on after loading weights, found before."""
    t = config.train
    needed = _decoders_needed(config)
    problems = check_model_paths(config, config_path, needed, why=f"by stage {t.stage}")
    problems += check_data(config)
    if not resolve_config_file(t.deepspeed).is_file():
        problems.append(Problem("train.deepspeed", f"{t.deepspeed} not found",
                                "point it at a DeepSpeed JSON, e.g. configs/deepspeed/zero2.json"))
    if t.init_from and not (Path(t.init_from) / "model.safetensors").is_file():
        previous = f"configs/stage_{t.stage - 1}.yaml" if t.stage > 1 else "the previous stage's config"
        problems.append(Problem("train.init_from", f"{t.init_from} holds no trained weights (model.safetensors)",
                                f"train the previous stage first (python train.py --config {previous}), "
                                "or set train.init_from to its output folder"))
    problems += check_resume(config)
    return problems


def check_checkpoint(model_dir: str | Path, overrides: Iterable[str] = ()) -> list[Problem]:
    """A checkpoint directory and the frozen parts its config points at (after `model.*=` overrides)."""
    from .model.checkpoint_format import CONFIG_NAME, WEIGHTS_NAME, resolve_model_paths

    path = Path(model_dir)
    if not (path / CONFIG_NAME).is_file():
        return [Problem("--model", f"{path}: no {CONFIG_NAME}; not a NExT-GPT checkpoint directory",
                        "give a training output, merged or converted checkpoint folder")]
    try:
        raw = yaml.safe_load((path / CONFIG_NAME).read_text()) or {}
        config = resolve_model_paths(config_from_dict(raw, str(path / CONFIG_NAME), list(overrides)), path)
    except (NextGPTError, yaml.YAMLError) as err:
        return [Problem("--model", str(err), "fix the override or the checkpoint's config.yaml")]
    problems = [] if (path / WEIGHTS_NAME).is_file() else [
        Problem("--model", f"{path}: no {WEIGHTS_NAME}", "give a training output, merged or converted checkpoint")]
    for p in check_model_paths(config, decoders_needed=(), why="for text answers"):
        problems.append(Problem(p.key, p.message, f"{p.fix}; for a checkpoint moved from another machine, pass "
                                                  f"{p.key}=<its new place>", p.fatal))
    return problems


def resume_config_differences(saved: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, except the logging and run-length keys (RESUMABLE_KEYS) and `generate`."""
    out = []
    for key in sorted(set(saved) | set(new)):
        dotted = f"{prefix}{key}"
        if dotted in RESUMABLE_KEYS or dotted == "generate":
            continue
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += resume_config_differences(a, b, dotted + ".")
        elif a != b:
            out.append(f"{dotted}: {a!r} -> {b!r}")
    return out


def saved_run_config(output_dir: Path) -> tuple[Path, dict] | None:
    """The config the run in `output_dir` trained with: its newest complete checkpoint's (or its final one)."""
    found = sorted((output_dir / "checkpoints").glob("step-*/trainer_state.json"))
    for candidate in [f.parent / "config.yaml" for f in reversed(found)] + [output_dir / "config.yaml"]:
        if candidate.is_file():
            return candidate, yaml.safe_load(candidate.read_text()) or {}
    return None


def check_resume(config: Config, start: Path | None = None) -> list[Problem]:
    """Resuming with another config would mix two runs: list the keys that differ (train.allow_config_change)."""
    t = config.train
    if t.resume == "never" or t.allow_config_change:
        return []
    found = ((start / "config.yaml", yaml.safe_load((start / "config.yaml").read_text()) or {})
             if start is not None and (start / "config.yaml").is_file() else
             saved_run_config(Path(t.resume if t.resume != "auto" else t.output_dir)))
    if found is None:
        return []
    source, saved = found
    differences = resume_config_differences(saved, config.to_dict())
    if not differences:
        return []
    return [Problem("train.resume", f"{source} was trained with another config; differing keys: "
                    + "; ".join(differences),
                    "use another train.output_dir, train.resume=never to start over, or "
                    "train.allow_config_change=true to resume with the new values")]


def format_problems(problems: list[Problem], what: str) -> str:
    fatal = [p for p in problems if p.fatal]
    notes = [p for p in problems if not p.fatal]
    lines = [f"{what}: {len(fatal)} problem(s); nothing was loaded" if fatal else f"{what}: all paths found"]
    for i, p in enumerate(fatal, 1):
        lines += [f"  {i}. {p.key}: {p.message}", f"     fix: {p.fix}"] if p.fix else [f"  {i}. {p.key}: {p.message}"]
    if notes:
        lines.append("notes:")
        for p in notes:
            lines += [f"  - {p.key}: {p.message}"] + ([f"    ({p.fix})"] if p.fix else [])
    return "\n".join(lines) + "\n"
