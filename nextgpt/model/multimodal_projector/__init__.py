"""Input projectors (encoder tokens -> LLM tokens) and output projectors (signal-token states -> decoder
conditioning) of NExT-GPT, with their builders."""
from .factory import (
    INPUT_PROJECTOR_KINDS,
    OUTPUT_PROJECTOR_KINDS,
    build_input_projector,
    build_output_projector,
)
from .group import GroupProjector
from .mlp import MLPProjector
from .output import LinearOutputProjector, TransformersProjector, legacy_textfc_key_map
from .qformer import QFormerProjector

__all__ = [
    "GroupProjector",
    "TransformersProjector",
    "LinearOutputProjector",
    "QFormerProjector",
    "MLPProjector",
    "build_input_projector",
    "build_output_projector",
    "legacy_textfc_key_map",
    "INPUT_PROJECTOR_KINDS",
    "OUTPUT_PROJECTOR_KINDS",
]
