"""Damaged and odd inputs, made here as a new user's data would arrive: each one is named (MediaError, DataError,
ConfigError, CheckpointError) or skipped and counted by reason; none crashes a run and none passes silently.

Classes: a decompression bomb, NaN / Inf float WAVs, a silent target, NaN / Inf caption embeddings, 16-bit PNGs,
empty answers and captions, unknown media keys and placeholders, relative paths with ``http:``, NaN / Inf config
values, a full disk while writing checkpoints and embeddings, truncated checkpoints.
"""
from __future__ import annotations

import errno
import json
import logging
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from conftest import save_tiny_stage3
from nextgpt.config import load_config
from nextgpt.dataset import ConversationDataset, DataCollator, SampleOptions
from nextgpt.dataset.embeddings import caption_jobs, precompute_caption_embeddings
from nextgpt.dataset.media import load_target_audio, load_target_image, load_target_video
from nextgpt.errors import CheckpointError, ConfigError, DataError, MediaError
from nextgpt.media_guard import open_image
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens
from nextgpt.model.multimodal_encoder.imagebind.data import preprocess
from nextgpt.toy.synthetic_media import video_item, write_video
from nextgpt.train import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import predict  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ damaged files


def bomb_png(path: Path) -> Path:
    """20 000 x 20 000 = 400 megapixels of a 1-bit image: about 50 KB on disk, 1.2 GB once decoded as RGB."""
    Image.new("1", (20_000, 20_000)).save(path)
    return path


def float_wav(path: Path, bad: float | None, seconds: float = 1.0) -> Path:
    t = np.arange(int(16000 * seconds), dtype=np.float32) / 16000
    data = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if bad is not None:
        data[100:110] = bad
    soundfile.write(str(path), data, 16000, subtype="FLOAT")
    return path


