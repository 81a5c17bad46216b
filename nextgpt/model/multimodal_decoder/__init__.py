"""Frozen diffusion decoders (SD / ZeroScope / AudioLDM) over stock diffusers pipelines, and their tiny builders."""
from nextgpt.model.multimodal_decoder.builder import (
    GENERATION_DEFAULTS,
    MODALITIES,
    PIPELINE_CLASSES,
    Decoder,
    LazyDecoders,
    load_decoder,
)

__all__ = ["Decoder", "LazyDecoders", "load_decoder", "GENERATION_DEFAULTS", "MODALITIES", "PIPELINE_CLASSES"]
