"""Evaluation metrics against closed forms, known values and the libraries they are built on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nextgpt.errors import CheckpointError, DataError
from nextgpt.evaluation import media_metrics as mm
from nextgpt.evaluation import text_metrics as tm
from nextgpt.evaluation.feature_models import resolve_feature_model

REPO = Path(__file__).resolve().parents[1]
needs_java = pytest.mark.skipif(not tm.java_available(), reason="Java (default-jre-headless) is not installed")

# ------------------------------------------------------------------------------------------------ Frechet / FID


def exact_gaussian(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """n points whose sample mean is exactly `mean` and whose (unbiased) sample covariance is exactly `cov`."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: covariance I
    return torch.from_numpy(z @ np.linalg.cholesky(cov).T + mean)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    feats = torch.randn(64, 16, dtype=torch.float64)
    assert mm.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_gaussian_sets_equals_the_closed_form():
    d = 6
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a1, a2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a1 @ a1.T + 0.5 * np.eye(d), a2 @ a2.T + 0.5 * np.eye(d)
    # |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner)))
    got = mm.frechet_distance(exact_gaussian(mu1, s1, 200, 1), exact_gaussian(mu2, s2, 300, 2))
    assert got == pytest.approx(expected, rel=1e-8)
    # isotropic case by hand: N(0, I) vs N(m, 4I) in d dims -> |m|^2 + d (1 + 4 - 2 * 2)
    m = np.full(d, 0.5)
    got = mm.frechet_distance(exact_gaussian(np.zeros(d), np.eye(d), 100, 3), exact_gaussian(m, 4 * np.eye(d), 100, 4))
    assert got == pytest.approx(d * 0.25 + d * 1.0, rel=1e-8)


def test_frechet_distance_needs_two_samples():
    with pytest.raises(DataError, match="at least 2 samples"):
        mm.frechet_distance(torch.zeros(1, 4), torch.zeros(3, 4))


@pytest.mark.slow
def test_fid_with_torch_fidelity_inception_weights_file(tmp_path):
    """The real Inception-v3 of torch-fidelity loaded from a local weights file (random weights here)."""
    from nextgpt.toy.feature_models import build_random_inception

    weights = build_random_inception(tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    fm = resolve_feature_model("fid", weights)
    assert fm.kind == "inception" and fm.toy and not fm.standard
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    a = [torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8, generator=gen) for _ in range(3)]
    b = [torch.full((3, 48, 48), 40, dtype=torch.uint8)] + [torch.randint(0, 64, (3, 48, 48), dtype=torch.uint8,
                                                                          generator=gen) for _ in range(2)]
    from nextgpt.evaluation.feature_models import image_features

    feats = image_features(fm, a)
    assert feats.shape == (3, 2048)
    # 3 samples in 2048 dimensions: singular covariances, so "zero" holds to the float error of torch-fidelity's
    # eigenvalue formula, measured relative to the features' total variance
    scale = 2 * float(torch.cov(feats.T).trace())
    assert abs(mm.fid(fm, a, a)) < 1e-5 * scale
    assert mm.fid(fm, a, b) > 1e-3 * scale


# ------------------------------------------------------------------------------------------------ captioning

PREDICTIONS = {"1": "A red circle on a blue background.", "2": "two dogs are playing in the grass",
               "3": "a man rides a wave on a surfboard", "4": "a steady sine tone"}
REFERENCES = {
    "1": ["A red circle on a blue background.", "a red disc, on blue!", "A large red circle in front of blue."],
    "2": ["Two dogs aren't playing in the park's grass.", "Dogs play on a lawn (park)."],
    "3": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave."],
    "4": ["a steady 440 Hz sine tone", "a pure sine tone at 440 Hz"],
}


def pycocoevalcap_directly(tokenize) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {k: [tokenize(c) for c in v] for k, v in REFERENCES.items()}
    res = {k: [tokenize(PREDICTIONS[k])] for k in REFERENCES}
    return {"bleu4": Bleu(4).compute_score(gts, res, verbose=0)[0][3], "rouge_l": Rouge().compute_score(gts, res)[0],
            "cider": Cider().compute_score(gts, res)[0]}


