"""The composed NExT-GPT model: frozen encoder → input projector → splice → LLM → output projectors → decoders.

Built from a `ModelConfig` at any size (tiny on the CPU, 7B on GPUs). A trained-weights checkpoint holds only what
trains (projectors, signal-token rows or the whole embedding / LM head, LoRA adapter) plus the resolved config and
the tokenizer; frozen parts (LLM base, ImageBind, decoders) are referenced by path (DESIGN.md "Formats").
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..config import Config, LossConfig, LoraAdapterConfig, ModelConfig
from ..constants import IGNORE_INDEX, MODALITIES
from ..conversation import SignalSpan, SignalVocab
from ..errors import CheckpointError, ConfigError, DataError
from .checkpoint_format import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS_NAME,
    FULL_EMBED_KEY,
    FULL_HEAD_KEY,
    SIGNAL_EMBED_KEY,
    SIGNAL_HEAD_KEY,
    WEIGHTS_NAME,
    check_state_dict,
    read_checkpoint_config,
    write_trained_checkpoint,
)
from .language_model import (
    SignalTokenEmbedding,
    SignalTokenHead,
    install_signal_rows,
    load_llm,
    load_tokenizer,
    peft_lora_config,
    register_signal_tokens,
)
from .losses import caption_alignment_loss
from .multimodal_decoder import LazyDecoders
from .multimodal_encoder.factory import build_encoder
from .multimodal_projector import build_input_projector, build_output_projector
from .splice import SplicedBatch, splice_multimodal

logger = logging.getLogger(__name__)


@dataclass
class NextGPTOutput:
    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted components: text, image_caption…
    num_input_tokens: int = 0  # LLM input positions after the splice (padding excluded)


class NextGPTModel(nn.Module):
    """NExT-GPT as one module. Use `build_model` or `NextGPTModel.from_pretrained` to create it."""

    def __init__(self, config: ModelConfig, llm: nn.Module, tokenizer, encoder: nn.Module,
                 input_projector: nn.Module, output_projectors: nn.ModuleDict, decoders: LazyDecoders,
                 signal: SignalVocab, signal_token_ids: list[int], losses: LossConfig | None = None):
        super().__init__()
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        # The frozen encoder is held outside the module tree: DeepSpeed then neither broadcasts, partitions nor
        # casts its 1.2 B frozen parameters (identical on every rank, loaded from the same file).
        self._frozen = {"encoder": encoder}
        self.input_projector = input_projector
        self.output_projectors = output_projectors
        self.decoders = decoders
        self.signal = signal
        self.signal_token_ids = list(signal_token_ids)
        self.loss_config = losses or LossConfig()

    # ------------------------------------------------------------------------------------------ pieces

    @property
    def encoder(self) -> nn.Module:
        """The frozen encoder: `MultimodalEncoder` (ImageBind) or `Blip2Encoder`."""
        return self._frozen["encoder"]

    def _apply(self, fn, recurse: bool = True):
        """`.to()` / `.cuda()` / `.half()` … also reach the unregistered frozen encoder."""
        super()._apply(fn, recurse)
        self.encoder._apply(fn, recurse)
        return self

    @property
    def base_llm(self) -> nn.Module:
        """The LlamaForCausalLM, under the LoRA wrapper if there is one."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    @property
    def has_lora(self) -> bool:
        return hasattr(self.llm, "peft_config")

    @property
    def hidden_size(self) -> int:
        return self.base_llm.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.base_llm.get_input_embeddings().rows.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base_llm.get_input_embeddings().rows.dtype

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.base_llm.get_input_embeddings()(ids)

    def signal_rows(self) -> tuple[SignalTokenEmbedding, SignalTokenHead]:
        llm = self.base_llm
        return llm.get_input_embeddings(), llm.get_output_embeddings()

    def encode_media(self, modality: str, pixel_values: torch.Tensor | None = None,
                     cached: torch.Tensor | None = None, cached_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frozen encoder (no grad) then the input projector: (N, …) → (N, T, hidden).

        `cached`: encoder features read from a feature cache for the rows where `cached_mask` (N,) is True; the
        encoder runs only on `pixel_values` (the other rows, in order). The projector sees the same (N, T, D)
        features either way."""
        if cached is None:
            features = self.encoder(pixel_values, modality)
        elif pixel_values is None or not len(pixel_values):
            features = cached
        else:
            encoded = self.encoder(pixel_values, modality)
            mask = cached_mask.to(encoded.device)
            features = encoded.new_empty((len(mask), *encoded.shape[1:]))
            features[mask] = cached.to(device=encoded.device, dtype=encoded.dtype)
            features[~mask] = encoded
        return self.input_projector(features.to(device=self.device, dtype=self.dtype))

    def media_tokens_per_item(self) -> int | None:
        """LLM tokens one media item becomes after the projector, when it does not depend on the modality."""
        if self.config.encoder.output == "pooled":
            return 1
        kind = self.config.input_projector.kind
        if self.config.encoder.kind == "blip2" and kind in ("linear", "mlp"):
            return self.encoder.num_query_tokens
        if kind == "group":
            return self.config.input_projector.num_output_groups[-1]
        if kind == "qformer":
            return self.config.input_projector.num_query_tokens
        return None  # linear / mlp keep the encoder's token count (image/video 256, audio 228 at huge)

    def splice(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None,
               media: dict[str, torch.Tensor | None] | None, features: dict[str, torch.Tensor] | None = None,
               feature_mask: dict[str, torch.Tensor] | None = None) -> SplicedBatch:
        media, features, feature_mask = media or {}, features or {}, feature_mask or {}
        encoded = {}
        for m in MODALITIES:
            x = media.get(m)
            x = x if x is not None and len(x) else None
            if x is not None or m in features:
                encoded[m] = self.encode_media(m, x, features.get(m), feature_mask.get(m))
        return splice_multimodal(input_ids, attention_mask, labels, encoded, self.embed_tokens,
                                 self.config.max_length, pad_id=self.tokenizer.pad_token_id or 0)

    def find_spans(self, token_ids: torch.Tensor) -> list[tuple[int, SignalSpan]]:
        """(row, span) for every signal span of a (B, L) id tensor, row by row, left to right."""
        out = []
        for row in range(token_ids.shape[0]):
            for span in self.signal.find_spans(token_ids[row].tolist(), where=f"batch row {row}"):
                out.append((row, span))
        return out

    def project_signal(self, modality: str, hidden: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Output projector: span hidden states + span input embeddings (N, L, H) → conditioning (N, Q, D)."""
        return self.output_projectors[modality](hidden, embeds)

    # ------------------------------------------------------------------------------------------ training

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, media: dict[str, torch.Tensor | None] | None = None,
                features: dict[str, torch.Tensor] | None = None, feature_mask: dict[str, torch.Tensor] | None = None,
                caption_embeddings: dict[str, torch.Tensor] | None = None,
                captions: dict[str, list[str]] | None = None, targets: dict[str, torch.Tensor] | None = None,
                normalizers: dict[str, float] | None = None,
                generator: torch.Generator | None = None) -> NextGPTOutput:
        """Training forward: total loss and every component.

        `media[m]`: encoder inputs of the batch's m-items in order of appearance (or, with a feature cache, of
        those not cached: `features[m]` / `feature_mask[m]`, see `encode_media`); `caption_embeddings[m]`: one
        target embedding per m-signal span, in span order (or `captions[m]`, encoded online by the decoder's
        text encoder); `targets[m]`: decoder-side media for the denoising loss, one per span.
        Each component is a mean: over supervised tokens (text), signal spans (caption) or target samples
        (denoise) of this batch, or, when `normalizers[component]` is given, a sum divided by that count (the
        trainer passes counts over the whole global batch, so that micro-batches and ranks add up exactly).
        """
        normalizers = normalizers or {}
        spliced = self.splice(input_ids, attention_mask, labels, media, features, feature_mask)
        out_modalities = [m for m in MODALITIES
                          if (caption_embeddings and caption_embeddings.get(m) is not None)
                          or (captions and captions.get(m))]
        inputs_embeds = spliced.inputs_embeds
        # HF's loss is a mean over supervised tokens: NaN when there are none, so skip it then.
        num_tokens = int((spliced.labels[:, 1:] != IGNORE_INDEX).sum()) if spliced.labels is not None else 0
        extra = {"num_items_in_batch": normalizers["text"]} if num_tokens and "text" in normalizers else {}
        out = self.llm(inputs_embeds=inputs_embeds, attention_mask=spliced.attention_mask,
                       position_ids=spliced.position_ids, labels=spliced.labels if num_tokens else None,
                       output_hidden_states=bool(out_modalities), use_cache=False, **extra)
        weights = self.loss_config
        losses: dict[str, torch.Tensor] = {}
        total = inputs_embeds.new_zeros((), dtype=torch.float32)
        if num_tokens:
            losses["text"] = out.loss.float()
            total = total + weights.text_weight * losses["text"]
        if out_modalities:
            spans = self.find_spans(spliced.token_ids)
            hidden_states = out.hidden_states[self.config.layer_idx]
            for modality in out_modalities:
                cfg = getattr(weights, modality)
                mine = [(row, s) for row, s in spans if s.modality == modality]
                if caption_embeddings and caption_embeddings.get(modality) is not None:
                    target = caption_embeddings[modality]
                else:
                    target = self.decoders.get(modality).encode_captions(captions[modality])
                if len(mine) != len(target):
                    raise DataError(f"the batch has {len(mine)} {modality} signal span(s) but {len(target)} "
                                    f"{modality} caption embedding(s)")
                hidden = torch.stack([hidden_states[row, s.start:s.end] for row, s in mine])
                embeds = torch.stack([inputs_embeds[row, s.start:s.end] for row, s in mine])
                pred = self.project_signal(modality, hidden, embeds)
                target = target.to(device=pred.device, dtype=pred.dtype).reshape(pred.shape)
                n = len(mine)
                losses[f"{modality}_caption"] = caption_alignment_loss(pred, target) * (
                    n / normalizers.get(f"{modality}_caption", n))
                total = total + cfg.caption_weight * losses[f"{modality}_caption"]
                target_media = (targets or {}).get(modality)
                if target_media is not None and cfg.denoise_weight > 0:
                    if len(target_media) != len(mine):
                        raise DataError(f"the batch has {len(mine)} {modality} signal span(s) but "
                                        f"{len(target_media)} {modality} target(s)")
                    decoder = self.decoders.get(modality)
                    per_sample = decoder.denoising_loss(target_media, pred, cfg.min_snr_gamma, generator=generator)
                    losses[f"{modality}_denoise"] = per_sample.float().sum() / normalizers.get(
                        f"{modality}_denoise", n)
                    total = total + cfg.denoise_weight * losses[f"{modality}_denoise"]
        return NextGPTOutput(total, losses, int(spliced.attention_mask.sum()))

    # ------------------------------------------------------------------------------------------ trainables

    def enable_lora(self, lora: LoraAdapterConfig) -> None:
        """Wrap the LLM with peft LoRA adapters (stage 3)."""
        from peft import get_peft_model

        if self.has_lora:
            return
        with warnings.catch_warnings():
            # peft still reads transformers' deprecated `is_gradient_checkpointing`: a warning on every load that
            # no caller of ours can act on
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            self.llm = get_peft_model(self.llm, peft_lora_config(lora))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every trainable-in-some-stage parameter, by group (the names the stage presets and lrs use).
        "embeddings": the base matrices of the input embedding and LM head (model.train_full_embeddings)."""
        embed, head = self.signal_rows()
        groups = {"input_projector": list(self.input_projector.parameters())}
        for m in MODALITIES:
            groups[f"output_projector.{m}"] = list(self.output_projectors[m].parameters())
        groups["signal_rows"] = [embed.rows, head.rows]
        groups["lora"] = [p for n, p in self.llm.named_parameters() if "lora_" in n]
        groups["embeddings"] = [embed.base.weight, head.base.weight]
        return groups

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores besides the LoRA adapter (CPU copies): projectors, and the signal rows
        (`signal_rows.*`) or, with model.train_full_embeddings, the whole matrices (`embeddings.*`, signal rows
        included)."""
        embed, head = self.signal_rows()
        state = {f"input_projector.{k}": v for k, v in self.input_projector.state_dict().items()}
        for m in MODALITIES:
            state.update({f"output_projectors.{m}.{k}": v for k, v in self.output_projectors[m].state_dict().items()})
        if self.config.train_full_embeddings:
            state[FULL_EMBED_KEY] = embed.merged_weight()
            state[FULL_HEAD_KEY] = head.merged_weight()
        else:
            state[SIGNAL_EMBED_KEY] = embed.rows
            state[SIGNAL_HEAD_KEY] = head.rows
        return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Strict load: every expected tensor present, nothing unexpected, shapes equal; else CheckpointError.

        One exception: a model with model.train_full_embeddings accepts signal rows alone (a checkpoint trained or
        converted without the whole matrices); its other rows stay those of the base LLM."""
        expected = self.trainable_state_dict()
        if self.config.train_full_embeddings and SIGNAL_EMBED_KEY in state and FULL_EMBED_KEY not in state:
            embed, head = self.signal_rows()
            expected = {k: v for k, v in expected.items() if k not in (FULL_EMBED_KEY, FULL_HEAD_KEY)}
            expected.update({SIGNAL_EMBED_KEY: embed.rows, SIGNAL_HEAD_KEY: head.rows})
            logger.info("%s has signal rows only: the other embedding / LM-head rows start from the base LLM", source)
        check_state_dict(expected, state, source)
        embed, head = self.signal_rows()
        with torch.no_grad():
            self.input_projector.load_state_dict(_strip(state, "input_projector."), strict=True)
            for m in MODALITIES:
                self.output_projectors[m].load_state_dict(_strip(state, f"output_projectors.{m}."), strict=True)
            if FULL_EMBED_KEY in state:
                for module, key in ((embed, FULL_EMBED_KEY), (head, FULL_HEAD_KEY)):
                    full = state[key].to(module.base.weight.device)
                    module.base.weight.copy_(full)
                    module.rows.copy_(full[module.token_ids])
            else:
                embed.rows.copy_(state[SIGNAL_EMBED_KEY])
                head.rows.copy_(state[SIGNAL_HEAD_KEY])

    # ------------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, outdir: str | Path, config: Config, state: dict[str, torch.Tensor] | None = None,
                        adapter_state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the trained weights, the LoRA adapter, the resolved config and the tokenizer to `outdir`
        (`checkpoint_format`). `state` / `adapter_state` may be given when they were gathered elsewhere (ZeRO-3);
        `adapter_state` is in peft's saved key format (`get_peft_model_state_dict`)."""
        adapter = None
        if self.has_lora:
            from peft import get_peft_model_state_dict

            if adapter_state is None:
                adapter_state = get_peft_model_state_dict(self.llm, save_embedding_layers=False)
            adapter = (self.llm.peft_config["default"], adapter_state)
        signal_tokens = self.tokenizer.convert_ids_to_tokens(sorted(self.signal_token_ids))
        return write_trained_checkpoint(outdir, config, state if state is not None else self.trainable_state_dict(),
                                        self.tokenizer, signal_tokens, adapter=adapter)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu",
                        quantization: str | None = None, overrides: Sequence[str] = ()) -> "NextGPTModel":
        """Load a training output (or merged / converted) directory: build from its config (with `model.*=`
        `overrides`, e.g. the LLM's place on this machine), load its weights strictly, attach its LoRA adapter if
        there is one. `quantization`: see `build_model`."""
        path = Path(path)
        config = read_checkpoint_config(path, overrides)
        model = build_model(config.model, losses=config.train.losses, dtype=dtype, device=device,
                            tokenizer_path=path, quantization=quantization)
        model.load_checkpoint_weights(path)
        return model

    def load_checkpoint_weights(self, path: str | Path) -> None:
        """Load the trained weights (and LoRA adapter, if present) of a checkpoint directory into this model."""
        path = Path(path)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: no {WEIGHTS_NAME} (not a NExT-GPT training output)")
        from safetensors.torch import load_file

        self.load_trainable_state_dict(load_file(str(weights), device=str(self.device)), str(weights))
        adapter = path / ADAPTER_DIR
        if adapter.is_dir():
            self.load_adapter(adapter)

    def load_adapter(self, adapter_dir: Path) -> None:
        """Attach a saved peft LoRA adapter (strict: every adapter tensor must match a LoRA parameter)."""
        from peft import PeftConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        peft_cfg = PeftConfig.from_pretrained(str(adapter_dir))
        lora = LoraAdapterConfig(r=peft_cfg.r, alpha=peft_cfg.lora_alpha, dropout=peft_cfg.lora_dropout,
                          bias=peft_cfg.bias, target_modules=sorted(peft_cfg.target_modules))
        self.enable_lora(lora)
        state = load_file(str(adapter_dir / ADAPTER_WEIGHTS_NAME), device=str(self.device))
        result = set_peft_model_state_dict(self.llm, state)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        missing = [k for k in (getattr(result, "missing_keys", []) or []) if "lora_" in k]
        if unexpected or missing:
            raise CheckpointError(f"{adapter_dir}: LoRA adapter does not match the model: "
                                  f"missing {missing[:10]}, unexpected {unexpected[:10]}")


