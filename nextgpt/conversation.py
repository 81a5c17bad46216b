"""Chat templates, prompt rendering, label masking and tokenization with media placeholders and signal spans.

Rendering produces a list of segments `(text, supervised, new_call)`; the prompt is their concatenation.
Tokenization follows the reference token by token (`nextgpt/tokenization.py` has the tokenizer semantics):

* `<image>` / `<video>` / `<audio>` in an unsupervised (human) segment become the placeholder ids −200 / −300 /
  −400, which the model's splice replaces with projected encoder features; like the reference, the text after a
  placeholder is a new tokenizer call (its own dummy prefix), but without the reference's extra BOS after
  `<video>` / `<audio>` (docs/deviations.md);
* the same placeholders in a supervised (assistant) segment become signal-token spans, built explicitly from
  token ids (NEW: `<image_00> sep <image_01> …`, 2n−1 tokens; LEGACY: `[IMG0][IMG1]…`, n tokens), so the span
  layout never depends on how a tokenizer treats whitespace; around them the text is tokenized as around the
  reference's added signal tokens;
* LEGACY templates also start a new call at every `new_call` segment (the 2023 code tokenized each prompt piece
  separately); a token is supervised when any of its characters belongs to an assistant segment.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Iterable, NamedTuple, Sequence

from .constants import (
    IGNORE_INDEX,
    LEGACY_MEDIA_END,
    LEGACY_MEDIA_START,
    LEGACY_SIGNAL_FORMAT,
    MODALITIES,
    NEW_SIGNAL_FORMAT,
    PLACEHOLDER_ID,
    PLACEHOLDER_TOKEN,
)
from .errors import DataError
from .tokenization import encode_call


class SepStyle(Enum):
    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()
    LEGACY = auto()  # NExT-GPT 2023: "### Human: …\n### Assistant: …\n###"
    MINIGPT4 = auto()  # MiniGPT-4: "###Human: … ###Assistant: …###"


class Segment(NamedTuple):
    text: str
    supervised: bool = False
    new_call: bool = False  # LEGACY: the reference tokenized this piece with a call of its own


@dataclass
class Conversation:
    """A chat template plus the messages of one dialogue. `messages[i] = [role, text or None]`."""

    system: str
    roles: tuple[str, str]
    sep_style: SepStyle
    sep: str = "###"
    sep2: str | None = None
    version: str = "unknown"
    messages: list[list] = field(default_factory=list)
    offset: int = 0
    # LEGACY wraps every input placeholder of a human turn, e.g. "<Img><image></Img>".
    media_wrap: tuple[str, str] | None = None
    # What follows a placeholder put in front of a user message that has none (MiniGPT-4's chat: a space).
    media_joiner: str = "\n"
    # The 2023 release's tokenizer (transformers 4.29): a dummy prefix on every text piece, whitespace stripped
    # around added tokens (nextgpt/tokenization.py).
    legacy_tokenizer: bool = False

    def copy(self) -> "Conversation":
        return copy.deepcopy(self)

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def segments(self) -> list[Segment]:
        """The rendered prompt as (text, supervised) pieces; assistant answers and their end separator are
        supervised, everything else (system, user turns, role tags) is not."""
        out: list[Segment] = []
        style = self.sep_style
        seps = (self.sep, self.sep2 if self.sep2 is not None else self.sep)

        def add(text: str, supervised: bool = False) -> None:
            if text:
                out.append(Segment(text, supervised))

        if style is SepStyle.LLAMA_2:
            for i, (role, message) in enumerate(self.messages):
                if message is None:
                    continue
                if i % 2 == 0:  # messages alternate user / assistant
                    if i == 0 and self.system:
                        message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{message}"
                    # The reference strips the leading `sep` of the whole prompt.
                    add(("" if i == 0 else self.sep) + f"[INST] {message} [/INST]")
                else:
                    add(" ")
                    add(f"{message} {self.sep2}", True)
            return out

        if style is SepStyle.LEGACY:  # the pieces of the 2023 code (`prompt_wrap`, `build_one_instance_stage_*`)
            human, assistant = self.roles
            answer = f"\n### {assistant}: "
            for i, (role, message) in enumerate(self.messages):
                if message is None:
                    continue  # a human piece already ends with the open "### Assistant: "
                if i % 2:
                    out.append(Segment(message + "\n###", True, True))
                elif i > 0:
                    out.append(Segment(f"{human}: {message}{answer}", False, True))
                elif self.media_wrap is not None and message.startswith(self.media_wrap[0]):
                    out.append(Segment(f"### {human}: {message}{answer}", False, True))  # "<Img>" media "</Img> …"
                else:  # no media: "### Human: " and the turn are separate calls
                    out += [Segment(f"### {human}: ", False, True), Segment(message + answer, False, True)]
            return out

        if style is SepStyle.MINIGPT4:
            # MiniGPT-4's prompt_template "###Human: {} ###Assistant: " and end_sym "###"; a later question follows
            # the "###" that closed the previous answer (its demo's single-separator layout).
            for i, (role, message) in enumerate(self.messages):
                if i % 2 == 0:
                    add(("" if i else self.sep) + f"{role}: {message} ")
                elif message is None:
                    add(f"{self.sep}{role}:")
                else:
                    add(f"{self.sep}{role}: ")
                    add(message + self.sep, True)
            return out

        add(self.system + (seps[0] if style in (SepStyle.SINGLE, SepStyle.TWO, SepStyle.MPT) else ""))
        for i, (role, message) in enumerate(self.messages):
            end = seps[i % 2] if style is SepStyle.TWO else self.sep
            if style is SepStyle.PLAIN:  # as the reference's preprocess_plain: turn0 + turn1 + sep
                if message:
                    add(message + (end if i % 2 else ""), bool(i % 2))
                continue
            tag = role if style is SepStyle.MPT else f"{role}: "
            if message is None:
                add(role if style is SepStyle.MPT else f"{role}:")
            elif i % 2 and style is SepStyle.TWO:
                # preprocess_v1 masks up to the colon: the lone "▁" before an answer that opens with a signal span
                # is supervised
                add(f"{role}:")
                add(" " + message + end, True)
            elif i % 2:
                add(tag)
                add(message + end, True)
            else:
                add(tag + message + end)
        return out

    def get_prompt(self) -> str:
        return "".join(seg.text for seg in self.segments())


_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
              "The assistant gives helpful, detailed, and polite answers to the user's questions.")
_HUMAN_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")
_MMTAG_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant is able to understand the visual content that the user provides, and assist the "
                 "user with a variety of tasks using natural language."
                 "The visual content will be provided with the following format: <Image>visual content</Image>.")
_LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe. "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information.")
_LLAVA_LLAMA2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual "
                        "content that the user provides, and assist the user with a variety of tasks using natural "
                        "language.")
_V0_FEW_SHOT = [
    ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
    ["Assistant",
     "Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, "
     "such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, are "
     "finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key differences "
     "between renewable and non-renewable energy sources:\n"
     "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources "
     "are finite and will eventually run out.\n"
     "2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable "
     "sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n"
     "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower "
     "operational costs than non-renewable sources.\n"
     "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations "
     "than non-renewable sources.\n"
     "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
     "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
     "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
     "non-renewable sources are not, and their depletion can lead to economic and social instability.\n"],
]

_vicuna_v1 = Conversation(_V1_SYSTEM, ("USER", "ASSISTANT"), SepStyle.TWO, " ", "</s>", "v1")
_llava_v1 = Conversation(_HUMAN_SYSTEM, ("USER", "ASSISTANT"), SepStyle.TWO, " ", "</s>", "v1")
_v1_mmtag = Conversation(_MMTAG_SYSTEM, ("USER", "ASSISTANT"), SepStyle.TWO, " ", "</s>", "v1_mmtag")
_vicuna_v0 = Conversation(_HUMAN_SYSTEM, ("Human", "Assistant"), SepStyle.SINGLE, "###", None, "v0",
                          messages=copy.deepcopy(_V0_FEW_SHOT), offset=2)
_llava_v0 = Conversation(_HUMAN_SYSTEM, ("Human", "Assistant"), SepStyle.SINGLE, "###", None, "v0")
_v0_mmtag = Conversation(_MMTAG_SYSTEM, ("Human", "Assistant"), SepStyle.SINGLE, "###", None, "v0_mmtag")
_llama_2 = Conversation(_LLAMA2_SYSTEM, ("USER", "ASSISTANT"), SepStyle.LLAMA_2, "<s>", "</s>", "llama_v2")
_llava_llama_2 = Conversation(_LLAVA_LLAMA2_SYSTEM, ("USER", "ASSISTANT"), SepStyle.LLAMA_2, "<s>", "</s>",
                              "llama_v2")
_mpt = Conversation("<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
                    "The assistant gives helpful and honest answers.",
                    ("<|im_start|>user\n", "<|im_start|>assistant\n"), SepStyle.MPT, "<|im_end|>", None, "mpt")
_plain = Conversation("", ("", ""), SepStyle.PLAIN, "\n", "\n", "plain")
_legacy = Conversation("", ("Human", "Assistant"), SepStyle.LEGACY, "###", None, "legacy",
                       media_wrap=(LEGACY_MEDIA_START, LEGACY_MEDIA_END), legacy_tokenizer=True)
# MiniGPT-4 (stage 2 and chat): no system text in training, an image as "<Img><ImageHere></Img>" (our <image>).
_minigpt4 = Conversation("", ("Human", "Assistant"), SepStyle.MINIGPT4, "###", None, "minigpt4",
                         media_wrap=(LEGACY_MEDIA_START, LEGACY_MEDIA_END), media_joiner=" ")

TEMPLATES: dict[str, Conversation] = {
    "v1": _vicuna_v1,
    "vicuna_v1": _vicuna_v1,
    "llava_v1": _llava_v1,
    "v1_mmtag": _v1_mmtag,
    "default": _vicuna_v0,
    "v0": _vicuna_v0,
    "llava_v0": _llava_v0,
    "v0_mmtag": _v0_mmtag,
    "llama_2": _llama_2,
    "llava_llama_2": _llava_llama_2,
    "mpt": _mpt,
    "plain": _plain,
    "v0_plain": _plain,
    "legacy": _legacy,
    "minigpt4": _minigpt4,
}


def get_template(name: str) -> Conversation:
    """A fresh copy of a template (its few-shot messages included)."""
    if name not in TEMPLATES:
        raise DataError(f"unknown conversation template {name!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name].copy()


def build_conversation(template: str, turns: Sequence[dict], add_generation_prompt: bool = False,
                       where: str = "conversation") -> Conversation:
    """Reference-format turns [{"from": "human"|"gpt", "value": str}, …] → a filled template.

    A leading non-human turn is dropped (as the reference does); turns must then alternate. With
    `add_generation_prompt`, an empty assistant message is appended for generation.
    """
    conv = get_template(template)
    conv.messages = []  # training samples never use the template's few-shot examples
    turns = list(turns)
    if turns and turns[0].get("from") != "human":
        turns = turns[1:]
    role_of = {"human": conv.roles[0], "gpt": conv.roles[1]}
    for i, turn in enumerate(turns):
        speaker = turn.get("from")
        expected = "human" if i % 2 == 0 else "gpt"
        if speaker != expected:
            raise DataError(f"{where}: turn {i} is from {speaker!r}, expected {expected!r} (turns must alternate)")
        value = turn.get("value")
        if not isinstance(value, str):
            raise DataError(f"{where}: turn {i} has no text 'value'")
        if speaker == "human" and conv.media_wrap is not None:
            start, end = conv.media_wrap
            value = _PLACEHOLDER_RE.sub(lambda m: start + m.group(0) + end, value)
        conv.append_message(role_of[speaker], value)
    if add_generation_prompt:
        conv.append_message(conv.roles[1], None)
    return conv


# ------------------------------------------------------------------------------------- signal tokens


def signal_token_strings(layout: str, counts: dict[str, int]) -> dict[str, list[str]]:
    """The signal-token strings of each modality, e.g. {"image": ["<image_00>", …], …}."""
    formats = NEW_SIGNAL_FORMAT if layout == "new" else LEGACY_SIGNAL_FORMAT
    return {m: [formats[m].format(i) for i in range(counts[m])] for m in MODALITIES}


def tokens_to_register(layout: str, counts: dict[str, int]) -> list[str]:
    """Every token string to add to the tokenizer, in the reference's order."""
    strings = signal_token_strings(layout, counts)
    extra = [LEGACY_MEDIA_START, LEGACY_MEDIA_END] if layout == "legacy" else []
    return extra + [s for m in MODALITIES for s in strings[m]]