def png16(path: Path, values8: np.ndarray) -> Path:
    """A 16-bit greyscale PNG whose samples are values8 * 257 (so 255 -> 65535)."""
    Image.fromarray(values8.astype(np.uint16) * 257).save(path)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_decompression_bomb_is_refused_before_decoding(bomb, tmp_path):
    for load in (lambda p: preprocess([p], "image"), lambda p: load_target_image(p, 64, 64)):
        with pytest.raises(MediaError, match=r"bomb\.png: image .*over the limit .*400000000 pixels") as err:
            load(bomb)
        assert err.value.cause == "too_large"
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(small)
    with pytest.raises(MediaError, match="over the limit of 1000"):  # the limit is configurable
        preprocess([small], "image", max_pixels=1000)
    assert preprocess([small], "image", max_pixels=1200).shape == (1, 3, 224, 224)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    deep = png16(tmp_path / "deep.png", values)
    with Image.open(deep) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
        assert np.asarray(im.convert("RGB")).mean() > 250  # what a plain convert gives: (almost) white
    assert np.array_equal(np.asarray(open_image(deep))[..., 0], values)
    flat = tmp_path / "flat.png"
    Image.fromarray(values).convert("RGB").save(flat)
    # the same pixels after scaling, through the same computation in one process: bitwise equal
    assert torch.equal(preprocess([deep], "image"), preprocess([flat], "image"))
    assert torch.equal(load_target_image(deep, 32, 32), load_target_image(flat, 32, 32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_audio_are_named(tmp_path, bad):
    wav = float_wav(tmp_path / "bad.wav", bad)
    for load in (lambda p: preprocess([p], "audio"), lambda p: load_target_audio(p, duration=1.0)):
        with pytest.raises(MediaError, match=r"bad\.wav: decoded audio holds 10 NaN or infinite") as err:
            load(wav)
        assert err.value.cause == "non_finite"


def test_silent_audio_is_no_generation_target(tmp_path):
    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(16000, dtype=np.float32), 16000)
    assert preprocess([silent], "audio").shape == (1, 3, 1, 128, 204)  # a valid encoder input
    with pytest.raises(MediaError, match="silent.wav: the audio target window is constant") as err:
        load_target_audio(silent, duration=1.0)
    assert err.value.cause == "constant"


def test_relative_names_with_a_colon_are_local_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_video(Path("clip.mp4"), video_item(np.random.default_rng(0)))
    Path("clip.mp4").rename("http:clip.mp4")  # a valid relative name that FFmpeg would take for a URL
    float_wav(Path("http:tone.wav"), None, seconds=2.5)
    Image.new("RGB", (40, 30), (9, 9, 9)).save("a:b.png")
    assert preprocess(["http:clip.mp4"], "video").shape[:2] == (1, 15)
    assert load_target_video("http:clip.mp4", max_frames=2, height=32, width=32).shape == (3, 2, 32, 32)
    assert preprocess(["http:tone.wav"], "audio").shape[0] == 1
    assert preprocess(["a:b.png"], "image").shape[0] == 1
    with pytest.raises(MediaError, match="http:gone.mp4: video file not found"):
        preprocess(["http:gone.mp4"], "video")


# ------------------------------------------------------------------------------------------ training data


@pytest.fixture(scope="module")
def tok(tiny_llm_dir):
    return load_tokenizer(tiny_llm_dir)


@pytest.fixture(scope="module")
def signal(tok):
    return register_signal_tokens(tok, None, "new")[0]


def _conv(human: str, gpt: str) -> list[dict]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def _generation(emb: str, caption: str = "a cat") -> dict:
    return {"image_captions": caption, "image_caption_embeddings": emb,
            "conversations": _conv("Draw a cat.", "Here: <image>")}


# (record, skip reason, words of the message)
CASES = {
    "bomb": ({"input_image": "bomb.png", "conversations": _conv("<image>\nWhat?", "Noise.")},
             "media_too_large", "over the limit"),
    "nan_wav": ({"input_audio": "nan.wav", "conversations": _conv("<audio>\nWhat?", "A tone.")},
                "bad_media_values", "NaN or infinite"),
    "nan_npy": (_generation("nan.npy"), "bad_caption_embedding", "nan.npy holds NaN"),
    "inf_npy": (_generation("inf.npy"), "bad_caption_embedding", "inf.npy holds NaN"),
    "empty_answer": ({"input_image": "ok.png", "conversations": _conv("<image>\nWhat?", "  ")},
                     "empty_text", "turn 1 is an empty answer"),
    "empty_caption": (_generation("ok.npy", caption=""), "empty_text", "image_captions[0] is empty"),
    "depth_key": ({"input_depth": "d.png", "conversations": _conv("What is far?", "The wall.")},
                  "unknown_media", "'input_depth'"),
    "depth_placeholder": ({"conversations": _conv("<depth>\nWhat is far?", "The wall.")},
                          "unknown_media", "'<depth>'"),
}


@pytest.fixture()
def damaged_root(tmp_path, bomb):
    images = tmp_path / "media"
    images.mkdir()
    shutil.copy(bomb, images / "bomb.png")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(images / "ok.png")
    float_wav(images / "nan.wav", float("nan"))
    embed = tmp_path / "embed"
    embed.mkdir()
    np.save(embed / "ok.npy", np.ones((77, 32), np.float16))
    np.save(embed / "nan.npy", np.full((77, 32), np.nan, np.float16))
    np.save(embed / "inf.npy", np.full((77, 32), np.inf, np.float16))
    records = [{"input_image": "ok.png", "conversations": _conv("<image>\nWhat?", "A red square.")}]
    records += [record for record, _, _ in CASES.values()]
    (tmp_path / "data.json").write_text(json.dumps(records))
    return tmp_path


def _dataset(root: Path, tok, signal, data: str = "data.json", **options) -> ConversationDataset:
    return ConversationDataset(root / data, tok, signal, SampleOptions(**options), image_folder=root / "media",
                               audio_folder=root / "media", embed_folder=root / "embed", name="damaged")


def test_damaged_samples_are_skipped_and_counted_by_reason(damaged_root, tok, signal, caplog):
    dataset = _dataset(damaged_root, tok, signal)
    with caplog.at_level(logging.WARNING, logger="nextgpt.dataset.json_datasets"):
        samples = [dataset[i] for i in range(len(dataset))]
    batch = DataCollator.from_tokenizer(tok)(samples)
    assert batch["num_samples"] == 1 and batch["ids"] == ["damaged:0"]
    assert batch["skipped"] == [(f"damaged:{i + 1}", reason) for i, (_, reason, _) in enumerate(CASES.values())]
    for i, (_, _, words) in enumerate(CASES.values()):
        assert words in samples[i + 1].message, (i, samples[i + 1].message)
        assert f"skipping damaged:{i + 1}" in caplog.text

    # the trainer's epoch summary lists the counts by reason
    from nextgpt.train.trainer import Trainer

    with caplog.at_level(logging.WARNING, logger="nextgpt.train.trainer"):
        Trainer._epoch_summary(SimpleNamespace(rank=0), 3, Counter(reason for _, reason in batch["skipped"]))
    assert ("epoch 3: 8 sample(s) skipped (bad_caption_embedding 2, bad_media_values 1, empty_text 2, "
            "media_too_large 1, unknown_media 2)") in caplog.text


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_samples_are_errors_when_strict(damaged_root, tok, signal, case):
    record, _, words = CASES[case]
    ok = json.loads((damaged_root / "data.json").read_text())[0]
    (damaged_root / "one.json").write_text(json.dumps([ok, record]))
    # content problems are found when the JSON is read, media and embeddings when the sample is built
    with pytest.raises(DataError, match=r"one\.json sample 1: .*strict") as err:
        dataset = _dataset(damaged_root, tok, signal, "one.json", strict=True)
        assert isinstance(dataset[0], dict)
        dataset[1]
    assert words in str(err.value)


def test_preprocessing_refuses_empty_captions_and_reports_every_skipped_row(tmp_path, tiny_models):
    rows = [{"image_name": "a.jpg", "caption": "a red circle"}, {"image_name": "b.jpg"},
            {"image_name": "c.jpg", "caption": " "}, {"something": "else"}]
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(rows))
    skipped: list = []
    assert caption_jobs(data, "image", skipped) == [("a.jpg.npy", "a red circle")]
    assert [i for i, _ in skipped] == [1, 2, 3]
    report = precompute_caption_embeddings(data, "image", str(tiny_models["sd"]), tmp_path / "embed")
    assert sorted(p.name for p in (tmp_path / "embed").iterdir()) == ["a.jpg.npy"]  # none for the empty caption
    assert [i for i, _ in report.skipped] == [1, 2, 3] and "empty caption" in report.skipped[1][1]


