"""Precompute caption embeddings with a decoder's own text encoder (logic: nextgpt/dataset/embeddings.py).

    python preprocess_embeddings.py --data data/T_X_pair_data/cc3m/cc3m_generation.json --modality image \
        --decoder pretrain_ckpt/stable-diffusion-2 --output-dir data/embed [--batch-size 128]

Under the training launcher (`bash scripts/preprocess_embeddings.sh`, NUM_GPUS / HOSTFILE) each rank computes
a disjoint part. Writes `<embedding name>.npy` (float16; image/video (77, D), audio (D,)) for every caption of a generation /
instruction JSON or a raw pair file (cc3m.json, webvid.json, audiocap.json) that is not there yet.
"""
from __future__ import annotations

import argparse
import json
import logging

from nextgpt.cli.common import ArgumentParser
from nextgpt.constants import MODALITIES
from nextgpt.errors import NextGPTError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="preprocess_embeddings.py", description=__doc__)
    parser.add_argument("--data", required=True, help="reference-format JSON file")
    parser.add_argument("--modality", required=True, choices=MODALITIES)
    parser.add_argument("--decoder", required=True, help="diffusers pipeline folder (SD / ZeroScope / AudioLDM)")
    parser.add_argument("--output-dir", required=True, help="embedding folder (e.g. data/embed or data/it/embed)")
    parser.add_argument("--batch-size", type=int, default=128, help="captions per text-encoder call (default 128)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: float16 on CUDA, float32 on CPU")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nextgpt.dataset.embeddings import precompute_caption_embeddings
    from nextgpt.dataset.ranks import launcher_ranks

    ranks = launcher_ranks()  # one process, or a disjoint part per rank under the launcher
    device = args.device or (f"cuda:{ranks.local_rank}" if ranks.world_size > 1 and _cuda() else None)
    try:
        report = precompute_caption_embeddings(args.data, args.modality, args.decoder, args.output_dir,
                                               batch_size=args.batch_size, device=device, dtype=args.dtype,
                                               rank=ranks.rank, world_size=ranks.world_size)
    except NextGPTError as err:
        parser.exit(2, f"error: {err}\n")
    ranks.close()
    logger.info("%s", json.dumps({"total": report.total, "written": report.written, "existing": report.existing,
                                  "output_dir": str(report.output_dir),
                                  "shape": list(report.shape) if report.shape else None,
                                  "skipped_rows": [{"row": i, "reason": r} for i, r in report.skipped]}))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
