"""GroupViT-style input projector of NExT-GPT (NEW codebase, `mm_input_projector_type: group`).

It compresses any number of encoder tokens (ImageBind patch tokens, 1024-d) into a fixed number of LLM tokens
(8 by default): learnable group tokens are concatenated to the input tokens, a stack of self-attention blocks runs
over both, and a *grouping block* assigns every input token to one group (hard assignment; Gumbel-softmax with a
straight-through estimator while training, arg-max at eval).  Two grouping stages (64 groups, then 8 groups) and a
last attention stage follow each other.

Module tree and parameter names mirror the reference (`nextgpt/model/multimodal_projector/{projector,group}.py`,
itself adapted from NVIDIA's GroupViT), so a reference `mm_input_projector.bin` loads strictly once the prefix
`model.mm_input_projector.` is stripped.  The arithmetic is written in the same order as the reference so that
eval-mode outputs agree bit for bit on the same device.  Written from the algorithm's description, not copied.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from nextgpt.errors import ConfigError

__all__ = [
    "GroupProjector",
    "GroupingLayer",
    "GroupingBlock",
    "AssignAttention",
    "Attention",
    "AttnBlock",
    "CrossAttnBlock",
    "Mlp",
    "MixerMlp",
    "gumbel_softmax",
    "hard_softmax",
]


def _drop_path(rate: float) -> nn.Module:
    """Stochastic depth per sample (scaled by the keep probability), or identity when the rate is 0."""
    return StochasticDepth(rate, mode="row") if rate > 0.0 else nn.Identity()


def _pair(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, Sequence):
        first, second = value
        return first, second
    return value, value


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads) as a view, the layout the reference uses."""
    batch, length, channels = x.shape
    return x.reshape(batch, length, num_heads, channels // num_heads).permute(0, 2, 1, 3)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, c) -> (B, N, heads * c)."""
    batch, heads, length, channels = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, length, heads * channels)


def _straight_through_one_hot(y_soft: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the arg-max along `dim` in the forward pass, gradient of `y_soft` in the backward pass."""
    index = y_soft.max(dim, keepdim=True)[1]
    y_hard = torch.zeros_like(y_soft, memory_format=torch.legacy_contiguous_format).scatter_(dim, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


def hard_softmax(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Deterministic hard assignment: one-hot arg-max of softmax(logits) with straight-through gradients."""
    return _straight_through_one_hot(logits.softmax(dim), dim)


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = False, dim: int = -1) -> torch.Tensor:
    """Gumbel-softmax sample along `dim`; `hard=True` returns a straight-through one-hot sample.

    Noise comes from `torch.distributions.Gumbel(0, 1)` (numerically safer than -log(-log(U)) on an exponential).
    """
    zero = torch.tensor(0.0, device=logits.device, dtype=logits.dtype)
    one = torch.tensor(1.0, device=logits.device, dtype=logits.dtype)
    noise = torch.distributions.gumbel.Gumbel(zero, one).sample(logits.shape)
    y_soft = ((logits + noise) / tau).softmax(dim)
    if hard:
        return _straight_through_one_hot(y_soft, dim)
    return y_soft


