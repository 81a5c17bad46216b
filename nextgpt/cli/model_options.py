"""Options shared by the commands that load a checkpoint to answer requests (serve, webui): device, dtype,
offload, and every generation option with the same flag as predict.py (the defaults: the checkpoint's `generate`
section)."""
from __future__ import annotations

import argparse
import dataclasses
import typing

from nextgpt.config import GenerateConfig
from nextgpt.dtypes import DTYPES
from nextgpt.errors import NextGPTError


def _option_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (args[0] if args else annotation) if not isinstance(annotation, type) else annotation


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (training output, merged or converted)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--offload", action="store_true",
                        help="keep the encoder and decoders on the CPU, moving each to the GPU only while it runs")
    parser.add_argument("--verbose", action="store_true", help="library logs and progress bars too")
    group = parser.add_argument_group("generation defaults (default: the checkpoint's `generate` section; "
                                      "every request may override them)")
    hints = typing.get_type_hints(GenerateConfig)
    for f in dataclasses.fields(GenerateConfig):
        kind = _option_type(hints[f.name])
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"gen_{f.name}", default=None, type=kind,
                           metavar=kind.__name__.upper(), help=f.metadata.get("help") or None)


def generation_overrides(args: argparse.Namespace) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("gen_") and v is not None}


def checked_device(args: argparse.Namespace) -> str:
    """`--device` (default: cuda if available, else cpu), checked with `--offload` before anything loads."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise NextGPTError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise NextGPTError(f"--device {device}: CUDA is not available on this machine")
    if args.offload and torch.device(device).type == "cpu":
        raise NextGPTError("--offload needs a GPU --device (it moves decoders from the CPU to the GPU)")
    return device


def load_generator(args: argparse.Namespace):
    """The checkpoint of `args.model` on the chosen device, with the command line's generation defaults."""
    import torch

    from nextgpt.generation import NextGPTGenerator, resolve_options

    device = checked_device(args)
    dtype = DTYPES[args.dtype or ("bfloat16" if torch.device(device).type == "cuda" else "float32")]
    overrides = generation_overrides(args)
    resolve_options(None, **overrides)  # bad values fail before the model loads
    generator = NextGPTGenerator.from_pretrained(args.model, device=device, dtype=dtype, offload=args.offload)
    generator.options = resolve_options(generator.options, **overrides)
    return generator
