"""ImageBind model: reference fixtures (weights, outputs, intermediates), huge-config keys, loading, output modes."""
from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from nextgpt.errors import CheckpointError, ConfigError
from nextgpt.model.multimodal_encoder.imagebind import (
    IMAGEBIND_HUGE_KWARGS,
    ImageBindModel,
    build_imagebind,
    imagebind_huge,
    load_and_transform_video_data,
)

# README tolerances for the small fixture model in float32 on CPU. The reference is bit-reproducible on its own
# machine; on a CPU with other SIMD kernels (e.g. AVX2 vs AVX-512) the attention/GELU kernels round differently.
RTOL = ATOL = 1e-5


@pytest.fixture(scope="module")
def fx(imagebind_fixtures_dir):
    d = imagebind_fixtures_dir
    kwargs = json.loads((d / "model_kwargs.json").read_text())
    return {
        "dir": d,
        "kwargs": kwargs["kwargs"],
        "note": kwargs.get("note", ""),
        "state": load_file(d / "model_state_dict.safetensors"),
        "outputs": load_file(d / "outputs.safetensors"),
        "inter": load_file(d / "intermediates.safetensors"),
        "pp": load_file(d / "preprocessed.safetensors"),
        "syn": load_file(d / "synthetic_inputs.safetensors"),
        "manifest": json.loads((d / "manifest.json").read_text()),
    }


@pytest.fixture(scope="module")
def model(fx):
    """The fixture model, built on the meta device and loaded strictly (by assignment) from the safetensors file."""
    return build_imagebind(fx["kwargs"], fx["dir"] / "model_state_dict.safetensors")


def _cases(fx) -> dict[str, tuple[str, torch.Tensor]]:
    pp, syn = fx["pp"], fx["syn"]
    table = {
        "image": ("vision", pp.get("vision_pixel_values")),
        "audio": ("audio", pp.get("audio_pixel_values")),
        "video_e0": ("vision", pp.get("video_entry0_pixel_values")),
        "text": ("text", pp.get("text_tokens")),
        "text_long": ("text", pp.get("text_long_tokens")),
        "depth": ("depth", syn.get("depth")),
        "thermal": ("thermal", syn.get("thermal")),
        "imu": ("imu", syn.get("imu")),
        "image_112": ("vision", syn.get("vision_112")),
        "image_pad_bird": ("vision", pp.get("vision_pad_bird_pixel_values")),
    }
    e0 = pp.get("video_entry0_pixel_values")
    if e0 is not None:
        table["video_e0_as_2clips"] = ("vision", e0.reshape(1, e0.shape[0] * e0.shape[1], *e0.shape[2:]))
    return {k: v for k, v in table.items() if v[1] is not None and k in fx["outputs"]}


CASE_NAMES = ["image", "audio", "video_e0", "video_e0_as_2clips", "text", "text_long", "depth", "thermal", "imu",
              "image_112", "image_pad_bird"]
# The fixtures keep no intermediates for video_e0_as_2clips, image_pad_bird and video_full.
INTERMEDIATE_CASES = [c for c in CASE_NAMES if c not in ("video_e0_as_2clips", "image_pad_bird")]


def test_fixture_weights_load_strictly_with_reference_names(fx, model):
    sd = model.state_dict()
    assert set(sd) == set(fx["state"])
    for k, v in fx["state"].items():
        assert torch.equal(sd[k], v), k
    assert not any(t.is_meta for t in sd.values())


def test_random_init_reproduces_reference_weights(fx):
    """Construction draws from the RNG in the reference's order: same seed, bit-identical state dict."""
    m = re.search(r"manual_seed\((\d+)\)", fx["note"])
    if m is None:
        pytest.skip("fixture does not state the seed its weights were drawn with")
    torch.manual_seed(int(m.group(1)))
    fresh = ImageBindModel(**fx["kwargs"]).state_dict()
    assert list(fresh) == list(ImageBindModel(**fx["kwargs"]).state_dict())
    bad = [k for k, v in fx["state"].items() if not torch.equal(fresh[k], v)]
    assert bad == []