class Mlp(nn.Module):
    """Two-layer feed-forward network `fc1 -> act -> fc2` (dropout after each linear)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class MixerMlp(Mlp):
    """An `Mlp` applied across the token axis of a (B, N, C) tensor (token mixing, as in MLP-Mixer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention; fused `qkv` projection for self-attention, separate q/k/v projections otherwise."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        out_dim: int | None = None,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qkv_fuse: bool = False,
    ) -> None:
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv_fuse = qkv_fuse
        if qkv_fuse:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        *,
        value: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.qkv_fuse:
            if key is not None or value is not None:
                raise ValueError("a fused-qkv Attention is self-attention only: pass the query alone")
            batch, length, channels = query.shape
            qkv = self.qkv(query).reshape(batch, length, 3, self.num_heads, channels // self.num_heads)
            qkv = qkv.permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            key = query if key is None else key
            value = key if value is None else value
            q = _split_heads(self.q_proj(query), self.num_heads)
            k = _split_heads(self.k_proj(key), self.num_heads)
            v = _split_heads(self.v_proj(value), self.num_heads)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn + mask.unsqueeze(dim=1)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = self.proj(_merge_heads(attn @ v))
        return self.proj_drop(out)


class AttnBlock(nn.Module):
    """Pre-LN transformer block: fused-qkv self-attention and a GELU MLP, both residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
            proj_drop=drop, qkv_fuse=True,
        )
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask=mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttnBlock(nn.Module):
    """Cross-attention block (queries attend to keys); `post_norm=True` normalises the output instead of inputs."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        post_norm: bool = False,
    ) -> None:
        super().__init__()
        if post_norm:
            self.norm_post = norm_layer(dim)
            self.norm_q = nn.Identity()
            self.norm_k = nn.Identity()
        else:
            self.norm_q = norm_layer(dim)
            self.norm_k = norm_layer(dim)
            self.norm_post = nn.Identity()
        self.attn = Attention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, query: torch.Tensor, key: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = query + self.drop_path(self.attn(self.norm_q(query), self.norm_k(key), mask=mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return self.norm_post(x)


class AssignAttention(nn.Module):
    """Assigns every key token to one query (group): attention normalised over the *query* axis.

    Training with `gumbel=True`: Gumbel-softmax sample; otherwise softmax.  With `hard=True` the assignment is a
    straight-through one-hot.  Unless `sum_assign`, each group's weights are divided by (their sum + `assign_eps`),
    i.e. a group becomes (almost) the mean of its members.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        hard: bool = True,
        gumbel: bool = False,
        gumbel_tau: float = 1.0,
        sum_assign: bool = False,
        assign_eps: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.hard = hard
        self.gumbel = gumbel
        self.gumbel_tau = gumbel_tau
        self.sum_assign = sum_assign
        self.assign_eps = assign_eps

    def get_attn(self, attn: torch.Tensor, gumbel: bool | None = None, hard: bool | None = None) -> torch.Tensor:
        """Normalise raw logits (B, heads, groups, tokens) over the group axis."""
        gumbel = self.gumbel if gumbel is None else gumbel
        hard = self.hard if hard is None else hard
        group_axis = -2
        if gumbel and self.training:
            return gumbel_softmax(attn, dim=group_axis, hard=hard, tau=self.gumbel_tau)
        if hard:
            return hard_softmax(attn, dim=group_axis)
        return F.softmax(attn, dim=group_axis)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        *,
        value: torch.Tensor | None = None,
        return_attn: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        key = query if key is None else key
        value = key if value is None else value
        q = _split_heads(self.q_proj(query), self.num_heads)
        k = _split_heads(self.k_proj(key), self.num_heads)
        v = _split_heads(self.v_proj(value), self.num_heads)
        raw_attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.get_attn(raw_attn)
        attn_maps = None
        if return_attn:
            attn_maps = {"hard": attn.clone(), "soft": self.get_attn(raw_attn, gumbel=False, hard=False)}
        if not self.sum_assign:
            attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
        attn = self.attn_drop(attn)
        out = self.proj(_merge_heads(attn @ v))
        return self.proj_drop(out), attn_maps

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, hard={self.hard}, gumbel={self.gumbel}, sum_assign={self.sum_assign}, "
            f"gumbel_tau={self.gumbel_tau}, assign_eps={self.assign_eps}"
        )


class GroupingBlock(nn.Module):
    """Merges input tokens into `num_output_group` new tokens using `num_group_token` group tokens.

    Steps: normalise group tokens and input tokens; token-mix the group tokens to `num_output_group` rows; refine
    them with a post-norm cross-attention over the input tokens; hard-assign input tokens to them; add the
    projected group tokens; finish with a residual channel MLP.
    """

    def __init__(
        self,
        *,
        dim: int,
        out_dim: int,
        num_heads: int,
        num_group_token: int,
        num_output_group: int,
        norm_layer: Callable[[int], nn.Module],
        mlp_ratio: float | Sequence[float] = (0.5, 4.0),
        hard: bool = True,
        gumbel: bool = True,
        sum_assign: bool = False,
        assign_eps: float = 1.0,
        gumbel_tau: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.hard = hard
        self.gumbel = gumbel
        self.sum_assign = sum_assign
        self.num_output_group = num_output_group
        tokens_dim, channels_dim = (int(ratio * dim) for ratio in _pair(mlp_ratio))
        self.norm_tokens = norm_layer(dim)
        self.mlp_inter = Mlp(num_group_token, tokens_dim, num_output_group)
        self.norm_post_tokens = norm_layer(dim)
        self.norm_x = norm_layer(dim)
        self.pre_assign_attn = CrossAttnBlock(
            dim=dim, num_heads=num_heads, mlp_ratio=4, qkv_bias=True, norm_layer=norm_layer, post_norm=True
        )
        self.assign = AssignAttention(
            dim=dim, num_heads=1, qkv_bias=True, hard=hard, gumbel=gumbel, gumbel_tau=gumbel_tau,
            sum_assign=sum_assign, assign_eps=assign_eps,
        )
        self.norm_new_x = norm_layer(dim)
        self.mlp_channels = Mlp(dim, channels_dim, out_dim)
        if out_dim is not None and dim != out_dim:
            self.reduction = nn.Sequential(norm_layer(dim), nn.Linear(dim, out_dim, bias=False))
        else:
            self.reduction = nn.Identity()

    def project_group_token(self, group_tokens: torch.Tensor) -> torch.Tensor:
        """(B, S_in, C) group tokens -> (B, S_out, C) by token mixing, then LayerNorm."""
        projected = self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2)
        return self.norm_post_tokens(projected)

    def forward(
        self, x: torch.Tensor, group_tokens: torch.Tensor, return_attn: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        projected = self.project_group_token(group_tokens)
        projected = self.pre_assign_attn(projected, x)
        new_x, attn_maps = self.assign(projected, x, return_attn=return_attn)
        new_x = new_x + projected
        new_x = self.reduction(new_x) + self.mlp_channels(self.norm_new_x(new_x))
        return new_x, attn_maps

    def extra_repr(self) -> str:
        return (
            f"hard={self.hard}, gumbel={self.gumbel}, sum_assign={self.sum_assign}, "
            f"num_output_group={self.num_output_group}"
        )


class GroupingLayer(nn.Module):
    """One stage: optional learnable group tokens (+ projected previous-stage groups), attention blocks over
    [tokens; group tokens], then an optional grouping block (`downsample`)."""

    def __init__(
        self,
        dim: int,
        num_input_token: int,
        depth: int,
        num_heads: int,
        num_group_token: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        downsample: nn.Module | None = None,
        use_checkpoint: bool = False,
        group_projector: nn.Module | None = None,
        zero_init_group_token: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_length = num_input_token  # informational only: no positional embeddings anywhere
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.num_group_token = num_group_token
        if num_group_token > 0:
            self.group_token = nn.Parameter(torch.zeros(1, num_group_token, dim))
            if not zero_init_group_token:
                nn.init.trunc_normal_(self.group_token, std=0.02)
        else:
            self.group_token = None
        rates = list(drop_path) if isinstance(drop_path, Sequence) else [drop_path] * depth
        self.blocks = nn.ModuleList(
            AttnBlock(
                dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop,
                attn_drop=attn_drop, drop_path=rates[i], norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.downsample = downsample
        self.group_projector = group_projector

    @property
    def with_group_token(self) -> bool:
        return self.group_token is not None

    def forward(
        self, x: torch.Tensor, prev_group_token: torch.Tensor | None = None, return_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor] | None]:
        """Returns (new tokens, this stage's group tokens after the blocks, assignment maps or None)."""
        group_token = None
        if self.with_group_token:
            group_token = self.group_token.expand(x.size(0), -1, -1)
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
        cat_x = x if group_token is None else torch.cat([x, group_token], dim=1)
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                cat_x = checkpoint(block, cat_x, use_reentrant=False)
            else:
                cat_x = block(cat_x)
        if self.with_group_token:
            x, group_token = cat_x[:, : -self.num_group_token], cat_x[:, -self.num_group_token :]
        else:
            x = cat_x
        attn_maps = None
        if self.downsample is not None:
            x, attn_maps = self.downsample(x, group_token, return_attn=return_attn)
        return x, group_token, attn_maps

    def extra_repr(self) -> str:
        return f"dim={self.dim}, depth={self.depth}, num_group_token={self.num_group_token}"


def _check_group_options(
    in_features: int,
    out_features: int,
    embed_dim: int,
    embed_factors: Sequence[float],
    num_heads: Sequence[int],
    num_group_tokens: Sequence[int],
    num_output_groups: Sequence[int],
    depths: Sequence[int],
) -> None:
    """Raise ConfigError for inconsistent stage lists or sizes (instead of a shape error deep in torch)."""
    where = "input projector 'group'"
    for name, value in (("in_features", in_features), ("out_features", out_features), ("embed_dim", embed_dim)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {name} must be a positive integer, got {value!r}")
    stages = len(depths)
    if stages < 1:
        raise ConfigError(f"{where}: depths must list at least one stage")
    for name, values, length in (
        ("embed_factors", embed_factors, stages),
        ("num_heads", num_heads, stages),
        ("num_group_tokens", num_group_tokens, stages),
        ("num_output_groups", num_output_groups, stages - 1),
    ):
        if len(values) != length:
            raise ConfigError(f"{where}: {name} needs {length} entries for depths={list(depths)}, got {list(values)}")
    for i in range(stages):
        dim = int(embed_dim * embed_factors[i])
        if num_heads[i] < 1 or dim % num_heads[i] != 0:
            raise ConfigError(f"{where}: stage {i} width {dim} is not divisible by num_heads={num_heads[i]}")
        if i < stages - 1 and (num_group_tokens[i] < 1 or num_output_groups[i] < 1):
            raise ConfigError(
                f"{where}: stage {i} groups tokens, so num_group_tokens and num_output_groups must be >= 1"
            )


class GroupProjector(nn.Module):
    """Encoder tokens (B, L, in_features) for any L -> (B, num_output_groups[-1], out_features); 8 by default.

    Constructor arguments and defaults are the reference's; `embed_dim` (the working width, hard-coded to 512 in
    the reference) is an addition so that tiny test configurations can shrink it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_patches: int = 128,
        embed_factors: Sequence[float] = (1, 1, 1),
        num_heads: Sequence[int] = (8, 8, 8),
        num_group_tokens: Sequence[int] = (64, 8, 0),
        num_output_groups: Sequence[int] = (64, 8),
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        hard_assignment: bool = True,
        qkv_bias: bool = False,
        depths: Sequence[int] = (6, 3, 3),
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mlp_ratio: float = 4.0,
        use_checkpoint: bool = False,
        embed_dim: int = 512,
    ) -> None:
        super().__init__()
        _check_group_options(
            in_features, out_features, embed_dim, embed_factors, num_heads, num_group_tokens, num_output_groups, depths
        )
        self.in_fc = nn.Linear(in_features, embed_dim)
        self.embed_dim = embed_dim
        self.embed_factors = list(embed_factors)
        self.num_heads = list(num_heads)
        self.num_group_tokens = list(num_group_tokens)
        self.num_output_groups = list(num_output_groups)
        self.hard_assignment = hard_assignment
        self.qkv_bias = qkv_bias
        self.depths = list(depths)
        self.qk_scale = qk_scale
        self.drop_rate = drop_rate
        self.attn_drop_rate = attn_drop_rate
        self.drop_path_rate = drop_path_rate
        self.mlp_ratio = mlp_ratio
        self.num_layers = len(depths)
        num_features = int(embed_dim * embed_factors[-1])
        # Stochastic-depth rate grows linearly over all blocks of all stages.
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()

        num_input_token = num_patches
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            dim = int(embed_dim * embed_factors[i])
            downsample = None
            num_output_token = num_input_token
            if i < self.num_layers - 1:
                downsample = GroupingBlock(
                    dim=dim,
                    out_dim=int(embed_dim * embed_factors[i + 1]),
                    num_heads=num_heads[i],
                    num_group_token=num_group_tokens[i],
                    num_output_group=num_output_groups[i],
                    norm_layer=norm_layer,
                    hard=hard_assignment,
                    gumbel=hard_assignment,
                )
                num_output_token = num_output_groups[i]
            group_projector = None
            if i > 0 and num_group_tokens[i] > 0:
                # Previous stage's group tokens -> this stage's: LayerNorm, then token mixing S_prev -> S.
                prev_dim = int(embed_dim * embed_factors[i - 1])
                group_projector = nn.Sequential(
                    norm_layer(prev_dim), MixerMlp(num_group_tokens[i - 1], prev_dim // 2, num_group_tokens[i])
                )
                if dim != prev_dim:
                    group_projector = nn.Sequential(
                        group_projector, norm_layer(prev_dim), nn.Linear(prev_dim, dim, bias=False)
                    )
            self.layers.append(
                GroupingLayer(
                    dim=dim,
                    num_input_token=num_input_token,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    num_group_token=num_group_tokens[i],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    norm_layer=norm_layer,
                    downsample=downsample,
                    use_checkpoint=use_checkpoint,
                    group_projector=group_projector,
                    # Group tokens start at zero where a projection of the previous groups is added to them.
                    zero_init_group_token=group_projector is not None,
                )
            )
            num_input_token = num_output_token
        self.norm = norm_layer(num_features)
        self.out_fc = nn.Linear(num_features, out_features)

    @property
    def num_output_tokens(self) -> int | None:
        """Number of tokens produced per input item (8 with the defaults); None without any grouping stage."""
        return self.num_output_groups[-1] if self.num_output_groups else None

    @property
    def device(self) -> torch.device:
        return self.in_fc.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.in_fc.weight.dtype

    def forward(
        self, x: torch.Tensor, return_attn: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[dict[str, torch.Tensor] | None]]:
        """(B, L, in_features) -> (B, G, out_features).

        With `return_attn=True` also returns, per stage, the hard and soft assignment maps (the reference computes
        and discards them); the projected tokens are the same either way.
        """
        x = self.in_fc(x)
        group_token = None
        attn_maps: list[dict[str, torch.Tensor] | None] = []
        for layer in self.layers:
            x, group_token, stage_maps = layer(x, group_token, return_attn=return_attn)
            attn_maps.append(stage_maps)
        x = self.out_fc(self.norm(x))
        return (x, attn_maps) if return_attn else x
