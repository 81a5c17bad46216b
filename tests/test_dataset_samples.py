"""Datasets and collator on the reference repository's sample data (skipped without ../shared)."""
from __future__ import annotations

import json

import pytest
import torch

from nextgpt.constants import IGNORE_INDEX, PLACEHOLDER_ID
from nextgpt.dataset import DataCollator, SkippedSample
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens
from test_dataset import ENCODER_SHAPE, PAIRS, WEBVID_MISSING, _all, _build, sample_text


@pytest.fixture(scope="module")
def tok(tiny_llm_dir):
    return load_tokenizer(tiny_llm_dir)


@pytest.fixture(scope="module")
def signal(tok):
    return register_signal_tokens(tok, None, "new")[0]


@pytest.fixture(scope="module")
def collator(tok):
    return DataCollator.from_tokenizer(tok)


# --------------------------------------------------------------------------------------------- sample data


def test_every_sample_json_loads_through_the_catalog(samples_dir, tok, signal):
    names = [f"{PAIRS[m]}_{kind}" for m in PAIRS for kind in ("enc", "dec")]
    dataset, modalities, lengths = _build(samples_dir, names, tok, signal)
    assert len(dataset) == 120 and dataset.names == names
    for k, name in enumerate(names):
        assert dataset.datasets[k].name == name and len(dataset.datasets[k]) == 20
        modality = next(m for m in PAIRS if name.startswith(PAIRS[m]))
        assert modalities[20 * k:20 * (k + 1)] == [modality] * 20
    assert all(isinstance(n, int) and n > 0 for n in lengths)
    assert dataset.locate(45) == ("webvid_enc", 5)


@pytest.fixture(scope="module")
def comprehension(samples_dir, tok, signal):
    """Every sample of the three comprehension files (decoded once for the tests below)."""
    out = {}
    for m, pair in PAIRS.items():
        dataset, _, _ = _build(samples_dir, [f"{pair}_enc"], tok, signal)
        records = json.loads((samples_dir / f"T_X_pair_data/{pair}/{pair}_comprehension.json").read_text())
        out[m] = (records, _all(dataset))
    return out


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_comprehension_samples(comprehension, tok, modality):
    records, samples = comprehension[modality]
    skipped = [s for s in samples if isinstance(s, SkippedSample)]
    if modality == "video":  # exactly the three videos missing from the sample data
        assert len(skipped) == 3
        assert {records[int(s.sample_id.split(":")[1])]["input_video"] for s in skipped} == WEBVID_MISSING
        assert {s.reason for s in skipped} == {"missing_media"}
    else:
        assert skipped == []
    for record, sample in zip(records, samples):
        if isinstance(sample, SkippedSample):
            continue
        media = sample["media"][modality]
        assert media.shape == (1, *ENCODER_SHAPE[modality]) and media.dtype == torch.float32
        assert torch.isfinite(media).all()
        ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
        assert ids[0] == tok.bos_token_id and ids.count(PLACEHOLDER_ID[modality]) == 1
        assert sum(i < 0 for i in ids) == 1
        supervised = [k for k, label in enumerate(labels) if label != IGNORE_INDEX]
        # only the caption and </s> are supervised: a contiguous tail of the sequence
        assert supervised == list(range(supervised[0], len(ids)))
        assert all(labels[k] == ids[k] for k in supervised)
        assert ids[-1] == tok.eos_token_id
        answer = tok.decode(ids[supervised[0]:-1])
        assert answer.split() == record["conversations"][1]["value"].split()
        assert sample["caption_embeddings"] == {} and sample["targets"] == {}


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_generation_samples(samples_dir, tok, signal, modality):
    dataset, _, _ = _build(samples_dir, [f"{PAIRS[modality]}_dec"], tok, signal)
    span_length = {"image": 7, "video": 47, "audio": 15}[modality]
    emb_shape = (512,) if modality == "audio" else (77, 1024)
    for sample in _all(dataset):
        assert not isinstance(sample, SkippedSample)  # no media is decoded without targets
        ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
        span_ids = [i for i in ids if i in signal.all_ids()]
        assert span_ids == signal.token_ids[modality]
        start = ids.index(signal.token_ids[modality][0])
        span = ids[start:start + span_length]
        assert span[0::2] == signal.token_ids[modality]
        assert set(span[1::2]) == {signal.separator_id}
        assert labels[start:start + span_length] == span
        # supervised: the response text, the span and </s>, as one contiguous tail; the instruction is masked
        supervised = [k for k, label in enumerate(labels) if label != IGNORE_INDEX]
        assert supervised == list(range(supervised[0], len(ids))) and ids[-1] == tok.eos_token_id
        response = tok.decode(ids[supervised[0]:start]).strip()
        assert response == sample_text(dataset, sample).replace(f"<{modality}>", "").strip()
        emb = sample["caption_embeddings"][modality]
        assert emb.shape == (1, *emb_shape) and emb.dtype == torch.float16
        if modality == "audio":
            assert abs(float(emb.float().norm()) - 1.0) < 1e-2
        assert sample["spans"] == {modality: 1} and sample["media"] == {}


def test_generation_targets_on_samples(samples_dir, tok, signal, collator):
    dataset, _, _ = _build(samples_dir, ["cc3m_dec", "audiocap_dec"], tok, signal, targets=("image", "audio"),
                           image_target={"height": 64, "width": 64})
    batch = collator([dataset[0], dataset[1], dataset[20]])
    assert batch["targets"]["image"].shape == (2, 3, 64, 64)
    assert float(batch["targets"]["image"].min()) >= -1 and float(batch["targets"]["image"].max()) <= 1
    assert batch["targets"]["audio"].shape == (1, 1040, 64)
    assert batch["caption_embeddings"]["image"].shape == (2, 77, 1024)
    assert batch["incomplete_targets"] == []


def test_legacy_pair_formats(samples_dir, tiny_llm_dir):
    tok = load_tokenizer(tiny_llm_dir)
    signal = register_signal_tokens(tok, None, "legacy")[0]
    # the samples ship SD-2 embeddings only (embed/); LEGACY's own folder (embed_sd15/) would hold SD-1.5 ones
    dataset, modalities, _ = _build(samples_dir, ["cc3m_enc_legacy", "cc3m_dec_legacy"], tok, signal,
                                    template="legacy", embed_dir="embed")
    records = json.loads((samples_dir / "T_X_pair_data/cc3m/cc3m.json").read_text())
    assert len(dataset) == 40 and set(modalities) == {"image"}
    enc, dec = dataset[0], dataset[20]
    caption = " ".join(records[0]["caption"].lower().split())
    text = tok.decode([i if i >= 0 else tok.unk_token_id for i in enc["input_ids"].tolist()])
    # the 2023 tokenizer: no "▁" before <Img>, and a lone (masked) "▁" after "### Assistant:"
    assert text.replace(tok.unk_token, "[X]") == f"<s> ### Human:<Img>[X]</Img> generate a caption\n### " \
                                                  f"Assistant:  {caption}\n###"
    supervised = [i for i, label in zip(enc["input_ids"].tolist(), enc["labels"].tolist()) if label != IGNORE_INDEX]
    assert tok.decode(supervised).split() == (caption + " ###").split()
    ids = dec["input_ids"].tolist()
    start = ids.index(signal.token_ids["image"][0])
    assert ids[start:start + 4] == signal.token_ids["image"]  # LEGACY: n contiguous signal tokens
    assert dec["caption_embeddings"]["image"].shape == (1, 77, 1024)
