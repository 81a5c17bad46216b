"""The DeepSpeed training loop of one NExT-GPT stage (with its fixes; docs/deviations.md).

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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..config import Config
from ..constants import MODALITIES
from ..dataset.collator import model_inputs
from ..dataset.samples import SKIP_REASONS
from ..dtypes import as_dtype
from ..errors import CheckpointError, ConfigError
from ..model.checkpoint_format import replace_files
from ..model.modeling import build_model
from ..preflight import check_resume, format_problems
from ..stages import apply_stage_preset, stage_preset
from . import checkpoint as ckpt
from .batches import NORMALIZER_KEYS, loss_normalizers
from .batches import all_reduce as _all_reduce
from .batches import to_device as _to_device
from .optim import build_optimizer, deepspeed_config, lr_lambda, parameter_groups
from .reporting import RunReporter
from .validation import Validator

logger = logging.getLogger(__name__)



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


@dataclass
class StepStats:
    """What is logged per optimizer step (sums over micro-batches and ranks)."""

    losses: dict[str, float] = field(default_factory=dict)
    samples: float = 0.0
    tokens: float = 0.0
    skipped: float = 0.0
    skipped_by_reason: dict[str, float] = field(default_factory=dict)  # keys: SKIP_REASONS
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
        self.dtype = as_dtype(t.precision)
        self.output_dir = Path(t.output_dir)
        seed_everything(t.seed)

        # model: built in the training dtype, previous stage loaded, LoRA attached, the stage preset applied
        self.model = build_model(config.model, losses=t.losses, dtype=self.dtype, device=self.device)
        if t.init_from:
            self._load_previous_stage(Path(t.init_from))
        preset = stage_preset(t.stage, t.recipe)
        if preset.lora:
            self.model.enable_lora(config.model.lora)
        trainable = apply_stage_preset(self.model, t.stage, t.recipe)
        if t.gradient_checkpointing:
            _enable_activation_checkpointing(self.model.base_llm)
        self.trainable_names = sorted(trainable)

        # data
        targets = [m for m in MODALITIES if preset.output_projectors and getattr(t.losses, m).denoise_weight > 0
                   and config.model.output(m).decoder]
        tokens = self.model.media_tokens_per_item()
        media_tokens = {m: tokens for m in MODALITIES} if tokens else None
        dataset_args = dict(tokenizer=self.model.tokenizer, signal=self.model.signal, template=config.model.template,
                            max_length=config.model.max_length if media_tokens else None,
                            media_tokens=media_tokens, target_modalities=targets, model_config=config.model)
        data = build_train_data(config, dataset_args, world_size=self.world, rank=self.rank, dtype=self.dtype)
        self.dataset, self.loader, self.sampler = data.dataset, data.loader, data.position
        self.validator = Validator(config, dataset_args, self.rank, self.world) if t.eval_every else None
        self.validation: dict[str, Any] | None = None  # the latest validation, written into every checkpoint
        self.best: dict[str, Any] | None = None  # train.keep_best: the best validation so far
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
        self.reporter: RunReporter | None = None

    # ------------------------------------------------------------------------------------------- loading

    def _load_previous_stage(self, path: Path) -> None:
        if not (path / "model.safetensors").is_file():
            raise CheckpointError(f"train.init_from: {path} holds no trained weights (model.safetensors); run the "
                                  f"previous stage first or fix the path")
        self.model.load_checkpoint_weights(path)
        logger.info("initialised from %s", path)

    def resume_point(self) -> Path | None:
        """The checkpoint to resume from (train.resume), after checking it was trained with this config (except
        logging and run-length keys; train.allow_config_change)."""
        choice = self.config.train.resume
        if choice == "never":
            return None
        if choice == "auto":
            ckpt.remove_incomplete(self.output_dir) if self.rank == 0 else None
            path = ckpt.latest_usable_checkpoint(self.output_dir)
        else:
            path = Path(choice)
            if not (path / ckpt.TRAINER_STATE).is_file():
                raise CheckpointError(f"train.resume: {path} is not a complete checkpoint (no {ckpt.TRAINER_STATE})")
            problem = ckpt.checkpoint_problem(path)
            if problem:
                raise CheckpointError(f"train.resume: {path} is damaged: {problem}")
        problems = check_resume(self.config, path) if path is not None else []
        if problems:
            raise ConfigError(format_problems(problems, f"resuming {path}"))
        return path

    def resume(self, path: Path) -> None:
        """Restore weights, optimizer, schedule, sampler position and every rank's RNG state."""
        load_path, _ = self.engine.load_checkpoint(str(path / "deepspeed"), tag="state", load_module_strict=False)
        if load_path is None:
            raise CheckpointError(f"{path}: DeepSpeed could not load its state")
        state = ckpt.read_json(path / ckpt.TRAINER_STATE)
        self.global_step, self.epoch = state["global_step"], state["epoch"]
        self.sampler.load_state_dict(state["sampler"])
        self.validation, self.best = state.get("validation"), state.get("best")
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
                "trainable_groups": self.trainable_names, "validation": self.validation, "best": self.best}

    def save_checkpoint(self) -> Path:
        """Atomically write a resumable checkpoint of the current step; keep `save_total_limit` of them."""
        final = ckpt.checkpoint_dir(self.output_dir, self.global_step)
        tmp = ckpt.temporary_dir(self.output_dir, self.global_step)
        with ckpt.writing(tmp, final, ckpt.latest_checkpoint(self.output_dir)):
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
        with ckpt.writing(tmp, self.output_dir, ckpt.latest_checkpoint(self.output_dir)):
            if self.rank == 0:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            self._save_weights(tmp)
            if self.rank == 0:
                ckpt.write_json(tmp / ckpt.TRAINER_STATE, dict(self.trainer_state(), finished=True))
                replace_files(tmp, self.output_dir)
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

    def _scalars(self, stats: StepStats, seconds: float) -> dict[str, float]:
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
            for _, reason in batch["skipped"]:
                stats.skipped_by_reason[reason] = stats.skipped_by_reason.get(reason, 0.0) + 1
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
        reasons = [stats.skipped_by_reason.get(r, 0.0) for r in SKIP_REASONS]
        reduced = _all_reduce([stats.losses.get(k, 0.0) for k in keys] + [stats.samples, stats.tokens,
                                                                          stats.skipped, stats.cache_fallbacks]
                              + reasons, self.device)
        stats.losses = dict(zip(keys, reduced[:len(keys)]))
        stats.samples, stats.tokens, stats.skipped, stats.cache_fallbacks = reduced[len(keys):len(keys) + 4]
        stats.skipped_by_reason = {r: n for r, n in zip(SKIP_REASONS, reduced[len(keys) + 4:]) if n}
        return stats

    def run(self) -> Path:
        t = self.config.train
        start = self.resume_point()
        if start is not None:
            self.resume(start)
            final = self.output_dir / ckpt.TRAINER_STATE
            if self.global_step >= self.total_steps and final.is_file() and ckpt.read_json(final).get("finished"):
                logger.info("%s: this run has finished (step %d of %d); nothing to train", self.output_dir,
                            self.global_step, self.total_steps)
                return self.output_dir  # (its saved config stays the one it was trained with)
        if self.rank == 0:
            logger.info("stage %d: %d optimizer steps (%d per epoch), global batch %d, trainable %s",
                        t.stage, self.total_steps, self.steps_per_epoch, self.sampler.global_batch_size,
                        ", ".join(self.trainable_names))
            if "embeddings" in self.trainable_names:
                rows, width = self.model.base_llm.get_input_embeddings().weight.shape
                logger.info("the whole input embedding and LM head train (model.train_full_embeddings): "
                            "2 x %d rows x %d", rows, width)
        self.reporter = RunReporter(self.config, self.total_steps, self.global_step, self.rank)
        self.engine.train()
        micro = self._micro_batches()
        epoch_skips: Counter[str] = Counter()
        while self.global_step < self.total_steps:
            began = time.perf_counter()
            epoch = self.epoch
            batches = [next(micro) for _ in range(t.gradient_accumulation_steps)]
            if self.epoch != epoch:  # the previous epoch ran out while fetching these batches
                self._epoch_summary(epoch, epoch_skips)
                epoch_skips = Counter()
            stats = self.train_step(batches)
            self.global_step += 1
            if t.log_sample_ids:
                self._log_sample_ids(batches)
            self.sampler.advance()
            epoch_skips.update({r: int(n) for r, n in stats.skipped_by_reason.items()})
            if self.global_step % t.logging_steps == 0 or self.global_step == self.total_steps:
                self.reporter.log(self.global_step, self._scalars(stats, time.perf_counter() - began))
            self.reporter.advance()
            if t.eval_every and self.global_step % t.eval_every == 0:
                self.validate()
            if self.global_step % t.save_steps == 0 and self.global_step < self.total_steps:
                self.save_checkpoint()
        self._epoch_summary(self.epoch, epoch_skips)
        if t.eval_every and (self.validation or {}).get("step") != self.global_step:
            self.validate()
        if not (ckpt.checkpoint_dir(self.output_dir, self.global_step) / ckpt.TRAINER_STATE).is_file():
            self.save_checkpoint()  # (a finished run started again already has it)
        self.save_final()
        self.reporter.close()
        return self.output_dir

    def validate(self) -> dict[str, float]:
        """Validation losses now (logged as val/loss/*, kept for the checkpoints' trainer_state.json); with
        train.keep_best, a new best is saved to OUTPUT_DIR/best (weights + best.json), atomically."""
        losses = self.validator.run(self)
        self.validation = {"step": self.global_step, "losses": losses, "samples": self.validator.num_samples}
        self.reporter.log_validation(self.global_step, losses)
        key = self.config.train.keep_best
        if key is not None and key in losses and (self.best is None or losses[key] < self.best["value"]):
            self.best = {"step": self.global_step, "metric": f"val/loss/{key}", "value": losses[key]}
            tmp, final = self.output_dir / ".tmp-best", self.output_dir / "best"
            with ckpt.writing(tmp, final, final if final.is_dir() else None):
                if self.rank == 0:
                    import shutil

                    shutil.rmtree(tmp, ignore_errors=True)
                self._save_weights(tmp)
                if self.rank == 0:
                    ckpt.write_json(tmp / "best.json", dict(self.best, validation=self.validation))
                    ckpt.publish(tmp, final)
            _barrier()
        return losses

    def _log_sample_ids(self, batches: list[dict]) -> None:
        """Which samples this rank trained on at this step (to audit the data order, e.g. across resumes)."""
        import json

        path = self.output_dir / f"samples-rank-{self.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps({"step": self.global_step, "ids": [i for b in batches for i in b["ids"]]}) + "\n")

    def _epoch_summary(self, epoch: int, skipped: Counter[str]) -> None:
        if self.rank == 0:
            total = sum(skipped.values())
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))
            logger.log(logging.WARNING if total else logging.INFO, "epoch %d: %d sample(s) skipped%s",
                       epoch, total, f" ({reasons})" if reasons else "")


def train(config: Config) -> Path:
    """Run one stage end to end (what `python train.py --config …` does)."""
    trainer = Trainer(config)
    return trainer.run()


def _enable_activation_checkpointing(llm) -> None:
    """Checkpointed decoder layers, non-reentrant. Recent transformers call it activation checkpointing (the old
    name still works there, with a deprecation warning)."""
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
