"""Turn the public raw data into the files the catalog reads, under DATA_ROOT (default `data`):

    nextgpt prepare pairs  --set cc3m|webvid|audiocap --captions FILE_OR_FOLDER [--media FOLDER] [--root DATA_ROOT]
    nextgpt prepare llava  --input llava_instruct_150k.json [--images COCO_FOLDER] [--root DATA_ROOT]
    nextgpt prepare alpaca --input alpaca_data.json [--root DATA_ROOT]
    nextgpt prepare t2x    --modality image|video|audio --input <m>_t2x.json [--root DATA_ROOT]
    nextgpt prepare mosit  --input MOSIT_RAW.json [--media FOLDER_WITH_images_videos_audios] [--root DATA_ROOT]

Each prints how many rows it read and wrote, the malformed rows and the missing media (those rows are dropped).
The exit status is 1 when nothing could be written. data/README.md has a worked example; the library side is
nextgpt/dataset/prepare.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from nextgpt.cli.common import ArgumentParser


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nextgpt prepare", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)

    def command(name: str, about: str):
        p = sub.add_parser(name, help=about, description=about)
        p.add_argument("--root", type=Path, default=Path("data"), help="data.root to write into (default: data)")
        return p

    p = command("pairs", "CC3M / WebVid / AudioCaps captions -> <set>.json, _comprehension.json, _generation.json")
    p.add_argument("--set", required=True, choices=("cc3m", "webvid", "audiocap"), help="which pair set")
    p.add_argument("--captions", type=Path, required=True,
                   help="raw pair JSON (cc3m.json ...), AudioCaps / WebVid CSV, or a folder of media + .txt captions")
    p.add_argument("--media", type=Path, help="the media folder (linked in as T_X_pair_data/<set>/<images|videos|"
                                              "audios>); default: the one already there")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt wording draws")
    p.add_argument("--limit", type=int, help="keep only the first N rows (e.g. for a quick trial)")
    p = command("llava", "LLaVA-Instruct-150K -> preprocessed_llava.json")
    p.add_argument("--input", type=Path, required=True, help="llava_instruct_150k.json")
    p.add_argument("--images", type=Path, help="folder of its COCO images (linked in)")
    p = command("alpaca", "Alpaca -> preprocessed_alpaca.json")
    p.add_argument("--input", type=Path, required=True, help="alpaca_data.json")
    p = command("t2x", "the reference's T-T+X data -> <modality>_instruction_tuning.json")
    p.add_argument("--modality", required=True, choices=("image", "video", "audio"))
    p.add_argument("--input", type=Path, required=True, help="<modality>_t2x.json")
    p = command("mosit", "the reference's raw MosIT dialogues -> mosit_instruction_tuning.json")
    p.add_argument("--input", type=Path, required=True, help="the raw MosIT JSON")
    p.add_argument("--media", type=Path, help="folder with images/, videos/, audios/ (linked in)")
    args = parser.parse_args(argv)

    from nextgpt.dataset import prepare
    from nextgpt.errors import NextGPTError

    try:
        if args.kind == "pairs":
            report = prepare.prepare_pairs(args.set, args.captions, args.root, args.media, args.seed, args.limit)
        elif args.kind == "llava":
            report = prepare.prepare_llava(args.input, args.root, args.images)
        elif args.kind == "alpaca":
            report = prepare.prepare_alpaca(args.input, args.root)
        elif args.kind == "t2x":
            report = prepare.prepare_t2x(args.modality, args.input, args.root)
        else:
            report = prepare.prepare_mosit(args.input, args.root, args.media)
    except NextGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0 if report.written else 1