@dataclass(frozen=True)
class SignalSpan:
    modality: str
    start: int  # first position of the span
    end: int  # one past the last position

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class SignalVocab:
    """Token ids of the signal tokens and how spans are laid out.

    NEW: `[s0, sep, s1, sep, …, s(n-1)]` (2n−1 ids; `sep` is the tokenizer's lone-space piece, id 29871 for
    LLaMA, as the reference's slow tokenizer produced). LEGACY: `[s0, s1, …, s(n-1)]` (n ids).
    """

    layout: str
    token_ids: dict[str, list[int]]
    separator_id: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer, layout: str, counts: dict[str, int]) -> "SignalVocab":
        strings = signal_token_strings(layout, counts)
        ids: dict[str, list[int]] = {}
        for modality, names in strings.items():
            found = tokenizer.convert_tokens_to_ids(names)
            missing = [n for n, i in zip(names, found) if i is None or i == tokenizer.unk_token_id]
            if missing:
                raise DataError(f"signal tokens not registered in the tokenizer: {missing[:4]}…")
            ids[modality] = list(found)
        separator = space_token_id(tokenizer) if layout == "new" else None
        return cls(layout, ids, separator)

    def span(self, modality: str) -> list[int]:
        ids = self.token_ids[modality]
        if self.layout == "legacy":
            return list(ids)
        out: list[int] = []
        for i, tok in enumerate(ids):
            if i:
                out.append(self.separator_id)
            out.append(tok)
        return out

    def span_length(self, modality: str) -> int:
        n = len(self.token_ids[modality])
        return n if self.layout == "legacy" else 2 * n - 1

    def all_ids(self) -> set[int]:
        return {i for ids in self.token_ids.values() for i in ids}

    def modality_of_start(self, token_id: int) -> str | None:
        for modality, ids in self.token_ids.items():
            if ids[0] == token_id:
                return modality
        return None

    def find_spans(self, ids: Sequence[int], where: str = "sequence") -> list[SignalSpan]:
        """Every complete signal span in `ids`, in order. A span cut off at the end of the sequence (truncation),
        a malformed span or a stray signal token raises `DataError`."""
        ids = list(ids)
        signal = self.all_ids()
        spans: list[SignalSpan] = []
        p = 0
        while p < len(ids):
            tok = ids[p]
            if tok not in signal:
                p += 1
                continue
            modality = self.modality_of_start(tok)
            if modality is None:
                raise DataError(f"{where}: signal token {tok} at position {p} is not at the start of a span")
            expected = self.span(modality)
            got = ids[p:p + len(expected)]
            if got != expected:
                if len(got) < len(expected) and got == expected[:len(got)]:
                    raise DataError(f"{where}: the {modality} signal span at position {p} is cut off after "
                                    f"{len(got)} of {len(expected)} tokens (truncated sequence)")
                raise DataError(f"{where}: malformed {modality} signal span at position {p}: "
                                f"expected {expected}, found {got}")
            spans.append(SignalSpan(modality, p, p + len(expected)))
            p += len(expected)
        return spans


