"""The evaluation tasks, their metrics, and the NExT-GPT paper's numbers to show beside ours.

A task says which media a sample gives the model, which output the model must generate, which reference fields a
manifest sample needs, the default prompt, and the metrics computed. Numbers are stored in the libraries' own scale
(pycocoevalcap's CIDEr 1.249, an accuracy 0.667); `DISPLAY_SCALE` turns them into the paper's scale for the report.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["DISPLAY_SCALE", "LOWER_IS_BETTER", "METRICS", "PAPER", "PAPER_SOURCE", "TASKS", "Task", "get_task",
           "paper_values"]


@dataclass(frozen=True)
class Task:
    name: str
    inputs: tuple[str, ...]  # media fields of a sample given to the model ("image", "video", "audio")
    output: str | None  # the modality the model must generate (None: a text answer)
    fields: tuple[str, ...]  # text fields a sample must have besides `id` and the media
    references: tuple[str, ...]  # reference media fields (generation tasks: real media of the caption)
    prompt: str  # default prompt; {question} / {caption} are filled from the sample
    metrics: tuple[str, ...]
    about: str


_CAPTION_METRICS = ("bleu4", "meteor", "rouge_l", "cider")

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("image_caption", ("image",), None, ("references",), (), "Give a short caption for the image.",
         _CAPTION_METRICS, "image captioning (COCO Karpathy test, Flickr30K, NoCaps)"),
    Task("video_caption", ("video",), None, ("references",), (), "Give a short caption for the video.",
         _CAPTION_METRICS, "video captioning (MSR-VTT)"),
    Task("audio_caption", ("audio",), None, ("references",), (), "Give a short caption for the audio.",
         _CAPTION_METRICS, "audio captioning (AudioCaps)"),
    Task("vqa", ("image",), None, ("question", "answers"), (),
         "{question}\nAnswer the question using a single word or phrase.", ("vqa_accuracy",),
         "visual question answering (VQAv2, VizWiz, OKVQA)"),
    Task("video_qa", ("video",), None, ("question", "answers"), (),
         "{question}\nAnswer the question using a single word or phrase.", ("qa_accuracy",),
         "open-ended video question answering (MSVD-QA, MSRVTT-QA)"),
    Task("t2i", (), "image", ("caption",), ("image",), "Please create a picture of {caption}.",
         ("fid", "clip_score"), "text-to-image generation (COCO captions)"),
    Task("t2v", (), "video", ("caption",), ("video",), "Please make a short video of {caption}.",
         ("clipsim", "fid"), "text-to-video generation (MSR-VTT)"),
    Task("t2a", (), "audio", ("caption",), ("audio",), "Please make a sound clip of {caption}.", ("fad",),
         "text-to-audio generation (AudioCaps)"),
)}

#: every metric `evaluate.py score` knows, with its input kind and a one-line description
METRICS: dict[str, tuple[str, str]] = {
    "bleu4": ("text", "BLEU-4 (pycocoevalcap, PTB-tokenized)"),
    "meteor": ("text", "METEOR 1.5 (pycocoevalcap; needs Java)"),
    "rouge_l": ("text", "ROUGE-L (pycocoevalcap)"),
    "cider": ("text", "CIDEr-D as pycocoevalcap's Cider (PTB-tokenized)"),
    "vqa_accuracy": ("text", "VQA accuracy with the official answer normalisation (10 human answers)"),
    "qa_accuracy": ("text", "open-ended QA accuracy: normalised exact match with a reference answer"),
    "fid": ("media", "Frechet distance of image (or video-frame) features, Inception-v3 by default"),
    "clip_score": ("media", "CLIP score (torchmetrics): 100 x cosine(image, caption), mean over images"),
    "clipsim": ("media", "CLIPSIM: CLIP score of every frame with the caption, mean over frames, then videos"),
    "fad": ("media", "Frechet audio distance of audio embeddings (CLAP by default)"),
}
LOWER_IS_BETTER = {"fid", "fad"}
#: library scale -> the paper's scale
DISPLAY_SCALE = {"bleu4": 100.0, "meteor": 100.0, "rouge_l": 100.0, "cider": 100.0, "vqa_accuracy": 100.0,
                 "qa_accuracy": 100.0, "fid": 1.0, "clip_score": 1.0, "clipsim": 1.0, "fad": 1.0}

PAPER_SOURCE = "NExT-GPT, arXiv 2309.05519 v3 (Tables 2-4 and 8-9)"
#: (task, dataset) -> {metric: {setting: value in the paper's scale}}
PAPER: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("t2i", "coco"): {"fid": {"zero-shot": 11.18, "fine-tuned": 10.07}},
    ("t2a", "audiocaps"): {"fad": {"zero-shot": 1.74, "fine-tuned": 1.68}},
    ("t2v", "msrvtt"): {"clipsim": {"zero-shot": 30.96, "fine-tuned": 31.97}, "fid": {"reported": 12.69}},
    ("image_caption", "coco"): {"cider": {"reported": 124.9}},
    ("image_caption", "nocaps"): {"cider": {"reported": 123.7}},
    ("image_caption", "flickr30k"): {"cider": {"reported": 84.5}},
    ("vqa", "vqav2"): {"vqa_accuracy": {"reported": 66.7}},
    ("vqa", "vizwiz"): {"vqa_accuracy": {"reported": 48.4}},
    ("vqa", "okvqa"): {"vqa_accuracy": {"reported": 52.1}},
    ("video_caption", "msrvtt"): {"cider": {"reported": 76.2}},
    ("video_qa", "msvd_qa"): {"qa_accuracy": {"reported": 64.5}},
    ("video_qa", "msrvtt_qa"): {"qa_accuracy": {"reported": 61.4}},
    ("audio_caption", "audiocaps"): {"cider": {"reported": 81.3}},
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def paper_values(task: str, dataset: str | None) -> tuple[str | None, dict[str, dict[str, float]]]:
    """(the benchmark the paper's numbers are for, {metric: {setting: value}}). For a dataset the paper did not
    report (e.g. the synthetic held-out split) the task's paper numbers are returned with their benchmark named,
    so the report can show them as 'not comparable'."""
    if dataset is not None and (task, dataset) in PAPER:
        return dataset, PAPER[(task, dataset)]
    for (t, d), values in PAPER.items():
        if t == task:
            return d, values
    return None, {}
