"""Where each reference tensor goes in our trained-weights layout, and back (for messages)."""
from __future__ import annotations

import re

from ...errors import CheckpointError
from ..multimodal_projector import legacy_textfc_key_map

_NEW_MODALITY = {"img": "image", "vid": "video", "aud": "audio"}
_LEGACY_SUFFIX = {"image": "", "video": "_video", "audio": "_audio"}
PEFT_PREFIX = "base_model.model."

# A mapped target: ("param", our key) | ("lora", peft adapter key) | ("embed",) | ("head",) | ("drop", why) |
# ("unmatched", why)
Target = tuple


def _lora_key(name: str) -> str | None:
    """peft's saved adapter key for a LoRA weight name with or without the adapter name ("default")."""
    m = re.fullmatch(r"(base_model\.model\..+\.lora_(?:A|B))(?:\.default)?\.weight", name)
    return f"{m.group(1)}.weight" if m else None


def map_new_key(key: str, adapter: bool = False) -> Target:
    """Where a NEW reference tensor goes."""
    if adapter:
        lora = _lora_key(key)
        if lora:
            return ("lora", lora)
        # peft also saves the whole (resized) embedding / LM head when it sees the vocabulary grew
        if key == f"{PEFT_PREFIX}model.embed_tokens.weight":
            return ("embed",)
        if key == f"{PEFT_PREFIX}lm_head.weight":
            return ("head",)
        return ("unmatched", "not a LoRA A/B weight of the adapter")
    k = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
    m = re.fullmatch(r"model\.mm_input_projector\.(.+)", k)
    if m:
        return ("param", f"input_projector.{m.group(1)}")
    m = re.fullmatch(r"model\.mm_output_(img|vid|aud)_projector\.(.+)", k)
    if m:
        return ("param", f"output_projectors.{_NEW_MODALITY[m.group(1)]}.{m.group(2)}")
    if k == "model.embed_tokens.weight":
        return ("embed",)
    if k == "lm_head.weight":
        return ("head",)
    return ("unmatched", "no counterpart in NExT-GPT's trained weights")


def map_legacy_key(key: str) -> Target:
    """Where a LEGACY (`7b_tiva_v0/pytorch_model.pt`) tensor goes."""
    m = re.fullmatch(r"llama_proj\.(weight|bias)", key)
    if m:
        return ("param", f"input_projector.{m.group(1)}")
    m = re.fullmatch(r"gen_text_hidden_fcs(|_video|_audio)\.0\.(.+)", key)
    if m:
        modality = {"": "image", "_video": "video", "_audio": "audio"}[m.group(1)]
        try:
            ours = legacy_textfc_key_map(m.group(2))
        except CheckpointError as exc:
            return ("unmatched", str(exc))
        if ours is None:
            return ("drop", "LAVIS buffer with no counterpart in our Q-Former")
        return ("param", f"output_projectors.{modality}.{ours}")
    if key.startswith("llama_model.") and "lora_" in key:
        lora = _lora_key(key[len("llama_model."):])
        return ("lora", lora) if lora else ("unmatched", "not a LoRA A/B weight")
    if key in ("llama_model.model.embed_tokens.weight", "llama_model.base_model.model.model.embed_tokens.weight"):
        return ("embed",)
    if key in ("llama_model.lm_head.weight", "llama_model.base_model.model.lm_head.weight"):
        return ("head",)
    return ("unmatched", "no counterpart in NExT-GPT's trained weights")


def map_minigpt4_key(key: str) -> Target:
    """Where a MiniGPT-4 (`pretrained_minigpt4*.pth`, its `model` dict) tensor goes: only `llama_proj` trains."""
    m = re.fullmatch(r"llama_proj\.(weight|bias)", key)
    if m:
        return ("param", f"input_projector.{m.group(1)}")
    return ("unmatched", "no counterpart: MiniGPT-4 trains only llama_proj")


def reference_name(fmt: str, ours: str) -> str:
    """The reference's key for one of our target keys (for messages about missing tensors)."""
    if ours.startswith("input_projector."):
        rest = ours[len("input_projector."):]
        return f"model.mm_input_projector.{rest}" if fmt == "new" else f"llama_proj.{rest}"
    m = re.fullmatch(r"output_projectors\.(image|video|audio)\.(.+)", ours)
    if m:
        modality, rest = m.groups()
        if fmt == "new":
            short = {v: k for k, v in _NEW_MODALITY.items()}[modality]
            return f"model.mm_output_{short}_projector.{rest}"
        head, dot, tail = rest.partition(".")
        head = {"in_fc": "fc", "out_fc": "model"}.get(head, head)
        return f"gen_text_hidden_fcs{_LEGACY_SUFFIX[modality]}.0.{head}{dot}{tail}"
    if fmt == "legacy" and ours.startswith(PEFT_PREFIX):
        return "llama_model." + ours[: -len(".weight")] + ".default.weight"
    return ours


def group_of(key: str) -> str:
    if key.startswith("input_projector."):
        return "input_projector"
    return "output_projector." + key.split(".")[1]
