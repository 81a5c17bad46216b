"""The demo's tiny "Vicuna" (nextgpt/toy/pretrain.py): the random tiny LLM learns the synthetic conversations."""
from __future__ import annotations

import json
import shutil

import torch

from nextgpt.conversation import tokenize_conversation
from nextgpt.model.language_model import load_llm, load_tokenizer
from nextgpt.toy.pretrain import PRETRAINED_MARKER, pretrain_tiny_llm, text_markers

CONVERSATIONS = [
    [{"from": "human", "value": "Please create a picture of a red circle."},
     {"from": "gpt", "value": "Here is a picture of a red circle. <image>"}],
    [{"from": "human", "value": "Can you play me a 440 Hz tone?"},
     {"from": "gpt", "value": "Here is a sound of a 440 Hz tone. <audio>"}],
    [{"from": "human", "value": "<image>\nWhat is in the picture?"},
     {"from": "gpt", "value": "A blue square."}],
    [{"from": "human", "value": "Add the two numbers. 2 and 3"}, {"from": "gpt", "value": "2 plus 3 equals 5."}],
]


def test_placeholders_become_plain_text_markers():
    turns = text_markers(CONVERSATIONS[1] + CONVERSATIONS[2])
    assert [t["value"] for t in turns] == [
        "Can you play me a 440 Hz tone?", "Here is a sound of a 440 Hz tone. [audio]",
        "[image]\nWhat is in the picture?", "A blue square."]
    assert CONVERSATIONS[1][1]["value"].endswith("<audio>")  # the input is not changed


def test_pretraining_lowers_the_answer_loss_and_rewrites_the_weights_in_place(tiny_llm_dir, tmp_path):
    llm = tmp_path / "llm"
    shutil.copytree(tiny_llm_dir, llm)
    before = (llm / "model.safetensors").read_bytes()
    tok = load_tokenizer(llm)
    examples = [tokenize_conversation("v1", text_markers(c), tok, None) for c in CONVERSATIONS]

    def answer_loss() -> float:
        model = load_llm(llm).eval()
        with torch.no_grad():
            return sum(float(model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss)
                       for ex in examples) / len(examples)

    start = answer_loss()
    marker = pretrain_tiny_llm(llm, CONVERSATIONS, steps=40, batch_size=2, lr=3e-3, seed=0)
    end = answer_loss()
    assert end < 0.5 * start, (start, end)
    assert (llm / "model.safetensors").read_bytes() != before
    assert json.loads((llm / PRETRAINED_MARKER).read_text()) == marker
    assert marker["conversations"] == 4 and marker["steps"] == 40
    assert marker["loss_last_tenth"] < marker["loss_first_tenth"]
    assert not any(p.name.startswith(".tmp-") for p in llm.iterdir())  # the temporary folder is gone
