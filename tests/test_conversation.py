"""Templates, label masking, placeholder tokenization and signal spans (spec §1C.2, §2, §6.5–6.6)."""
from __future__ import annotations

import pytest

from nextgpt.constants import AUDIO_TOKEN_INDEX, IGNORE_INDEX, IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX
from nextgpt.conversation import (
    TEMPLATES,
    SignalVocab,
    build_conversation,
    get_template,
    signal_token_strings,
    tokenize_conversation,
    tokenize_prompt,
    tokens_to_register,
)
from nextgpt.errors import DataError
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens

V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
             "helpful, detailed, and polite answers to the user's questions.")
HUMAN_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                "helpful, detailed, and polite answers to the human's questions.")
TWO_ROUNDS = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
              {"from": "human", "value": "again"}, {"from": "gpt", "value": "bye"}]


@pytest.fixture(scope="module")
def tok(tiny_llm_dir):
    return load_tokenizer(tiny_llm_dir)


@pytest.fixture(scope="module")
def new_vocab(tok):
    return register_signal_tokens(tok, None, "new")[0]


@pytest.fixture(scope="module")
def legacy_tok(tiny_llm_dir):
    tok = load_tokenizer(tiny_llm_dir)
    vocab = register_signal_tokens(tok, None, "legacy")[0]
    return tok, vocab


def supervised_runs(tok, example) -> list[str]:
    """Decoded text of every maximal run of supervised tokens."""
    runs, cur = [], []
    for i, label in zip(example.input_ids, example.labels):
        if label != IGNORE_INDEX:
            assert label == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r).strip() for r in runs]


@pytest.mark.parametrize("template, prompt, runs", [
    ("v1", f"{V1_SYSTEM} USER: hi ASSISTANT: hello</s>USER: again ASSISTANT: bye</s>", ["hello</s>", "bye</s>"]),
    ("vicuna_v1", f"{V1_SYSTEM} USER: hi ASSISTANT: hello</s>USER: again ASSISTANT: bye</s>",
     ["hello</s>", "bye</s>"]),
    ("llava_v1", f"{HUMAN_SYSTEM} USER: hi ASSISTANT: hello</s>USER: again ASSISTANT: bye</s>",
     ["hello</s>", "bye</s>"]),
    ("llava_v0", f"{HUMAN_SYSTEM}###Human: hi###Assistant: hello###Human: again###Assistant: bye###",
     ["hello###", "bye###"]),
    ("llama_2", "[INST] <<SYS>>\n" + TEMPLATES["llama_2"].system + "\n<</SYS>>\n\nhi [/INST] hello </s>"
                "<s>[INST] again [/INST] bye </s>", ["hello </s>", "bye </s>"]),
    ("mpt", "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives "
            "helpful and honest answers.<|im_end|><|im_start|>user\nhi<|im_end|><|im_start|>assistant\nhello"
            "<|im_end|><|im_start|>user\nagain<|im_end|><|im_start|>assistant\nbye<|im_end|>",
     ["hello<|im_end|>", "bye<|im_end|>"]),
    # LEGACY: the concatenated pieces of the 2023 code; each piece is tokenized with its own dummy prefix
    ("legacy", "### Human: hi\n### Assistant: hello\n###Human: again\n### Assistant: bye\n###",
     ["hello\n###", "bye\n###"]),
])
def test_templates_render_and_mask(tok, template, prompt, runs):
    conv = build_conversation(template, TWO_ROUNDS)
    assert conv.get_prompt() == prompt
    example = tokenize_conversation(template, TWO_ROUNDS, tok, None)
    assert example.input_ids[0] == tok.bos_token_id and example.labels[0] == IGNORE_INDEX
    assert supervised_runs(tok, example) == runs


def test_plain_template_masks_the_first_turn(tok):
    turns = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red circle"}]
    conv = build_conversation("plain", turns)
    assert conv.get_prompt() == "<image>a red circle\n"
    example = tokenize_conversation("plain", turns, tok, None)
    assert example.input_ids[:2] == [tok.bos_token_id, IMAGE_TOKEN_INDEX]
    assert supervised_runs(tok, example) == ["a red circle"]
    assert example.input_ids[-1] == example.labels[-1]  # the trailing "\n" is supervised


def test_v0_template_keeps_its_few_shot_example_but_samples_do_not():
    prompt = get_template("v0").get_prompt()
    assert prompt.startswith(HUMAN_SYSTEM + "###Human: What are the key differences between renewable")
    assert prompt.endswith("economic and social instability.\n###")
    assert "renewable" not in build_conversation("v0", TWO_ROUNDS).get_prompt()


def test_generation_prompt_ends_with_open_assistant_turn():
    assert build_conversation("v1", TWO_ROUNDS[:1], add_generation_prompt=True).get_prompt() == \
        f"{V1_SYSTEM} USER: hi ASSISTANT:"
    assert build_conversation("legacy", TWO_ROUNDS[:1], add_generation_prompt=True).get_prompt() == \
        "### Human: hi\n### Assistant: "


def test_turns_must_alternate_and_leading_gpt_turn_is_dropped():
    conv = build_conversation("v1", [{"from": "gpt", "value": "x"}] + TWO_ROUNDS[:2])
    assert [m[0] for m in conv.messages] == ["USER", "ASSISTANT"]
    with pytest.raises(DataError, match="turn 1 is from 'human'"):
        build_conversation("v1", [TWO_ROUNDS[0], TWO_ROUNDS[0]], where="x.json sample 3")
    with pytest.raises(DataError, match="unknown conversation template"):
        get_template("nope")


