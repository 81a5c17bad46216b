"""A gradio chat page for a checkpoint: upload images, sounds and clips; answers stream text and show generated
images, audio players and videos inline.

    nextgpt webui --model CHECKPOINT_DIR [--host 127.0.0.1] [--port 7860]
    python -m nextgpt.webui --model CHECKPOINT_DIR ...

Generation defaults as predict.py's flags (the checkpoint's `generate` section); the page has controls for the
output modality and the main options. The library side is `nextgpt/webui/`.
"""
from __future__ import annotations

import logging
import os
import sys

from nextgpt.cli.common import ArgumentParser
from nextgpt.cli.model_options import add_model_options, load_generator
from nextgpt.errors import NextGPTError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nextgpt webui", description=__doc__)
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--media-dir", default=None, help="where generated media are written (default: a temp dir)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up generation and decoder loading")
    return parser


def main(argv: list[str] | None = None) -> int:
    from nextgpt.cli.predict import _quiet_libraries

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    for name in ("nextgpt.webui", "nextgpt.serve"):
        logging.getLogger(name).setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with _quiet_libraries(args.verbose):
        try:
            from nextgpt.serve import warm_up
            from nextgpt.webui import build_demo, launch

            generator = load_generator(args)
            if not args.no_warmup:
                warm_up(generator)
            launch(build_demo(generator, args.media_dir), args.host, args.port)
            return 0
        except NextGPTError as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
