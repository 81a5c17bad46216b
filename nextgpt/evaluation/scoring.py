"""One entry point per metric, on outputs that already exist (ours or anyone's): `score_metric`.

Text metrics take {sample id: prediction} and {sample id: [reference, ...]}. Media metrics take folders (or
{id: path} maps) of files named by sample id: FID and FAD compare the generated set with a reference set, CLIP score
and CLIPSIM compare each generated file with its caption ({id: caption}).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import DataError
from ..json_files import read_json
from .tasks import METRICS

__all__ = ["ScoreResult", "read_json_object", "score_metric", "score_task"]

FID_FRAMES_PER_VIDEO = 16  # frames taken evenly from each video for the frame-level FID of text-to-video


@dataclass
class ScoreResult:
    value: float | None
    notes: list[str] = field(default_factory=list)
    feature_model: dict[str, Any] | None = None


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    data = read_json(path, f"{what} file")
    if not isinstance(data, dict):
        raise DataError(f"{path}: {what} must be a JSON object mapping sample id -> value")
    return {str(k): v for k, v in data.items()}


def _texts(value: Any, what: str, as_list: bool) -> dict[str, Any]:
    data = read_json_object(value, what) if isinstance(value, (str, Path)) else {str(k): v for k, v in value.items()}
    if as_list:
        return {k: [v] if isinstance(v, str) else v for k, v in data.items()}
    return data


def _files(value: Any, modality: str) -> dict[str, Path]:
    from .media_metrics import media_files

    if isinstance(value, (str, Path)):
        return media_files(value, modality)
    return {str(k): Path(v) for k, v in value.items()}


def _modality_of(value: Any) -> str:
    """image or video: what a FID input holds."""
    from .media_metrics import MEDIA_SUFFIXES

    paths = list(value.values()) if isinstance(value, Mapping) else list(Path(value).iterdir()) \
        if Path(value).is_dir() else []
    suffixes = {Path(p).suffix.lower() for p in paths}
    return "video" if suffixes & set(MEDIA_SUFFIXES["video"]) else "image"


def _captions(value: Any, ids: list[str]) -> list[str]:
    captions = _texts(value, "captions", as_list=True)
    missing = [i for i in ids if i not in captions]
    if missing:
        raise DataError(f"no caption for sample(s) {missing[:5]}")
    return [captions[i][0] for i in ids]


def score_metric(metric: str, pred: Any, ref: Any, feature_model: str | Path | None = None) -> ScoreResult:
    """Score one metric; see the module docstring for the inputs."""
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if METRICS[metric][0] == "text":
        from . import text_metrics

        preds = _texts(pred, "predictions", as_list=False)
        refs = _texts(ref, "references", as_list=True)
        if metric == "vqa_accuracy":
            return ScoreResult(text_metrics.vqa_accuracy(preds, refs))
        if metric == "qa_accuracy":
            return ScoreResult(text_metrics.qa_accuracy(preds, refs))
        values, notes = text_metrics.caption_scores(preds, refs, [metric])
        return ScoreResult(values[metric], notes)

    from . import media_metrics as mm
    from .feature_models import resolve_feature_model

    fm = resolve_feature_model(metric, feature_model)
    described = fm.describe()
    if metric == "fid":
        gen = _images(_files(pred, _modality_of(pred)))
        real = _images(_files(ref, _modality_of(ref)))
        return ScoreResult(mm.fid(fm, gen, real), feature_model=described)
    if metric == "fad":
        gen, real = _files(pred, "audio"), _files(ref, "audio")
        return ScoreResult(mm.fad(fm, list(gen.values()), list(real.values())), feature_model=described)
    modality = "image" if metric == "clip_score" else "video"
    gen = _files(pred, modality)
    ids = list(gen)
    captions = _captions(ref, ids)
    if metric == "clip_score":
        return ScoreResult(mm.clip_score(fm, [mm.load_image(gen[i]) for i in ids], captions), feature_model=described)
    return ScoreResult(mm.clipsim(fm, [mm.load_video_frames(gen[i]) for i in ids], captions),
                       feature_model=described)


def _images(files: dict[str, Path]) -> list:
    """uint8 (3, H, W) images of image files, or of FID_FRAMES_PER_VIDEO frames of each video file."""
    import torch

    from .media_metrics import MEDIA_SUFFIXES, load_image, load_video_frames

    out = []
    for path in files.values():
        if path.suffix.lower() in MEDIA_SUFFIXES["image"]:
            out.append(load_image(path))
        else:
            out += [torch.from_numpy(f.copy()).permute(2, 0, 1) for f in load_video_frames(path, FID_FRAMES_PER_VIDEO)]
    return out


def score_task(task, samples: list, records: list[dict[str, Any]], outdir: Path,
               feature_models: Mapping[str, str] | None = None,
               metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The task's metrics on a finished run: {"metrics", "notes", "feature_models", "seconds"}."""
    import time

    from . import text_metrics

    began = time.perf_counter()
    feature_models = feature_models or {}
    wanted = list(metrics or task.metrics)
    unknown = [m for m in wanted if m not in task.metrics]
    if unknown:
        raise DataError(f"task {task.name} has no metric {unknown}; its metrics: {', '.join(task.metrics)}")
    preds = {r["id"]: r["text"] for r in records}
    values: dict[str, float | None] = {}
    notes: list[str] = []
    described: dict[str, Any] = {}
    if "references" in task.fields:
        values, notes = text_metrics.caption_scores(preds, {s.id: s.references for s in samples}, wanted)
    elif task.name == "vqa":
        values["vqa_accuracy"] = text_metrics.vqa_accuracy(preds, {s.id: s.answers for s in samples})
    elif task.name == "video_qa":
        values["qa_accuracy"] = text_metrics.qa_accuracy(preds, {s.id: s.answers for s in samples})
    else:
        generated = {r["id"]: Path(outdir) / r["file"] for r in records}
        references = {s.id: s.reference_media[task.output] for s in samples}
        captions = {s.id: s.caption for s in samples}
        for metric in wanted:
            result = score_metric(metric, generated, references if metric in ("fid", "fad") else captions,
                                  feature_models.get(metric))
            values[metric] = result.value
            described[metric] = result.feature_model
    return {"metrics": values, "notes": notes, "feature_models": described,
            "seconds": time.perf_counter() - began}
