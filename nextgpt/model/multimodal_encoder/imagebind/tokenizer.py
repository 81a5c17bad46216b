"""ImageBind's text tokenizer: the OpenAI CLIP byte-level BPE, with the pre-fix truncation of the reference.

Written by hand because no maintained library reproduces this exact combination: CLIP's cleaning (ftfy, double
HTML unescape, whitespace collapse, lower-case), its ``regex`` pre-tokenisation and BPE, then [SOT] + ids + [EOT]
**cut to the first 77** (a caption of more than 75 BPE ids loses its EOT; the text head then reads the SOT
position) and zero padding. The vocabulary file is the one open_clip_torch ships.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

import ftfy
import regex
import torch

from nextgpt.errors import ConfigError

CONTEXT_LENGTH = 77
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48894 merge rules (lines 1..48894 of the file; line 0 is a header)
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def default_bpe_path() -> Path:
    """The CLIP BPE vocabulary shipped inside the installed open_clip_torch package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("open_clip_torch is not installed; it ships the CLIP BPE vocabulary ImageBind needs")
    path = Path(list(spec.submodule_search_locations)[0]) / BPE_FILE_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: CLIP BPE vocabulary not found in the open_clip_torch package")
    return path


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode character table (256 entries, in CLIP's order)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clean_text(text: str) -> str:
    """ftfy fix, HTML-unescape twice, strip, collapse whitespace, lower-case (CLIP's cleaning)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    """CLIP BPE tokenizer returning [77] (one string) or [N, 77] int64 ids, as the reference's pre-fix version."""

    def __init__(self, bpe_path: str | Path | None = None, context_length: int = CONTEXT_LENGTH) -> None:
        path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.context_length = context_length
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self._cache: dict[str, str] = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}

    def bpe(self, piece: str) -> str:
        """Merge the symbols of one pre-token by merge rank; returns the symbols joined by spaces."""
        if piece in self._cache:
            return self._cache[piece]
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(word) > 1:
            ranked = [
                (self.bpe_ranks[pair], pair)
                for pair in zip(word, word[1:])
                if pair in self.bpe_ranks
            ]
            if not ranked:
                break
            _, (first, second) = min(ranked)
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self._cache[piece] = out
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without SOT/EOT."""
        ids: list[int] = []
        for piece in _PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[tok] for tok in self.bpe(mapped).split(" "))
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[i] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        length = context_length or self.context_length
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        result = torch.zeros(len(batch), length, dtype=torch.long)
        for row, text in enumerate(batch):
            ids = ([self.sot_id] + self.encode(text) + [self.eot_id])[:length]  # EOT lost beyond 75 ids
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result[0] if single else result


@lru_cache(maxsize=1)
def get_tokenizer() -> SimpleTokenizer:
    """A shared tokenizer instance (building the merge table takes about a tenth of a second)."""
    return SimpleTokenizer()
