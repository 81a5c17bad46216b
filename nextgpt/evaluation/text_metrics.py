"""Text metrics: captioning (pycocoevalcap: BLEU-4, METEOR, ROUGE-L, CIDEr), VQA accuracy with the official
answer normalisation, and open-ended QA accuracy.

pycocoevalcap tokenizes with Stanford's PTB tokenizer and runs METEOR 1.5, both in Java. Without Java the captions
are tokenized in Python by the same rules (`ptb_tokenize`, checked against the Java tokenizer in the tests) and
only METEOR is skipped; the result says so.
"""
from __future__ import annotations

import logging
import re
import shutil
from typing import Iterable

from ..errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["JAVA_MISSING", "caption_scores", "java_available", "ptb_tokenize", "qa_accuracy", "vqa_accuracy",
           "vqa_normalize_answer"]

JAVA_MISSING = ("Java not found: captions were PTB-tokenized in Python and METEOR was skipped "
                "(install a JRE, e.g. `apt-get install -y default-jre-headless`, for METEOR)")
# pycocoevalcap's PTBTokenizer drops these tokens (case-sensitive: the lower-cased -lrb- / -rrb- stay, as there)
_PTB_DROPPED = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...",
                ";"}


def java_available() -> bool:
    return shutil.which("java") is not None


# ------------------------------------------------------------------------------------------------ tokenization

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATION = re.compile(r"^(?:[a-z]\.)+[a-z]?\.?$|^(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|no|inc|co|ltd)\.$")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def _split_token(token: str) -> list[str]:
    """One whitespace-separated piece -> PTB tokens (lower case)."""
    if token == "'n'":  # rock 'n' roll
        return [token]
    out_front: list[str] = []
    out_back: list[str] = []
    while token and token[0] in "'`\"":  # opening quotes
        out_front.append("``" if token[0] == '"' else token[0])
        token = token[1:]
    while token:
        if token.endswith("..."):
            out_back.insert(0, "...")
            token = token[:-3]
        elif token[-1] in "\"'`" and not _CLITIC.match(token):
            out_back.insert(0, "''" if token[-1] == '"' else token[-1])
            token = token[:-1]
        elif token[-1] == "." and not _ABBREVIATION.match(token) and not re.search(r"\d\.$", token[:-1] + "."):
            out_back.insert(0, ".")
            token = token[:-1]
        else:
            break
    pieces: list[str] = []
    if token == "cannot":
        pieces = ["can", "not"]
    elif token:
        m = _CLITIC.match(token)
        pieces = [m.group(1), m.group(2)] if m else [token]
    return out_front + pieces + out_back


def ptb_tokenize(text: str) -> str:
    """pycocoevalcap's tokenization (Stanford PTBTokenizer -preserveLines -lowerCase, then its punctuation
    removal) in Python, for when Java is missing."""
    text = text.replace("\n", " ").lower()
    for bracket, escape in _BRACKETS.items():
        text = text.replace(bracket, f" {escape} ")
    text = re.sub(r"(?<!\d),|,(?!\d)", " , ", text)  # commas, except inside numbers (1,000)
    text = re.sub(r"([;!?%$#&]|:(?!\d))", r" \1 ", text)
    text = re.sub(r"(--+)", r" \1 ", text)
    tokens: list[str] = []
    for piece in text.split():
        tokens += _split_token(piece)
    return " ".join(t for t in tokens if t and t not in _PTB_DROPPED)


def _tokenize_all(captions: dict[str, list[str]], use_java: bool) -> dict[str, list[str]]:
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [ptb_tokenize(c) for c in v] for k, v in captions.items()}


# ------------------------------------------------------------------------------------------------ captioning

_METEOR = None  # one METEOR process per Python process: it takes seconds to start


def _meteor():
    global _METEOR
    if _METEOR is None:
        from pycocoevalcap.meteor.meteor import Meteor

        _METEOR = Meteor()
    return _METEOR


