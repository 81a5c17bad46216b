"""The LEGACY round-robin batch sampler (nextgpt/dataset/round_robin.py)."""
from __future__ import annotations

import pytest

from nextgpt.dataset import RoundRobinBatchSampler
from nextgpt.errors import CheckpointError, ConfigError

SIZES = [10, 4, 7]  # concatenated: [0, 10) [10, 14) [14, 21)


def dataset_of(index: int) -> int:
    return 0 if index < 10 else 1 if index < 14 else 2


def global_batches(sampler: RoundRobinBatchSampler) -> list[list[int]]:
    g = sampler.global_batch_size // sampler.micro_batch_size
    micro = list(sampler)
    return [sum(micro[i:i + g], []) for i in range(0, len(micro), g)]


def test_one_dataset_per_batch_in_turn_and_oversampled_epoch_length():
    s = RoundRobinBatchSampler(SIZES, micro_batch_size=2, seed=13)
    batches = global_batches(s)
    # largest (10) x 3 datasets = 30 samples = 15 batches of 2: 5 rounds of one batch per dataset
    assert s.steps_per_epoch == len(batches) == 15 and len(s) == 15
    assert sum(len(b) for b in batches) == 10 * 3
    assert [dataset_of(b[0]) for b in batches] == [0, 1, 2] * 5
    assert all(len({dataset_of(i) for i in b}) == 1 for b in batches)
    per_dataset = [[i for b in batches[k::3] for i in b] for k in range(3)]
    assert sorted(per_dataset[0]) == list(range(10))  # the largest: every sample once
    assert set(per_dataset[1]) == set(range(10, 14)) and len(per_dataset[1]) == 10  # oversampled
    # dataset 2 (7 samples, 3 whole batches per pass): its 4th and 5th batches come from a reshuffled pass
    assert len(per_dataset[2]) == 10 and set(per_dataset[2]) <= set(range(14, 21))
    assert len(set(per_dataset[2][:6])) == 6


def test_ranks_and_accumulation_split_each_global_batch():
    a = RoundRobinBatchSampler(SIZES, micro_batch_size=1, world_size=2, rank=0, gradient_accumulation_steps=2)
    b = RoundRobinBatchSampler(SIZES, micro_batch_size=1, world_size=2, rank=1, gradient_accumulation_steps=2)
    assert a.global_batch_size == 4 and a.steps_per_epoch == 3 * 3
    ma, mb = list(a), list(b)
    for step in range(a.steps_per_epoch):
        gb = a.global_batch(0, step)
        assert ma[2 * step:2 * step + 2] == [gb[0], gb[2]] and mb[2 * step:2 * step + 2] == [gb[1], gb[3]]
        assert len({dataset_of(i[0]) for i in gb}) == 1


def test_exact_resume_mid_epoch_and_new_order_per_epoch():
    full = RoundRobinBatchSampler(SIZES, micro_batch_size=2, seed=5)
    full.set_epoch(1)
    whole = list(full)
    run = RoundRobinBatchSampler(SIZES, micro_batch_size=2, seed=5)
    run.set_epoch(1)
    it = iter(run)
    first = [next(it) for _ in range(7)]
    run.advance(7)
    state = run.state_dict()
    resumed = RoundRobinBatchSampler(SIZES, micro_batch_size=2, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert first + list(resumed) == whole
    epoch0 = RoundRobinBatchSampler(SIZES, micro_batch_size=2, seed=5)
    assert list(epoch0) != whole
    with pytest.raises(CheckpointError, match="dataset_sizes"):
        RoundRobinBatchSampler([10, 4, 8], micro_batch_size=2, seed=5).load_state_dict(state)


def test_a_dataset_smaller_than_a_global_batch_is_an_error():
    with pytest.raises(ConfigError, match="dataset"):
        RoundRobinBatchSampler([10, 3], micro_batch_size=4)
