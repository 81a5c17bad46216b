"""The DeepSpeed training loop of one NExT-GPT stage (spec §5, with its fixes).

An explicit loop on `deepspeed.initialize`: one optimizer step = `gradient_accumulation_steps` micro-batches on
every rank. Losses are normalised over the whole global batch (supervised tokens, signal spans, denoising samples
counted across micro-batches and ranks), so a run gives the same updates whatever its split into ranks and
micro-batches. See `checkpoint.py` for the output layout and resuming.
"""
from __future__ import annotations

import logging
import math
import os
import random
import resource
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..config import Config
from ..constants import MODALITIES
from ..errors import CheckpointError, ConfigError
from ..model.modeling import build_model
from . import checkpoint as ckpt
from .optim import build_optimizer, deepspeed_config, lr_lambda, parameter_groups
from ..stages import apply_stage_preset, stage_preset
from ..dataset.collator import model_inputs

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int, int]:
    """Join (or, for a plain `python train.py`, create) the process group: returns (rank, world, local rank)."""
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" not in os.environ:  # a single process without a launcher: rendezvous through a file, no port
        import tempfile

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
        store = tempfile.NamedTemporaryFile(prefix="nextgpt-rendezvous-", delete=False).name
        os.unlink(store)
        deepspeed.init_distributed(dist_backend=backend, init_method=f"file://{store}", rank=0, world_size=1)
    else:
        deepspeed.init_distributed(dist_backend=backend)
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def configure_logging(rank: int) -> None:
    """INFO on rank 0, warnings elsewhere; no per-file progress bars from transformers / diffusers."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", force=True)
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- batches


def _to_device(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move a batch: float tensors to the training dtype, integer tensors as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype if value.is_floating_point() else None)
    if isinstance(value, dict):
        return {k: _to_device(v, device, dtype) for k, v in value.items()}
    return value


def loss_normalizers(batches: list[dict]) -> list[float]:
    """Local counts the losses of one optimizer step are averaged over, in `NORMALIZER_KEYS` order."""
    text = sum(float((b["labels"][:, 1:] != -100).sum()) for b in batches)
    counts = [text]
    for m in MODALITIES:
        counts.append(sum(float(len(b["caption_embeddings"][m])) if m in b["caption_embeddings"]
                          else float(len(b["captions"].get(m, []))) for b in batches))
        counts.append(sum(float(len(b["targets"][m])) for b in batches if m in b["targets"]))
    return counts


NORMALIZER_KEYS = ["text"] + [f"{m}_{kind}" for m in MODALITIES for kind in ("caption", "denoise")]


@dataclass
class StepStats:
    """What is logged per optimizer step (sums over micro-batches and ranks)."""

    losses: dict[str, float] = field(default_factory=dict)
    samples: float = 0.0
    tokens: float = 0.0
    skipped: float = 0.0
    cache_fallbacks: float = 0.0  # media decoded because the feature cache lacked them


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, config: Config):
        import deepspeed

        from ..dataset import build_train_data

        self.config = config
        t = config.train
        self.rank, self.world, local_rank = init_distributed()
        configure_logging(self.rank)
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        if torch.cuda.is_available():
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True  # the reference's --tf32
            torch.backends.cudnn.allow_tf32 = True
        self.dtype = DTYPES[t.precision]
        self.output_dir = Path(t.output_dir)
        seed_everything(t.seed)

        # model: built in the training dtype, previous stage loaded, LoRA attached, the stage preset applied
        self.model = build_model(config.model, losses=t.losses, dtype=self.dtype, device=self.device)
        if t.init_from:
            self._load_previous_stage(Path(t.init_from))
        preset = stage_preset(t.stage)
        if preset.lora:
            self.model.enable_lora(config.model.lora)
        trainable = apply_stage_preset(self.model, t.stage)
        if t.gradient_checkpointing:
            self.model.base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.trainable_names = sorted(trainable)

        # data
        targets = [m for m in MODALITIES if preset.output_projectors and getattr(t.losses, m).denoise_weight > 0
                   and config.model.output(m).decoder]
        tokens = self.model.media_tokens_per_item()
        data = build_train_data(config, self.model.tokenizer, self.model.signal,
                                media_tokens={m: tokens for m in MODALITIES} if tokens else None, targets=targets,
                                world_size=self.world, rank=self.rank, dtype=self.dtype)
        self.dataset, self.loader, self.sampler = data.dataset, data.loader, data.position
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * self.steps_per_epoch)
        if self.total_steps < 1:
            raise ConfigError("train.epochs / train.max_steps give no optimizer step")

        # optimizer, schedule, DeepSpeed
        ds_config = deepspeed_config(config, self.world)
        optimizer = build_optimizer(parameter_groups(self.model, trainable, config), config, ds_config)
        self.group_names = [g["name"] for g in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, self.total_steps))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        self.global_step = 0
        self.epoch = 0
        self.writer = None

    # ------------------------------------------------------------------------------------------- loading

    def _load_previous_stage(self, path: Path) -> None:
        if not (path / "model.safetensors").is_file():
            raise CheckpointError(f"train.init_from: {path} holds no trained weights (model.safetensors); run the "
                                  f"previous stage first or fix the path")
        self.model.load_checkpoint_weights(path)
        logger.info("initialised from %s", path)

    def resume_point(self) -> Path | None:
        choice = self.config.train.resume
        if choice == "never":
            return None
        if choice == "auto":
            ckpt.remove_incomplete(self.output_dir) if self.rank == 0 else None
            return ckpt.latest_checkpoint(self.output_dir)
        path = Path(choice)
        if not (path / ckpt.TRAINER_STATE).is_file():
            raise CheckpointError(f"train.resume: {path} is not a complete checkpoint (no {ckpt.TRAINER_STATE})")
        return path

    def resume(self, path: Path) -> None:
        """Restore weights, optimizer, schedule, sampler position and every rank's RNG state."""
        load_path, _ = self.engine.load_checkpoint(str(path / "deepspeed"), tag="state", load_module_strict=False)
        if load_path is None:
            raise CheckpointError(f"{path}: DeepSpeed could not load its state")
        state = ckpt.read_json(path / ckpt.TRAINER_STATE)
        self.global_step, self.epoch = state["global_step"], state["epoch"]
        self.sampler.load_state_dict(state["sampler"])
        rng = ckpt.rng_file(path, self.rank)
        if not rng.is_file():
            raise CheckpointError(f"{path}: no RNG state for rank {self.rank} (resumed with another world size?)")
        ckpt.restore_rng_state(ckpt.read_json(rng))
        logger.info("resumed from %s (step %d, epoch %d)", path, self.global_step, self.epoch)

    # ------------------------------------------------------------------------------------------- saving

    def _gathered(self, params: list[torch.nn.Parameter]):
        """Context that gathers ZeRO-3 partitioned parameters (a no-op below stage 3)."""
        import contextlib

        import deepspeed

        if self.engine.zero_optimization_stage() == 3:
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return contextlib.nullcontext()

    def _save_weights(self, outdir: Path) -> None:
        """The trained weights in our format (rank 0 writes; every rank joins the ZeRO-3 gather)."""
        from peft import get_peft_model_state_dict

        model = self.model
        params = [p for ps in model.parameter_groups().values() for p in ps]
        with self._gathered(params):
            state = model.trainable_state_dict()
            adapter = ({k: v.detach().cpu() for k, v in get_peft_model_state_dict(
                model.llm, save_embedding_layers=False).items()}
                       if model.has_lora else None)
        if self.rank == 0:
            model.save_pretrained(outdir, self.config, state=state, adapter_state=adapter)

    def trainer_state(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "epoch": self.epoch, "total_steps": self.total_steps,
                "stage": self.config.train.stage, "world_size": self.world, "sampler": self.sampler.state_dict(),
                "trainable_groups": self.trainable_names}

    def save_checkpoint(self) -> Path:
        """Atomically write a resumable checkpoint of the current step; keep `save_total_limit` of them."""
        final = ckpt.checkpoint_dir(self.output_dir, self.global_step)
        tmp = ckpt.temporary_dir(self.output_dir, self.global_step)
        if self.rank == 0:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        self.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", exclude_frozen_parameters=True)
        ckpt.write_json(ckpt.rng_file(tmp, self.rank), ckpt.capture_rng_state())
        self._save_weights(tmp)
        if self.rank == 0:
            ckpt.write_json(tmp / ckpt.TRAINER_STATE, self.trainer_state())
        _barrier()
        if self.rank == 0:
            ckpt.publish(tmp, final)
            ckpt.rotate(self.output_dir, self.config.train.save_total_limit)
        _barrier()
        logger.info("checkpoint saved: %s", final)
        return final

    def save_final(self) -> None:
        """The stage's result at the root of `output_dir` (what the next stage's `init_from` reads)."""
        tmp = self.output_dir / ".tmp-final"
        if self.rank == 0:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        self._save_weights(tmp)
        if self.rank == 0:
            ckpt.write_json(tmp / ckpt.TRAINER_STATE, dict(self.trainer_state(), finished=True))
            _replace_files(tmp, self.output_dir)
        _barrier()

    # ------------------------------------------------------------------------------------------- loop

    def _micro_batches(self) -> Iterator[dict]:
        """Micro-batches from the current sampler position to the end of the run, epoch after epoch."""
        while True:
            self.sampler.set_epoch(self.epoch)
            self.dataset.set_epoch(self.epoch, self.config.train.seed)
            for batch in self.loader:
                yield batch
            self.epoch += 1

    def _log(self, stats: StepStats, seconds: float) -> dict[str, float]:
        scalars = {f"loss/{k}": v for k, v in stats.losses.items()}
        for name, lr in zip(self.group_names, self.scheduler.get_last_lr()):
            scalars[f"lr/{name}"] = lr
        scalars["throughput/samples_per_s"] = stats.samples / seconds
        scalars["throughput/tokens_per_s"] = stats.tokens / seconds
        scalars["data/skipped"] = stats.skipped
        scalars["data/cache_fallbacks"] = stats.cache_fallbacks
        if torch.cuda.is_available():
            scalars["memory/peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            scalars["memory/peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, self.global_step)
        return scalars

    def _empty_step_loss(self) -> torch.Tensor:
        """A zero loss through the model, for a micro-batch whose samples were all skipped (every rank must
        still take part in the step's collectives)."""
        tok = self.model.tokenizer
        ids = torch.tensor([[tok.bos_token_id, tok.eos_token_id]], device=self.device)
        out = self.engine(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
        return out.loss * 0.0

    def train_step(self, batches: list[dict]) -> StepStats:
        """One optimizer step over this rank's micro-batches."""
        gas = self.config.train.gradient_accumulation_steps
        local = loss_normalizers(batches)
        totals = _all_reduce(local, self.device)
        normalizers = {k: v for k, v in zip(NORMALIZER_KEYS, totals) if v > 0}
        stats = StepStats()
        for batch in batches:
            stats.skipped += batch["num_skipped"]
            stats.cache_fallbacks += batch.get("num_cache_fallbacks", 0)
            if batch["num_samples"] == 0:
                loss = self._empty_step_loss()
            else:
                inputs = _to_device(model_inputs(batch), self.device, self.dtype)
                out = self.engine(**inputs, normalizers=normalizers)
                loss = out.loss
                for key, value in dict(out.losses, total=out.loss).items():
                    stats.losses[key] = stats.losses.get(key, 0.0) + float(value.detach())
                stats.samples += batch["num_samples"]
                stats.tokens += float(out.num_input_tokens)
            # DeepSpeed divides by the accumulation steps and averages over ranks; our losses are already
            # global averages, so undo both.
            self.engine.backward(loss * gas * self.world)
            self.engine.step()
        # every rank must reduce the same keys, also one that saw no component of some kind
        keys = ["total"] + [k for k in NORMALIZER_KEYS if normalizers.get(k)]
        reduced = _all_reduce([stats.losses.get(k, 0.0) for k in keys] + [stats.samples, stats.tokens,
                                                                          stats.skipped, stats.cache_fallbacks],
                              self.device)
        stats.losses = dict(zip(keys, reduced[:len(keys)]))
        stats.samples, stats.tokens, stats.skipped, stats.cache_fallbacks = reduced[len(keys):]
        return stats

    def run(self) -> Path:
        from tqdm.auto import tqdm

        t = self.config.train
        start = self.resume_point()
        if start is not None:
            self.resume(start)
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.output_dir / "logs"))
            logger.info("stage %d: %d optimizer steps (%d per epoch), global batch %d, trainable %s",
                        t.stage, self.total_steps, self.steps_per_epoch, self.sampler.global_batch_size,
                        ", ".join(self.trainable_names))
        self.engine.train()
        bar = tqdm(total=self.total_steps, initial=self.global_step, disable=self.rank != 0,
                   desc=f"stage {t.stage}", dynamic_ncols=True)
        micro = self._micro_batches()
        epoch_skips = 0
        while self.global_step < self.total_steps:
            began = time.perf_counter()
            epoch = self.epoch
            batches = [next(micro) for _ in range(t.gradient_accumulation_steps)]
            if self.epoch != epoch:  # the previous epoch ran out while fetching these batches
                self._epoch_summary(epoch, epoch_skips)
                epoch_skips = 0
            stats = self.train_step(batches)
            self.global_step += 1
            if t.log_sample_ids:
                self._log_sample_ids(batches)
            self.sampler.advance()
            epoch_skips += int(stats.skipped)
            if self.global_step % t.logging_steps == 0 or self.global_step == self.total_steps:
                scalars = self._log(stats, time.perf_counter() - began)
                bar.set_postfix(loss=f"{stats.losses['total']:.4f}",
                                sps=f"{scalars['throughput/samples_per_s']:.1f}")
            bar.update(1)
            if self.global_step % t.save_steps == 0 and self.global_step < self.total_steps:
                self.save_checkpoint()
        bar.close()
        self._epoch_summary(self.epoch, epoch_skips)
        if not (ckpt.checkpoint_dir(self.output_dir, self.global_step) / ckpt.TRAINER_STATE).is_file():
            self.save_checkpoint()  # (a finished run started again already has it)
        self.save_final()
        if self.writer is not None:
            self.writer.close()
        return self.output_dir

    def _log_sample_ids(self, batches: list[dict]) -> None:
        """Which samples this rank trained on at this step (to audit the data order, e.g. across resumes)."""
        import json

        path = self.output_dir / f"samples-rank-{self.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps({"step": self.global_step, "ids": [i for b in batches for i in b["ids"]]}) + "\n")

    def _epoch_summary(self, epoch: int, skipped: int) -> None:
        if self.rank == 0:
            level = logging.WARNING if skipped else logging.INFO
            logger.log(level, "epoch %d: %d sample(s) skipped (missing or undecodable media, or too long)",
                       epoch, skipped)


def _replace_files(src: Path, dst: Path) -> None:
    """Move every file of `src` into `dst`, each with an atomic replace (folders replaced whole)."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dst / item.name
        if item.is_dir():
            if target.exists():
                shutil.rmtree(target)
            os.replace(item, target)
        else:
            os.replace(item, target)
    shutil.rmtree(src, ignore_errors=True)


def train(config: Config) -> Path:
    """Run one stage end to end (what `python train.py --config …` does)."""
    trainer = Trainer(config)
    return trainer.run()
