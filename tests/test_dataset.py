"""Datasets, collator and builder (nextgpt/dataset/{json_datasets,collator,mixture}.py) on hand-made JSON files
(errors, limits, skips) and on the synthetic dataset (the reference's sample data: test_dataset_samples.py)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nextgpt.config import AudioTargetConfig, DataConfig, ImageTargetConfig, VideoTargetConfig
from nextgpt.constants import IGNORE_INDEX, PLACEHOLDER_ID
from nextgpt.dataset import (
    CATALOG,
    CatalogEntry,
    ConversationDataset,
    DataCollator,
    ModalityGroupedBatchSampler,
    SampleOptions,
    SkippedSample,
    SkipStats,
    build_train_dataset,
    conversation_data,
    is_empty_batch,
    model_inputs,
    register,
)
from nextgpt.toy import synthetic_data as synthetic
from nextgpt.dataset.embeddings import precompute_caption_embeddings
from nextgpt.errors import ConfigError, DataError
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens
from nextgpt.model.multimodal_encoder.imagebind.data import preprocess

MEDIA_TOKENS = {"image": 8, "video": 8, "audio": 8}
ENCODER_SHAPE = {"image": (3, 224, 224), "video": (15, 3, 2, 224, 224), "audio": (3, 1, 128, 204)}
PAIRS = {"image": "cc3m", "video": "webvid", "audio": "audiocap"}
WEBVID_MISSING = {"00225661.mp4", "00007343.mp4", "00070041.mp4"}


@pytest.fixture(scope="module")
def tok(tiny_llm_dir):
    return load_tokenizer(tiny_llm_dir)


@pytest.fixture(scope="module")
def signal(tok):
    return register_signal_tokens(tok, None, "new")[0]


@pytest.fixture(scope="module")
def collator(tok):
    return DataCollator.from_tokenizer(tok)


def _config(root, names, **kw) -> DataConfig:
    kinds = {"image_target": ImageTargetConfig, "video_target": VideoTargetConfig, "audio_target": AudioTargetConfig}
    kw = {k: kinds[k](**v) if k in kinds else v for k, v in kw.items()}
    return DataConfig(root=str(root), datasets=list(names), **kw)


def _build(root, names, tok, signal, template="v1", targets=(), max_length=None, **kw):
    return build_train_dataset(_config(root, names, **kw), tok, signal, template, max_length,
                               MEDIA_TOKENS if max_length else None, targets)


def sample_text(dataset, sample) -> str:
    """The gpt turn of a sample, from the dataset's JSON."""
    name, index = sample["id"].split(":")
    part = dataset.datasets[dataset.names.index(name)]
    return json.loads(part.data_path.read_text())[int(index)]["conversations"][1]["value"]


def _all(dataset):
    return [dataset[i] for i in range(len(dataset))]


# ------------------------------------------------------------------------------------------ hand-made data


