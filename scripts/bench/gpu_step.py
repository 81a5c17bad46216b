"""Training-step throughput, MFU and peak memory of the real trainer at 7B shapes with random weights.

    python scripts/bench/gpu_step.py [--micro-batch 8] [--seq 2048] [--steps 6] [--peak-tflops 989]
    python scripts/bench/gpu_step.py --shape tiny --seq 64 --micro-batch 2 --steps 2   # CPU smoke run (a test)

What runs: `nextgpt.train.trainer.Trainer` built from configs/stage_3.yaml (bf16, ZeRO-2, LoRA r128 / alpha 256
on q/k/v/o/gate/up/down, gradient checkpointing as configured) whose LLM is a randomly initialised Vicuna-7B-shaped
LlamaForCausalLM (32 layers x 4096, vocabulary 32000, SDPA attention) and whose encoder is a random
ImageBind-huge; `--steps` optimizer steps (after `--warmup` untimed ones) of `--micro-batch` random text
sequences of `--seq` tokens, all supervised (`Trainer.train_step`, the trainer's own step). With `--shape tiny`
the tiny models of `nextgpt tiny` and configs/tiny/stage_3.yaml are used instead (float32; to check the script).

Printed: samples/s, tokens/s, MFU and peak memory of stage 3; the peak memory of a stage-1 step (frozen LLM, one
image per sample through the encoder and the input projector); the peak memory of `predict --offload` (the
generator with the encoder kept on the CPU until used; one image in, 32 text tokens out; the decoders are not
counted: they need real weights).

MFU counts model FLOPs per token, without the recomputation of gradient checkpointing:
    4 * N_frozen + 6 * N_trainable + 12 * L * d * T
N_frozen: the frozen linear weights the tokens go through (LLaMA projections and the LM head: forward 2 FLOPs,
backward to the activations 2 FLOPs per weight); N_trainable: LoRA weights (plus their weight gradients: 6);
12 * L * d * T: attention scores and values over T positions, forward and backward (PaLM's count, no causal
halving). Divided by the step time and `--peak-tflops` (989 = H100 / H200 SXM dense bf16).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def random_llm_loader(attn: str = "sdpa"):
    """A `load_llm` replacement: the LlamaForCausalLM of the folder's config.json with random weights, built
    directly on the device in the requested dtype (no 13 GB file to write or read)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def load(path, dtype=torch.float32, device="cpu", quantization=None):
        if quantization is not None:
            raise SystemExit("gpu_step.py measures the bf16 LLM; quantization is not part of this benchmark")
        config = LlamaConfig.from_pretrained(str(path))
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn)
        return model

    return load


def workspace(root: Path, shape: str) -> tuple[Path, list[str]]:
    """A config file and overrides: the tiny models, or a 7B-shaped LLM folder (config.json + a tokenizer)."""
    from nextgpt.toy.llm import build_tiny_llm
    from nextgpt.toy.synthetic_data import SyntheticCounts, generate

    generate(root / "data", seed=0, counts=SyntheticCounts(images=4, videos=0, audios=0, it_image=0, it_video=0,
                                                           it_audio=0, mosit=0, llava=0, alpaca=8))
    data = [f"data.root={root / 'data'}", "data.datasets=[alpaca_instruction]", "data.num_workers=0",
            f"train.output_dir={root / 'out'}", "train.init_from=null", "train.gradient_accumulation_steps=1"]
    if shape == "tiny":
        from nextgpt.toy.models import build_tiny_models

        paths = build_tiny_models(root / "tiny")
        return REPO / "configs/tiny/stage_3.yaml", data + [
            f"model.llm={paths['llm']}", f"model.encoder.checkpoint={paths['imagebind']}",
            f"model.image.decoder={paths['sd']}", f"model.video.decoder={paths['zeroscope']}",
            f"model.audio.decoder={paths['audioldm']}"]
    from transformers import LlamaConfig

    from nextgpt.model.summary import LLM_ARCHS

    llm = build_tiny_llm(root / "llm")  # its tokenizer (1000 tokens: ids stay below the 32000 rows)
    for f in llm.glob("model*.safetensors"):
        f.unlink()
    LlamaConfig(**LLM_ARCHS["vicuna-7b"], max_position_embeddings=4096).save_pretrained(str(llm))
    return REPO / "configs/stage_3.yaml", data + [f"model.llm={llm}", "model.encoder.checkpoint=null"]


