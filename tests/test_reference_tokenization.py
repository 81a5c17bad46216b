"""Token-by-token equality with the reference's tokenization, emulated with sentencepiece on the tiny tokenizer.

The emulators below re-implement, independently of nextgpt's code, what the reference does with its slow LLaMA
tokenizer (SentencePiece underneath):

* NEW (`mm_utils.tokenizer_image_token` / `tokenizer_multiple_token`, `preprocess_multimodal`, `preprocess_v1`;
  transformers 4.42 with Vicuna-v1.5's non-legacy tokenizer): every chunk between media placeholders is its own
  tokenizer call; a call puts the dummy prefix "▁" before its text, splits at added tokens and encodes the text
  after an added token without a prefix; labels are masked by `preprocess_v1`'s round arithmetic.
* LEGACY (`common/utils.py` builders and `prompt_wrap`; transformers 4.29): every prompt piece is its own call;
  whitespace around added tokens is stripped and every text piece gets its own dummy prefix.

Two documented departures are applied to the emulated reference: no extra BOS after `<video>` / `<audio>`
(docs/deviations.md), and `preprocess_v1`'s "− 1 for non-legacy tokenizers" on later rounds is taken as what it
compensates for with LLaMA's vocabulary (a later round starts right after `</s>`, without a dummy prefix), so the
round is tokenized as it stands in the prompt.
"""
from __future__ import annotations

import re

import pytest

from nextgpt.constants import IGNORE_INDEX, PLACEHOLDER_ID
from nextgpt.conversation import TEMPLATES, tokenize_conversation
from nextgpt.dataset.legacy_pairs import LegacyPairDataset
from nextgpt.model.language_model import load_tokenizer, register_signal_tokens

spm = pytest.importorskip("sentencepiece")
sp_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")

COUNTS = {"image": 4, "video": 24, "audio": 8}
SIGNALS = {"new": {"image": "<image_{:02d}>", "video": "<video_{:02d}>", "audio": "<audio_{:02d}>"},
           "legacy": {"image": "[IMG{}]", "video": "[VID{}]", "audio": "[AUD{}]"}}


class Reference:
    """The reference's tokenizer calls, on sentencepiece directly."""

    def __init__(self, model_file, added: dict[str, int]):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        proto = sp_pb2.ModelProto()
        proto.ParseFromString(open(model_file, "rb").read())
        proto.normalizer_spec.add_dummy_prefix = False  # how 4.42 loads a non-legacy LLaMA tokenizer
        self.sp_raw = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.added = added
        self.trie = re.compile("(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")")
        self.bos = self.sp.bos_id()

    def _split(self, text: str) -> list[str]:
        return [p for p in self.trie.split(text) if p != ""]

    def call_new(self, text: str, prefix: bool = True) -> list[int]:
        """transformers 4.42 `LlamaTokenizer(legacy=False).tokenize`: "▁" + text, split at added tokens, each
        text piece encoded without a dummy prefix. `prefix=False`: the text as it continues a call."""
        pieces = self._split((" " if prefix else "") + text)
        ids: list[int] = []
        for piece in pieces:
            ids += [self.added[piece]] if piece in self.added else self.sp_raw.encode(piece)
        return ids

    def call_legacy(self, text: str) -> list[int]:
        """transformers 4.29 `tokenize`: split at added tokens, strip whitespace on both sides of each, encode
        every remaining piece with the dummy prefix."""
        pieces = self._split(text)
        for i, piece in enumerate(pieces):
            if piece in self.added:
                if i > 0 and pieces[i - 1] not in self.added:
                    pieces[i - 1] = pieces[i - 1].rstrip()
                if i + 1 < len(pieces) and pieces[i + 1] not in self.added:
                    pieces[i + 1] = pieces[i + 1].lstrip()
        ids: list[int] = []
        for piece in pieces:
            if piece:
                ids += [self.added[piece]] if piece in self.added else self.sp.encode(piece)
        return ids

    # ------------------------------------------------------------------------------------------------ NEW

    def multiple_token(self, prompt: str, prefix: bool = True) -> list[int]:
        """tokenizer_multiple_token (without the extra BOS after <video>/<audio>): a call per chunk between
        placeholders, one BOS at the start."""
        ids = [self.bos]
        chunks = re.split("(<image>|<video>|<audio>)", prompt)
        for k, chunk in enumerate(chunks):
            if chunk in ("<image>", "<video>", "<audio>"):
                ids.append(PLACEHOLDER_ID[chunk[1:-1]])
            elif chunk:
                ids += self.call_new(chunk, prefix=prefix or k > 0)
        return ids

    def new_v1(self, turns: list[dict]) -> tuple[list[int], list[int]]:
        conv = TEMPLATES["v1"]
        values = []
        for i, turn in enumerate(turns):
            value = turn["value"]
            if i % 2:  # preprocess_multimodal: assistant placeholders -> signal strings joined by spaces
                for m, fmt in SIGNALS["new"].items():
                    value = value.replace(f"<{m}>", " ".join(fmt.format(j) for j in range(COUNTS[m])))
            values.append(value)
        prompt = conv.system + " "
        for i, value in enumerate(values):
            role = conv.roles[i % 2]
            prompt += f"{role}: {value}" + (" " if i % 2 == 0 else "</s>")
        input_ids = self.multiple_token(prompt)
        labels = list(input_ids)
        sep = " " + conv.roles[1] + ": "
        cur = 1
        labels[0] = IGNORE_INDEX
        for i, rou in enumerate(prompt.split("</s>")):
            if rou == "":
                break
            parts = rou.split(sep)
            if len(parts) != 2:
                break
            round_len = len(self.multiple_token(rou, prefix=i == 0))
            instruction_len = len(self.multiple_token(parts[0] + sep, prefix=i == 0)) - 2
            labels[cur:cur + instruction_len] = [IGNORE_INDEX] * instruction_len
            cur += round_len
        labels[cur:] = [IGNORE_INDEX] * (len(labels) - cur)
        assert cur == len(input_ids), "the emulated reference reports a tokenization mismatch"
        return input_ids, labels

    # --------------------------------------------------------------------------------------------- LEGACY

    def legacy(self, first_human: str, media: str | None, later: list[tuple[str, str]], answer: str,
               ) -> tuple[list[int], list[int]]:
        """prompt_wrap + build_one_instance_stage_*: `first_human` is the masked text of the first turn (after
        "</Img> " when there is media), `answer` its supervised answer, `later` further (human, answer) turns."""
        ids, labels = [self.bos], [IGNORE_INDEX]

        def add(text: str, supervised: bool) -> None:
            toks = self.call_legacy(text)
            ids.extend(toks)
            labels.extend(toks if supervised else [IGNORE_INDEX] * len(toks))

        if media is not None:
            add("### Human: <Img>", False)
            ids.append(PLACEHOLDER_ID[media])
            labels.append(IGNORE_INDEX)
            add("</Img> " + first_human + "\n### Assistant: ", False)
        else:
            add("### Human: ", False)
            add(first_human + "\n### Assistant: ", False)
        add(answer + "\n###", True)
        for human, gpt in later:
            add("Human: " + human + "\n### Assistant: ", False)
            add(gpt + "\n###", True)
        return ids, labels


