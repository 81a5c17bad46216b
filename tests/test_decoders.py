"""Tiny diffusion decoders: build, save, reload offline, caption embeddings, generation, lazy loading."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nextgpt.errors import ConfigError, DataError
from nextgpt.model.multimodal_decoder import GENERATION_DEFAULTS, Decoder, LazyDecoders, load_decoder
from nextgpt.toy.decoders import build_tiny_decoders, build_tiny_sd

@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_decoders(tmp_path_factory.mktemp("tiny_decoders"))


@pytest.fixture(scope="module")
def image_decoder(tiny_dirs) -> Decoder:
    return load_decoder("image", tiny_dirs["image"])


@pytest.fixture(scope="module")
def video_decoder(tiny_dirs) -> Decoder:
    return load_decoder("video", tiny_dirs["video"])


@pytest.fixture(scope="module")
def audio_decoder(tiny_dirs) -> Decoder:
    return load_decoder("audio", tiny_dirs["audio"])


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------------ building


def test_tiny_pipelines_are_small_and_in_real_layout(tiny_dirs):
    expected = {
        "image": ("StableDiffusionPipeline", {"vae", "unet", "text_encoder", "tokenizer", "scheduler"}),
        "video": ("TextToVideoSDPipeline", {"vae", "unet", "text_encoder", "tokenizer", "scheduler"}),
        "audio": ("AudioLDMPipeline", {"vae", "unet", "text_encoder", "tokenizer", "scheduler", "vocoder"}),
    }
    for modality, (cls, parts) in expected.items():
        root = tiny_dirs[modality]
        index = json.loads((root / "model_index.json").read_text())
        assert index["_class_name"] == cls
        assert parts <= {p.name for p in root.iterdir() if p.is_dir()}
        # tokenizers stored as the hub repositories store them: vocab.json + merges.txt
        tok_files = {p.name for p in (root / "tokenizer").iterdir()}
        assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= tok_files
        assert _tree_size(root) < 5 * 2**20, f"{modality}: {_tree_size(root)} bytes"


def test_tiny_build_is_deterministic(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted(root.rglob("*.safetensors"))}

    a = digest(build_tiny_sd(tmp_path / "a", seed=3))
    b = digest(build_tiny_sd(tmp_path / "b", seed=3))
    c = digest(build_tiny_sd(tmp_path / "c", seed=4))
    assert a == b and len(a) == 3
    assert a != c


def test_pipelines_reload_offline_with_their_own_classes(tiny_dirs):
    """Each folder loads with the stock class's from_pretrained in a fresh process with HF_HUB_OFFLINE=1."""
    script = textwrap.dedent(
        """
        import sys, torch, diffusers
        for cls, path in zip(sys.argv[1::2], sys.argv[2::2]):
            pipe = getattr(diffusers, cls).from_pretrained(path)
            total = sum(float(p.double().abs().sum()) for p in pipe.unet.parameters())
            print(cls, type(pipe.tokenizer).__name__, type(pipe.text_encoder).__name__, round(total, 3))
        """
    )
    args = ["StableDiffusionPipeline", str(tiny_dirs["image"]), "TextToVideoSDPipeline", str(tiny_dirs["video"]),
            "AudioLDMPipeline", str(tiny_dirs["audio"])]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split() for line in out.stdout.strip().splitlines()]
    assert [line[:3] for line in lines] == [
        ["StableDiffusionPipeline", "CLIPTokenizer", "CLIPTextModel"],
        ["TextToVideoSDPipeline", "CLIPTokenizer", "CLIPTextModel"],
        ["AudioLDMPipeline", "RobertaTokenizer", "ClapTextModelWithProjection"],
    ]
    for line, modality in zip(lines, ("image", "video", "audio")):
        ours = load_decoder(modality, tiny_dirs[modality])
        total = sum(float(p.double().abs().sum()) for p in ours.unet.parameters())
        assert float(line[3]) == pytest.approx(total, abs=2e-3)


# ------------------------------------------------------------------------------------------------ loading


