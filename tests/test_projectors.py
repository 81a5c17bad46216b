"""Input and output projectors: shapes, reference parameter names and counts, assignment behaviour, gradients,
builder errors, LEGACY key mapping."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

from nextgpt.errors import CheckpointError, ConfigError
from nextgpt.model.multimodal_projector import (
    GroupProjector,
    LinearOutputProjector,
    MLPProjector,
    QFormerProjector,
    TransformersProjector,
    build_input_projector,
    build_output_projector,
    legacy_textfc_key_map,
)
from nextgpt.model.multimodal_projector.group import AssignAttention, gumbel_softmax, hard_softmax

# Tiny sizes (CPU, 2 cores).  Group: width 32, stages of 1 block, 8 -> 4 groups.
TINY_GROUP = dict(
    embed_dim=32, num_heads=(4, 4, 4), depths=(1, 1, 1), num_group_tokens=(8, 4, 0), num_output_groups=(8, 4)
)
TINY_TFM = dict(hidden_dim=32, num_heads=4, num_encoder_layers=1, num_decoder_layers=1)
TINY_QFORMER = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("length", [1, 5, 33])
@pytest.mark.parametrize(
    "kind,options,tokens_out",
    [
        ("linear", {}, None),
        ("mlp", {}, None),
        ("group", TINY_GROUP, 4),
        ("qformer", dict(num_query_tokens=6, **TINY_QFORMER), 6),
    ],
)
def test_input_projector_shapes(kind: str, options: dict, tokens_out: int | None, length: int) -> None:
    proj = build_input_projector(kind, 24, 40, **options).eval()
    x = torch.randn(3, length, 24)
    with torch.no_grad():
        y = proj(x)
    assert y.shape == (3, tokens_out or length, 40)
    assert torch.isfinite(y).all()


def test_legacy_input_projector_on_pooled_vector() -> None:
    """LEGACY `llama_proj`: Linear(1024 -> 4096) on the pooled ImageBind vector gives one LLM token per item."""
    proj = build_input_projector("linear", 1024, 4096)
    assert isinstance(proj, nn.Linear) and proj.weight.shape == (4096, 1024)
    pooled = torch.randn(2, 1024)
    out = proj(pooled.unsqueeze(1))
    assert out.shape == (2, 1, 4096)
    torch.testing.assert_close(out[:, 0], pooled @ proj.weight.T + proj.bias)


def test_group_projector_default_size_gives_8_tokens_for_any_length() -> None:
    proj = GroupProjector(1024, 4096).eval()
    assert proj.num_output_tokens == 8
    with torch.no_grad():
        for length in (1, 228):
            assert proj(torch.randn(1, length, 1024)).shape == (1, 8, 4096)


@pytest.mark.parametrize("length", [1, 7, 47])
@pytest.mark.parametrize(
    "kind,options",
    [("transformer", TINY_TFM), ("qformer", TINY_QFORMER)],
)
def test_output_projector_shapes_any_span(kind: str, options: dict, length: int) -> None:
    proj = build_output_projector(kind, 48, 20, 9, **options).eval()
    x, e = torch.randn(2, length, 48), torch.randn(2, length, 48)
    with torch.no_grad():
        assert proj(x, e).shape == (2, 9, 20)


@pytest.mark.parametrize("span,queries", [(7, 77), (15, 1), (4, 4), (24, 77)])
def test_linear_output_projector_fixed_span(span: int, queries: int) -> None:
    proj = build_output_projector("linear", 48, 20, queries, num_input_tokens=span)
    x, e = torch.randn(2, span, 48), torch.randn(2, span, 48)
    y = proj(x, e)
    assert y.shape == (2, queries, 20)
    if span == queries:  # one output per span token: exactly fc(x + e)
        assert proj.token_mix is None
        torch.testing.assert_close(y, proj.fc(x + e))
    with pytest.raises(ValueError, match="num_input_tokens"):
        proj(torch.randn(2, span + 1, 48), torch.randn(2, span + 1, 48))


# ------------------------------------------------------------------------------------- reference forward


def test_transformers_projector_forward_is_reference_formula() -> None:
    """out = out_fc(tfm(in_fc(x + input_embs), query_embs repeated over the batch))."""
    proj = TransformersProjector(48, 20, 5, **TINY_TFM).eval()
    x, e = torch.randn(3, 7, 48), torch.randn(3, 7, 48)
    with torch.no_grad():
        expected = proj.out_fc(proj.tfm(proj.in_fc(x + e), proj.query_embs.expand(3, -1, -1)))
        assert torch.equal(proj(x, e), expected)
    tfm = proj.tfm
    assert tfm.encoder.layers[0].norm_first and tfm.decoder.layers[0].norm_first
    assert tfm.encoder.layers[0].self_attn.batch_first
    assert tfm.encoder.layers[0].dropout.p == 0.0


def test_transformers_projector_reference_hyperparameters() -> None:
    with torch.device("meta"):
        proj = TransformersProjector(4096, 1024, 77)
    tfm = proj.tfm
    assert (len(tfm.encoder.layers), len(tfm.decoder.layers)) == (4, 4)
    layer = tfm.encoder.layers[0]
    assert layer.self_attn.num_heads == 4 and layer.self_attn.embed_dim == 512
    assert layer.linear1.weight.shape == (2048, 512)
    assert layer.norm_first and layer.self_attn.batch_first and layer.dropout.p == 0.0
    assert proj.in_fc.weight.shape == (512, 4096) and proj.out_fc.weight.shape == (1024, 512)
    assert proj.query_embs.shape == (1, 77, 512)


def test_qformer_output_width_independent_of_out_features() -> None:
    """Spec §12.29: Q-Former width 768 regardless of out_features; out_fc maps 768 -> out_features."""
    with torch.device("meta"):
        proj = build_output_projector("qformer", 4096, 1024, 77)
    assert proj.in_fc.weight.shape == (768, 4096)
    assert proj.query_tokens.shape == (1, 77, 768)
    assert proj.out_fc.weight.shape == (1024, 768)
    assert proj.qformer.config.num_hidden_layers == 2 and proj.qformer.config.cross_attention_frequency == 1
    assert all(layer.has_cross_attention for layer in proj.qformer.encoder.layer)
    # Text-branch FFN and word/position embeddings are absent, as the reference deletes them.
    names = set(proj.state_dict())
    assert not any(re.search(r"layer\.\d+\.(intermediate|output)\.", n) for n in names)
    assert not any("embeddings" in n for n in names)


# ----------------------------------------------------------------------------------- parameter counts


def _transformer_count(in_dim: int, out_dim: int, queries: int, d: int = 512, ff: int = 2048) -> int:
    """Closed form of TransformersProjector's size (4 pre-LN encoder + 4 decoder layers, final norms)."""
    attn = 3 * d * d + 3 * d + d * d + d
    ffn = d * ff + ff + ff * d + d
    encoder_layer = attn + ffn + 2 * 2 * d
    decoder_layer = 2 * attn + ffn + 3 * 2 * d
    encoder = 4 * encoder_layer + 2 * d
    decoder = 4 * decoder_layer + 2 * d
    return (in_dim * d + d) + encoder + decoder + (d * out_dim + out_dim) + queries * d


