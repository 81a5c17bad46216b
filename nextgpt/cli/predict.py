"""Any-to-any generation from a checkpoint directory.

    python predict.py --model CHECKPOINT_DIR --prompt TEXT [--image F] [--audio F] [--video F] --output-dir DIR
    python predict.py --model CHECKPOINT_DIR --interactive --output-dir DIR
    (--load-in-8bit / --load-in-4bit: the LLM through bitsandbytes on a CUDA GPU)
    python predict.py --model CHECKPOINT_DIR ... model.llm=/data/vicuna-7b-v1.5   (paths on this machine)

Writes the generated media (PNG, 16 kHz WAV, MP4) and DIR/result.json = {"text", "images", "audios", "videos"}
(paths relative to DIR). Generation options default to the checkpoint config's `generate` section; every one of
them has a flag (e.g. --temperature, --image-steps, --video-frames, --audio-length-s). The library side is
`nextgpt/generation/`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import sys
import typing
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nextgpt.cli.common import ArgumentParser
from nextgpt.cli.model_options import checked_device
from nextgpt.config import GenerateConfig
from nextgpt.constants import MODALITIES
from nextgpt.dtypes import DTYPES
from nextgpt.errors import NextGPTError

if TYPE_CHECKING:
    from nextgpt.generation import Chat
    from nextgpt.generation.types import ForceSpec


def _option_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (args[0] if args else annotation) if not isinstance(annotation, type) else annotation


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="predict.py", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint directory (training output, merged or converted)")
    parser.add_argument("overrides", nargs="*", metavar="model.KEY=VALUE",
                        help="replace values saved in the checkpoint's config.yaml, e.g. model.llm=/data/vicuna "
                             "or model.image.decoder=stabilityai/stable-diffusion-2 for a checkpoint copied "
                             "from another machine (also generate.KEY=VALUE)")
    parser.add_argument("--prompt", help="the user message (required unless --interactive)")
    for m in MODALITIES:
        parser.add_argument(f"--{m}", action="append", default=[], metavar="FILE",
                            help=f"input {m} file (repeatable); put <{m}> in the prompt to place it")
    parser.add_argument("--output-dir", required=True, help="where media and result.json are written")
    parser.add_argument("--force-modality", choices=MODALITIES, action="append",
                        help="make the answer include this output (repeatable: several outputs)")
    parser.add_argument("--interactive", action="store_true", help="multi-turn chat in the terminal")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="model dtype (default: bfloat16 on a GPU, float32 on the CPU)")
    parser.add_argument("--no-merge-lora", action="store_true",
                        help="keep a LoRA adapter separate (default: merged into the LLM in memory, faster)")
    parser.add_argument("--offload", action="store_true",
                        help="keep the encoder and decoders on the CPU, moving each to the GPU only while it runs")
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--load-in-8bit", action="store_true",
                       help="load the LLM's linear layers in 8 bit through bitsandbytes (CUDA only; MiniGPT-4's "
                            "low_resource mode: a 7B LLM fits a 12 GB GPU)")
    quant.add_argument("--load-in-4bit", action="store_true",
                       help="load the LLM's linear layers in 4 bit (NF4) through bitsandbytes (CUDA only)")
    parser.add_argument("--no-cache", action="store_true", help="decode without the KV cache (slow; for checks)")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    group = parser.add_argument_group("generation options (default: the checkpoint's `generate` section)")
    hints = typing.get_type_hints(GenerateConfig)
    for f in dataclasses.fields(GenerateConfig):
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"gen_{f.name}", default=None,
                           type=_option_type(hints[f.name]), metavar=_option_type(hints[f.name]).__name__.upper(),
                           help=f.metadata["help"].replace("null", "unset"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    options = {k[4:]: v for k, v in vars(args).items() if k.startswith("gen_") and v is not None}
    with _quiet_libraries(args.verbose):
        return _run(args, options)


def _run(args: argparse.Namespace, options: dict) -> int:
    import torch

    from nextgpt.generation import Chat, NextGPTGenerator, resolve_options, write_result
    from nextgpt.model.language_model import check_quantization

    try:
        if not args.interactive and not args.prompt:
            raise NextGPTError("--prompt is required (or use --interactive)")
        device = checked_device(args)
        quantization = "8bit" if args.load_in_8bit else "4bit" if args.load_in_4bit else None
        check_quantization(quantization, device)  # before the (slow) load: CPU / no bitsandbytes stop here
        dtype = DTYPES[args.dtype or ("float16" if quantization == "8bit" else
                                      "bfloat16" if torch.device(device).type == "cuda" else "float32")]
        resolve_options(None, **options)  # bad values fail before the model loads
        given = {m: getattr(args, m) for m in MODALITIES}
        _check_inputs(args.model, given, args.overrides)
        generator = NextGPTGenerator.from_pretrained(args.model, device=device, dtype=dtype, offload=args.offload,
                                                     quantization=quantization, overrides=args.overrides)
        if args.interactive:
            chat = Chat(generator)
            if args.prompt or any(given.values()):
                pending = [f"/{m} {f}" for m in MODALITIES for f in given[m]] + ([args.prompt] if args.prompt else [])
                read = _script_then_input(pending)
            else:
                read = input
            interactive_loop(chat, args.output_dir, read=read, force_modality=args.force_modality,
                             use_cache=not args.no_cache, **options)
            return 0
        streamed = sys.stdout.isatty()
        result = generator.generate(args.prompt, given["image"], given["video"], given["audio"],
                                    force_modality=args.force_modality, use_cache=not args.no_cache,
                                    on_text=(lambda s: print(s, end="", flush=True)) if streamed else None,
                                    **options)
        fps = resolve_options(generator.options, **options).video_fps
        summary = write_result(result, args.output_dir, fps)
        if streamed:
            print()
        else:
            print(result.text)
        for key in ("images", "videos", "audios"):
            for name in summary[key]:
                print(f"[saved {key[:-1]}: {os.path.join(args.output_dir, name)}]")
        return 0
    except NextGPTError as err:
        text = str(err) if "\n  1. " in str(err) else " ".join(str(err).split())  # keep a problem list's lines
        print(f"error: {text}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. an output directory that cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _check_inputs(model_dir: str, given: dict[str, list[str]], overrides: list[str]) -> None:
    """Fail on a missing checkpoint, a missing frozen part or an unreadable input file before the (slow) model
    load, with every problem at once."""
    from nextgpt.model.checkpoint_format import read_checkpoint_config
    from nextgpt.model.multimodal_encoder.factory import preprocess_media
    from nextgpt.preflight import check_checkpoint, format_problems

    if not Path(model_dir).is_dir():
        raise NextGPTError(f"{model_dir}: checkpoint directory not found")
    problems = check_checkpoint(model_dir, overrides)
    if any(p.fatal for p in problems):
        raise NextGPTError(format_problems(problems, f"checkpoint {model_dir}"))
    config = read_checkpoint_config(Path(model_dir), overrides)
    for m, files in given.items():
        if files:
            preprocess_media(files, m, config.data.image_aspect_ratio, config.model.encoder.kind,
                             max_pixels=config.data.max_image_pixels)


def _script_then_input(lines: list[str]):
    """Feed the command-line prompt / media to the chat first, then read the terminal."""
    queue = list(lines)

    def read(prompt: str) -> str:
        if queue:
            line = queue.pop(0)
            print(prompt + line)
            return line
        return input(prompt)
    return read


@contextlib.contextmanager
def _quiet_libraries(verbose: bool):
    """Without --verbose: no library warnings, info logs or loading progress bars (restored afterwards)."""
    if verbose:
        yield
        return
    import diffusers
    import transformers

    libs = (transformers.utils.logging, diffusers.utils.logging)
    levels = [lib.get_verbosity() for lib in libs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lib in libs:
            lib.set_verbosity_error()
            lib.disable_progress_bar()
        try:
            yield
        finally:
            for lib, level in zip(libs, levels):
                lib.set_verbosity(level)
                lib.enable_progress_bar()


# ------------------------------------------------------------------------------------------- terminal chat

_COMMAND = re.compile(r"^/(\w+)\s*(.*)$")
CHAT_HELP = ("commands: /image PATH, /video PATH, /audio PATH (attach to the next message), "
             "/force image|video|audio [...] or /force off, /reset, /help, /quit")


def interactive_loop(chat: Chat, outdir: str | Path, *, read: Callable[[str], str] = input,
                     write: Callable[[str], None] | None = None, force_modality: ForceSpec = None,
                     use_cache: bool = True, **options: Any) -> int:
    """A terminal chat: streams each answer, saves its media under `outdir/turn_NNN/` (with result.json) and
    prints their paths. Returns the number of answered turns."""
    from nextgpt.generation import resolve_options, write_result

    if write is None:
        def write(s: str) -> None:
            sys.stdout.write(s)
            sys.stdout.flush()
    outdir = Path(outdir)
    attached: dict[str, list[str]] = {m: [] for m in MODALITIES}
    answered = 0
    fps = resolve_options(chat.generator.options, **options).video_fps
    write(CHAT_HELP + "\n")
    while True:
        try:
            line = read("USER> ")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        command = _COMMAND.match(line)
        if command:
            name, arg = command.group(1).lower(), command.group(2).strip()
            if name in ("quit", "exit", "q"):
                break
            if name == "reset":
                chat.reset()
                attached = {m: [] for m in MODALITIES}
                write("(conversation cleared)\n")
            elif name == "help":
                write(CHAT_HELP + "\n")
            elif name in MODALITIES:
                try:
                    chat.generator.preprocess(name, [arg])  # fail now, not after typing the question
                except NextGPTError as err:
                    write(f"error: {err}\n")
                    continue
                attached[name].append(arg)
                write(f"(attached {name}: {arg})\n")
            elif name == "force":
                wanted = [] if arg in ("", "off", "none") else arg.replace(",", " ").split()
                if any(m not in MODALITIES for m in wanted):
                    write(f"error: /force takes {', '.join(MODALITIES)} (one or more) or off\n")
                else:
                    force_modality = wanted or None
                    write(f"(forced output: {', '.join(wanted) or 'off'})\n")
            else:
                write(f"error: unknown command /{name}; {CHAT_HELP}\n")
            continue
        write("ASSISTANT> ")
        try:
            result = chat.send(line, attached["image"], attached["video"], attached["audio"], on_text=write,
                               force_modality=force_modality, use_cache=use_cache, **options)
        except NextGPTError as err:
            write(f"\nerror: {err}\n")
            continue
        attached = {m: [] for m in MODALITIES}
        answered += 1
        write("\n")
        if result.outputs:
            turn_dir = outdir / f"turn_{answered:03d}"
            summary = write_result(result, turn_dir, fps)
            for key in ("images", "videos", "audios"):
                for name in summary[key]:
                    write(f"[saved {key[:-1]}: {turn_dir / name}]\n")
    return answered
