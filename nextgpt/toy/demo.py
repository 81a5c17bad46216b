"""The embedded default's steps (`scripts/demo.sh` runs them through `nextgpt demo prepare|predict|report`).

    prepare   tiny models (if missing), the synthetic dataset, every caption embedding the catalog needs
    predict   a text answer, an image, a sound, a video, and an answer about an input image
    evaluate  every evaluation task on the synthetic held-out split, scored with tiny random feature models, and
              the plot of the training and validation losses of each stage
    report    where everything is, and each stage's losses at the start and at the end (from TensorBoard)

Every data path comes from the dataset catalog (`nextgpt/dataset/catalog.py`), like the synthetic dataset's.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from nextgpt.constants import MODALITIES
from nextgpt.dataset.catalog import CATALOG

logger = logging.getLogger(__name__)


def precompute_catalog_embeddings(data_root: str | Path, decoders: dict[str, str | Path],
                                  names: list[str] | None = None) -> int:
    """Caption embeddings of every catalog dataset (or of `names`) that has an embedding folder and whose JSON
    exists under `data_root`, with each modality's decoder. Returns how many files were written."""
    from nextgpt.dataset.embeddings import precompute_caption_embeddings
    from nextgpt.dataset.mixture import resolve_params
    from nextgpt.json_files import read_json_list
    from nextgpt.model.multimodal_decoder import load_decoder

    loaded = {}
    written = 0
    for name in names or list(CATALOG):
        params = resolve_params(CATALOG[name].params, data_root)
        data_path, embed = params.get("data_path"), params.get("embed_folder")
        if embed is None or data_path is None or not Path(data_path).is_file():
            continue
        rows = [r for r in read_json_list(data_path) if isinstance(r, dict)]
        for modality in MODALITIES:
            if not any(f"{modality}_captions" in r or f"{modality}_name" in r for r in rows):
                continue
            if modality not in loaded:
                loaded[modality] = load_decoder(modality, decoders[modality])
            report = precompute_caption_embeddings(data_path, modality, loaded[modality], embed)
            written += report.written
    return written


def prepare(models: Path, data: Path, seed: int = 0) -> None:
    from .decoders import TINY_DECODER_DIRS
    from .feature_models import build_tiny_feature_models
    from .models import build_tiny_models
    from .pretrain import PRETRAINED_MARKER, pretrain_tiny_llm
    from .synthetic_data import generate

    if not (models / "llm" / "config.json").is_file():
        logger.info("building the tiny models in %s", models)
        build_tiny_models(models, seed=seed)
    if not all((models / FEATURE_MODELS_DIR / name / "config.json").is_file() for name in ("clip", "clap")):
        logger.info("building the tiny feature models of the metrics in %s", models / FEATURE_MODELS_DIR)
        build_tiny_feature_models(models / FEATURE_MODELS_DIR, seed=seed)
    logger.info("writing the synthetic dataset to %s", data)
    generate(data, seed=seed)
    written = precompute_catalog_embeddings(data, {m: models / f for m, f in TINY_DECODER_DIRS.items()})
    logger.info("caption embeddings: %d written", written)
    if not (models / "llm" / PRETRAINED_MARKER).is_file():
        conversations = [r["conversations"] for entry in PRETRAIN_SETS for r in _records(data, entry)[0]]
        marker = pretrain_tiny_llm(models / "llm", conversations, seed=seed)
        logger.info("the tiny LLM learnt the synthetic training conversations (%d): loss %.3f -> %.3f",
                    marker["conversations"], marker["loss_first_tenth"], marker["loss_last_tenth"])


# The demo's requests (name -> catalog entry): the first request of each synthetic instruction set (the
# distribution the tiny model was tuned on), and a question about an input image.
DEMO_REQUESTS = {
    "text": "alpaca_instruction",
    "image": "image_instruction",
    "audio": "audio_instruction",
    "video": "video_instruction",
    "image_question": "llava_instruction",
}
# The training sets whose conversations the tiny LLM learns before the stages (nextgpt/toy/pretrain.py): stage 3's.
PRETRAIN_SETS = ("image_instruction", "video_instruction", "audio_instruction", "llava_instruction",
                 "alpaca_instruction", "mosit_instruction")
