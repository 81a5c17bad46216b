"""`evaluate(model, task, manifest, outdir)`: generate every sample's output with our inference code, then score.

Layout of OUT:

    parts/rank-R-of-W.jsonl   one line per finished sample, appended as each finishes (resuming reads every part)
    images/ videos/ audios/   the generated media of generation tasks, one file per sample id
    predictions.jsonl         all samples in manifest order (merged by rank 0)
    metrics.json, report.md   the scores, the paper's values and the setting (report.py)

Several processes started by a launcher (RANK / WORLD_SIZE in the environment: the DeepSpeed launcher of
`scripts/evaluate.sh`, torchrun, ...) split the samples round-robin; each writes its own part, rank 0 merges and
scores. A run started again skips every sample already in a part, whatever the world size that wrote it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError, NextGPTError
from .manifest import Sample, load_manifest
from .tasks import Task, get_task

logger = logging.getLogger(__name__)

__all__ = ["EvalOptions", "evaluate", "generate_part", "merge_parts", "read_parts"]

MEDIA_DIRS = {"image": "images", "video": "videos", "audio": "audios"}
MEDIA_EXT = {"image": "png", "video": "mp4", "audio": "wav"}
PREDICTIONS = "predictions.jsonl"


@dataclass
class EvalOptions:
    max_new_tokens: int | None = None  # None: the checkpoint's generate defaults
    steps: int | None = None  # denoising steps of the generated modality
    guidance_scale: float | None = None
    seed: int = 0  # sample k uses seed + k (k: its manifest position), whatever the number of processes
    limit: int | None = None  # only the first `limit` samples of the manifest
    prompt: str | None = None  # overrides the samples' and the task's prompt ({question} / {caption} filled in)
    feature_models: dict[str, str] = field(default_factory=dict)  # metric -> name or path
    metrics: tuple[str, ...] | None = None  # a subset of the task's metrics
    device: str | None = None  # None: cuda:LOCAL_RANK when there is a GPU, else cpu
    dtype: str = "fp32"


# ------------------------------------------------------------------------------------------------ parts


def read_parts(outdir: Path) -> dict[str, dict[str, Any]]:
    """Every finished sample of earlier (or other ranks') runs: {id: record}. A line cut by a kill is ignored."""
    done: dict[str, dict[str, Any]] = {}
    for part in sorted((outdir / "parts").glob("*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "id" in record:
                done.setdefault(str(record["id"]), record)
    return done


def _open_part(outdir: Path, rank: int, world: int):
    path = outdir / "parts" / f"rank-{rank}-of-{world}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # drop a line cut by a kill, so the next record starts on a line of its own
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[:data.rfind(b"\n") + 1])
    return open(path, "a", encoding="utf-8")


def _append(part, record: dict[str, Any]) -> None:
    part.write(json.dumps(record, ensure_ascii=False) + "\n")
    part.flush()
    os.fsync(part.fileno())


# ------------------------------------------------------------------------------------------------ generation


def _prompt(task: Task, sample: Sample, override: str | None) -> str:
    template = override or sample.prompt or task.prompt
    return template.replace("{question}", sample.question or "").replace("{caption}", sample.caption or "")


def _overrides(task: Task, options: EvalOptions, sample: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": options.seed + sample.index, "max_new_tokens": options.max_new_tokens}
    if task.output is None:
        out["max_outputs_per_modality"] = 0  # a text answer: no signal span is ever started
    else:
        out["max_outputs_per_modality"] = 1
        out[f"{task.output}_steps"] = options.steps
        out[f"{task.output}_guidance_scale"] = options.guidance_scale
    return out


def _only_output(generator, task: Task):
    """For a generation task: a logits hook that never lets the model start an output of another modality (it
    would only cost decoding time; the task scores the forced one)."""
    if task.output is None:
        return None
    signal = generator.model.signal
    banned = [ids[0] for modality, ids in signal.token_ids.items() if modality != task.output]

    def hook(step: int, logits: torch.Tensor) -> torch.Tensor:
        logits[..., banned] = float("-inf")
        return logits

    return hook


def _save_media(output, path: Path, video_fps: int) -> None:
    from ..generation import save_audio, save_image, save_video

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    if output.modality == "image":
        save_image(output.data, tmp)
    elif output.modality == "audio":
        save_audio(output.data, tmp, output.sample_rate or 16000)
    else:
        save_video(output.data, tmp, video_fps)
    os.replace(tmp, path)


def _generate(generator, task: Task, sample: Sample, options: EvalOptions, outdir: Path) -> dict[str, Any]:
    from ..generation import Request

    request = Request(_prompt(task, sample, options.prompt), images=[p for m, p in sample.media.items()
                                                                     if m == "image"],
                      videos=[p for m, p in sample.media.items() if m == "video"],
                      audios=[p for m, p in sample.media.items() if m == "audio"])
    try:
        result = generator.generate(request, force_modality=task.output, logits_hook=_only_output(generator, task),
                                    **_overrides(task, options, sample))
    except NextGPTError as err:
        raise type(err)(f"sample {sample.id!r} (#{sample.index}): {err}") from err
    record: dict[str, Any] = {"id": sample.id, "index": sample.index, "text": result.text,
                              "finish_reason": result.finish_reason, "file": None}
    if task.output is not None:
        output = next(o for o in result.outputs if o.modality == task.output)  # forced: always there
        rel = f"{MEDIA_DIRS[task.output]}/{sample.id}.{MEDIA_EXT[task.output]}"
        _save_media(output, outdir / rel, generator.options.video_fps)
        record["file"] = rel
    return record


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether a process group was started here) from the launcher's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():  # one GPU per process (NCCL's barrier uses the current device)
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return dist.get_rank(), dist.get_world_size(), False


def _device(options: EvalOptions) -> str:
    if options.device:
        return options.device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"


def generate_part(model: str | Path, task: Task, samples: list[Sample], outdir: Path, options: EvalOptions,
                  rank: int = 0, world: int = 1, generator=None) -> tuple[int, int, Any]:
    """Generate this rank's unfinished samples (with `generator`, or one loaded from `model`); returns (generated
    now, skipped as already done, the generator or None when nothing was left)."""
    from ..dtypes import as_dtype
    from ..generation import NextGPTGenerator

    done = read_parts(outdir)
    mine = [s for s in samples if s.index % world == rank]
    todo = [s for s in mine if s.id not in done]
    if not todo:
        return 0, len(mine), generator
    if len(todo) < len(mine):
        logger.info("rank %d: resuming, %d of %d samples already done", rank, len(mine) - len(todo), len(mine))
    if generator is None:
        generator = NextGPTGenerator.from_pretrained(model, device=_device(options), dtype=as_dtype(options.dtype))
    with _open_part(outdir, rank, world) as part:
        for k, sample in enumerate(todo):
            _append(part, _generate(generator, task, sample, options, outdir))
            logger.info("rank %d: %s %d/%d (%s)", rank, task.name, k + 1, len(todo), sample.id)
    return len(todo), len(mine) - len(todo), generator


def merge_parts(outdir: Path, samples: list[Sample]) -> list[dict[str, Any]]:
    """Every sample's record in manifest order, written to predictions.jsonl (rank 0, after every rank ended)."""
    done = read_parts(outdir)
    missing = [s.id for s in samples if s.id not in done]
    if missing:
        raise DataError(f"{outdir / 'parts'}: no output for sample(s) {missing[:5]} (a rank failed?); run again "
                        f"to generate them")
    records = [done[s.id] for s in samples]
    tmp = outdir / f".tmp-{PREDICTIONS}"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, outdir / PREDICTIONS)
    return records


