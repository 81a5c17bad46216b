"""ImageBind (the NExT-GPT copy): a clean reimplementation with the reference's state-dict key names.

The module tree mirrors the reference so that the official ``imagebind_huge.pth`` loads strictly, and the
numerics follow it step by step (see ``spec/imagebind.md``). Two output modes exist:

* ``"tokens"`` (NEW NExT-GPT, default): every patch token after the head (CLS dropped), L2-normalised, the result
  reshaped to ``(B, -1, D)``;
* ``"pooled"`` (LEGACY NExT-GPT and upstream ImageBind): the CLS token only, one vector per item, ``(B, D)``.

In both modes audio gets only the L2 normalisation (no x20 logit scale) and multi-clip inputs (ndim >= 5) are
averaged over the clips after normalisation, as in the reference.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from nextgpt.errors import CheckpointError, ConfigError
from nextgpt.model.checkpoint_format import check_state_dict

logger = logging.getLogger(__name__)

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
OUTPUT_MODES = ("tokens", "pooled")

# Hard-wired constants of the reference (not constructor arguments).
IMAGE_SIZE = 224
TEXT_CONTEXT_LENGTH = 77
TEXT_VOCAB_SIZE = 49408
IMU_INPUT_SHAPE = (6, 2000)
IMU_WINDOW = 8
STEM_LN_EPS = 1e-5  # PyTorch's default; the stems use it
LN_EPS = 1e-6  # every other LayerNorm

# The overrides imagebind_huge() applies to the class defaults.
IMAGEBIND_HUGE_KWARGS: dict[str, Any] = {
    "vision_embed_dim": 1280,
    "vision_num_blocks": 32,
    "vision_num_heads": 16,
    "text_embed_dim": 1024,
    "text_num_blocks": 24,
    "text_num_heads": 16,
    "out_embed_dim": 1024,
    "audio_drop_path": 0.1,
    "imu_drop_path": 0.7,
}
CHECKPOINT_FILE_NAMES = ("imagebind_huge.pth", "imagebind_huge.safetensors", "model.safetensors")


# --------------------------------------------------------------------------------------------------------------
# Small building blocks
# --------------------------------------------------------------------------------------------------------------


class PadIm2Video(nn.Module):
    """Turns an image batch [N, C, H, W] into a 2-frame clip by repeating it along time (dim 2)."""

    def __init__(self, ntimes: int = 2) -> None:
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        elif x.ndim != 5:
            raise ValueError(f"vision input must be 4-D or 5-D after clip flattening, got shape {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.ntimes, 1, 1)
        return x


class PatchEmbed(nn.Module):
    """Bias-free conv (or Linear for IMU) then [N, D, *grid] -> [N, prod(grid), D], optional stem LayerNorm."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        if self.norm_layer is not None:
            x = self.norm_layer(x)
        return x


class PosEmbedding(nn.Module):
    """Learnable positional embedding [1, 1 + N, D] with the reference's bicubic interpolation for other N."""

    def __init__(self, patches_layout: tuple[int, ...], embed_dim: int) -> None:
        super().__init__()
        self.patches_layout = tuple(int(v) for v in patches_layout)
        self.num_patches = math.prod(self.patches_layout)
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + self.num_patches, embed_dim))

    def for_num_patches(self, n: int) -> torch.Tensor:
        """The embedding for an input with ``n`` patch tokens (the CLS row is kept as is)."""
        pos_embed = self.pos_embed
        if n == self.num_patches:
            return pos_embed
        layout = self.patches_layout
        if layout[-1] != layout[-2]:
            raise ValueError(
                f"cannot interpolate the position embedding of a non-square patch layout {layout} to {n} patches"
            )
        cls_row, grid = pos_embed[:, :1], pos_embed[:, 1:]
        if len(layout) == 3 and layout[0] > 1:
            # Only the first frame's grid is interpolated (reference behaviour; unused by the configs here).
            grid = grid.view(1, layout[0], layout[1] * layout[2], -1)[0, 0].unsqueeze(0)
        num = grid.shape[1]
        side = int(math.sqrt(num))
        dim = grid.shape[-1]
        was_bf16 = grid.dtype == torch.bfloat16
        if was_bf16:
            grid = grid.float()
        # scale_factor (not size) is what the reference passes: it fixes the sampling grid.
        grid = F.interpolate(
            grid.reshape(1, side, side, dim).permute(0, 3, 1, 2),
            scale_factor=math.sqrt(n / num),
            mode="bicubic",
        )
        if was_bf16:
            grid = grid.to(torch.bfloat16)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((cls_row, grid), dim=1)


