"""Manifests from the public annotation files of the paper's benchmarks (the formats as distributed).

    coco_karpathy   dataset_coco.json of Karpathy's splits (images[].filepath/filename/split/cocoid/sentences)
                    -> image_caption, or t2i (the first caption of each image, the image as reference)
    flickr30k       dataset_flickr30k.json of Karpathy's splits (same layout, no filepath)
    nocaps          nocaps_val_4500_captions.json (COCO format: images[] + annotations[])
    vqav2           v2_OpenEnded_mscoco_*_questions.json + v2_mscoco_*_annotations.json (also OK-VQA's files)
    msrvtt          test_videodatainfo.json (videos[] with split, sentences[]) -> video_caption or t2v
    msvd_qa         test_qa.json + youtube_mapping.txt (clip name -> vidN); msrvtt_qa: test_qa.json
    audiocaps       test.csv (audiocap_id, youtube_id, start_time, caption) -> audio_caption or t2a

Media paths are written relative to the manifest's folder; `media_root` is where the dataset's files are.
"""
from __future__ import annotations

import csv
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from ..json_files import read_json
from .manifest import write_manifest

__all__ = ["CONVERTERS", "convert"]


def _key(data: Any, key: str, path: Any) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise DataError(f"{path}: expected a JSON object with {key!r} (is this the right annotation file?)")
    return data[key]


def _caption_or_generation(samples: list[dict[str, Any]], task: str, modality: str, gen_task: str
                           ) -> list[dict[str, Any]]:
    """Captioning samples as they are, or generation samples: the first reference as the caption and the medium
    as the reference."""
    if task == f"{modality}_caption":
        return samples
    if task != gen_task:
        raise DataError(f"this annotation format gives {modality}_caption or {gen_task} manifests, not {task!r}")
    return [{"id": s["id"], "dataset": s["dataset"], "task": gen_task, "caption": s["references"][0],
             modality: s[modality]} for s in samples]


def coco_karpathy(annotations: str, media_root: str, rel: Callable[[str], str], task: str = "image_caption",
                  split: str = "test", dataset: str = "coco", **_: Any) -> list[dict[str, Any]]:
    images = _key(read_json(annotations, "annotation file"), "images", annotations)
    samples = []
    for im in images:
        if im.get("split") != split:
            continue
        name = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"]
        sid = str(im.get("cocoid", im.get("imgid", Path(im["filename"]).stem)))
        samples.append({"id": sid, "dataset": dataset, "task": "image_caption", "image": rel(name),
                        "references": [s["raw"] for s in im["sentences"]]})
    return _caption_or_generation(samples, task, "image", "t2i")


def flickr30k(annotations: str, media_root: str, rel: Callable[[str], str], task: str = "image_caption",
              split: str = "test", **_: Any) -> list[dict[str, Any]]:
    return coco_karpathy(annotations, media_root, rel, task, split, dataset="flickr30k")


def nocaps(annotations: str, media_root: str, rel: Callable[[str], str], task: str = "image_caption",
           **_: Any) -> list[dict[str, Any]]:
    data = read_json(annotations, "annotation file")
    refs: dict[Any, list[str]] = {}
    for ann in _key(data, "annotations", annotations):
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    samples = [{"id": str(im["id"]), "dataset": "nocaps", "task": "image_caption", "image": rel(im["file_name"]),
                "references": refs.get(im["id"], [])} for im in _key(data, "images", annotations)]
    return _caption_or_generation(samples, task, "image", "t2i")


def vqav2(annotations: str, media_root: str, rel: Callable[[str], str], questions: str | None = None,
          image_pattern: str = "COCO_val2014_{image_id:012d}.jpg", dataset: str = "vqav2",
          **_: Any) -> list[dict[str, Any]]:
    if questions is None:
        raise DataError("vqav2: --questions (the *_questions.json file) is needed besides the annotations")
    answers = {a["question_id"]: [x["answer"] for x in a["answers"]]
               for a in _key(read_json(annotations, "annotation file"), "annotations", annotations)}
    samples = []
    for q in _key(read_json(questions, "question file"), "questions", questions):
        if q["question_id"] not in answers:
            raise DataError(f"{annotations}: no answers for question {q['question_id']}")
        samples.append({"id": str(q["question_id"]), "dataset": dataset, "task": "vqa",
                        "image": rel(image_pattern.format(image_id=q["image_id"])), "question": q["question"],
                        "answers": answers[q["question_id"]]})
    return samples


