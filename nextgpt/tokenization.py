"""Text → token ids with the reference tokenizers' semantics (SentencePiece LLaMA / Vicuna tokenizers).

The reference never tokenizes a whole prompt at once: it calls its *slow* LLaMA tokenizer once per text chunk (NEW:
every chunk between media placeholders; LEGACY: every prompt piece it builds, see `common/utils.py` and
`prompt_wrap` of the 2023 code). Inside one call the text is split at added tokens (`</s>`, signal tokens,
`<Img>` …) and every remaining text piece goes through SentencePiece. Two behaviours matter:

* NEW (transformers 4.42, Vicuna-v1.5's non-legacy tokenizer): the call's first text piece gets SentencePiece's
  dummy prefix "▁" (so a chunk that starts with a space, like " ASSISTANT:" after `<image>`, starts "▁▁"); text
  after an added token inside the call gets none; whitespace around added tokens is kept.
* LEGACY (transformers 4.29, `legacy` semantics): every text piece gets its own dummy prefix, and whitespace
  (spaces and newlines) on both sides of an added token is stripped, e.g. ``"cap[IMG3]\\n###"`` gives
  ``cap [IMG3] ▁###``.

The transformers installed here tokenizes differently (a fast tokenizer whose dummy prefix is added once per call,
never before a leading space), so this module drives the tokenizer's SentencePiece-equivalent BPE model directly:
the text is escaped the way SentencePiece does ("▁" for spaces, plus the dummy prefix when due) and handed to the
model with no further normalisation. `check_tokenizer` verifies, once per tokenizer, that this reproduces the
tokenizer's own output on plain text.
"""
from __future__ import annotations

import re
from typing import Sequence

from .errors import DataError

SPIECE_SPACE = "\u2581"
_PROBE = "Hello world, this is a test.\nA second line: 12 items!"

# (kind, start, end) text ranges of one call, or a list of ids placed there as added tokens (signal spans).
CallItem = tuple[int, int] | list[int]
Token = tuple[int, int, int]  # (id, first char, one past the last char); added ids from a list get (-1, -1)


def _model(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = getattr(backend, "model", None)
    if model is None or not hasattr(model, "tokenize"):
        raise DataError(f"{type(tokenizer).__name__} has no SentencePiece-style backend model; NExT-GPT needs a "
                        "LLaMA / Vicuna tokenizer (tokenizer.model or tokenizer.json)")
    return model


def _added_pattern(tokenizer) -> re.Pattern | None:
    """A regex matching the tokenizer's added tokens (longest first), cached per vocabulary size."""
    cache = getattr(tokenizer, "_nextgpt_added", None)
    if cache is not None and cache[0] == len(tokenizer):
        return cache[1]
    added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(t) for t in added)) if added else None
    tokenizer._nextgpt_added = (len(tokenizer), pattern)
    return pattern


def encode_piece(tokenizer, text: str, start: int, end: int, dummy_prefix: bool) -> list[Token]:
    """SentencePiece on `text[start:end]` (no added tokens inside), with or without the dummy prefix. Char offsets
    are into `text`; the prefix-only token "▁" gets the empty range at `start`."""
    piece = text[start:end].replace(" ", SPIECE_SPACE)
    if dummy_prefix:
        piece = SPIECE_SPACE + piece
    char_of_byte = []
    for i, ch in enumerate(piece):
        char_of_byte.extend([i] * len(ch.encode("utf-8")))
    shift = 1 if dummy_prefix else 0
    out = []
    for tok in _model(tokenizer).tokenize(piece):
        b0, b1 = tok.offsets
        c0, c1 = char_of_byte[b0], char_of_byte[b1 - 1] + 1
        out.append((tok.id, start + max(0, c0 - shift), start + max(0, c1 - shift)))
    return out


def check_tokenizer(tokenizer) -> None:
    """Once per tokenizer: encoding a plain text with the dummy prefix must give the tokenizer's own ids."""
    if getattr(tokenizer, "_nextgpt_checked", False):
        return
    mine = [t[0] for t in encode_piece(tokenizer, _PROBE, 0, len(_PROBE), True)]
    theirs = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    if mine != theirs:
        raise DataError(f"{type(tokenizer).__name__}: its SentencePiece model does not reproduce the tokenizer on "
                        f"plain text ({mine[:8]}… vs {theirs[:8]}…); NExT-GPT needs a LLaMA / Vicuna tokenizer")
    tokenizer._nextgpt_checked = True


def encode_call(tokenizer, text: str, items: Sequence[CallItem], legacy: bool) -> list[list[Token]]:
    """One tokenizer call of the reference over `items` (text ranges of `text`, or id lists that stand where
    added tokens would be). Returns the tokens of each item (see the module docstring for the two behaviours)."""
    check_tokenizer(tokenizer)
    pattern = _added_pattern(tokenizer)
    vocab = tokenizer.get_added_vocab() if pattern is not None else {}
    # flatten: ("text", item, s, e) | ("added", item, id, s, e)
    flat: list[tuple] = []
    for k, item in enumerate(items):
        if isinstance(item, list):
            flat.extend(("added", k, i, -1, -1) for i in item)
            continue
        s, e = item
        pos = s
        for m in pattern.finditer(text, s, e) if pattern is not None else ():
            if m.start() > pos:
                flat.append(("text", k, pos, m.start()))
            flat.append(("added", k, vocab[m.group(0)], m.start(), m.end()))
            pos = m.end()
        if e > pos:
            flat.append(("text", k, pos, e))
    out: list[list[Token]] = [[] for _ in items]
    for j, piece in enumerate(flat):
        if piece[0] == "added":
            out[piece[1]].append(piece[2:])
            continue
        _, k, s, e = piece
        if legacy:
            if j + 1 < len(flat) and flat[j + 1][0] == "added":
                while e > s and text[e - 1].isspace():
                    e -= 1
            if j > 0 and flat[j - 1][0] == "added":
                while s < e and text[s].isspace():
                    s += 1
            if s >= e:
                continue
        out[k].extend(encode_piece(tokenizer, text, s, e, dummy_prefix=legacy or j == 0))
    return out
