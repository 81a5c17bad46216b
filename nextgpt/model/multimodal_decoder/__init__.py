"""Frozen diffusion decoders over stock diffusers pipelines: a shared base (base.py), one adapter per pipeline kind
(image.py: Stable Diffusion, video.py: ZeroScope, audio.py: AudioLDM), loading (loading.py) and the latent
denoising loss (denoising.py)."""
from .audio import AudioDecoder
from .base import GENERATION_DEFAULTS, Decoder
from .denoising import denoising_loss
from .image import ImageDecoder
from .loading import PIPELINE_CLASSES, LazyDecoders, load_decoder
from .video import VideoDecoder

__all__ = [
    "Decoder", "ImageDecoder", "VideoDecoder", "AudioDecoder", "LazyDecoders", "load_decoder",
    "GENERATION_DEFAULTS", "PIPELINE_CLASSES", "denoising_loss",
]
