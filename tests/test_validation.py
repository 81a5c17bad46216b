"""Validation losses during training (data.eval_datasets, train.eval_every, train.keep_best)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.errors import ConfigError
from nextgpt.evaluation.report import plot_loss_curves, read_scalars
from nextgpt.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from nextgpt.toy.synthetic_data import SyntheticCounts, generate
    from nextgpt.toy.synthetic_heldout import HeldoutCounts

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, counts=SyntheticCounts(images=12, videos=2, audios=2, it_image=1, it_video=1, it_audio=1, mosit=1,
                                          llava=1, alpaca=1),
             heldout=HeldoutCounts(images=3, videos=1, audios=2, llava=1, alpaca=1, validation=4))
    return root


def run(tiny_models, data: Path, out: Path, *extra: str) -> Path:
    overrides = tiny_model_overrides(tiny_models) + [
        f"data.root={data}", f"train.output_dir={out}", "train.max_steps=3", "data.datasets=[cc3m_enc]",
        "train.lr=1e-2", *extra]
    return Trainer(load_config(REPO / "configs/tiny/stage_1.yaml", overrides)).run()


def test_validation_changes_nothing_logs_every_component_and_keeps_the_best(tiny_models, data, tmp_path):
    plain = run(tiny_models, data, tmp_path / "plain", "train.eval_every=0")
    out = run(tiny_models, data, tmp_path / "val", "train.eval_every=1", "train.keep_best=total")
    a, b = read_scalars(plain / "logs"), read_scalars(out / "logs")
    # validation updates nothing and draws nothing from the training RNG: the same training losses
    assert [v for _, v in a["loss/total"]] == pytest.approx([v for _, v in b["loss/total"]], rel=1e-6)
    assert not any(tag.startswith("val/") for tag in a)
    assert [s for s, _ in b["val/loss/total"]] == [1, 2, 3] and [s for s, _ in b["val/loss/text"]] == [1, 2, 3]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["validation"]["step"] == 3 and state["validation"]["samples"] == 3 + 1 + 2
    assert state["validation"]["losses"]["total"] == pytest.approx(b["val/loss/total"][-1][1], rel=1e-6)
    step_state = json.loads((out / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert step_state["validation"] == state["validation"]
    values = dict(b["val/loss/total"])
    best_step = min(values, key=values.get)
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["step"] == best_step and best["metric"] == "val/loss/total"
    assert best["value"] == pytest.approx(values[best_step], rel=1e-6)
    assert (out / "best" / "model.safetensors").is_file() and state["best"]["step"] == best_step
    png = plot_loss_curves({"stage 1": out}, tmp_path / "losses.png")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_validation_settings_are_checked():
    with pytest.raises(ConfigError, match="data.eval_datasets is empty"):
        load_config(None, ["train.eval_every=5"])
    with pytest.raises(ConfigError, match="train.keep_best: 'loss'"):
        load_config(None, ["train.eval_every=5", "data.eval_datasets=[cc3m_enc_val]", "train.keep_best=loss"])
    with pytest.raises(ConfigError, match="train.keep_best needs validation"):
        load_config(None, ["train.keep_best=total"])
