"""The configuration's schema: one dataclass per section, each field with its type, default, allowed values and a
one-line description (`train.py --print-config --explain` prints them). Loading and checking: nextgpt/config.py."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .conversation import TEMPLATES
from .media_guard import DEFAULT_MAX_IMAGE_PIXELS

REPORTERS = ("tensorboard", "wandb")


def _opt(default: Any = dataclasses.MISSING, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, help: str = "", factory: Any = None):
    """A dataclass field with validation metadata (choices / numeric range) and a one-line description."""
    meta = {"choices": choices, "min": min, "max": max, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------- model


ENCODER_ARCHS = {"imagebind": ("huge", "checkpoint"), "blip2": ("eva-vit-g", "checkpoint")}


@dataclass
class EncoderConfig:
    kind: str = _opt("imagebind", choices=tuple(ENCODER_ARCHS),
                     help="imagebind (NExT-GPT) or blip2 (BLIP-2's EVA ViT-g + Q-Former, as MiniGPT-4; images only)")
    arch: str = _opt("huge", choices=("huge", "eva-vit-g", "checkpoint"),
                     help="imagebind: huge, or checkpoint (the sizes stored in the .safetensors file); blip2: "
                          "eva-vit-g (BLIP-2's sizes), or checkpoint (the sizes in the folder's config.json)")
    checkpoint: Optional[str] = _opt(None, help="imagebind: imagebind_huge.pth or a .safetensors file; blip2: a "
                                                "transformers BLIP-2 folder or hub id; null = random init")
    output: str = _opt("tokens", choices=("tokens", "pooled"),
                       help="tokens: every patch token (NEW); pooled: one CLS vector per item (LEGACY); "
                            "blip2: always tokens (the Q-Former's query outputs)")


@dataclass
class InputProjectorConfig:
    kind: str = _opt("group", choices=("linear", "mlp", "group", "qformer"))
    num_query_tokens: int = _opt(32, min=1, help="qformer only: number of learned queries = LLM tokens per item")
    # group only (GroupProjector; the reference's values, not exposed by its CLI):
    width: int = _opt(512, min=1, help="group: working width (embed_dim)")
    depths: list[int] = _opt(factory=lambda: [6, 3, 3], min=1)
    num_heads: list[int] = _opt(factory=lambda: [8, 8, 8], min=1)
    num_group_tokens: list[int] = _opt(factory=lambda: [64, 8, 0], min=0)
    num_output_groups: list[int] = _opt(factory=lambda: [64, 8], min=1, help="the last = LLM tokens per item")


@dataclass
class OutputProjectorConfig:
    """Sizes of the `transformer` output projectors (shared by the three modalities; the reference's values)."""

    hidden_dim: int = _opt(512, min=1)
    num_heads: int = _opt(4, min=1)
    encoder_layers: int = _opt(4, min=1)
    decoder_layers: int = _opt(4, min=1)
    dim_feedforward: int = _opt(2048, min=1)


@dataclass
class OutputModalityConfig:
    """Everything on the output side of one modality: its signal tokens, projector and decoder."""

    signal_tokens: int = _opt(4, min=1, max=99, help="number of signal tokens n (span 2n-1 NEW, n LEGACY)")
    decoder: Optional[str] = _opt(None, help="diffusers pipeline directory (or hub id); null = no decoder")
    projector: str = _opt("transformer", choices=("transformer", "linear", "qformer"))
    num_query_tokens: int = _opt(77, min=1, help="decoder conditioning length Q")
    out_features: int = _opt(1024, min=1, help="decoder conditioning width D")


def _image_out() -> OutputModalityConfig:
    return OutputModalityConfig(signal_tokens=4, num_query_tokens=77, out_features=1024)


def _video_out() -> OutputModalityConfig:
    return OutputModalityConfig(signal_tokens=24, num_query_tokens=77, out_features=1024)


def _audio_out() -> OutputModalityConfig:
    return OutputModalityConfig(signal_tokens=8, num_query_tokens=1, out_features=512)


@dataclass
class LoraAdapterConfig:
    r: int = _opt(128, min=1)
    alpha: int = _opt(256, min=1)
    dropout: float = _opt(0.05, min=0.0, max=1.0)
    bias: str = _opt("none", choices=("none", "all", "lora_only"))
    target_modules: list[str] = _opt(factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"])


@dataclass
class ModelConfig:
    llm: str = _opt("", help="LLaMA/Vicuna directory (or hub id) with its tokenizer")
    llm_arch: Optional[str] = _opt(None, choices=(None, "vicuna-7b"),
                                   help="named architecture for `summary` when `llm` is not on disk")
    template: str = _opt("v1", choices=tuple(TEMPLATES), help="conversation template (nextgpt/conversation.py)")
    max_length: int = _opt(2048, min=8, help="model_max_length: longest spliced sequence")
    signal_layout: str = _opt("new", choices=("new", "legacy"))
    layer_idx: int = _opt(-1, help="hidden-state layer fed to the output projectors (-1 = final norm)")
    train_full_embeddings: bool = _opt(False, help="the whole input embedding and LM head train in every stage and "
                                                   "are saved (LEGACY); false: only the registered tokens' rows")
    encoder: EncoderConfig = _opt(factory=EncoderConfig)
    input_projector: InputProjectorConfig = _opt(factory=InputProjectorConfig)
    output_projector: OutputProjectorConfig = _opt(factory=OutputProjectorConfig)
    image: OutputModalityConfig = _opt(factory=_image_out)
    video: OutputModalityConfig = _opt(factory=_video_out)
    audio: OutputModalityConfig = _opt(factory=_audio_out)
    lora: LoraAdapterConfig = _opt(factory=LoraAdapterConfig)

    def output(self, modality: str) -> OutputModalityConfig:
        return getattr(self, modality)


# ---------------------------------------------------------------------------------------------- data


@dataclass
class ImageTargetConfig:
    height: int = _opt(224, min=8)
    width: int = _opt(224, min=8)
    resize_mode: str = _opt("crop", choices=("crop", "fill", "default"))


@dataclass
class VideoTargetConfig:
    height: int = _opt(320, min=8)
    width: int = _opt(576, min=8)
    sample_fps: float = _opt(1.0, min=0.01)
    max_frames: int = _opt(16, min=1)


@dataclass
class AudioTargetConfig:
    sampling_rate: int = _opt(16000, min=1000)
    duration: float = _opt(10.4, min=0.1, help="seconds; 10.4 s -> 1040 mel frames")
    n_mel_channels: int = _opt(64, min=1)
    mel_fmin: float = _opt(0.0, min=0.0)
    mel_fmax: float = _opt(8000.0, min=1.0)


@dataclass
class DataConfig:
    root: str = _opt("data", help="data root; catalog paths are relative to it")
    datasets: list[str] = _opt(factory=list, help="catalog names (nextgpt/dataset/catalog.py or data.catalog_files)")
    eval_datasets: list[str] = _opt(factory=list, help="catalog names of held-out sets for validation losses "
                                                       "(train.eval_every), e.g. the synthetic *_val entries")
    catalog_files: list[str] = _opt(factory=list, help="YAML files adding catalog entries (data/README.md); "
                                    "relative to the config file that names them")
    embed_dir: Optional[str] = _opt(None, help="override every dataset's caption-embedding folder")
    caption_embeddings: str = _opt("cache", choices=("cache", "online"),
                                   help="cache: read .npy files; online: encode captions with the decoder")
    strict: bool = _opt(False, help="true: a sample that would be skipped (bad media, empty text, unknown media "
                                    "key, bad caption embedding, too long) is an error instead")
    image_aspect_ratio: str = _opt("pad", choices=("pad", "square"))
    max_media_per_sample: int = _opt(8, min=1)
    max_image_pixels: int = _opt(DEFAULT_MAX_IMAGE_PIXELS, min=1,
                                 help="largest width x height of an image file (default: Pillow's limit)")
    group_by_modality_length: bool = _opt(True)
    sampler: str = _opt("modality_grouped", choices=("modality_grouped", "round_robin"),
                        help="modality_grouped (NEW); round_robin (LEGACY): one dataset per batch, datasets in "
                             "turn, each oversampled to the largest")
    num_workers: int = _opt(4, min=0)
    feature_cache: Optional[str] = _opt(None, help="encoder feature cache folder (preprocess_features.py): read "
                                        "features instead of decoding media and running the encoder")
    shuffle_buffer: int = _opt(1000, min=1, help="WebDataset shards: samples held for shuffling, per stream")
    image_target: ImageTargetConfig = _opt(factory=ImageTargetConfig)
    video_target: VideoTargetConfig = _opt(factory=VideoTargetConfig)
    audio_target: AudioTargetConfig = _opt(factory=AudioTargetConfig)


# --------------------------------------------------------------------------------------------- train


@dataclass
class ModalityLossConfig:
    caption_weight: float = _opt(1.0, min=0.0)
    denoise_weight: float = _opt(1.0, min=0.0, help="0 turns the latent-denoising loss off")
    min_snr_gamma: Optional[float] = _opt(None, min=0.0, help="Min-SNR weighting; null = plain MSE")


@dataclass
class LossConfig:
    text_weight: float = _opt(1.0, min=0.0)
    image: ModalityLossConfig = _opt(factory=lambda: ModalityLossConfig(min_snr_gamma=5.0))
    video: ModalityLossConfig = _opt(factory=ModalityLossConfig)
    audio: ModalityLossConfig = _opt(factory=ModalityLossConfig)


@dataclass
class TrainConfig:
    recipe: str = _opt("nextgpt", choices=("nextgpt", "minigpt4"),
                       help="whose stage table (nextgpt/stages.py): what each stage trains")
    stage: int = _opt(1, min=1, max=3, help="nextgpt: 1 encoder alignment, 2 decoder alignment, 3 instruction "
                                            "tuning; minigpt4: 1 pretraining, 2 fine-tuning")
    output_dir: str = _opt("checkpoints/stage_1")
    init_from: Optional[str] = _opt(None, help="previous stage's output directory")
    resume: str = _opt("auto", help="auto (latest complete checkpoint if any), never, or a checkpoint path")
    deepspeed: str = _opt("configs/deepspeed/zero2.json")
    zero_stage: Optional[int] = _opt(None, choices=(None, 0, 1, 2, 3), help="override the JSON's ZeRO stage")
    offload_optimizer: bool = _opt(False)
    precision: str = _opt("bf16", choices=("bf16", "fp16", "fp32"))
    epochs: float = _opt(1.0, min=0.0)
    max_steps: int = _opt(-1, min=-1, help="optimizer steps; -1 = from epochs")
    micro_batch_size: int = _opt(4, min=1, help="per-device batch")
    gradient_accumulation_steps: int = _opt(1, min=1)
    lr: float = _opt(1e-3, min=0.0, help="learning rate of LoRA and of anything without its own rate")
    input_projector_lr: Optional[float] = _opt(None, min=0.0)
    output_projector_lr: Optional[float] = _opt(None, min=0.0)
    signal_tokens_lr: Optional[float] = _opt(None, min=0.0)
    weight_decay: float = _opt(0.0, min=0.0)
    adam_beta1: float = _opt(0.9, min=0.0, max=1.0)
    adam_beta2: float = _opt(0.999, min=0.0, max=1.0)
    adam_eps: float = _opt(1e-8, min=0.0)
    scheduler: str = _opt("cosine", choices=("cosine", "linear", "constant"))
    warmup_ratio: float = _opt(0.03, min=0.0, max=1.0)
    min_warmup_steps: int = _opt(0, min=0, help="warmup steps at least (LEGACY: 10; MiniGPT-4: its warmup_steps)")
    min_lr_ratio: float = _opt(0.0, min=0.0, max=1.0,
                               help="cosine / linear decay ends at this fraction of each group's rate (MiniGPT-4's "
                                    "min_lr / init_lr)")
    optimizer_setup: str = _opt("hf", choices=("hf", "deepspeed"),
                                help="hf (NEW, HF Trainer): weight decay on matrices only, warmup ceil(ratio x "
                                     "steps); deepspeed (LEGACY, DeepSpeed's Adam + WarmupDecayLR): weight decay "
                                     "on every trainable parameter, warmup int(ratio x steps)")
    max_grad_norm: float = _opt(1.0, min=0.0, help="0 disables clipping")
    gradient_checkpointing: bool = _opt(True)
    save_steps: int = _opt(1000, min=1)
    save_total_limit: int = _opt(1, min=1)
    logging_steps: int = _opt(1, min=1)
    log_sample_ids: bool = _opt(False, help="append every step's sample ids to OUTPUT_DIR/samples-rank-N.jsonl")
    eval_every: int = _opt(0, min=0, help="validation losses on data.eval_datasets every N optimizer steps and at "
                                          "the end (metrics.jsonl / TensorBoard val/loss/*, trainer_state.json); "
                                          "0 = never")
    keep_best: Optional[str] = _opt(None, help="keep OUTPUT_DIR/best: the weights of the lowest validation loss of "
                                               "this component (total, text, image_caption, image_denoise, ...)")
    report_to: list[str] = _opt(factory=lambda: ["tensorboard"], choices=REPORTERS,
                                help="metric sinks besides OUTPUT_DIR/metrics.jsonl: tensorboard, wandb "
                                     "(WANDB_MODE=offline works without network)")
    allow_config_change: bool = _opt(False, help="resume although the saved config differs in more than logging "
                                                 "and run-length keys")
    seed: int = _opt(42)
    losses: LossConfig = _opt(factory=LossConfig)


# ------------------------------------------------------------------------------------------ generate


@dataclass
class GenerateConfig:
    """Generation defaults (predict.py has one flag per key; the checkpoint's values are the defaults)."""

    max_new_tokens: int = _opt(512, min=1, help="most tokens generated per answer")
    temperature: float = _opt(0.2, min=0.0, help="sampling temperature (used when top_k is not 1)")
    top_p: float = _opt(1.0, min=0.0, max=1.0, help="nucleus sampling: keep the most likely tokens up to this "
                                                       "total probability (1 = off)")
    top_k: int = _opt(1, min=0, help="1 = greedy (the reference's default); 0 = no top-k filter")
    max_outputs_per_modality: int = _opt(5, min=0, help="most images / videos / audios one answer may produce")
    seed: int = _opt(0, help="random seed of sampling and of the diffusion noise")
    image_guidance_scale: float = _opt(7.5, min=0.0, help="classifier-free guidance of the image decoder")
    image_steps: int = _opt(50, min=1, help="denoising steps of the image decoder")
    image_height: Optional[int] = _opt(None, min=8, help="image height in pixels; null = the decoder's default")
    image_width: Optional[int] = _opt(None, min=8, help="image width in pixels; null = the decoder's default")
    video_guidance_scale: float = _opt(7.5, min=0.0, help="classifier-free guidance of the video decoder")
    video_steps: int = _opt(50, min=1, help="denoising steps of the video decoder")
    video_height: int = _opt(320, min=8, help="video height in pixels")
    video_width: int = _opt(576, min=8, help="video width in pixels")
    video_frames: int = _opt(16, min=1, help="number of video frames")
    video_fps: int = _opt(10, min=1, help="frame rate of the written MP4")
    audio_guidance_scale: float = _opt(7.5, min=0.0, help="classifier-free guidance of the audio decoder")
    audio_steps: int = _opt(50, min=1, help="denoising steps of the audio decoder")
    audio_length_s: float = _opt(5.0, min=0.1, help="audio length in seconds")


@dataclass
class Config:
    model: ModelConfig = _opt(factory=ModelConfig)
    data: DataConfig = _opt(factory=DataConfig)
    train: TrainConfig = _opt(factory=TrainConfig)
    generate: GenerateConfig = _opt(factory=GenerateConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, width=110)