# ------------------------------------------------------------------------------------------ config values


@pytest.mark.parametrize("override, key", [("train.lr=.nan", "train.lr"), ("train.max_grad_norm=.inf", "train.max_grad_norm"),
                                           ("train.adam_eps=-.inf", "train.adam_eps"), ("train.lr=nan", "train.lr"),
                                           ("model.lora.dropout=.NaN", "model.lora.dropout")])
def test_non_finite_config_numbers_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"{key}: must be a finite number"):
        load_config(REPO / "configs/tiny/stage_1.yaml", [override])


def test_non_finite_number_in_a_file_names_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"extends: {REPO / 'configs/tiny/stage_1.yaml'}\ntrain:\n  max_grad_norm: .nan\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: train\.max_grad_norm: must be a finite number"):
        load_config(path)


# ------------------------------------------------------------------------------------------ predict.py


@pytest.fixture(scope="module")
def checkpoint(tiny_models, tmp_path_factory) -> Path:
    return save_tiny_stage3(tiny_models, tmp_path_factory.mktemp("ckpt") / "stage_3")


@pytest.mark.parametrize("make, args, message", [
    ("bomb", ["--image", "{f}"], "bomb.png: image is over the limit of 89478485 pixels"),
    ("nan_wav", ["--audio", "{f}"], "decoded audio holds 10 NaN or infinite value(s)"),
    (None, ["--prompt", "<depth>\nwhat is near?"], "the placeholder '<depth>'"),
    (None, ["--temperature", "nan"], "generate.temperature: must be a finite number"),
    (None, ["--top-p", "inf"], "generate.top_p: must be a finite number"),
])
def test_predict_answers_damaged_inputs_with_one_line(checkpoint, tmp_path, capsys, make, args, message):
    files = {"bomb": lambda: bomb_png(tmp_path / "bomb.png"),
             "nan_wav": lambda: float_wav(tmp_path / "nan.wav", float("nan"))}
    f = files[make]() if make else None
    argv = ["--model", str(checkpoint), "--prompt", "hi", "--output-dir", str(tmp_path / "out")]
    argv += [a.format(f=f) for a in args]
    code = predict.main(argv)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ faults


