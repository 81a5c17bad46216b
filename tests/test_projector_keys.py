"""Projector checkpoint keys: our parameter names equal the reference's (NEW .bin files load strictly), the group
projector equals transformers' GroupViT, and the LEGACY TextFcLayer key mapping."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

from nextgpt.errors import CheckpointError
from nextgpt.model.multimodal_projector import (
    GroupProjector,
    MLPProjector,
    QFormerProjector,
    TransformersProjector,
    legacy_textfc_key_map,
)
from test_projectors import TINY_GROUP, TINY_TFM


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

# ------------------------------------------------------------------------------ reference key names


# Hand-written from the reference module tree (GroupProjector / GroupingLayer / AttnBlock / GroupingBlock).
GROUP_REFERENCE_KEYS = {
    "in_fc.weight": (512, 1024),
    "in_fc.bias": (512,),
    "layers.0.group_token": (1, 64, 512),
    "layers.0.blocks.0.norm1.weight": (512,),
    "layers.0.blocks.0.attn.qkv.weight": (1536, 512),
    "layers.0.blocks.0.attn.proj.bias": (512,),
    "layers.0.blocks.5.mlp.fc1.weight": (2048, 512),
    "layers.0.blocks.5.mlp.fc2.bias": (512,),
    "layers.0.downsample.norm_tokens.weight": (512,),
    "layers.0.downsample.mlp_inter.fc1.weight": (256, 64),
    "layers.0.downsample.mlp_inter.fc2.weight": (64, 256),
    "layers.0.downsample.norm_post_tokens.bias": (512,),
    "layers.0.downsample.norm_x.weight": (512,),
    "layers.0.downsample.pre_assign_attn.norm_post.weight": (512,),
    "layers.0.downsample.pre_assign_attn.attn.q_proj.weight": (512, 512),
    "layers.0.downsample.pre_assign_attn.attn.k_proj.bias": (512,),
    "layers.0.downsample.pre_assign_attn.attn.v_proj.weight": (512, 512),
    "layers.0.downsample.pre_assign_attn.attn.proj.weight": (512, 512),
    "layers.0.downsample.pre_assign_attn.norm2.weight": (512,),
    "layers.0.downsample.pre_assign_attn.mlp.fc1.weight": (2048, 512),
    "layers.0.downsample.assign.q_proj.weight": (512, 512),
    "layers.0.downsample.assign.q_proj.bias": (512,),
    "layers.0.downsample.assign.k_proj.weight": (512, 512),
    "layers.0.downsample.assign.v_proj.bias": (512,),
    "layers.0.downsample.assign.proj.weight": (512, 512),
    "layers.0.downsample.norm_new_x.weight": (512,),
    "layers.0.downsample.mlp_channels.fc1.weight": (2048, 512),
    "layers.0.downsample.mlp_channels.fc2.weight": (512, 2048),
    "layers.1.group_token": (1, 8, 512),
    "layers.1.group_projector.0.weight": (512,),
    "layers.1.group_projector.0.bias": (512,),
    "layers.1.group_projector.1.fc1.weight": (256, 64),
    "layers.1.group_projector.1.fc2.weight": (8, 256),
    "layers.1.blocks.2.attn.qkv.weight": (1536, 512),
    "layers.1.downsample.mlp_inter.fc1.weight": (256, 8),
    "layers.1.downsample.mlp_inter.fc2.weight": (8, 256),
    "layers.1.downsample.assign.proj.bias": (512,),
    "layers.2.blocks.0.norm1.bias": (512,),
    "layers.2.blocks.2.mlp.fc2.weight": (512, 2048),
    "norm.weight": (512,),
    "norm.bias": (512,),
    "out_fc.weight": (4096, 512),
    "out_fc.bias": (4096,),
}
# Per AttnBlock 11 tensors (no qkv bias); per GroupingBlock 40; stage 1 also has a 6-tensor group projector.
GROUP_REFERENCE_KEY_COUNT = 2 + (1 + 6 * 11 + 40) + (1 + 3 * 11 + 40 + 6) + 3 * 11 + 2 + 2


def test_group_projector_state_dict_names_match_reference() -> None:
    with torch.device("meta"):
        sd = GroupProjector(1024, 4096).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items() if k in GROUP_REFERENCE_KEYS} == GROUP_REFERENCE_KEYS
    assert len(sd) == GROUP_REFERENCE_KEY_COUNT == 226
    assert {k.split(".")[0] for k in sd} == {"in_fc", "layers", "norm", "out_fc"}
    assert not any(k.endswith("qkv.bias") for k in sd)  # qkv_bias=False in the self-attention blocks
    absent = ("layers.2.group_token", "layers.2.downsample", "layers.0.group_projector")
    assert not any(k.startswith(absent) for k in sd)
    assert not any("reduction" in k for k in sd)  # same width at every stage -> identity reduction


def test_transformer_and_mlp_state_dict_names_match_reference() -> None:
    with torch.device("meta"):
        sd = TransformersProjector(4096, 1024, 77).state_dict()
        mlp = MLPProjector(1024, 4096).state_dict()
    assert {k.split(".")[0] for k in sd} == {"in_fc", "tfm", "out_fc", "query_embs"}
    for key in (
        "in_fc.weight", "out_fc.bias", "query_embs",
        "tfm.encoder.layers.0.self_attn.in_proj_weight", "tfm.encoder.layers.3.linear2.weight",
        "tfm.encoder.norm.weight", "tfm.decoder.layers.3.multihead_attn.out_proj.weight",
        "tfm.decoder.layers.0.norm3.bias", "tfm.decoder.norm.bias",
    ):
        assert key in sd, key
    assert set(mlp) == {"layer.0.weight", "layer.0.bias", "layer.2.weight", "layer.2.bias"}


def test_reference_input_projector_bin_loads_strictly(tmp_path) -> None:
    """A reference `mm_input_projector.bin` (keys prefixed `model.mm_input_projector.`) loads after stripping."""
    source = GroupProjector(24, 40, **TINY_GROUP)
    prefix = "model.mm_input_projector."
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, tmp_path / "mm_input_projector.bin")
    loaded = torch.load(tmp_path / "mm_input_projector.bin", weights_only=True)
    target = GroupProjector(24, 40, **TINY_GROUP).eval()
    result = target.load_state_dict({k.removeprefix(prefix): v for k, v in loaded.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 9, 24)
    with torch.no_grad():
        assert torch.equal(target(x), source.eval()(x))


def _to_hf_groupvit(proj: GroupProjector) -> nn.Module:
    """Copy our weights into transformers' independent GroupViT vision encoder (same algorithm, other code)."""
    from transformers import GroupViTVisionConfig
    from transformers.models.groupvit.modeling_groupvit import GroupViTVisionEncoder

    dim = proj.embed_dim
    config = GroupViTVisionConfig(
        hidden_size=dim, intermediate_size=4 * dim, depths=list(proj.depths), num_hidden_layers=sum(proj.depths),
        num_attention_heads=proj.num_heads[0],
        num_group_tokens=list(proj.num_group_tokens), num_output_groups=list(proj.num_output_groups) + [0],
        assign_mlp_ratio=[0.5, 4], hidden_act="gelu", layer_norm_eps=1e-5, attention_dropout=0.0, dropout=0.0,
    )
    encoder = GroupViTVisionEncoder(config).eval()
    ours = proj.state_dict()
    theirs = {}
    for key, value in ours.items():
        if not key.startswith("layers."):
            continue
        key = "stages." + key[len("layers."):]
        key = re.sub(r"\.blocks\.(\d+)\.norm1\.", r".layers.\1.layer_norm1.", key)
        key = re.sub(r"\.blocks\.(\d+)\.norm2\.", r".layers.\1.layer_norm2.", key)
        key = re.sub(r"\.blocks\.(\d+)\.attn\.proj\.", r".layers.\1.self_attn.out_proj.", key)
        key = re.sub(r"\.blocks\.(\d+)\.mlp\.", r".layers.\1.mlp.", key)
        key = key.replace("pre_assign_attn.attn.proj.", "pre_assign_attn.attn.out_proj.")
        match = re.match(r"(stages\.\d+)\.blocks\.(\d+)\.attn\.qkv\.weight", key)
        if match:
            prefix = f"{match.group(1)}.layers.{match.group(2)}.self_attn."
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                theirs[prefix + name + ".weight"] = part
                theirs[prefix + name + ".bias"] = torch.zeros(dim)  # the reference's self-attention has no qkv bias
            continue
        theirs[key] = value
    encoder.load_state_dict(theirs, strict=True)
    return encoder