def test_loaded_decoders_are_frozen_with_expected_shapes(image_decoder, video_decoder, audio_decoder):
    assert image_decoder.condition_shape == (77, 32)
    assert video_decoder.condition_shape == (77, 24)
    assert audio_decoder.condition_shape == (1, 16)
    for dec in (image_decoder, video_decoder, audio_decoder):
        mods = dec.modules()
        assert {"vae", "unet", "text_encoder"} <= set(mods)
        for module in mods.values():
            assert not module.training
            assert not any(p.requires_grad for p in module.parameters())
    assert "vocoder" in audio_decoder.modules()
    assert audio_decoder.pipeline.vocoder.config.model_in_dim == 64
    assert audio_decoder.pipeline.vocoder.config.sampling_rate == 16000
    assert image_decoder.vae_scale_factor == 8 and video_decoder.vae_scale_factor == 8
    assert audio_decoder.vae_scale_factor == 4


def test_sd2_style_scheduler_choice(tiny_dirs, image_decoder, tmp_path):
    # the tiny SD is SD-2 style (v-prediction): Euler for inference, DDPM from the same config for training
    assert type(image_decoder.scheduler).__name__ == "EulerDiscreteScheduler"
    assert image_decoder.prediction_type == "v_prediction"
    ddpm = image_decoder.training_scheduler
    assert type(ddpm).__name__ == "DDPMScheduler"
    assert ddpm.config.prediction_type == "v_prediction" and ddpm.config.beta_schedule == "scaled_linear"
    kept = load_decoder("image", tiny_dirs["image"], image_scheduler="default")
    assert type(kept.scheduler).__name__ == "DDIMScheduler"
    eps = load_decoder("image", build_tiny_sd(tmp_path / "sd_eps", prediction_type="epsilon"))
    assert type(eps.scheduler).__name__ == "DDIMScheduler" and eps.prediction_type == "epsilon"
    forced = load_decoder("image", tmp_path / "sd_eps", image_scheduler="euler")
    assert type(forced.scheduler).__name__ == "EulerDiscreteScheduler"


