"""evaluate.py on a tiny stage-3 checkpoint and the synthetic held-out split: every task, resume after a kill,
two processes (gloo) against one, bad manifests, converters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_stage3
from nextgpt.errors import DataError
from nextgpt.evaluation import EvalOptions, TASKS, evaluate, load_manifest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    """A tiny stage-3 checkpoint, a small synthetic dataset with its held-out split, tiny feature models."""
    from nextgpt.toy.feature_models import build_tiny_feature_models
    from nextgpt.toy.synthetic_data import SyntheticCounts, generate
    from nextgpt.toy.synthetic_heldout import HeldoutCounts

    root = tmp_path_factory.mktemp("evaluation")
    model = save_tiny_stage3(tiny_models, root / "stage_3", lora_b_std=0.02, signal_rows_std=0.02)
    counts = SyntheticCounts(images=2, videos=1, audios=1, it_image=1, it_video=1, it_audio=1, mosit=1, llava=1,
                             alpaca=1)
    generate(root / "data", seed=0, counts=counts, heldout=HeldoutCounts(images=3, videos=3, audios=3, llava=3,
                                                                         alpaca=1))
    features = build_tiny_feature_models(root / "features")
    feature_models = {"fid": str(features["clip"]), "clip_score": str(features["clip"]),
                      "clipsim": str(features["clip"]), "fad": str(features["clap"])}
    return {"model": model, "eval": root / "data" / "heldout" / "eval", "features": feature_models, "root": root}


FAST = dict(steps=2)
NEW_TOKENS = {None: 6, "image": 10, "video": 50, "audio": 18}  # room for the forced span (7 / 47 / 15 tokens)


def test_every_task_on_the_heldout_split(setup, tmp_path):
    from nextgpt.generation import NextGPTGenerator

    generator = NextGPTGenerator.from_pretrained(setup["model"])  # one model for the eight tasks
    for name, task in TASKS.items():
        options = EvalOptions(limit=2, feature_models=setup["features"], max_new_tokens=NEW_TOKENS[task.output],
                              **FAST)
        result = evaluate(setup["model"], name, setup["eval"] / f"{name}.json", tmp_path / name, options,
                          generator=generator)
        assert set(result["metrics"]) == set(task.metrics), name
        assert all(v is None or np.isfinite(v) for v in result["metrics"].values()), (name, result["metrics"])
        saved = json.loads((tmp_path / name / "metrics.json").read_text())
        assert saved["metrics"] == result["metrics"] and saved["samples"] == 2 and saved["dataset"] == "synthetic"
        assert saved["setting"]["seed"] == "0 + sample index"
        assert saved["setting"]["max_new_tokens"] == NEW_TOKENS[task.output]
        lines = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        assert [json.loads(x)["index"] for x in lines] == [0, 1]
        report = (tmp_path / name / "report.md").read_text()
        assert "| task | data | metric | ours | paper |" in report and "not comparable" in report
        if task.output is not None:
            assert saved["setting"]["steps"] == 2 and saved["setting"]["forced_output"] == task.output
            for line in lines:
                assert (tmp_path / name / json.loads(line)["file"]).is_file()
            for fm in saved["feature_models"].values():
                assert fm["toy"] and "tiny RANDOM" in fm["note"]
            assert "(tiny random)" in report


def run_evaluate(args: list[str], env_extra: dict | None = None, kill_after: int | None = None,
                 launcher: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    if launcher:
        cmd = ["bash", "scripts/evaluate.sh", *args]
    elif kill_after is not None:  # SIGKILL itself right after the kill_after-th finished sample
        script = textwrap.dedent(f"""
            import os, signal, sys
            from nextgpt.evaluation import runner
            append, done = runner._append, []
            def killing(part, record):
                append(part, record)
                done.append(record)
                if len(done) == {kill_after}:
                    os.kill(os.getpid(), signal.SIGKILL)
            runner._append = killing
            from nextgpt.cli.evaluate import main
            sys.exit(main(sys.argv[1:]))
        """)
        cmd = [sys.executable, "-c", script, *args]
    else:
        cmd = [sys.executable, "evaluate.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def cli_args(setup, task: str, out: Path, limit: int = 3) -> list[str]:
    args = ["--model", str(setup["model"]), "--task", task, "--data", str(setup["eval"] / f"{task}.json"),
            "--output-dir", str(out), "--limit", str(limit), "--max-new-tokens", "10", "--steps", "2"]
    for metric, path in setup["features"].items():
        args += ["--feature-model", f"{metric}={path}"]
    return args


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def test_a_killed_run_resumes_without_redoing_finished_samples(setup, tmp_path):
    out = tmp_path / "t2i"
    killed = run_evaluate(cli_args(setup, "t2i", out), kill_after=2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    part = (out / "parts" / "rank-0-of-1.jsonl").read_text().splitlines()
    assert len(part) == 2 and not (out / "metrics.json").exists()
    first = {json.loads(x)["id"]: x for x in part}
    stamps = {i: (out / json.loads(x)["file"]).stat().st_mtime_ns for i, x in first.items()}
    done = run_evaluate(cli_args(setup, "t2i", out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming, 2 of 3 samples already done" in done.stderr
    result = json.loads((out / "metrics.json").read_text())
    assert result["resumed"] == 2 and result["generated_now"] == 1
    lines = (out / "parts" / "rank-0-of-1.jsonl").read_text().splitlines()
    assert lines[:2] == part and len(lines) == 3  # the two finished samples were not generated again
    assert {i: (out / json.loads(x)["file"]).stat().st_mtime_ns for i, x in first.items()} == stamps
    assert [r["index"] for r in records(out)] == [0, 1, 2]


def test_two_processes_give_the_outputs_of_one(setup, tmp_path):
    from PIL import Image

    one = run_evaluate(cli_args(setup, "t2i", tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_evaluate(cli_args(setup, "t2i", tmp_path / "two"), {"NUM_GPUS": "2", "MASTER_PORT": "29617"},
                       launcher=True)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    parts = sorted(p.name for p in (tmp_path / "two" / "parts").iterdir())
    assert parts == ["rank-0-of-2.jsonl", "rank-1-of-2.jsonl"]
    a, b = records(tmp_path / "one"), records(tmp_path / "two")
    assert [(r["id"], r["text"], r["file"]) for r in a] == [(r["id"], r["text"], r["file"]) for r in b]
    for r in a:
        x = np.asarray(Image.open(tmp_path / "one" / r["file"]), dtype=np.int16)
        y = np.asarray(Image.open(tmp_path / "two" / r["file"]), dtype=np.int16)
        # same per-sample seeds and thread count; float order may still differ between processes: 2/255
        assert np.abs(x - y).max() <= 2, r["id"]
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert mb["world_size"] == 2
    for key in ma:
        assert mb["metrics"][key] == pytest.approx(ma[key], rel=1e-2, abs=1e-2), key


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_manifests_name_the_sample_and_field(setup, tmp_path):
    samples = json.loads((setup["eval"] / "image_caption.json").read_text())
    for sample in samples:
        sample["image"] = str((setup["eval"] / sample["image"]).resolve())

    def write(data) -> Path:
        path = tmp_path / "m.json"
        path.write_text(json.dumps(data))
        return path

    bad = [dict(s) for s in samples]
    bad[1]["image"] = "/nowhere/x.jpg"
    with pytest.raises(DataError, match=r"sample 'val_image_0002' \(#1\): field 'image': file not found: /nowhere"):
        load_manifest(write(bad), "image_caption")
    bad = [dict(s) for s in samples]
    del bad[2]["references"]
    with pytest.raises(DataError, match=r"sample 'val_image_0003' \(#2\): field 'references' is missing"):
        load_manifest(write(bad), "image_caption")
    bad = [dict(s) for s in samples]
    bad[0]["references"] = []
    with pytest.raises(DataError, match=r"sample 'val_image_0001' \(#0\): field 'references'"):
        load_manifest(write(bad), "image_caption")
    bad = [dict(s) for s in samples]
    bad[0]["task"] = "captioning"
    with pytest.raises(DataError, match=r"sample 'val_image_0001' \(#0\): field 'task' is 'captioning'.*unknown task"):
        load_manifest(write(bad), "image_caption")
    with pytest.raises(DataError, match=r"sample 'val_image_0001' \(#0\): field 'question' is missing"):
        load_manifest(write(samples), "vqa")
    out = run_evaluate(["--model", str(setup["model"]), "--task", "captioning", "--data", str(write(samples)),
                        "--output-dir", str(tmp_path / "o")])
    assert out.returncode == 2 and "unknown task 'captioning'" in out.stderr and "image_caption" in out.stderr
    bad = [dict(s) for s in samples]
    bad[1]["image"] = "/nowhere/x.jpg"
    out = run_evaluate(["--model", str(setup["model"]), "--task", "image_caption", "--data", str(write(bad)),
                        "--output-dir", str(tmp_path / "o")])
    assert out.returncode == 1 and "sample 'val_image_0002' (#1): field 'image': file not found" in out.stderr


# ------------------------------------------------------------------------------------------------ converters


def test_converters_read_the_public_annotation_formats(tmp_path):
    from nextgpt.evaluation.converters import convert

    media = tmp_path / "media"
    coco = {"images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "split": "test", "cocoid": 391895,
         "sentences": [{"raw": "A man riding a moped."}, {"raw": "A person on a motorbike."}]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "split": "train", "cocoid": 9,
         "sentences": [{"raw": "Food."}]}]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(coco))
    out = convert("coco_karpathy", tmp_path / "dataset_coco.json", media, tmp_path / "m" / "coco.json")
    assert out == [{"id": "391895", "dataset": "coco", "task": "image_caption",
                    "image": "../media/val2014/COCO_val2014_000000391895.jpg",
                    "references": ["A man riding a moped.", "A person on a motorbike."]}]
    t2i = convert("coco_karpathy", tmp_path / "dataset_coco.json", media, tmp_path / "m" / "t2i.json", task="t2i")
    assert t2i[0]["caption"] == "A man riding a moped." and t2i[0]["task"] == "t2i" and "image" in t2i[0]
    questions = {"questions": [{"image_id": 42, "question": "What colour?", "question_id": 420}]}
    answers = {"annotations": [{"question_id": 420, "image_id": 42,
                                "answers": [{"answer": "red", "answer_id": i + 1} for i in range(10)]}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(answers))
    vqa = convert("vqav2", tmp_path / "a.json", media, tmp_path / "vqa.json", questions=str(tmp_path / "q.json"))
    assert vqa[0]["image"].endswith("COCO_val2014_000000000042.jpg") and vqa[0]["answers"] == ["red"] * 10
    msrvtt = {"videos": [{"video_id": "video7010", "split": "test"}, {"video_id": "video1", "split": "train"}],
              "sentences": [{"video_id": "video7010", "caption": "a man is talking"},
                            {"video_id": "video1", "caption": "x"}, {"video_id": "video7010", "caption": "a talk"}]}
    (tmp_path / "msrvtt.json").write_text(json.dumps(msrvtt))
    v = convert("msrvtt", tmp_path / "msrvtt.json", media, tmp_path / "v.json")
    assert [(s["id"], s["references"]) for s in v] == [("video7010", ["a man is talking", "a talk"])]
    (tmp_path / "test_qa.json").write_text(json.dumps([{"answer": "dog", "id": 7, "question": "what runs?",
                                                        "video_id": 1201}]))
    (tmp_path / "map.txt").write_text("-4wsuPCjDBc_5_15 vid1201\n")
    qa = convert("msvd_qa", tmp_path / "test_qa.json", media, tmp_path / "qa.json", mapping=str(tmp_path / "map.txt"))
    assert qa[0]["video"].endswith("-4wsuPCjDBc_5_15.avi") and qa[0]["answers"] == ["dog"]
    (tmp_path / "test.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,30,A dog barks\n"
                                       "2,abc,30,Barking\n3,xyz,0,Rain falls\n")
    ac = convert("audiocaps", tmp_path / "test.csv", media, tmp_path / "ac.json")
    assert [(s["id"], s["references"]) for s in ac] == [("abc", ["A dog barks", "Barking"]), ("xyz", ["Rain falls"])]
    nocaps = {"images": [{"id": 0, "file_name": "0013ea2087020901.jpg"}],
              "annotations": [{"image_id": 0, "caption": "a cat", "id": 1}]}
    (tmp_path / "nocaps.json").write_text(json.dumps(nocaps))
    assert convert("nocaps", tmp_path / "nocaps.json", media, tmp_path / "n.json")[0]["references"] == ["a cat"]
    with pytest.raises(DataError, match="expected a JSON object with 'images'"):
        convert("coco_karpathy", tmp_path / "test_qa.json", media, tmp_path / "x.json")