def space_token_id(tokenizer) -> int:
    """Id of the lone-space piece ("▁" in SentencePiece vocabularies) used as the NEW span separator."""
    tok = tokenizer.convert_tokens_to_ids("\u2581")
    if tok is not None and tok != tokenizer.unk_token_id:
        return tok
    ids = tokenizer("a b", add_special_tokens=False)["input_ids"]
    if len(ids) != 3:
        raise DataError("cannot determine the tokenizer's space token for NEW signal spans")
    return ids[1]


# ---------------------------------------------------------------------------------------- tokenizing

_PLACEHOLDER_RE = re.compile("|".join(re.escape(PLACEHOLDER_TOKEN[m]) for m in MODALITIES))
_PLACEHOLDER_MODALITY = {PLACEHOLDER_TOKEN[m]: m for m in MODALITIES}


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    input_media: list[str]  # modality of each input placeholder, in order
    output_spans: list[SignalSpan]  # signal spans, in order

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_segments(segments: Iterable[Segment], tokenizer, signal: SignalVocab | None = None,
                      add_bos: bool = True, where: str = "sample", legacy: bool = False) -> TokenizedExample:
    """Tokenize rendered segments: input placeholders → negative ids, output placeholders → signal spans,
    labels = ids on supervised tokens and IGNORE_INDEX elsewhere. `legacy`: the 2023 tokenizer's semantics."""
    segments = [Segment(*seg) for seg in segments]
    text = "".join(seg.text for seg in segments)
    supervised: list[bool] = []
    breaks: set[int] = set()  # char positions where a new tokenizer call starts
    for seg in segments:
        if seg.new_call:
            breaks.add(len(supervised))
        supervised.extend([seg.supervised] * len(seg.text))

    ids: list[int] = []
    labels: list[int] = []
    input_media: list[str] = []
    spans: list[SignalSpan] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)

    call: list = []  # text ranges and signal spans (id lists, with their modality) of the current call
    modalities: list[str | None] = []

    def flush() -> None:
        for item, modality, tokens in zip(call, modalities, encode_call(tokenizer, text, call, legacy)):
            if modality is not None:
                spans.append(SignalSpan(modality, len(ids), len(ids) + len(item)))
                ids.extend(item)
                labels.extend(item)
                continue
            for tok, s, e in tokens:
                sup = any(supervised[s:e]) if e > s else supervised[min(s, len(text) - 1)]
                ids.append(tok)
                labels.append(tok if sup else IGNORE_INDEX)
        call.clear()
        modalities.clear()

    def add_text(start: int, end: int) -> None:
        for cut in sorted(b for b in breaks if start <= b <= end) + [end]:
            if cut > start:
                call.append((start, cut))
                modalities.append(None)
            if cut in breaks:
                flush()
            start = cut

    pos = 0
    for match in _PLACEHOLDER_RE.finditer(text):
        add_text(pos, match.start())
        modality = _PLACEHOLDER_MODALITY[match.group(0)]
        if supervised[match.start()]:
            if signal is None:
                raise DataError(f"{where}: {match.group(0)} in an assistant turn needs signal tokens")
            call.append(signal.span(modality))
            modalities.append(modality)
        else:
            flush()  # the reference tokenizes the text on either side of an input placeholder separately
            input_media.append(modality)
            ids.append(PLACEHOLDER_ID[modality])
            labels.append(IGNORE_INDEX)
        pos = match.end()
    add_text(pos, len(text))
    flush()
    return TokenizedExample(ids, labels, input_media, spans)


def tokenize_prompt(text: str, tokenizer, add_bos: bool = True) -> list[int]:
    """Text with `<image>` / `<video>` / `<audio>` placeholders → ids with −200 / −300 / −400."""
    return tokenize_segments([Segment(text)], tokenizer, add_bos=add_bos).input_ids


def tokenize_conversation(template: str, turns: Sequence[dict], tokenizer, signal: SignalVocab | None,
                          add_generation_prompt: bool = False, where: str = "sample") -> TokenizedExample:
    """Reference-format turns → ids and labels (only assistant content and its end separator supervised)."""
    conv = build_conversation(template, turns, add_generation_prompt, where)
    return tokenize_segments(conv.segments(), tokenizer, signal, where=where, legacy=conv.legacy_tokenizer)
