"""The LEGACY training recipe: whole embedding + LM head, DeepSpeed optimizer setup, round-robin order, SD-1.5
caption-embedding widths (configs/*_legacy.yaml)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_model_overrides
from nextgpt.config import load_config
from nextgpt.errors import DataError
from nextgpt.model.summary import format_table, summarize
from nextgpt.stages import stage_preset


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory) -> Path:
    from nextgpt.toy.synthetic_data import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0)
    return root


def test_tiny_legacy_stage_1_trains_the_whole_embedding_and_head(tiny_models, pair_data, tmp_path, caplog):
    from nextgpt.dataset import RoundRobinBatchSampler
    from nextgpt.train.trainer import Trainer

    out = tmp_path / "run"
    config = load_config(REPO / "configs/tiny/stage_1_legacy.yaml", tiny_model_overrides(tiny_models) + [
        f"data.root={pair_data}", f"train.output_dir={out}", "train.max_steps=3", "train.log_sample_ids=true"])
    assert config.model.train_full_embeddings and config.train.optimizer_setup == "deepspeed"
    summary = summarize(config)
    assert summary["llm"].trainable == 2 * 1000 * 128 and summary["signal_rows"].trainable == 38 * 128 * 2
    assert "whole input embedding and LM head train" in format_table(summary, config)
    trainer = Trainer(config)  # (it configures logging: attach the capture to its logger afterwards)
    logging.getLogger("nextgpt.train.trainer").addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    assert isinstance(trainer.sampler, RoundRobinBatchSampler)
    assert "embeddings" in trainer.trainable_names and "signal_rows" in trainer.trainable_names
    # DeepSpeed's Adam decayed every parameter, biases included
    assert all(g["weight_decay"] == config.train.weight_decay for g in trainer.optimizer.param_groups)
    before = trainer.model.base_llm.get_input_embeddings().base.weight.detach().clone()
    run = trainer.run()
    assert "whole input embedding and LM head train" in caplog.text
    saved = load_file(str(run / "model.safetensors"))
    assert "signal_rows.embed" not in saved and saved["embeddings.embed"].shape == (1038, 128)
    assert saved["embeddings.lm_head"].shape == (1038, 128)
    changed = (saved["embeddings.embed"][:1000] != before[:1000]).any(dim=1)
    assert int(changed.sum()) > 0  # original-vocabulary rows trained
    sample_log = [json.loads(line)["ids"] for line in (run / "samples-rank-0.jsonl").read_text().splitlines()]
    assert [ids[0].split(":")[0] for ids in sample_log] == config.data.datasets  # in turn
    for ids in sample_log:  # one dataset per batch
        assert len({i.split(":")[0] for i in ids}) == 1


def test_new_stages_do_not_train_the_whole_embedding(tiny_models):
    for stage in (1, 2, 3):
        config = load_config(REPO / f"configs/tiny/stage_{stage}.yaml", tiny_model_overrides(tiny_models))
        assert not config.model.train_full_embeddings
        assert "embeddings" not in stage_preset(stage).groups(config.model.train_full_embeddings)
        assert summarize(config)["llm"].trainable == 0
        assert "whole input embedding" not in format_table(summarize(config), config)
    for stage in (1, 2, 3):  # every LEGACY stage trains them
        config = load_config(REPO / f"configs/stage_{stage}_legacy.yaml")
        assert "embeddings" in stage_preset(stage).groups(config.model.train_full_embeddings)


def test_deepspeed_setup_warmup_is_truncated_and_hf_rounds_up():
    from nextgpt.train.optim import warmup_steps

    legacy = load_config(REPO / "configs/stage_1_legacy.yaml", ["train.min_warmup_steps=0"])
    new = load_config(REPO / "configs/stage_1.yaml", ["train.warmup_ratio=0.1"])
    assert warmup_steps(legacy, 95) == 9 and warmup_steps(new, 95) == 10
    assert warmup_steps(load_config(REPO / "configs/stage_1_legacy.yaml"), 95) == 10  # max(10, int(9.5))


def test_caption_embedding_width_mismatch_stops_when_the_dataset_is_built(tiny_models, tmp_path):
    from nextgpt.dataset.json_datasets import ConversationDataset
    from nextgpt.dataset.samples import SampleOptions
    from nextgpt.model.language_model import load_tokenizer, register_signal_tokens

    tok = load_tokenizer(tiny_models["llm"])
    vocab = register_signal_tokens(tok, None, "legacy")[0]
    data = tmp_path / "gen.json"
    data.write_text(json.dumps([{"image_caption_embeddings": "a.jpg.npy", "image_captions": "a dot",
                                 "conversations": [{"from": "human", "value": "draw a dot"},
                                                   {"from": "gpt", "value": "<image>"}]}]))
    embed = tmp_path / "embed"
    embed.mkdir()
    np.save(embed / "a.jpg.npy", np.zeros((77, 1024), dtype=np.float16))  # SD-2 width
    options = SampleOptions(template="legacy", caption_widths={"image": 768, "video": 1024, "audio": 512},
                            caption_decoders={"image": "runwayml/stable-diffusion-v1-5"})
    with pytest.raises(DataError) as err:
        ConversationDataset(data, tok, vocab, options, embed_folder=embed)
    msg = str(err.value)
    for part in (str(embed / "a.jpg.npy"), "1024", "768", "preprocess_embeddings.py", "--modality image",
                 "runwayml/stable-diffusion-v1-5", f"--output-dir {embed}"):
        assert part in msg, part
    np.save(embed / "a.jpg.npy", np.zeros((77, 768), dtype=np.float16))
    assert len(ConversationDataset(data, tok, vocab, options, embed_folder=embed)) == 1