# ---------------------------------------------------------------------------------------------- building


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def check_model_config(config: ModelConfig) -> None:
    """Combinations the model cannot be built with."""
    if config.encoder.output == "pooled" and config.input_projector.kind not in ("linear", "mlp"):
        raise ConfigError(f"model.encoder.output=pooled gives one vector per item; model.input_projector.kind must "
                          f"be linear or mlp, not {config.input_projector.kind!r}")
    if not config.llm:
        raise ConfigError("model.llm is empty: set it to a LLaMA / Vicuna directory")


def input_projector_options(config: ModelConfig) -> dict[str, Any]:
    """Constructor options of the configured input projector kind."""
    cfg = config.input_projector
    if cfg.kind == "qformer":
        return {"num_query_tokens": cfg.num_query_tokens}
    if cfg.kind == "group":
        return {"embed_dim": cfg.width, "depths": list(cfg.depths), "num_heads": list(cfg.num_heads),
                "num_group_tokens": list(cfg.num_group_tokens), "num_output_groups": list(cfg.num_output_groups)}
    return {}


def output_projector_options(config: ModelConfig, modality: str) -> dict[str, Any]:
    """Constructor options of a modality's output projector kind."""
    kind = config.output(modality).projector
    if kind == "linear":  # maps the fixed-length span (2n-1 NEW, n LEGACY) to the queries
        n = config.output(modality).signal_tokens
        return {"num_input_tokens": n if config.signal_layout == "legacy" else 2 * n - 1}
    if kind != "transformer":
        return {}
    cfg = config.output_projector
    return {"hidden_dim": cfg.hidden_dim, "num_heads": cfg.num_heads, "num_encoder_layers": cfg.encoder_layers,
            "num_decoder_layers": cfg.decoder_layers, "dim_feedforward": cfg.dim_feedforward}


