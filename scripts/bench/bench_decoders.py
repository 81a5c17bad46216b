"""Timings of the tiny decoders: build, load, caption encoding, 2-step generation, denoising loss fwd+bwd.

Run: ``python scripts/bench/bench_decoders.py`` (CPU; prints one line per measurement, median of --repeats).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from nextgpt.model.multimodal_decoder import denoising_loss, load_decoder
from nextgpt.toy.decoders import build_tiny_audioldm, build_tiny_sd, build_tiny_zeroscope

from _timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    builders = {"image": build_tiny_sd, "video": build_tiny_zeroscope, "audio": build_tiny_audioldm}
    gen_kwargs = {
        "image": dict(height=64, width=64),
        "video": dict(height=32, width=48, num_frames=4),
        "audio": dict(audio_length_in_s=5.0),
    }
    targets = {
        "image": torch.rand(2, 3, 64, 64) * 2 - 1,
        "video": torch.rand(2, 3, 4, 32, 48) * 2 - 1,
        "audio": torch.randn(2, 1040, 64),
    }
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        for modality, build in builders.items():
            folder = Path(tmp) / modality
            t_build = median_seconds(lambda: build(folder), args.repeats, warmup=False)
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            t_load = median_seconds(lambda: load_decoder(modality, folder), args.repeats, warmup=False)
            dec = load_decoder(modality, folder)
            captions = ["a dog running on the grass in a park"] * 8
            t_enc = median_seconds(lambda: dec.encode_captions(captions), args.repeats, warmup=False)
            emb = torch.randn(1, *dec.condition_shape)
            t_gen = median_seconds(lambda: dec.generate(emb, num_inference_steps=2, **gen_kwargs[modality]),
                                   args.repeats, warmup=False)

            def loss_step():
                cond = torch.randn(2, *dec.condition_shape, requires_grad=True)
                gamma = 5.0 if modality == "image" else None
                denoising_loss(dec, targets[modality], cond, gamma).mean().backward()

            t_loss = median_seconds(loss_step, args.repeats, warmup=False)
            print(f"{modality}: condition {dec.condition_shape}, {size / 2**20:.2f} MiB, build {t_build:.2f} s, "
                  f"load {t_load:.2f} s, encode 8 captions {t_enc * 1e3:.0f} ms, 2-step generate "
                  f"{gen_kwargs[modality]} {t_gen:.2f} s, denoising loss fwd+bwd (N=2, target "
                  f"{tuple(targets[modality].shape[1:])}) {t_loss:.2f} s")


if __name__ == "__main__":
    main()