def test_group_projector_matches_transformers_groupvit() -> None:
    """An independent implementation (transformers' GroupViT) gives the same tokens from the same weights."""
    proj = GroupProjector(24, 40, **TINY_GROUP).eval()
    with torch.no_grad():
        for p in proj.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # LayerNorms and zero-initialised group tokens matter too
        encoder = _to_hf_groupvit(proj)
        for length in (3, 50):
            x = torch.randn(2, length, 24)
            expected = proj.out_fc(proj.norm(encoder(proj.in_fc(x), return_dict=True).last_hidden_state))
            torch.testing.assert_close(proj(x), expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ LEGACY keys


class _LegacyTextFcTransformer(nn.Module):
    """The LEGACY TextFcLayer transformer-mode module tree (names fc / tfm / model / query_embs), tiny widths."""

    def __init__(self, in_dim: int, out_dim: int, queries: int, hidden: int = 32) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, hidden)
        self.tfm = nn.Transformer(
            d_model=hidden, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=hidden * 4,
            dropout=0.0, batch_first=True, norm_first=True,
        )
        self.model = nn.Linear(hidden, out_dim)
        self.query_embs = nn.Parameter(torch.randn(1, queries, hidden))

    def forward(self, x: torch.Tensor, input_embs: torch.Tensor) -> torch.Tensor:
        x = self.fc(x + input_embs)
        return self.model(self.tfm(x, self.query_embs.repeat(x.shape[0], 1, 1)))


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
def test_legacy_textfc_transformer_weights_map_and_match() -> None:
    legacy = _LegacyTextFcTransformer(48, 20, 5).eval()
    ours = TransformersProjector(48, 20, 5, **TINY_TFM).eval()
    mapped = {legacy_textfc_key_map(k): v for k, v in legacy.state_dict().items()}
    ours.load_state_dict(mapped, strict=True)
    assert legacy_textfc_key_map("fc.weight") == "in_fc.weight"
    assert legacy_textfc_key_map("model.bias") == "out_fc.bias"
    assert legacy_textfc_key_map("query_embs") == "query_embs"
    assert legacy_textfc_key_map("tfm.decoder.layers.0.norm3.weight") == "tfm.decoder.layers.0.norm3.weight"
    x, e = torch.randn(2, 4, 48), torch.randn(2, 4, 48)
    with torch.no_grad():
        # two module classes may dispatch to different attention / matmul kernels: equal within float32 rounding
        torch.testing.assert_close(ours(x, e), legacy(x, e), rtol=1e-5, atol=1e-6)


