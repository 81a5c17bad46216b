"""The tiny LLM in Vicuna's on-disk format and signal-token registration (spec §2.1)."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from nextgpt.model.language_model import load_llm, load_tokenizer, register_signal_tokens


def test_tiny_llm_loads_offline_with_auto_classes(tiny_llm_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json"} <= \
        {p.name for p in tiny_llm_dir.iterdir()}
    tok = AutoTokenizer.from_pretrained(tiny_llm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    assert isinstance(model, LlamaForCausalLM)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    out = model(torch.tensor([tok("a red circle")["input_ids"]]))
    assert out.logits.shape[-1] == len(tok)


def test_byte_fallback_tokenizes_any_text(tiny_llm_dir):
    tok = load_tokenizer(tiny_llm_dir)
    text = "Grüße, 東京! 🎵 tabs\tand newlines\n ok"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok.pad_token == tok.unk_token  # v1 setup: pad = unk


def test_registration_adds_rows_initialised_to_the_mean(tiny_llm_dir):
    tok = load_tokenizer(tiny_llm_dir)
    model = load_llm(tiny_llm_dir)
    old = len(tok)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    head_before = model.get_output_embeddings().weight.detach().clone()
    vocab, ids = register_signal_tokens(tok, model, "new", {"image": 4, "video": 24, "audio": 8})
    assert len(tok) == old + 36 and ids == list(range(old, old + 36))
    assert vocab.token_ids["image"] == ids[:4] and vocab.token_ids["audio"] == ids[-8:]
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == old + 36
    torch.testing.assert_close(emb[:old], emb_before)
    torch.testing.assert_close(head[:old], head_before)
    torch.testing.assert_close(emb[old:], emb_before.mean(0, keepdim=True).expand(36, -1))
    torch.testing.assert_close(head[old:], head_before.mean(0, keepdim=True).expand(36, -1))
    # a second registration (e.g. a saved stage tokenizer) changes nothing
    again, ids2 = register_signal_tokens(tok, model, "new", {"image": 4, "video": 24, "audio": 8})
    assert ids2 == ids and len(tok) == old + 36 and model.get_input_embeddings().weight.shape[0] == old + 36
    # each signal string is one atomic token
    assert tok("<video_23>", add_special_tokens=False)["input_ids"] == [vocab.token_ids["video"][23]]


def test_legacy_registration(tiny_llm_dir):
    tok = load_tokenizer(tiny_llm_dir)
    model = load_llm(tiny_llm_dir)
    vocab, ids = register_signal_tokens(tok, model, "legacy", {"image": 4, "video": 24, "audio": 8})
    assert len(ids) == 38 and tok.convert_ids_to_tokens(ids[:3]) == ["<Img>", "</Img>", "[IMG0]"]
    assert vocab.span("video") == ids[6:30] and vocab.separator_id is None
