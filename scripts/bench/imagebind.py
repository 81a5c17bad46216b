"""ImageBind throughput: preprocessing (images/s, audio clips/s, videos/s) on the sample media, and the CPU forward
time of one image through the huge model (random weights, fp32).

    python scripts/bench/imagebind.py [--samples DIR] [--repeats N] [--skip-huge] [--threads T]

The huge model is built on the meta device, materialised with ``to_empty`` and filled with quick random numbers
(a timing run, not an accuracy one: the reference's xavier/kaiming init would only add start-up time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nextgpt.model.multimodal_encoder.imagebind import (  # noqa: E402
    IMAGEBIND_HUGE_KWARGS,
    ImageBindModel,
    load_and_transform_audio_data,
    load_and_transform_video_data,
    load_and_transform_vision_data,
)

from _timing import wall_times  # noqa: E402


def bench_preprocessing(samples: Path, repeats: int) -> dict[str, float]:
    pairs = samples / "T_X_pair_data"
    images = sorted((pairs / "cc3m" / "images").glob("*.jpg")) + [samples / "assets" / "bird_image.jpg"]
    audios = sorted((pairs / "audiocap" / "audios").glob("*.wav")) + sorted((samples / "assets").glob("*.wav"))
    videos = sorted((pairs / "webvid" / "videos").glob("*.mp4"))[:6] + [samples / "assets" / "test.mp4"]
    t_img = min(wall_times(lambda: load_and_transform_vision_data(images, "cpu"), repeats))
    t_aud = min(wall_times(lambda: load_and_transform_audio_data(audios, "cpu"), repeats))
    t_vid = min(wall_times(lambda: load_and_transform_video_data(videos, "cpu"), max(1, repeats // 2)))
    return {
        "images": len(images),
        "images_per_s": len(images) / t_img,
        "audio_files": len(audios),
        "audio_files_per_s": len(audios) / t_aud,
        "audio_clips_per_s": 3 * len(audios) / t_aud,
        "videos": len(videos),
        "videos_per_s": len(videos) / t_vid,
        "video_clip_crops_per_s": 15 * len(videos) / t_vid,
    }


def bench_huge_image_forward(repeats: int) -> dict[str, float]:
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = ImageBindModel(**IMAGEBIND_HUGE_KWARGS)
    model.to_empty(device="cpu")
    with torch.no_grad():
        norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
        for p in model.parameters():
            if id(p) not in norms and p.ndim > 0:
                p.normal_(0.0, 0.02)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.reset_parameters()
            elif hasattr(m, "reset_value"):  # logit scales
                m.reset_value()
        model.modality_preprocessors.text.reset_mask()
    model.eval()
    build_s = time.perf_counter() - t0
    image = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        out = model({"vision": image})["vision"]
        assert out.shape == (1, 256, 1024) and torch.isfinite(out).all()
        fwd = min(wall_times(lambda: model({"vision": image}), repeats))
    params = sum(p.numel() for p in model.parameters())
    return {"huge_params": params, "huge_build_fill_s": build_s, "huge_image_forward_s": fwd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_samples = Path(os.environ.get("NEXTGPT_SHARED", REPO.parent / "shared")) / "data" / "nextgpt_samples"
    parser.add_argument("--samples", type=Path, default=default_samples)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-huge", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, object] = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or "?",
    }
    if args.samples.is_dir():
        results.update(bench_preprocessing(args.samples, args.repeats))
    else:
        print(f"sample media not found at {args.samples}; skipping preprocessing", file=sys.stderr)
    if not args.skip_huge:
        results.update(bench_huge_image_forward(args.repeats))
    for key, value in results.items():
        print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
