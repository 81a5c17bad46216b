"""The HTTP API's throughput and latency (nextgpt/serve/) for text answers, and its overhead over calling the
generator directly.

Run: ``python scripts/bench/serve.py [--model CHECKPOINT_DIR] [--rounds 4] [--per-round 8] [--max-tokens 32]``.
Without --model, tiny models and an untrained tiny stage-3 checkpoint are built in a temporary folder.
Direct: `NextGPTGenerator.generate` in this process (1 torch thread), one call at a time. API:
`python -m nextgpt.serve` in a subprocess (1 torch thread) on a loopback port, called with httpx at concurrency 1
and 8. Every request is the same greedy text answer of exactly the same tokens (checked), so every run does the
same generation work. On a shared machine the load drifts, so the modes are interleaved: each round alternates
--per-round direct calls with as many API requests at concurrency 1 (one of each in turn, the first of a pair
alternating), then sends as many at concurrency 8. Prints requests/s (requests over the summed wall time of that
mode) and p50 / p95 latency, and the API overhead at concurrency 1 (its p50 latency over the direct p50).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
PROMPT = "Tell me a story."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(name: str, latencies: list[float], wall: float) -> dict:
    row = {"run": name, "requests": len(latencies), "req_s": len(latencies) / wall,
           "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * percentile(latencies, 0.95)}
    print(f"{name:<22} {row['requests']:>4} requests  {row['req_s']:7.2f} req/s  p50 {row['p50_ms']:7.1f} ms  "
          f"p95 {row['p95_ms']:7.1f} ms", flush=True)
    return row


class Direct:
    def __init__(self, ckpt: Path, max_tokens: int):
        from nextgpt.generation import NextGPTGenerator

        torch.set_num_threads(1)
        self.gen = NextGPTGenerator.from_pretrained(ckpt)
        self.max_tokens = max_tokens
        self.tokens = len(self.gen.generate(PROMPT, max_new_tokens=max_tokens).token_ids)  # warm-up

    def one(self) -> float:
        t = time.perf_counter()
        result = self.gen.generate(PROMPT, max_new_tokens=self.max_tokens)
        elapsed = time.perf_counter() - t
        assert len(result.token_ids) == self.tokens
        return elapsed


class Api:
    def __init__(self, url: str, max_tokens: int, tokens: int):
        import httpx

        self.client = httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=8))
        self.body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
        self.tokens = tokens
        self.one()  # connection set-up

    def one(self) -> float:
        t = time.perf_counter()
        r = self.client.post("/v1/chat/completions", json=self.body)
        elapsed = time.perf_counter() - t
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == self.tokens
        return elapsed

    def batch(self, n: int, concurrency: int) -> list[float]:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda _: self.one(), range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (default: build a tiny one)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=8, help="requests of each mode per round")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    args = parser.parse_args()

    from generation import build_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.model) if args.model else build_checkpoint(Path(tmp), "tiny")
        direct = Direct(ckpt, args.max_tokens)
        port = args.port or _free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=str(REPO))
        server = subprocess.Popen([sys.executable, "-m", "nextgpt.serve", "--model", str(ckpt), "--port", str(port),
                                   "--max-queue", "64"], env=env, stderr=subprocess.DEVNULL)
        try:
            _wait(url)
            api = Api(url, args.max_tokens, direct.tokens)
            print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
            single = {"direct (generator)": direct.one, "API, concurrency 1": api.one}
            crowd = "API, concurrency 8"
            latencies = {name: [] for name in [*single, crowd]}
            crowd_wall = 0.0
            for _ in range(args.rounds):
                for i in range(args.per_round):
                    for name in (list(single) if i % 2 == 0 else list(single)[::-1]):
                        latencies[name].append(single[name]())
                started = time.perf_counter()
                latencies[crowd] += api.batch(args.per_round, 8)
                crowd_wall += time.perf_counter() - started
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            server.terminate()
            server.wait(30)
        # one request at a time: a mode's wall time is the sum of its latencies
        walls = {**{name: sum(latencies[name]) for name in single}, crowd: crowd_wall}
        rows = {name: summary(name, latencies[name], walls[name]) for name in latencies}
        d, a = rows["direct (generator)"], rows["API, concurrency 1"]
        print(f"{direct.tokens} tokens per answer; API overhead at concurrency 1 (p50 latency vs direct p50): "
              f"{100 * (a['p50_ms'] / d['p50_ms'] - 1):+.1f} % ({a['p50_ms'] - d['p50_ms']:+.1f} ms)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {url} did not start")


if __name__ == "__main__":
    main()