def test_placeholders_become_negative_ids_without_extra_bos(tok):
    ids = tokenize_prompt("<image>\nhi <video> and <audio> then <image>", tok)
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1  # the reference adds one after <video>/<audio> (§12.14)
    assert [i for i in ids if i < 0] == [IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX, AUDIO_TOKEN_INDEX,
                                         IMAGE_TOKEN_INDEX]
    assert ids[1] == IMAGE_TOKEN_INDEX
    # the text between placeholders is tokenized as the tokenizer does on its own
    plain = tok("hi ", add_special_tokens=False)["input_ids"]
    start = ids.index(IMAGE_TOKEN_INDEX) + 1
    assert ids[start:ids.index(VIDEO_TOKEN_INDEX)] == tok("\nhi ", add_special_tokens=False)["input_ids"]
    assert plain  # sanity: something was tokenized


def test_signal_strings_and_registration_order():
    counts = {"image": 4, "video": 24, "audio": 8}
    new = signal_token_strings("new", counts)
    assert new["image"] == ["<image_00>", "<image_01>", "<image_02>", "<image_03>"]
    assert new["video"][-1] == "<video_23>" and new["audio"][-1] == "<audio_07>"
    legacy = tokens_to_register("legacy", counts)
    assert legacy[:3] == ["<Img>", "</Img>", "[IMG0]"] and legacy[-1] == "[AUD7]" and len(legacy) == 38
    assert len(tokens_to_register("new", counts)) == 36


def test_new_spans_in_one_answer_are_built_and_found(tok, new_vocab):
    turns = [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A red circle."},
             {"from": "human", "value": "Show me one and a sound."},
             {"from": "gpt", "value": "Sure thing! <image> and <audio>"}]
    example = tokenize_conversation("v1", turns, tok, new_vocab)
    assert example.input_media == ["image"]
    assert [(s.modality, len(s)) for s in example.output_spans] == [("image", 7), ("audio", 15)]
    img = example.output_spans[0]
    span = example.input_ids[img.start:img.end]
    assert span[0::2] == new_vocab.token_ids["image"]  # signals at even offsets
    assert set(span[1::2]) == {new_vocab.separator_id}  # one separator between signals
    assert example.labels[img.start:img.end] == span  # supervised
    assert new_vocab.find_spans(example.input_ids) == example.output_spans
    assert new_vocab.find_spans(example.labels) == example.output_spans
    assert supervised_runs(tok, example)[-1].startswith("Sure thing! <image_00> <image_01>")


def test_legacy_spans_are_contiguous_and_inputs_wrapped(legacy_tok):
    tok, vocab = legacy_tok
    turns = [{"from": "human", "value": "<video> what happens"}, {"from": "gpt", "value": "here <image><audio>"}]
    assert build_conversation("legacy", turns).get_prompt() == \
        "### Human: <Img><video></Img> what happens\n### Assistant: here <image><audio>\n###"
    example = tokenize_conversation("legacy", turns, tok, vocab)
    assert [(s.modality, len(s)) for s in example.output_spans] == [("image", 4), ("audio", 8)]
    img, aud = example.output_spans
    assert example.input_ids[img.start:img.end] == vocab.token_ids["image"]
    assert img.end == aud.start  # nothing between the two spans
    start_tag = tok.convert_tokens_to_ids("<Img>")
    v = example.input_ids.index(VIDEO_TOKEN_INDEX)
    assert example.input_ids[v - 1] == start_tag and example.input_ids[v + 1] == tok.convert_tokens_to_ids("</Img>")
    assert vocab.find_spans(example.input_ids) == example.output_spans


def test_truncated_malformed_and_stray_spans_are_detected(tok, new_vocab):
    turns = [{"from": "human", "value": "draw"}, {"from": "gpt", "value": "ok <video>"}]
    ids = tokenize_conversation("v1", turns, tok, new_vocab).input_ids
    span = new_vocab.find_spans(ids)[0]
    assert span.modality == "video" and len(span) == 47
    with pytest.raises(DataError, match="cut off after 10 of 47 tokens"):
        new_vocab.find_spans(ids[:span.start + 10], where="sample 5")
    broken = list(ids)
    broken[span.start + 4] = tok.eos_token_id
    with pytest.raises(DataError, match="malformed video signal span"):
        new_vocab.find_spans(broken)
    stray = list(ids[:span.start]) + [new_vocab.token_ids["audio"][3]]
    with pytest.raises(DataError, match="not at the start of a span"):
        new_vocab.find_spans(stray)


def test_assistant_placeholder_without_signal_vocab_is_an_error(tok):
    with pytest.raises(DataError, match="needs signal tokens"):
        tokenize_conversation("v1", [{"from": "human", "value": "x"}, {"from": "gpt", "value": "<image>"}],
                              tok, None)


def test_signal_vocab_requires_registered_tokens(tiny_llm_dir):
    fresh = load_tokenizer(tiny_llm_dir)
    with pytest.raises(DataError, match="not registered"):
        SignalVocab.from_tokenizer(fresh, "new", {"image": 4, "video": 24, "audio": 8})
