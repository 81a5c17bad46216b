"""Write the embedded default's synthetic dataset (small images, sounds and videos with truthful captions).

    nextgpt synthetic OUTDIR [--seed S]

OUTDIR plays the role of the reference's ./data: every file lands where the dataset catalog looks, and
OUTDIR/manifest.json lists what was written. Same seed, same bytes. See nextgpt/toy/synthetic_data.py.
"""
from __future__ import annotations

import json
import logging

from nextgpt.cli.common import ArgumentParser
from nextgpt.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="nextgpt synthetic", description=__doc__)
    parser.add_argument("outdir", help="folder to write (plays the role of the reference's ./data)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nextgpt.toy.synthetic_data import generate

    try:
        manifest = generate(args.outdir, seed=args.seed)
    except (ConfigError, DataError) as exc:
        parser.exit(2, f"error: {exc}\n")
    summary = {k: manifest[k] for k in ("seed", "json_records", "media_files", "total_bytes")}
    logger.info("%s", json.dumps(summary, indent=2))
    return 0
