"""Config loading: inheritance, dotted overrides, strict validation, and the train.py CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nextgpt.config import Config, config_from_dict, load_config, parse_override
from nextgpt.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_are_the_reference_values():
    cfg = Config()
    assert cfg.model.image.signal_tokens == 4 and cfg.model.video.signal_tokens == 24
    assert cfg.model.audio.signal_tokens == 8
    assert (cfg.model.image.num_query_tokens, cfg.model.image.out_features) == (77, 1024)
    assert (cfg.model.audio.num_query_tokens, cfg.model.audio.out_features) == (1, 512)
    assert cfg.model.layer_idx == -1 and cfg.model.input_projector.kind == "group"
    assert cfg.train.losses.image.min_snr_gamma == 5.0 and cfg.train.losses.video.min_snr_gamma is None


def test_extends_chain_merges_deeply_and_lists_replace(tmp_path):
    write(tmp_path / "a.yaml", "model: {llm: A, lora: {r: 4, target_modules: [q_proj, v_proj]}}\n"
                               "train: {lr: 0.5, seed: 1}\n")
    write(tmp_path / "sub/b.yaml", "extends: ../a.yaml\nmodel: {lora: {r: 16, target_modules: [o_proj]}}\n")
    write(tmp_path / "c.yaml", "extends: [sub/b.yaml]\ntrain: {seed: 7}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.model.llm == "A"
    assert cfg.model.lora.r == 16 and cfg.model.lora.target_modules == ["o_proj"]
    assert cfg.model.lora.alpha == 256  # untouched default survives
    assert cfg.train.lr == 0.5 and cfg.train.seed == 7


def test_overrides_parse_bools_numbers_lists_and_null(tmp_path):
    path = write(tmp_path / "c.yaml", "train: {lr: 0.1}\n")
    cfg = load_config(path, ["train.lr=1e-4", "data.strict=true", "train.max_steps=12",
                             "model.lora.target_modules=[q_proj, k_proj]", "train.init_from=null",
                             "model.encoder.checkpoint=/x/y.pth", "train.zero_stage=3"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.strict is True and cfg.train.max_steps == 12
    assert cfg.model.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.train.init_from is None and cfg.model.encoder.checkpoint == "/x/y.pth"
    assert cfg.train.zero_stage == 3
    assert parse_override("a.b=x=y") == ("a.b", "x=y")


@pytest.mark.parametrize("override, message", [
    ("no_such_section.x=1", "unknown key 'no_such_section'"),
    ("train.lrr=1", "did you mean train.lr?"),
    ("model.encoder.outptu=pooled", "did you mean model.encoder.output?"),
    ("train.lr=abc", "train.lr: expected float"),
    ("train.seed=1.5", "train.seed: expected int"),
    ("data.strict=3", "data.strict: expected bool"),
    ("train.stage=4", "train.stage: 4 is above the maximum 3"),
    ("train.warmup_ratio=-0.1", "below the minimum"),
    ("train.precision=fp8", "'fp8' is not one of"),
    ("model.template=v2", "model.template: 'v2' is not one of"),
    ("model.lora.target_modules=q_proj", "expected list of str"),
    ("model.image=3", "expected a mapping"),
    ("train.lr", "not of the form section.key=value"),
])
def test_each_validation_error_names_the_key(tmp_path, override, message):
    path = write(tmp_path / "c.yaml", "train: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        load_config(path, [override])


def test_errors_in_files_name_the_file(tmp_path):
    base = write(tmp_path / "base.yaml", "train: {lr: fast}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\n")
    with pytest.raises(ConfigError, match=rf"{base}: train.lr: expected float"):
        load_config(child)
    bad_key = write(tmp_path / "bad.yaml", "extends: base.yaml\ntrain: {lr: 1, epoch: 2}\n")
    with pytest.raises(ConfigError, match=rf"{bad_key}: unknown key 'train.epoch'; did you mean train.epochs"):
        load_config(bad_key)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    write(tmp_path / "loop_a.yaml", "extends: loop_b.yaml\n")
    write(tmp_path / "loop_b.yaml", "extends: loop_a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop_a.yaml")
    broken = write(tmp_path / "broken.yaml", "train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config(REPO / "configs/tiny/stage_1.yaml", ["train.lr=0.25"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


@pytest.mark.parametrize("name", sorted(p.relative_to(REPO / "configs").as_posix()
                                        for p in (REPO / "configs").rglob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    load_config(REPO / "configs" / name)


def test_train_py_print_config_and_unknown_key():
    cmd = [sys.executable, str(REPO / "train.py"), "--config", "configs/tiny/stage_1.yaml", "--print-config"]
    ok = subprocess.run(cmd + ["train.lr=0.000123"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["train"]["lr"] == pytest.approx(0.000123)
    bad = subprocess.run(cmd + ["no_such_section.x=1"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "no_such_section" in bad.stderr and "Traceback" not in bad.stderr
