"""Warm-up before the first request: one short generation (first-call costs of the LLM and the tokenizer) and every
configured decoder loaded, so that no user request pays for them."""
from __future__ import annotations

import logging
import time

logger = logging.getLogger("nextgpt.serve")


def warm_up(generator, decoders: bool = True) -> float:
    """Returns the seconds it took."""
    started = time.monotonic()
    generator.generate("Hello.", max_new_tokens=2)
    if decoders:
        for modality in generator.model.decoders.available:
            generator.model.decoders.get(modality)
    seconds = time.monotonic() - started
    logger.info("warm-up done in %.1f s (decoders loaded: %s)", seconds,
                ", ".join(generator.model.decoders.loaded) or "none")
    return seconds
