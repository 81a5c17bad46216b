"""WebDataset shards: made from the synthetic dataset, read as the JSON dataset's samples, split across ranks and
DataLoader workers without overlap, resumed exactly mid-shard, bad members skipped like bad files."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import tiny_model_overrides
from nextgpt.config import DataConfig, load_config
from nextgpt.dataset import DataCollator, build_train_dataset
from nextgpt.dataset.catalog import CATALOG, register, webdataset_data
from nextgpt.dataset.shard_writer import write_shards
from nextgpt.dataset.webdataset import ShardStream, expand_shards, read_tar_samples, round_robin_state, scan_tar
from nextgpt.errors import ConfigError, DataError
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens
from nextgpt.toy import synthetic_data as synthetic

REPO = Path(__file__).resolve().parents[1]
PAIRS = ("cc3m_enc", "webvid_enc", "audiocap_enc")
COUNTS = synthetic.SyntheticCounts(images=10, videos=4, audios=4, it_image=0, it_video=0, it_audio=0, mosit=0,
                                   llava=0, alpaca=0)
TOKENS = {"image": 8, "video": 8, "audio": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The synthetic stage-1 sets and their shards (3 samples per shard), with `<name>_shards` catalog entries."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, seed=3, counts=COUNTS)
    for name in PAIRS:
        params = CATALOG[name].params
        folders = {m: root / params[f"{m}_folder"] if params[f"{m}_folder"] else None
                   for m in ("image", "video", "audio")}
        write_shards(root / params["data_path"], root / "wds" / name, folders=folders, shard_size=3)
        register(f"{name}_shards", webdataset_data(f"wds/{name}/*.tar"), overwrite=True)
    return root


@pytest.fixture(scope="module")
def tok(tiny_llm_dir):
    tok = load_tokenizer(tiny_llm_dir)
    register_signal_tokens(tok, None, "new")
    return tok


def stream(root: Path, tok, names=PAIRS, **kw) -> ShardStream:
    signal = register_signal_tokens(tok, None, "new")[0]
    config = DataConfig(root=str(root), datasets=[f"{n}_shards" for n in names], num_workers=kw.pop("workers", 0),
                        shuffle_buffer=kw.pop("buffer", 4))
    built, _, _ = build_train_dataset(config, tok, signal, "v1", 512, TOKENS, (), **kw)
    assert isinstance(built, ShardStream)
    return built


def epoch_ids(s: ShardStream, tok) -> list[list[str]]:
    loader = DataLoader(s, batch_size=None, num_workers=s.num_workers, collate_fn=DataCollator.from_tokenizer(tok))
    return [batch["ids"] for batch in loader]


def test_shards_hold_the_json_samples_and_one_epoch_yields_each_once(data, tok):
    signal = register_signal_tokens(tok, None, "new")[0]
    json_set, _, _ = build_train_dataset(DataConfig(root=str(data), datasets=list(PAIRS)), tok, signal, "v1", 512,
                                         TOKENS)
    s = stream(data, tok)
    assert s.num_samples == len(json_set) == 18 and len(s.shards) == 4 + 2 + 2
    # the same samples: tokens and encoder inputs of shard sample KEY equal JSON sample KEY
    by_id = {}
    for source, path in s.shards:
        for key, members in read_tar_samples(path):
            by_id[(PAIRS[source], int(key))] = s.sources[source].build(path, key, members)
    for i in range(len(json_set)):
        name, index = json_set.locate(i)
        mine, theirs = by_id[(name, index)], json_set[i]
        assert torch.equal(mine["input_ids"], theirs["input_ids"]) and torch.equal(mine["labels"], theirs["labels"])
        assert mine["media"].keys() == theirs["media"].keys()
        for m in mine["media"]:
            torch.testing.assert_close(mine["media"][m], theirs["media"][m], rtol=0, atol=1e-6)
    # one epoch (micro batch 1: nothing left over) = every sample once; batches hold one catalog entry
    ids = [i for batch in epoch_ids(s, tok) for i in batch]
    assert Counter(i.split(":")[0] + ":" + str(int(i.rsplit("/", 1)[1])) for i in ids) == Counter(
        f"{n}_shards:{k}" for n, k in (json_set.locate(i) for i in range(len(json_set))))
    # the buffer shuffles: not the file order
    assert ids != sorted(ids)


def test_trainer_epoch_over_shards_sees_the_json_sample_multiset(data, tiny_models, tmp_path):
    from nextgpt.train.trainer import Trainer

    def run(datasets, out):  # (one run: a second, JSON, run would double this test's minutes on 2 cores)
        config = load_config(REPO / "configs/tiny/stage_1.yaml", tiny_model_overrides(tiny_models) + [
            f"data.root={data}", f"data.datasets=[{', '.join(datasets)}]", "train.epochs=1", "train.save_steps=1000",
            "train.micro_batch_size=2", "train.log_sample_ids=true", f"train.output_dir={out}", "data.num_workers=0"])
        Trainer(config).run()
        return [i for line in (out / "samples-rank-0.jsonl").read_text().splitlines() for i in json.loads(line)["ids"]]

    shard_ids = run([f"{n}_shards" for n in PAIRS], tmp_path / "shards")
    as_json = Counter(i.split("_shards:")[0] + ":" + str(int(i.rsplit("/", 1)[1])) for i in shard_ids)
    # the JSON run's epoch: every sample once (micro batch 2 divides the 10 / 4 / 4 samples: nothing dropped)
    signal = register_signal_tokens(load_tokenizer(tiny_models["llm"]), None, "new")[0]
    json_set, _, _ = build_train_dataset(DataConfig(root=str(data), datasets=list(PAIRS)), None, signal, "v1")
    json_ids = [f"{n}:{k}" for n, k in map(json_set.locate, range(len(json_set)))]
    assert as_json == Counter(json_ids) and len(json_ids) == 18


def test_two_ranks_by_two_workers_read_disjoint_samples(data, tok):
    seen = []
    for rank in (0, 1):
        s = stream(data, tok, workers=2, micro_batch_size=1, world_size=2, rank=rank)
        ids = [i for batch in epoch_ids(s, tok) for i in batch]
        assert len(ids) == s.steps_per_epoch == len(set(ids))
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 2 * s.steps_per_epoch >= 14  # 18 samples over 4 streams; a few left over


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume_mid_shard(data, tok, workers):
    full = stream(data, tok, workers=workers, micro_batch_size=1, seed=7)
    full.set_epoch(1)
    reference = epoch_ids(full, tok)
    assert len(reference) == full.steps_per_epoch == 18
    position = 5  # after 5 samples: inside a 3-sample shard whatever the shard order
    resumed = stream(data, tok, workers=workers, micro_batch_size=1, seed=7)
    resumed.load_state_dict(dict(full.state_dict(), epoch=1, position=position))
    assert epoch_ids(resumed, tok) == reference[position:]
    resumed.advance(3)
    assert epoch_ids(resumed, tok) == reference[position + 3:]
    with pytest.raises(Exception, match="seed"):
        stream(data, tok, micro_batch_size=1, seed=8).load_state_dict(resumed.state_dict())


def test_round_robin_state_follows_the_dataloader_order():
    # workers with 2, 1, 3 batches are taken w0 w1 w2 w0 w2 w2
    assert round_robin_state([2, 1, 3], 4) == ([2, 1, 1], [2])
    assert round_robin_state([2, 1, 3], 2) == ([1, 1, 0], [2, 0])
    assert round_robin_state([2, 1, 3], 6) == ([2, 1, 3], [])
    assert round_robin_state([0, 3], 2) == ([0, 2], [1])


def test_undecodable_member_is_skipped_or_strict(data, tok, tmp_path):
    src = sorted((data / "wds" / "cc3m_enc").glob("*.tar"))[0]
    bad = tmp_path / "bad" / "bad-00000.tar"
    bad.parent.mkdir()
    with tarfile.open(src) as tin, tarfile.open(bad, "w") as tout:
        for info in tin:
            payload = tin.extractfile(info).read()
            if info.name.endswith(".jpg") and info.name.startswith(scan_tar(src)[0]):
                payload = b"not a jpeg"
            info.size = len(payload)
            tout.addfile(info, io.BytesIO(payload))
    register("bad_shards", webdataset_data(str(bad)), overwrite=True)
    signal = register_signal_tokens(tok, None, "new")[0]
    config = DataConfig(root=str(data), datasets=["bad_shards"], shuffle_buffer=1, num_workers=0)
    s, _, _ = build_train_dataset(config, tok, signal, "v1", 512, TOKENS, ())
    batches = epoch_ids_and_skips(s, tok)
    assert sum(skips for _, skips in batches) == 1 and sum(len(ids) for ids, _ in batches) == 2
    strict, _, _ = build_train_dataset(DataConfig(root=str(data), datasets=["bad_shards"], strict=True, num_workers=0), tok, signal,
                                       "v1", 512, TOKENS, ())
    with pytest.raises(DataError, match="bad-00000.tar"):
        epoch_ids(strict, tok)
    with pytest.raises(DataError, match="no file matches"):
        expand_shards(tmp_path / "none" / "*.tar")


def epoch_ids_and_skips(s, tok):
    loader = DataLoader(s, batch_size=None, collate_fn=DataCollator.from_tokenizer(tok))
    return [(b["ids"], b["num_skipped"]) for b in loader]


def test_validation_refuses_shard_entries(data, tok):
    """Validation averages over a fixed held-out set; a WebDataset entry in data.eval_datasets is named."""
    from nextgpt.config import Config
    from nextgpt.train.validation import Validator

    signal = register_signal_tokens(tok, None, "new")[0]
    config = Config(data=DataConfig(root=str(data), eval_datasets=["cc3m_enc_shards"]))
    args = dict(tokenizer=tok, signal=signal, template="v1", max_length=512, media_tokens=TOKENS,
                target_modalities=())
    with pytest.raises(ConfigError, match=r"eval_datasets \['cc3m_enc_shards'\].*WebDataset"):
        Validator(config, args, rank=0, world=1)
