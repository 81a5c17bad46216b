"""Modality-grouped, length-grouped, distributed, resumable batch sampler (nextgpt.dataset.sampler)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nextgpt.dataset.sampler import ModalityGroupedBatchSampler, split_to_even_chunks
from nextgpt.errors import CheckpointError, ConfigError, DataError

SIZES = {"image": 37, "video": 21, "audio": 18, "text": 29}


def make_data(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    modalities = [m for m, n in sizes.items() for _ in range(n)]
    order = rng.permutation(len(modalities))
    modalities = [modalities[i] for i in order]
    lengths = [int(x) for x in rng.integers(1, 300, size=len(modalities))]
    return modalities, lengths


def sampler(modalities, lengths, **kw):
    args = dict(micro_batch_size=3, world_size=2, rank=0, gradient_accumulation_steps=2, seed=11)
    args.update(kw)
    return ModalityGroupedBatchSampler(modalities, lengths, **args)


def test_split_to_even_chunks_reference_rule():
    lengths = [10, 9, 8, 7, 6, 5]
    assert split_to_even_chunks([0, 1, 2, 3, 4, 5], lengths, 2) == [[0, 3, 4], [1, 2, 5]]
    assert split_to_even_chunks([0, 1, 2, 3, 4], lengths, 2) == [[0, 2, 4], [1, 3]]  # not divisible: strided


def test_every_global_batch_is_single_modality_and_length_grouped():
    mods, lens = make_data()
    s = sampler(mods, lens)
    g = s.global_batch_size
    assert g == 12
    batches = s.epoch_batches(0)
    assert len(batches) == s.steps_per_epoch == sum(n // g for n in SIZES.values())
    seen_modalities = set()
    for gb in batches:
        assert len(gb) == 4 and all(len(mb) == 3 for mb in gb)
        flat = [i for mb in gb for i in mb]
        assert len({mods[i] for i in flat}) == 1
        seen_modalities.add(mods[flat[0]])
        for mb in gb:  # within-megabatch sorted: each micro-batch descending by length
            assert [lens[i] for i in mb] == sorted((lens[i] for i in mb), reverse=True)
        totals = [sum(lens[i] for i in mb) for mb in gb]
        assert max(totals) - min(totals) <= max(lens[i] for i in flat)  # balanced across micro-batches
        # the longest samples of the global batch lead the micro-batches
        top = sorted(flat, key=lambda i: -lens[i])[: len(gb)]
        assert sorted(mb[0] for mb in gb) == sorted(top)
    assert seen_modalities == set(SIZES)
    # modalities are shuffled together, not emitted pool after pool
    runs = sum(1 for a, b in zip(batches, batches[1:]) if mods[a[0][0]] != mods[b[0][0]])
    assert runs >= 3


def test_each_sample_exactly_once_across_two_ranks():
    sizes = {"image": 24, "video": 12, "audio": 36, "text": 12}  # multiples of the global batch (12)
    mods, lens = make_data(sizes)
    for drop_last in (True, False):
        ranks = [sampler(mods, lens, rank=r, drop_last=drop_last) for r in range(2)]
        outs = [list(s) for s in ranks]
        assert len(outs[0]) == len(outs[1]) == len(ranks[0]) == 7 * 2
        flat = [i for out in outs for mb in out for i in mb]
        assert sorted(flat) == list(range(len(mods)))
        assert not set(i for mb in outs[0] for i in mb) & set(i for mb in outs[1] for i in mb)
        for a, b in zip(outs[0], outs[1]):  # the k-th micro-batch of both ranks belongs to one global batch
            assert {mods[i] for i in a} == {mods[i] for i in b}


def test_drop_last_true_drops_only_incomplete_batches():
    mods, lens = make_data()
    outs = [list(sampler(mods, lens, rank=r)) for r in range(2)]
    flat = [i for out in outs for mb in out for i in mb]
    assert len(flat) == len(set(flat))  # no repeat
    s = sampler(mods, lens)
    dropped = s.dropped_per_epoch
    assert dropped == {m: n % 12 for m, n in sorted(SIZES.items())}
    per_mod = Counter(mods[i] for i in flat)
    assert all(per_mod[m] == n - n % 12 for m, n in SIZES.items())


def test_drop_last_false_completes_with_repeats_of_the_same_modality():
    mods, lens = make_data()
    outs = [list(sampler(mods, lens, rank=r, drop_last=False)) for r in range(2)]
    flat = [i for out in outs for mb in out for i in mb]
    assert set(flat) == set(range(len(mods)))  # no loss
    counts = Counter(flat)
    for m, n in SIZES.items():
        padded = -(-n // 12) * 12
        assert sum(counts[i] for i in range(len(mods)) if mods[i] == m) == padded
    for out in outs:
        for mb in out:
            assert len({mods[i] for i in mb}) == 1


def test_resume_mid_epoch_gives_the_remaining_order():
    mods, lens = make_data()
    for rank in range(2):
        a = sampler(mods, lens, rank=rank)
        a.set_epoch(2)
        full = list(a)
        ga = a.gradient_accumulation_steps
        consumed = 3  # global batches trained on before the checkpoint
        a.advance(consumed)
        state = json.loads(json.dumps(a.state_dict()))  # survives a JSON round trip
        assert state["epoch"] == 2 and state["position"] == 3

        b = sampler(mods, lens, rank=rank)
        b.load_state_dict(state)
        b.set_epoch(2)  # the trainer's loop re-selects the saved epoch: position kept
        assert list(b) == full[consumed * ga :]
        b.set_epoch(3)  # next epoch starts from its beginning
        assert b.position == 0
        c = sampler(mods, lens, rank=rank)
        c.set_epoch(3)
        assert list(b) == list(c)


def test_resume_with_other_world_size_but_same_global_batch():
    mods, lens = make_data()
    two = [sampler(mods, lens, world_size=2, rank=r, micro_batch_size=3) for r in range(2)]
    one = sampler(mods, lens, world_size=1, rank=0, micro_batch_size=6)
    assert one.global_batch_size == two[0].global_batch_size
    two[0].advance(4)
    one.load_state_dict(two[0].state_dict())
    expected = {frozenset(i for r in range(2) for mb in two[r].epoch_batches(0)[k] for i in mb) for k in range(4, 6)}
    got = one.epoch_batches(0)[4:6]
    assert {frozenset(i for mb in gb for i in mb) for gb in got} == expected


def test_order_is_a_pure_function_of_seed_and_epoch():
    mods, lens = make_data()
    a, b = sampler(mods, lens), sampler(mods, lens)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    e1 = list(a)
    assert e1 == list(b)
    a.set_epoch(0)
    assert list(a) != e1  # different epochs differ
    assert list(sampler(mods, lens, seed=12)) != list(sampler(mods, lens, seed=11))
    # iterating twice does not advance anything
    assert list(a) == list(a)


def test_grouping_off_is_a_plain_distributed_shuffle():
    mods, lens = make_data()
    ranks = [sampler(mods, lens, rank=r, group_by_modality=False, drop_last=False) for r in range(2)]
    outs = [list(s) for s in ranks]
    flat = [i for out in outs for mb in out for i in mb]
    assert set(flat) == set(range(len(mods)))
    assert len(flat) == -(-len(mods) // 12) * 12
    assert any(len({mods[i] for i in mb}) > 1 for out in outs for mb in out)  # modalities mixed
    s = sampler(mods, lens, group_by_modality=False)
    assert s.steps_per_epoch == len(mods) // 12
    assert list(s) != list(sampler(mods, lens, group_by_modality=False, seed=3))


def test_works_as_a_dataloader_batch_sampler():
    mods, lens = make_data()
    s = sampler(mods, lens, rank=1)
    data = torch.arange(len(mods)) * 10
    loader = DataLoader(data, batch_sampler=s)
    got = [b.tolist() for b in loader]
    assert got == [[i * 10 for i in mb] for mb in s]
    assert len(loader) == len(s) == s.steps_per_epoch * 2


def test_lengths_optional_and_single_rank():
    mods, _ = make_data()
    s = ModalityGroupedBatchSampler(mods, None, micro_batch_size=4, seed=0)
    out = list(s)
    assert all(len(mb) == 4 and len({mods[i] for i in mb}) == 1 for mb in out)
    assert len(out) == sum(n // 4 for n in SIZES.values())


def test_bad_arguments_raise_project_errors():
    mods, lens = make_data()
    with pytest.raises(ConfigError, match="rank"):
        sampler(mods, lens, rank=2)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        sampler(mods, lens, micro_batch_size=0)
    with pytest.raises(DataError, match="lengths"):
        sampler(mods, lens[:-1])
    with pytest.raises(DataError, match="non-negative"):
        sampler(mods, [-1] + lens[1:])
    with pytest.raises(ConfigError, match="no complete global batch"):
        sampler(mods[:5], lens[:5])
    s = sampler(mods, lens)
    state = s.state_dict()
    with pytest.raises(CheckpointError, match="seed"):
        sampler(mods, lens, seed=5).load_state_dict(state)
    with pytest.raises(CheckpointError, match="position"):
        s.load_state_dict({**state, "position": s.steps_per_epoch + 1})
    with pytest.raises(CheckpointError, match="epoch"):
        s.load_state_dict({"position": 0})
    with pytest.raises(ConfigError):
        s.advance(s.steps_per_epoch + 1)
