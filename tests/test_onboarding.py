"""A new user's path: checks before anything loads, `nextgpt prepare` on real sample data, a YAML catalog file,
plain per-step logs, the resume guard, a checkpoint moved to another place, downloads without network, help."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import tiny_model_overrides

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path = REPO, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    full.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **env)
    return subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------- checks before loading


def test_check_lists_every_missing_asset_with_its_fix_in_under_5_s(tmp_path):
    began = time.perf_counter()
    proc = run([sys.executable, str(REPO / "train.py"), "--config", "configs/stage_1.yaml", "--check"], cwd=tmp_path)
    seconds = time.perf_counter() - began
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr
    assert seconds < 5, f"--check took {seconds:.1f} s"
    assert "model.llm: pretrain_ckpt/vicuna-7b-v1.5 not found" in out and "lmsys/vicuna-7b-v1.5" in out
    assert "model.encoder.checkpoint" in out and "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth" in out
    for name, kind in (("cc3m_enc", "cc3m"), ("webvid_enc", "webvid"), ("audiocap_enc", "audiocap")):
        assert f"data.datasets: {name}: data_path" in out and f"nextgpt prepare pairs --set {kind}" in out
    for hub_id in ("stabilityai/stable-diffusion-2", "cerspense/zeroscope_v2_576w", "cvssp/audioldm"):
        assert hub_id in out  # listed as notes: stage 1 does not load the decoders
    assert "nothing was loaded" in out


def test_a_misspelled_dataset_is_reported_before_any_model_code_runs(tmp_path):
    code = ("import sys; from nextgpt.cli.train import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")
    proc = run([sys.executable, "-c", code, "--config", str(REPO / "configs/tiny/stage_1.yaml"),
                "data.datasets=[cc3m_enx]"], cwd=tmp_path)
    assert proc.returncode == 1
    assert "unknown dataset 'cc3m_enx'; did you mean 'cc3m_enc'?" in proc.stderr
    assert "torch not imported" in proc.stdout


def test_yaml_catalog_file_entries_resolve_against_the_file(tmp_path):
    from nextgpt.config import load_config
    from nextgpt.dataset.catalog import catalog_for, load_catalog_file
    from nextgpt.errors import ConfigError

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "mine.yaml").write_text(yaml.safe_dump({"root": "../pets", "datasets": {
        "my_pets": {"data_path": "pets.json", "image_folder": "images", "description": "pets"},
        "my_pairs": {"format": "legacy_pair", "data_path": "pairs.json", "modality": "image",
                     "task": "comprehension", "media_folder": "images"}}}))
    entries = load_catalog_file(tmp_path / "cat" / "mine.yaml")
    assert entries["my_pets"].params["data_path"] == str(tmp_path / "pets" / "pets.json")
    assert entries["my_pairs"].params["image_folder"] == str(tmp_path / "pets" / "images")
    # named from a config file: relative to that file
    (tmp_path / "cat" / "run.yaml").write_text(f"extends: {REPO / 'configs/tiny/stage_1.yaml'}\n"
                                              "data: {catalog_files: [mine.yaml], datasets: [my_pets]}\n")
    config = load_config(tmp_path / "cat" / "run.yaml")
    assert config.data.catalog_files == [str(tmp_path / "cat" / "mine.yaml")]
    assert "my_pets" in catalog_for(config.data.catalog_files)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"datasets": {"cc3m_enc": {"data_path": "x.json"}}}))
    with pytest.raises(ConfigError, match="'cc3m_enc' is already defined"):
        catalog_for([tmp_path / "bad.yaml"])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"datasets": {"x": {"data_pth": "x.json"}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: dataset 'x': .*data_pth"):
        load_catalog_file(tmp_path / "bad.yaml")


# ------------------------------------------------------------- prepared sample data, trained from a YAML entry


@pytest.fixture(scope="module")
def trained(tiny_models, samples_dir, tmp_path_factory) -> dict[str, Path]:
    """`prepare_data.py` on the shared sample data (CC3M and AudioCaps, 4 pairs each), the AudioCaps files added
    through a YAML catalog file, and a 4-step stage-1 run of `train.py` with stdout to a pipe."""
    tmp = tmp_path_factory.mktemp("onboarding")
    root = tmp / "data"
    pairs = samples_dir / "T_X_pair_data"
    for kind, folder in (("cc3m", "images"), ("audiocap", "audios")):
        proc = run([sys.executable, str(REPO / "prepare_data.py"), "pairs", "--set", kind, "--captions",
                    str(pairs / kind / f"{kind}.json"), "--media", str(pairs / kind / folder), "--root", str(root),
                    "--limit", "4"])
        assert proc.returncode == 0, proc.stderr
        assert "4 written, 0 bad, 0 with missing media" in proc.stdout
    (tmp / "my_datasets.yaml").write_text(yaml.safe_dump({"root": "data/T_X_pair_data/audiocap", "datasets": {
        "my_sounds": {"data_path": "audiocap_comprehension.json", "audio_folder": "audios"}}}))
    machine_a = tmp / "machine_a"
    shutil.copytree(tiny_models["llm"], machine_a / "llm")
    out = tmp / "run"
    args = tiny_model_overrides(tiny_models) + [
        f"model.llm={machine_a / 'llm'}", f"data.root={root}", "data.datasets=[cc3m_enc, my_sounds]",
        f"data.catalog_files=[{tmp / 'my_datasets.yaml'}]", f"train.output_dir={out}", "train.max_steps=4",
        "train.micro_batch_size=2", "train.logging_steps=2", "train.save_steps=100", "train.log_sample_ids=true",
        "train.eval_every=0", "data.eval_datasets=[]"]  # (the tiny config validates on the synthetic held-out split)
    proc = run([sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/tiny/stage_1.yaml"), *args])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"tmp": tmp, "out": out, "args": args, "stdout": proc.stdout}


def test_prepared_sample_data_and_a_yaml_catalog_dataset_train(trained):
    names = {i.split(":")[0] for line in (trained["out"] / "samples-rank-0.jsonl").read_text().splitlines()
             for i in json.loads(line)["ids"]}
    assert names == {"cc3m_enc", "my_sounds"}  # one epoch of the 8 samples: both datasets trained
    assert (trained["out"] / "model.safetensors").is_file()


def test_a_non_terminal_log_has_one_line_per_logging_step(trained):
    lines = [line for line in trained["stdout"].splitlines() if line.startswith("stage 1 step ")]
    assert [line.split(" | ")[0] for line in lines] == ["stage 1 step 2/4", "stage 1 step 4/4"]
    assert all(" | loss " in line and " | lr " in line and "samples/s" in line and "| ETA " in line for line in lines)
    metrics = [json.loads(line) for line in (trained["out"] / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4] and all("loss/total" in m for m in metrics)


def test_the_resume_guard_refuses_a_changed_lr_and_accepts_a_changed_logging_interval(trained):
    config = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/tiny/stage_1.yaml"),
              *trained["args"]]
    saved = (trained["out"] / "config.yaml").read_text()
    refused = run(config + ["train.lr=5e-4"])  # a real run: stops before loading anything
    assert refused.returncode == 1
    assert "train.lr: 0.001 -> 0.0005" in refused.stderr and "train.allow_config_change=true" in refused.stderr
    assert (trained["out"] / "config.yaml").read_text() == saved  # not rewritten
    accepted = run(config + ["train.logging_steps=1", "--check"])
    assert accepted.returncode == 0, accepted.stdout
    allowed = run(config + ["train.lr=5e-4", "train.allow_config_change=true", "--check"])
    assert allowed.returncode == 0, allowed.stdout


def test_a_checkpoint_copied_elsewhere_with_its_llm_moved_predicts_with_a_model_llm_override(trained):
    tmp = trained["tmp"]
    copied = tmp / "copied_checkpoint"
    shutil.copytree(trained["out"], copied, ignore=shutil.ignore_patterns("checkpoints"))
    (tmp / "machine_a").rename(tmp / "machine_b")
    try:
        predict = [sys.executable, str(REPO / "predict.py"), "--model", str(copied), "--prompt", "Describe the image",
                   "--output-dir", str(tmp / "answer"), "--max-new-tokens", "6", "--device", "cpu"]
        missing = run(predict)
        assert missing.returncode == 1
        assert "model.llm" in missing.stderr and "pass model.llm=<its new place>" in missing.stderr
        moved = run(predict + [f"model.llm={tmp / 'machine_b' / 'llm'}"])
        assert moved.returncode == 0, moved.stderr[-3000:]
        assert "text" in json.loads((tmp / "answer" / "result.json").read_text())
    finally:
        (tmp / "machine_b").rename(tmp / "machine_a")


# ------------------------------------------------------------------------------------- downloads, help


def test_download_says_clearly_when_there_is_no_network(tmp_path):
    plan = run([sys.executable, "-m", "nextgpt", "download", "--config", "configs/stage_1.yaml", "--dry-run"],
               cwd=tmp_path)
    assert plan.returncode == 0 and "model.llm: pretrain_ckpt/vicuna-7b-v1.5: would download lmsys/vicuna-7b-v1.5" \
        in plan.stdout
    offline = run([sys.executable, "-m", "nextgpt", "download", "--config", "configs/stage_1.yaml"], cwd=tmp_path)
    assert offline.returncode == 1
    assert "no network access" in offline.stderr and "imagebind_huge.pth" in offline.stderr
    assert not (tmp_path / "pretrain_ckpt").exists() or not any((tmp_path / "pretrain_ckpt").rglob("*.pth"))


def test_every_predict_flag_and_config_key_is_explained(capsys):
    import argparse

    from nextgpt.cli import train
    from nextgpt.cli.predict import build_parser

    for action in build_parser()._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    assert train.main(["--config", str(REPO / "configs/stage_1.yaml"), "--print-config", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "model.llm = pretrain_ckpt/vicuna-7b-v1.5    (str)\n    LLaMA/Vicuna directory" in text
    assert "train.report_to = ['tensorboard']" in text and "generate.image_steps = 50" in text
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "--print-config --explain" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["demo.sh", "test.sh"])
def test_scripts_explain_themselves_without_running(script, tmp_path):
    proc = run(["bash", str(REPO / "scripts" / script), "--help"], timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: bash scripts/{script}")
    assert "===" not in proc.stdout and "[env]" not in proc.stdout  # no demo step, no environment set-up


def test_merge_defaults_to_the_checkpoints_training_dtype(tmp_path, monkeypatch):
    import torch

    from nextgpt.config import load_config
    from nextgpt.model import merge

    (tmp_path / "config.yaml").write_text(load_config(REPO / "configs/tiny/stage_3.yaml",
                                                      ["train.precision=bf16"]).to_yaml())
    seen = {}

    def fake_load(path, dtype, device, overrides):
        seen["dtype"] = dtype
        raise RuntimeError("stop after choosing the dtype")

    monkeypatch.setattr(merge.NextGPTModel, "from_pretrained", fake_load)
    with pytest.raises(RuntimeError, match="stop after"):
        merge.merge_checkpoint(tmp_path, tmp_path / "out")
    assert seen["dtype"] == torch.bfloat16


def test_instruction_sources_convert_with_bad_rows_and_missing_media_reported(tmp_path):
    from nextgpt.dataset.prepare import prepare_alpaca, prepare_llava, prepare_mosit, prepare_t2x

    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "1.jpg").write_bytes(b"x")
    llava = [{"id": "1", "image": "1.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                              {"from": "gpt", "value": "A cat."},
                                                              {"from": "human", "value": "Colour?"},
                                                              {"from": "gpt", "value": "Grey."}]},
             {"id": "2", "image": "2.jpg", "conversations": [{"from": "human", "value": "Hi"},
                                                              {"from": "gpt", "value": "Hello"}]},
             {"id": "3", "conversations": []}]
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    report = prepare_llava(tmp_path / "llava.json", tmp_path / "data", tmp_path / "coco")
    assert (report.read, report.written, len(report.bad_rows), len(report.missing_media)) == (3, 1, 1, 1)
    (record,) = json.loads(report.files[0].read_text())
    assert record["input_image"] == ["1.jpg"] and record["conversations"][0]["value"] == "<image>\nWhat is it?"
    assert "<image>" not in record["conversations"][2]["value"]

    (tmp_path / "alpaca.json").write_text(json.dumps([{"instruction": "Add", "input": "2 and 3", "output": "5"},
                                                      {"input": "no instruction"}]))
    report = prepare_alpaca(tmp_path / "alpaca.json", tmp_path / "data")
    assert report.written == 1 and len(report.bad_rows) == 1
    assert json.loads(report.files[0].read_text())[0]["conversations"][0]["value"] == "Add 2 and 3"

    t2x = [{"conversation": [{"from": "human", "value": "Show me a dog."},
                             {"from": "gpt", "value": "Here it is.", "caption": "a dog on grass"}],
            "source_data": {"image_name": "d.jpg"}}]
    (tmp_path / "image_t2x.json").write_text(json.dumps(t2x))
    (rec,) = json.loads(prepare_t2x("image", tmp_path / "image_t2x.json", tmp_path / "data").files[0].read_text())
    assert rec["image_captions"] == ["a dog on grass"] and rec["image_caption_embeddings"] == ["it_img_0.jpg.npy"]
    assert rec["conversations"][1]["value"] == "Here it is. <image>"

    mosit = [{"image_list": [{"image_name": "mosit_i_0.jpg", "caption": "a red kite"}],
              "conversation": [{"from": "human", "value": "Show me a kite <Image>x.jpg</Image>"},
                               {"from": "gpt", "value": "Sure: <Image>mosit_i_0.jpg</Image> <image>old</image>"}]}]
    (tmp_path / "mosit.json").write_text(json.dumps(mosit))
    (rec,) = json.loads(prepare_mosit(tmp_path / "mosit.json", tmp_path / "data").files[0].read_text())
    assert [t["value"] for t in rec["conversations"]] == ["Show me a kite", "Sure: <image>"]
    assert rec["image_captions"] == ["a red kite"] and rec["image_caption_embeddings"] == ["mosit_i_0.jpg.npy"]
