"""The DeepSpeed trainer on the CPU: stage chaining, data parallelism, ZeRO-3, exact resume, launch scripts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.toy.demo import precompute_catalog_embeddings, stage_losses
from nextgpt.model.modeling import NextGPTModel, build_model
from nextgpt.train import checkpoint as ckpt
from nextgpt.train.trainer import Trainer, seed_everything

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_data(tiny_models, tmp_path_factory) -> Path:
    """The synthetic dataset with every caption embedding, written once for this module."""
    from nextgpt.toy.synthetic_data import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0)
    decoders = {"image": tiny_models["sd"], "video": tiny_models["zeroscope"], "audio": tiny_models["audioldm"]}
    precompute_catalog_embeddings(root, decoders)
    return root


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child run: without the process-group variables of this (pytest) process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(extra)
    return env


def overrides(tiny_models, data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_model_overrides(tiny_models) + [f"data.root={data}", f"train.output_dir={out}", *extra]


def run_stage(stage: int, args: list[str]) -> Path:
    config = load_config(REPO / f"configs/tiny/stage_{stage}.yaml", args)
    return Trainer(config).run()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def groups_of(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        group = "signal_rows" if key.startswith("signal_rows") else ".".join(key.split(".")[:2]) \
            if key.startswith("output_projectors") else "input_projector"
        out.setdefault(group, {})[key] = value
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- three stages

DATASET_MODALITY = {"cc3m_dec": "image", "webvid_dec": "video", "audiocap_dec": "audio", "image_instruction": "image"}


def trained_modalities(run: Path) -> set[str]:
    """Output modalities of the samples a run trained on (from its sample log)."""
    names = {i.split(":")[0] for line in (run / "samples-rank-0.jsonl").read_text().splitlines()
             for i in json.loads(line)["ids"]}
    return {DATASET_MODALITY[n] for n in names if n in DATASET_MODALITY}


def test_three_stages_chain_and_each_changes_exactly_its_preset(tiny_models, demo_data, tmp_path):
    steps = ["train.max_steps=3", "train.save_steps=100", "train.micro_batch_size=2", "train.log_sample_ids=true"]
    s1 = run_stage(1, overrides(tiny_models, demo_data, tmp_path / "s1", *steps, "data.datasets=[cc3m_enc]"))
    s2 = run_stage(2, overrides(tiny_models, demo_data, tmp_path / "s2", *steps, f"train.init_from={s1}"))
    s3 = run_stage(3, overrides(tiny_models, demo_data, tmp_path / "s3", *steps, f"train.init_from={s2}",
                                "data.datasets=[image_instruction, llava_instruction]"))
    config = load_config(REPO / "configs/tiny/stage_1.yaml", overrides(tiny_models, demo_data, tmp_path / "x"))
    seed_everything(config.train.seed)  # what the trainer does before building the model
    init = groups_of(build_model(config.model).trainable_state_dict())
    w1, w2, w3 = (groups_of(weights(p)) for p in (s1, s2, s3))

    # stage 1: the input projector only
    assert not same(w1["input_projector"], init["input_projector"])
    assert [g for g in init if g != "input_projector" and not same(w1[g], init[g])] == []
    # stage 2 starts from stage 1 and trains the output projectors (of the modalities its batches held) and
    # the signal rows
    assert same(w2["input_projector"], w1["input_projector"])
    seen = trained_modalities(s2)
    assert seen and all(same(w2[f"output_projectors.{m}"], w1[f"output_projectors.{m}"]) == (m not in seen)
                        for m in ("image", "video", "audio"))
    assert not same(w2["signal_rows"], w1["signal_rows"])
    # stage 3: LoRA, the input projector, the output projectors, the signal rows
    assert not same(w3["input_projector"], w2["input_projector"])
    assert same(w3["output_projectors.image"], w2["output_projectors.image"]) == (
        "image" not in trained_modalities(s3))
    assert not same(w3["signal_rows"], w2["signal_rows"])
    adapter = load_file(str(s3 / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    assert not (s1 / "adapter").exists() and not (s2 / "adapter").exists()
    # every stage leaves a resumable checkpoint and a TensorBoard log with its loss components
    for run, tags in ((s1, {"loss/text"}), (s2, {f"loss/{m}_{k}" for m in seen for k in ("caption", "denoise")}),
                      (s3, {"loss/text"})):
        assert ckpt.latest_checkpoint(run).name == "step-000003"
        assert tags <= set(stage_losses(run))
    loaded = NextGPTModel.from_pretrained(s3)
    assert loaded.has_lora


# ------------------------------------------------------------------------------------- multi-process


def test_gradient_checkpointing_is_on_in_every_llm_layer_and_changes_no_loss(tiny_models, demo_data, tmp_path):
    import warnings

    losses = {}
    for on in (False, True):
        args = overrides(tiny_models, demo_data, tmp_path / str(on), "train.init_from=null", "train.micro_batch_size=2",
                         f"train.gradient_checkpointing={str(on).lower()}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = Trainer(load_config(REPO / "configs/tiny/stage_3.yaml", args))
        # no deprecated call of ours, nor peft's read of `is_gradient_checkpointing` when it wraps the LLM
        assert not [str(w.message) for w in caught if "checkpointing" in str(w.message)]
        layers = [m for m in trainer.model.base_llm.modules() if hasattr(m, "gradient_checkpointing")]
        assert layers and all(m.gradient_checkpointing is on for m in layers)
        losses[on] = trainer.train_step([next(trainer._micro_batches())]).losses
    assert losses[True].keys() == losses[False].keys() and "text" in losses[True]
    for key in losses[False]:
        assert losses[True][key] == pytest.approx(losses[False][key], rel=1e-5), key


def launch(script: str, nproc: int, args: list[str], port: int) -> None:
    env = subprocess_env(NUM_GPUS=str(nproc), MASTER_PORT=str(port), CONFIG="configs/tiny/stage_1.yaml")
    proc = subprocess.run(["bash", f"scripts/{script}", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def scalars(run: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_two_process_zero2_matches_one_process_at_equal_global_batch(tiny_models, demo_data, tmp_path):
    # a deterministic stage (linear input projector: no Gumbel noise) so that only the data split differs
    common = ["train.max_steps=3", "train.save_steps=100", "data.datasets=[cc3m_enc]",
              "model.input_projector.kind=linear", "train.lr=1e-2"]
    one = overrides(tiny_models, demo_data, tmp_path / "one", *common, "train.micro_batch_size=4")
    two = overrides(tiny_models, demo_data, tmp_path / "two", *common, "train.micro_batch_size=2")
    launch("pretrain_enc.sh", 1, one, 29501)
    launch("pretrain_enc.sh", 2, two, 29502)
    a, b = scalars(tmp_path / "one", "loss/total"), scalars(tmp_path / "two", "loss/total")
    assert len(a) == len(b) == 3
    # tolerance: float32 reductions in another order (2 ranks, gloo all-reduce) -> relative 1e-5
    assert a == pytest.approx(b, rel=1e-5)
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- ZeRO-3


def test_zero3_save_resume_and_load(tiny_models, demo_data, tmp_path):
    args = overrides(tiny_models, demo_data, tmp_path / "z3", "train.init_from=null", "train.zero_stage=3",
                     "train.save_steps=1", "train.save_total_limit=2", "data.datasets=[cc3m_dec]",
                     "train.micro_batch_size=2")
    run_stage(2, args + ["train.max_steps=2"])
    saved = weights(tmp_path / "z3" / "checkpoints" / "step-000002")
    assert saved["output_projectors.image.out_fc.weight"].shape == (32, 64)  # gathered, not a ZeRO-3 shard
    trainer = Trainer(load_config(REPO / "configs/tiny/stage_2.yaml", args + ["train.max_steps=3"]))
    trainer.resume(tmp_path / "z3" / "checkpoints" / "step-000002")
    assert trainer.global_step == 2
    import deepspeed

    params = list(trainer.model.output_projectors.parameters())
    with deepspeed.zero.GatheredParameters(params):
        state = trainer.model.trainable_state_dict()
    for key in saved:
        assert torch.equal(state[key], saved[key]), key
    trainer.run()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "z3")] == ["step-000002", "step-000003"]
    model = NextGPTModel.from_pretrained(tmp_path / "z3")
    final = weights(tmp_path / "z3")
    assert torch.equal(model.trainable_state_dict()["signal_rows.embed"], final["signal_rows.embed"])


# ------------------------------------------------------------------------------------- exact resume

KILLER = textwrap.dedent("""
    import os, signal, sys
    from nextgpt.train import trainer as T

    mode, step = os.environ["KILL_MODE"], int(os.environ["KILL_STEP"])
    if mode == "after_step":  # killed right after finishing step `step` (its checkpoint not yet written)
        log = T.Trainer._log_sample_ids
        def _log(self, batches):
            log(self, batches)
            if self.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
        T.Trainer._log_sample_ids = _log
    elif mode == "during_save":  # killed with the checkpoint of `step` fully written but not yet published
        publish = T.ckpt.publish
        def _publish(tmp, final):
            if final.name == f"step-{step:06d}":
                os.kill(os.getpid(), signal.SIGKILL)
            publish(tmp, final)
        T.ckpt.publish = _publish
    sys.argv = ["train.py", *sys.argv[1:]]
    import runpy
    runpy.run_path("train.py", run_name="__main__")