class PatchPreprocessor(nn.Module):
    """Vision / audio / depth / thermal preprocessor: stem, CLS token in front, positional embedding added.

    ``stem_name`` is the attribute the reference stores the stem under (``rgbt_stem`` or ``depth_stem``).
    """

    def __init__(self, stem: PatchEmbed, stem_name: str, input_size: tuple[int, ...], embed_dim: int) -> None:
        super().__init__()
        self.stem_name = stem_name
        self.embed_dim = embed_dim
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        setattr(self, stem_name, stem)
        layout = self._patch_layout(stem, input_size)
        self.pos_embedding_helper = PosEmbedding(layout, embed_dim)

    @staticmethod
    def _patch_layout(stem: PatchEmbed, input_size: tuple[int, ...]) -> tuple[int, ...]:
        """The token grid of the configured input size, measured by running the stem on zeros on the meta device."""
        with torch.no_grad():
            dummy = torch.zeros((1, *input_size), device="meta")
            out = _meta_forward(stem.proj, dummy)
        return tuple(out.shape[2:])

    @property
    def stem(self) -> PatchEmbed:
        return getattr(self, self.stem_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.stem(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat((cls, tokens), dim=1)
        return tokens + self.pos_embedding_helper.for_num_patches(tokens.shape[1] - 1)


def _meta_forward(module: nn.Module, dummy: torch.Tensor) -> torch.Tensor:
    """Shape inference: run ``module`` on a meta tensor with meta copies of its parameters (nothing allocated)."""
    params = {name: torch.empty_like(p, device="meta") for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, (dummy,))


class TextPreprocessor(nn.Module):
    """Token embedding + positional embedding over exactly 77 positions; causal mask; EOT index for the head."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(TEXT_VOCAB_SIZE, embed_dim)
        self.pos_embed = nn.Parameter(torch.empty(1, TEXT_CONTEXT_LENGTH, embed_dim))
        self.register_buffer("mask", torch.empty(TEXT_CONTEXT_LENGTH, TEXT_CONTEXT_LENGTH))

    def reset_mask(self) -> None:
        """Additive causal mask: 0 on and below the diagonal, -inf above."""
        with torch.no_grad():
            self.mask.fill_(float("-inf")).triu_(1)

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.token_embedding(text) + self.pos_embed
        # The EOT id is the largest id; argmax gives its (first) position, or 0 (SOT) when EOT was truncated.
        seq_len = text.argmax(dim=-1)
        return tokens, seq_len


class IMUPreprocessor(nn.Module):
    """IMU [N, 6, 2000] -> windows of 8 -> [N, 250, 48] -> Linear + LN, CLS token, positional embedding."""

    def __init__(self, stem: PatchEmbed, embed_dim: int) -> None:
        super().__init__()
        num_windows = IMU_INPUT_SHAPE[1] // IMU_WINDOW
        self.pos_embed = nn.Parameter(torch.empty(1, num_windows + 1, embed_dim))
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.imu_stem = stem

    def forward(self, imu: torch.Tensor) -> torch.Tensor:
        x = imu.unfold(-1, IMU_WINDOW, IMU_WINDOW).permute(0, 2, 1, 3)
        x = x.reshape(x.size(0), x.size(1), -1)
        tokens = self.imu_stem.norm_layer(self.imu_stem.proj(x))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + self.pos_embed


class Attention(nn.MultiheadAttention):
    """Self-attention through torch's own MultiheadAttention (sequence-first), as the reference calls it."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x, x, need_weights=False, attn_mask=attn_mask)[0]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); stochastic depth only in training."""

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool, drop_path: float) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, bias=True, add_bias_kv=add_bias_kv)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0.0 else nn.Identity()
        self.norm_1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm_1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class SeqFirst(nn.Module):
    """[B, L, D] <-> [L, B, D] (the reference's einops rearrange; a view either way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


class Trunk(nn.Module):
    """pre_transformer_layer (optional LN, to sequence-first), the blocks, back to batch-first. No final LN."""

    def __init__(
        self, dim: int, num_blocks: int, num_heads: int, pre_ln: bool, add_bias_kv: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(
            nn.LayerNorm(dim, eps=LN_EPS) if pre_ln else nn.Identity(), SeqFirst()
        )
        rates = [r.item() for r in torch.linspace(0, drop_path, num_blocks, device="cpu")]
        self.blocks = nn.Sequential(*[Block(dim, num_heads, add_bias_kv, rates[i]) for i in range(num_blocks)])
        self.post_transformer_layer = SeqFirst()

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.post_transformer_layer(x)


class SelectTokens(nn.Module):
    """The head's token selection: all tokens after CLS ("tokens", NEW) or the CLS token ("pooled", LEGACY)."""

    def __init__(self, output_mode: str) -> None:
        super().__init__()
        self.output_mode = output_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:] if self.output_mode == "tokens" else x[:, 0]


