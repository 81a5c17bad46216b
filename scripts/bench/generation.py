"""Text-generation speed with and without the KV cache (nextgpt/generation/) on the tiny model.

Run: ``python scripts/bench/generation.py [--model CHECKPOINT_DIR] [--new-tokens 256] [--threads 1]``.
Without --model, tiny models and an untrained tiny stage-3 checkpoint are built in a temporary folder (~15 s).
Greedy decoding of exactly --new-tokens tokens (EOS and signal tokens suppressed, so both runs do the same work);
prints tokens/s of each mode (median of --repeats) and the speed-up of the cache.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def build_checkpoint(root: Path) -> Path:
    from nextgpt.config import load_config
    from nextgpt.model.modeling import build_model
    from nextgpt.toy.models import build_tiny_models

    paths = build_tiny_models(root / "tiny")
    overrides = [f"model.llm={paths['llm']}", f"model.encoder.checkpoint={paths['imagebind']}",
                 f"model.image.decoder={paths['sd']}", f"model.video.decoder={paths['zeroscope']}",
                 f"model.audio.decoder={paths['audioldm']}"]
    config = load_config(REPO / "configs/tiny/stage_3.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(config.model, losses=config.train.losses)
    model.enable_lora(config.model.lora)
    return model.save_pretrained(root / "stage_3", config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (default: build a tiny one)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-repeats", type=int, default=4, help="length of the prompt (sentence repeats)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = leave as is)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from nextgpt.generation import NextGPTGenerator

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.model) if args.model else build_checkpoint(Path(tmp))
        gen = NextGPTGenerator.from_pretrained(ckpt, device=args.device)
        eos = sorted(gen.eos_ids)

        def no_eos(step: int, logits: torch.Tensor) -> torch.Tensor:
            logits = logits.clone()
            logits[:, eos] = float("-inf")
            return logits

        prompt = "Describe a red circle moving slowly across a blue square. " * args.prompt_repeats
        prompt_len = len(gen.prompt_ids([gen.prepare_turn(prompt)]))
        kwargs = dict(max_new_tokens=args.new_tokens, max_outputs_per_modality=0, logits_hook=no_eos)
        gen.generate(prompt, max_new_tokens=8)  # warm-up
        rates, tokens = {}, {}
        for use_cache in (True, False):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = gen.generate(prompt, use_cache=use_cache, **kwargs)
                times.append(time.perf_counter() - start)
            tokens[use_cache] = result.token_ids
            rates[use_cache] = len(result.token_ids) / statistics.median(times)
            print(f"{'with' if use_cache else 'without'} KV cache: {rates[use_cache]:8.1f} tokens/s "
                  f"({len(result.token_ids)} new tokens after a {prompt_len}-token prompt, median of {args.repeats})")
        print(f"speed-up of the KV cache: {rates[True] / rates[False]:.2f}x "
              f"(same tokens: {tokens[True] == tokens[False]}; threads {torch.get_num_threads()}, {args.device})")


if __name__ == "__main__":
    main()
