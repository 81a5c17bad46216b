"""The embedded default's helpers (`scripts/demo.sh` calls them): data preparation and the closing report.

    python -m nextgpt.demo prepare --models checkpoints/tiny --data data/synthetic
        tiny models (if missing), the synthetic dataset, every caption embedding the catalog needs
    python -m nextgpt.demo predict --model checkpoints/demo/merged --output-dir checkpoints/demo/predictions
        a text answer, an image, a sound, a video, and an answer about an input image
    python -m nextgpt.demo report checkpoints/demo
        where everything is, and each stage's losses at the start and at the end (from TensorBoard)
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .constants import MODALITIES

logger = logging.getLogger(__name__)

DECODER_FOLDERS = {"image": "sd", "video": "zeroscope", "audio": "audioldm"}


def precompute_catalog_embeddings(data_root: str | Path, decoders: dict[str, str | Path],
                                  names: list[str] | None = None) -> int:
    """Caption embeddings of every catalog dataset (or of `names`) that has an embedding folder and whose JSON
    exists under `data_root`, with each modality's decoder. Returns how many files were written."""
    from .dataset.mixture import resolve_params
    from .dataset.catalog import CATALOG
    from .dataset.embeddings import precompute_caption_embeddings, read_json_list
    from .model.multimodal_decoder import load_decoder

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
    from .dataset.synthetic import generate
    from .tiny import build_tiny_models

    if not (models / "llm" / "config.json").is_file():
        logger.info("building the tiny models in %s", models)
        build_tiny_models(models, seed=seed)
    logger.info("writing the synthetic dataset to %s", data)
    generate(data, seed=seed)
    written = precompute_catalog_embeddings(data, {m: models / f for m, f in DECODER_FOLDERS.items()})
    logger.info("caption embeddings: %d written", written)


# The demo's requests: the first request of each synthetic instruction set (the distribution the tiny model was
# tuned on), and a question about an input image.
DEMO_REQUESTS = [
    ("text", "IT_data/T+X-T_data/alpaca/preprocessed_alpaca.json"),
    ("image", "IT_data/T-T+X_data/image_instruction_tuning.json"),
    ("audio", "IT_data/T-T+X_data/audio_instruction_tuning.json"),
    ("video", "IT_data/T-T+X_data/video_instruction_tuning.json"),
    ("image_question", "IT_data/T+X-T_data/llava/preprocessed_llava.json"),
]


def demo_requests(data: Path) -> list[tuple[str, str, list[Path]]]:
    """(name, prompt, input images) of the demo's requests, read from the synthetic dataset."""
    import json

    out = []
    for name, path in DEMO_REQUESTS:
        record = json.loads((data / path).read_text())[0]
        prompt = record["conversations"][0]["value"]
        images = [data / Path(path).parent / "images" / n for n in record.get("input_image", [])]
        out.append((name, prompt, images))
    return out


def answer_check(generator, data: Path, per_set: int = 8) -> dict[str, tuple[int, int]]:
    """How often the model, unforced, answers the first `per_set` requests of each instruction set as trained:
    {set: (answers with the requested output, or without any output for text requests; requests asked)}."""
    import json

    checks = {"image": "IT_data/T-T+X_data/image_instruction_tuning.json",
              "video": "IT_data/T-T+X_data/video_instruction_tuning.json",
              "audio": "IT_data/T-T+X_data/audio_instruction_tuning.json",
              "text": "IT_data/T+X-T_data/alpaca/preprocessed_alpaca.json"}
    fast = {"image_steps": 1, "video_steps": 1, "audio_steps": 1}  # only which outputs appear matters here
    out = {}
    for name, path in checks.items():
        records = json.loads((data / path).read_text())[:per_set]
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
    import json

    from .inference import NextGPTGenerator, write_result

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
    for extra in ("merged", "predictions"):
        if (root / extra).is_dir():
            lines.append(f"  {root / extra}/")
            lines += [f"      {p.relative_to(root / extra)}" for p in sorted((root / extra).rglob("*"))
                      if extra == "predictions" and p.is_file()]
    if flat_denoising:
        lines.append("note: a frozen RANDOM tiny decoder barely uses its conditioning, so a denoising loss can stay flat"
                     " in the demo (measured in docs/performance.md); real, trained decoders do use it")
    print("\n".join(lines))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--models", type=Path, default=Path("checkpoints/tiny"))
    p.add_argument("--data", type=Path, default=Path("data/synthetic"))
    p.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("predict")
    q.add_argument("--model", type=Path, default=Path("checkpoints/demo/merged"))
    q.add_argument("--output-dir", type=Path, default=Path("checkpoints/demo/predictions"))
    q.add_argument("--data", type=Path, default=Path("data/synthetic"))
    r = sub.add_parser("report")
    r.add_argument("root", type=Path, nargs="?", default=Path("checkpoints/demo"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "prepare":
        prepare(args.models, args.data, args.seed)
        return 0
    if args.command == "predict":
        predict(args.model, args.output_dir, args.data)
        return 0
    return report(args.root)


if __name__ == "__main__":
    sys.exit(main())
