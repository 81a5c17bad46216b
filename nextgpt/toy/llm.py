"""The embedded default's tiny LLM: a random LLaMA and a SentencePiece tokenizer trained here, in Vicuna's format."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from nextgpt.conversation import TEMPLATES

TINY_LLM = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4)
TINY_VOCAB_SIZE = 1000

# Words the embedded default talks about; everything else still tokenizes through byte fallback.
_TINY_WORDS = """
a an the of and or to in on at with for from by is are was were be this that these those it its there here
image picture photo photograph video clip movie film audio sound recording sample track noise tone music
red green blue yellow orange purple pink white black gray grey cyan magenta brown dark light bright
circle square triangle rectangle star ellipse line dot shape shapes ball box
moving moves left right up down across slowly quickly bouncing rising falling spinning growing shrinking
sine beep beeps chirp chirps rising falling hum buzz whistle white noise pink noise silence loud quiet high low
pitch frequency hertz hz second seconds
show me generate create make produce draw render display give please can could would you i want like
what is about describe summary summarize caption tell explain happening see hear
sure here certainly of course okay for your reference hope this helps
user assistant human chat curious artificial intelligence helpful detailed polite answers questions
background foreground center middle top bottom corner small large big tiny
one two three four five six seven eight nine ten
"""


def _tiny_corpus() -> list[str]:
    lines = [t.system for t in TEMPLATES.values() if t.system]
    words = _TINY_WORDS.split()
    for i in range(0, len(words), 7):
        lines.append(" ".join(words[i:i + 12]))
    lines += [f"{w.capitalize()} {w}. {w}, {w}? {w}!" for w in words]
    lines += ["USER: ASSISTANT: Human: Assistant: ### \n 0123456789 .,;:!?'\"()[]{}<>/-_+=*#&%$@"]
    return lines


def build_tiny_llm(outdir: str | Path, seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE, **arch) -> Path:
    """Write a tiny random LLaMA with a locally trained SentencePiece tokenizer, in the on-disk format of
    Vicuna (config.json, model.safetensors, tokenizer.model, tokenizer.json), loadable offline with
    AutoTokenizer / AutoModelForCausalLM."""
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    model_proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_tiny_corpus()), model_writer=model_proto, model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    (outdir / "tokenizer.model").write_bytes(model_proto.getvalue())
    tokenizer = LlamaTokenizer.from_pretrained(str(outdir))
    tokenizer.save_pretrained(str(outdir))

    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, rms_norm_eps=1e-5,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                         **{**TINY_LLM, **arch})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(outdir))
    return outdir
