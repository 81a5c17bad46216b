"""Any-to-any generation: prompt (text + media) → streamed text and decoded images, videos and audio.

The pieces, in order:

1. **Prompt.** The user turn (plus the earlier turns of a chat) is rendered with the conversation template of the
   MODEL's training config (the reference rendered its prompt with a different template than it trained
   with; docs/deviations.md) and tokenized; every input medium (an ``<image>`` / ``<video>`` / ``<audio>``
   placeholder) is encoded (frozen ImageBind → input projector) and spliced in, so input media really reach the
   LLM (the reference's ``predict.py`` loaded the image and dropped it).
2. **Decoding.** An explicit loop on the LLM with the KV cache (the reference switched it off) starting from the
   spliced ``inputs_embeds``; greedy or temperature / top-k / top-p sampling from a seeded
   ``torch.Generator``; stop on EOS or the template's stop string; ``max_new_tokens``. ``use_cache=False``
   recomputes the whole sequence every step (same tokens, slower; kept for checking).
3. **Signal spans.** When the model emits the FIRST signal token of a modality, the rest of the span (2n−1 tokens
   with separators NEW, n LEGACY) is forced token by token, so a span is always complete (the reference asserted and
   crashed, or looped, on partial spans). Every other signal token is never sampled freely, and a registered token
   that is not a signal token (LEGACY's ``<Img>`` / ``</Img>``) is never generated. A modality gets at most
   ``max_outputs_per_modality`` outputs per answer; after that (or when it has no decoder, or when its span would
   not fit in ``max_new_tokens``) its first signal token is suppressed.
4. **Forced output** (``force_modality``, one modality or several): while the answer still lacks an output of a
   forced modality, (a) a stop (EOS / stop string) the model chooses is replaced by that modality's first signal
   token, and (b) when only the forced spans' total length is left of ``max_new_tokens``, the first missing one is
   started; the span is then completed as in 3 and the model continues (and usually stops). Other spans are only
   allowed where they leave room for the forced ones.
5. **Media.** The hidden states at ``model.config.layer_idx`` of every span token — each taken when that token is
   fed to the LLM, the training convention — plus the span's input embeddings go through the output projector
   (``model.project_signal``) and the decoder (``Decoder.generate``) with the per-modality options and a seeded CPU
   generator (output k of an answer uses ``seed + k``).

The displayed text keeps one placeholder (``<image>`` / ``<video>`` / ``<audio>``) where each output's span was,
which is also the training format of an assistant turn, so a chat's history round-trips through the tokenizer.

Modules: `types` (requests, results, options), `forcing` (the token rules), `generator` (`NextGPTGenerator`: the
decode loop and the media decoding), `chat` (`Chat`, multi-turn), `media_io` (PNG / WAV / MP4 and result.json).
"""
from .chat import Chat
from .forcing import stop_strings
from .generator import NextGPTGenerator
from .media_io import RESULT_NAME, save_audio, save_image, save_video, write_result
from .types import (
    AUDIO_SAMPLE_RATE,
    GenerationResult,
    MediaOutput,
    Request,
    StreamEvent,
    Turn,
    decoder_options,
    resolve_options,
)

__all__ = [
    "AUDIO_SAMPLE_RATE", "Chat", "GenerationResult", "MediaOutput", "NextGPTGenerator", "RESULT_NAME", "Request",
    "StreamEvent", "Turn", "decoder_options", "resolve_options", "save_audio", "save_image", "save_video",
    "stop_strings", "write_result",
]
