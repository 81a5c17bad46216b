"""ImageBind as NExT-GPT uses it: the model (reference key names), its huge configuration and input loaders."""
from .data import (
    CLIP_MEAN,
    CLIP_STD,
    PAD_BACKGROUND,
    clip_timepoints,
    expand2square,
    load_and_transform_audio_data,
    load_and_transform_text,
    load_and_transform_video_data,
    load_and_transform_vision_data,
    preprocess,
)
from .model import (
    IMAGEBIND_HUGE_KWARGS,
    MODALITIES,
    OUTPUT_MODES,
    ImageBindModel,
    build_imagebind,
    imagebind_huge,
    load_checkpoint_,
    read_state_dict,
)
from .tokenizer import SimpleTokenizer, get_tokenizer

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGEBIND_HUGE_KWARGS",
    "MODALITIES",
    "OUTPUT_MODES",
    "PAD_BACKGROUND",
    "ImageBindModel",
    "SimpleTokenizer",
    "build_imagebind",
    "clip_timepoints",
    "expand2square",
    "get_tokenizer",
    "imagebind_huge",
    "load_and_transform_audio_data",
    "load_and_transform_text",
    "load_and_transform_video_data",
    "load_and_transform_vision_data",
    "load_checkpoint_",
    "preprocess",
    "read_state_dict",
]
