"""Fold a stage-3 checkpoint's LoRA adapter and signal-token rows into a standalone LLaMA (fixed; docs/deviations.md).

Output directory:

    DIR/llm/              config.json + model.safetensors + tokenizer: a plain LlamaForCausalLM whose vocabulary
                          includes the signal tokens (loadable by transformers' AutoModelForCausalLM on its own)
    DIR/model.safetensors projectors + signal rows (the same tensors as the source checkpoint)
    DIR/config.yaml       the source's config with model.llm = "llm" (relative to DIR), no adapter
    DIR/tokenizer*        the tokenizer with the signal tokens

so that `NextGPTModel.from_pretrained(DIR)` / `predict.py --model DIR` load it like any checkpoint. The reference's
tool needed a hard-coded model name and a separate base directory, and silently dropped the projector weights when
the base config lacked the multimodal fields.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch

from ..dtypes import as_dtype, dtype_name
from ..errors import CheckpointError
from .language_model import copy_tokenizer_files, uninstall_signal_rows
from .checkpoint_format import read_checkpoint_config, write_trained_checkpoint
from .modeling import NextGPTModel

logger = logging.getLogger(__name__)

LLM_DIR = "llm"


def merge_lora_in_memory(model: NextGPTModel) -> bool:
    """Fold the model's LoRA adapter into its LLM weights in place (peft's `merge_and_unload`), for generation:
    the unmerged adapter adds two small matmuls per projection to every decode step (a random 12 x 768 LLaMA
    decoded at 0.80x the merged speed). The signal-token rows stay as they are. Returns whether there was one."""
    if not model.has_lora:
        return False
    model.llm = model.llm.merge_and_unload()
    return True


def merge_checkpoint(src: str | Path, dst: str | Path, dtype: torch.dtype | None = None,
                     overwrite: bool = False, overrides: Sequence[str] = ()) -> Path:
    """Write the merged checkpoint of `src` to `dst` (layout in the module docstring); returns `dst`.

    The merge runs on the CPU in `dtype` (default: the checkpoint's training precision, `train.precision`;
    float32 = exact up to rounding, float16 / bfloat16 halve the memory of a 7B merge) and the LLM is saved in that
    dtype. `overrides`: `model.*=` values for a checkpoint whose frozen parts live elsewhere on this machine.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise CheckpointError(f"{src}: checkpoint directory not found")
    if dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: the output must differ from the source checkpoint")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise CheckpointError(f"{dst}: output directory is not empty (pass overwrite=True / --overwrite)")
    config = read_checkpoint_config(src, overrides)
    dtype = as_dtype(config.train.precision) if dtype is None else dtype
    logger.info("merging in %s", dtype_name(dtype))
    model = NextGPTModel.from_pretrained(src, dtype=dtype, device="cpu", overrides=overrides)
    state = model.trainable_state_dict()
    if model.has_lora:
        llm = model.llm.merge_and_unload()
    else:
        logger.warning("%s has no LoRA adapter: only the signal-token rows are folded into the LLM", src)
        llm = model.llm
    uninstall_signal_rows(llm)
    llm.config.use_cache = True
    dst.mkdir(parents=True, exist_ok=True)
    llm.save_pretrained(str(dst / LLM_DIR))
    model.tokenizer.save_pretrained(str(dst / LLM_DIR))
    copy_tokenizer_files(config.model.llm, dst / LLM_DIR)
    signal_tokens = model.tokenizer.convert_ids_to_tokens(sorted(model.signal_token_ids))
    write_trained_checkpoint(dst, config, state, model.tokenizer, signal_tokens,
                             metadata={"merged_from": str(src.resolve())}, model_overrides={"llm": LLM_DIR})
    copy_tokenizer_files(config.model.llm, dst)
    logger.info("merged %s into %s (LLM: %s, vocabulary %d)", src, dst, dst / LLM_DIR, len(model.tokenizer))
    return dst
