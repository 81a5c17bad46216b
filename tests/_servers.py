"""Starting and stopping the serving commands in a subprocess on a free loopback port (test_serve, test_webui)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], ready_url: str, log_path: Path, timeout: float = 300.0,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m <args>` from the repository (with `env` added to the environment), its output in `log_path`;
    returns once `ready_url` answers 200."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost", **(env or {}))
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(args[:1])} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{ready_url} did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
