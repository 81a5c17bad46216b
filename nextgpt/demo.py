"""The embedded default's helpers (`scripts/demo.sh` calls them): data preparation and the closing report.

    python -m nextgpt.demo prepare --models checkpoints/tiny --data data/synthetic
        tiny models (if missing), the synthetic dataset, every caption embedding the catalog needs
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
    from .dataset.builder import resolve_params
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


def stage_losses(run_dir: Path) -> dict[str, tuple[float, float, int]]:
    """{tag: (mean of the first tenth, mean of the last tenth, number of points)} of a run's loss curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
    """Print where the demo's outputs are and how each stage's losses moved. Returns 1 if a loss rose."""
    rising = 0
    lines = [f"demo outputs under {root}:"]
    for stage in ("stage_1", "stage_2", "stage_3"):
        run = root / stage
        if not run.is_dir():
            continue
        lines.append(f"  {run}/  (weights: model.safetensors{', adapter/' if (run / 'adapter').is_dir() else ''};"
                     f" TensorBoard: {run / 'logs'})")
        for tag, (first, last, n) in sorted(stage_losses(run).items()):
            mark = "falling" if last < first else "NOT falling"
            rising += last >= first
            lines.append(f"      {tag:<22} {first:8.4f} -> {last:8.4f}  ({n} steps, {mark})")
    for extra in ("merged", "predictions"):
        if (root / extra).is_dir():
            lines.append(f"  {root / extra}/")
    print("\n".join(lines))
    return 1 if rising else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--models", type=Path, default=Path("checkpoints/tiny"))
    p.add_argument("--data", type=Path, default=Path("data/synthetic"))
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report")
    r.add_argument("root", type=Path, nargs="?", default=Path("checkpoints/demo"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "prepare":
        prepare(args.models, args.data, args.seed)
        return 0
    return report(args.root)


if __name__ == "__main__":
    sys.exit(main())