@needs_java
def test_caption_scores_equal_pycocoevalcap_with_its_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize({f"{k}/{i}": [{"caption": c}] for k, v in REFERENCES.items()
                                         for i, c in enumerate(v)} | {f"{k}/p": [{"caption": PREDICTIONS[k]}]
                                                                      for k in REFERENCES})
    lookup = {}
    for key, (text,) in tokenized.items():
        k, i = key.split("/")
        lookup[PREDICTIONS[k] if i == "p" else REFERENCES[k][int(i)]] = text
    expected = pycocoevalcap_directly(lookup.__getitem__)
    got, notes = tm.caption_scores(PREDICTIONS, REFERENCES, ["bleu4", "rouge_l", "cider"], use_java=True)
    assert notes == []
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key


def test_caption_scores_without_java_tokenize_in_python_and_skip_only_meteor():
    expected = pycocoevalcap_directly(tm.ptb_tokenize)
    got, notes = tm.caption_scores(PREDICTIONS, REFERENCES, use_java=False)
    assert got["meteor"] is None and notes == [tm.JAVA_MISSING]
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12), key
    # known values of this fixed set (pycocoevalcap 1.2), and the closed form of identical captions
    assert got["bleu4"] == pytest.approx(0.538568, abs=1e-6)
    assert got["cider"] == pytest.approx(2.873694, abs=1e-6)
    same, _ = tm.caption_scores({"a": "a red circle on blue"}, {"a": ["a red circle on blue"]}, ["bleu4", "rouge_l"],
                                use_java=False)
    assert same["bleu4"] == pytest.approx(1.0, abs=1e-6) and same["rouge_l"] == pytest.approx(1.0)


TOKENIZER_CASES = [
    "A red circle on a blue background.", "Two dogs aren't playing in the park's grass.", "dogs in grass (park)",
    "The cat's toy is on the U.S. flag; it can't move.", "A \"quoted\" word and a well-known place: Paris -- France...",
    "It costs $5, or 1,000 yen (50%).", "people cannot stand the 3.5 ton truck", "two short beeps at 880 Hz",
    "the kids' toys are in mr. smith's car", "A woman's hat ... is red?", "rock 'n' roll isn't dead",
    "at 10:30 the bus came", "it's a dog/cat thing",
    "a pink cross falling from top to bottom against a gray background",
]


@needs_java
def test_python_tokenization_matches_the_java_ptb_tokenizer():
    java = tm._tokenize_all({str(i): [c] for i, c in enumerate(TOKENIZER_CASES)}, use_java=True)
    for i, caption in enumerate(TOKENIZER_CASES):
        assert tm.ptb_tokenize(caption) == java[str(i)][0], caption


@pytest.mark.slow  # METEOR's Java start loads a paraphrase table: 5-30 s
@needs_java
def test_meteor_with_java():
    got, notes = tm.caption_scores(PREDICTIONS, REFERENCES, ["meteor"], use_java=True)
    assert notes == [] and 0 < got["meteor"] < 1


def test_missing_predictions_are_named():
    with pytest.raises(DataError, match="no prediction for sample"):
        tm.caption_scores({"1": "x"}, REFERENCES, ["bleu4"], use_java=False)


# ------------------------------------------------------------------------------------------------ VQA / QA


def official(matches: int, n: int = 10) -> float:
    """The official formula: mean over the n leave-one-out subsets of min(#matches / 3, 1)."""
    return (matches * min(1, (matches - 1) / 3) + (n - matches) * min(1, matches / 3)) / n


