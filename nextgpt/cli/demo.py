"""The embedded default's steps, as scripts/demo.sh runs them (code in nextgpt/toy/demo.py).

    nextgpt demo prepare --models checkpoints/tiny --data data/synthetic
        tiny models (if missing), the synthetic dataset, every caption embedding the catalog needs
    nextgpt demo predict --model checkpoints/demo/merged --output-dir checkpoints/demo/predictions
        a text answer, an image, a sound, a video, and an answer about an input image
    nextgpt demo evaluate --model checkpoints/demo/merged --output-dir checkpoints/demo/eval
        every evaluation task on the synthetic held-out split (tiny random feature models), the table, metrics.json,
        report.md and losses.png (training and validation loss curves of each stage)
    nextgpt demo report checkpoints/demo
        where everything is, and each stage's losses at the start and at the end (from TensorBoard)
"""
from __future__ import annotations

import logging
from pathlib import Path

from nextgpt.cli.common import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nextgpt demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="tiny models, synthetic data, caption embeddings")
    p.add_argument("--models", type=Path, default=Path("checkpoints/tiny"))
    p.add_argument("--data", type=Path, default=Path("data/synthetic"))
    p.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("predict", help="the demo's requests on a trained model")
    q.add_argument("--model", type=Path, default=Path("checkpoints/demo/merged"))
    q.add_argument("--output-dir", type=Path, default=Path("checkpoints/demo/predictions"))
    q.add_argument("--data", type=Path, default=Path("data/synthetic"))
    e = sub.add_parser("evaluate", help="every evaluation task on the synthetic held-out split, and the loss plot")
    e.add_argument("--model", type=Path, default=Path("checkpoints/demo/merged"))
    e.add_argument("--output-dir", type=Path, default=Path("checkpoints/demo/eval"))
    e.add_argument("--data", type=Path, default=Path("data/synthetic"))
    e.add_argument("--models", type=Path, default=Path("checkpoints/tiny"), help="where the tiny feature models are")
    e.add_argument("--runs", type=Path, default=Path("checkpoints/demo"), help="the stage runs to plot")
    r = sub.add_parser("report", help="where the outputs are and how each stage's losses moved")
    r.add_argument("root", type=Path, nargs="?", default=Path("checkpoints/demo"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nextgpt.toy import demo

    if args.command == "prepare":
        demo.prepare(args.models, args.data, args.seed)
        return 0
    if args.command == "predict":
        demo.predict(args.model, args.output_dir, args.data)
        return 0
    if args.command == "evaluate":
        demo.evaluate(args.model, args.data, args.models, args.output_dir, args.runs)
        return 0
    return demo.report(args.root)
