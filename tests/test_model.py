"""The composed model on tiny components: splice, losses, stage presets, save/load, decoding (spec §1–4, §8)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX
from nextgpt.conversation import tokenize_conversation
from nextgpt.errors import CheckpointError, DataError
from nextgpt.model.modeling import NextGPTModel, build_model
from nextgpt.model.splice import MEDIA_POSITION, splice_multimodal
from nextgpt.stages import STAGE_PRESETS, apply_stage_preset

REPO = Path(__file__).resolve().parents[1]


def tiny_config(paths, stage: int = 3, extra: tuple[str, ...] = ()):
    return load_config(REPO / f"configs/tiny/stage_{stage}.yaml", tiny_model_overrides(paths) + list(extra))


def make_model(paths, stage: int = 3, extra: tuple[str, ...] = ()) -> NextGPTModel:
    torch.manual_seed(0)
    config = tiny_config(paths, stage, extra)
    model = build_model(config.model, losses=config.train.losses)
    if STAGE_PRESETS[stage].lora:
        model.enable_lora(config.model.lora)
    return model


SAMPLES = [
    [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A red circle."},
     {"from": "human", "value": "Draw one and play a beep."}, {"from": "gpt", "value": "Sure! <image> and <audio>"}],
    [{"from": "human", "value": "Make a video of a blue square."}, {"from": "gpt", "value": "Here it is <video>"}],
]


def make_batch(model: NextGPTModel, seed: int = 0) -> dict:
    """Two samples: an input image, and image / audio / video outputs with caption embeddings and targets."""
    g = torch.Generator().manual_seed(seed)
    examples = [tokenize_conversation(model.config.template, s, model.tokenizer, model.signal) for s in SAMPLES]
    length = max(len(e) for e in examples)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([e.input_ids + [pad] * (length - len(e)) for e in examples])
    labels = torch.tensor([e.labels + [IGNORE_INDEX] * (length - len(e)) for e in examples])
    mask = torch.tensor([[1] * len(e) + [0] * (length - len(e)) for e in examples])
    q = {m: model.config.output(m) for m in ("image", "video", "audio")}
    return dict(
        input_ids=ids, attention_mask=mask, labels=labels,
        media={"image": torch.randn(1, 3, 224, 224, generator=g)},
        caption_embeddings={"image": torch.randn(1, q["image"].num_query_tokens, q["image"].out_features, generator=g),
                            "video": torch.randn(1, q["video"].num_query_tokens, q["video"].out_features, generator=g),
                            "audio": torch.randn(1, q["audio"].out_features, generator=g)},
        targets={"image": torch.rand(1, 3, 64, 64, generator=g) * 2 - 1,
                 "video": torch.rand(1, 3, 4, 32, 32, generator=g) * 2 - 1,
                 "audio": torch.randn(1, 256, 64, generator=g)},
    )


def run(model, batch, seed: int = 0):
    return model(**batch, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ splice


def test_splice_places_features_pads_and_masks():
    embed = torch.nn.Embedding(50, 4)
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6, VIDEO_TOKEN_INDEX, 7],
                        [1, IMAGE_TOKEN_INDEX, 8, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    labels = torch.tensor([[IGNORE_INDEX, 5, IGNORE_INDEX, 6, IGNORE_INDEX, 7], [IGNORE_INDEX] * 2 + [8] + [-100] * 3])
    image = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4)  # two images of 3 tokens
    video = torch.full((1, 2, 4), -1.0)
    out = splice_multimodal(ids, mask, labels, {"image": image, "video": video}, embed)
    assert out.inputs_embeds.shape == (2, 1 + 1 + 3 + 1 + 2 + 1, 4)
    torch.testing.assert_close(out.inputs_embeds[0, 2:5], image[0])
    torch.testing.assert_close(out.inputs_embeds[0, 6:8], video[0])
    torch.testing.assert_close(out.inputs_embeds[1, 1:4], image[1])  # features consumed in batch order
    torch.testing.assert_close(out.inputs_embeds[0, 1], embed.weight[5])
    assert out.token_ids[0].tolist() == [1, 5] + [MEDIA_POSITION] * 3 + [6] + [MEDIA_POSITION] * 2 + [7]
    assert out.labels[0].tolist() == [-100, 5, -100, -100, -100, 6, -100, -100, 7]
    assert out.labels[1].tolist() == [-100] * 4 + [8] + [-100] * 4
    assert out.attention_mask.tolist() == [[1] * 9, [1] * 5 + [0] * 4]
    assert out.position_ids[1].tolist() == [0, 1, 2, 3, 4, 0, 0, 0, 0]
    assert not out.inputs_embeds[1, 5:].any()


def test_splice_errors_and_truncation():
    embed = torch.nn.Embedding(50, 4)
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 6, 7, 8]])
    one = {"image": torch.zeros(1, 3, 4)}
    with pytest.raises(DataError, match="more <image> placeholders than the 0 image"):
        splice_multimodal(ids, None, None, {}, embed)
    with pytest.raises(DataError, match="2 image input"):
        splice_multimodal(ids, None, None, {"image": torch.zeros(2, 3, 4)}, embed)
    cut = splice_multimodal(ids, None, None, one, embed, max_length=5)  # 7 tokens → trailing text cut
    assert cut.token_ids.tolist() == [[1, -1, -1, -1, 6]]
    with pytest.raises(DataError, match="would cut a media block"):
        splice_multimodal(ids, None, None, one, embed, max_length=3)


# ------------------------------------------------------------------------------------------------ model


def test_forward_returns_every_component_and_spans_follow_the_splice(tiny_models):
    model = make_model(tiny_models)
    batch = make_batch(model)
    out = run(model, batch)
    assert set(out.losses) == {"text", "image_caption", "image_denoise", "video_caption", "video_denoise",
                               "audio_caption", "audio_denoise"}
    assert all(torch.isfinite(v) for v in out.losses.values()) and torch.isfinite(out.loss)
    weights = model.loss_config
    expected = out.losses["text"] + sum(
        getattr(weights, m).caption_weight * out.losses[f"{m}_caption"]
        + getattr(weights, m).denoise_weight * out.losses[f"{m}_denoise"] for m in ("image", "video", "audio"))
    torch.testing.assert_close(out.loss, expected)
    # §12.25: the spans are read where they are after the splice (the input image adds 8 positions before them)
    spliced = model.splice(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"])
    spans = model.find_spans(spliced.token_ids)
    assert [(row, s.modality) for row, s in spans] == [(0, "image"), (0, "audio"), (1, "video")]
    row, image_span = spans[0]
    pre_splice = model.signal.find_spans(batch["input_ids"][0].tolist())[0]
    assert image_span.start == pre_splice.start - 1 + model.media_tokens_per_item()
    assert spliced.token_ids[row, image_span.start:image_span.end].tolist() == model.signal.span("image")


def test_caption_and_span_count_mismatch_is_a_data_error(tiny_models):
    model = make_model(tiny_models, stage=2)
    batch = make_batch(model)
    batch["caption_embeddings"]["image"] = batch["caption_embeddings"]["image"].repeat(2, 1, 1)
    with pytest.raises(DataError, match="1 image signal span.*2 image caption"):
        run(model, batch)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_optimizer_steps_change_exactly_the_preset(tiny_models, stage):
    model = make_model(tiny_models, stage)
    trainable = apply_stage_preset(model, stage)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for ps in trainable.values() for p in ps], lr=1e-2, weight_decay=0.0)
    batch = make_batch(model)
    for _ in range(2):  # LoRA's A matrices get their first gradient once B is no longer zero
        optimizer.zero_grad()
        run(model, batch).loss.backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n, p in model.named_parameters() if any(p is q for ps in trainable.values() for q in ps)}
    assert changed == expected
    preset = STAGE_PRESETS[stage]
    assert any("input_projector" in n for n in changed) == preset.input_projector
    assert any("output_projectors" in n for n in changed) == preset.output_projectors
    assert any(n.endswith(".rows") for n in changed) == preset.signal_rows
    assert any("lora_" in n for n in changed) == preset.lora
    # the LLM's own embedding / LM-head matrices never change: only the signal rows train
    assert not any(n.endswith(("embed_tokens.base.weight", "lm_head.base.weight")) for n in changed)
    assert all(not p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("objective, extra", [
    # text + caption alignment (the denoising terms are tiny next to them and may trade off)
    ("text_and_caption", ("train.losses.image.denoise_weight=0", "train.losses.video.denoise_weight=0",
                          "train.losses.audio.denoise_weight=0")),
    # latent denoising alone: gradients reach the projectors through the frozen UNets
    ("denoise", ("train.losses.text_weight=0", "train.losses.image.caption_weight=0",
                 "train.losses.video.caption_weight=0", "train.losses.audio.caption_weight=0")),
])
def test_ten_steps_on_one_batch_lower_each_component(tiny_models, objective, extra):
    model = make_model(tiny_models, stage=3, extra=extra)
    trainable = apply_stage_preset(model, 3)
    batch = make_batch(model)
    optimizer = torch.optim.AdamW([p for ps in trainable.values() for p in ps], lr=3e-3)
    first = {k: float(v.detach()) for k, v in run(model, batch).losses.items()}
    for _ in range(10):
        optimizer.zero_grad()
        run(model, batch).loss.backward()  # same noise and timesteps every step: a deterministic objective
        optimizer.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in run(model, batch).losses.items()}
    assert all(np.isfinite(v) for v in first.values())
    trained = [k for k in first if (k.endswith("denoise") if objective == "denoise" else not k.endswith("denoise"))]
    assert len(trained) == (3 if objective == "denoise" else 4)
    assert all(last[k] < first[k] for k in trained), (first, last)


def test_save_then_load_reproduces_outputs_exactly(tiny_models, tmp_path):
    model = make_model(tiny_models, stage=3)
    trainable = apply_stage_preset(model, 3)
    batch = make_batch(model)
    optimizer = torch.optim.AdamW([p for ps in trainable.values() for p in ps], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        run(model, batch).loss.backward()
        optimizer.step()
    model.eval()
    config = tiny_config(tiny_models, 3)
    model.save_pretrained(tmp_path / "ckpt", config)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"model.safetensors", "config.yaml", "adapter",
                                                                  "tokenizer.json"}
    loaded = NextGPTModel.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        a, b = run(model, batch), run(loaded, batch)
    assert a.losses.keys() == b.losses.keys()
    for key in a.losses:
        assert torch.equal(a.losses[key], b.losses[key]), key
    for (name, p), (name2, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == name2 and torch.equal(p, q), name


def test_strict_loading_names_the_offending_key(tiny_models):
    model = make_model(tiny_models, stage=2)
    state = model.trainable_state_dict()
    extra = dict(state, **{"output_projectors.image.surprise": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): output_projectors.image.surprise"):
        model.load_trainable_state_dict(extra, "ckpt.safetensors")
    missing = {k: v for k, v in state.items() if k != "signal_rows.embed"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): signal_rows.embed"):
        model.load_trainable_state_dict(missing, "ckpt.safetensors")
    bad = dict(state)
    bad["input_projector.out_fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"mis-shaped keys \(1\): input_projector.out_fc.weight: expected"):
        model.load_trainable_state_dict(bad, "ckpt.safetensors")


def test_decoders_load_lazily(tiny_models):
    model = make_model(tiny_models, stage=1)
    batch = make_batch(model)
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], media=batch["media"])
    assert set(out.losses) == {"text"}
    assert model.decoders.loaded == ()


def test_projector_outputs_decode_through_the_tiny_decoders(tiny_models):
    model = make_model(tiny_models, stage=2)
    hidden = torch.randn(1, 7, model.hidden_size)
    image = model.decoders.get("image").generate(model.project_signal("image", hidden, hidden),
                                                  num_inference_steps=2, height=32, width=48)
    assert isinstance(image[0], Image.Image) and image[0].size == (48, 32)
    hidden = torch.randn(1, 47, model.hidden_size)
    frames = model.decoders.get("video").generate(model.project_signal("video", hidden, hidden),
                                                  num_inference_steps=2, height=32, width=32, num_frames=3)
    assert frames[0].shape == (3, 32, 32, 3) and frames[0].dtype == np.uint8
    hidden = torch.randn(1, 15, model.hidden_size)
    wave = model.decoders.get("audio").generate(model.project_signal("audio", hidden, hidden),
                                                num_inference_steps=2, audio_length_in_s=0.5)
    assert wave[0].shape == (8000,) and wave[0].dtype == np.float32


def test_legacy_layout_pooled_encoder_and_linear_projector(tiny_models):
    legacy = ("model.signal_layout=legacy", "model.template=legacy", "model.encoder.output=pooled",
              "model.input_projector.kind=linear")
    model = make_model(tiny_models, stage=3, extra=legacy)
    batch = make_batch(model)
    assert (batch["input_ids"] == VIDEO_TOKEN_INDEX).sum() == 0
    spliced = model.splice(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"])
    spans = model.find_spans(spliced.token_ids)
    assert [len(s) for _, s in spans] == [4, 8, 24]  # contiguous LEGACY spans
    assert model.media_tokens_per_item() == 1
    out = run(model, batch)
    assert all(torch.isfinite(v) for v in out.losses.values()) and "audio_denoise" in out.losses
