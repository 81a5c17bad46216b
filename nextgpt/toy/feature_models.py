"""Tiny random feature models for the generation metrics, in the real on-disk formats of their libraries.

    build_tiny_clip(DIR)        transformers CLIPModel + CLIPProcessor (save_pretrained): CLIP score, CLIPSIM, and
                                FID on CLIP features
    build_tiny_clap(DIR)        transformers ClapModel + ClapProcessor (HTSAT audio tower, 48 kHz features): FAD
    build_random_inception(F)   torch-fidelity's Inception-v3 weights file, full size, random weights: FID

Each writes the marker `nextgpt_toy.json` (inside the folder, or beside the file) so that evaluation reports label
the numbers as coming from a random feature model. Nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nextgpt.evaluation.feature_models import TOY_MARKER

from .decoders import CLIP_MAX_LENGTH, ROBERTA_MAX_LENGTH, tiny_clip_tokenizer, tiny_roberta_tokenizer

__all__ = ["build_random_inception", "build_tiny_clap", "build_tiny_clip", "build_tiny_feature_models"]

_MARK = {"built_by": "nextgpt.toy.feature_models", "weights": "random", "comparable": False}


def _mark(path: Path) -> None:
    (path / TOY_MARKER if path.is_dir() else Path(f"{path}.{TOY_MARKER}")).write_text(json.dumps(_MARK) + "\n")


def build_tiny_clip(outdir: str | Path, seed: int = 0) -> Path:
    """A 2-layer, width-32 CLIP (32 x 32 images, 8 x 8 patches) with a locally trained BPE tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, \
        CLIPVisionConfig

    outdir = Path(outdir)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(pad_token="<|endoftext|>")
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    model.save_pretrained(outdir)
    processor.save_pretrained(outdir)
    _mark(outdir)
    return outdir


def build_tiny_clap(outdir: str | Path, seed: int = 0) -> Path:
    """A one-block-per-stage HTSAT CLAP (64 mel bins at 48 kHz as the real one, 16 x 16 patches) with a 1-layer
    RoBERTa text tower and a locally trained tokenizer."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, \
        ClapTextConfig

    outdir = Path(outdir)
    torch.manual_seed(seed)
    tokenizer = tiny_roberta_tokenizer()
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=ROBERTA_MAX_LENGTH + 3,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id)
    audio = ClapAudioConfig(window_size=4, num_mel_bins=64, spec_size=256, patch_size=16, patch_stride=(16, 16),
                            hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2],
                            enable_fusion=False, mlp_ratio=2.0, projection_hidden_size=32)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
    # the unfused CLAP's preprocessing: 10 s windows, repeat-padded; longer audio is cropped
    features = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                                    fft_window_size=1024, truncation="rand_trunc", padding="repeatpad")
    model.save_pretrained(outdir)
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(outdir)
    _mark(outdir)
    return outdir


def build_random_inception(path: str | Path, seed: int = 0) -> Path:
    """torch-fidelity's Inception-v3 weights file layout (torchvision's Inception-v3 module names, a 1008-way fc)
    with random weights: about 95 MB, and the full network's cost (a second or more per image on a CPU)."""
    import torchvision

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
    # batch-norm statistics of one random batch, so that activations stay of order one through the 94 layers
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches seen
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 299, 299))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    state["fc.weight"] = torch.randn(1008, 2048) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    torch.save(state, path)
    _mark(path)
    return path


def build_tiny_feature_models(outdir: str | Path, seed: int = 0) -> dict[str, Path]:
    """The demo's feature models: {"clip": DIR/clip, "clap": DIR/clap}."""
    outdir = Path(outdir)
    return {"clip": build_tiny_clip(outdir / "clip", seed), "clap": build_tiny_clap(outdir / "clap", seed)}