@pytest.mark.parametrize("case", CASE_NAMES)
def test_outputs_match_reference(fx, model, case):
    cases = _cases(fx)
    if case not in cases:
        pytest.skip(f"case {case} not in this fixture set")
    key, x = cases[case]
    with torch.no_grad():
        y = model({key: x})[key]
    expected = fx["outputs"][case]
    assert y.shape == expected.shape and y.dtype == expected.dtype
    torch.testing.assert_close(y, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", INTERMEDIATE_CASES)
def test_intermediates_match_reference(fx, model, case):
    inter = fx["inter"]
    if f"{case}.tokens" not in inter:
        pytest.skip(f"no intermediates for {case}")
    key, x = _cases(fx)[case]
    got = {}
    hooks = [
        model.modality_trunks[key].register_forward_hook(
            lambda mod, args, kwargs, out: got.update(tokens=args[0] if args else kwargs["tokens"], trunk=out),
            with_kwargs=True,
        ),
        model.modality_heads[key].register_forward_hook(lambda mod, args, out: got.update(head=out)),
    ]
    try:
        with torch.no_grad():
            model({key: x})
    finally:
        for h in hooks:
            h.remove()
    rows = slice(None) if key == "text" else slice(0, 1)
    # Preprocessor output: the same ops as the reference, but its conv stem / linear layers run on this CPU's
    # kernels (the fixtures were made on another machine), so within the README tolerance, not bit for bit.
    torch.testing.assert_close(got["tokens"][rows], inter[f"{case}.tokens"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(got["trunk"][rows], inter[f"{case}.trunk"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(got["head"][rows], inter[f"{case}.head"], rtol=RTOL, atol=ATOL)
    if f"{case}.seq_len" in inter:
        ids = x
        assert torch.equal(ids.argmax(dim=-1), inter[f"{case}.seq_len"])


def test_head_is_exact_given_reference_trunk_output(fx, model):
    """LN + bias-free projection of the reference's own trunk output reproduces its head output (within RTOL /
    ATOL: the fixtures come from another machine, whose matmul kernels may sum in another order)."""
    inter = fx["inter"]
    for case, key in [("image", "vision"), ("audio", "audio"), ("depth", "depth"), ("imu", "imu")]:
        if f"{case}.trunk" in inter:
            with torch.no_grad():
                torch.testing.assert_close(model.modality_heads[key](inter[f"{case}.trunk"]), inter[f"{case}.head"],
                                           rtol=RTOL, atol=ATOL, msg=case)


def test_text_rows_have_logit_scale_norm(fx, model):
    with torch.no_grad():
        y = model({"text": fx["pp"]["text_tokens"]})["text"]
    scale = model.modality_postprocessors.text[1].log_logit_scale.exp().clamp(max=100)
    torch.testing.assert_close(y.norm(dim=-1), scale.expand(y.shape[0], 1), rtol=1e-5, atol=1e-5)


def test_video_full_end_to_end(fx, model, samples_dir):
    if "video_full" not in fx["outputs"]:
        pytest.skip("no video_full case")
    man = fx["manifest"]
    shared = fx["dir"].parents[1]
    paths = [shared / man["media"][name]["source"] for name in man["inputs_order"]["videos"]]
    x = load_and_transform_video_data(paths, "cpu")
    with torch.no_grad():
        y = model({"vision": x})["vision"]
    torch.testing.assert_close(y, fx["outputs"]["video_full"], rtol=RTOL, atol=ATOL)


def test_pooled_mode_is_normalized_cls_averaged_over_clips(fx, model):
    pooled = build_imagebind(fx["kwargs"], fx["dir"] / "model_state_dict.safetensors", output_mode="pooled")
    image = fx["pp"]["vision_pixel_values"][:2]
    video = fx["pp"]["video_entry0_pixel_values"].reshape(1, -1, 3, 2, 224, 224)
    audio = fx["pp"]["audio_pixel_values"][:1]
    text = fx["pp"]["text_tokens"]
    trunk_out = {}
    hook = model.modality_trunks.vision.register_forward_hook(lambda m, a, o: trunk_out.update(v=o))
    with torch.no_grad():
        out = pooled({"vision": image, "audio": audio, "text": text})
        model({"vision": image})
        hook.remove()
        head = model.modality_heads.vision
        manual = F.normalize(head[2](head[0](trunk_out["v"])[:, 0]), dim=-1)
        video_out = pooled({"vision": video})["vision"]
        clips = pooled({"vision": video[0][:, None]})["vision"]  # each clip as a 1-clip item
        tokens_text = model({"text": text})["text"]
    assert out["vision"].shape == (2, pooled.out_embed_dim)
    assert out["audio"].shape == (1, pooled.out_embed_dim)
    assert out["text"].shape == (3, pooled.out_embed_dim)
    # the head on (B, D) rows here vs on (B, T, D) inside the model: other matmul shapes, so a stated tolerance
    torch.testing.assert_close(out["vision"], manual, rtol=1e-6, atol=1e-6)
    assert video_out.shape == (1, pooled.out_embed_dim)
    torch.testing.assert_close(video_out[0], clips.mean(dim=0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out["text"], tokens_text[:, 0], rtol=1e-6, atol=1e-6)  # one vector either way
    # audio: normalisation only, then the mean of 3 unit vectors (norm <= 1, no x20 scale)
    assert 0.0 < out["audio"].norm() <= 1.0 + 1e-6


def test_unknown_modality_and_output_mode_raise(model):
    with pytest.raises(ConfigError, match="unknown ImageBind modality"):
        model({"pointcloud": torch.zeros(1, 3)})
    with pytest.raises(ConfigError, match="output_mode"):
        ImageBindModel(output_mode="cls")


def test_bf16_forward_including_text_and_interpolated_pos_embed(fx):
    m = build_imagebind(fx["kwargs"], fx["dir"] / "model_state_dict.safetensors").to(torch.bfloat16)
    with torch.no_grad():
        out = m({
            "text": fx["pp"]["text_tokens"],
            "vision": fx["syn"]["vision_112"].to(torch.bfloat16),
            "audio": fx["pp"]["audio_pixel_values"][:1].to(torch.bfloat16),
        })
    assert out["vision"].dtype == torch.bfloat16 and out["vision"].shape[1] == 64
    for key in ("text", "vision", "audio"):
        ref = fx["outputs"][{"text": "text", "vision": "image_112", "audio": "audio"}[key]]
        got = out[key].float()
        ref = ref[: got.shape[0]]
        cos = F.cosine_similarity(got.flatten(1), ref.flatten(1), dim=-1)
        assert cos.min() > 0.99, (key, cos)


# ------------------------------------------------------------------------------------------------------------
# Huge configuration: only on the meta device (nothing allocated)
# ------------------------------------------------------------------------------------------------------------


def _huge_on_meta(**kw) -> ImageBindModel:
    with torch.device("meta"):
        return ImageBindModel(**IMAGEBIND_HUGE_KWARGS, **kw)


def test_huge_keys_and_shapes_equal_reference_tsv(spec_dir):
    rows = [line.rstrip("\n").split("\t") for line in (spec_dir / "imagebind_huge_keys.tsv").open()][1:]
    m = _huge_on_meta()
    sd = m.state_dict()
    assert len(rows) == 1311
    assert [r[0] for r in rows] == list(sd)  # same keys, same order
    params = dict(m.named_parameters())
    for key, shape, dtype, kind, numel in rows:
        t = sd[key]
        assert ("x".join(map(str, t.shape)) or "scalar") == shape, key
        assert str(t.dtype).removeprefix("torch.") == dtype, key
        assert (key in params) == (kind == "param"), key
        assert t.numel() == int(numel), key
    assert sum(t.numel() for t in sd.values()) == 1_200_786_990
    assert all(t.is_meta for t in sd.values())


@pytest.mark.parametrize("mode", ["tokens", "pooled"])
def test_huge_output_shapes_on_meta(mode):
    m = _huge_on_meta(output_mode=mode).eval()
    meta = dict(device="meta")
    with torch.no_grad():
        out = m({
            "vision": torch.empty(2, 3, 224, 224, **meta),
            "audio": torch.empty(2, 3, 1, 128, 204, **meta),
            "text": torch.zeros(2, 77, dtype=torch.long, **meta),
        })
        video = m({"vision": torch.empty(1, 15, 3, 2, 224, 224, **meta)})["vision"]
    if mode == "tokens":
        assert out["vision"].shape == (2, 256, 1024)
        assert out["audio"].shape == (2, 228, 1024)
        assert out["text"].shape == (2, 1, 1024)
        assert video.shape == (1, 256, 1024)
    else:
        assert out["vision"].shape == out["audio"].shape == out["text"].shape == (2, 1024)
        assert video.shape == (1, 1024)


def test_imagebind_huge_rejects_a_checkpoint_of_another_configuration(fx, tmp_path):
    path = tmp_path / "imagebind_huge.pth"
    torch.save(fx["state"], path)
    with pytest.raises(CheckpointError) as err:
        imagebind_huge(path)
    msg = str(err.value)
    assert "missing keys" in msg and "mis-shaped keys" in msg and "unexpected keys" not in msg
    assert "modality_trunks.vision.blocks.31.attn.in_proj_weight" in err.value.missing
    assert err.value.missing == sorted(set(_huge_on_meta().state_dict()) - set(fx["state"]))
    cls_key = "modality_preprocessors.vision.cls_token"
    width = fx["kwargs"]["vision_embed_dim"]
    assert any(m.startswith(f"{cls_key}: expected") and m.endswith(f"found (1, 1, {width})")
               for m in err.value.misshaped)
    # a directory holding the file is accepted too, as the reference passes a directory
    with pytest.raises(CheckpointError, match="mis-shaped"):
        imagebind_huge(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        imagebind_huge(tmp_path / "nope.pth")


# ------------------------------------------------------------------------------------------------------------
# Strict loading of .pth and .safetensors
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_strict_loading_reports_missing_unexpected_and_misshaped(fx, tmp_path, fmt):
    def write(state, name):
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "pth":
            torch.save(state, path)
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path

    good = write(fx["state"], "good")
    m = build_imagebind(fx["kwargs"], good)
    assert torch.equal(m.state_dict()["modality_heads.vision.2.weight"], fx["state"]["modality_heads.vision.2.weight"])
    assert not any(p.is_meta for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in m.parameters())

    broken = dict(fx["state"])
    del broken["modality_heads.audio.2.weight"]
    broken["extra.weight"] = torch.zeros(2)
    broken["modality_heads.vision.2.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        build_imagebind(fx["kwargs"], write(broken, "broken"))
    msg = str(err.value)
    assert "missing keys (1): modality_heads.audio.2.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "modality_heads.vision.2.weight: expected" in msg and "found (3, 3)" in msg


def test_pickle_that_is_not_a_state_dict_is_rejected(tmp_path):
    path = tmp_path / "imagebind_huge.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="plain state dict"):
        imagebind_huge(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        imagebind_huge(path)
    corrupt = tmp_path / "imagebind_huge.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        build_imagebind({}, corrupt)
