"""Stage-1 training throughput with and without the encoder feature cache, and the WebDataset loader against the
JSON datasets, measured side by side in one run.

    python scripts/bench/feature_cache.py [--steps 8] [--micro-batch 4] [--huge] [--samples DIR] [--threads 0]

1. The embedded default's data (the synthetic dataset, tiny models): stage-1 samples/s of the real trainer
   (`Trainer.train_step` on the DataLoader's batches, data loading included, 0 workers) over all three stage-1
   sets, then over video batches only (webvid_enc), each without and with `data.feature_cache`.
   `--samples DIR`: the same on real media, the reference repository's samples (DIR holds T_X_pair_data/: CC3M
   JPEGs, WebVid MP4s of about 336x596 and 7-28 s, AudioCaps 10 s WAVs; e.g. ../shared/data/nextgpt_samples).
2. `--huge`: the same on a few images with a random ImageBind-huge (1.2 B parameters; its checkpoint is written
   to a temporary folder first, ~4.8 GB), where the saving is the encoder's forward.
3. One epoch of the DataLoader (no training) over the stage-1 sets as JSON and as WebDataset shards made from them.

One untimed step first in every case; the steps of the two variants alternate (not the huge ones: memory), so a
change in the machine's load hits both. The cache is built once per data set before timing. The data-loading
time of a step is inside the step: `Trainer._micro_batches` loads lazily (0 workers).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

STAGE1 = ["cc3m_enc", "webvid_enc", "audiocap_enc"]


def overrides(paths: dict, data: Path, datasets: list[str], micro: int, out: Path) -> list[str]:
    return [f"model.llm={paths['llm']}", f"model.encoder.checkpoint={paths['imagebind']}",
            f"model.image.decoder={paths['sd']}", f"model.video.decoder={paths['zeroscope']}",
            f"model.audio.decoder={paths['audioldm']}", f"data.root={data}", f"data.datasets=[{', '.join(datasets)}]",
            "data.num_workers=0", f"train.micro_batch_size={micro}", f"train.output_dir={out}"]


def make_cache(args: list[str], out: Path) -> float:
    from nextgpt.cli.features import main

    start = time.perf_counter()
    assert main(["--config", str(REPO / "configs/tiny/stage_1.yaml"), "--output-dir", str(out), *args]) == 0
    return time.perf_counter() - start


def train_rates(variants: list[list[str]], steps: int) -> list[tuple[float, int]]:
    """Samples/s of `steps` stage-1 optimizer steps per variant (config overrides), after one untimed step each;
    and the cache fallbacks seen. The variants' steps alternate, so a change of the machine's load hits all."""
    from nextgpt.config import load_config
    from nextgpt.train.trainer import Trainer

    trainers = [Trainer(load_config(REPO / "configs/tiny/stage_1.yaml", args)) for args in variants]
    streams = [t._micro_batches() for t in trainers]
    for trainer, micro in zip(trainers, streams):
        trainer.train_step([next(micro)])
    seconds, samples, fallbacks = [0.0] * len(trainers), [0] * len(trainers), [0] * len(trainers)
    for _ in range(steps):
        for k, (trainer, micro) in enumerate(zip(trainers, streams)):
            start = time.perf_counter()
            stats = trainer.train_step([next(micro)])
            seconds[k] += time.perf_counter() - start
            samples[k] += stats.samples
            fallbacks[k] += int(stats.cache_fallbacks)
    return [(n / s, f) for n, s, f in zip(samples, seconds, fallbacks)]


def loader_rate(data: Path, datasets: list[str], tok, signal, micro: int) -> float:
    from torch.utils.data import DataLoader

    from nextgpt.config import DataConfig
    from nextgpt.dataset import DataCollator, ModalityGroupedBatchSampler, build_train_dataset
    from nextgpt.dataset.webdataset import ShardStream

    config = DataConfig(root=str(data), datasets=datasets, num_workers=0)
    dataset, modalities, lengths = build_train_dataset(config, tok, signal, "v1", 512, {m: 8 for m in (
        "image", "video", "audio")}, (), micro_batch_size=micro)
    collate = DataCollator.from_tokenizer(tok)
    if isinstance(dataset, ShardStream):
        loader = DataLoader(dataset, batch_size=None, collate_fn=collate)
    else:
        sampler = ModalityGroupedBatchSampler(modalities, lengths, micro, drop_last=True)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    count = 0
    start = time.perf_counter()
    for batch in loader:
        count += batch["num_samples"] + batch["num_skipped"]
    return count / (time.perf_counter() - start)


def cache_versus_decoding(results: dict, prefix: str, paths: dict, data: Path, cache: Path, args,
                          extra: list[str] = ()) -> None:
    """Stage-1 samples/s without and with the cache over all three stage-1 sets, then over video batches only."""
    for label, datasets in (("all stage-1 sets", STAGE1), ("video batches (webvid_enc)", ["webvid_enc"])):
        run = overrides(paths, data, datasets, args.micro_batch, cache.parent / "out") + list(extra)
        (plain, _), (cached, fallbacks) = train_rates([run, run + [f"data.feature_cache={cache}"]], args.steps)
        label = prefix + label
        results[f"{label}: uncached"], results[f"{label}: cached"] = plain, cached
        print(f"stage 1, {label}: {plain:.2f} samples/s uncached, {cached:.2f} cached ({cached / plain:.1f}x; "
              f"{fallbacks} fallbacks)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--huge", action="store_true", help="also the ImageBind-huge-shaped encoder")
    parser.add_argument("--samples", help="also on the real sample media in this folder (holds T_X_pair_data/)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = leave as is)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    from nextgpt.dataset.catalog import CATALOG, register, webdataset_data
    from nextgpt.dataset.shard_writer import write_shards
    from nextgpt.model.language_model import load_tokenizer, register_signal_tokens
    from nextgpt.toy.models import build_tiny_models
    from nextgpt.toy.synthetic_data import SyntheticCounts, generate

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        root = Path(tmp)
        paths = build_tiny_models(root / "tiny")
        data = root / "data"
        generate(data, seed=0)
        print(f"threads: torch={torch.get_num_threads()}; micro batch {args.micro_batch}, {args.steps} timed steps",
              flush=True)
        base = overrides(paths, data, STAGE1, args.micro_batch, root / "out")
        seconds = make_cache(base, root / "features")
        print(f"cache of the demo data's 280 stage-1 media: {seconds:.1f} s", flush=True)
        cache_versus_decoding(results, "", paths, data, root / "features", args)
        if args.samples:
            samples = Path(args.samples).resolve()
            no_validation = ["train.eval_every=0", "data.eval_datasets=[]"]  # the samples have no held-out split
            seconds = make_cache(overrides(paths, samples, STAGE1, args.micro_batch, root / "out") + no_validation,
                                 root / "features_samples")
            print(f"cache of the sample media: {seconds:.1f} s", flush=True)
            cache_versus_decoding(results, "sample media, ", paths, samples, root / "features_samples", args,
                                  no_validation)
        if args.huge:
            from nextgpt.model.multimodal_encoder.encoder import build_multimodal_encoder, save_imagebind

            few = root / "few"
            generate(few, seed=1, counts=SyntheticCounts(images=6, videos=0, audios=0, it_image=0, it_video=0,
                                                         it_audio=0, mosit=0, llava=0, alpaca=0))
            huge = root / "imagebind_huge_random.safetensors"
            torch.manual_seed(0)
            save_imagebind(build_multimodal_encoder(None, "huge"), huge)
            run = overrides(dict(paths, imagebind=huge), few, ["cc3m_enc"], 2, root / "out_huge") + [
                "model.encoder.arch=huge"]
            seconds = make_cache(run, root / "features_huge")
            steps = 2
            (plain, _), = train_rates([run], steps)  # one at a time: each holds a 1.2 B-parameter encoder
            (cached, fallbacks), = train_rates([run + [f"data.feature_cache={root / 'features_huge'}"]], steps)
            results["huge: uncached"], results["huge: cached"] = plain, cached
            print(f"stage 1, ImageBind-huge (random), images, micro batch 2, {steps} steps: {plain:.3f} samples/s "
                  f"uncached, {cached:.3f} cached ({cached / plain:.1f}x; {fallbacks} fallbacks; cache of 6 images "
                  f"{seconds:.1f} s)", flush=True)
        tok = load_tokenizer(paths["llm"])
        signal = register_signal_tokens(tok, None, "new")[0]
        for name in STAGE1:
            params = CATALOG[name].params
            folders = {m: data / params[f"{m}_folder"] if params[f"{m}_folder"] else None
                       for m in ("image", "video", "audio")}
            write_shards(data / params["data_path"], data / "wds" / name, folders=folders, shard_size=50)
            register(f"{name}_bench_shards", webdataset_data(f"wds/{name}/*.tar"), overwrite=True)
        for label, datasets in (("JSON", STAGE1), ("WebDataset", [f"{n}_bench_shards" for n in STAGE1])):
            results[f"loader {label}"] = loader_rate(data, datasets, tok, signal, args.micro_batch)
            print(f"loader, one epoch of the stage-1 sets, {label}: {results[f'loader {label}']:.1f} samples/s",
                  flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
