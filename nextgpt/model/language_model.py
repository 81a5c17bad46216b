"""The LLM side: tokenizer and LLaMA loading (transformers) and signal-token registration.

The LoRA adapter's peft config is built here (`peft_lora_config`); the composed model attaches it.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from ..constants import DEFAULT_SIGNAL_COUNTS
from ..conversation import SignalVocab, tokens_to_register
from ..errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def load_tokenizer(path: str | Path, max_length: int = 2048):
    """The LLM tokenizer, right-padded, pad = unk as the reference's v1 setup does."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), model_max_length=max_length, padding_side="right")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {path}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok


QUANTIZATIONS = ("8bit", "4bit")


def check_quantization(quantization: str | None, device: str | torch.device) -> None:
    """ConfigError unless `quantization` (None, "8bit" or "4bit") can run on `device`: bitsandbytes' quantized
    layers need a CUDA GPU and the bitsandbytes package."""
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization must be one of {QUANTIZATIONS} or None, got {quantization!r}")
    flag = f"--load-in-{quantization}"
    if torch.device(device).type != "cuda":
        raise ConfigError(f"{flag} needs a CUDA GPU: bitsandbytes' {quantization} layers do not run on the CPU "
                          f"(device {device}); drop the flag to run the LLM unquantized on the CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"{flag} needs the bitsandbytes package, which is not installed "
                          f"(pip install bitsandbytes)") from None
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag}: device {device} requested but CUDA is not available on this machine")


def load_llm(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
             quantization: str | None = None):
    """transformers' LlamaForCausalLM from a directory (or hub id). `quantization` "8bit" / "4bit" loads its linear
    layers through bitsandbytes onto the CUDA `device` (MiniGPT-4's low_resource mode: a 7B LLM in about 7 GB);
    the embedding and LM head stay in `dtype`."""
    from transformers import LlamaForCausalLM

    check_quantization(quantization, device)
    kwargs = {}
    if quantization is not None:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if quantization == "8bit" else
                                         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                            bnb_4bit_compute_dtype=dtype))
        kwargs["device_map"] = {"": torch.device(device).index or 0}
    try:
        model = LlamaForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a LLaMA model from {path}: {exc}") from None
    return model if quantization is not None else model.to(device)


