"""Encoder feature cache: cached and uncached training agree, foreign caches are refused, a killed run resumes to
the same cache, and two launcher processes (gloo) make the same cache as one."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.dataset.embeddings import precompute_caption_embeddings
from nextgpt.dataset.feature_cache import SHARD_DIR, FeatureCache, build_feature_cache, encoder_identity
from nextgpt.dataset.loader import open_feature_cache
from nextgpt.errors import ConfigError
from nextgpt.toy import synthetic_data as synthetic

REPO = Path(__file__).resolve().parents[1]
STAGE1 = ["cc3m_enc", "webvid_enc", "audiocap_enc"]
COUNTS = synthetic.SyntheticCounts(images=6, videos=3, audios=3, it_image=0, it_video=0, it_audio=0, mosit=0,
                                   llava=0, alpaca=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, seed=5, counts=COUNTS)
    return root


def overrides(tiny_models, data: Path, *extra: str) -> list[str]:
    return tiny_model_overrides(tiny_models) + [f"data.root={data}", f"data.datasets=[{', '.join(STAGE1)}]",
                                                "data.num_workers=0", *extra]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def features_cli(tiny_models, data: Path, out: Path, *, env: dict[str, str] | None = None, prelude: str = ""
                 ) -> subprocess.Popen:
    """`preprocess_features.py` in a child process (`prelude`: Python run before it, e.g. a kill hook)."""
    argv = ["--config", "configs/tiny/stage_1.yaml", "--output-dir", str(out), "--batch-size", "2",
            "--shard-size", "2", *overrides(tiny_models, data)]
    code = textwrap.dedent(prelude) + f"\nfrom nextgpt.cli.features import main\nraise SystemExit(main({argv!r}))\n"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env or child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> int:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"child failed ({proc.returncode}):\n{out[-3000:]}")
    return proc.returncode


def cache_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted((folder / SHARD_DIR).glob("shard-*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def assert_same_cache(a: Path, b: Path) -> None:
    ta, tb = cache_tensors(a), cache_tensors(b)
    assert ta.keys() == tb.keys() and len(ta) == 12
    for key in ta:  # tolerance: the same items may be encoded in batches of other shapes
        torch.testing.assert_close(ta[key], tb[key], rtol=1e-5, atol=1e-5)
    assert (a / "identity.json").read_text() == (b / "identity.json").read_text()
    assert not list((a / SHARD_DIR).glob(".tmp-*"))


@pytest.fixture(scope="module")
def cache(tiny_models, data, tmp_path_factory) -> Path:
    """One uninterrupted one-process cache of the three stage-1 sets."""
    out = tmp_path_factory.mktemp("cache") / "features"
    assert finish(features_cli(tiny_models, data, out)) == 0
    return out


# ------------------------------------------------------------------------------------------------- training


def first_step(tiny_models, data: Path, out: Path, *extra: str):
    from nextgpt.train.trainer import Trainer

    config = load_config(REPO / "configs/tiny/stage_1.yaml", overrides(tiny_models, data, f"train.output_dir={out}",
                                                                        "train.micro_batch_size=2", *extra))
    trainer = Trainer(config)
    batches = [next(trainer._micro_batches())]
    return batches[0], trainer.train_step(batches)


def test_cached_and_uncached_stage1_first_steps_have_equal_losses(tiny_models, data, cache, tmp_path):
    plain_batch, plain = first_step(tiny_models, data, tmp_path / "plain")
    cached_batch, cached = first_step(tiny_models, data, tmp_path / "cached", f"data.feature_cache={cache}")
    assert plain_batch["ids"] == cached_batch["ids"] and plain_batch["media"] and not cached_batch["media"]
    assert cached_batch["features"] and cached.cache_fallbacks == 0
    assert plain.losses.keys() == cached.losses.keys() == {"total", "text"}
    for key in plain.losses:  # tolerance: the encoder ran on batches of another shape when the cache was made
        assert cached.losses[key] == pytest.approx(plain.losses[key], rel=1e-5), key


def test_a_partial_cache_falls_back_per_item_and_counts_it(tiny_models, data, cache, tmp_path):
    """Half the images missing from the cache: their rows are encoded, the others read, in order; same loss."""
    config = load_config(REPO / "configs/tiny/stage_1.yaml", overrides(tiny_models, data))
    identity = encoder_identity(config.model.encoder, "pad", torch.float32)
    partial = tmp_path / "partial"
    (partial / SHARD_DIR).mkdir(parents=True)
    shutil.copy(cache / "identity.json", partial / "identity.json")
    full = cache_tensors(cache)
    images = sorted(k for k in full if "/cc3m/" in k)
    keep = {k: full[k] for k in images[::2]}
    from nextgpt.dataset.feature_cache import INDEX_FILE, _scan_shards, _write_json, _write_shard

    _write_shard(partial, "shard-00000-r0.safetensors", keep, {k: "image" for k in keep})
    _write_json(partial / INDEX_FILE, _scan_shards(partial))
    assert len(FeatureCache(partial, identity, data)) == len(keep) > 0
    extra = ["data.datasets=[cc3m_enc]", "train.micro_batch_size=4"]
    plain_batch, plain = first_step(tiny_models, data, tmp_path / "plain", *extra)
    mixed_batch, mixed = first_step(tiny_models, data, tmp_path / "mixed", f"data.feature_cache={partial}", *extra)
    assert mixed.cache_fallbacks == mixed_batch["num_cache_fallbacks"] > 0
    assert plain_batch["ids"] == mixed_batch["ids"]
    assert mixed.losses["text"] == pytest.approx(plain.losses["text"], rel=1e-5)


def test_a_stale_or_foreign_cache_is_refused(tiny_models, data, cache, tmp_path):
    def opened(*extra: str):
        return open_feature_cache(load_config(REPO / "configs/tiny/stage_1.yaml", overrides(
            tiny_models, data, f"data.feature_cache={cache}", *extra)), torch.float32)

    assert len(opened()) == 12
    with pytest.raises(ConfigError, match="image_aspect_ratio"):
        opened("data.image_aspect_ratio=square")
    with pytest.raises(ConfigError, match="output"):
        opened("model.encoder.output=pooled", "model.input_projector.kind=linear")
    with pytest.raises(ConfigError, match="dtype"):
        open_feature_cache(load_config(REPO / "configs/tiny/stage_1.yaml", overrides(
            tiny_models, data, f"data.feature_cache={cache}")), torch.bfloat16)
    # another checkpoint (same sizes, one weight changed): another encoder
    from safetensors.torch import save_file
    from safetensors import safe_open

    other = tmp_path / "other_imagebind.safetensors"
    with safe_open(str(tiny_models["imagebind"]), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    first = sorted(state)[0]
    state[first] = state[first] + 1.0
    save_file(state, str(other), metadata=metadata)
    with pytest.raises(ConfigError, match="another encoder.*checkpoint_sha256"):
        opened(f"model.encoder.checkpoint={other}")
    # and the writer refuses to extend it with another encoder's features
    config = load_config(REPO / "configs/tiny/stage_1.yaml", overrides(tiny_models, data))
    foreign = encoder_identity(config.model.encoder, "square", torch.float32)
    with pytest.raises(ConfigError, match="refusing"):
        build_feature_cache([], None, foreign, cache, data, image_aspect_ratio="square")


def test_a_killed_run_resumes_to_the_uninterrupted_cache(tiny_models, data, cache, tmp_path):
    out = tmp_path / "killed"
    kill = """
        import os, signal
        import nextgpt.dataset.feature_cache as fc
        real, calls = fc._write_shard, []
        def write(folder, name, tensors, modalities):
            calls.append(name)
            if len(calls) == 3:  # die half-way through writing the third shard
                (folder / fc.SHARD_DIR / ".tmp-half.safetensors").write_bytes(b"partial")
                os.kill(os.getpid(), signal.SIGKILL)
            real(folder, name, tensors, modalities)
        fc._write_shard = write
    """
    assert finish(features_cli(tiny_models, data, out, prelude=kill)) == -signal.SIGKILL
    assert len(cache_tensors(out)) == 4 and not (out / "index.json").exists()
    proc = features_cli(tiny_models, data, out)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text[-3000:]
    assert '"existing": 4' in text and '"written": 8' in text
    assert_same_cache(out, cache)


def test_two_gloo_processes_make_the_one_process_cache(tiny_models, data, cache, tmp_path):
    out = tmp_path / "two"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [features_cli(tiny_models, data, out, env=child_env(
        RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
        for r in (0, 1)]
    texts = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], texts[0][-2000:] + texts[1][-2000:]
    assert {n.name.split("-r")[1] for n in (out / SHARD_DIR).glob("shard-*")} == {"0.safetensors", "1.safetensors"}
    assert_same_cache(out, cache)
    index = FeatureCache(out, encoder_identity(load_config(REPO / "configs/tiny/stage_1.yaml", overrides(
        tiny_models, data)).model.encoder, "pad", torch.float32), data).index
    assert len(index) == 12


def test_caption_embeddings_split_over_ranks_equal_one_process(tiny_models, data, tmp_path):
    json_path = data / "T_X_pair_data/cc3m/cc3m_generation.json"
    one, two = tmp_path / "one", tmp_path / "two"
    report = precompute_caption_embeddings(json_path, "image", tiny_models["sd"], one, device="cpu")
    parts = [precompute_caption_embeddings(json_path, "image", tiny_models["sd"], two, device="cpu", rank=r,
                                           world_size=2) for r in (0, 1)]
    assert [p.written for p in parts] == [3, 3] and report.written == 6
    import numpy as np

    for file in sorted(one.iterdir()):
        np.testing.assert_allclose(np.load(two / file.name), np.load(file), rtol=1e-3, atol=1e-3)  # float16 files
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
