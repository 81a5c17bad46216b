"""The dataset catalog (nextgpt/dataset/catalog.py): reference entries, own folders, relative paths, registration."""
from __future__ import annotations

import inspect
from pathlib import Path, PurePosixPath

import pytest

from nextgpt.dataset import catalog
from nextgpt.dataset.mixture import resolve_params
from nextgpt.dataset.caption_pairs import CaptionPairDataset
from nextgpt.dataset.json_datasets import ConversationDataset
from nextgpt.dataset.legacy_pairs import LegacyPairDataset
from nextgpt.dataset.webdataset import ShardSource
from nextgpt.errors import ConfigError

REFERENCE_NAMES = {
    "cc3m_enc", "webvid_enc", "audiocap_enc", "cc3m_dec", "webvid_dec", "audiocap_dec", "image_instruction",
    "video_instruction", "audio_instruction", "mosit_instruction", "llava_instruction", "alpaca_instruction",
    "videochat_instruction",
}
FOLDERS = ("image_folder", "video_folder", "audio_folder")


def _paths(entry: catalog.CatalogEntry) -> dict[str, str]:
    return {k: v for k, v in entry.params.items() if v is not None and k.endswith(("_path", "_folder"))}


def test_every_reference_dataset_has_an_entry():
    assert REFERENCE_NAMES <= set(catalog.CATALOG)
    legacy = {n for n in catalog.CATALOG if n.endswith("_legacy")}
    assert legacy == {f"{d}_{k}_legacy" for d in ("cc3m", "webvid", "audiocap") for k in ("enc", "dec")} | {
        "image_instruction_legacy"}
    # LEGACY image targets are SD-1.5 embeddings (77x768): never the NEW SD-2 folders
    assert catalog.CATALOG["cc3m_dec_legacy"].params["embed_folder"] == "embed_sd15"
    assert catalog.CATALOG["image_instruction_legacy"].params["embed_folder"] == "it/embed_sd15"


@pytest.mark.parametrize("name", sorted(catalog.CATALOG))
def test_paths_are_relative_and_clean(name):
    for key, value in _paths(catalog.CATALOG[name]).items():
        path = PurePosixPath(value)
        assert not path.is_absolute() and ".." not in path.parts and "." not in path.parts, (name, key, value)
        assert not value.startswith("data/"), "paths are relative to data.root, which plays the role of ./data"


def test_entries_have_their_own_folders():
    """§12.9/§12.20: no entry borrows another dataset's media folders."""
    params = {n: e.params for n, e in catalog.CATALOG.items()}
    for dataset, modality in (("cc3m", "image"), ("webvid", "video"), ("audiocap", "audio")):
        for kind in ("enc", "dec"):
            folders = {k: v for k, v in params[f"{dataset}_{kind}"].items() if k in FOLDERS and v}
            assert folders == {f"{modality}_folder": f"T_X_pair_data/{dataset}/{modality}s"}
            assert params[f"{dataset}_{kind}"]["data_path"] == \
                f"T_X_pair_data/{dataset}/{dataset}_{'comprehension' if kind == 'enc' else 'generation'}.json"
        assert params[f"{dataset}_enc"]["embed_folder"] is None
        assert params[f"{dataset}_dec"]["embed_folder"] == "embed"
    for name in ("image_instruction", "video_instruction", "audio_instruction", "alpaca_instruction"):
        assert all(params[name][k] is None for k in FOLDERS)
    assert params["llava_instruction"]["image_folder"] == "IT_data/T+X-T_data/llava/images"
    assert params["videochat_instruction"]["video_folder"] == "IT_data/T+X-T_data/videochat/video"
    for name in ("image_instruction", "video_instruction", "audio_instruction", "mosit_instruction"):
        assert params[name]["embed_folder"] == "it/embed"


@pytest.mark.parametrize("name", sorted(catalog.CATALOG))
def test_every_entry_builds_its_class_signature(name):
    entry = catalog.CATALOG[name]
    cls = catalog.resolve_class(entry)
    assert cls in (ConversationDataset, LegacyPairDataset, CaptionPairDataset, ShardSource)
    inspect.signature(cls).bind(tokenizer=None, signal=None, options=None, name=name, **entry.params)


def test_pair_entries_find_the_shipped_sample_layout(samples_dir):
    for name in ("cc3m_enc", "webvid_enc", "audiocap_enc", "cc3m_dec", "webvid_dec", "audiocap_dec",
                 "cc3m_enc_legacy", "webvid_dec_legacy"):
        for key, path in resolve_params(catalog.CATALOG[name].params, samples_dir).items():
            if key.endswith(("_path", "_folder")) and path is not None:
                assert Path(path).exists(), (name, key, path)


def test_unknown_names_and_bad_targets():
    with pytest.raises(ConfigError, match=r"unknown dataset 'webvid_dc'; did you mean 'webvid_dec'"):
        catalog.get_entry("webvid_dc")
    with pytest.raises(ConfigError, match="cannot be imported"):
        catalog.resolve_class(catalog.CatalogEntry("nextgpt.dataset.json_datasets.NoSuchDataset"))
    with pytest.raises(ConfigError, match="dotted"):
        catalog.resolve_class(catalog.CatalogEntry("NoDots"))
    with pytest.raises(ConfigError, match="modality"):
        catalog.legacy_pair_data("x.json", modality="smell", task="generation", media_folder="x")


def test_register_adds_one_entry():
    entry = catalog.conversation_data("pets/pets.json", image_folder="pets/images", embed_folder="pets/embed")
    catalog.register("pets_test", entry)
    try:
        assert catalog.get_entry("pets_test") is entry
        assert catalog.resolve_class(entry) is ConversationDataset
        with pytest.raises(ConfigError, match="already has"):
            catalog.register("pets_test", entry)
        catalog.register("pets_test", catalog.conversation_data("pets/other.json"), overwrite=True)
        assert catalog.get_entry("pets_test").params["data_path"] == "pets/other.json"
        with pytest.raises(ConfigError, match="CatalogEntry"):
            catalog.register("pets_bad", {"data_path": "x.json"})  # type: ignore[arg-type]
    finally:
        catalog.CATALOG.pop("pets_test", None)


def test_resolve_params_joins_root_and_overrides_embeddings(tmp_path):
    params = catalog.CATALOG["cc3m_dec"].params
    resolved = resolve_params(params, tmp_path)
    assert resolved["data_path"] == tmp_path / "T_X_pair_data/cc3m/cc3m_generation.json"
    assert resolved["embed_folder"] == tmp_path / "embed" and resolved["video_folder"] is None
    assert resolve_params(params, tmp_path, "/abs/embed")["embed_folder"] == Path("/abs/embed")
    assert resolve_params(params, tmp_path, "emb2")["embed_folder"] == tmp_path / "emb2"