@pytest.mark.parametrize(
    "name,queries,dim,expected",
    [
        ("image SD-2", 77, 1024, 32_090_112),
        ("video ZeroScope", 77, 1024, 32_090_112),
        ("audio AudioLDM", 1, 512, 31_788_544),
        ("image SD-1.5 (LEGACY)", 77, 768, 31_958_784),
    ],
)
def test_transformers_projector_parameter_count_7b(name: str, queries: int, dim: int, expected: int) -> None:
    with torch.device("meta"):
        proj = build_output_projector("transformer", 4096, dim, queries)
    assert n_params(proj) == expected == _transformer_count(4096, dim, queries)


def test_group_projector_parameter_count_7b() -> None:
    with torch.device("meta"):
        proj = build_input_projector("group", 1024, 4096)
    assert n_params(proj) == 53_144_912  # spec §1B: "≈ 53 M"


def test_other_projector_parameter_counts_7b() -> None:
    with torch.device("meta"):
        assert n_params(build_input_projector("linear", 1024, 4096)) == 1024 * 4096 + 4096
        assert n_params(build_input_projector("mlp", 1024, 4096)) == (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
        assert n_params(build_output_projector("qformer", 4096, 1024, 77)) == 22_898_176
        assert n_params(build_input_projector("qformer", 1024, 4096)) == 22_866_688


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


# ------------------------------------------------------------------------------- grouping assignment


def test_hard_softmax_is_one_hot_over_groups_with_soft_gradient() -> None:
    logits = torch.randn(2, 1, 6, 10, requires_grad=True)  # (B, heads, groups, tokens)
    assign = hard_softmax(logits, dim=-2)
    one_hot = torch.nn.functional.one_hot(logits.argmax(dim=-2), 6).permute(0, 1, 3, 2).float()
    torch.testing.assert_close(assign, one_hot)
    (assign * torch.randn_like(assign)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # straight-through: gradient of the softmax


def test_gumbel_softmax_samples_vary_and_are_one_hot() -> None:
    logits = torch.zeros(1, 1, 8, 64)
    first = gumbel_softmax(logits, hard=True, dim=-2)
    second = gumbel_softmax(logits, hard=True, dim=-2)
    assert not torch.equal(first, second)
    for sample in (first, second):
        torch.testing.assert_close(sample.sum(dim=-2), torch.ones(1, 1, 64))
        assert set(sample.round().unique().tolist()) <= {0.0, 1.0}


def test_assign_attention_divides_by_group_size_plus_eps() -> None:
    attn = AssignAttention(4, qkv_bias=True, hard=True, gumbel=True, assign_eps=1.0).eval()
    query, key = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    with torch.no_grad():
        out, maps = attn(query, key, return_attn=True)
        hard = maps["hard"]  # (1, 1, 3 groups, 5 tokens) one-hot over groups
        weights = hard / (hard.sum(dim=-1, keepdim=True) + 1.0)
        expected = attn.proj(weights[:, 0] @ attn.v_proj(key))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(maps["soft"].sum(dim=-2), torch.ones(1, 1, 5))


def test_group_projector_eval_deterministic_train_stochastic() -> None:
    proj = GroupProjector(24, 40, **TINY_GROUP)
    x = torch.randn(2, 64, 24)
    proj.eval()
    with torch.no_grad():
        assert torch.equal(proj(x), proj(x))
    proj.train()
    with torch.no_grad():
        outs = [proj(x) for _ in range(3)]
    assert not (torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2]))
    torch.manual_seed(7)
    with torch.no_grad():
        again = proj(x)
    torch.manual_seed(7)
    with torch.no_grad():
        assert torch.equal(again, proj(x))  # the randomness is torch's RNG: reproducible under a seed