def msrvtt(annotations: str, media_root: str, rel: Callable[[str], str], task: str = "video_caption",
           split: str = "test", video_ext: str = "mp4", **_: Any) -> list[dict[str, Any]]:
    data = read_json(annotations, "annotation file")
    refs: dict[str, list[str]] = OrderedDict()
    for video in _key(data, "videos", annotations):
        if video.get("split", split) == split:
            refs[video["video_id"]] = []
    for sentence in _key(data, "sentences", annotations):
        if sentence["video_id"] in refs:
            refs[sentence["video_id"]].append(sentence["caption"])
    samples = [{"id": vid, "dataset": "msrvtt", "task": "video_caption", "video": rel(f"{vid}.{video_ext}"),
                "references": captions} for vid, captions in refs.items()]
    return _caption_or_generation(samples, task, "video", "t2v")


def msvd_qa(annotations: str, media_root: str, rel: Callable[[str], str], mapping: str | None = None,
            video_ext: str = "avi", **_: Any) -> list[dict[str, Any]]:
    names: dict[int, str] = {}
    if mapping is None:
        raise DataError("msvd_qa: --mapping (youtube_mapping.txt: clip name -> vidN) is needed")
    for line in Path(mapping).read_text().splitlines():
        if line.strip():
            clip, vid = line.split()
            names[int(vid.removeprefix("vid"))] = clip
    return [{"id": str(q["id"]), "dataset": "msvd_qa", "task": "video_qa",
             "video": rel(f"{names[q['video_id']]}.{video_ext}"), "question": q["question"], "answers": [q["answer"]]}
            for q in read_json(annotations, "annotation file")]


def msrvtt_qa(annotations: str, media_root: str, rel: Callable[[str], str], video_ext: str = "mp4",
              **_: Any) -> list[dict[str, Any]]:
    return [{"id": str(q["id"]), "dataset": "msrvtt_qa", "task": "video_qa",
             "video": rel(f"video{q['video_id']}.{video_ext}"), "question": q["question"], "answers": [q["answer"]]}
            for q in read_json(annotations, "annotation file")]


def audiocaps(annotations: str, media_root: str, rel: Callable[[str], str], task: str = "audio_caption",
              audio_pattern: str = "{youtube_id}.wav", **_: Any) -> list[dict[str, Any]]:
    path = Path(annotations)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    refs: dict[str, list[str]] = OrderedDict()
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if "youtube_id" not in row or "caption" not in row:
                raise DataError(f"{path}: expected the columns audiocap_id, youtube_id, start_time, caption")
            refs.setdefault(row["youtube_id"], []).append(row["caption"])
    samples = [{"id": yid, "dataset": "audiocaps", "task": "audio_caption",
                "audio": rel(audio_pattern.format(youtube_id=yid)), "references": captions}
               for yid, captions in refs.items()]
    return _caption_or_generation(samples, task, "audio", "t2a")


CONVERTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "coco_karpathy": coco_karpathy, "flickr30k": flickr30k, "nocaps": nocaps, "vqav2": vqav2, "msrvtt": msrvtt,
    "msvd_qa": msvd_qa, "msrvtt_qa": msrvtt_qa, "audiocaps": audiocaps,
}


def convert(fmt: str, annotations: str | Path, media_root: str | Path, output: str | Path,
            **options: Any) -> list[dict[str, Any]]:
    """Write the manifest of one annotation file; `options`: task, split, questions, mapping, dataset, ..."""
    if fmt not in CONVERTERS:
        raise DataError(f"unknown annotation format {fmt!r}; known: {', '.join(CONVERTERS)}")
    output = Path(output)
    base = output.resolve().parent

    def rel(name: str) -> str:
        return os.path.relpath(Path(media_root).resolve() / name, base)

    options = {k: v for k, v in options.items() if v is not None}
    try:
        samples = CONVERTERS[fmt](str(annotations), str(media_root), rel, **options)
    except (KeyError, TypeError) as err:
        raise DataError(f"{annotations}: not a {fmt} annotation file (missing {err})") from None
    if not samples:
        raise DataError(f"{annotations}: no samples (wrong --split?)")
    write_manifest(output, samples)
    return samples
