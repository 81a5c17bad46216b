"""Multimodal encoder: ImageBind (frozen) and the wrapper the NExT-GPT model core uses."""
from .encoder import (
    MultimodalEncoder,
    build_multimodal_encoder,
    preprocess,
    save_imagebind,
)

__all__ = [
    "MultimodalEncoder",
    "build_multimodal_encoder",
    "preprocess",
    "save_imagebind",
]