def legacy_signals(modality: str) -> str:
    return " ".join(SIGNALS["legacy"][modality].format(j) for j in range(COUNTS[modality]))


@pytest.fixture(scope="module")
def setup(tiny_llm_dir):
    out = {}
    for layout in ("new", "legacy"):
        tok = load_tokenizer(tiny_llm_dir)
        vocab = register_signal_tokens(tok, None, layout, COUNTS)[0]
        out[layout] = (tok, vocab, Reference(tiny_llm_dir / "tokenizer.model", tok.get_added_vocab()))
    return out


def h(value):
    return {"from": "human", "value": value}


def g(value):
    return {"from": "gpt", "value": value}


NEW_SHAPES = {
    "media_before_text": [h("<image>\nWhat is shown here?"), g("A red circle on a white background.")],
    "media_after_text": [h("What is shown here?\n<image>"), g("A red circle.")],
    "text_after_placeholder_with_space": [h("<video> what happens in this clip"), g("A ball bounces.")],
    "suffix_form_with_space": [h("Describe this sound <audio>"), g("A sine tone.")],
    "several_media_in_one_turn": [h("<image> and <audio> then <video>: compare them"), g("They match.")],
    "adjacent_placeholders": [h("<image><image>\nWhich is brighter?"), g("The first one.")],
    "text_only": [h("Tell me about shapes."), g("A square has four sides.")],
    "answer_starts_with_span": [h("Show me a blue square."), g("<image> Here it is.")],
    "answer_ends_with_span": [h("Draw a star."), g("Sure thing! <image>")],
    "answer_is_only_span": [h("Play a beep."), g("<audio>")],
    "all_three_out": [h("Make everything."), g("An image <image> a video <video> and a sound <audio>")],
    "all_three_in_and_out": [h("<image><video><audio> remix these"), g("<audio> <image> <video>")],
    "span_then_text": [h("A clip of a circle, please."), g("<video> enjoy!")],
    "multi_turn": [h("<image>\nWhat is this?"), g("A green triangle."), h("Now draw it red."),
                   g("Here you go <image>"), h("And a sound of it <audio>?"), g("<audio>")],
    "multi_turn_media_later": [h("Hi there."), g("Hello!"), h("What is in <video>?"), g("A spinning box.")],
    "non_ascii": [h("Was ist das? <image> Ça va? 漢字"), g("Très bien — ein Kreis.")],
}


