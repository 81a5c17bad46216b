"""Download the pretrained weights a config needs, to where it expects them:

    nextgpt download --config configs/stage_1.yaml [--dry-run] [section.key=value ...]
    nextgpt download vicuna-7b-v1.5 imagebind-huge ...      (by name, to the shipped configs' folders)
    nextgpt download --list

Hub repositories go through huggingface_hub (into a config's local folder, or into the Hugging Face cache when the
config names a hub id); ImageBind comes from its official URL. Without network access (or with HF_HUB_OFFLINE=1)
it says so and exits with status 1. The table of assets is nextgpt/assets.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from nextgpt.cli.common import ArgumentParser

PATH_KEYS = ("model.llm", "model.encoder.checkpoint", "model.image.decoder", "model.video.decoder",
             "model.audio.decoder")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nextgpt download", description=__doc__)
    parser.add_argument("names", nargs="*", help="asset names (see --list) or, with --config, dotted overrides")
    parser.add_argument("--config", help="download what this config's model paths point at")
    parser.add_argument("--list", action="store_true", help="list the known assets and exit")
    parser.add_argument("--dry-run", action="store_true", help="say what would be downloaded, download nothing")
    args = parser.parse_args(argv)
    from nextgpt.assets import ASSETS, asset_for, asset_named, download, looks_like_hub_id
    from nextgpt.errors import NextGPTError

    if args.list or (not args.names and not args.config):
        for a in ASSETS:
            where = ", ".join(a.folders) or "the Hugging Face cache"
            print(f"{a.name:<20} {a.size:>9}  {a.source}\n{'':<20} {a.description}; {a.config_key} -> {where}"
                  + (f"\n{'':<20} note: {a.manual}" if a.manual else ""))
        return 0 if args.list else 2
    try:
        if args.config:
            from nextgpt.config import load_config

            config = load_config(args.config, args.names)
            wanted = []
            for key in PATH_KEYS:
                value = config.model
                for part in key.split(".")[1:]:
                    value = getattr(value, part)
                wanted.append((key, value))
        else:
            wanted = []
            for name in args.names:
                asset = asset_named(name)
                wanted.append((asset.config_key, asset.folders[0] if asset.folders else asset.hub_id))
    except NextGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = 0
    for key, value in wanted:
        if not value:
            continue
        if args.dry_run:
            asset = asset_for(value)
            state = "present" if Path(value).exists() else (
                f"would download {asset.source} ({asset.size})" if asset else "would download from the hub"
                if looks_like_hub_id(value) else "missing, unknown source")
            print(f"{key}: {value}: {state}")
            continue
        try:
            print(download(key, value), flush=True)
        except NextGPTError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