def test_load_errors_name_the_problem(tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_decoder("image", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="model_index.json"):
        load_decoder("image", tmp_path / "empty")
    with pytest.raises(ConfigError, match="AudioLDMPipeline"):
        load_decoder("image", tiny_dirs["audio"])
    with pytest.raises(ConfigError, match="unknown decoder modality"):
        load_decoder("text", tiny_dirs["image"])
    with pytest.raises(ConfigError, match="image_scheduler"):
        load_decoder("image", tiny_dirs["image"], image_scheduler="pndm")


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1 (no hub look-up)")
def test_unreachable_hub_id_is_a_config_error():
    with pytest.raises(ConfigError, match="not a local folder"):
        load_decoder("audio", "nobody/no-such-audioldm")


def test_dtype_and_device_move(tiny_dirs):
    dec = load_decoder("audio", tiny_dirs["audio"], dtype="bf16")
    assert dec.dtype == torch.bfloat16 and dec.text_encoder.dtype == torch.bfloat16
    dec.to(dtype=torch.float32)
    assert dec.dtype == torch.float32 and dec.pipeline.vocoder.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ captions


def _single_token_words(decoder: Decoder, words: list[str]) -> list[str]:
    tok = decoder.tokenizer
    for w in words:
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    return words


def test_image_caption_embeddings_match_the_standard_encoding(image_decoder):
    captions = ["a dog running on the grass", "a cat sitting on a sofa"]
    emb = image_decoder.encode_captions(captions)
    assert emb.shape == (2, 77, 32) and emb.dtype == torch.float32
    tok = image_decoder.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt")
    with torch.no_grad():
        ref = image_decoder.text_encoder(tok.input_ids)[0]  # last hidden state, all 77 positions
    torch.testing.assert_close(emb, ref)


def test_image_long_caption_keeps_its_end_each_on_its_own(image_decoder):
    words = _single_token_words(image_decoder, ["a", "dog", "on", "the", "grass", "running"])
    long_words = [words[i % len(words)] for i in range(100)] + ["cat"]  # 101+ tokens, ends with "cat"
    long = " ".join(long_words)
    n_content = len(image_decoder.tokenizer(long, add_special_tokens=False).input_ids)
    assert n_content > 75
    tail_ids = image_decoder.tokenizer(long, add_special_tokens=False).input_ids[-75:]
    tail = image_decoder.tokenizer.decode(tail_ids)
    head = " ".join(long_words[:75])
    short = "a dog on the grass"

    alone = image_decoder.encode_captions([short])
    batch = image_decoder.encode_captions([short, long])
    torch.testing.assert_close(batch[0], alone[0], rtol=1e-5, atol=1e-6)  # §12.23: the short one is untouched
    torch.testing.assert_close(batch[1], image_decoder.encode_captions([tail])[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batch[1], image_decoder.encode_captions([head])[0], atol=1e-4)


def test_video_caption_embeddings_truncate_on_the_right(video_decoder):
    words = _single_token_words(video_decoder, ["a", "dog", "on", "the", "grass", "running"])
    long_words = [words[i % len(words)] for i in range(100)]
    head = " ".join(long_words[:75])
    emb = video_decoder.encode_captions([" ".join(long_words), "a dog"])
    assert emb.shape == (2, 77, 24)
    torch.testing.assert_close(emb[0], video_decoder.encode_captions([head])[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb[1], video_decoder.encode_captions(["a dog"])[0], rtol=1e-5, atol=1e-6)


def test_audio_caption_embeddings_are_normalised_clap_vectors(audio_decoder):
    emb = audio_decoder.encode_captions(["rain falling on a roof", "a dog barking", "a dog barking"])
    assert emb.shape == (3, 16) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[1], emb[2])
    assert not torch.allclose(emb[0], emb[1])
    tok = audio_decoder.tokenizer(["a dog barking"], padding="max_length", max_length=77, truncation=True,
                                  return_tensors="pt")
    with torch.no_grad():
        raw = audio_decoder.text_encoder(tok.input_ids, attention_mask=tok.attention_mask).text_embeds
    torch.testing.assert_close(emb[1], raw[0] / raw[0].norm(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(audio_decoder.negative_embedding(), audio_decoder.encode_captions([""]))


def test_encode_captions_rejects_a_bare_string(image_decoder):
    with pytest.raises(DataError):
        image_decoder.encode_captions("a dog")


# ------------------------------------------------------------------------------------------------ generation


def test_generation_defaults_follow_nextgpt_generate():
    assert GENERATION_DEFAULTS["image"]["num_inference_steps"] == 50
    assert GENERATION_DEFAULTS["image"]["guidance_scale"] == 7.5
    assert GENERATION_DEFAULTS["video"] == {"num_inference_steps": 50, "guidance_scale": 7.5, "num_frames": 16,
                                            "height": 320, "width": 576}
    assert GENERATION_DEFAULTS["audio"] == {"num_inference_steps": 50, "guidance_scale": 7.5,
                                            "audio_length_in_s": 5.0}


def test_generate_image(image_decoder):
    emb = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(0))
    out = image_decoder.generate(emb, num_inference_steps=2, height=32, width=48,
                                 generator=torch.Generator().manual_seed(1))
    assert len(out) == 2 and all(isinstance(im, Image.Image) and im.size == (48, 32) for im in out)
    again = image_decoder.generate(emb[:1], num_inference_steps=2, height=32, width=48,
                                   generator=torch.Generator().manual_seed(1))
    # Same seed, same first row: the same image up to float rounding. Batches of one and two run through different
    # CPU kernels (float differences ~1e-5 before quantisation), so a pixel may move by one level out of 255.
    diff = np.abs(np.asarray(again[0], dtype=int) - np.asarray(out[0], dtype=int))
    assert diff.max() <= 1
    default_size = image_decoder.generate(emb[0], num_inference_steps=1)[0].size  # (77, D) accepted too
    assert default_size == (64, 64)  # unet.sample_size * vae_scale_factor


def test_classifier_free_guidance_uses_the_empty_prompt(image_decoder):
    """With prompt = the empty prompt's embedding, guidance changes nothing: the negative is that embedding."""
    neg = image_decoder.negative_embedding()
    kw = dict(num_inference_steps=2, height=32, width=32)
    guided = image_decoder.generate(neg, guidance_scale=7.5, generator=torch.Generator().manual_seed(0), **kw)
    plain = image_decoder.generate(neg, guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **kw)
    diff = np.abs(np.asarray(guided[0], dtype=int) - np.asarray(plain[0], dtype=int))
    assert diff.max() <= 1
    other = image_decoder.generate(torch.randn(1, 77, 32) * 5, guidance_scale=7.5,
                                   generator=torch.Generator().manual_seed(0), **kw)
    assert np.abs(np.asarray(other[0], dtype=int) - np.asarray(plain[0], dtype=int)).max() > 1


def test_generate_video(video_decoder):
    emb = torch.randn(1, 77, 24)
    out = video_decoder.generate(emb, num_inference_steps=2, height=32, width=48, num_frames=3,
                                 generator=torch.Generator().manual_seed(0))
    assert len(out) == 1
    frames = out[0]
    assert frames.shape == (3, 32, 48, 3) and frames.dtype == np.uint8


def test_generate_audio_uses_embeddings_as_is(audio_decoder):
    emb = torch.nn.functional.normalize(torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    kw = dict(num_inference_steps=2, audio_length_in_s=0.5)
    wave = audio_decoder.generate(emb, generator=torch.Generator().manual_seed(0), **kw)[0]
    assert wave.shape == (8000,) and wave.dtype == np.float32 and np.isfinite(wave).all()
    same = audio_decoder.generate(emb[:, 0], generator=torch.Generator().manual_seed(0), **kw)[0]
    # (1, 1, 16) and (1, 16) inputs: other tensor shapes through the UNet, so within float32 rounding
    np.testing.assert_allclose(wave, same, rtol=1e-5, atol=1e-6)
    # a scaled embedding gives another waveform: prompt_embeds are not re-normalised
    scaled = audio_decoder.generate(emb * 3.0, generator=torch.Generator().manual_seed(0), **kw)[0]
    assert np.abs(wave).max() > 1e-3
    assert np.abs(scaled - wave).max() > 1e-2 * np.abs(wave).max()
    longer = audio_decoder.generate(emb, num_inference_steps=1, audio_length_in_s=1.3)[0]
    assert longer.shape == (int(1.3 * 16000),)


def test_generate_rejects_bad_embeddings(image_decoder, audio_decoder):
    with pytest.raises(DataError, match=r"\(1, 77, 16\)"):
        image_decoder.generate(torch.randn(1, 77, 16), num_inference_steps=1)
    with pytest.raises(DataError):
        audio_decoder.generate(torch.randn(2, 2, 16), num_inference_steps=1)
    with pytest.raises(ConfigError, match="num_frames"):
        image_decoder.generate(torch.randn(1, 77, 32), num_inference_steps=1, num_frames=4)


# ------------------------------------------------------------------------------------------------ laziness


def test_lazy_decoders_load_only_what_is_asked(tiny_dirs):
    lazy = LazyDecoders({"image": tiny_dirs["image"], "video": None, "audio": tiny_dirs["audio"]})
    assert lazy.available == ("image", "audio")
    assert lazy.loaded == ()
    assert "audio" in lazy and "video" not in lazy
    audio = lazy.get("audio")
    assert isinstance(audio, Decoder) and audio.modality == "audio"
    assert lazy.loaded == ("audio",)
    assert lazy.get("audio") is audio
    with pytest.raises(ConfigError, match="no video decoder"):
        lazy.get("video")
    with pytest.raises(ConfigError, match="unknown decoder modality"):
        lazy.get("text")
    assert lazy.loaded == ("audio",)
    with pytest.raises(ConfigError):
        LazyDecoders({"depth": tiny_dirs["image"]})


def test_lazy_decoders_do_not_touch_paths_until_asked(tmp_path):
    lazy = LazyDecoders({"image": tmp_path / "not_there"})
    assert lazy.available == ("image",) and lazy.loaded == ()
    with pytest.raises(ConfigError, match="does not exist"):
        lazy.get("image")


def test_tiny_tokenizer_files_are_reproducible(tmp_path):
    """Every build writes the same merges (the `tokenizers` trainer breaks ties in hash-map order)."""
    from nextgpt.toy.decoders import write_clip_tokenizer_files, write_roberta_tokenizer_files

    for write in (write_clip_tokenizer_files, write_roberta_tokenizer_files):
        first, second = write(tmp_path / f"{write.__name__}_a"), write(tmp_path / f"{write.__name__}_b")
        for name in ("vocab.json", "merges.txt"):
            assert (first / name).read_bytes() == (second / name).read_bytes(), (write.__name__, name)
        assert len((first / "merges.txt").read_text().splitlines()) > 50
