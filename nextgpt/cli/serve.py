"""An OpenAI-compatible HTTP API for a checkpoint (FastAPI on uvicorn; one model per process).

    nextgpt serve --model CHECKPOINT_DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY]
    python -m nextgpt.serve --model CHECKPOINT_DIR ...

POST /v1/chat/completions (text, image_url, input_audio, video_url parts; "modalities" forces outputs; "stream"
for server-sent events; generation options as predict.py's under "nextgpt"), GET /v1/models, GET /health.
Requests are answered one at a time; up to --max-queue wait, one more answers 429. The README has curl and Python
examples. The library side is `nextgpt/serve/`.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import sys

from nextgpt.cli.common import ArgumentParser
from nextgpt.cli.model_options import add_model_options, load_generator
from nextgpt.errors import NextGPTError


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nextgpt serve", description=__doc__)
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("NEXTGPT_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on /v1/* (default: $NEXTGPT_API_KEY; none: open)")
    parser.add_argument("--model-id", default="nextgpt", help="the model name clients use (default: nextgpt)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-queue", type=int, default=16, help="requests waiting behind the running one (429 above)")
    limits.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body (413 above)")
    limits.add_argument("--max-tokens", type=int, default=None,
                        help="largest max_tokens a request may ask for (default: the model's max_length)")
    limits.add_argument("--max-input-pixels", type=int, default=4096 * 4096,
                        help="largest input image / video frame in pixels (413 above)")
    limits.add_argument("--max-input-seconds", type=float, default=60.0,
                        help="longest input audio / video (413 above)")
    limits.add_argument("--max-output-pixels", type=int, default=1024 * 1024,
                        help="largest image / video frame a request may ask for (400 above)")
    limits.add_argument("--max-output-seconds", type=float, default=30.0,
                        help="longest audio / video a request may ask for (400 above)")
    limits.add_argument("--max-steps", type=int, default=200, help="most denoising steps a request may ask for")
    media = parser.add_argument_group("media")
    media.add_argument("--local-files", metavar="DIR", default=None,
                       help="let requests name files under DIR by path (image_url / video_url); off by default")
    media.add_argument("--media-urls", action="store_true",
                       help="answer generated media as /v1/files/... URLs instead of base64 data")
    media.add_argument("--media-dir", default=None, help="where --media-urls files are kept (default: a temp dir)")
    media.add_argument("--keep-media", type=int, default=256, help="answers whose media files are kept")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up generation and decoder loading")
    return parser


def main(argv: list[str] | None = None) -> int:
    from nextgpt.cli.predict import _quiet_libraries

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    logging.getLogger("nextgpt.serve").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _quiet_libraries(args.verbose):
        try:
            return _run(args)
        except NextGPTError as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130


def _run(args) -> int:
    import uvicorn

    from nextgpt.serve import ServeSettings, create_app, warm_up

    log = logging.getLogger("nextgpt.serve")
    settings = ServeSettings(
        model_id=args.model_id, api_key=args.api_key or None, max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * 2**20), max_input_pixels=args.max_input_pixels,
        max_input_seconds=args.max_input_seconds, max_tokens=args.max_tokens,
        max_output_pixels=args.max_output_pixels, max_output_seconds=args.max_output_seconds,
        max_steps=args.max_steps, local_files=args.local_files, media_urls=args.media_urls,
        media_dir=args.media_dir, keep_media=args.keep_media)
    if not _is_loopback(args.host) and settings.api_key is None:
        log.warning("warning: serving on %s without --api-key: anyone who can reach it can use it", args.host)
    generator = load_generator(args)
    if not args.no_warmup:
        warm_up(generator)
    app = create_app(generator, settings)
    log.info("serving %s as %r on http://%s:%d (OpenAI API under /v1)", args.model, settings.model_id, args.host,
             args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
