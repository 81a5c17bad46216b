"""Convert a reference-format JSON + media folders into WebDataset shards (the img2dataset layout).

    python scripts/make_shards.py --data data/T_X_pair_data/cc3m/cc3m.json \
        --image-folder data/T_X_pair_data/cc3m/images --output-dir data/webdataset/cc3m [--shard-size 1000]

or with a catalog entry's files:  --dataset cc3m_enc --root data --output-dir data/webdataset/cc3m
Point a catalog entry at the result with `webdataset_data("webdataset/cc3m/*.tar", ...)` (data/README.md).
"""
from __future__ import annotations

import json
import logging
import sys

from nextgpt.cli.common import ArgumentParser
from nextgpt.errors import NextGPTError


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="make_shards.py", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="reference-format JSON (NEW schema or a raw pair file)")
    source.add_argument("--dataset", help="a JSON catalog entry (its files under --root)")
    parser.add_argument("--root", default="data", help="data root for --dataset (default: data)")
    for m in ("image", "video", "audio"):
        parser.add_argument(f"--{m}-folder", default=None, help=f"folder the JSON's {m} names are relative to")
    parser.add_argument("--embed-folder", default=None, help="caption-embedding folder (.npy files to include)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--prefix", default=None, help="shard file prefix (default: the JSON's stem)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nextgpt.dataset.shard_writer import write_shards

    folders = {"image": args.image_folder, "video": args.video_folder, "audio": args.audio_folder}
    data, embed = args.data, args.embed_folder
    try:
        if args.dataset:
            from nextgpt.dataset.catalog import get_entry
            from nextgpt.dataset.mixture import resolve_params

            params = resolve_params(get_entry(args.dataset).params, args.root)
            if "data_path" not in params:
                raise NextGPTError(f"catalog entry {args.dataset!r} is not a JSON dataset")
            data = params["data_path"]
            folders = {m: folders[m] or params.get(f"{m}_folder") for m in folders}
            embed = embed or params.get("embed_folder")
        report = write_shards(data, args.output_dir, folders=folders, embed_folder=embed,
                              shard_size=args.shard_size, prefix=args.prefix)
    except NextGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"samples": report.samples, "shards": len(report.shards), "missing": len(report.missing),
                      "output_dir": args.output_dir}))
    return 0