def build_projectors(config: ModelConfig, encoder_dim: int, hidden: int) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The input projector and the three output projectors of a config (fresh weights, on the current default
    device: build under `torch.device("meta")` to allocate nothing)."""
    inp = build_input_projector(config.input_projector.kind, encoder_dim, hidden, **input_projector_options(config))
    out = {m: build_output_projector(config.output(m).projector, hidden, config.output(m).out_features,
                                     config.output(m).num_query_tokens, **output_projector_options(config, m))
           for m in MODALITIES}
    return inp, out


def build_model(config: ModelConfig, losses: LossConfig | None = None, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu", tokenizer_path: str | Path | None = None,
                quantization: str | None = None) -> NextGPTModel:
    """Build the full model from a config: LLM + tokenizer (signal tokens registered), frozen encoder, fresh
    projectors, lazily loaded decoders. `tokenizer_path` takes the tokenizer from a checkpoint instead of the LLM;
    `quantization` ("8bit" / "4bit", inference on a CUDA device) loads the LLM's linear layers via bitsandbytes."""
    check_model_config(config)
    counts = {m: config.output(m).signal_tokens for m in MODALITIES}
    tokenizer = load_tokenizer(tokenizer_path or config.llm, config.max_length)
    llm = load_llm(config.llm, dtype=dtype, device=device, quantization=quantization)
    llm.config.use_cache = False
    signal, token_ids = register_signal_tokens(tokenizer, llm, config.signal_layout, counts)
    install_signal_rows(llm, token_ids)
    encoder = build_encoder(config.encoder, dtype=dtype, device=device)
    input_projector, outputs = build_projectors(config, encoder.hidden_size, llm.config.hidden_size)
    output_projectors = nn.ModuleDict(outputs)
    decoders = LazyDecoders({m: config.output(m).decoder for m in MODALITIES}, dtype=dtype, device=device)
    model = NextGPTModel(config, llm, tokenizer, encoder, input_projector.to(device=device, dtype=dtype),
                         output_projectors.to(device=device, dtype=dtype), decoders, signal, token_ids, losses)
    return model