# The sets `answer_check` asks from (name -> catalog entry).
CHECK_SETS = {
    "image": "image_instruction",
    "video": "video_instruction",
    "audio": "audio_instruction",
    "text": "alpaca_instruction",
}


def _records(data: Path, entry: str) -> tuple[list[dict], dict]:
    """The records of catalog entry `entry` under the data root `data`, and the entry's resolved paths."""
    from nextgpt.dataset.mixture import resolve_params

    params = resolve_params(CATALOG[entry].params, data)
    return json.loads(Path(params["data_path"]).read_text()), params


def demo_requests(data: Path) -> list[tuple[str, str, list[Path]]]:
    """(name, prompt, input images) of the demo's requests, read from the synthetic dataset."""
    out = []
    for name, entry in DEMO_REQUESTS.items():
        records, params = _records(data, entry)
        record = records[0]
        prompt = record["conversations"][0]["value"]
        images = [params["image_folder"] / n for n in record.get("input_image", [])]
        out.append((name, prompt, images))
    return out


def answer_check(generator, data: Path, per_set: int = 8) -> dict[str, tuple[int, int]]:
    """How often the model, unforced, answers the first `per_set` requests of each instruction set as trained:
    {set: (answers with the requested output, or without any output for text requests; requests asked)}."""
    fast = {"image_steps": 1, "video_steps": 1, "audio_steps": 1}  # only which outputs appear matters here
    out = {}
    for name, entry in CHECK_SETS.items():
        records = _records(data, entry)[0][:per_set]
        good = 0
        for record in records:
            result = generator.generate(record["conversations"][0]["value"], **fast)
            kinds = {o.modality for o in result.outputs}
            good += (not kinds) if name == "text" else (name in kinds)
        out[name] = (good, len(records))
    return out


def predict(model: Path, outdir: Path, data: Path) -> list[dict]:
    """Run the demo's requests on a trained model; each request's files go to `outdir/<name>/`. A generation
    request the model answers without its modality is reported, then asked again with that output forced."""
    from nextgpt.generation import NextGPTGenerator, write_result

    generator = NextGPTGenerator.from_pretrained(model)
    results = []
    for name, prompt, images in demo_requests(data):
        result = generator.generate(prompt, images=images)
        wanted = name if name in MODALITIES else None
        note = ""
        if wanted and not result.media(wanted):
            article = "an" if wanted[0] in "aeiou" else "a"
            note = f" (the model answered without {article} {wanted}; asked again with --force-modality {wanted})"
            result = generator.generate(prompt, images=images, force_modality=wanted)
        summary = write_result(result, outdir / name, video_fps=generator.options.video_fps)
        results.append({"request": name, "prompt": prompt, "forced": bool(note), **summary})
        files = [str(outdir / name / f) for key in ("images", "audios", "videos") for f in summary[key]]
        print(f"[{name}] {prompt!r}{note}\n    -> {summary['text']!r}\n       {' '.join(files)}")
    check = answer_check(generator, data)
    print("unforced answers to training requests: " + ", ".join(
        f"{name} {good}/{n} {'without media' if name == 'text' else f'with the {name}'}"
        for name, (good, n) in check.items()))
    (outdir / "answer_check.json").write_text(json.dumps(check, indent=1) + "\n")
    return results


FEATURE_MODELS_DIR = "feature_models"  # under the tiny models folder: clip/, clap/
#: the demo evaluation's size and settings (docs/performance.md: at most 60 s on 2 cores)
EVAL_SAMPLES_PER_TASK = 6
EVAL_MAX_NEW_TOKENS = 64  # the longest held-out answer is 24 tokens; room for the 47-token video span
EVAL_CAPTION_METRICS = ("bleu4", "rouge_l", "cider")  # METEOR's Java start alone takes 5-15 s


