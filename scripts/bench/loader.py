"""Training-data loader throughput (samples/s) per modality, with 0 and 2 DataLoader workers.

    python scripts/bench/loader.py [--samples ../shared/data/nextgpt_samples] [--llm checkpoints/tiny/llm]
                                   [--workers 0 2] [--batch-size 4]

For each dataset it runs one full pass of DataLoader(dataset, batch_sampler=ModalityGroupedBatchSampler,
collate_fn=DataCollator) and prints samples per second (worker start-up included, as a trainer sees it):

* encoder side (`*_enc`): tokenizing + ImageBind preprocessing of the input media;
* decoder side (`*_dec`): caption embeddings + decoder targets at the reference's sizes (image 224x224, video
  16x320x576, audio 1040x64 log-mel).

Data: the synthetic dataset (generated into a temporary folder; online captions, so no embeddings are needed)
and, when present, the reference's sample data (cached embeddings). One sample is loaded first as a warm-up
(imports). Figures taken on a busy machine are only
indicative; run it on a quiet one for numbers worth reporting.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from torch.utils.data import DataLoader  # noqa: E402

from nextgpt.config import DataConfig  # noqa: E402
from nextgpt.dataset import (  # noqa: E402
    DataCollator,
    ModalityGroupedBatchSampler,
    SkipStats,
    build_train_dataset,
)
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens  # noqa: E402
from nextgpt.toy import synthetic_data as synthetic  # noqa: E402
from nextgpt.toy.llm import build_tiny_llm  # noqa: E402

PAIRS = {"image": "cc3m", "video": "webvid", "audio": "audiocap"}


def throughput(root: Path, name: str, modality: str, tok, signal, workers: int, batch_size: int,
               caption_mode: str) -> tuple[float, SkipStats]:
    targets = (modality,) if name.endswith("_dec") else ()
    config = DataConfig(root=str(root), datasets=[name], caption_embeddings=caption_mode)
    dataset, modalities, lengths = build_train_dataset(config, tok, signal, "v1", 2048,
                                                       {"image": 8, "video": 8, "audio": 8}, targets)
    sampler = ModalityGroupedBatchSampler(modalities, lengths, micro_batch_size=batch_size, drop_last=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=DataCollator.from_tokenizer(tok),
                        num_workers=workers)
    dataset[0]  # warm-up in the main process (lazy imports, caches); forked workers inherit it
    stats = SkipStats()
    start = time.perf_counter()
    for batch in loader:
        stats.update(batch)
    seconds = time.perf_counter() - start
    return (stats.samples + stats.skipped) / seconds, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=os.environ.get(
        "NEXTGPT_SAMPLES", str(REPO.parent / "shared/data/nextgpt_samples")))
    parser.add_argument("--llm", default=str(REPO / "checkpoints/tiny/llm"),
                        help="an LLM folder with a tokenizer (built tiny into a temp folder when missing)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
    llm = Path(args.llm)
    if not (llm / "tokenizer_config.json").exists():
        llm = build_tiny_llm(tmp / "llm")
    tok = load_tokenizer(llm)
    signal = register_signal_tokens(tok, None, "new")[0]
    import torch

    print(f"threads: torch={torch.get_num_threads()} cpus={os.cpu_count()} batch={args.batch_size}")
    roots = [("synthetic", synthetic_root(tmp), "online")]
    if Path(args.samples).is_dir():
        roots.append(("samples", Path(args.samples), "cache"))
    for label, root, caption_mode in roots:
        for kind in ("enc", "dec"):
            for modality, pair in PAIRS.items():
                name = f"{pair}_{kind}"
                figures = []
                for workers in args.workers:
                    rate, stats = throughput(root, name, modality, tok, signal, workers, args.batch_size,
                                             caption_mode)
                    figures.append(f"{workers} workers {rate:7.1f} samples/s")
                print(f"{label:9s} {name:13s} {'; '.join(figures)}  ({stats.samples} loaded, "
                      f"{stats.skipped} skipped)")


def synthetic_root(tmp: Path) -> Path:
    root = tmp / "synthetic"
    synthetic.generate(root, seed=0)
    return root


if __name__ == "__main__":
    main()