def _image(path: Path, colour=(200, 30, 30), size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(records if isinstance(records, str) else json.dumps(records))
    return path


def _emb(folder: Path, name: str, value: float, shape=(77, 32)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / name, np.full(shape, value, dtype=np.float16))


def _conv(human: str, gpt: str) -> list[dict]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


@pytest.fixture()
def toy(tmp_path):
    """A small NEW-schema dataset: two comprehension samples and two generation samples."""
    for k, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        _image(tmp_path / "images" / name, (40 * k, 100, 200))
    for k, name in enumerate(["c.jpg.npy", "d.jpg.npy"]):
        _emb(tmp_path / "embed", name, k + 1)
    records = [
        {"input_image": "a.jpg", "conversations": _conv("<image>\nWhat is it?", "A red square.")},
        {"input_image": ["a.jpg", "b.jpg"], "conversations": _conv("<image> and <image>: compare.", "Both blue.")},
        {"output_image": "c.jpg", "image_captions": "a cat", "image_caption_embeddings": "c.jpg.npy",
         "conversations": _conv("Draw a cat.", "Here: <image>")},
        {"image_captions": "a dog", "image_caption_embeddings": "d.jpg.npy",
         "conversations": _conv("Draw a dog.", "Sure <image>")},
    ]
    _write(tmp_path / "toy.json", records)
    return tmp_path


def _toy_dataset(root, tok, signal, records=None, **options):
    if records is not None:
        _write(root / "toy.json", records)
    return ConversationDataset(root / "toy.json", tok, signal, SampleOptions(**options),
                               image_folder=root / "images", embed_folder=root / "embed", name="toy")


def test_collator_pads_and_concatenates_in_order(toy, tok, signal, collator):
    dataset = _toy_dataset(toy, tok, signal)
    assert dataset.modalities == ["image"] * 4
    samples = _all(dataset)
    batch = collator(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["input_ids"].shape == (4, max(lengths)) == batch["labels"].shape == batch["attention_mask"].shape
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert batch["input_ids"][row, n:].eq(tok.pad_token_id).all()
        assert batch["labels"][row, n:].eq(IGNORE_INDEX).all()
        assert torch.equal(batch["input_ids"][row, :n], samples[row]["input_ids"])
    # media in order of appearance: a (sample 0), a, b (sample 1)
    expected = preprocess([toy / "images" / n for n in ("a.jpg", "a.jpg", "b.jpg")], "image", aspect_ratio="pad")
    assert torch.allclose(batch["media"]["image"], expected)
    # one caption embedding per span, in span order
    assert batch["caption_embeddings"]["image"].shape == (2, 77, 32)
    assert batch["caption_embeddings"]["image"][:, 0, 0].tolist() == [1.0, 2.0]
    assert batch["ids"] == ["toy:0", "toy:1", "toy:2", "toy:3"] and batch["num_skipped"] == 0
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask", "labels", "media", "features", "feature_mask",
                                        "caption_embeddings", "captions", "targets"}


def test_pad_and_square_aspect_modes(toy, tok, signal):
    pad = _toy_dataset(toy, tok, signal)[0]["media"]["image"]
    square = _toy_dataset(toy, tok, signal, image_aspect_ratio="square")[0]["media"]["image"]
    assert pad.shape == square.shape == (1, 3, 224, 224) and not torch.allclose(pad, square)


def test_targets_only_when_asked_and_only_complete(toy, tok, signal, collator):
    dataset = _toy_dataset(toy, tok, signal, targets=("image",), image_target={"height": 32, "width": 32})
    assert dataset.modalities == ["image", "image", "image:targets", "image"]  # the sampler keeps them apart
    assert dataset[2]["targets"]["image"].shape == (1, 3, 32, 32)
    assert dataset[3]["targets"] == {}  # no output_image in the JSON
    full = collator([dataset[2]])
    assert full["targets"]["image"].shape == (1, 3, 32, 32) and full["incomplete_targets"] == []
    mixed = collator([dataset[2], dataset[3]])
    assert mixed["targets"] == {} and mixed["incomplete_targets"] == ["image"]
    assert _toy_dataset(toy, tok, signal)[2]["targets"] == {}


def test_random_target_windows_depend_only_on_seed_epoch_and_index(tmp_path, tok, signal):
    """A long target clip's random window is drawn from (seed, epoch, index): reproducible in any worker layout
    and after a resume, new in every epoch."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    (tmp_path / "audios").mkdir()
    sf.write(tmp_path / "audios" / "long.wav", rng.standard_normal(16000 * 30).astype(np.float32) * 0.1, 16000)
    _emb(tmp_path / "embed", "long.wav.npy", 1.0, shape=(16,))
    _write(tmp_path / "a.json", [{"output_audio": "long.wav", "audio_captions": "noise",
                                  "audio_caption_embeddings": "long.wav.npy",
                                  "conversations": _conv("Play noise.", "Here: <audio>")}])

    def target(seed: int, epoch: int):
        dataset = ConversationDataset(tmp_path / "a.json", tok, signal,
                                      SampleOptions(targets=("audio",), audio_target={"duration": 2.0}),
                                      audio_folder=tmp_path / "audios", embed_folder=tmp_path / "embed")
        dataset.set_epoch(epoch, seed)
        return dataset[0]["targets"]["audio"]

    assert torch.equal(target(1, 0), target(1, 0))
    assert not torch.equal(target(1, 0), target(1, 1))
    assert not torch.equal(target(1, 0), target(2, 0))


def test_online_captions(toy, tok, signal, collator):
    dataset = _toy_dataset(toy, tok, signal, caption_embeddings="online")
    batch = collator(_all(dataset))
    assert batch["captions"] == {"image": ["a cat", "a dog"]} and batch["caption_embeddings"] == {}


def test_malformed_json_names_the_file(tmp_path, tok, signal):
    path = _write(tmp_path / "bad.json", '[{"conversations": [}')
    with pytest.raises(DataError, match=r"bad\.json.*not valid JSON"):
        ConversationDataset(path, tok, signal)
    path = _write(tmp_path / "dict.json", {"conversations": []})
    with pytest.raises(DataError, match=r"dict\.json.*must be a list"):
        ConversationDataset(path, tok, signal)
    with pytest.raises(DataError, match=r"not found.*missing\.json"):
        ConversationDataset(tmp_path / "missing.json", tok, signal)


@pytest.mark.parametrize("record, message", [
    ({"input_image": ["a.jpg", "b.jpg"], "conversations": _conv("<image> what?", "x")},
     r"sample 1: 1 <image> placeholder\(s\) in human turns but 2 file\(s\) in 'input_image'"),
    ({"conversations": _conv("<video> what?", "x")}, r"sample 1: 1 <video> placeholder"),
    ({"image_caption_embeddings": ["c.jpg.npy", "d.jpg.npy"], "conversations": _conv("draw", "ok <image>")},
     r"sample 1: 1 <image> placeholder\(s\) in gpt turns \(signal spans\) but 2 entries in "
     r"'image_caption_embeddings'"),
    ({"conversations": _conv("draw", "ok <audio>")}, r"sample 1: 1 <audio> placeholder.*0 entries"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
     r"sample 1: turn 1 is from 'human', expected 'gpt'"),
    ({"conversations": [{"from": "human", "value": 3}]}, r"sample 1: turn 0 must be"),
    ({"input_image": 5, "conversations": _conv("<image>", "x")}, r"sample 1: 'input_image' must be a string"),
    (["not", "a", "dict"], r"sample 1: a sample must be a JSON object"),
])
def test_sample_errors_name_file_and_index(toy, tok, signal, record, message):
    good = {"input_image": "a.jpg", "conversations": _conv("<image>", "x")}
    with pytest.raises(DataError, match=r"toy\.json " + message):
        _toy_dataset(toy, tok, signal, [good, record])


def test_missing_caption_embedding_names_file_and_index(toy, tok, signal):
    records = [{"image_caption_embeddings": "c.jpg.npy", "conversations": _conv("a", "b <image>")},
               {"image_caption_embeddings": "nope.jpg.npy", "conversations": _conv("a", "b <image>")}]
    dataset = _toy_dataset(toy, tok, signal, records)
    assert dataset[0]["caption_embeddings"]["image"].shape == (1, 77, 32)
    with pytest.raises(DataError, match=r"toy\.json sample 1: caption embedding file not found: .*nope\.jpg\.npy"):
        dataset[1]
    pickled = toy / "embed" / "obj.jpg.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    records[1]["image_caption_embeddings"] = "obj.jpg.npy"
    with pytest.raises(DataError, match=r"sample 1: cannot read caption embedding .*obj\.jpg\.npy"):
        _toy_dataset(toy, tok, signal, records)[1]
    with pytest.raises(DataError, match=r"toy\.json sample 0: .*no caption-embedding folder"):
        ConversationDataset(toy / "toy.json", tok, signal, SampleOptions(), name="x")


def test_bad_media_is_skipped_or_strict(toy, tok, signal, collator, caplog):
    (toy / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    records = [{"input_image": "a.jpg", "conversations": _conv("<image>", "x")},
               {"input_image": "gone.jpg", "conversations": _conv("<image>", "x")},
               {"input_image": "broken.jpg", "conversations": _conv("<image>", "x")}]
    dataset = _toy_dataset(toy, tok, signal, records)
    with caplog.at_level(logging.WARNING, logger="nextgpt.dataset.json_datasets"):
        samples = _all(dataset)
    assert samples[1] == SkippedSample("toy:1", "missing_media", samples[1].message)
    assert "gone.jpg" in samples[1].message and "skipping toy:1" in caplog.text
    assert samples[2].reason == "bad_media" and "broken.jpg" in samples[2].message
    batch = collator(samples)
    assert batch["num_samples"] == 1 and batch["num_skipped"] == 2 and batch["media"]["image"].shape[0] == 1
    assert batch["skipped"] == [("toy:1", "missing_media"), ("toy:2", "bad_media")]
    stats = SkipStats()
    stats.update(batch)
    stats.update(collator(samples[1:]))
    assert stats.summary()["skipped_by_reason"] == {"missing_media": 2, "bad_media": 2}
    assert stats.samples == 1 and stats.empty_batches == 1

    strict = _toy_dataset(toy, tok, signal, records, strict=True)
    with pytest.raises(DataError, match=r"toy\.json sample 1: .*gone\.jpg.*strict"):
        strict[1]


def test_empty_batch_is_a_valid_batch(collator):
    batch = collator([SkippedSample("x:0", "missing_media", "m"), SkippedSample("x:1", "too_long", "t")])
    assert is_empty_batch(batch)
    assert batch["input_ids"].shape == (0, 0) == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["media"] == {} and batch["caption_embeddings"] == {} and batch["num_skipped"] == 2


def test_media_limits_drop_items_with_their_placeholders(toy, tok, signal, caplog):
    records = [{"input_image": ["a.jpg", "b.jpg", "c.jpg"],
                "conversations": _conv("<image>\n<image>\n<image>\nCompare.", "Different.")},
               {"image_caption_embeddings": [f"e{k}.npy" for k in range(18)],
                "conversations": _conv("Draw many.", " ".join(["<image>"] * 18))}]
    for k in range(18):
        _emb(toy / "embed", f"e{k}.npy", k)
    with caplog.at_level(logging.WARNING):
        dataset = _toy_dataset(toy, tok, signal, records, max_media_per_sample=2)
    assert "keeping the first 2" in caplog.text and "keeping the first 16" in caplog.text
    sample = dataset[0]
    assert sample["input_ids"].tolist().count(PLACEHOLDER_ID["image"]) == 2
    expected = preprocess([toy / "images" / n for n in ("a.jpg", "b.jpg")], "image", aspect_ratio="pad")
    assert torch.allclose(sample["media"]["image"], expected)
    sample = dataset[1]
    ids = sample["input_ids"].tolist()
    assert ids.count(signal.token_ids["image"][0]) == 16
    assert sample["caption_embeddings"]["image"][:, 0, 0].tolist() == [float(k) for k in range(16)]


def test_max_length_cuts_only_trailing_text(toy, tok, signal, caplog):
    long_answer = " ".join(["word"] * 200)
    records = [{"input_image": "a.jpg", "conversations": _conv("<image>\nDescribe.", long_answer)},
               {"image_caption_embeddings": "c.jpg.npy", "conversations": _conv("Draw.", long_answer + " <image>")},
               {"input_image": "a.jpg", "conversations": _conv("Describe. " + long_answer + " <image>", "ok")}]
    full = _toy_dataset(toy, tok, signal, records)
    n0 = len(full[0]["input_ids"])
    dataset = _toy_dataset(toy, tok, signal, records, max_length=60, media_tokens=MEDIA_TOKENS)
    sample = dataset[0]
    assert sample["truncated"] and len(sample["input_ids"]) == 60 - 7 < n0  # 1 image = 8 spliced positions
    assert torch.equal(sample["input_ids"], full[0]["input_ids"][:53])
    assert (sample["labels"] != IGNORE_INDEX).any()
    for index in (1, 2):  # the cut would go through a signal span / an input placeholder
        skipped = dataset[index]
        assert isinstance(skipped, SkippedSample) and skipped.reason == "too_long"
    roomy = _toy_dataset(toy, tok, signal, records, max_length=n0 + 7, media_tokens=MEDIA_TOKENS)
    assert not roomy[0]["truncated"] and len(roomy[0]["input_ids"]) == n0
    strict = _toy_dataset(toy, tok, signal, records, max_length=60, media_tokens=MEDIA_TOKENS, strict=True)
    with pytest.raises(DataError, match=r"sample 1: .*exceed max_length 60"):
        strict[1]
    with pytest.raises(ConfigError, match="media_tokens"):
        SampleOptions(max_length=60)


def test_build_train_dataset_errors(toy, tok, signal):
    with pytest.raises(ConfigError, match=r"unknown dataset 'cc3m_encc'; did you mean 'cc3m_enc'"):
        _build(toy, ["cc3m_encc"], tok, signal)
    with pytest.raises(ConfigError, match="data.datasets is empty"):
        _build(toy, [], tok, signal)
    with pytest.raises(ConfigError, match="data.root"):
        _build(toy / "nowhere", ["cc3m_enc"], tok, signal)
    with pytest.raises(DataError, match=r"data file not found: .*cc3m_comprehension\.json"):
        _build(toy, ["cc3m_enc"], tok, signal)
    register("toy_test_entry", conversation_data("toy.json", image_folder="images", embed_folder="embed"))
    try:
        dataset, modalities, lengths = _build(toy, ["toy_test_entry"], tok, signal)
        assert len(dataset) == 4 and modalities == ["image"] * 4
        # data.embed_dir replaces the entry's folder
        other = toy / "other_embed"
        _emb(other, "c.jpg.npy", 7)
        _emb(other, "d.jpg.npy", 8)
        dataset, _, _ = _build(toy, ["toy_test_entry"], tok, signal, embed_dir="other_embed")
        assert float(dataset[2]["caption_embeddings"]["image"][0, 0, 0]) == 7.0
        register("toy_bad_entry", CatalogEntry(CATALOG["toy_test_entry"].target,
                                               {"data_path": "toy.json", "colour": "red"}))
        with pytest.raises(ConfigError, match="toy_bad_entry.*colour"):
            _build(toy, ["toy_bad_entry"], tok, signal)
    finally:
        CATALOG.pop("toy_test_entry", None)
        CATALOG.pop("toy_bad_entry", None)


def test_dataloader_workers_give_the_same_batches(samples_dir, tmp_path, tok, signal, collator):
    """Skip counts made in worker processes reach the main process; 2 workers == 0 workers."""
    records = json.loads((samples_dir / "T_X_pair_data/webvid/webvid_comprehension.json").read_text())
    present = [r for r in records if r["input_video"] not in WEBVID_MISSING][:3]
    missing = [r for r in records if r["input_video"] in WEBVID_MISSING]
    _write(tmp_path / "mixed.json", [present[0], missing[0], missing[1], present[1], missing[2], present[2]])
    audios = json.loads((samples_dir / "T_X_pair_data/audiocap/audiocap_comprehension.json").read_text())[:4]
    _write(tmp_path / "audios.json", audios)
    root = tmp_path
    (root / "T_X_pair_data").symlink_to(samples_dir / "T_X_pair_data")
    register("mixed_webvid_test", conversation_data("mixed.json", video_folder="T_X_pair_data/webvid/videos"))
    register("few_audios_test", conversation_data("audios.json", audio_folder="T_X_pair_data/audiocap/audios"))
    try:
        dataset, modalities, lengths = _build(root, ["mixed_webvid_test", "few_audios_test"], tok, signal)
    finally:
        CATALOG.pop("mixed_webvid_test")
        CATALOG.pop("few_audios_test")
    sampler = ModalityGroupedBatchSampler(modalities, lengths, micro_batch_size=2, drop_last=False, seed=3)
    runs = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=workers)
        runs.append(list(loader))
    assert len(runs[0]) == len(runs[1]) == len(sampler)
    for a, b in zip(*runs):
        assert a["ids"] == b["ids"] and a["skipped"] == b["skipped"]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        assert a["media"].keys() == b["media"].keys()
        for m in a["media"]:
            # DataLoader workers run torch with one thread, the main process with several: float results of
            # the same decode may round differently (resampling, interpolation), hence a tolerance
            torch.testing.assert_close(a["media"][m], b["media"][m], rtol=1e-5, atol=1e-5)
        assert len(set(a["modalities"])) <= 1  # single-modality batches
    stats = SkipStats()
    for batch in runs[1]:
        stats.update(batch)
    assert stats.skipped == 3 and stats.summary()["skipped_by_reason"] == {"missing_media": 3}
    assert stats.samples == 3 + 4


# -------------------------------------------------------------------------------------------- synthetic data

SMALL = synthetic.SyntheticCounts(images=6, videos=3, audios=3, it_image=3, it_video=2, it_audio=2, mosit=3,
                                  llava=3, alpaca=3)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory, tiny_models):
    """A small synthetic dataset with caption embeddings from the tiny decoders."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, seed=1, counts=SMALL)
    decoders = {"image": tiny_models["sd"], "video": tiny_models["zeroscope"], "audio": tiny_models["audioldm"]}
    jobs = [("T_X_pair_data/cc3m/cc3m_generation.json", "image", "embed"),
            ("T_X_pair_data/webvid/webvid_generation.json", "video", "embed"),
            ("T_X_pair_data/audiocap/audiocap_generation.json", "audio", "embed")]
    jobs += [(f"IT_data/T-T+X_data/{m}_instruction_tuning.json", m, "it/embed") for m in decoders]
    jobs += [("IT_data/MosIT_data/mosit_instruction_tuning.json", m, "it/embed") for m in decoders]
    # LEGACY's image embeddings have their own folders (SD-1.5 at 7B)
    jobs += [("T_X_pair_data/cc3m/cc3m.json", "image", "embed_sd15"),
             ("IT_data/T-T+X_data/image_instruction_tuning.json", "image", "it/embed_sd15")]
    # the held-out split (the catalog's *_val entries)
    jobs += [(f"heldout/{name}_generation.json", m, "heldout/embed")
             for name, m in (("cc3m", "image"), ("webvid", "video"), ("audiocap", "audio"))]
    jobs += [(f"heldout/{m}_instruction_tuning.json", m, "heldout/embed") for m in decoders]
    for data, modality, folder in jobs:
        precompute_caption_embeddings(root / data, modality, decoders[modality], root / folder, device="cpu")
    return root


def test_synthetic_data_loads_with_zero_skips(synthetic_root, tok, signal, collator):
    json_entries = {n for n, e in CATALOG.items() if "data_path" in e.params}  # (not the WebDataset shard ones)
    names = [n for n in json_entries if (synthetic_root / CATALOG[n].params["data_path"]).exists()]
    assert set(names) == json_entries - {"videochat_instruction"}
    dataset, modalities, lengths = _build(
        synthetic_root, names, tok, signal, targets=("image", "video", "audio"), max_length=512,
        image_target={"height": 32, "width": 32}, video_target={"height": 32, "width": 32, "max_frames": 4},
        audio_target={"duration": 2.56})
    assert {"image", "video", "audio", "text"} <= set(modalities)
    assert any("+" in m for m in modalities)  # MosIT dialogues mix modalities
    assert {"image:targets", "video:targets", "audio:targets"} <= set(modalities)  # the *_dec samples
    samples = _all(dataset)
    assert [s for s in samples if isinstance(s, SkippedSample)] == []
    sampler = ModalityGroupedBatchSampler(modalities, lengths, micro_batch_size=3, drop_last=False)
    stats = SkipStats()
    for indices in sampler:
        batch = collator([samples[i] for i in indices])
        stats.update(batch)
        assert batch["incomplete_targets"] == []
        spans = {m: sum(s["spans"].get(m, 0) for s in (samples[i] for i in indices)) for m in ENCODER_SHAPE}
        for m, n in spans.items():
            if n:
                assert len(batch["caption_embeddings"][m]) == n
        for m, x in batch["media"].items():
            assert x.shape[1:] == ENCODER_SHAPE[m]
            assert x.shape[0] == int((batch["input_ids"] == PLACEHOLDER_ID[m]).sum())
    assert stats.skipped == 0 and stats.samples >= len(dataset)
    # every generation sample of the pair data carries a decoder target of the configured size
    gen = [s for s in samples if s["id"].startswith(("cc3m_dec:", "webvid_dec:", "audiocap_dec:"))]
    shapes = {"image": (1, 3, 32, 32), "video": (1, 3, 4, 32, 32), "audio": (1, 256, 64)}
    for s in gen:
        ((m, target),) = s["targets"].items()
        assert target.shape == shapes[m]
    # every media file of the synthetic data decodes with the encoder loaders
    for m, suffix in (("image", ".jpg"), ("video", ".mp4"), ("audio", ".wav")):
        files = sorted(synthetic_root.rglob(f"*{suffix}"))
        assert files and preprocess(files, m).shape == (len(files), *ENCODER_SHAPE[m])
