"""Encoder feature cache: run the frozen encoder once over every input medium of a config's datasets.

    python preprocess_features.py --config configs/stage_1.yaml --output-dir data/features [key=value ...]

Training then reads the features (`data.feature_cache=data/features`) instead of decoding media and running the
encoder. The cache is incremental (entries already there are kept) and resumable after a kill. Under the training
launcher (`bash scripts/preprocess_features.sh`, NUM_GPUS / HOSTFILE) every rank encodes a disjoint part and rank 0
merges the index. Features are stored in the dtype training will use (`train.precision`, or --dtype).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from nextgpt.cli.common import ArgumentParser
from nextgpt.errors import NextGPTError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="preprocess_features.py", description=__doc__)
    parser.add_argument("--config", required=True, help="training YAML config (its model.encoder and data.datasets)")
    parser.add_argument("--output-dir", required=True, help="cache folder (created; an existing cache is extended)")
    parser.add_argument("--batch-size", type=int, default=32, help="media per encoder call (default 32)")
    parser.add_argument("--shard-size", type=int, default=1024, help="features per safetensors shard (default 1024)")
    parser.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: the config's train.precision")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.root=/data/nextgpt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = run(args)
    except NextGPTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if report is not None:
        print(json.dumps(report))
    return 0


def run(args: argparse.Namespace) -> dict | None:
    import torch

    from nextgpt.config import load_config
    from nextgpt.dataset.feature_cache import build_feature_cache, encoder_identity
    from nextgpt.dataset.json_datasets import SampleOptions
    from nextgpt.dataset.mixture import build_dataset
    from nextgpt.dataset.ranks import launcher_ranks
    from nextgpt.dtypes import as_dtype
    from nextgpt.errors import ConfigError
    from nextgpt.model.multimodal_encoder.encoder import build_multimodal_encoder

    config = load_config(args.config, args.overrides)
    ranks = launcher_ranks()
    options = SampleOptions.from_config(config.data, config.model.template)
    items = []
    for name in config.data.datasets:
        dataset = build_dataset(name, config.data, None, None, options)
        if not hasattr(dataset, "input_media") or not dataset.items:
            raise ConfigError(f"dataset {name!r}: the feature cache is made from JSON datasets (WebDataset shard "
                              "entries are not supported)")
        items += dataset.input_media()
    dtype = as_dtype(args.dtype or config.train.precision)
    device = args.device or (f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu")
    enc = config.model.encoder
    encoder = build_multimodal_encoder(enc.checkpoint, enc.arch, enc.output, dtype=dtype, device=device)
    identity = encoder_identity(enc, config.data.image_aspect_ratio, dtype)
    report = build_feature_cache(items, encoder, identity, args.output_dir, config.data.root,
                                 image_aspect_ratio=config.data.image_aspect_ratio, batch_size=args.batch_size,
                                 shard_size=args.shard_size, rank=ranks.rank, world_size=ranks.world_size,
                                 barrier=ranks.barrier)
    ranks.close()
    logger.info("rank %d: %d media items, %d already cached, %d encoded here, %d undecodable", ranks.rank,
                report.total, report.existing, report.written, len(report.failed))
    return {"rank": ranks.rank, "total": report.total, "existing": report.existing, "written": report.written,
            "failed": len(report.failed), "output_dir": str(report.output_dir)}