@pytest.mark.parametrize("matches, value", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_hand_made_cases(matches, value):
    humans = ["2"] * matches + ["3"] * (10 - matches)
    assert official(matches) == pytest.approx(value)
    assert tm.vqa_sample_accuracy("2", humans) == pytest.approx(value)
    assert tm.vqa_sample_accuracy("Two.", humans) == pytest.approx(value)  # normalised to "2"


def test_vqa_answer_normalisation():
    assert tm.vqa_normalize_answer("Two.") == "2"
    assert tm.vqa_normalize_answer("The dog!") == "dog"
    assert tm.vqa_normalize_answer("  yes\n") == "yes"
    assert tm.vqa_normalize_answer("dont know") == "don't know"
    assert tm.vqa_normalize_answer("3.5") == "3.5"
    humans = ["2"] * 3 + ["two"] * 2 + ["3"] * 5  # "two" is not normalised on the human side (officially)
    assert tm.vqa_sample_accuracy("Two", humans) == pytest.approx(official(3))
    assert tm.vqa_accuracy({"a": "2", "b": "blue"}, {"a": humans, "b": ["red"] * 10}) == pytest.approx(0.45)


def test_open_ended_qa_accuracy():
    assert tm.qa_accuracy({"a": "A dog.", "b": "cat", "c": "Two"}, {"a": ["dog"], "b": ["dog"], "c": ["2"]}) == \
        pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ CLIP / CLAP


@pytest.fixture(scope="module")
def feature_models(tmp_path_factory):
    from nextgpt.toy.feature_models import build_tiny_clap, build_tiny_clip

    root = tmp_path_factory.mktemp("feature_models")
    return {"clip": build_tiny_clip(root / "clip"), "clap": build_tiny_clap(root / "clap")}


def test_clipsim_of_one_repeated_frame_equals_its_clip_score(feature_models, tmp_path):
    from nextgpt.generation import save_video

    fm = resolve_feature_model("clipsim", feature_models["clip"])
    assert fm.toy and fm.describe()["note"].startswith("tiny RANDOM")
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frame[:, :32] = (200, 30, 30)
    frame[10:30, 40:60] = (20, 40, 220)
    caption = "a red square and a blue square"
    image = torch.from_numpy(frame).permute(2, 0, 1)
    single = mm.clip_score(resolve_feature_model("clip_score", feature_models["clip"]), [image], [caption])
    assert mm.clipsim(fm, [np.stack([frame] * 5)], [caption]) == pytest.approx(single, rel=1e-5)
    # through a video file: the codec changes pixels slightly, so compare with the decoded frame
    path = save_video(np.stack([frame] * 5), tmp_path / "v.mp4")
    decoded = mm.load_video_frames(path)
    assert decoded.shape[0] == 5
    first = torch.from_numpy(decoded[0].copy()).permute(2, 0, 1)
    from nextgpt.evaluation.scoring import score_metric

    files = {"v": path}
    got = score_metric("clipsim", files, {"v": caption}, feature_models["clip"]).value
    expect = mm.clip_score(fm, [first], [caption])
    assert got == pytest.approx(expect, rel=1e-3)


def test_fad_with_a_tiny_clap(feature_models):
    fm = resolve_feature_model("fad", feature_models["clap"])
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal(48000).astype(np.float32) * 0.1 for _ in range(3)]
    tones = [np.sin(np.arange(48000) * f / 48000 * 2 * np.pi).astype(np.float32) * 0.5 for f in (220, 440, 880)]
    assert mm.fad(fm, noise, noise) == pytest.approx(0.0, abs=1e-8)
    assert mm.fad(fm, noise, tones) > 1e-4


def test_missing_feature_model_weights_name_the_path_and_what_to_download(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nope'}.*hf download openai/clip-vit-base-patch32"):
        resolve_feature_model("clipsim", tmp_path / "nope")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="weights-inception-2015-12-05-6726825d.pth.*download https://"):
        resolve_feature_model("fid")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        resolve_feature_model("fad", tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ command line


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "evaluate.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def test_score_command_prints_one_json_object(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(PREDICTIONS))
    (tmp_path / "r.json").write_text(json.dumps(REFERENCES))
    out = run_cli("score", "--metric", "cider", "--pred", str(tmp_path / "p.json"), "--ref", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    value = json.loads(out.stdout)
    assert list(value) == ["cider"] and value["cider"] == pytest.approx(2.873694, abs=1e-6)
    # without Java: METEOR is skipped, and the output says so
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    out = run_cli("score", "--metric", "meteor", "--pred", str(tmp_path / "p.json"), "--ref",
                  str(tmp_path / "r.json"), env=env)
    assert out.returncode == 3 and json.loads(out.stdout) == {"meteor": None}
    assert "Java not found" in out.stderr and "METEOR was skipped" in out.stderr
    out = run_cli("score", "--metric", "vqa_accuracy", "--pred", str(tmp_path / "p.json"), "--ref",
                  str(tmp_path / "missing.json"))
    assert out.returncode == 1 and "missing.json" in out.stderr