def evaluate(model: Path, data: Path, models: Path, outdir: Path, root: Path | None = None) -> dict:
    """Every evaluation task on the synthetic held-out split (`data`/heldout/eval), one loaded model for all;
    generation metrics with the tiny random CLIP / CLAP under `models`. Writes `outdir`/<task>/,
    `outdir`/metrics.json, report.md and, when the stage runs are under `root`, losses.png. Prints the table."""
    import time

    from nextgpt.evaluation import EvalOptions, TASKS, evaluate as evaluate_task, plot_loss_curves, write_summary
    from nextgpt.generation import NextGPTGenerator

    from .synthetic_heldout import EVAL_FOLDER

    began = time.perf_counter()
    features = models / FEATURE_MODELS_DIR
    feature_models = {"fid": str(features / "clip"), "clip_score": str(features / "clip"),
                      "clipsim": str(features / "clip"), "fad": str(features / "clap")}
    generator = NextGPTGenerator.from_pretrained(model)
    results = []
    for name, task in TASKS.items():
        metrics = EVAL_CAPTION_METRICS if task.output is None and "references" in task.fields else None
        options = EvalOptions(limit=EVAL_SAMPLES_PER_TASK, max_new_tokens=EVAL_MAX_NEW_TOKENS,
                              feature_models=feature_models, metrics=metrics)
        results.append(evaluate_task(model, name, data / EVAL_FOLDER / f"{name}.json", outdir / name, options,
                                     generator=generator))
    notes = ["data: the synthetic held-out split (never trained on); the paper's numbers are for its benchmarks",
             "FID, CLIP score, CLIPSIM and FAD use tiny RANDOM feature models (nextgpt.toy.feature_models): their "
             "numbers only show that the pipeline runs",
             "METEOR is left out of the demo (its Java start takes seconds); `evaluate.py` computes it"]
    plot = None
    if root is not None and any((root / s / "logs").is_dir() for s in ("stage_1", "stage_2", "stage_3")):
        plot = plot_loss_curves({s.replace("_", " "): root / s for s in ("stage_1", "stage_2", "stage_3")},
                                outdir / "losses.png")
    seconds = round(time.perf_counter() - began, 1)
    table = write_summary(outdir, results, "Demo evaluation (tiny model, synthetic held-out split)", notes,
                          extra={"seconds": seconds, "model": str(model),
                                 "plot": str(plot) if plot else None})
    print(table)
    for note in notes:
        print(f"note: {note}")
    print(f"evaluation written to {outdir} (metrics.json, report.md{', losses.png' if plot else ''}) in {seconds} s")
    return {"results": results, "seconds": seconds}


def stage_losses(run_dir: Path) -> dict[str, tuple[float, float, int]]:
    """{tag: (mean of the first tenth, mean of the last tenth, number of points)} of a run's loss curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    acc = EventAccumulator(str(run_dir / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        if not tag.startswith("loss/"):
            continue
        values = [e.value for e in acc.Scalars(tag)]
        k = max(1, len(values) // 10)
        out[tag] = (sum(values[:k]) / k, sum(values[-k:]) / k, len(values))
    return out


def report(root: Path) -> int:
    """Print where the demo's outputs are and how each stage's losses moved (mean of the first tenth of the
    steps -> mean of the last tenth). Returns 1 if a stage's total loss did not fall."""
    failed, flat_denoising = 0, False
    lines = [f"demo outputs under {root}:"]
    for stage in ("stage_1", "stage_2", "stage_3"):
        run = root / stage
        if not run.is_dir():
            continue
        lines.append(f"  {run}/  (weights: model.safetensors{', adapter/' if (run / 'adapter').is_dir() else ''};"
                     f" TensorBoard: {run / 'logs'})")
        for tag, (first, last, n) in sorted(stage_losses(run).items()):
            lines.append(f"      {tag:<22} {first:8.4f} -> {last:8.4f}  ({n} steps, "
                         f"{'falling' if last < first else 'not falling'})")
            failed += tag == "loss/total" and last >= first
            flat_denoising |= tag.endswith("_denoise") and last >= first
    for extra in ("merged", "predictions", "eval"):
        if (root / extra).is_dir():
            lines.append(f"  {root / extra}/" + ("  (metrics.json, report.md, losses.png)" if extra == "eval" else ""))
            lines += [f"      {p.relative_to(root / extra)}" for p in sorted((root / extra).rglob("*"))
                      if extra == "predictions" and p.is_file()]
    if flat_denoising:
        lines.append("note: a frozen RANDOM tiny decoder barely uses its conditioning, so a denoising loss can stay"
                     " flat in the demo (measured in docs/performance.md); real, trained decoders do use it")
    print("\n".join(lines))
    return 1 if failed else 0