def register_signal_tokens(tokenizer, model, layout: str, counts: dict[str, int] | None = None
                           ) -> tuple[SignalVocab, list[int]]:
    """Add the signal tokens to the tokenizer and grow the embedding and LM head to match.

    New rows of both matrices start at the mean of the pre-existing rows, the NEW reference's rule (LEGACY's
    random N(0, 0.02) init is not copied, docs/deviations.md). Tokens already in the tokenizer (a saved stage tokenizer) are not added again.
    Returns the signal vocabulary and the ids of every registered token (the rows that may train).
    """
    counts = counts or dict(DEFAULT_SIGNAL_COUNTS)
    wanted = tokens_to_register(layout, counts)
    vocab = tokenizer.get_vocab()
    missing = [t for t in wanted if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if model is not None:
        old_rows = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > old_rows:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                for matrix in _embedding_matrices(model):
                    matrix[old_rows:] = matrix[:old_rows].mean(dim=0, keepdim=True)
        elif len(tokenizer) < old_rows:
            logger.info("tokenizer has %d tokens, embedding %d rows (extra rows unused)", len(tokenizer), old_rows)
    ids = tokenizer.convert_tokens_to_ids(wanted)
    return SignalVocab.from_tokenizer(tokenizer, layout, counts), list(ids)


def _embedding_matrices(model) -> list[torch.Tensor]:
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight is inp:
        return [inp]
    return [inp, out.weight]


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> None:
    """Copy the SentencePiece model file along with a tokenizer saved by save_pretrained, when there is one."""
    src_model = Path(src) / "tokenizer.model"
    if src_model.is_file():
        shutil.copy2(src_model, Path(dst) / "tokenizer.model")


# ------------------------------------------------------------------------------------ signal-token rows


class SignalTokenEmbedding(torch.nn.Module):
    """The LLM's input embedding with the signal-token rows split off into their own parameter.

    The NEW reference makes the whole embedding and LM-head matrices trainable, so the 32 000 original rows drift
    (docs/deviations.md). Here the base matrix stays frozen and only `rows` (one per registered token) train,
    unless `model.train_full_embeddings` (LEGACY, which trained the whole matrices) also makes `base.weight`
    trainable; the registered rows of `base.weight` are then unused copies (`rows` replaces them).
    """

    def __init__(self, base: torch.nn.Embedding, token_ids: list[int]):
        super().__init__()
        self.base = base
        ids = torch.tensor(sorted(token_ids), dtype=torch.long, device=base.weight.device)
        lookup = torch.full((base.num_embeddings,), -1, dtype=torch.long, device=base.weight.device)
        lookup[ids] = torch.arange(len(ids), device=base.weight.device)
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("row_of_token", lookup, persistent=False)
        self.rows = torch.nn.Parameter(base.weight.detach()[ids].clone())

    @property
    def weight(self) -> torch.Tensor:  # transformers reads `.weight` for dtype / device checks
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        row = self.row_of_token[input_ids]
        signal = torch.nn.functional.embedding(row.clamp(min=0), self.rows).to(out.dtype)
        return torch.where((row >= 0).unsqueeze(-1), signal, out)

    def merged_weight(self) -> torch.Tensor:
        weight = self.base.weight.detach().clone()
        weight[self.token_ids] = self.rows.detach().to(weight.dtype)
        return weight


class SignalTokenHead(torch.nn.Module):
    """The LM head with the signal-token rows split off (see `SignalTokenEmbedding`)."""

    def __init__(self, base: torch.nn.Linear, token_ids: list[int]):
        super().__init__()
        if base.bias is not None:
            raise CheckpointError("an LM head with a bias is not supported")
        self.base = base
        ids = torch.tensor(sorted(token_ids), dtype=torch.long, device=base.weight.device)
        self.register_buffer("token_ids", ids, persistent=False)
        self.rows = torch.nn.Parameter(base.weight.detach()[ids].clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.base(hidden)
        signal = torch.nn.functional.linear(hidden, self.rows.to(hidden.dtype)).to(logits.dtype)
        return logits.index_copy(-1, self.token_ids, signal)

    def merged_weight(self) -> torch.Tensor:
        weight = self.base.weight.detach().clone()
        weight[self.token_ids] = self.rows.detach().to(weight.dtype)
        return weight


def install_signal_rows(llm, token_ids: list[int]) -> tuple[SignalTokenEmbedding, SignalTokenHead]:
    """Replace the LLM's input embedding and LM head by versions whose signal rows are separate parameters."""
    if llm.get_output_embeddings().weight is llm.get_input_embeddings().weight:
        raise CheckpointError("LLMs with tied input/output embeddings are not supported")
    embed = SignalTokenEmbedding(llm.get_input_embeddings(), token_ids)
    head = SignalTokenHead(llm.get_output_embeddings(), token_ids)
    llm.set_input_embeddings(embed)
    llm.set_output_embeddings(head)
    return embed, head


def uninstall_signal_rows(llm) -> None:
    """Fold the signal rows back into plain embedding / LM-head matrices (for a standalone merged LLM)."""
    embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    if isinstance(embed, SignalTokenEmbedding):
        embed.base.weight.data.copy_(embed.merged_weight())
        llm.set_input_embeddings(embed.base)
    if isinstance(head, SignalTokenHead):
        head.base.weight.data.copy_(head.merged_weight())
        llm.set_output_embeddings(head.base)


def peft_lora_config(lora, base_model: str | None = None):
    """peft's LoraConfig for our `model.lora` settings (one place, used to attach, count and write adapters)."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
                      base_model_name_or_path=base_model)