# ------------------------------------------------------------------------------------------------ entry point


def _setting(task: Task, options: EvalOptions, model: str | Path, samples: list[Sample]) -> dict[str, Any]:
    """What the numbers depend on besides the model: prompt, decoding, steps, guidance, seed, sample count."""
    from ..generation import resolve_options
    from ..model.checkpoint_format import read_checkpoint_config

    first = samples[0]
    base = read_checkpoint_config(model).generate  # the generation defaults the run used
    opts = resolve_options(base, **{k: v for k, v in _overrides(task, options, first).items() if k != "seed"})
    out: dict[str, Any] = {
        "prompt": options.prompt or (first.prompt and "per sample (manifest)") or task.prompt,
        "decoding": "greedy" if opts.top_k == 1 or opts.temperature == 0 else
        f"sampling (temperature {opts.temperature}, top_k {opts.top_k}, top_p {opts.top_p})",
        "max_new_tokens": opts.max_new_tokens, "seed": f"{options.seed} + sample index", "samples": len(samples),
    }
    if task.output is not None:
        m = task.output
        out.update(forced_output=m, steps=getattr(opts, f"{m}_steps"),
                   guidance_scale=getattr(opts, f"{m}_guidance_scale"))
        if m == "image":
            out["size"] = [opts.image_height, opts.image_width]
        elif m == "video":
            out.update(size=[opts.video_height, opts.video_width], frames=opts.video_frames)
        else:
            out["audio_length_s"] = opts.audio_length_s
    return out


def evaluate(model: str | Path, task: str, manifest: str | Path, outdir: str | Path,
             options: EvalOptions | None = None, generator=None) -> dict[str, Any] | None:
    """Generate, merge and score one task; returns the metrics.json content on rank 0 (None on other ranks).
    `generator`: an already loaded `NextGPTGenerator` of `model` (several tasks in one process)."""
    from .report import write_task_report
    from .scoring import score_task

    options = options or EvalOptions()
    task_def = get_task(task)
    samples = load_manifest(manifest, task_def)
    if options.limit is not None:
        samples = samples[:options.limit]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rank, world, own_group = _distributed()
    began = time.perf_counter()
    try:
        generated, skipped, generator = generate_part(model, task_def, samples, outdir, options, rank, world,
                                                      generator)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank != 0:
        return None
    seconds_generation = time.perf_counter() - began
    records = merge_parts(outdir, samples)
    scored = score_task(task_def, samples, records, outdir, options.feature_models, options.metrics)
    result = {
        "task": task_def.name, "dataset": samples[0].dataset, "model": str(model), "manifest": str(manifest),
        "samples": len(samples), "world_size": world,
        "metrics": scored["metrics"], "feature_models": scored["feature_models"], "notes": scored["notes"],
        "setting": _setting(task_def, options, model, samples),
        "generated_now": generated, "resumed": skipped,
        "seconds": {"generation": round(seconds_generation, 2), "scoring": round(scored["seconds"], 2)},
    }
    write_task_report(outdir, result)
    return result

