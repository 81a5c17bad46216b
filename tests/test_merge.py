"""merge_lora_weights.py / nextgpt.model.merge: LoRA adapter + signal rows folded into a standalone LLaMA; the merged
checkpoint generates what the unmerged one does (spec §10.5)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import save_tiny_stage3
from nextgpt.errors import CheckpointError
from nextgpt.generation import NextGPTGenerator
from nextgpt.model.modeling import NextGPTModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import merge_lora_weights  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stage3(tiny_models, tmp_path_factory) -> Path:
    """A tiny stage-3 checkpoint whose LoRA B matrices and signal rows are non-trivial (random)."""
    return save_tiny_stage3(tiny_models, tmp_path_factory.mktemp("stage3") / "stage_3", seed=1, lora_b_std=0.05,
                            signal_rows_std=0.05)


@pytest.fixture(scope="module")
def merged(stage3, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "merged"
    assert merge_lora_weights.main(["--model", str(stage3), "--output", str(out)]) == 0
    return out


def test_layout_and_standalone_llm(stage3, merged):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (merged / "llm" / "config.json").is_file() and (merged / "llm" / "model.safetensors").is_file()
    assert not (merged / "adapter").exists()
    assert "llm: llm\n" in (merged / "config.yaml").read_text()
    llm = AutoModelForCausalLM.from_pretrained(str(merged / "llm"))
    tok = AutoTokenizer.from_pretrained(str(merged / "llm"))
    assert type(llm).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n for n, _ in llm.named_parameters())
    assert llm.get_input_embeddings().weight.shape[0] == len(tok) == llm.config.vocab_size
    ids = tok.convert_tokens_to_ids(["<image_00>", "<video_23>", "<audio_07>"])
    assert all(i >= 1000 for i in ids)  # appended after the base vocabulary of 1000
    state = load_file(str(merged / "model.safetensors"))
    original = load_file(str(stage3 / "model.safetensors"))
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    rows = sorted(tok.convert_tokens_to_ids([t for t in tok.get_vocab() if t.startswith(("<image_", "<video_",
                                                                                          "<audio_"))]))
    torch.testing.assert_close(llm.get_input_embeddings().weight[rows], state["signal_rows.embed"])
    torch.testing.assert_close(llm.get_output_embeddings().weight[rows], state["signal_rows.lm_head"])


def test_merged_logits_and_greedy_tokens_match(stage3, merged):
    from transformers import AutoModelForCausalLM

    before = NextGPTModel.from_pretrained(stage3).eval()
    after = NextGPTModel.from_pretrained(merged).eval()
    assert before.has_lora and not after.has_lora
    signal = before.signal.span("image") + before.signal.span("audio")
    text = before.tokenizer("A red circle and a beep", add_special_tokens=True)["input_ids"]
    ids = torch.tensor([text + signal])
    standalone = AutoModelForCausalLM.from_pretrained(str(merged / "llm")).eval()
    with torch.no_grad():
        a = before.llm(input_ids=ids).logits
        b = after.llm(input_ids=ids).logits
        c = standalone(input_ids=ids).logits
        with before.llm.disable_adapter():
            no_lora = before.llm(input_ids=ids).logits
    assert (no_lora - a).abs().max() > 1e-3  # the adapter matters, so the comparison below means something
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)  # fp32: LoRA's x·A·B vs x·(W + A·B)
    torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-5)
    kwargs = dict(max_new_tokens=48, max_outputs_per_modality=0)
    tokens_before = NextGPTGenerator(before).generate("Describe a blue square.", **kwargs).token_ids
    tokens_after = NextGPTGenerator.from_pretrained(merged).generate("Describe a blue square.", **kwargs).token_ids
    assert tokens_before == tokens_after and len(tokens_before) > 0


def test_merge_refuses_to_overwrite_and_names_a_missing_source(stage3, merged, tmp_path, capsys):
    from nextgpt.model.merge import merge_checkpoint

    with pytest.raises(CheckpointError, match="not empty"):
        merge_checkpoint(stage3, merged)
    assert merge_lora_weights.main(["--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err


def test_generation_merges_the_adapter_in_memory_unless_asked_not_to(stage3):
    merged = NextGPTGenerator.from_pretrained(stage3)
    unmerged = NextGPTGenerator.from_pretrained(stage3, merge_lora=False)
    assert not merged.model.has_lora and unmerged.model.has_lora
    kwargs = dict(max_new_tokens=32, max_outputs_per_modality=0)
    a = unmerged.generate("Describe a blue square.", **kwargs).token_ids
    b = merged.generate("Describe a blue square.", **kwargs).token_ids
    assert a == b and len(a) > 0  # fp32: x·A·B vs x·(W + A·B) differ by rounding only
