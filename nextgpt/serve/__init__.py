"""Serving a checkpoint over HTTP: an OpenAI-compatible chat-completions API (FastAPI on uvicorn).

`create_app(generator, settings)` builds the app around one loaded `NextGPTGenerator`: requests are answered one
at a time from a bounded queue (`worker`), with limits and the API key from `ServeSettings` (`settings`). The
request schema and the option mapping are in `protocol`, the decoding of content parts in `inputs`, the answer's
work in `work`, media responses in `outputs`, the body limit / request log / API key in `middleware`. The command
line is `nextgpt serve` (`python -m nextgpt.serve`); the gradio chat page is `nextgpt.webui`.
"""
from .app import create_app
from .settings import ServeSettings
from .warmup import warm_up

__all__ = ["ServeSettings", "create_app", "warm_up"]
