"""The `nextgpt` command: one subcommand per entry point, each in its own module of this package.

Every module here defines ``main(argv) -> int`` (its argument parser and the call into the library); the
top-level scripts (train.py, predict.py, merge_lora_weights.py, preprocess_embeddings.py, preprocess_features.py,
prepare_data.py, evaluate.py) call the same functions.
This package is the only place in the library that parses arguments.
"""
from __future__ import annotations

import importlib
import sys

#: subcommand → (module under nextgpt.cli, one-line description). Modules load only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train one stage from a YAML config (train.py)"),
    "predict": ("predict", "any-to-any generation from a checkpoint (predict.py)"),
    "merge": ("merge", "fold a stage-3 LoRA adapter into the LLM (merge_lora_weights.py)"),
    "summary": ("summary", "parameters per module, total and trainable; no weights needed"),
    "convert": ("convert", "import reference checkpoints (NEW .bin files, LEGACY 7b_tiva_v0)"),
    "embeddings": ("embeddings", "precompute caption embeddings with a decoder (preprocess_embeddings.py)"),
    "features": ("features", "encoder feature cache for training (preprocess_features.py)"),
    "shards": ("shards", "convert a reference-format JSON + media folders into WebDataset shards"),
    "tiny": ("tiny", "build the tiny random models in their real on-disk formats"),
    "synthetic": ("synthetic", "write the embedded default's synthetic dataset"),
    "demo": ("demo", "the embedded default's steps: prepare, predict, evaluate, report"),
    "evaluate": ("evaluate", "the paper's benchmarks and metrics; `evaluate score` scores outputs (evaluate.py)"),
    "check": ("check", "check a training config's paths and dataset names before anything loads (train.py --check)"),
    "prepare": ("prepare", "turn public raw data into the catalog's files (prepare_data.py)"),
    "download": ("download", "download the pretrained weights a config needs (huggingface_hub, ImageBind URL)"),
    "serve": ("serve", "an OpenAI-compatible HTTP API for a checkpoint (python -m nextgpt.serve)"),
    "webui": ("webui", "a gradio chat page for a checkpoint (python -m nextgpt.webui)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: nextgpt COMMAND [options]   (nextgpt COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"error: unknown command {command!r}\n\n{_usage()}")
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[command][0]}")
    return int(module.main(rest) or 0)