@pytest.mark.parametrize("training", [True, False])
def test_group_projector_straight_through_gradients(training: bool) -> None:
    """The assignment logits only get gradients through the straight-through estimator; in_fc gets them too."""
    proj = GroupProjector(24, 40, **TINY_GROUP).train(training)
    (proj(torch.randn(2, 16, 24)) * torch.randn(2, 4, 40)).sum().backward()
    assert proj.in_fc.weight.grad.abs().sum() > 0
    for layer in proj.layers[:2]:
        assert layer.downsample.assign.q_proj.weight.grad.abs().sum() > 0
        assert layer.downsample.assign.k_proj.weight.grad.abs().sum() > 0


def test_group_projector_gradient_checkpointing_same_gradients() -> None:
    plain = GroupProjector(24, 40, **TINY_GROUP).eval()
    ckpt = GroupProjector(24, 40, use_checkpoint=True, **TINY_GROUP).eval()
    ckpt.load_state_dict(plain.state_dict())
    x, w = torch.randn(2, 10, 24), torch.randn(2, 4, 40)
    for model in (plain, ckpt):
        (model(x) * w).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# --------------------------------------------------------------------------------------- gradients


def _all_parameters_get_gradients(module: nn.Module, *inputs: torch.Tensor) -> None:
    out = module(*inputs)
    (out * torch.randn_like(out)).sum().backward()
    missing = [
        n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize(
    "kind,options",
    [("linear", {}), ("mlp", {}), ("group", TINY_GROUP), ("qformer", dict(num_query_tokens=3, **TINY_QFORMER))],
)
def test_input_projector_every_parameter_gets_gradients(kind: str, options: dict) -> None:
    _all_parameters_get_gradients(build_input_projector(kind, 24, 40, **options).train(), torch.randn(2, 12, 24))


@pytest.mark.parametrize(
    "kind,options",
    [("transformer", TINY_TFM), ("linear", dict(num_input_tokens=7)), ("qformer", TINY_QFORMER)],
)
def test_output_projector_every_parameter_gets_gradients(kind: str, options: dict) -> None:
    proj = build_output_projector(kind, 48, 20, 5, **options).train()
    _all_parameters_get_gradients(proj, torch.randn(2, 7, 48), torch.randn(2, 7, 48))


# -------------------------------------------------------------------------------- queries at init


def test_transformer_queries_distinct_at_init() -> None:
    """Spec §12.30 fix: queries ~ N(0, 1) (LEGACY), not zeros, so the Q outputs differ from the start."""
    proj = TransformersProjector(48, 20, 77, **{**TINY_TFM, "hidden_dim": 512}).eval()
    queries = proj.query_embs[0]
    assert torch.cdist(queries, queries).add(torch.eye(77) * 1e9).min() > 1.0
    assert 0.95 < queries.std().item() < 1.05 and abs(queries.mean().item()) < 0.02
    with torch.no_grad():
        out = proj(torch.randn(2, 7, 48), torch.randn(2, 7, 48))
    assert torch.cdist(out[0], out[0]).add(torch.eye(77) * 1e9).min() > 1e-3


@pytest.mark.parametrize(
    "kind,options", [("qformer", TINY_QFORMER), ("linear", dict(num_input_tokens=7))]
)
def test_other_output_projectors_give_distinct_queries_at_init(kind: str, options: dict) -> None:
    proj = build_output_projector(kind, 48, 20, 10, **options).eval()
    with torch.no_grad():
        out = proj(torch.randn(1, 7, 48), torch.randn(1, 7, 48))[0]
    assert torch.cdist(out, out).add(torch.eye(10) * 1e9).min() > 1e-4


def test_query_init_std_option() -> None:
    proj = TransformersProjector(8, 8, 64, query_init_std=0.02, **{**TINY_TFM, "hidden_dim": 256})
    assert 0.018 < proj.query_embs.std().item() < 0.022
    with pytest.raises(ConfigError, match="query_init_std"):
        TransformersProjector(8, 8, 4, query_init_std=0.0, **TINY_TFM)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kind", ["conv", "Group", "transformer", ""])
def test_unknown_input_kind_names_the_kind(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"input projector kind '{kind}'"):
        build_input_projector(kind, 1024, 4096)


@pytest.mark.parametrize("kind", ["identity", "mlp", "group"])
def test_unknown_output_kind_names_the_kind(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"output projector kind '{kind}'"):
        build_output_projector(kind, 4096, 1024, 77)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: build_input_projector("group", 0, 4096), "'group': in_dim"),
        (lambda: build_input_projector("mlp", 1024, -3), "'mlp': out_dim"),
        (lambda: build_input_projector("linear", 1024, 4096, num_layers=2), "'linear' takes no options"),
        (lambda: build_input_projector("identity", 1024, 4096), "'identity' needs in_dim == out_dim"),
        (lambda: build_input_projector("group", 1024, 4096, depth=3), r"'group': unknown option\(s\) \['depth'\]"),
        (lambda: build_input_projector("group", 1024, 4096, num_heads=[8, 8]), "num_heads needs 3 entries"),
        (lambda: build_input_projector("group", 1024, 4096, num_heads=[7, 8, 8]), "not divisible by num_heads=7"),
        (lambda: build_input_projector("qformer", 1024, 4096, num_query_tokens=0), "'qformer': num_query_tokens"),
        (lambda: build_output_projector("transformer", 4096, 1024, 0), "'transformer': num_query_tokens"),
        (lambda: build_output_projector("transformer", 4096, 1.5, 77), "'transformer': out_features"),
        (lambda: build_output_projector("transformer", 4096, 1024, 77, nhead=4), r"unknown option\(s\) \['nhead'\]"),
        (lambda: build_output_projector("transformer", 64, 8, 2, hidden_dim=30, num_heads=4), "not divisible"),
        (lambda: build_output_projector("qformer", 64, 8, 2, hidden_size=30, num_attention_heads=4), "not divisible"),
        (lambda: build_output_projector("linear", 64, 8, 2, num_input_tokens=0), "'linear': num_input_tokens"),
    ],
)
def test_bad_sizes_and_options_raise_config_error(call, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()


def test_builder_passes_options_and_reference_defaults() -> None:
    with torch.device("meta"):
        group = build_input_projector("group", 1024, 4096)
        tfm = build_output_projector("transformer", 4096, 512, 1)
        mlp3 = build_input_projector("mlp", 8, 16, num_layers=3)
    assert isinstance(group, GroupProjector)
    assert (group.depths, group.num_heads, group.num_group_tokens, group.num_output_groups) == (
        [6, 3, 3], [8, 8, 8], [64, 8, 0], [64, 8]
    )
    assert group.hard_assignment and not group.qkv_bias and group.mlp_ratio == 4.0
    assert group.layers[0].downsample.assign.gumbel and group.layers[0].downsample.assign.assign_eps == 1.0
    assert isinstance(tfm, TransformersProjector) and tfm.query_embs.shape == (1, 1, 512)
    assert len(mlp3.layer) == 5
    assert isinstance(build_input_projector("qformer", 8, 16, **TINY_QFORMER), QFormerProjector)
    assert isinstance(build_output_projector("linear", 8, 16, 4), LinearOutputProjector)


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