def test_legacy_textfc_qformer_names_cover_our_qformer() -> None:
    """LAVIS Q-Former names (LEGACY qformer mode) map one-to-one onto QFormerProjector's state dict."""
    legacy_names = ["fc.weight", "fc.bias", "model.weight", "model.bias", "query_tokens",
                    "Qformer.bert.embeddings.LayerNorm.weight", "Qformer.bert.embeddings.LayerNorm.bias",
                    "Qformer.bert.embeddings.position_ids"]
    for i in range(2):
        base = f"Qformer.bert.encoder.layer.{i}."
        for block in ("attention", "crossattention"):
            for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
                legacy_names += [f"{base}{block}.{part}.{t}" for t in ("weight", "bias")]
        legacy_names += [f"{base}intermediate_query.dense.{t}" for t in ("weight", "bias")]
        legacy_names += [f"{base}output_query.{p}.{t}" for p in ("dense", "LayerNorm") for t in ("weight", "bias")]
    mapped = [legacy_textfc_key_map(n) for n in legacy_names]
    assert mapped.count(None) == 1  # the position_ids buffer
    with torch.device("meta"):
        ours = set(QFormerProjector(4096, 768, 77).state_dict())
    assert sorted(m for m in mapped if m) == sorted(ours)


@pytest.mark.parametrize("name", ["model.0.weight", "fc.weight.extra", "llama_proj.weight", "query_embs.x"])
def test_legacy_textfc_unknown_key_raises(name: str) -> None:
    with pytest.raises(CheckpointError, match="LEGACY TextFcLayer key"):
        legacy_textfc_key_map(name)