def _aligned(predictions: dict[str, str], references: dict[str, list[str]]) -> list[str]:
    ids = list(references)
    missing = [i for i in ids if i not in predictions]
    if missing:
        raise DataError(f"no prediction for sample(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    extra = [i for i in predictions if i not in references]
    if extra:
        raise DataError(f"no references for predicted sample(s) {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for i in ids:
        if not isinstance(predictions[i], str):
            raise DataError(f"sample {i!r}: the prediction must be a string, got {predictions[i]!r}")
        if not isinstance(references[i], list) or not references[i] or not all(
                isinstance(r, str) for r in references[i]):
            raise DataError(f"sample {i!r}: the references must be a non-empty list of strings")
    return ids


def caption_scores(predictions: dict[str, str], references: dict[str, list[str]],
                   metrics: Iterable[str] = ("bleu4", "meteor", "rouge_l", "cider"),
                   use_java: bool | None = None) -> tuple[dict[str, float | None], list[str]]:
    """Corpus-level captioning scores as pycocoevalcap computes them ({metric: value}, notes). METEOR is None
    (and a note says why) without Java."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    metrics = list(metrics)
    ids = _aligned(predictions, references)
    use_java = java_available() if use_java is None else use_java
    notes = [] if use_java else [JAVA_MISSING]
    tokenized = _tokenize_all({f"r{k}": references[i] for k, i in enumerate(ids)}
                              | {f"p{k}": [predictions[i]] for k, i in enumerate(ids)}, use_java)
    gts = {k: tokenized[f"r{k}"] for k in range(len(ids))}
    res = {k: tokenized[f"p{k}"] for k in range(len(ids))}
    out: dict[str, float | None] = {}
    for name in metrics:
        if name == "bleu4":
            out[name] = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
        elif name == "rouge_l":
            out[name] = float(Rouge().compute_score(gts, res)[0])
        elif name == "cider":
            out[name] = float(Cider().compute_score(gts, res)[0])
        elif name == "meteor":
            out[name] = float(_meteor().compute_score(gts, res)[0]) if use_java else None
        else:
            raise DataError(f"unknown captioning metric {name!r}")
    return out, notes


# ------------------------------------------------------------------------------------------------ VQA

# The official VQA evaluation's answer normalisation tables (github.com/GT-Vision-Lab/VQA, vqaEval.py).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# the official regular expressions, kept as they are (the look-behind is written as a look-ahead there)
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)  # (sic: re.UNICODE is passed as the count, as officially)


def _process_digit_article(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def vqa_normalize_answer(answer: str) -> str:
    """A predicted answer as the official evaluation normalises it (punctuation, numbers, articles,
    contractions)."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(answer))


def vqa_sample_accuracy(prediction: str, answers: list[str]) -> float:
    """Official VQA accuracy of one answer: the mean, over the 10 leave-one-out subsets of the human answers, of
    min(#matches / 3, 1). Human answers are stripped, and punctuation-normalised when they disagree."""
    prediction = vqa_normalize_answer(prediction)
    humans = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(humans)) > 1:
        humans = [_process_punctuation(a) for a in humans]
    accs = []
    for k in range(len(humans)):
        others = humans[:k] + humans[k + 1:]
        accs.append(min(1.0, sum(a == prediction for a in others) / 3.0))
    return sum(accs) / len(accs)


def vqa_accuracy(predictions: dict[str, str], answers: dict[str, list[str]]) -> float:
    """Mean official VQA accuracy (0-1) over the samples of `answers`."""
    ids = _aligned(predictions, answers)
    return sum(vqa_sample_accuracy(predictions[i], answers[i]) for i in ids) / len(ids)


def qa_accuracy(predictions: dict[str, str], answers: dict[str, list[str]]) -> float:
    """Open-ended QA accuracy (0-1): a prediction is right when, normalised like a VQA answer, it equals one of the
    normalised reference answers (MSVD-QA / MSRVTT-QA have one answer per question)."""
    ids = _aligned(predictions, answers)
    right = 0
    for i in ids:
        refs = {vqa_normalize_answer(a) for a in answers[i]}
        right += vqa_normalize_answer(predictions[i]) in refs
    return right / len(ids)