def failing_after(nbytes: int):
    """A safetensors `save_file` that writes the first `nbytes` of the real file, then fails like a full disk."""
    from safetensors.torch import save

    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(save(tensors, metadata=metadata)[:nbytes])
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))
    return save_file


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(checkpoint, tmp_path, monkeypatch):
    import safetensors.torch

    from nextgpt.model.modeling import NextGPTModel

    target = tmp_path / "model"
    shutil.copytree(checkpoint, target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    model = NextGPTModel.from_pretrained(target)
    config = load_config(target / "config.yaml")
    monkeypatch.setattr(safetensors.torch, "save_file", failing_after(1000))
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint .*model: \[Errno 28\] No space left"):
        model.save_pretrained(target, config)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before  # untouched, so still loadable
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
    monkeypatch.undo()
    NextGPTModel.from_pretrained(target)


def test_disk_full_while_saving_a_training_checkpoint(tmp_path):
    previous = tmp_path / "checkpoints" / "step-000001"
    tmp, final = ckpt.temporary_dir(tmp_path, 2), ckpt.checkpoint_dir(tmp_path, 2)
    with pytest.raises(CheckpointError, match=r"cannot write .*step-000002: .*No space left.*step-000001 is "
                                              "complete and loadable"):
        with ckpt.writing(tmp, final, previous):
            tmp.mkdir(parents=True)
            (tmp / "model.safetensors").write_bytes(b"x" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not tmp.exists() and not final.exists()


def test_disk_full_while_writing_embeddings(tmp_path, monkeypatch):
    from nextgpt.dataset import embeddings

    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([{"image_name": f"{k}.jpg", "caption": f"caption {k}"} for k in range(3)]))
    decoder = SimpleNamespace(modality="image", encode_captions=lambda caps, batch_size: torch.ones(len(caps), 77, 8))
    real_save, calls = np.save, []

    def save(f, array, allow_pickle=False):
        calls.append(1)
        if len(calls) == 2:  # the second file: 50 bytes, then the disk is full
            f.write(b"\x93NUMPY" + b"\0" * 44)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(f, array, allow_pickle=allow_pickle)
    monkeypatch.setattr(embeddings.np, "save", save)
    with pytest.raises(DataError, match=r"cannot write caption embedding .*1\.jpg\.npy: .*No space left"):
        precompute_caption_embeddings(data, "image", decoder, tmp_path / "embed", batch_size=8)
    assert sorted(p.name for p in (tmp_path / "embed").iterdir()) == ["0.jpg.npy"]  # complete, nothing partial
    assert np.load(tmp_path / "embed" / "0.jpg.npy").shape == (77, 8)


def _fake_training_checkpoint(root: Path, step: int) -> Path:
    """A checkpoint folder with the real file kinds: safetensors weights, a torch archive, JSON states."""
    from safetensors.torch import save_file

    path = ckpt.checkpoint_dir(root, step)
    (path / "deepspeed" / "state").mkdir(parents=True)
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path / "model.safetensors"))
    torch.save({"module": {"w": torch.zeros(3)}}, path / "deepspeed" / "state" / "mp_rank_00_model_states.pt")
    ckpt.write_json(ckpt.rng_file(path, 0), ckpt.capture_rng_state())
    ckpt.write_json(path / ckpt.TRAINER_STATE, {"global_step": step})
    return path


@pytest.mark.parametrize("damage, words", [
    ("truncate_weights", "model.safetensors is truncated"),
    ("truncate_state", "deepspeed/state/mp_rank_00_model_states.pt is truncated"),
    ("remove_state", "the DeepSpeed state (deepspeed/*/*.pt) is missing"),
    ("garble_header", "model.safetensors has an unreadable header"),
    ("garble_json", "model.safetensors has an unreadable header"),
])
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_used(tmp_path, caplog, damage, words):
    good = _fake_training_checkpoint(tmp_path, 1)
    bad = _fake_training_checkpoint(tmp_path, 2)
    weights, state = bad / "model.safetensors", bad / "deepspeed" / "state" / "mp_rank_00_model_states.pt"
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:2000])
    elif damage == "truncate_state":
        state.write_bytes(state.read_bytes()[:200])
    elif damage == "remove_state":
        shutil.rmtree(bad / "deepspeed")
    elif damage == "garble_header":
        weights.write_bytes(b"\xff" * 64)
    else:
        weights.write_bytes((20).to_bytes(8, "little") + b"{not json at all}   " + b"\0" * 100)
    assert ckpt.checkpoint_problem(good) is None
    # allow_config_change: the resume guard (config vs checkpoint) is not what this test is about
    train = SimpleNamespace(resume="auto", allow_config_change=True)
    fake = SimpleNamespace(config=SimpleNamespace(train=train), output_dir=tmp_path, rank=0)
    from nextgpt.train.trainer import Trainer

    with caplog.at_level(logging.WARNING, logger="nextgpt.train.checkpoint"):
        assert Trainer.resume_point(fake) == good
    assert f"checkpoint {bad} is damaged ({words}" in caplog.text
    fake.config.train.resume = str(bad)  # asked for by name: an error naming it
    with pytest.raises(CheckpointError, match=rf"step-000002 is damaged: {words[:20]}"):
        Trainer.resume_point(fake)
