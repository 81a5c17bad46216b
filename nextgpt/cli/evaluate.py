"""Evaluation: the NExT-GPT paper's benchmarks and metrics (code in nextgpt/evaluation/).

    python evaluate.py --model CKPT --task TASK --data MANIFEST --output-dir OUT [options]
        generate every sample's answer / medium with our inference code (resumable; several processes through
        scripts/evaluate.sh split the samples), then write OUT/metrics.json and OUT/report.md: our numbers, the
        paper's, and the setting

    python evaluate.py score --metric METRIC --pred P --ref R [--feature-model NAME_OR_PATH]
        score existing outputs (ours or anyone's) and print {"METRIC": value}
        text metrics: P = {"id": "prediction"} JSON, R = {"id": ["reference", ...]} JSON
        fid / fad: P and R = folders of files; clip_score / clipsim: P = folder of files named by sample id,
        R = {"id": "caption"} JSON

    python evaluate.py convert FORMAT --annotations FILE --media-root DIR --output MANIFEST [--task T] [...]
        a manifest from a benchmark's public annotation file (formats: coco_karpathy, flickr30k, nocaps, vqav2,
        msrvtt, msvd_qa, msrvtt_qa, audiocaps; see nextgpt/evaluation/converters.py)

Tasks: image_caption, video_caption, audio_caption, vqa, video_qa, t2i, t2v, t2a (manifests: data/README.md).
Metrics: bleu4, meteor, rouge_l, cider, vqa_accuracy, qa_accuracy, fid, clip_score, clipsim, fad.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nextgpt.cli.common import ArgumentParser
from nextgpt.errors import NextGPTError


def _feature_models(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise NextGPTError(f"--feature-model {item!r}: expected METRIC=NAME_OR_PATH (e.g. fid=/w/inception.pth)")
        metric, spec = item.split("=", 1)
        out[metric.strip()] = spec.strip()
    return out


def _score(argv: list[str]) -> int:
    from nextgpt.evaluation.tasks import METRICS

    parser = ArgumentParser(prog="evaluate.py score", description=__doc__)
    parser.add_argument("--metric", required=True, choices=list(METRICS))
    parser.add_argument("--pred", required=True, type=Path, help="predictions: a JSON file or a folder of media")
    parser.add_argument("--ref", required=True, type=Path, help="references: a JSON file or a folder of media")
    parser.add_argument("--feature-model", help="fid / clip_score / clipsim / fad: a model name or local path")
    args = parser.parse_args(argv)
    from nextgpt.evaluation.scoring import score_metric

    result = score_metric(args.metric, args.pred, args.ref, args.feature_model)
    for note in result.notes:
        sys.stderr.write(f"note: {note}\n")
    if result.feature_model is not None:
        sys.stderr.write(f"feature model: {result.feature_model['model']} ({result.feature_model['note']})\n")
    print(json.dumps({args.metric: result.value}))
    return 0 if result.value is not None else 3


def _convert(argv: list[str]) -> int:
    from nextgpt.evaluation.converters import CONVERTERS, convert

    parser = ArgumentParser(prog="evaluate.py convert", description=__doc__)
    parser.add_argument("format", choices=list(CONVERTERS))
    parser.add_argument("--annotations", required=True, type=Path, help="the public annotation file")
    parser.add_argument("--media-root", required=True, type=Path, help="folder of the dataset's images/videos/audio")
    parser.add_argument("--output", required=True, type=Path, help="the manifest to write")
    parser.add_argument("--task", help="which task's manifest (captioning formats also give t2i / t2v / t2a)")
    parser.add_argument("--split", help="Karpathy / MSR-VTT split (default test)")
    parser.add_argument("--questions", help="vqav2: the questions file")
    parser.add_argument("--mapping", help="msvd_qa: youtube_mapping.txt")
    parser.add_argument("--dataset", help="vqav2 format: the dataset name (vqav2, okvqa)")
    args = parser.parse_args(argv)
    samples = convert(args.format, args.annotations, args.media_root, args.output, task=args.task, split=args.split,
                      questions=args.questions, mapping=args.mapping, dataset=args.dataset)
    print(f"{args.output}: {len(samples)} samples")
    return 0


def _run(argv: list[str]) -> int:
    from nextgpt.evaluation.tasks import TASKS

    parser = ArgumentParser(prog="evaluate.py", description=__doc__)
    parser.add_argument("--model", required=True, type=Path, help="checkpoint directory (trained, merged or converted)")
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--data", required=True, type=Path, help="the manifest (a JSON list of samples)")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--max-new-tokens", type=int, help="default: the checkpoint's generate.max_new_tokens")
    parser.add_argument("--steps", type=int, help="denoising steps of the generated medium (default: checkpoint's)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance of the generated medium")
    parser.add_argument("--seed", type=int, default=0, help="sample k uses seed + k (default 0)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--prompt", help="prompt template for every sample ({question} / {caption} are filled in)")
    parser.add_argument("--metrics", help="comma-separated subset of the task's metrics")
    parser.add_argument("--feature-model", action="append", default=[], metavar="METRIC=NAME_OR_PATH",
                        help="feature model of a metric, e.g. fid=/w/weights-inception-2015-12-05-6726825d.pth "
                             "clipsim=/w/clip-vit-base-patch32 (repeatable)")
    parser.add_argument("--device", help="default: cuda:LOCAL_RANK with a GPU, else cpu")
    parser.add_argument("--dtype", default="fp32", help="fp32 (default), bf16 or fp16")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # launcher
    args = parser.parse_args(argv)
    if args.task not in TASKS:
        parser.error(f"unknown task {args.task!r}; known tasks: {', '.join(TASKS)}")
    from nextgpt.evaluation import EvalOptions, evaluate, format_table

    options = EvalOptions(max_new_tokens=args.max_new_tokens, steps=args.steps, guidance_scale=args.guidance_scale,
                          seed=args.seed, limit=args.limit, prompt=args.prompt,
                          feature_models=_feature_models(args.feature_model),
                          metrics=tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else None,
                          device=args.device, dtype=args.dtype)
    result = evaluate(args.model, args.task, args.data, args.output_dir, options)
    if result is not None:
        print(format_table([result]))
        for note in result["notes"]:
            print(f"note: {note}")
        print(f"written: {args.output_dir / 'metrics.json'}, {args.output_dir / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == ["score"]:
            return _score(argv[1:])
        if argv[:1] == ["convert"]:
            return _convert(argv[1:])
        return _run(argv)
    except NextGPTError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
