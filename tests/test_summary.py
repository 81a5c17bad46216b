"""`python -m nextgpt.model.summary`: per-module parameter counts on the meta device.

The 7B counts are checked against closed-form hand computations of the reference architectures (LLaMA-7B, LoRA,
GroupProjector, TransformersProjector) and the ImageBind-huge totals of spec/imagebind.md §1; the tiny counts
against a really built tiny model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.errors import ConfigError
from nextgpt.cli.summary import main
from nextgpt.model.summary import ROWS, meta_encoder, summarize

# --------------------------------------------------------------------------------- closed forms (by hand)

H, I, L, V = 4096, 11008, 32, 32000  # LLaMA-7B: hidden, MLP width, layers, base vocabulary


def llama_params(vocab: int = V, h: int = H, inter: int = I, layers: int = L) -> int:
    """Untied LLaMA: embedding + LM head, per layer q/k/v/o (no bias) + gate/up/down + 2 RMSNorms, final norm."""
    per_layer = 4 * h * h + 3 * h * inter + 2 * h
    return 2 * vocab * h + layers * per_layer + h


def lora_params(r: int, targets: list[str], h: int = H, inter: int = I, layers: int = L) -> int:
    """A (r x in) + B (out x r) per targeted Linear per layer."""
    shapes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "o_proj": (h, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    return layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def transformer_projector(d_out: int, queries: int, d_in: int = H, d: int = 512, ff: int = 2048,
                          enc: int = 4, dec: int = 4) -> int:
    """in_fc, nn.Transformer (pre-LN; final encoder/decoder norms), out_fc, query_embs (spec §3.1)."""
    attn = 3 * d * d + 3 * d + d * d + d  # fused in_proj with bias + out_proj
    ffn = d * ff + ff + ff * d + d
    enc_layer = attn + ffn + 2 * (2 * d)
    dec_layer = 2 * attn + ffn + 3 * (2 * d)
    return (d_in * d + d) + enc * enc_layer + 2 * d + dec * dec_layer + 2 * d + (d * d_out + d_out) + queries * d


def group_projector(d_in: int = 1024, d_out: int = H, c: int = 512, depths=(6, 3, 3), group_tokens=(64, 8, 0),
                    out_groups=(64, 8), mlp_ratio: int = 4) -> int:
    """GroupViT-style projector of spec §1B, term by term."""
    ln = 2 * c
    mlp = c * mlp_ratio * c + mlp_ratio * c + mlp_ratio * c * c + c
    block = ln + 3 * c * c + (c * c + c) + ln + mlp  # qkv without bias, proj with bias
    total = (d_in * c + c) + sum(depths) * block + ln + (c * d_out + d_out)  # in_fc, blocks, final norm, out_fc
    total += sum(g * c for g in group_tokens)  # learnable group tokens
    # stage 1's projector of the 64 incoming group tokens: LayerNorm + token-mixing MLP 64 -> c/2 -> 8
    total += ln + (group_tokens[0] * (c // 2) + c // 2) + ((c // 2) * group_tokens[1] + group_tokens[1])
    for g_in, g_out in zip(group_tokens[:2], out_groups):  # one GroupingBlock per grouping stage
        mixer = g_in * (c // 2) + c // 2 + (c // 2) * g_out + g_out
        cross_block = ln + (4 * c * c + 4 * c) + ln + mlp  # post-norm, separate q/k/v with bias, proj
        assign = 4 * c * c + 4 * c  # q/k/v/proj with bias, one head
        total += ln + mixer + ln + ln + cross_block + assign + ln + mlp  # norm_tokens … norm_new_x, mlp_channels
    return total


IMAGEBIND_HUGE_PARAMS, IMAGEBIND_HUGE_BUFFER_VALUES = 1_200_781_057, 5_933  # spec/imagebind.md §1


def _check_partition(s: dict) -> None:
    assert list(s) == [*ROWS, "total"]
    assert s["total"].params == sum(s[r].params for r in ROWS)
    assert s["total"].trainable == sum(s[r].trainable for r in ROWS)


# --------------------------------------------------------------------------------- the faithful 7B configs


@pytest.fixture(scope="module")
def stage_3():
    return summarize(load_config(REPO / "configs/stage_3.yaml"))


@pytest.fixture(scope="module")
def stage_3_legacy():
    return summarize(load_config(REPO / "configs/stage_3_legacy.yaml"))


def test_stage_3_new_counts_are_the_reference_architecture(stage_3):
    s = stage_3
    _check_partition(s)
    assert s["encoder"].params == IMAGEBIND_HUGE_PARAMS and s["encoder"].trainable == 0
    assert s["input_projector"].params == group_projector() == 53_144_912
    assert s["llm"].params == llama_params() == 6_738_415_616 and s["llm"].trainable == 0
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert s["lora"].params == lora_params(128, targets) == 319_815_680
    assert s["signal_rows"].params == 36 * H * 2
    # llm + signal rows = the reference's LLaMA resized to 32036 tokens
    assert s["llm"].params + s["signal_rows"].params == llama_params(vocab=32036)
    assert s["output_projector.image"].params == transformer_projector(1024, 77) == 32_090_112
    assert s["output_projector.video"].params == transformer_projector(1024, 77)
    assert s["output_projector.audio"].params == transformer_projector(512, 1) == 31_788_544
    for row in ("input_projector", "lora", "signal_rows", "output_projector.image", "output_projector.video",
                "output_projector.audio"):  # stage 3 trains all of these (nextgpt/stages.py)
        assert s[row].trainable == s[row].params, row
    assert s["total"].params == 8_408_420_945
    assert s["total"].trainable == 469_224_272


def test_stage_3_legacy_counts_are_the_reference_architecture(stage_3_legacy):
    s = stage_3_legacy
    _check_partition(s)
    assert s["encoder"].params == IMAGEBIND_HUGE_PARAMS  # pooled output: same weights
    assert s["input_projector"].params == 1024 * H + H == 4_198_400  # llama_proj
    assert s["llm"].params == llama_params()
    assert s["lora"].params == lora_params(32, ["q_proj", "k_proj", "v_proj", "o_proj"]) == 33_554_432
    assert s["signal_rows"].params == 38 * H * 2  # <Img>, </Img> and 36 signal tokens
    assert s["llm"].params + s["signal_rows"].params == llama_params(vocab=32038)
    assert s["output_projector.image"].params == transformer_projector(768, 77) == 31_958_784
    assert s["output_projector.video"].params == transformer_projector(1024, 77)
    assert s["output_projector.audio"].params == transformer_projector(512, 1)
    # as the release: the whole embedding and LM head train too (32 000 original rows of each + the 38 new ones)
    assert s["llm"].trainable == 2 * 32000 * H == 262_144_000
    assert s["total"].trainable == (4_198_400 + 33_554_432 + 2 * 32038 * H + transformer_projector(768, 77)
                                    + transformer_projector(1024, 77) + transformer_projector(512, 1))


def test_imagebind_huge_buffers_match_spec():
    encoder = meta_encoder(load_config(REPO / "configs/stage_3.yaml").model)
    assert all(p.is_meta for p in encoder.parameters())
    assert sum(v.numel() for v in encoder.state_dict().values()) == IMAGEBIND_HUGE_PARAMS + IMAGEBIND_HUGE_BUFFER_VALUES


def test_stage_1_trains_only_the_input_projector():
    s = summarize(load_config(REPO / "configs/stage_1.yaml"))
    _check_partition(s)
    assert s["lora"].params == 0
    assert s["total"].trainable == s["input_projector"].trainable == 53_144_912


def test_stage_3_legacy_config_values():
    """The LEGACY training settings of spec §5.3 / §13 that the legacy config files carry."""
    cfg = load_config(REPO / "configs/stage_3_legacy.yaml")
    m, t = cfg.model, cfg.train
    assert (m.template, m.signal_layout, m.encoder.output, m.input_projector.kind, m.max_length) == (
        "legacy", "legacy", "pooled", "linear", 512)
    assert (m.image.decoder, m.image.out_features) == ("runwayml/stable-diffusion-v1-5", 768)
    assert (m.video.decoder, m.audio.decoder) == ("cerspense/zeroscope_v2_576w", "cvssp/audioldm-l-full")
    assert (m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules) == (
        32, 32, 0.1, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert (t.precision, t.lr, t.adam_beta1, t.adam_beta2, t.adam_eps, t.weight_decay) == (
        "fp16", 5e-4, 0.9, 0.95, 1e-8, 0.001)
    assert (t.scheduler, t.warmup_ratio, t.min_warmup_steps, t.micro_batch_size, t.seed) == (
        "linear", 0.1, 10, 1, 13)
    assert (m.train_full_embeddings, t.optimizer_setup, cfg.data.sampler) == (True, "deepspeed", "round_robin")
    assert "image_instruction_legacy" in cfg.data.datasets  # SD-1.5 caption embeddings
    assert t.losses.video.caption_weight == 2.0 and t.losses.image.caption_weight == 1.0
    assert t.losses.image.denoise_weight == t.losses.video.denoise_weight == t.losses.audio.denoise_weight == 0.0
    new = load_config(REPO / "configs/stage_3.yaml").train
    assert (new.stage, new.micro_batch_size, new.lr, new.input_projector_lr, new.output_projector_lr,
            new.save_steps, new.init_from, new.output_dir) == (3, 56, 2e-4, 2e-5, 2e-5, 1000, "checkpoints/stage_2",
                                                               "checkpoints/stage_3")


# --------------------------------------------------------------------------------- CLI


def test_cli_json_and_table(stage_3, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "nextgpt", "summary", "--config", "configs/stage_3.yaml",
                           "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {*ROWS, "total"}
    for name, count in stage_3.items():
        assert data[name] == {"params": count.params, "trainable": count.trainable}, name
    assert main(["--config", str(REPO / "configs/stage_3.yaml")]) == 0
    table = capsys.readouterr().out
    assert "output_projector.audio" in table and "31,788,544" in table and "8,408,420,945" in table


def test_cli_error_names_llm_arch(tmp_path, capsys):
    assert main(["--config", str(REPO / "configs/stage_3.yaml"), f"model.llm={tmp_path / 'absent'}",
                 "model.llm_arch=null"]) == 2
    assert "model.llm_arch" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="model.llm_arch"):
        summarize(load_config(REPO / "configs/stage_3.yaml", [f"model.llm={tmp_path}", "model.llm_arch=null"]))


# --------------------------------------------------------------------------------- tiny: meta == real


def test_tiny_summary_equals_the_built_model(tiny_models):
    from nextgpt.model.modeling import build_model
    from nextgpt.stages import apply_stage_preset

    cfg = load_config(REPO / "configs/tiny/stage_1.yaml", tiny_model_overrides(tiny_models) + ["train.stage=3"])
    s = summarize(cfg)
    _check_partition(s)
    with pytest.raises(ConfigError, match="model.llm_arch"):  # the tiny sizes come from the models on disk
        summarize(load_config(REPO / "configs/tiny/stage_1.yaml", ["model.llm=/nonexistent"]))

    model = build_model(cfg.model, cfg.train.losses)
    model.enable_lora(cfg.model.lora)
    trainable = apply_stage_preset(model, 3)
    n_rows, hidden = model.signal_rows()[0].rows.shape
    base_llm = sum(p.numel() for n, p in model.base_llm.named_parameters() if "lora_" not in n
                   and not n.endswith(".rows"))
    real = {
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
        "input_projector": sum(p.numel() for p in model.input_projector.parameters()),
        # the real base matrices are resized (stale copies of the signal rows): take those rows out
        "llm": base_llm - 2 * n_rows * hidden,
        "lora": sum(p.numel() for p in trainable["lora"]),
        "signal_rows": sum(p.numel() for p in trainable["signal_rows"]),
        **{f"output_projector.{m}": sum(p.numel() for p in model.output_projectors[m].parameters())
           for m in ("image", "video", "audio")},
    }
    assert {k: s[k].params for k in ROWS} == real
    assert s["total"].trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert s["encoder"].trainable == 0 and s["lora"].trainable == real["lora"] > 0
