"""Synthetic dataset (nextgpt/toy/synthetic_*.py): determinism, reference JSON schemas, decodable media, true captions,
the catalog's layout."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from nextgpt.dataset.catalog import CATALOG
from nextgpt.dataset.mixture import resolve_params
from nextgpt.toy import synthetic_data as syn
from nextgpt.toy import synthetic_media as media
from nextgpt.toy.synthetic_records import COMPREHENSION_PROMPTS
from nextgpt.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SMALL = syn.SyntheticCounts(images=6, videos=3, audios=4, it_image=3, it_video=2, it_audio=2, mosit=2, llava=2,
                            alpaca=3)
MODALITIES = ("image", "video", "audio")
PLACEHOLDERS = {m: f"<{m}>" for m in MODALITIES}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    manifest = syn.generate(out, seed=0)
    return out, manifest, time.perf_counter() - start


def _json_files(out: Path) -> list[Path]:
    return sorted(out.rglob("*.json"))


def _as_list(v):
    return v if isinstance(v, list) else [v]


# ---------------------------------------------------------------------------------------------------------------
# generation, size, determinism
# ---------------------------------------------------------------------------------------------------------------
def test_default_set_is_small_and_fast(default_set):
    out, manifest, seconds = default_set
    assert seconds < 30
    assert manifest["total_bytes"] < 20e6
    n_images = sum(v for k, v in manifest["media_files"].items() if k.endswith("images"))
    assert n_images >= 200
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    for rel, meta in manifest["files"].items():
        assert (out / rel).stat().st_size == meta["bytes"]
    expected = {
        "T_X_pair_data/cc3m/cc3m.json", "T_X_pair_data/cc3m/cc3m_comprehension.json",
        "T_X_pair_data/cc3m/cc3m_generation.json", "T_X_pair_data/webvid/webvid.json",
        "T_X_pair_data/webvid/webvid_comprehension.json", "T_X_pair_data/webvid/webvid_generation.json",
        "T_X_pair_data/audiocap/audiocap.json", "T_X_pair_data/audiocap/audiocap_comprehension.json",
        "T_X_pair_data/audiocap/audiocap_generation.json", "IT_data/T-T+X_data/image_instruction_tuning.json",
        "IT_data/T-T+X_data/video_instruction_tuning.json", "IT_data/T-T+X_data/audio_instruction_tuning.json",
        "IT_data/MosIT_data/mosit_instruction_tuning.json", "IT_data/T+X-T_data/llava/preprocessed_llava.json",
        "IT_data/T+X-T_data/alpaca/preprocessed_alpaca.json", "cc_sbu_align/filter_cap.json",
    }
    heldout = {f"heldout/{n}.json" for n in (
        "cc3m_comprehension", "cc3m_generation", "webvid_comprehension", "webvid_generation", "audiocap_comprehension",
        "audiocap_generation", "image_instruction_tuning", "video_instruction_tuning", "audio_instruction_tuning",
        "llava", "alpaca")}
    manifests = {f"heldout/eval/{t}.json" for t in ("image_caption", "video_caption", "audio_caption", "vqa",
                                                     "video_qa", "t2i", "t2v", "t2a")}
    assert set(manifest["json_records"]) == expected | heldout | manifests


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = syn.generate(tmp_path / "a", seed=5, counts=SMALL)
    b = syn.generate(tmp_path / "b", seed=5, counts=SMALL)
    assert a["files"] == b["files"]  # sha256 of every JSON, JPEG, WAV and MP4
    assert (tmp_path / "a/manifest.json").read_bytes() == (tmp_path / "b/manifest.json").read_bytes()
    c = syn.generate(tmp_path / "c", seed=6, counts=SMALL)
    assert c["files"] != a["files"]


def test_regenerating_replaces_previous_output(tmp_path):
    syn.generate(tmp_path, seed=1, counts=SMALL)
    fewer = syn.SyntheticCounts(images=2, videos=1, audios=1, it_image=1, it_video=1, it_audio=1, mosit=1,
                                llava=1, alpaca=1)
    manifest = syn.generate(tmp_path, seed=1, counts=fewer)
    assert len(list((tmp_path / "T_X_pair_data/cc3m/images").iterdir())) == 2  # stale files removed
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(manifest["files"]) | {"manifest.json"}


def test_bad_counts_and_seed(tmp_path):
    with pytest.raises(ConfigError, match="images"):
        syn.generate(tmp_path, counts=syn.SyntheticCounts(images=-1))
    with pytest.raises(ConfigError, match="it_video"):
        syn.generate(tmp_path, counts=syn.SyntheticCounts(videos=0))
    with pytest.raises(ConfigError, match="seed"):
        syn.generate(tmp_path, seed=-3, counts=SMALL)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "nextgpt", "synthetic", str(out), "--seed", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 2 and manifest["json_records"]["T_X_pair_data/cc3m/cc3m.json"] == 200


def test_catalog_entries_find_the_data(default_set):
    """Every catalog entry the dataset serves, and the LEGACY pair entries, find their JSON and media folders."""
    out, manifest, _ = default_set
    for name in (*syn.CATALOG_NAMES, *(n for n in CATALOG if n.endswith("_legacy"))):
        params = resolve_params(CATALOG[name].params, out)
        assert params["data_path"].is_file(), name
        for key in ("image_folder", "video_folder", "audio_folder"):
            if params.get(key) is not None:
                assert any(params[key].iterdir()), (name, key)
    assert manifest["catalog"] == syn.catalog_hints()


# ---------------------------------------------------------------------------------------------------------------
# schemas
# ---------------------------------------------------------------------------------------------------------------
def _check_conversation(record, where):
    conv = record["conversations"]
    assert isinstance(conv, list) and len(conv) >= 2 and len(conv) % 2 == 0, where
    for k, turn in enumerate(conv):
        assert turn["from"] == ("human" if k % 2 == 0 else "gpt"), where
        assert isinstance(turn["value"], str) and turn["value"].strip(), where
    human = " ".join(t["value"] for t in conv if t["from"] == "human")
    gpt = " ".join(t["value"] for t in conv if t["from"] == "gpt")
    for m in MODALITIES:
        n_in = len(_as_list(record.get(f"input_{m}", [])))
        assert human.count(PLACEHOLDERS[m]) == n_in, (where, m)
        n_out = gpt.count(PLACEHOLDERS[m])
        assert len(_as_list(record.get(f"{m}_captions", []))) == n_out, (where, m)
        assert len(_as_list(record.get(f"{m}_caption_embeddings", []))) == n_out, (where, m)
        if f"output_{m}" in record:
            assert len(_as_list(record[f"output_{m}"])) == n_out, (where, m)
        for name in _as_list(record.get(f"{m}_caption_embeddings", [])):
            assert name.endswith(".npy"), where


def test_every_json_follows_the_reference_schema(default_set):
    out, manifest, _ = default_set
    hints = manifest["catalog"]
    folders_of = {h["data_path"]: h for h in hints.values()}
    for path in _json_files(out):
        rel = path.relative_to(out).as_posix()
        data = json.loads(path.read_text(encoding="utf-8"))
        if rel == "manifest.json" or rel.startswith("heldout/eval/"):  # evaluation manifests: test_evaluation_*
            continue
        if rel == "cc_sbu_align/filter_cap.json":  # MiniGPT-4's layout: {"annotations": [{image_id, caption}]}
            notes = data["annotations"]
            assert len(notes) == manifest["json_records"][rel] and all(set(a) == {"image_id", "caption"}
                                                                       for a in notes)
            assert all((out / "cc_sbu_align/image" / f"{a['image_id']}.jpg").is_file() for a in notes)
            continue
        assert isinstance(data, list) and data, rel
        assert len(data) == manifest["json_records"][rel]
        name = path.name
        if name in ("cc3m.json", "webvid.json", "audiocap.json"):
            keys = {"cc3m.json": {"caption", "id", "image_name"}, "webvid.json": {"caption", "id", "video_name"},
                    "audiocap.json": {"audio_id", "audio_name", "caption"}}[name]
            for r in data:
                assert set(r) == keys, rel
            if name == "cc3m.json":
                assert all(isinstance(r["id"], str) and r["image_name"] == r["id"] + ".jpg" for r in data)
            if name == "webvid.json":
                assert all(isinstance(r["id"], int) and r["video_name"].endswith(".mp4") for r in data)
            if name == "audiocap.json":
                assert all(isinstance(r["audio_id"], int) and r["audio_name"] == f"{r['audio_id']}.wav" for r in data)
            continue
        hint = folders_of[rel]
        for k, r in enumerate(data):
            _check_conversation(r, f"{rel}[{k}]")
            for m in MODALITIES:  # every referenced input / output file exists in the catalog folder
                for key in (f"input_{m}", f"output_{m}"):
                    for f in _as_list(r.get(key, [])):
                        assert (out / hint[f"{m}_folder"] / f).is_file(), (rel, k, f)


def test_pair_derived_files(default_set):
    out, _, _ = default_set
    prompts = {p.format(m) for p in COMPREHENSION_PROMPTS for m in MODALITIES}
    for dataset, m, key in (("cc3m", "image", "image_name"), ("webvid", "video", "video_name"),
                            ("audiocap", "audio", "audio_name")):
        base = out / "T_X_pair_data" / dataset
        raw = json.loads((base / f"{dataset}.json").read_text())
        comp = json.loads((base / f"{dataset}_comprehension.json").read_text())
        gen = json.loads((base / f"{dataset}_generation.json").read_text())
        assert len(raw) == len(comp) == len(gen)
        for r, c, g in zip(raw, comp, gen):
            assert set(c) == {f"input_{m}", "conversations"} and c[f"input_{m}"] == r[key]
            human, gpt = c["conversations"][0]["value"], c["conversations"][1]["value"]
            assert human.startswith(f"<{m}>\n") and human[len(m) + 3 :] in prompts
            assert gpt == r["caption"]
            assert set(g) == {f"output_{m}", f"{m}_captions", f"{m}_caption_embeddings", "conversations"}
            assert g[f"output_{m}"] == r[key] and g[f"{m}_captions"] == r["caption"]
            assert g[f"{m}_caption_embeddings"] == f"{r[key]}.npy"
            assert g["conversations"][0]["value"].endswith(r["caption"])
            assert g["conversations"][1]["value"].endswith(f" <{m}>")


def test_instruction_files(default_set):
    out, _, _ = default_set
    it = out / "IT_data"
    for m, pattern in (("image", r"it_img_(\d+)\.jpg\.npy"), ("video", r"it_vid_(\d+)\.mp4\.npy"),
                       ("audio", r"(\d+)\.wav\.npy")):
        data = json.loads((it / "T-T+X_data" / f"{m}_instruction_tuning.json").read_text())
        for idx, r in enumerate(data):
            assert not any(k.startswith(("input_", "output_")) for k in r)
            (emb,) = r[f"{m}_caption_embeddings"]
            match = re.fullmatch(pattern, emb)
            assert match
            if m == "audio":
                assert int(match.group(1)) == r["source_data"]["audiocap_id"]
            else:
                assert int(match.group(1)) == idx
            human, gpt = r["conversations"]
            assert human["input_modality"] == "text" and gpt["output_modality"] == m
            assert gpt["caption"] == r[f"{m}_captions"][0] == r["source_data"]["caption"]

    mosit = json.loads((it / "MosIT_data" / "mosit_instruction_tuning.json").read_text())
    for k, r in enumerate(mosit):
        outputs = {m for m in MODALITIES if r.get(f"{m}_captions")}
        inputs = {m for m in MODALITIES if r.get(f"input_{m}")}
        assert len(outputs) >= 2 and inputs, k  # modality switching within one dialogue
        assert len(r["conversations"]) >= 6
        for m in MODALITIES:
            prefix = {"image": "mosit_i", "video": "mosit_v", "audio": "mosit_a"}[m]
            for name in r.get(f"input_{m}", []) + [e[: -len(".npy")] for e in r.get(f"{m}_caption_embeddings", [])]:
                assert re.fullmatch(rf"{prefix}_{k:07d}_\d\d\.(jpg|mp4|wav)", name)
                assert (it / "MosIT_data" / f"{m}s" / name).is_file()

    llava = json.loads((it / "T+X-T_data" / "llava" / "preprocessed_llava.json").read_text())
    for r in llava:
        conv = r["conversations"]
        assert len(r["input_image"]) == 1 and len(conv) >= 4
        first = conv[0]["value"]
        assert first.startswith("<image>\n") or first.endswith("\n<image>")
        assert all("<image>" not in t["value"] for t in conv[1:])

    alpaca = json.loads((it / "T+X-T_data" / "alpaca" / "preprocessed_alpaca.json").read_text())
    for r in alpaca:
        assert set(r) == {"conversations"} and len(r["conversations"]) == 2
        assert not any(p in t["value"] for t in r["conversations"] for p in PLACEHOLDERS.values())
        q, a = r["conversations"][0]["value"], r["conversations"][1]["value"]
        if q.startswith("Add the two numbers."):
            x, y = map(int, re.findall(r"\d+", q))
            assert a.endswith(f"equals {x + y}.")
        if q.startswith("Spell the word backwards."):
            word = q.split()[-1]
            assert a.endswith(f"{word[::-1]}.")


# ---------------------------------------------------------------------------------------------------------------
# media decode and truthful captions
# ---------------------------------------------------------------------------------------------------------------
PALETTE = {**{f"shape:{k}": v for k, v in media.COLOURS.items()},
           **{f"bg:{k}": v for k, v in media.BACKGROUNDS.items()}}
_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)


def _classify(img: np.ndarray) -> np.ndarray:
    """Index into _NAMES of the nearest palette colour per pixel (-1 when nothing is within 60)."""
    d = np.linalg.norm(img[..., None, :].astype(np.float32) - _RGB, axis=-1)
    label = d.argmin(-1)
    label[d.min(-1) > 60] = -1
    return label


def _mask(img: np.ndarray, colour: str) -> np.ndarray:
    return _classify(img) == _NAMES.index(f"shape:{colour}")


def _pairs(caption: str) -> list[tuple[str, str]]:
    colours, shapes = "|".join(media.COLOURS), "|".join(media.SHAPES)
    return re.findall(rf"\b({colours}) ({shapes})\b", caption)


def _background(caption: str) -> str:
    return re.search(rf"\b({'|'.join(media.BACKGROUNDS)}) background\b", caption).group(1)


def test_images_decode_and_captions_are_true(default_set):
    out, _, _ = default_set
    checked_positions = 0
    items = []
    for r in json.loads((out / "T_X_pair_data/cc3m/cc3m.json").read_text()):
        items.append((out / "T_X_pair_data/cc3m/images" / r["image_name"], r["caption"]))
    for r in json.loads((out / "IT_data/MosIT_data/mosit_instruction_tuning.json").read_text()):
        for cap, emb in zip(r.get("image_captions", []), r.get("image_caption_embeddings", [])):
            items.append((out / "IT_data/MosIT_data/images" / emb[: -len(".npy")], cap))
    assert len(items) > 200
    for path, caption in items:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size[0] in (64, 80, 96)
            img = np.asarray(im)
        h, w = img.shape[:2]
        bg = _background(caption)
        corners = [img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]]
        assert all(np.abs(c.astype(int) - media.BACKGROUNDS[bg]).max() < 20 for c in corners), (path.name, caption)
        pairs = _pairs(caption)
        assert 1 <= len(pairs) <= 2, caption
        labels = _classify(img)
        for colour, _shape in pairs:
            assert (labels == _NAMES.index(f"shape:{colour}")).sum() >= 20, (path.name, caption)
        named = {_NAMES.index(f"shape:{c}") for c, _ in pairs} | {_NAMES.index(f"bg:{bg}")}
        stray = np.isin(labels, [i for i in range(len(_NAMES)) if i not in named])
        assert stray.sum() < 0.02 * h * w, (path.name, caption)  # no colour the caption does not name
        if len(pairs) == 1:
            ys, xs = np.nonzero(_mask(img, pairs[0][0]))
            cx, cy = xs.mean() / w, ys.mean() / h
            # the words of the position phrase, read independently of the generator's table
            horizontal = "left" if " left" in caption else "right" if " right" in caption else "middle"
            vertical = "top" if " top" in caption else "bottom" if " bottom" in caption else "middle"
            assert horizontal != "middle" or vertical != "middle" or "in the center" in caption, caption
            expect_x = {"left": cx < 0.35, "right": cx > 0.65, "middle": 0.4 < cx < 0.6}[horizontal]
            expect_y = {"top": cy < 0.35, "bottom": cy > 0.65, "middle": 0.4 < cy < 0.67}[vertical]
            assert expect_x and expect_y, (path.name, caption, cx, cy)
            checked_positions += 1
        else:
            (c1, _), (c2, _) = pairs
            ys1, xs1 = np.nonzero(_mask(img, c1))
            ys2, xs2 = np.nonzero(_mask(img, c2))
            if "on the left" in caption:
                assert xs1.mean() < xs2.mean()
            else:
                assert ys1.mean() < ys2.mean()
    assert checked_positions > 100


def test_videos_decode_and_captions_are_true(default_set):
    import decord

    out, _, _ = default_set
    items = [(out / "T_X_pair_data/webvid/videos" / r["video_name"], r["caption"])
             for r in json.loads((out / "T_X_pair_data/webvid/webvid.json").read_text())]
    for p in sorted((out / "IT_data/MosIT_data/videos").glob("*.mp4")):
        items.append((p, None))
    assert len(items) >= 40
    for path, caption in items:
        vr = decord.VideoReader(str(path))
        n, fps = len(vr), vr.get_avg_fps()
        assert fps in (8.0, 10.0) and n % int(fps) == 0 and 1 <= n / fps <= 4, path.name
        first, last = vr[0].asnumpy(), vr[n - 1].asnumpy()
        assert first.shape in ((64, 64, 3), (64, 96, 3))
        if caption is None:
            continue
        (colour, _shape), = _pairs(caption)
        a, b = _mask(first, colour), _mask(last, colour)
        assert a.sum() > 10 and b.sum() > 10, (path.name, caption)
        ya, xa = np.nonzero(a)
        yb, xb = np.nonzero(b)
        if "left to right" in caption:
            assert xb.mean() - xa.mean() > 0.4 * first.shape[1]
        elif "right to left" in caption:
            assert xa.mean() - xb.mean() > 0.4 * first.shape[1]
        elif "top to bottom" in caption:
            assert yb.mean() - ya.mean() > 0.4 * first.shape[0]
        elif "bottom to top" in caption:
            assert ya.mean() - yb.mean() > 0.4 * first.shape[0]
        elif "growing" in caption:
            assert b.sum() > 2 * a.sum()
        elif "shrinking" in caption:
            assert a.sum() > 2 * b.sum()
        else:
            raise AssertionError(f"no motion phrase in {caption!r}")
        assert np.abs(first[0, 0].astype(int) - media.BACKGROUNDS[_background(caption)]).max() < 25


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


def test_audios_decode_and_captions_are_true(default_set):
    out, _, _ = default_set
    items = [(out / "T_X_pair_data/audiocap/audios" / r["audio_name"], r["caption"])
             for r in json.loads((out / "T_X_pair_data/audiocap/audiocap.json").read_text())]
    for r in json.loads((out / "IT_data/MosIT_data/mosit_instruction_tuning.json").read_text()):
        for cap, emb in zip(r.get("audio_captions", []), r.get("audio_caption_embeddings", [])):
            items.append((out / "IT_data/MosIT_data/audios" / emb[: -len(".npy")], cap))
    kinds = set()
    for path, caption in items:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames in (32000, 48000, 64000)
        x, sr = sf.read(path, dtype="float64")
        hz = [int(v) for v in re.findall(r"(\d+) Hz", caption)]
        if "white noise" in caption:
            kinds.add("noise")
            power = np.abs(np.fft.rfft(x)) ** 2 + 1e-12
            assert np.exp(np.log(power).mean()) / power.mean() > 0.3  # spectrally flat
        elif "rising" in caption or "falling" in caption:
            kinds.add("chirp")
            head, tail = _peak_hz(x[: sr // 4], sr), _peak_hz(x[-sr // 4 :], sr)
            assert (tail > head) == ("rising" in caption), caption
            assert min(hz) * 0.8 <= min(head, tail) and max(head, tail) <= max(hz) * 1.2
        elif "beeps" in caption:
            kinds.add("beeps")
            count = {"two": 2, "three": 3, "four": 4, "five": 5}[re.search(r"(two|three|four|five) ", caption).group(1)]
            env = np.abs(x).reshape(-1, 160).max(1) > 0.1  # 10 ms blocks
            assert int(np.sum(env[1:] & ~env[:-1]) + env[0]) == count, caption
            assert abs(_peak_hz(x, sr) - hz[0]) < 0.02 * hz[0]
        elif "two-tone" in caption:
            kinds.add("two-tone")
            assert abs(_peak_hz(x[: sr // 2], sr) - hz[0]) < 0.02 * hz[0]
            assert abs(_peak_hz(x[sr // 2 : sr], sr) - hz[1]) < 0.02 * hz[1]
        else:  # a steady tone (sine or square) at the stated frequency
            kinds.add("square" if "square" in caption else "tone")
            assert len(hz) == 1 and abs(_peak_hz(x, sr) - hz[0]) < 0.02 * hz[0], caption
        assert 0.2 < np.abs(x).max() <= 0.51
    assert kinds == {"noise", "chirp", "beeps", "two-tone", "square", "tone"}


def test_llava_answers_match_the_image(default_set):
    out, _, _ = default_set
    base = out / "IT_data/T+X-T_data/llava"
    checked = 0
    for r in json.loads((base / "preprocessed_llava.json").read_text()):
        img = np.asarray(Image.open(base / "images" / r["input_image"][0]))
        for q, a in zip(r["conversations"][::2], r["conversations"][1::2]):
            q, a = q["value"], a["value"]
            if "What colour is the shape" in q:
                colour = re.search(rf"is ({'|'.join(media.COLOURS)})\.", a).group(1)
                assert _mask(img, colour).sum() > 20
                checked += 1
            if "What colour is the background" in q:
                bg = re.search(rf"plain ({'|'.join(media.BACKGROUNDS)})", a).group(1)
                assert np.abs(img[0, 0].astype(int) - media.BACKGROUNDS[bg]).max() < 20
                checked += 1
            if "How many shapes" in q:
                assert "exactly one shape" in a
                (colour, _), = _pairs(a)
                labels = _classify(img)
                assert (labels == _NAMES.index(f"shape:{colour}")).sum() > 20
                assert np.isin(labels, [_NAMES.index(f"shape:{c}") for c in media.COLOURS if c != colour]).sum() < 10
    assert checked >= 10


def test_every_media_file_decodes(default_set):
    import decord

    out, manifest, _ = default_set
    seen = {"jpg": 0, "wav": 0, "mp4": 0}
    for rel in manifest["files"]:
        path, ext = out / rel, rel.rsplit(".", 1)[-1]
        if ext == "jpg":
            with Image.open(path) as im:
                im.load()
                assert im.mode == "RGB" and 64 <= im.size[0] <= 96
        elif ext == "wav":
            x, sr = sf.read(path)
            assert sr == 16000 and x.ndim == 1 and 2 <= len(x) / sr <= 4
        elif ext == "mp4":
            vr = decord.VideoReader(str(path))
            frames = vr.get_batch(list(range(len(vr)))).asnumpy()
            assert frames.shape[0] == len(vr) >= 8 and frames.shape[-1] == 3
        else:
            assert ext == "json", rel
            continue
        seen[ext] += 1
    assert seen["jpg"] >= 250 and seen["wav"] >= 60 and seen["mp4"] >= 60
