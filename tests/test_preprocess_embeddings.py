"""Caption-embedding precomputation (preprocess_embeddings.py, nextgpt/dataset/embeddings.py) with the tiny decoders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nextgpt.dataset.embeddings import (
    caption_jobs,
    embedding_file_name,
    embedding_path,
    precompute_caption_embeddings,
)
from nextgpt.cli.embeddings import main
from nextgpt.errors import ConfigError, DataError
from nextgpt.model.multimodal_decoder import load_decoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sd(tiny_models):
    return load_decoder("image", tiny_models["sd"])


# ------------------------------------------------------------------------------------------------ names


def test_plain_names_are_kept():
    for name in ("001312382.jpg.npy", "00007033.mp4.npy", "102666.wav.npy", "it_img_3.jpg.npy",
                 "mosit_i_0000000_00.jpg.npy", "a-b_c~d.npy"):
        assert embedding_file_name(name) == name
    assert embedding_file_name("001312382.jpg") == "001312382.jpg.npy"  # the suffix is added when missing


@pytest.mark.parametrize("name", [
    "../../etc/passwd.npy", "..", ".", "/abs/path/x.jpg.npy", "sub/dir/x.mp4.npy", "https://host/a/b.jpg?x=1",
    "a\\b.npy", "ünïcode ✓.jpg.npy", "x" * 400 + ".npy", "..%2F..%2Fx.npy", "a\x00b.npy",
])
def test_awkward_names_stay_inside_the_folder(tmp_path, name):
    file_name = embedding_file_name(name)
    path = embedding_path(tmp_path, name)
    assert path.parent == tmp_path and path.name == file_name
    assert "/" not in file_name and "\\" not in file_name and "\x00" not in file_name
    assert file_name.endswith(".npy") and file_name not in (".", "..")
    assert len(file_name.encode()) <= 255
    np.save(path, np.zeros(2, np.float16))  # the OS accepts the name
    assert [p.name for p in tmp_path.iterdir()] == [file_name]


def test_different_names_never_share_a_file():
    names = ["a/b.npy", "a%2Fb.npy", "a_b.npy", "a b.npy", "a+b.npy", "x" * 400 + "1.npy", "x" * 400 + "2.npy"]
    assert len({embedding_file_name(n) for n in names}) == len(names)
    for bad in ("", None, 3):
        with pytest.raises(DataError):
            embedding_file_name(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- jobs


def test_caption_jobs_on_the_sample_files(samples_dir):
    pairs = samples_dir / "T_X_pair_data"
    for dataset, modality, key in (("cc3m", "image", "image_name"), ("webvid", "video", "video_name"),
                                   ("audiocap", "audio", "audio_name")):
        generation = json.loads((pairs / dataset / f"{dataset}_generation.json").read_text())
        jobs = caption_jobs(pairs / dataset / f"{dataset}_generation.json", modality)
        assert jobs == [(r[f"{modality}_caption_embeddings"], r[f"{modality}_captions"]) for r in generation]
        raw = json.loads((pairs / dataset / f"{dataset}.json").read_text())
        raw_jobs = caption_jobs(pairs / dataset / f"{dataset}.json", modality)
        assert raw_jobs == [(r[key] + ".npy", r["caption"]) for r in raw]
        assert {n for n, _ in raw_jobs} == {n for n, _ in jobs}  # both name the shipped embed/ files
        assert all((samples_dir / "embed" / embedding_file_name(n)).is_file() for n, _ in jobs)
    with pytest.raises(DataError, match="no video captions"):
        caption_jobs(pairs / "cc3m" / "cc3m_generation.json", "video")


def test_caption_jobs_instruction_lists_and_errors(tmp_path):
    data = [{"audio_captions": ["a", "b"], "audio_caption_embeddings": ["1.wav.npy", "2.wav.npy"]},
            {"image_captions": ["only images here"], "image_caption_embeddings": ["i.jpg.npy"]},
            {"audio_captions": "a", "audio_caption_embeddings": "1.wav.npy"}]
    path = tmp_path / "it.json"
    path.write_text(json.dumps(data))
    assert caption_jobs(path, "audio") == [("1.wav.npy", "a"), ("2.wav.npy", "b")]
    data.append({"audio_captions": ["x", "y"], "audio_caption_embeddings": ["3.wav.npy"]})
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"it\.json sample 3: 2 audio_captions but 1 audio_caption_embeddings"):
        caption_jobs(path, "audio")
    path.write_text("[{")
    with pytest.raises(DataError, match=r"it\.json: not valid JSON"):
        caption_jobs(path, "audio")
    with pytest.raises(ConfigError):
        caption_jobs(path, "smell")


# ---------------------------------------------------------------------------------------------- compute


def test_script_writes_embeddings_once(samples_dir, tiny_models, sd, tmp_path):
    data = samples_dir / "T_X_pair_data" / "cc3m" / "cc3m_generation.json"
    out = tmp_path / "embed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(REPO / "preprocess_embeddings.py"), "--data", str(data),
                           "--modality", "image", "--decoder", str(tiny_models["sd"]), "--output-dir", str(out),
                           "--batch-size", "8"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    records = json.loads(data.read_text())
    expected = sorted(r["image_caption_embeddings"] for r in records)
    assert sorted(p.name for p in out.iterdir()) == expected  # 20 files <image>.jpg.npy, no temporary files
    assert all(name.endswith(".jpg.npy") for name in expected) and len(expected) == 20
    reference = sd.encode_captions([r["image_captions"] for r in records]).numpy()
    for record, ref in zip(records, reference):
        array = np.load(out / record["image_caption_embeddings"], allow_pickle=False)
        assert array.shape == (77, 32) and array.dtype == np.float16
        np.testing.assert_allclose(array.astype(np.float32), ref, rtol=2e-3, atol=2e-3)

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["--data", str(data), "--modality", "image", "--decoder", str(tmp_path / "no_decoder_needed"),
                 "--output-dir", str(out)]) == 0  # nothing is missing: the decoder is not even loaded
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    (out / expected[0]).unlink()
    report = precompute_caption_embeddings(data, "image", sd, out)
    assert (report.total, report.existing, report.written, report.shape) == (20, 19, 1, (77, 32))


def test_batching_does_not_change_embeddings(sd, tmp_path):
    """Each caption is truncated on its own (§12.23): a long caption in the batch changes no other row."""
    long_caption = " ".join(["a very long caption about many colourful shapes"] * 20)
    captions = ["a red circle", long_caption, "a blue square on a white background", "noise"]
    path = tmp_path / "gen.json"
    path.write_text(json.dumps([{"image_captions": captions, "image_caption_embeddings":
                                 [f"x{k}.jpg.npy" for k in range(4)]}]))
    one = precompute_caption_embeddings(path, "image", sd, tmp_path / "b1", batch_size=1)
    four = precompute_caption_embeddings(path, "image", sd, tmp_path / "b4", batch_size=4)
    assert one.written == four.written == 4
    for k in range(4):
        a = np.load(tmp_path / "b1" / f"x{k}.jpg.npy")
        b = np.load(tmp_path / "b4" / f"x{k}.jpg.npy")
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


def test_audio_and_video_shapes_and_raw_pair_files(samples_dir, tiny_models, tmp_path):
    pairs = samples_dir / "T_X_pair_data"
    audio = precompute_caption_embeddings(pairs / "audiocap" / "audiocap_generation.json", "audio",
                                          tiny_models["audioldm"], tmp_path / "a", device="cpu")
    assert audio.written == 20 and audio.shape == (16,)
    array = np.load(tmp_path / "a" / "106158.wav.npy")
    assert array.dtype == np.float16 and abs(float(np.linalg.norm(array.astype(np.float32))) - 1) < 1e-2
    video = precompute_caption_embeddings(pairs / "webvid" / "webvid.json", "video", tiny_models["zeroscope"],
                                          tmp_path / "v", device="cpu")
    raw = json.loads((pairs / "webvid" / "webvid.json").read_text())
    assert video.written == 20 and video.shape == (77, 24)
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == sorted(r["video_name"] + ".npy" for r in raw)
    with pytest.raises(ConfigError, match="cannot embed"):
        precompute_caption_embeddings(pairs / "webvid" / "webvid.json", "video",
                                      load_decoder("image", tiny_models["sd"]), tmp_path / "w")


def test_script_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(bad), "--modality", "image", "--decoder", "x", "--output-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "bad.json: not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(bad), "--modality", "smell", "--decoder", "x", "--output-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"image_captions": "a", "image_caption_embeddings": "a.jpg.npy"}]))
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(good), "--modality", "image", "--decoder", str(tmp_path / "missing_sd"),
              "--output-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "missing_sd" in capsys.readouterr().err
