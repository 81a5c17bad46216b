"""Evaluation manifests: a JSON list of samples, each with an id, media paths and references (data/README.md).

    {"id": "391895", "dataset": "coco", "image": "val2014/COCO_val2014_000000391895.jpg",
     "references": ["A man with a red helmet on a small moped on a dirt road.", ...]}

Media paths are relative to the manifest's folder (absolute paths are used as given). Which fields a sample needs
depends on the task (`tasks.py`). Every problem stops the run before the model is loaded, with a message naming the
manifest, the sample and the field.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..json_files import read_json
from .tasks import TASKS, Task, get_task

__all__ = ["Sample", "load_manifest", "write_manifest"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # ids name output files


@dataclass
class Sample:
    id: str
    index: int  # position in the manifest
    media: dict[str, Path] = field(default_factory=dict)  # model inputs by modality
    reference_media: dict[str, Path] = field(default_factory=dict)  # real media of a generation task
    question: str | None = None
    caption: str | None = None
    references: list[str] = field(default_factory=list)  # reference captions (captioning)
    answers: list[str] = field(default_factory=list)  # reference answers (QA)
    prompt: str | None = None  # the sample's own prompt (else the task's)
    dataset: str | None = None


def _text_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: expected a non-empty list of non-empty strings, got {value!r}")
    return list(value)


def _sample(raw: Any, index: int, task: Task, base: Path, source: str) -> Sample:
    if not isinstance(raw, dict):
        raise DataError(f"{source}: sample #{index} is a {type(raw).__name__}, not a JSON object")
    sid = raw.get("id")
    if isinstance(sid, bool) or not isinstance(sid, (str, int)):
        raise DataError(f"{source}: sample #{index}: field 'id' is missing or not a string/integer ({sid!r})")
    sid = str(sid)
    where = f"{source}: sample {sid!r} (#{index})"
    if not _SAFE_ID.match(sid):
        raise DataError(f"{where}: field 'id' may only hold letters, digits, '.', '_' and '-' (it names files)")
    if "task" in raw and raw["task"] != task.name:
        known = "" if raw["task"] in TASKS else f" (unknown task; known: {', '.join(TASKS)})"
        raise DataError(f"{where}: field 'task' is {raw['task']!r} but this run evaluates {task.name!r}{known}")
    sample = Sample(sid, index, dataset=raw.get("dataset"))
    for name in task.inputs + task.references:
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            raise DataError(f"{where}: field {name!r} is missing (task {task.name} needs a {name} path)")
        path = Path(value) if Path(value).is_absolute() else Path(os.path.normpath(base / value))
        if not path.is_file():
            raise DataError(f"{where}: field {name!r}: file not found: {path}")
        (sample.media if name in task.inputs else sample.reference_media)[name] = path
    for name in task.fields:
        if name not in raw:
            raise DataError(f"{where}: field {name!r} is missing (task {task.name} needs it)")
        if name in ("references", "answers"):
            setattr(sample, name, _text_list(raw[name], f"{where}: field {name!r}"))
        elif not isinstance(raw[name], str) or not raw[name].strip():
            raise DataError(f"{where}: field {name!r} must be a non-empty string, got {raw[name]!r}")
        else:
            setattr(sample, name, raw[name])
    if "prompt" in raw:
        if not isinstance(raw["prompt"], str) or not raw["prompt"].strip():
            raise DataError(f"{where}: field 'prompt' must be a non-empty string")
        sample.prompt = raw["prompt"]
    return sample


def load_manifest(path: str | Path, task: str | Task) -> list[Sample]:
    """Read and check a manifest for `task`; DataError names the sample and field of the first problem."""
    task = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    data = read_json(path, "manifest")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: a manifest is a non-empty JSON list of samples (data/README.md)")
    samples = [_sample(raw, i, task, path.parent, str(path)) for i, raw in enumerate(data)]
    seen: dict[str, int] = {}
    for s in samples:
        if s.id in seen:
            raise DataError(f"{path}: sample {s.id!r} (#{s.index}): field 'id' repeats sample #{seen[s.id]}")
        seen[s.id] = s.index
    return samples


def write_manifest(path: str | Path, samples: list[dict[str, Any]]) -> Path:
    """Write a manifest (a JSON list), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(samples, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
