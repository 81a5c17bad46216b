"""The GPU benchmark script (scripts/bench/gpu_step.py) runs end to end on the CPU with the tiny shape, so that it
is known to work before a GPU is lent: every figure it promises is printed and finite."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_step_benchmark_runs_tiny_on_the_cpu():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "scripts/bench/gpu_step.py", "--shape", "tiny", "--seq", "64",
                           "--micro-batch", "2", "--steps", "2", "--warmup", "1"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("stage 3:") and "samples/s" in line and "tokens/s" in line and "MFU" in line
               and "peak memory" in line for line in lines)
    results = json.loads(lines[-1])
    for key in ("stage3_samples_per_s", "stage3_tokens_per_s", "stage3_peak_memory_gib", "stage1_peak_memory_gib",
                "predict_offload_peak_memory_gib", "model_tflops_per_token_x1e12"):
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert results["stage3_mfu"] == "n/a" and results["device"] == "cpu"  # no MFU without a GPU peak
    assert results["lora"] > 0 and results["frozen_linear"] > 0