def text_batch(micro: int, seq: int, vocab: int, device: torch.device, image: torch.Tensor | None = None) -> dict:
    """`micro` random sequences of `seq` tokens, all supervised; with `image`, one image placeholder each."""
    from nextgpt.constants import IMAGE_TOKEN_INDEX

    ids = torch.randint(3, vocab, (micro, seq))
    labels = ids.clone()
    media = {}
    if image is not None:
        ids[:, 1] = IMAGE_TOKEN_INDEX
        labels[:, 1] = -100
        media["image"] = image.expand(micro, *image.shape[1:]).contiguous()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "media": media,
            "features": {}, "feature_mask": {}, "caption_embeddings": {}, "captions": {}, "targets": {},
            "num_samples": micro, "num_skipped": 0, "skipped": [], "num_cache_fallbacks": 0}


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def model_flops_per_token(model, seq: int) -> tuple[float, dict[str, int]]:
    base = model.base_llm
    cfg = base.config
    frozen = sum(p.numel() for n, p in base.named_parameters()
                 if p.ndim == 2 and not p.requires_grad and "embed_tokens" not in n and "lora_" not in n)
    trainable = sum(p.numel() for n, p in base.named_parameters() if "lora_" in n)
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    return 4 * frozen + 6 * trainable + attention, {"frozen_linear": frozen, "lora": trainable}


def release(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def predict_peak(config_path: Path, overrides: list[str], device: torch.device) -> float:
    """Peak memory of generation as `predict.py --offload` runs it: the model in the training dtype with its LoRA
    adapter, the encoder on the CPU until it runs; one image in, 32 text tokens out."""
    import nextgpt.model.modeling as modeling
    from nextgpt.config import load_config
    from nextgpt.generation import NextGPTGenerator
    from nextgpt.generation.types import Turn
    from nextgpt.dtypes import as_dtype

    modeling.load_llm = random_llm_loader()
    config = load_config(config_path, overrides)
    model = modeling.build_model(config.model, dtype=as_dtype(config.train.precision), device=device)
    model.enable_lora(config.model.lora)
    generator = NextGPTGenerator(model, offload=True)
    reset_peak(device)
    turn = Turn("<image>\nDescribe it.", {"image": generator.encode("image", torch.randn(1, 3, 224, 224))})
    for _ in generator.stream_turns([turn], max_new_tokens=32, max_outputs_per_modality=0):
        pass
    return peak_memory(device)


def build_trainer(config_path: Path, overrides: list[str]):
    import nextgpt.model.modeling as modeling
    from nextgpt.config import load_config
    from nextgpt.train.trainer import Trainer

    modeling.load_llm = random_llm_loader()
    return Trainer(load_config(config_path, overrides))


def timed_steps(trainer, batches: list[dict], steps: int, warmup: int) -> float:
    device = trainer.device
    for _ in range(warmup):
        trainer.train_step(batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("7b", "tiny"), default="7b")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak (dense bf16)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("stage1", "predict"), help="leave figures out")
    args = parser.parse_args(argv)
    results: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_step_") as tmp:
        config_path, overrides = workspace(Path(tmp), args.shape)
        size = [f"train.micro_batch_size={args.micro_batch}", f"model.max_length={args.seq + 64}"]
        trainer = build_trainer(config_path, overrides + size)
        device, vocab = trainer.device, min(trainer.model.base_llm.config.vocab_size, len(trainer.model.tokenizer))
        flops, counts = model_flops_per_token(trainer.model, args.seq)
        batches = [text_batch(args.micro_batch, args.seq, vocab, device)]
        reset_peak(device)
        seconds = timed_steps(trainer, batches, args.steps, args.warmup)
        tokens = args.micro_batch * args.seq / seconds
        results.update({"stage3_samples_per_s": args.micro_batch / seconds, "stage3_tokens_per_s": tokens,
                        "model_tflops_per_token_x1e12": flops / 1e12, **counts,
                        "stage3_mfu": tokens * flops / (args.peak_tflops * 1e12) if device.type == "cuda" else "n/a",
                        "stage3_peak_memory_gib": peak_memory(device), "device": str(device)})
        mfu = results["stage3_mfu"]
        print(f"stage 3: {args.micro_batch / seconds:.3f} samples/s, {tokens:.1f} tokens/s, MFU "
              f"{mfu if isinstance(mfu, str) else f'{100 * mfu:.1f} %'}, peak memory "
              f"{results['stage3_peak_memory_gib']:.2f} GiB ({device}, micro batch {args.micro_batch}, sequence "
              f"{args.seq}, {flops / 1e9:.2f} GFLOP per token)", flush=True)
        del trainer, batches
        release(device)
        if "stage1" not in args.skip:
            stage1 = build_trainer(config_path.with_name("stage_1.yaml"), overrides + size)
            reset_peak(device)
            image = torch.randn(1, 3, 224, 224)
            timed_steps(stage1, [text_batch(args.micro_batch, args.seq, vocab, device, image)], 1, 1)
            results["stage1_peak_memory_gib"] = peak_memory(device)
            print(f"stage 1: peak memory {results['stage1_peak_memory_gib']:.2f} GiB", flush=True)
            del stage1
            release(device)
        if "predict" not in args.skip:
            results["predict_offload_peak_memory_gib"] = predict_peak(config_path, overrides, device)
            print(f"predict --offload: peak memory {results['predict_offload_peak_memory_gib']:.2f} GiB "
                  "(one image in, 32 tokens out, decoders not counted)", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