class TextHead(nn.Module):
    """Picks the feature at ``seq_len`` (the EOT position) and projects it: LN then a bias-free Linear."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=LN_EPS), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        return self.proj(x[torch.arange(x.shape[0], device=x.device), seq_len])


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, p=2)


class LogitScaling(nn.Module):
    """Multiplies by clip(exp(log_logit_scale), max=100), always from the stored tensor."""

    def __init__(self, init_value: float, learnable: bool) -> None:
        super().__init__()
        self.init_value = init_value
        value = torch.empty(())
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def reset_value(self) -> None:
        with torch.no_grad():
            self.log_logit_scale.fill_(math.log(self.init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=100) * x


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------


class ImageBindModel(nn.Module):
    """ImageBind with the reference's 31 constructor arguments, key names and forward contract.

    ``forward({"vision"|"text"|"audio"|"depth"|"thermal"|"imu": tensor, ...})`` returns a dict with the same keys.
    Construction draws the random initial weights from the global RNG in the reference's order, so
    ``torch.manual_seed(s); ImageBindModel(**kw)`` equals the reference built the same way. Built under
    ``with torch.device("meta")`` nothing is allocated (use ``to_empty`` + ``init_weights`` or a checkpoint).
    """

    def __init__(
        self,
        video_frames: int = 2,
        kernel_size: tuple[int, int, int] = (2, 14, 14),
        audio_kernel_size: int = 16,
        audio_stride: int = 10,
        out_embed_dim: int = 768,
        vision_embed_dim: int = 1024,
        vision_num_blocks: int = 24,
        vision_num_heads: int = 16,
        audio_embed_dim: int = 768,
        audio_num_blocks: int = 12,
        audio_num_heads: int = 12,
        audio_num_mel_bins: int = 128,
        audio_target_len: int = 204,
        audio_drop_path: float = 0.1,
        text_embed_dim: int = 768,
        text_num_blocks: int = 12,
        text_num_heads: int = 12,
        depth_embed_dim: int = 384,
        depth_kernel_size: int = 16,
        depth_num_blocks: int = 12,
        depth_num_heads: int = 8,
        depth_drop_path: float = 0.0,
        thermal_embed_dim: int = 768,
        thermal_kernel_size: int = 16,
        thermal_num_blocks: int = 12,
        thermal_num_heads: int = 12,
        thermal_drop_path: float = 0.0,
        imu_embed_dim: int = 512,
        imu_kernel_size: int = 8,
        imu_num_blocks: int = 6,
        imu_num_heads: int = 8,
        imu_drop_path: float = 0.7,
        output_mode: str = "tokens",
    ) -> None:
        super().__init__()
        if output_mode not in OUTPUT_MODES:
            raise ConfigError(f"ImageBind output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        kernel_size = tuple(int(k) for k in kernel_size)
        self.config: dict[str, Any] = {
            "video_frames": video_frames, "kernel_size": list(kernel_size),
            "audio_kernel_size": audio_kernel_size, "audio_stride": audio_stride, "out_embed_dim": out_embed_dim,
            "vision_embed_dim": vision_embed_dim, "vision_num_blocks": vision_num_blocks,
            "vision_num_heads": vision_num_heads, "audio_embed_dim": audio_embed_dim,
            "audio_num_blocks": audio_num_blocks, "audio_num_heads": audio_num_heads,
            "audio_num_mel_bins": audio_num_mel_bins, "audio_target_len": audio_target_len,
            "audio_drop_path": audio_drop_path, "text_embed_dim": text_embed_dim,
            "text_num_blocks": text_num_blocks, "text_num_heads": text_num_heads,
            "depth_embed_dim": depth_embed_dim, "depth_kernel_size": depth_kernel_size,
            "depth_num_blocks": depth_num_blocks, "depth_num_heads": depth_num_heads,
            "depth_drop_path": depth_drop_path, "thermal_embed_dim": thermal_embed_dim,
            "thermal_kernel_size": thermal_kernel_size, "thermal_num_blocks": thermal_num_blocks,
            "thermal_num_heads": thermal_num_heads, "thermal_drop_path": thermal_drop_path,
            "imu_embed_dim": imu_embed_dim, "imu_kernel_size": imu_kernel_size, "imu_num_blocks": imu_num_blocks,
            "imu_num_heads": imu_num_heads, "imu_drop_path": imu_drop_path,
        }
        self.output_mode = output_mode
        self.out_embed_dim = out_embed_dim
        widths = {
            "vision": vision_embed_dim, "text": text_embed_dim, "audio": audio_embed_dim,
            "depth": depth_embed_dim, "thermal": thermal_embed_dim, "imu": imu_embed_dim,
        }
        for name, (dim, heads) in {
            "vision": (vision_embed_dim, vision_num_heads), "text": (text_embed_dim, text_num_heads),
            "audio": (audio_embed_dim, audio_num_heads), "depth": (depth_embed_dim, depth_num_heads),
            "thermal": (thermal_embed_dim, thermal_num_heads), "imu": (imu_embed_dim, imu_num_heads),
        }.items():
            if dim % heads:
                raise ConfigError(f"ImageBind {name}_embed_dim={dim} is not divisible by {name}_num_heads={heads}")

        # Modules are created on the meta device, then materialised and initialised in the reference's RNG order
        # (see init_weights), unless the caller itself builds on the meta device.
        target = torch.get_default_device()
        with torch.device("meta"):
            self.modality_preprocessors = nn.ModuleDict({
                "vision": PatchPreprocessor(
                    PatchEmbed(nn.Sequential(
                        PadIm2Video(ntimes=2),
                        nn.Conv3d(3, vision_embed_dim, kernel_size=kernel_size, stride=kernel_size, bias=False),
                    )),
                    "rgbt_stem", (3, video_frames, IMAGE_SIZE, IMAGE_SIZE), vision_embed_dim,
                ),
                "text": TextPreprocessor(text_embed_dim),
                "audio": PatchPreprocessor(
                    PatchEmbed(
                        nn.Conv2d(1, audio_embed_dim, kernel_size=audio_kernel_size, stride=audio_stride, bias=False),
                        nn.LayerNorm(audio_embed_dim, eps=STEM_LN_EPS),
                    ),
                    "rgbt_stem", (1, audio_num_mel_bins, audio_target_len), audio_embed_dim,
                ),
                "depth": PatchPreprocessor(
                    PatchEmbed(
                        nn.Conv2d(1, depth_embed_dim, kernel_size=depth_kernel_size, stride=depth_kernel_size,
                                  bias=False),
                        nn.LayerNorm(depth_embed_dim, eps=STEM_LN_EPS),
                    ),
                    "depth_stem", (1, IMAGE_SIZE, IMAGE_SIZE), depth_embed_dim,
                ),
                "thermal": PatchPreprocessor(
                    PatchEmbed(
                        nn.Conv2d(1, thermal_embed_dim, kernel_size=thermal_kernel_size,
                                  stride=thermal_kernel_size, bias=False),
                        nn.LayerNorm(thermal_embed_dim, eps=STEM_LN_EPS),
                    ),
                    "rgbt_stem", (1, IMAGE_SIZE, IMAGE_SIZE), thermal_embed_dim,
                ),
                # imu_kernel_size is accepted but unused: the reference hard-wires the IMU window to 8.
                "imu": IMUPreprocessor(
                    PatchEmbed(
                        nn.Linear(IMU_INPUT_SHAPE[0] * IMU_WINDOW, imu_embed_dim, bias=False),
                        nn.LayerNorm(imu_embed_dim, eps=STEM_LN_EPS),
                    ),
                    imu_embed_dim,
                ),
            })
            # Drop path is fixed at 0 for vision and text, whatever the arguments say (reference behaviour).
            self.modality_trunks = nn.ModuleDict({
                "vision": Trunk(vision_embed_dim, vision_num_blocks, vision_num_heads, True, False, 0.0),
                "text": Trunk(text_embed_dim, text_num_blocks, text_num_heads, False, False, 0.0),
                "audio": Trunk(audio_embed_dim, audio_num_blocks, audio_num_heads, False, True, audio_drop_path),
                "depth": Trunk(depth_embed_dim, depth_num_blocks, depth_num_heads, False, True, depth_drop_path),
                "thermal": Trunk(
                    thermal_embed_dim, thermal_num_blocks, thermal_num_heads, False, True, thermal_drop_path
                ),
                "imu": Trunk(imu_embed_dim, imu_num_blocks, imu_num_heads, False, True, imu_drop_path),
            })
            heads: dict[str, nn.Module] = {}
            for name in MODALITIES:
                dim = widths[name]
                if name == "text":
                    heads[name] = TextHead(dim, out_embed_dim)
                elif name == "imu":
                    heads[name] = nn.Sequential(
                        nn.LayerNorm(dim, eps=LN_EPS), SelectTokens(output_mode), nn.Dropout(p=0.5),
                        nn.Linear(dim, out_embed_dim, bias=False),
                    )
                else:
                    heads[name] = nn.Sequential(
                        nn.LayerNorm(dim, eps=LN_EPS), SelectTokens(output_mode),
                        nn.Linear(dim, out_embed_dim, bias=False),
                    )
            self.modality_heads = nn.ModuleDict(heads)
            self.modality_postprocessors = nn.ModuleDict({
                "vision": Normalize(),
                "text": nn.Sequential(Normalize(), LogitScaling(1 / 0.07, learnable=True)),
                "audio": nn.Sequential(Normalize(), LogitScaling(20.0, learnable=False)),
                "depth": nn.Sequential(Normalize(), LogitScaling(5.0, learnable=False)),
                "thermal": nn.Sequential(Normalize(), LogitScaling(10.0, learnable=False)),
                "imu": nn.Sequential(Normalize(), LogitScaling(5.0, learnable=False)),
            })
        if target.type != "meta":
            self.to_empty(device=target)
            self.init_weights()

    # ----------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re-)initialise every tensor as the reference constructor does, drawing from the global RNG in its order.

        Order: preprocessors, trunks, heads, postprocessors, each vision, text, audio, depth, thermal, imu.
        Within a preprocessor: the stem's default init, the pos-embed's trunc_normal (overwritten, but it consumes
        random numbers), then normal * D^-0.5 for pos-embed and CLS. Within a trunk: each block's modules in
        creation order with torch's default init, then the trunk's xavier/zero re-initialisation.
        """
        pre = self.modality_preprocessors
        for name in MODALITIES:
            p = pre[name]
            if name == "text":
                p.token_embedding.reset_parameters()
                p.reset_mask()
                nn.init.normal_(p.token_embedding.weight, std=0.02)
                nn.init.normal_(p.pos_embed, std=0.01)
            elif name == "imu":
                p.imu_stem.proj.reset_parameters()
                p.imu_stem.norm_layer.reset_parameters()
                nn.init.normal_(p.pos_embed, std=0.01)
                nn.init.normal_(p.cls_token)
                p.cls_token.mul_(p.cls_token.shape[-1] ** -0.5)
            else:
                stem = p.stem
                conv = stem.proj[1] if isinstance(stem.proj, nn.Sequential) else stem.proj
                conv.reset_parameters()
                if stem.norm_layer is not None:
                    stem.norm_layer.reset_parameters()
                pos = p.pos_embedding_helper.pos_embed
                nn.init.trunc_normal_(pos, std=0.02)
                scale = p.embed_dim**-0.5
                nn.init.normal_(pos)
                pos.mul_(scale)
                nn.init.normal_(p.cls_token)
                p.cls_token.mul_(scale)
        for name in MODALITIES:
            trunk = self.modality_trunks[name]
            for block in trunk.blocks:
                block.attn.out_proj.reset_parameters()
                block.attn._reset_parameters()
                block.norm_1.reset_parameters()
                block.mlp.fc1.reset_parameters()
                block.mlp.fc2.reset_parameters()
                block.norm_2.reset_parameters()
            # The trunk's own pass (module.apply order): Linear -> xavier_uniform + zero bias; LayerNorm -> 1, 0.
            for module in _post_order(trunk):
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
        for name in MODALITIES:
            for module in self.modality_heads[name].modules():
                if isinstance(module, (nn.LayerNorm, nn.Linear)):
                    module.reset_parameters()
        for name in MODALITIES:
            post = self.modality_postprocessors[name]
            if isinstance(post, nn.Sequential):
                post[1].reset_value()

    # ----------------------------------------------------------------------------------------------------------

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encode each entry of ``inputs`` independently, in dict order."""
        outputs: dict[str, torch.Tensor] = {}
        for key, value in inputs.items():
            if key not in MODALITIES:
                raise ConfigError(f"unknown ImageBind modality {key!r}; expected one of {MODALITIES}")
            if value is None:
                continue
            outputs[key] = self.encode(key, value)
        return outputs

    def encode(self, modality: str, value: torch.Tensor) -> torch.Tensor:
        """One modality: (clips flattened) -> preprocessor -> trunk -> head -> postprocessor -> mean over clips."""
        has_clips = value.ndim >= 5
        batch = value.shape[0]
        if has_clips:
            batch, clips = value.shape[:2]
            value = value.reshape(batch * clips, *value.shape[2:])
        preprocessor = self.modality_preprocessors[modality]
        trunk = self.modality_trunks[modality]
        head = self.modality_heads[modality]
        if modality == "text":
            tokens, seq_len = preprocessor(value)
            x = head(trunk(tokens, attn_mask=preprocessor.mask), seq_len=seq_len)
        else:
            x = head(trunk(preprocessor(value)))
        post = self.modality_postprocessors[modality]
        # NExT-GPT applies only the normalisation to audio (no x20 logit scale).
        x = post[0](x) if modality == "audio" else post(x)
        dim = x.shape[-1]
        if has_clips:
            x = x.reshape(batch, clips, -1).mean(dim=1)
        if self.output_mode == "tokens":
            x = x.reshape(batch, -1, dim)
        return x


def _post_order(module: nn.Module):
    """Modules in the order nn.Module.apply visits them (children first, then the module itself)."""
    for child in module.children():
        yield from _post_order(child)
    yield module


# --------------------------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------------------------


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a directory holding one of CHECKPOINT_FILE_NAMES (the reference passes a directory)."""
    p = Path(path)
    if p.is_dir():
        for name in CHECKPOINT_FILE_NAMES:
            if (p / name).is_file():
                return p / name
        raise CheckpointError(
            f"{p}: no ImageBind checkpoint in this directory (looked for {list(CHECKPOINT_FILE_NAMES)})"
        )
    if not p.is_file():
        raise CheckpointError(f"{p}: ImageBind checkpoint not found")
    return p


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a plain state dict from ``.safetensors`` or a pickle (``.pth``/``.pt``/``.bin``, weights only, mmap)."""
    p = resolve_checkpoint_path(path)
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors import SafetensorError

        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{p}: cannot read safetensors file: {err}") from err
    try:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            logger.warning("%s: not in torch's zip format, loading without mmap", p)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors of weights_only, truncated or foreign files, ...
        raise CheckpointError(f"{p}: cannot read checkpoint: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: expected a plain state dict of tensors (as imagebind_huge.pth is)")
    return dict(state)


def load_checkpoint_(model: ImageBindModel, path: str | os.PathLike) -> ImageBindModel:
    """Strictly load ``path`` into ``model`` (typically on the meta device) by assignment: no second copy.

    Missing, unexpected or mis-shaped keys raise CheckpointError listing them. Floating tensors stored in another
    precision are cast to float32, as the reference's copy into float32 parameters would.
    """
    state = read_state_dict(path)
    check_state_dict(model.state_dict(), state, f"{path} (ImageBind)")
    for k, v in state.items():
        if v.is_floating_point() and v.dtype != torch.float32:
            state[k] = v.float()
    model.load_state_dict(state, strict=True, assign=True)
    return model


def build_imagebind(
    kwargs: Mapping[str, Any],
    checkpoint_path: str | os.PathLike | None = None,
    output_mode: str = "tokens",
) -> ImageBindModel:
    """Build ImageBindModel(**kwargs) on the meta device, then load ``checkpoint_path`` strictly by assignment, or,
    without a path, materialise it on the CPU with the reference's random initialisation."""
    with torch.device("meta"):
        model = ImageBindModel(**kwargs, output_mode=output_mode)
    if checkpoint_path is not None:
        load_checkpoint_(model, checkpoint_path)
    else:
        model.to_empty(device="cpu")
        model.init_weights()
    return model.eval()


def imagebind_huge(checkpoint_path: str | os.PathLike | None = None, output_mode: str = "tokens") -> ImageBindModel:
    """The huge configuration (1.2 B parameters); ``checkpoint_path`` is ``imagebind_huge.pth`` (or a
    ``.safetensors`` file, or a directory holding either). Returns the model in eval mode (not a tuple)."""
    return build_imagebind(IMAGEBIND_HUGE_KWARGS, checkpoint_path, output_mode)
