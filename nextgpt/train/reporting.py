"""Where a run's metrics go (rank 0 only): OUTPUT_DIR/metrics.jsonl always, TensorBoard and / or Weights & Biases
(`train.report_to`), and the console: a progress bar on a terminal, one plain line per logging step otherwise
(SLURM and other batch logs): step, losses, learning rate, samples/s, ETA.

Weights & Biases is optional (`pip install wandb`); `WANDB_MODE=offline` writes the run under OUTPUT_DIR/wandb for a
later `wandb sync`. A resumed run continues the same W&B run (its id is kept in OUTPUT_DIR/wandb-run-id).
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError

METRICS_FILE = "metrics.jsonl"


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunReporter:
    def __init__(self, config: Config, total_steps: int, start_step: int, rank: int = 0,
                 interactive: bool | None = None) -> None:
        self.config = config
        self.output_dir = Path(config.train.output_dir)
        self.total_steps = total_steps
        self.start_step = start_step
        self.active = rank == 0
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.started = time.perf_counter()
        self.tensorboard = self.wandb = self.bar = None
        if not self.active:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._trim_metrics()
        report_to = config.train.report_to
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(self.output_dir / "logs"))
        if "wandb" in report_to:
            self.wandb = self._start_wandb()
        if self.interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=f"stage {config.train.stage}",
                            dynamic_ncols=True)

    def _trim_metrics(self) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their earlier lines."""
        path = self.output_dir / METRICS_FILE
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.start_step]
            path.write_text("".join(f"{line}\n" for line in kept))

    def _start_wandb(self) -> Any:
        try:
            import wandb
        except ImportError:
            raise ConfigError("train.report_to includes wandb, but wandb is not installed (pip install wandb; "
                              "WANDB_MODE=offline needs no account or network)") from None
        id_file = self.output_dir / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        return wandb.init(project="nextgpt", name=f"{self.output_dir.name}", id=run_id, resume="allow",
                          dir=str(self.output_dir), config=self.config.to_dict())

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """One logging step's scalars (names like `loss/total`, `lr/lora`, `throughput/samples_per_s`)."""
        if not self.active:
            return
        self._record(step, scalars)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{scalars['loss/total']:.4f}",
                                 sps=f"{scalars['throughput/samples_per_s']:.1f}")
        else:
            print(self.line(step, scalars), flush=True)

    def log_validation(self, step: int, losses: dict[str, float]) -> None:
        """Validation losses (`val/loss/<component>`), to the same sinks as the training scalars, and one line."""
        if not self.active:
            return
        self._record(step, {f"val/loss/{k}": v for k, v in losses.items()})
        text = f"stage {self.config.train.stage} step {step}/{self.total_steps} | validation | " + \
            " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def _record(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars of one step to metrics.jsonl, TensorBoard and W&B (those configured)."""
        with open(self.output_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def line(self, step: int, scalars: dict[str, float]) -> str:
        """`stage 1 step 20/100 | loss 2.3456 (text 2.3456) | lr 1.00e-03 | 12.3 samples/s | ETA 0:01:23`."""
        parts = [k[5:] for k in scalars if k.startswith("loss/") and k != "loss/total"]
        losses = " ".join(f"{p} {scalars['loss/' + p]:.4f}" for p in parts)
        lrs = sorted({v for k, v in scalars.items() if k.startswith("lr/")})
        done = step - self.start_step
        eta = (time.perf_counter() - self.started) / done * (self.total_steps - step) if done > 0 else 0.0
        return (f"stage {self.config.train.stage} step {step}/{self.total_steps} | loss "
                f"{scalars['loss/total']:.4f}" + (f" ({losses})" if losses else "")
                + f" | lr {'/'.join(f'{v:.2e}' for v in lrs)} | {scalars['throughput/samples_per_s']:.1f} samples/s"
                + f" | ETA {_format_eta(eta)}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