@pytest.mark.parametrize("name", sorted(NEW_SHAPES))
def test_new_tokenization_equals_reference(setup, name):
    tok, vocab, ref = setup["new"]
    turns = NEW_SHAPES[name]
    ours = tokenize_conversation("v1", turns, tok, vocab)
    want_ids, want_labels = ref.new_v1(turns)
    assert ours.input_ids == want_ids
    assert ours.labels == want_labels


def test_new_details(setup):
    """The two visible effects: "▁▁" after a placeholder, a supervised lone "▁" before an opening span."""
    tok, vocab, _ = setup["new"]
    space = tok.convert_tokens_to_ids("\u2581")
    ex = tokenize_conversation("v1", NEW_SHAPES["media_after_text"], tok, vocab)
    p = ex.input_ids.index(PLACEHOLDER_ID["image"])
    assert ex.input_ids[p + 1] == space and tok.convert_ids_to_tokens(ex.input_ids[p + 2]).startswith("\u2581")
    ex = tokenize_conversation("v1", NEW_SHAPES["answer_starts_with_span"], tok, vocab)
    start = ex.output_spans[0].start
    assert ex.input_ids[start - 1] == space and ex.labels[start - 1] == space
    assert ex.labels[start - 2] == IGNORE_INDEX  # the ":" of "ASSISTANT:"


def _pair_dataset(tmp_path, modality, task, caption):
    import json

    path = tmp_path / f"{modality}_{task}.json"
    path.write_text(json.dumps([{f"{modality}_name": f"x.{modality}", "caption": caption}]))
    return path


LEGACY_CAPTION = "a red circle moving left"


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
@pytest.mark.parametrize("task", ["comprehension", "generation"])
def test_legacy_pair_tokenization_equals_reference(setup, tmp_path, modality, task):
    tok, vocab, ref = setup["legacy"]
    ds = LegacyPairDataset(_pair_dataset(tmp_path, modality, task, LEGACY_CAPTION), tok, vocab,
                           modality=modality, task=task, embed_folder=tmp_path)
    ours = tokenize_conversation("legacy", ds.items[0].turns, tok, vocab)
    if task == "comprehension":  # stage 1: media -> caption
        want = ref.legacy("generate a caption", modality, [], LEGACY_CAPTION)
    else:  # stage 2: caption -> caption + signal tokens (no space before them)
        want = ref.legacy(LEGACY_CAPTION, None, [], LEGACY_CAPTION + legacy_signals(modality))
    assert (ours.input_ids, ours.labels) == want


LEGACY_INSTRUCTION = {
    # name: (our turns, reference first human, media, later turns, first answer)
    "text_to_text": ([h("Name a shape."), g("A circle.")], "Name a shape.", None, [], "A circle."),
    "text_to_image": ([h("Draw a star."), g("Sure thing! <image>")], "Draw a star.", None, [],
                      "Sure thing!" + legacy_signals("image")),
    "text_to_video": ([h("A clip please"), g("Here <video>")], "A clip please", None, [],
                      "Here" + legacy_signals("video")),
    "text_to_audio": ([h("Beep"), g("<audio>")], "Beep", None, [], legacy_signals("audio")),
    "image_to_text": ([h("<image>\nWhat is this?"), g("A blue square.")], "What is this?", "image", [],
                      "A blue square."),
    "multi_turn": ([h("<image> describe"), g("A circle."), h("Now a sound"), g("Okay <audio>")], "describe",
                   "image", [("Now a sound", "Okay" + legacy_signals("audio"))], "A circle."),
}


@pytest.mark.parametrize("name", sorted(LEGACY_INSTRUCTION))
def test_legacy_instruction_tokenization_equals_reference(setup, name):
    tok, vocab, ref = setup["legacy"]
    turns, first, media, later, answer = LEGACY_INSTRUCTION[name]
    ours = tokenize_conversation("legacy", turns, tok, vocab)
    assert (ours.input_ids, ours.labels) == ref.legacy(first, media, later, answer)


def test_legacy_details(setup):
    """`[IMG3] ▁###` after a span, a masked "▁" after "### Assistant:", no "▁" before `<Img>`."""
    tok, vocab, _ = setup["legacy"]
    ex = tokenize_conversation("legacy", [h("<image> generate a caption"), g("a dot<image>")], tok, vocab)
    pieces = tok.convert_ids_to_tokens([i for i in ex.input_ids if i >= 0])
    assert "".join(pieces[pieces.index("[IMG3]") + 1:]) == "\u2581###"  # not "▁\n###" (tiny vocab: "▁" "###")
    img = pieces.index("<Img>")
    assert pieces[img - 1] == ":"  # "### Human:" with the space stripped before <Img>
    colon = [i for i, p in enumerate(pieces) if p == ":"][-1]
    assert pieces[colon - 1] == "\u2581Assistant" and pieces[colon + 1] == "\u2581"
    k = ex.input_ids.index(tok.convert_tokens_to_ids("\u2581"), ex.input_ids.index(PLACEHOLDER_ID["image"]))
    assert ex.labels[k] == IGNORE_INDEX
