"""MiniGPT-4 as a configuration of ours: the BLIP-2 encoder, its template, its two stages, its checkpoint import,
8-bit loading."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from nextgpt.config import load_config
from nextgpt.conversation import build_conversation, tokenize_conversation
from nextgpt.errors import CheckpointError, ConfigError

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_blip2(tmp_path_factory) -> Path:
    from nextgpt.toy.blip2 import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("blip2"))


@pytest.fixture(scope="module")
def tokenizer(tiny_llm_dir):
    from nextgpt.model.language_model import load_tokenizer

    return load_tokenizer(tiny_llm_dir)


# ------------------------------------------------------------------------------------------- the encoder


def test_tiny_blip2_loads_strictly_and_equals_transformers_blip2(tiny_blip2):
    from transformers import Blip2Model

    from nextgpt.model.multimodal_encoder.blip2 import build_blip2_encoder

    encoder = build_blip2_encoder(str(tiny_blip2))
    reference = Blip2Model.from_pretrained(str(tiny_blip2)).eval()
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    ours = encoder(pixels, "image")
    with torch.no_grad():
        theirs = reference.get_qformer_features(pixels)
    assert ours.shape == (2, 32, 768)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training
    # only the vision model, the Q-Former and the queries: the file's language model is not taken
    assert {k.split(".")[0] for k in encoder.state_dict()} == {"vision_model", "qformer", "query_tokens"}
    with pytest.raises(ConfigError, match="images only"):
        encoder(torch.zeros(1, 3, 224, 224), "audio")


@pytest.mark.parametrize("change, message", [("drop", "missing keys"), ("extra", "unexpected keys"),
                                             ("shape", "mis-shaped")])
def test_blip2_loading_is_strict(tiny_blip2, tmp_path, change, message):
    from nextgpt.model.multimodal_encoder.blip2 import build_blip2_encoder

    state = load_file(str(tiny_blip2 / "model.safetensors"))
    if change == "drop":
        del state["qformer.layernorm.bias"]
    elif change == "extra":
        state["qformer.surplus.weight"] = torch.zeros(2)
    else:
        state["query_tokens"] = torch.zeros(1, 16, 768)
    shutil.copy(tiny_blip2 / "config.json", tmp_path / "config.json")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        build_blip2_encoder(str(tmp_path))


def test_blip2_source_errors_are_clear(tmp_path, monkeypatch):
    from nextgpt.model.multimodal_encoder.blip2 import build_blip2_encoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="no-such-org/no-such-blip2: cannot fetch"):
        build_blip2_encoder("no-such-org/no-such-blip2")
    with pytest.raises(CheckpointError, match="folder not found"):
        build_blip2_encoder(str(tmp_path / "missing" / "dir"))
    with pytest.raises(CheckpointError, match="no config.json"):
        build_blip2_encoder(str(tmp_path))


def test_blip2_preprocessing_is_blip2s_eval_processor(tmp_path):
    from torchvision import transforms

    from nextgpt.model.multimodal_encoder.factory import preprocess_media

    path = tmp_path / "wide.png"
    Image.effect_noise((160, 90), 60).convert("RGB").save(path)
    # MiniGPT-4's Blip2ImageEvalProcessor, spelled out
    processor = transforms.Compose([
        transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC), transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    expected = processor(Image.open(path).convert("RGB"))
    got = preprocess_media([path], "image", "square", "blip2")
    assert got.shape == (1, 3, 224, 224)
    torch.testing.assert_close(got[0], expected, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="images only"):
        preprocess_media([path], "video", "square", "blip2")


# ------------------------------------------------------------------------------------------- the template


def test_minigpt4_template_renders_and_tokenizes_as_minigpt4(tokenizer):
    from nextgpt.constants import IGNORE_INDEX, PLACEHOLDER_ID
    from nextgpt.generation import stop_strings

    turns = [{"from": "human", "value": "<image> Describe this image in detail."},
             {"from": "gpt", "value": "A red circle."}]
    conv = build_conversation("minigpt4", turns)
    assert conv.get_prompt() == "###Human: <Img><image></Img> Describe this image in detail. ###Assistant: A red circle.###"
    ex = tokenize_conversation("minigpt4", turns, tokenizer, None)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    expected = [tokenizer.bos_token_id] + ids("###Human: <Img>") + [PLACEHOLDER_ID["image"]] + ids(
        "</Img> Describe this image in detail. ###Assistant: A red circle.###")
    assert ex.input_ids == expected
    supervised = [t for t in ex.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(supervised).strip() == "A red circle.###"
    assert ex.labels[:len(expected) - len(supervised)] == [IGNORE_INDEX] * (len(expected) - len(supervised))
    # a second round follows the "###" that closed the first answer; generation ends at "###Assistant:"
    more = turns + [{"from": "human", "value": "What colour?"}]
    assert build_conversation("minigpt4", more, add_generation_prompt=True).get_prompt().endswith(
        "A red circle.###Human: What colour? ###Assistant:")
    assert stop_strings("minigpt4") == ["###"]


def test_caption_pairs_give_minigpt4_stage_texts(tokenizer, tmp_path):
    from nextgpt.dataset.caption_pairs import ALIGNMENT_INSTRUCTIONS, CaptionPairDataset, blip_caption
    from nextgpt.dataset.samples import SampleOptions

    assert blip_caption("A Red circle!  (big)  #1: done. ") == "a red circle big 1 done"
    assert blip_caption(" ".join(["w"] * 60)).count("w") == 50
    (tmp_path / "pairs.json").write_text(json.dumps([{"image_name": "a.jpg", "caption": "A Red circle."}]))
    (tmp_path / "filter_cap.json").write_text(json.dumps({"annotations": [{"image_id": "7", "caption": "Big."}]}))
    stage1 = CaptionPairDataset(tmp_path / "pairs.json", tokenizer, None, SampleOptions(template="plain"),
                                task="pretrain", image_folder=tmp_path)
    turns = stage1.items[0].turns
    assert build_conversation("plain", turns).get_prompt() == "<image>a red circle\n"
    stage2 = CaptionPairDataset(tmp_path / "filter_cap.json", tokenizer, None, SampleOptions(template="minigpt4"),
                                task="align", image_folder=tmp_path)
    item = stage2.items[0]
    assert item.inputs["image"] == ["7.jpg"]
    human = item.turns[0]["value"]
    assert human.startswith("<image> ") and human[len("<image> "):] in ALIGNMENT_INSTRUCTIONS
    with pytest.raises(ConfigError, match="task"):
        CaptionPairDataset(tmp_path / "pairs.json", tokenizer, None, task="caption", image_folder=tmp_path)


# ------------------------------------------------------------------------------------------- configs, summary


@pytest.mark.parametrize("stage", [1, 2])
def test_minigpt4_configs_and_summary_train_only_the_projection(stage):
    from nextgpt.model.summary import format_table, summarize

    config = load_config(REPO / f"configs/minigpt4_stage_{stage}.yaml")
    t = config.train
    assert (t.recipe, config.model.encoder.kind, config.model.input_projector.kind) == ("minigpt4", "blip2", "linear")
    assert (t.lr, t.min_lr_ratio * t.lr, t.min_warmup_steps, t.max_steps, t.micro_batch_size, t.weight_decay) == {
        1: (1e-4, pytest.approx(8e-5), 5000, 20000, 64, 0.05),
        2: (3e-5, pytest.approx(1e-5), 200, 1000, 12, 0.05)}[stage]
    assert config.model.template == {1: "plain", 2: "minigpt4"}[stage]
    summary = summarize(config)
    assert summary["input_projector"].trainable == 768 * 4096 + 4096  # llama_proj
    assert summary["total"].trainable == summary["input_projector"].trainable
    assert summary["encoder"].params > 1_000_000_000 and summary["encoder"].trainable == 0
    assert "MiniGPT-4 parameters" in format_table(summary, config)
    with pytest.raises(ConfigError, match="recipe minigpt4"):
        load_config(REPO / f"configs/minigpt4_stage_{stage}.yaml", ["train.stage=3"])


def test_tiny_summary_reads_the_blip2_folder(tiny_llm_dir, tiny_blip2):
    from nextgpt.model.summary import summarize

    config = load_config(REPO / "configs/tiny/minigpt4_stage_2.yaml",
                         [f"model.llm={tiny_llm_dir}", f"model.encoder.checkpoint={tiny_blip2}"])
    summary = summarize(config)
    from nextgpt.model.multimodal_encoder.blip2 import build_blip2_encoder

    real = build_blip2_encoder(str(tiny_blip2))
    assert summary["encoder"].params == sum(p.numel() for p in real.parameters())
    hidden = json.loads((tiny_llm_dir / "config.json").read_text())["hidden_size"]
    assert summary["total"].trainable == summary["input_projector"].trainable == 768 * hidden + hidden


def test_encoder_arch_must_fit_its_kind():
    with pytest.raises(ConfigError, match="not a blip2 architecture"):
        load_config(REPO / "configs/minigpt4_stage_1.yaml", ["model.encoder.arch=huge"])
    with pytest.raises(ConfigError, match="output must be tokens"):
        load_config(REPO / "configs/minigpt4_stage_1.yaml", ["model.encoder.output=pooled"])


# ------------------------------------------------------------------------------------------- two stages, predict


@pytest.fixture(scope="module")
def minigpt4_data(tmp_path_factory) -> Path:
    from nextgpt.toy.synthetic_data import SyntheticCounts, generate

    root = tmp_path_factory.mktemp("minigpt4_data")
    generate(root, counts=SyntheticCounts(images=16, videos=0, audios=0, it_image=0, it_video=0, it_audio=0,
                                          mosit=0, llava=0, alpaca=0, align=16))
    return root


def _overrides(llm: Path, blip2: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.llm={llm}", f"model.encoder.checkpoint={blip2}", f"data.root={data}", f"train.output_dir={out}",
            "train.resume=never", *extra]


def _mean_loss(config, weights: Path | None) -> float:
    """The model's mean text loss over the stage's whole dataset (fixed batches, no dropout)."""
    from torch.utils.data import DataLoader

    from nextgpt.dataset import DataCollator, build_train_dataset, model_inputs
    from nextgpt.model.modeling import build_model
    from nextgpt.train.trainer import seed_everything

    seed_everything(config.train.seed)  # the trainer's initial projector when no weights are given
    model = build_model(config.model).eval()
    if weights is not None:
        model.load_checkpoint_weights(weights)
    tokens = model.media_tokens_per_item()
    dataset, _, _ = build_train_dataset(config.data, model.tokenizer, model.signal, config.model.template,
                                        max_length=config.model.max_length, media_tokens={m: tokens for m in
                                                                                          ("image", "video", "audio")},
                                        model_config=config.model)
    losses = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=8, collate_fn=DataCollator.from_tokenizer(model.tokenizer)):
            losses.append(float(model(**model_inputs(batch)).loss))
    return sum(losses) / len(losses)


def test_stage_1_then_stage_2_lower_the_loss_and_predict_answers(tiny_llm_dir, tiny_blip2, minigpt4_data,
                                                                   tmp_path):
    from nextgpt.cli import predict
    from nextgpt.constants import PLACEHOLDER_ID
    from nextgpt.generation import NextGPTGenerator
    from nextgpt.train.trainer import Trainer

    steps = ["train.epochs=1", "train.lr=3.0e-3", "train.min_warmup_steps=1"]
    cfg1 = load_config(REPO / "configs/tiny/minigpt4_stage_1.yaml",
                       _overrides(tiny_llm_dir, tiny_blip2, minigpt4_data, tmp_path / "s1", *steps))
    s1 = Trainer(cfg1).run()
    cfg2 = load_config(REPO / "configs/tiny/minigpt4_stage_2.yaml",
                       _overrides(tiny_llm_dir, tiny_blip2, minigpt4_data, tmp_path / "s2", *steps,
                                  f"train.init_from={s1}"))
    s2 = Trainer(cfg2).run()
    w0 = {k: v for k, v in load_file(str(s1 / "model.safetensors")).items()}
    w2 = load_file(str(s2 / "model.safetensors"))
    # only the projection trained (the other groups are where stage 1 left them, i.e. untouched)
    assert not torch.equal(w0["input_projector.weight"], w2["input_projector.weight"])
    assert all(torch.equal(w0[k], w2[k]) for k in w0 if not k.startswith("input_projector."))
    before1, after1 = _mean_loss(cfg1, None), _mean_loss(cfg1, s1)
    before2, after2 = _mean_loss(cfg2, s1), _mean_loss(cfg2, s2)
    assert after1 < before1, (before1, after1)
    assert after2 < before2, (before2, after2)

    # predict.py answers an image question through the MiniGPT-4 template
    image = minigpt4_data / "cc_sbu_align" / "image" / "2.jpg"
    out = tmp_path / "answer"
    assert predict.main(["--model", str(s2), "--prompt", "Describe this image in detail.", "--image", str(image),
                         "--output-dir", str(out), "--max-new-tokens", "8"]) == 0
    assert isinstance(json.loads((out / "result.json").read_text())["text"], str)
    generator = NextGPTGenerator.from_pretrained(s2)
    assert generator.template == "minigpt4" and generator.stops == ["###"]
    turn = generator.prepare_turn("Describe this image in detail.", [image])
    tok = generator.model.tokenizer
    expected = [tok.bos_token_id] + tok("###Human: <Img>", add_special_tokens=False)["input_ids"] + [
        PLACEHOLDER_ID["image"]] + tok("</Img> Describe this image in detail. ###Assistant:",
                                       add_special_tokens=False)["input_ids"]
    assert generator.prompt_ids([turn]) == expected
    assert turn.media["image"][0].shape == (32, generator.model.hidden_size)  # 32 projected query tokens


# ------------------------------------------------------------------------------------------- checkpoint import


def _released(path: Path, hidden: int, **extra_model) -> Path:
    gen = torch.Generator().manual_seed(1)
    model = {"llama_proj.weight": torch.randn(hidden, 768, generator=gen),
             "llama_proj.bias": torch.randn(hidden, generator=gen), **extra_model}
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": []}, "epoch": 4,
                "config": {"run": {"init_lr": 3e-5}}}, path)
    return path


def test_released_minigpt4_checkpoint_converts_strictly_with_a_report(tiny_llm_dir, tiny_blip2, tmp_path):
    from nextgpt.model.convert import convert_checkpoint, verify_conversion

    config = load_config(REPO / "configs/tiny/minigpt4_stage_2.yaml",
                         [f"model.llm={tiny_llm_dir}", f"model.encoder.checkpoint={tiny_blip2}"])
    hidden = json.loads((tiny_llm_dir / "config.json").read_text())["hidden_size"]
    src = _released(tmp_path / "pretrained_minigpt4.pth", hidden)
    report = convert_checkpoint("minigpt4", [src], config, tmp_path / "out")
    verify_conversion(tmp_path / "out")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    source = torch.load(str(src), weights_only=True)["model"]
    assert torch.equal(written["input_projector.weight"], source["llama_proj.weight"])
    assert torch.equal(written["input_projector.bias"], source["llama_proj.bias"])
    saved = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert saved["mapped"] == {"input_projector": 2} == report.mapped
    assert sorted(saved["dropped"]) == sorted(f"pretrained_minigpt4.pth:{k} (training state, not weights)"
                                              for k in ("optimizer", "epoch", "config"))
    assert saved["missing"] == saved["left_over"] == saved["misshaped"] == []

    with pytest.raises(CheckpointError, match="llama_model.foo"):
        convert_checkpoint("minigpt4", [_released(tmp_path / "extra.pth", hidden,
                                                  **{"llama_model.foo": torch.zeros(1)})], config, tmp_path / "x")
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"llama_proj.weight": torch.zeros(hidden, 768)}}, bad)
    with pytest.raises(CheckpointError, match="llama_proj.bias"):
        convert_checkpoint("minigpt4", [bad], config, tmp_path / "y")
    with pytest.raises(CheckpointError, match="expected"):
        convert_checkpoint("minigpt4", [_released(tmp_path / "wide.pth", hidden + 1)], config, tmp_path / "z")
    nextgpt_config = load_config(REPO / "configs/tiny/stage_1.yaml", [f"model.llm={tiny_llm_dir}"])
    with pytest.raises(ConfigError, match="MiniGPT-4 config"):
        convert_checkpoint("minigpt4", [src], nextgpt_config, tmp_path / "w")


# ------------------------------------------------------------------------------------------- 8-bit loading


def test_load_in_8bit_stops_with_a_clear_message_without_a_gpu(tmp_path, capsys):
    from nextgpt.cli import predict
    from nextgpt.model.language_model import check_quantization

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU refusal is not what runs here")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for flag in ("--load-in-8bit", "--load-in-4bit"):
        code = predict.main(["--model", str(model_dir), "--prompt", "hi", "--output-dir", str(tmp_path / "o"), flag,
                             "--device", "cpu"])
        assert code == 1
        err = capsys.readouterr().err
        assert f"{flag} needs a CUDA GPU" in err and "bitsandbytes" in err
    with pytest.raises(ConfigError, match="bitsandbytes|CUDA is not available"):
        check_quantization("8bit", "cuda")
    with pytest.raises(ConfigError, match="quantization must be"):
        check_quantization("3bit", "cuda")
    check_quantization(None, "cpu")  # no flag: nothing to check