""")


def train_subprocess(args: list[str], tmp: Path, kill: tuple[str, int] | None = None) -> int:
    script = tmp / "killer.py"
    script.write_text(KILLER)
    env = subprocess_env(KILL_MODE=kill[0] if kill else "none", KILL_STEP=str(kill[1] if kill else 0))
    proc = subprocess.run([sys.executable, str(script), "--config", "configs/tiny/stage_3.yaml", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    if kill is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode


def sample_order(run: Path) -> dict[int, list[str]]:
    """step -> sample ids; a step redone after a resume replaces the lost attempt."""
    order = {}
    for line in (run / "samples-rank-0.jsonl").read_text().splitlines():
        entry = json.loads(line)
        order[entry["step"]] = entry["ids"]
    return order


def test_sigkill_and_resume_end_exactly_where_an_uninterrupted_run_does(tiny_models, demo_data, tmp_path):
    # stage 3: LoRA dropout and Gumbel noise make every step depend on the restored RNG states
    common = ["train.init_from=null", "train.max_steps=8", "train.save_steps=2", "train.save_total_limit=2", "train.log_sample_ids=true",
              "train.micro_batch_size=2", "data.datasets=[image_instruction, llava_instruction]"]
    ref = overrides(tiny_models, demo_data, tmp_path / "ref", *common)
    run = overrides(tiny_models, demo_data, tmp_path / "run", *common)
    train_subprocess(ref, tmp_path)

    # killed while publishing the step-4 checkpoint: step 2 must stay the latest loadable one
    assert train_subprocess(run, tmp_path, ("during_save", 4)) == -signal.SIGKILL
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step-000002"
    assert (tmp_path / "run" / "checkpoints" / ".tmp-step-000004").is_dir()
    NextGPTModel.from_pretrained(tmp_path / "run" / "checkpoints" / "step-000002")  # loadable
    # resumed from step 2, killed again right after step 7 (checkpoint 6 is the last one written)
    assert train_subprocess(run, tmp_path, ("after_step", 7)) == -signal.SIGKILL
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step-000006"
    # resumed from step 6 to the end
    train_subprocess(run, tmp_path)

    assert not (tmp_path / "run" / "checkpoints" / ".tmp-step-000004").exists()
    assert sample_order(tmp_path / "run") == sample_order(tmp_path / "ref")  # nothing lost or repeated
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    la = load_file(str(tmp_path / "ref" / "adapter" / "adapter_model.safetensors"))
    lb = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    for key in la:
        torch.testing.assert_close(lb[key], la[key], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------- launch scripts


def test_dry_run_prints_a_two_node_launch(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# two nodes\nworker-1 slots=8\n\nworker-2 slots=8\n")
    env = subprocess_env(DRY_RUN="1", NUM_GPUS="8", HOSTFILE=str(hosts))
    out = subprocess.run(["bash", "scripts/finetune.sh", "train.lr=1e-4"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0].endswith("deepspeed")
    args = dict(zip(out[1::2], out[2::2]))
    assert args["--hostfile"] == str(hosts) and args["--num_nodes"] == "2" and args["--num_gpus"] == "8"
    assert args["--master_addr"] == "worker-1" and args["--master_port"] == "28460"
    assert out[-4:] == ["train.py", "--config", "configs/stage_3.yaml", "train.lr=1e-4"]
    usage = subprocess.run(["bash", "scripts/pretrain_dec.sh", "--help"], cwd=REPO, capture_output=True, text=True)
    assert usage.returncode == 0 and "HOSTFILE" in usage.stdout and "DRY_RUN" in usage.stdout


def test_the_launcher_counts_gpus_with_its_own_interpreter_without_an_activated_environment():
    """No virtual environment on PATH (the system python3 may lack torch): the plan line names the interpreter of
    the project's DeepSpeed launcher and the GPU count it sees; evaluate.sh starts evaluate.py the same way."""
    launcher = REPO / ".venv" / "bin" / "deepspeed"
    if not launcher.is_file():
        pytest.skip("no .venv/bin/deepspeed in this checkout (scripts/test.sh creates it)")
    interpreter = launcher.read_text().splitlines()[0].removeprefix("#!").split()[0]
    seen = subprocess.run([interpreter, "-c", "import torch; print(torch.cuda.device_count())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "DRY_RUN": "1"}
    run = subprocess.run(["bash", "scripts/finetune.sh"], cwd=REPO, env=bare, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"x {max(int(seen), 1)} process(es); GPUs seen by {interpreter} on this node: {seen};" in run.stderr
    assert run.stdout.split()[0] == str(launcher)
    run = subprocess.run(["bash", "scripts/evaluate.sh", "--model", "m", "--task", "t2i"], cwd=REPO, env=bare,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-5:] == ["evaluate.py", "--model", "m", "--task", "t2i"]
