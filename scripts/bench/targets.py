"""Time the decoder-side target loaders, the sampler and the synthetic-data generator; prints one line per figure.

    python scripts/bench/targets.py [--samples ../shared/data/nextgpt_samples] [--repeats 5]

Run it on a quiet machine for figures worth reporting (each figure is the median of --repeats runs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nextgpt.dataset import media  # noqa: E402
from nextgpt.dataset.sampler import ModalityGroupedBatchSampler  # noqa: E402
from nextgpt.toy import synthetic_data as synthetic  # noqa: E402

from _timing import median_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", default=os.environ.get("NEXTGPT_SAMPLES", str(REPO.parent / "shared/data/nextgpt_samples")))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    samples = Path(args.samples)
    r = args.repeats
    print(f"threads: torch={__import__('torch').get_num_threads()} cpus={os.cpu_count()}")

    if samples.is_dir():
        pair = samples / "T_X_pair_data"
        img = pair / "cc3m/images/001312382.jpg"
        short_vid = pair / "webvid/videos/00169473.mp4"
        long_vid = pair / "webvid/videos/00077761.mp4"
        wav = pair / "audiocap/audios/104137.wav"
        print(f"target image 256x256 jpg -> (3,224,224): {median_seconds(lambda: media.load_target_image(img), r) * 1e3:.1f} ms")
        rng = np.random.default_rng(0)
        print(f"target video 7 s / 25 fps -> (3,16,320,576): "
              f"{median_seconds(lambda: media.load_target_video(short_vid, rng=rng), r) * 1e3:.1f} ms")
        print(f"target video 28 s / 30 fps -> (3,16,320,576): "
              f"{median_seconds(lambda: media.load_target_video(long_vid, rng=rng), r) * 1e3:.1f} ms")
        print(f"  of which decord decode of 16 frames: "
              f"{median_seconds(lambda: media.read_video_frames(long_vid, rng=rng), r) * 1e3:.1f} ms")
        print(f"target audio 48 kHz stereo 10 s -> (1040,64): "
              f"{median_seconds(lambda: media.load_target_audio(wav, rng=rng), r) * 1e3:.1f} ms")
    else:
        print(f"(no sample data at {samples}: media figures skipped)")

    mods = [m for m, n in (("image", 40000), ("video", 20000), ("audio", 20000), ("text", 20000)) for _ in range(n)]
    lengths = list(np.random.default_rng(0).integers(1, 500, size=len(mods)))
    sampler = ModalityGroupedBatchSampler(mods, lengths, micro_batch_size=4, world_size=8, rank=3,
                                          gradient_accumulation_steps=2, seed=0)
    print(f"sampler epoch order, 100k samples, global batch 64: {median_seconds(lambda: list(sampler), r) * 1e3:.0f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for k in range(max(1, r // 2)):
            t = time.perf_counter()
            manifest = synthetic.generate(Path(tmp) / f"run{k}", seed=0)
            times.append(time.perf_counter() - t)
        print(f"synthetic dataset (default counts): {statistics.median(times):.2f} s, "
              f"{len(manifest['files'])} files, {manifest['total_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
