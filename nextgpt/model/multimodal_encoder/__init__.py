"""Multimodal encoder: ImageBind (frozen) and the wrapper the NExT-GPT model core uses."""
from .encoder import (
    TINY_IMAGEBIND_KWARGS,
    MultimodalEncoder,
    build_multimodal_encoder,
    preprocess,
    save_imagebind,
)

__all__ = [
    "TINY_IMAGEBIND_KWARGS",
    "MultimodalEncoder",
    "build_multimodal_encoder",
    "preprocess",
    "save_imagebind",
]
