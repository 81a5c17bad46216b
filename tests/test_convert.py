"""Importers of reference checkpoints (nextgpt/model/convert/) on synthetic files with the reference's key names.

The "reference" files are written from a tiny model's real tensors (perturbed so that every value is distinct from
a fresh initialisation) under exactly the names the reference code saves (spec §10): NEW `mm_input_projector.bin`,
`mm_output_projector.bin`, `non_lora_trainables.bin` + a peft adapter folder; LEGACY `pytorch_model.pt` (fp16
nn.Parameters, LoRA under `llama_model.base_model.model.….default.weight`).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from nextgpt.config import load_config
from nextgpt.constants import MODALITIES
from nextgpt.errors import CheckpointError, ConfigError
from nextgpt.cli.convert import main
from nextgpt.model.convert import convert_checkpoint, map_legacy_key, map_new_key, verify_conversion
from nextgpt.model.modeling import NextGPTModel, build_model
from conftest import REPO, tiny_model_overrides

SHORT = {"image": "img", "video": "vid", "audio": "aud"}
LEGACY_SUFFIX = {"image": "", "video": "_video", "audio": "_audio"}


def _config(tmp: Path, name: str, stage_file: str, tiny_models, extra: str = "", overrides: tuple = ()):
    path = tmp / f"{name}.yaml"
    path.write_text(f"extends: [{REPO / 'configs' / stage_file}, {REPO / 'configs' / 'tiny' / 'base.yaml'}]\n"
                    + extra)
    return load_config(path, tiny_model_overrides(tiny_models) + list(overrides)), path


LEGACY_EXTRA = "model:\n  encoder: {output: pooled}\n  input_projector: {kind: linear}\n"


def _perturbed(cfg, seed: int, lora_r: int | None = None) -> NextGPTModel:
    """A tiny model whose projectors, signal rows and LoRA weights are all random (LoRA B is zero at init)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.train.losses)
    lora = cfg.model.lora if lora_r is None else type(cfg.model.lora)(**{**vars(cfg.model.lora), "r": lora_r})
    model.enable_lora(lora)
    with torch.no_grad():
        for group in model.parameter_groups().values():
            for p in group:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _full_matrices(model: NextGPTModel, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole embedding / LM-head matrices as the reference saves them (every row trained: all drift)."""
    g = torch.Generator().manual_seed(seed)
    embed, head = model.signal_rows()
    e, h = embed.merged_weight(), head.merged_weight()
    return e + 0.01 * torch.randn(e.shape, generator=g), h + 0.01 * torch.randn(h.shape, generator=g)


def _signal_ids(model: NextGPTModel) -> torch.Tensor:
    return torch.tensor(sorted(model.signal_token_ids))


def _adapter_state(model: NextGPTModel) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model.llm, save_embedding_layers=False).items()}


# ------------------------------------------------------------------------------------------------- NEW


@pytest.fixture(scope="module")
def new_setup(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert_new")
    cfg, cfg_path = _config(tmp, "new_stage_3", "stage_3.yaml", tiny_models)
    model = _perturbed(cfg, seed=1)
    inp = {f"model.mm_input_projector.{k}": v.clone() for k, v in model.input_projector.state_dict().items()}
    out = {f"model.mm_output_{SHORT[m]}_projector.{k}": v.clone()
           for m in MODALITIES for k, v in model.output_projectors[m].state_dict().items()}
    stage1_embed, _ = _full_matrices(model, seed=11)
    stage2_embed, stage2_head = _full_matrices(model, seed=12)
    stage3_embed, stage3_head = _full_matrices(model, seed=13)
    enc, dec, ft = tmp / "pretrain_enc_1", tmp / "pretrain_dec_1", tmp / "finetune_1"
    for d in (enc, dec, ft):
        d.mkdir()
    torch.save({**inp, "model.embed_tokens.weight": stage1_embed}, enc / "mm_input_projector.bin")
    torch.save({**out, "model.embed_tokens.weight": stage2_embed, "lm_head.weight": stage2_head},
               dec / "mm_output_projector.bin")
    non_lora = {**inp, **out, "model.embed_tokens.weight": stage3_embed, "lm_head.weight": stage3_head}
    torch.save({f"base_model.model.{k}": v for k, v in non_lora.items()}, ft / "non_lora_trainables.bin")
    # peft's own format (adapter_config.json + adapter_model.safetensors), LoRA tensors only as the reference's
    # `save_pretrained(state_dict=<lora_ params>)` writes them
    model.llm.save_pretrained(str(ft), save_embedding_layers=False)
    model.tokenizer.save_pretrained(str(ft))
    return dict(tmp=tmp, cfg=cfg, cfg_path=cfg_path, ov=tiny_model_overrides(tiny_models), model=model, inp=inp,
                out=out, enc=enc, dec=dec, ft=ft,
                stage2=(stage2_embed, stage2_head), stage3=(stage3_embed, stage3_head),
                adapter=_adapter_state(model))


def test_new_synthetic_files_use_reference_key_names(new_setup):
    """Guard: the synthetic files carry the exact key names spec §10.2 lists."""
    enc = torch.load(new_setup["enc"] / "mm_input_projector.bin", weights_only=True)
    dec = torch.load(new_setup["dec"] / "mm_output_projector.bin", weights_only=True)
    ft = torch.load(new_setup["ft"] / "non_lora_trainables.bin", weights_only=True)
    for key in ("model.mm_input_projector.in_fc.weight", "model.mm_input_projector.layers.0.group_token",
                "model.mm_input_projector.layers.0.blocks.0.attn.qkv.weight",
                "model.mm_input_projector.layers.0.downsample.assign.q_proj.weight",
                "model.mm_input_projector.out_fc.weight", "model.embed_tokens.weight"):
        assert key in enc, key
    for key in ("model.mm_output_img_projector.in_fc.weight",
                "model.mm_output_img_projector.tfm.encoder.layers.0.self_attn.in_proj_weight",
                "model.mm_output_img_projector.tfm.decoder.norm.weight", "model.mm_output_img_projector.out_fc.weight",
                "model.mm_output_img_projector.query_embs", "model.mm_output_vid_projector.query_embs",
                "model.mm_output_aud_projector.out_fc.bias", "lm_head.weight"):
        assert key in dec, key
    assert "base_model.model.model.mm_input_projector.in_fc.weight" in ft
    assert "base_model.model.lm_head.weight" in ft
    adapter = json.loads((new_setup["ft"] / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == new_setup["cfg"].model.lora.r
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in new_setup["adapter"]


def test_new_stage_3_import_loads_with_equal_tensors(new_setup):
    s = new_setup
    out = s["tmp"] / "converted_new"
    report = convert_checkpoint("new", [s["ft"]], s["cfg"], out)
    assert not report.problems and report.left_over == [] and report.dropped == []
    assert report.mapped["input_projector"] == len(s["inp"])
    assert report.mapped["lora"] == len(s["adapter"])
    assert "source tokenizer" in " ".join(report.notes)
    info = report.embeddings["signal_rows.embed"]  # NEW config: only the registered rows are imported
    assert info["rows_from_source"] == len(s["model"].signal_token_ids)
    assert info["original_rows_changed"] == info["original_rows"] == 1000  # every original row drifted
    assert 0 < info["original_rows_mean_abs_diff"] < info["original_rows_max_abs_diff"]
    assert {"adapter", "config.yaml", "conversion.json", "model.safetensors", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}

    loaded = NextGPTModel.from_pretrained(out)
    for k, v in loaded.input_projector.state_dict().items():
        assert torch.equal(v, s["inp"][f"model.mm_input_projector.{k}"]), k
    for m in MODALITIES:
        for k, v in loaded.output_projectors[m].state_dict().items():
            assert torch.equal(v, s["out"][f"model.mm_output_{SHORT[m]}_projector.{k}"]), (m, k)
    ids = _signal_ids(s["model"])
    embed, head = loaded.signal_rows()
    assert torch.equal(embed.rows, s["stage3"][0][ids])
    assert torch.equal(head.rows, s["stage3"][1][ids])
    adapter = _adapter_state(loaded)
    assert adapter.keys() == s["adapter"].keys()
    for k, v in s["adapter"].items():
        assert torch.equal(adapter[k], v), k
    verify_conversion(out)


def test_new_stages_1_and_2_combine_later_wins(new_setup):
    """Stage-1 + stage-2 files (no tokenizer beside them: our ids); the stage-2 embedding replaces stage 1's."""
    s = new_setup
    cfg = load_config(s["cfg_path"], s["ov"] + ["train.stage=2"])
    out = s["tmp"] / "converted_new_12"
    report = convert_checkpoint("new", [s["enc"], s["dec"]], cfg, out)
    assert report.lora is None and not (out / "adapter").exists()
    assert any("model.embed_tokens.weight" in r and "mm_output_projector.bin" in r for r in report.replaced)
    loaded = NextGPTModel.from_pretrained(out)
    ids = _signal_ids(s["model"])
    embed, head = loaded.signal_rows()
    assert torch.equal(embed.rows, s["stage2"][0][ids])
    assert torch.equal(head.rows, s["stage2"][1][ids])
    assert not loaded.has_lora


def test_new_stage_3_without_adapter_fails_naming_it(new_setup, tmp_path):
    with pytest.raises(CheckpointError, match="LoRA adapter"):
        convert_checkpoint("new", [new_setup["dec"], new_setup["enc"]], new_setup["cfg"], tmp_path / "out")


def test_new_misshaped_matrix_without_tokenizer_fails(new_setup, tmp_path):
    s = new_setup
    src = tmp_path / "dec"
    src.mkdir()
    state = torch.load(s["dec"] / "mm_output_projector.bin", weights_only=True)
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"][:-1]  # one row short
    torch.save(state, src / "mm_output_projector.bin")
    cfg = load_config(s["cfg_path"], s["ov"] + ["train.stage=2"])
    with pytest.raises(CheckpointError, match=r"mm_output_projector.bin:model.embed_tokens.weight"):
        convert_checkpoint("new", [s["enc"], src], cfg, tmp_path / "out")


def test_new_key_map():
    assert map_new_key("base_model.model.model.mm_output_vid_projector.tfm.encoder.norm.weight") == (
        "param", "output_projectors.video.tfm.encoder.norm.weight")
    assert map_new_key("model.mm_input_projector.out_fc.bias") == ("param", "input_projector.out_fc.bias")
    assert map_new_key("base_model.model.lm_head.weight") == ("head",)
    assert map_new_key("model.multimodal_tower.foo")[0] == "unmatched"
    assert map_new_key("base_model.model.model.layers.3.mlp.up_proj.lora_B.default.weight", adapter=True) == (
        "lora", "base_model.model.model.layers.3.mlp.up_proj.lora_B.weight")


# ------------------------------------------------------------------------------------------------- LEGACY


def _legacy_name(modality: str, key: str) -> str:
    """LEGACY `TextFcLayer` name of one of our TransformersProjector keys (fc / tfm / model / query_embs)."""
    head, dot, rest = key.partition(".")
    head = {"in_fc": "fc", "out_fc": "model"}.get(head, head)
    return f"gen_text_hidden_fcs{LEGACY_SUFFIX[modality]}.0.{head}{dot}{rest}"


def _legacy_state(model: NextGPTModel, embed: torch.Tensor | None = None, head: torch.Tensor | None = None,
                  peft_names: bool = True) -> OrderedDict:
    """`7b_tiva_v0/pytorch_model.pt` as the LEGACY agent saves it: fp16 nn.Parameters, reference names."""
    state: OrderedDict = OrderedDict()

    def put(name: str, tensor: torch.Tensor) -> None:
        state[name] = torch.nn.Parameter(tensor.detach().clone().half(), requires_grad=False)

    for k, v in model.input_projector.state_dict().items():
        put(f"llama_proj.{k}", v)
    for m in MODALITIES:
        for k, v in model.output_projectors[m].state_dict().items():
            put(_legacy_name(m, k), v)
    for n, p in model.llm.named_parameters():
        if "lora_" in n:
            put(f"llama_model.{n}", p)
    prefix = "llama_model.base_model.model." if peft_names else "llama_model."
    if embed is not None:
        put(prefix + "model.embed_tokens.weight", embed)
    if head is not None:
        put(prefix + "lm_head.weight", head)
    return state


@pytest.fixture(scope="module")
def legacy_setup(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert_legacy")
    cfg, cfg_path = _config(tmp, "legacy_stage_3", "stage_3_legacy.yaml", tiny_models, LEGACY_EXTRA)
    model = _perturbed(cfg, seed=2, lora_r=4)  # the config says r 8: r must come from the tensor shapes
    src = tmp / "7b_tiva_v0"
    src.mkdir()
    state = _legacy_state(model)
    torch.save(state, src / "pytorch_model.pt")
    model.tokenizer.save_pretrained(str(src))
    return dict(tmp=tmp, cfg=cfg, cfg_path=cfg_path, ov=tiny_model_overrides(tiny_models), model=model, src=src,
                state=state,
                adapter=_adapter_state(model))


def test_legacy_synthetic_file_uses_reference_key_names(legacy_setup):
    state = legacy_setup["state"]
    for key in ("llama_proj.weight", "llama_proj.bias", "gen_text_hidden_fcs.0.fc.weight",
                "gen_text_hidden_fcs.0.tfm.encoder.layers.0.self_attn.in_proj_weight",
                "gen_text_hidden_fcs.0.model.weight", "gen_text_hidden_fcs.0.query_embs",
                "gen_text_hidden_fcs_video.0.query_embs", "gen_text_hidden_fcs_audio.0.model.bias",
                "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
                "llama_model.base_model.model.model.layers.1.self_attn.o_proj.lora_B.default.weight"):
        assert key in state, key
    assert not any("mlp" in k for k in state)  # LEGACY LoRA targets q/k/v/o only


def test_legacy_import_loads_with_equal_tensors(legacy_setup, tiny_models):
    s = legacy_setup
    out = s["tmp"] / "converted_legacy"
    report = convert_checkpoint("legacy", [s["src"] / "pytorch_model.pt"], s["cfg"], out)
    assert not report.problems and report.left_over == [] and report.missing == []
    assert report.lora == {"r": 4, "alpha": s["cfg"].model.lora.alpha, "dropout": 0.1, "bias": "none",
                           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert any("r=4" in n for n in report.notes)
    # a source without the matrices: the registered rows start at the mean of the base rows, the report says so,
    # and the converted config falls back to signal rows only
    for key in ("signal_rows.embed", "signal_rows.lm_head"):
        assert report.embeddings[key]["rows_mean_initialised"] == 38 and "mean" in report.embeddings[key]["note"]
    assert any("train_full_embeddings set to false" in n for n in report.notes)

    loaded = NextGPTModel.from_pretrained(out)
    assert loaded.config.lora.r == 4 and loaded.config.signal_layout == "legacy"
    state = s["state"]
    for k, v in loaded.input_projector.state_dict().items():
        assert torch.equal(v, state[f"llama_proj.{k}"].float()), k
    for m in MODALITIES:
        for k, v in loaded.output_projectors[m].state_dict().items():
            ref = _legacy_name(m, k)
            assert torch.equal(v, state[ref].float()), ref
    adapter = _adapter_state(loaded)
    assert len(adapter) == sum(1 for k in state if ".lora_" in k) == 2 * 4 * 2  # A/B x q/k/v/o x 2 layers
    for k, v in adapter.items():
        ref = "llama_model." + k[: -len(".weight")] + ".default.weight"
        assert torch.equal(v, state[ref].float()), ref
    # mean rows equal those of a freshly built model (register_signal_tokens' rule)
    fresh = build_model(s["cfg"].model)
    for got, want in zip(loaded.signal_rows(), fresh.signal_rows()):
        assert torch.allclose(got.rows, want.rows, atol=1e-6)
        assert torch.allclose(got.rows[0], got.base.weight[:1000].mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("peft_names", [True, False])
def test_legacy_embedding_rows_by_source_tokenizer(legacy_setup, tmp_path, peft_names):
    """Matrices under either naming; the source tokenizer registers two extra tokens first, so its ids differ
    from ours and rows must be picked by token string."""
    s = legacy_setup
    src_tok = s["model"].tokenizer.__class__.from_pretrained(str(s["cfg"].model.llm))
    src_tok.add_tokens(["<Vid>", "</Vid>"])
    from nextgpt.conversation import tokens_to_register

    src_tok.add_tokens(tokens_to_register("legacy", {"image": 4, "video": 24, "audio": 8}))
    rows = len(src_tok)
    g = torch.Generator().manual_seed(5)
    embed, head = torch.randn(rows, 128, generator=g), torch.randn(rows, 128, generator=g)
    src = tmp_path / "7b_tiva_v0"
    src.mkdir()
    torch.save(_legacy_state(s["model"], embed, head, peft_names), src / "pytorch_model.pt")
    src_tok.save_pretrained(str(src))
    report = convert_checkpoint("legacy", [src], s["cfg"], tmp_path / "out")
    assert not report.problems
    assert report.embeddings["embeddings.embed"]["row_ids"] == "from the source tokenizer"
    loaded = NextGPTModel.from_pretrained(tmp_path / "out")
    ours = loaded.tokenizer.convert_ids_to_tokens(sorted(loaded.signal_token_ids))
    src_ids = torch.tensor(src_tok.convert_tokens_to_ids(ours))
    assert src_ids.tolist() != sorted(loaded.signal_token_ids)
    e, h = loaded.signal_rows()
    assert torch.equal(e.rows, embed.half()[src_ids].float())
    assert torch.equal(h.rows, head.half()[src_ids].float())
    assert torch.equal(e.base.weight[:1000], embed.half()[:1000].float())  # the whole matrices came along


def _broken(setup, tmp_path: Path, edit) -> Path:
    state = OrderedDict(setup["state"])
    edit(state)
    src = tmp_path / "broken"
    src.mkdir()
    torch.save(state, src / "pytorch_model.pt")
    return src


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.__setitem__("gen_text_hidden_fcs.1.fc.weight", s["gen_text_hidden_fcs.0.fc.weight"]),
     "gen_text_hidden_fcs.1.fc.weight"),
    (lambda s: s.__setitem__("visual_encoder.head.weight", torch.zeros(2)), "visual_encoder.head.weight"),
    (lambda s: s.pop("gen_text_hidden_fcs_audio.0.query_embs"), "gen_text_hidden_fcs_audio.0.query_embs"),
    (lambda s: s.pop("llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"),
     "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"),
    (lambda s: s.__setitem__("llama_proj.bias", torch.zeros(7, dtype=torch.float16)), "llama_proj.bias"),
    (lambda s: s.__setitem__("gen_text_hidden_fcs_video.0.query_embs", torch.zeros(1, 5, 64)),
     "gen_text_hidden_fcs_video.0.query_embs"),
], ids=["extra-layer", "extra-unknown", "missing-projector", "missing-lora", "misshaped-bias", "misshaped-queries"])
def test_legacy_unmatched_keys_fail_naming_them(legacy_setup, tmp_path, edit, needle):
    src = _broken(legacy_setup, tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        convert_checkpoint("legacy", [src], legacy_setup["cfg"], tmp_path / "out")
    assert needle in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()
    # the explicit flag converts anyway, still reporting the key, and the result loads
    report = convert_checkpoint("legacy", [src], legacy_setup["cfg"], tmp_path / "out", allow_unmatched=True)
    assert needle in report.problem_text()
    NextGPTModel.from_pretrained(tmp_path / "out")


def test_legacy_needs_legacy_config(legacy_setup, new_setup, tmp_path):
    with pytest.raises(ConfigError, match="signal_layout"):
        convert_checkpoint("legacy", [legacy_setup["src"]], new_setup["cfg"], tmp_path / "out")


def test_legacy_key_map():
    assert map_legacy_key("gen_text_hidden_fcs_video.0.fc.bias") == ("param", "output_projectors.video.in_fc.bias")
    assert map_legacy_key("gen_text_hidden_fcs.0.model.weight") == ("param", "output_projectors.image.out_fc.weight")
    assert map_legacy_key("gen_text_hidden_fcs_audio.0.tfm.decoder.layers.3.norm3.weight") == (
        "param", "output_projectors.audio.tfm.decoder.layers.3.norm3.weight")
    assert map_legacy_key("llama_model.base_model.model.model.layers.31.self_attn.k_proj.lora_B.default.weight") == (
        "lora", "base_model.model.model.layers.31.self_attn.k_proj.lora_B.weight")
    assert map_legacy_key("llama_model.model.embed_tokens.weight") == ("embed",)
    assert map_legacy_key("llama_model.base_model.model.lm_head.weight") == ("head",)
    assert map_legacy_key("gen_text_hidden_fcs.0.Qformer.bert.embeddings.position_ids")[0] == "drop"
    assert map_legacy_key("gen_text_hidden_fcs.0.model.0.weight")[0] == "unmatched"  # linear mode's ModuleList


def test_cli_converts_and_reports_errors(legacy_setup, tmp_path, caplog):
    s = legacy_setup

    def cli(src: Path, out: Path) -> int:
        return main(["--format", "legacy", "--src", str(src), "--config", str(s["cfg_path"]), "--output", str(out),
                     "--dtype", "float32", *s["ov"]])

    out = tmp_path / "cli_out"
    caplog.set_level("INFO")
    assert cli(s["src"], out) == 0
    assert "start at the mean" in caplog.text
    from safetensors.torch import load_file

    assert load_file(str(out / "model.safetensors"))["input_projector.weight"].dtype == torch.float32
    assert json.loads((out / "conversion.json").read_text())["lora"]["r"] == 4
    caplog.clear()
    assert cli(s["src"], out) == 2  # the output exists now
    assert "not empty" in caplog.text
    caplog.clear()
    assert cli(_broken(s, tmp_path, lambda st: st.pop("llama_proj.weight")), tmp_path / "o2") == 2
    assert "llama_proj.weight" in caplog.text


# ------------------------------------------------------------------------- LEGACY whole embedding / LM head


def test_legacy_full_matrices_convert_and_drive_predict_and_merge(legacy_setup, tmp_path):
    """LEGACY trained (and saved) the whole embedding and LM head: the converted model uses every row."""
    from nextgpt.model.merge import merge_checkpoint

    s = legacy_setup
    embed, head = _full_matrices(s["model"], seed=21)  # original rows perturbed too
    embed, head = embed.half(), head.half()  # as the release stores them
    src = tmp_path / "7b_tiva_v0"
    src.mkdir()
    torch.save(_legacy_state(s["model"], embed, head), src / "pytorch_model.pt")
    report = convert_checkpoint("legacy", [src], s["cfg"], tmp_path / "out")
    assert not report.problems
    info = report.embeddings["embeddings.embed"]
    assert info["rows_from_source"] == 1038 and info["original_rows_changed"] == 1000
    written = json.loads((tmp_path / "out" / "conversion.json").read_text())["embeddings"]
    assert written["embeddings.lm_head"]["original_rows_max_abs_diff"] > 0

    loaded = NextGPTModel.from_pretrained(tmp_path / "out")
    assert loaded.config.train_full_embeddings
    ids = torch.arange(1038)[None]
    assert torch.equal(loaded.embed_tokens(ids)[0], embed.float())
    with torch.no_grad():
        out = loaded.base_llm(input_ids=ids[:, :40], output_hidden_states=True)
    assert torch.allclose(out.logits[0], out.hidden_states[-1][0] @ head.float().T, atol=1e-5, rtol=1e-5)

    merged = merge_checkpoint(tmp_path / "out", tmp_path / "merged")
    from transformers import LlamaForCausalLM

    llm = LlamaForCausalLM.from_pretrained(str(merged / "llm"))
    assert torch.equal(llm.get_input_embeddings().weight, embed.float())
    assert torch.equal(llm.get_output_embeddings().weight, head.float())


def test_legacy_mean_rows_never_generate_img_tags(legacy_setup, tmp_path):
    """Without the matrices every registered row is the same mean row: tied logits must not pick <Img>."""
    from nextgpt.generation import NextGPTGenerator

    s = legacy_setup
    out = tmp_path / "out"
    convert_checkpoint("legacy", [s["src"]], s["cfg"], out)
    gen = NextGPTGenerator.from_pretrained(out)
    tags = set(gen.model.tokenizer.convert_tokens_to_ids(["<Img>", "</Img>"]))
    registered = sorted(gen.model.signal_token_ids)
    head = gen.model.signal_rows()[1]
    assert torch.equal(head.rows, head.rows[:1].expand_as(head.rows))  # tied

    def tie_on_top(step, logits):  # the tied registered rows win, as when the LLM likes the mean row
        logits = logits.clone()
        logits[:, registered] = logits.max() + 1.0
        return logits

    assert min(registered) in tags  # so a plain argmax over the tie would pick <Img>
    result = gen.generate("Describe a red circle.", max_new_tokens=40, logits_hook=tie_on_top)
    assert not tags & set(result.token_ids) and result.token_ids[0] not in tags
    plain = gen.generate("Describe a red circle.", max_new_tokens=20)
    assert not tags & set(plain.token_ids)
