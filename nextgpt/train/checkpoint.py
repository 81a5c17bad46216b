"""Training checkpoints: atomic, rotated, resumable.

Layout of a run (`train.output_dir`):

    OUTPUT_DIR/                      the stage's result (written at the end): config.yaml, model.safetensors,
                                     adapter/ (LoRA), tokenizer files, trainer_state.json
    OUTPUT_DIR/checkpoints/step-000200/
        config.yaml, model.safetensors, adapter/, tokenizer files   the trained weights at that step
        deepspeed/                   DeepSpeed's engine state (optimizer, scheduler; frozen weights excluded)
        trainer_state.json           step, epoch, sampler position, data-skip counts
        rng/rank-00000.json          Python / NumPy / torch RNG states of every rank
    OUTPUT_DIR/metrics.jsonl         one JSON line per logging step (always); OUTPUT_DIR/logs/: TensorBoard events
                                     (train.report_to), OUTPUT_DIR/wandb/: Weights & Biases (optional)

A checkpoint is first written to `checkpoints/.tmp-step-000200` and renamed when complete, so a run killed at any
moment leaves every earlier checkpoint intact and never a half-written one under a `step-*` name.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS / f"step-{step:06d}"


def temporary_dir(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS / f".tmp-step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).is_file()]


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unusable (missing, unreadable header, shorter than its header says), or None."""
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > path.stat().st_size:
                return f"{path.name} has an unreadable header (it claims {size} bytes)"
            header = json.loads(f.read(size))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"{path.name} has an unreadable header ({exc})"
    if path.stat().st_size < 8 + size + end:
        return f"{path.name} is truncated ({path.stat().st_size} bytes, its header needs {8 + size + end})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from (a truncated weights file, a missing or broken
    DeepSpeed state, an unreadable trainer state), or None. Reads headers and directories only."""
    import zipfile

    try:
        json.loads((path / TRAINER_STATE).read_text())
    except (OSError, ValueError) as exc:
        return f"{TRAINER_STATE} unreadable ({exc})"
    weights = [path / "model.safetensors"] + sorted((path / "adapter").glob("*.safetensors"))
    for file in weights:
        problem = _safetensors_problem(file)
        if problem:
            return problem
    states = sorted((path / "deepspeed").rglob("*.pt"))
    if not states:
        return "the DeepSpeed state (deepspeed/*/*.pt) is missing"
    for file in states:  # torch.save writes zip archives: a truncated one has no central directory
        if not zipfile.is_zipfile(file):
            return f"{file.relative_to(path)} is truncated or not a torch archive"
    if not list((path / "rng").glob("rank-*.json")):
        return "the RNG states (rng/rank-*.json) are missing"
    return None


def latest_usable_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that passes `checkpoint_problem`; each newer broken one is named in a warning."""
    import logging

    for path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logging.getLogger(__name__).warning("checkpoint %s is damaged (%s); trying the one before it", path, problem)
    return None


def remove_incomplete(output_dir: Path) -> None:
    """Delete half-written checkpoints left by a killed run."""
    root = output_dir / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written checkpoint visible under its final name (an atomic rename)."""
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


@contextlib.contextmanager
def writing(tmp: Path, final: Path, previous: Path | None):
    """Around the writing of a checkpoint: a disk-full or permission error removes the half-written `tmp` and
    stops the run with a `CheckpointError` saying that `final` was not written and `previous` is still complete."""
    try:
        yield
    except (OSError, CheckpointError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint {previous} is complete and loadable" if previous else "no earlier checkpoint"
        raise CheckpointError(f"cannot write {final}: {err}; {kept}") from err


def rotate(output_dir: Path, keep: int) -> None:
    """Keep only the newest `keep` checkpoints (deleted only after a newer one is complete)."""
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and an atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


# --------------------------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as JSON-serialisable data."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def rng_file(ckpt: Path, rank: int) -> Path:
    return ckpt / "rng" / f"rank-{rank:05d}.json"
