"""Turn the public raw forms of the training data into the files the catalog reads (`nextgpt prepare`,
prepare_data.py), under `data.root` in the catalog's layout:

    pairs   CC3M / WebVid / AudioCaps captions + a media folder -> T_X_pair_data/<set>/<set>.json (raw pairs),
            <set>_comprehension.json (stage 1), <set>_generation.json (stage 2), and the media folder linked in
    llava   LLaVA-Instruct-150K JSON + COCO images -> IT_data/T+X-T_data/llava/preprocessed_llava.json
    alpaca  Alpaca JSON -> IT_data/T+X-T_data/alpaca/preprocessed_alpaca.json
    t2x     the reference's <m>_t2x.json -> IT_data/T-T+X_data/<m>_instruction_tuning.json
    mosit   the reference's raw MosIT dialogues -> IT_data/MosIT_data/mosit_instruction_tuning.json

Every step reports how many rows it read and wrote, the rows it dropped as malformed and the media files that are
missing (rows whose media are missing are dropped, so that training does not skip them one by one).
Captions are stripped of surrounding white space (WebVid's end in "\\r\\n").
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import DataError
from ..json_files import read_json_list
from .records import alpaca_record, comprehension_record, generation_record, llava_record, mosit_record, t2x_record

__all__ = ["PAIR_SETS", "PrepareReport", "prepare_alpaca", "prepare_hint", "prepare_llava", "prepare_mosit",
           "prepare_pairs", "prepare_t2x", "read_pairs"]

PAIRS_DIR = "T_X_pair_data"
#: set -> (modality, media folder, name key of the raw pair file, id key)
PAIR_SETS = {"cc3m": ("image", "images", "image_name", "id"), "webvid": ("video", "videos", "video_name", "id"),
             "audiocap": ("audio", "audios", "audio_name", "audio_id")}
MEDIA_SUFFIXES = {"image": (".jpg", ".jpeg", ".png", ".webp"), "video": (".mp4", ".webm", ".mkv", ".avi"),
                  "audio": (".wav", ".flac", ".mp3", ".ogg")}
LLAVA_DIR = "IT_data/T+X-T_data/llava"
ALPACA_DIR = "IT_data/T+X-T_data/alpaca"
T2X_DIR = "IT_data/T-T+X_data"
MOSIT_DIR = "IT_data/MosIT_data"


@dataclass
class PrepareReport:
    what: str
    read: int = 0
    files: list[Path] = field(default_factory=list)
    written: int = 0
    bad_rows: list[str] = field(default_factory=list)
    missing_media: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.what}: {self.read} rows read, {self.written} written, {len(self.bad_rows)} bad, "
                 f"{len(self.missing_media)} with missing media"]
        for title, items in (("bad rows", self.bad_rows), ("missing media", self.missing_media)):
            if items:
                shown = ", ".join(items[:10]) + (f", ... and {len(items) - 10} more" if len(items) > 10 else "")
                lines.append(f"  {title}: {shown}")
        lines += [f"  wrote {f}" for f in self.files]
        return "\n".join(lines)


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
    return path


def _link_media(media: Path | None, target: Path) -> Path:
    """Make `target` (the catalog's media folder) hold the media: a symbolic link to `media` unless it is already
    that folder."""
    if media is None:
        return target
    media = Path(media)
    if not media.is_dir():
        raise DataError(f"media folder {media} does not exist")
    if target.exists() or target.is_symlink():
        if target.resolve() != media.resolve():
            raise DataError(f"{target} already exists and is not {media}; remove it or pass --media {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(media.resolve(), target_is_directory=True)
    return target


# ------------------------------------------------------------------------------------------------ pairs


def read_pairs(source: Path, set_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(name, caption, id) rows of a caption source, and the descriptions of malformed rows. Sources:
    the reference's raw pair JSON (`cc3m.json`: image_name + caption + id, ...); a CSV / TSV with a header
    (AudioCaps' `audiocap_id, youtube_id, start_time, caption` -> `<audiocap_id>.wav`; WebVid's
    `videoid, name, ...` -> `<videoid>.mp4`; or any `file_name` / `file` + `caption` columns); or a folder of media
    files with a caption `.txt` beside each (img2dataset / video2dataset output)."""
    modality, _, name_key, id_key = PAIR_SETS[set_name]
    source = Path(source)
    rows, bad = [], []

    def add(where: str, name: Any, caption: Any, ident: Any) -> None:
        if not isinstance(name, str) or not name.strip() or not isinstance(caption, str) or not caption.strip():
            bad.append(f"{where} (no file name or caption)")
        else:
            rows.append({"name": name.strip(), "caption": caption.strip(), "id": ident})

    if source.is_dir():
        for f in sorted(source.rglob("*")):
            if f.suffix.lower() in MEDIA_SUFFIXES[modality]:
                txt = f.with_suffix(".txt")
                caption = txt.read_text(errors="replace") if txt.is_file() else None
                add(str(f), str(f.relative_to(source)), caption, f.stem)
    elif source.suffix.lower() == ".json":
        for i, item in enumerate(read_json_list(source, "source file")):
            item = item if isinstance(item, dict) else {}
            add(f"{source}[{i}]", item.get(name_key, item.get("file_name")), item.get("caption"),
                item.get(id_key, item.get("id", i)))
    elif source.suffix.lower() in (".csv", ".tsv"):
        with open(source, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if source.suffix.lower() == ".tsv" else ",")
            for i, row in enumerate(reader, start=2):
                if "audiocap_id" in row:
                    add(f"{source}:{i}", f"{row['audiocap_id']}.wav" if row["audiocap_id"] else None,
                        row.get("caption"), _int(row["audiocap_id"]))
                elif "videoid" in row:
                    add(f"{source}:{i}", f"{row['videoid']}.mp4" if row["videoid"] else None, row.get("name"),
                        _int(row["videoid"]))
                else:
                    add(f"{source}:{i}", row.get("file_name", row.get("file")), row.get("caption"), i - 2)
    else:
        raise DataError(f"{source}: expected a .json / .csv / .tsv caption file or a folder of media with .txt "
                        "captions")
    return rows, bad


def _int(text: str) -> Any:
    try:
        return int(text)
    except (TypeError, ValueError):
        return text


def prepare_pairs(set_name: str, captions: Path, root: Path, media: Path | None = None, seed: int = 0,
                  limit: int | None = None) -> PrepareReport:
    """One pair set (`cc3m`, `webvid`, `audiocap`) into `root/T_X_pair_data/<set>/`: the raw pair file and the
    comprehension (stage 1) and generation (stage 2) files; `media` is linked in as the set's media folder."""
    if set_name not in PAIR_SETS:
        raise DataError(f"unknown pair set {set_name!r}; expected one of {', '.join(PAIR_SETS)}")
    modality, media_dir, name_key, id_key = PAIR_SETS[set_name]
    out = Path(root) / PAIRS_DIR / set_name
    folder = _link_media(media, out / media_dir)
    rows, bad = read_pairs(captions, set_name)
    report = PrepareReport(f"{set_name} pairs from {captions}", read=len(rows) + len(bad), bad_rows=bad)
    if limit is not None:
        rows = rows[:limit]
    kept = []
    for row in rows:
        if (folder / row["name"]).is_file():
            kept.append(row)
        else:
            report.missing_media.append(row["name"])
    rng = np.random.default_rng(seed)
    raw = [{"audio_id": r["id"], "audio_name": r["name"], "caption": r["caption"]} if set_name == "audiocap" else
           {"caption": r["caption"], "id": r["id"], name_key: r["name"]} for r in kept]
    report.files = [
        _write_json(out / f"{set_name}.json", raw),
        _write_json(out / f"{set_name}_comprehension.json",
                    [comprehension_record(rng, modality, r["name"], r["caption"]) for r in kept]),
        _write_json(out / f"{set_name}_generation.json",
                    [generation_record(rng, modality, r["name"], r["caption"]) for r in kept]),
    ]
    report.written = len(kept)
    return report


# ------------------------------------------------------------------------------------------ instruction data


def _convert(what: str, items: Iterable[Any], convert: Callable[[int, Any], dict[str, Any]], out: Path,
             media_of: Callable[[dict[str, Any]], list[Path]] = lambda r: []) -> PrepareReport:
    report = PrepareReport(what)
    records = []
    for i, item in enumerate(items):
        report.read += 1
        try:
            record = convert(i, item if isinstance(item, dict) else {})
        except DataError as err:
            report.bad_rows.append(f"item {i}: {err}")
            continue
        missing = [str(p) for p in media_of(record) if not p.is_file()]
        if missing:
            report.missing_media += missing
            continue
        records.append(record)
    report.files.append(_write_json(out, records))
    report.written = len(records)
    return report


def prepare_llava(source: Path, root: Path, images: Path | None = None) -> PrepareReport:
    """LLaVA-Instruct-150K (`llava_instruct_150k.json`) with its COCO images."""
    folder = _link_media(images, Path(root) / LLAVA_DIR / "images")
    return _convert(f"LLaVA from {source}", read_json_list(source, "source file"), lambda i, item: llava_record(item),
                    Path(root) / LLAVA_DIR / "preprocessed_llava.json",
                    lambda r: [folder / n for n in r["input_image"]])


def prepare_alpaca(source: Path, root: Path) -> PrepareReport:
    """Alpaca (`alpaca_data.json`: instruction, input, output)."""
    return _convert(f"Alpaca from {source}", read_json_list(source, "source file"), lambda i, item: alpaca_record(item),
                    Path(root) / ALPACA_DIR / "preprocessed_alpaca.json")


def prepare_t2x(modality: str, source: Path, root: Path) -> PrepareReport:
    """The reference's T-T+X data (`<modality>_t2x.json`)."""
    if modality not in ("image", "video", "audio"):
        raise DataError(f"modality must be image, video or audio, got {modality!r}")
    return _convert(f"T-T+X {modality} from {source}", read_json_list(source, "source file"),
                    lambda i, item: t2x_record(item, modality, i),
                    Path(root) / T2X_DIR / f"{modality}_instruction_tuning.json")


def prepare_mosit(source: Path, root: Path, media: Path | None = None) -> PrepareReport:
    """The reference's raw MosIT dialogues; `media` (a folder with images/, videos/, audios/) is linked in."""
    if media is not None:
        for sub in ("images", "videos", "audios"):
            if (Path(media) / sub).is_dir():
                _link_media(Path(media) / sub, Path(root) / MOSIT_DIR / sub)
    return _convert(f"MosIT from {source}", read_json_list(source, "source file"), lambda i, item: mosit_record(item),
                    Path(root) / MOSIT_DIR / "mosit_instruction_tuning.json")


# ------------------------------------------------------------------------------------------------ hints

_PAIR_OF = {f"{s}_{k}{legacy}": s for s in PAIR_SETS for k in ("enc", "dec") for legacy in ("", "_legacy")}
_RAW = {"cc3m": "the CC3M captions (img2dataset output folder, or a cc3m.json / CSV with file_name, caption)",
        "webvid": "the WebVid CSV (results_2M_train.csv) or a video2dataset output folder",
        "audiocap": "the AudioCaps CSV (train.csv)"}
_EMBED_MODALITIES = {"image_instruction": ("image",), "video_instruction": ("video",),
                     "audio_instruction": ("audio",), "mosit_instruction": ("image", "video", "audio")}


def prepare_hint(name: str, key: str, root: Path, params: dict[str, Any], config: Any) -> str:
    """The command that creates the missing `key` of catalog entry `name` (for the checks before training)."""
    if key == "embed_folder":
        modalities = ((PAIR_SETS[_PAIR_OF[name]][0],) if name in _PAIR_OF else _EMBED_MODALITIES.get(name)
                      or ("<modality>",))
        data = Path(root) / params["data_path"]
        return "; ".join(f"python preprocess_embeddings.py --data {data} --modality {m} --decoder "
                         f"{config.model.output(m).decoder if m != '<modality>' else '<decoder>'} "
                         f"--output-dir {Path(root) / params['embed_folder']}" for m in modalities)
    if name in _PAIR_OF:
        s = _PAIR_OF[name]
        return (f"nextgpt prepare pairs --set {s} --captions <{_RAW[s]}> --media <{PAIR_SETS[s][1]} folder> "
                f"--root {root}  (data/README.md)")
    if name == "llava_instruction":
        return f"nextgpt prepare llava --input llava_instruct_150k.json --images <COCO train2017 folder> --root {root}"
    if name == "alpaca_instruction":
        return f"nextgpt prepare alpaca --input alpaca_data.json --root {root}"
    if name in ("image_instruction", "video_instruction", "audio_instruction"):
        m = name.split("_")[0]
        return f"nextgpt prepare t2x --modality {m} --input {m}_t2x.json --root {root}"
    if name == "mosit_instruction":
        return f"nextgpt prepare mosit --input <MosIT dialogues JSON> --media <folder with images/ videos/ audios/> " \
               f"--root {root}"
    return "create it (data/README.md), or fix the path in the catalog entry / data.catalog_files"
