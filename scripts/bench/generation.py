"""Text-generation speed of our decode loop (nextgpt/generation/) against transformers' own `generate`.

Run: ``python scripts/bench/generation.py [--llm 12x768] [--new-tokens 256] [--threads 1] [--model CHECKPOINT]``.

``--llm tiny`` (default) uses the tiny LLM of ``nextgpt tiny``; ``--llm LxH`` (e.g. ``12x768``: 12 layers,
hidden 768, MLP 4H·2/3 rounded to 256, vocabulary 32000, random weights, ~130 M parameters) a random LLaMA of
that size. Either way an untrained stage-3 checkpoint with a LoRA adapter (configs/tiny/stage_3.yaml: r 64 on
q/k/v/o) is written to a temporary folder, and these are timed on the same prompt, greedy, exactly
``--new-tokens`` tokens (EOS and signal tokens suppressed in both loops, so every run does the same work):

* ours, KV cache, the adapter merged at load time (what predict / evaluation do by default);
* ours, KV cache, the adapter kept separate (``--no-merge-lora``);
* ours without the KV cache (every step re-runs the whole sequence);
* ``transformers.generate`` on the same (merged) LLM, with and without its KV cache.

Tokens/s is the median of ``--repeats`` runs (one for the uncached paths beyond 128 tokens: they are slow); the
five kinds of run alternate, so that a change of the machine's load hits them all.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def random_llm(folder: Path, layers: int, hidden: int, tokenizer_dir: Path) -> Path:
    """A random LLaMA of `layers` x `hidden` (vocabulary 32000) with the tiny tokenizer, saved as a folder."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    inter = 256 * round(hidden * 8 / 3 / 256)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    for f in tokenizer_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(f, folder / f.name)
    return folder


def build_checkpoint(root: Path, llm: str) -> Path:
    from nextgpt.config import load_config
    from nextgpt.model.modeling import build_model
    from nextgpt.toy.models import build_tiny_models

    paths = build_tiny_models(root / "tiny")
    llm_dir = paths["llm"]
    if llm != "tiny":
        layers, hidden = (int(x) for x in llm.lower().split("x"))
        llm_dir = random_llm(root / "llm", layers, hidden, paths["llm"])
    overrides = [f"model.llm={llm_dir}", f"model.encoder.checkpoint={paths['imagebind']}",
                 f"model.image.decoder={paths['sd']}", f"model.video.decoder={paths['zeroscope']}",
                 f"model.audio.decoder={paths['audioldm']}", "model.max_length=2048"]
    config = load_config(REPO / "configs/tiny/stage_3.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(config.model, losses=config.train.losses)
    model.enable_lora(config.model.lora)
    return model.save_pretrained(root / "stage_3", config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint directory (default: build one with --llm)")
    parser.add_argument("--llm", default="tiny", help="tiny, or LAYERSxHIDDEN for a random LLaMA (e.g. 12x768)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-repeats", type=int, default=4, help="length of the prompt (sentence repeats)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = leave as is)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from nextgpt.generation import NextGPTGenerator

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.model) if args.model else build_checkpoint(Path(tmp), args.llm)
        merged = NextGPTGenerator.from_pretrained(ckpt, device=args.device)
        unmerged = NextGPTGenerator.from_pretrained(ckpt, device=args.device, merge_lora=False)
        llm = merged.model.base_llm
        params = sum(p.numel() for p in llm.parameters())
        blocked = sorted(set(merged.eos_ids) | set(merged.signal_ids))

        def no_eos(step: int, logits: torch.Tensor) -> torch.Tensor:
            logits = logits.clone()
            logits[:, blocked] = float("-inf")
            return logits

        prompt = "Describe a red circle moving slowly across a blue square. " * args.prompt_repeats
        prompt_ids = merged.prompt_ids([merged.prepare_turn(prompt)])
        n = args.new_tokens
        kwargs = dict(max_new_tokens=n, max_outputs_per_modality=0, logits_hook=no_eos)
        slow = 1 if n > 128 else args.repeats

        def ours(gen, use_cache):
            return lambda: gen.generate(prompt, use_cache=use_cache, **kwargs).token_ids

        def hf(use_cache):
            def run():
                ids = torch.tensor([prompt_ids], device=args.device)
                with torch.inference_mode():
                    out = llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                       min_new_tokens=n, do_sample=False, use_cache=use_cache,
                                       suppress_tokens=blocked, pad_token_id=merged.model.tokenizer.pad_token_id)
                return out[0, len(prompt_ids):].tolist()
            return run

        merged.generate(prompt, max_new_tokens=8)  # warm-up
        unmerged.generate(prompt, max_new_tokens=8)
        hf(True)()
        rows = [("ours, KV cache, LoRA merged at load", ours(merged, True), args.repeats),
                ("ours, KV cache, LoRA unmerged", ours(unmerged, True), args.repeats),
                ("transformers.generate, KV cache", hf(True), args.repeats),
                ("ours, no KV cache", ours(merged, False), slow),
                ("transformers.generate, no KV cache", hf(False), slow)]
        times: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        tokens: dict[str, list[int]] = {}
        for r in range(args.repeats):  # the rows alternate, so a change of the machine's load hits them all
            for label, run, repeats in rows:
                if r < repeats:
                    start = time.perf_counter()
                    tokens[label] = run()
                    times[label].append(time.perf_counter() - start)
        rates = {label: len(tokens[label]) / statistics.median(times[label]) for label in times}
        print(f"LLM {args.llm}: {params / 1e6:.1f} M parameters; {n} new tokens after a {len(prompt_ids)}-token "
              f"prompt; threads {torch.get_num_threads()}, {args.device}", flush=True)
        for label, _, _ in rows:
            print(f"  {label:38s} {rates[label]:8.1f} tokens/s ({len(tokens[label])} tokens, median of "
                  f"{len(times[label])})", flush=True)
        ref = rates["transformers.generate, KV cache"]
        ours_merged, ours_unmerged = rates[rows[0][0]], rates[rows[1][0]]
        same = tokens[rows[0][0]] == tokens["transformers.generate, KV cache"]
        print(f"ours / transformers (KV cache): merged {ours_merged / ref:.2f}x, unmerged {ours_unmerged / ref:.2f}x;"
              f" KV cache speed-up of our loop {ours_merged / rates['ours, no KV cache']:.1f}x; same greedy tokens "
              f"as transformers: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
