"""Shared pytest fixtures: locations of the shared reference data (skipped cleanly when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """../shared beside the checkout, or $NEXTGPT_SHARED."""
    return Path(os.environ.get("NEXTGPT_SHARED", REPO.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set NEXTGPT_SHARED to the shared folder to run this test)")
    return path


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The reference repository's sample media and JSON (data/nextgpt_samples)."""
    return _require(shared_root() / "data" / "nextgpt_samples", "NExT-GPT sample data")


@pytest.fixture(scope="session")
def imagebind_fixtures_dir() -> Path:
    """Numerical outputs of the reference ImageBind (fixtures/imagebind)."""
    return _require(shared_root() / "fixtures" / "imagebind", "ImageBind reference fixtures")


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return _require(shared_root() / "spec", "reference spec folder")


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """A tiny LLaMA + locally trained SentencePiece tokenizer, written once per test session."""
    from nextgpt.toy.llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Every tiny model (LLM, ImageBind, SD, ZeroScope, AudioLDM), written once per test session."""
    from nextgpt.toy.models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


def tiny_model_overrides(paths: dict[str, Path]) -> list[str]:
    """Dotted overrides pointing configs/tiny/*.yaml at the session's tiny models."""
    return [f"model.llm={paths['llm']}", f"model.encoder.checkpoint={paths['imagebind']}",
            f"model.image.decoder={paths['sd']}", f"model.video.decoder={paths['zeroscope']}",
            f"model.audio.decoder={paths['audioldm']}"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the thread barriers stall
    (a decode step went from ~3 ms to ~18 ms under load). Use with `pytestmark = usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_stage3(paths: dict[str, Path], outdir: Path, seed: int = 0, lora_b_std: float | None = None,
                     signal_rows_std: float | None = None) -> Path:
    """A tiny stage-3 checkpoint (LoRA attached), optionally with random LoRA B matrices / signal rows so that
    they matter. Returns its directory."""
    import torch

    from nextgpt.config import load_config
    from nextgpt.model.modeling import build_model

    config = load_config(REPO / "configs/tiny/stage_3.yaml", tiny_model_overrides(paths))
    torch.manual_seed(seed)
    model = build_model(config.model, losses=config.train.losses)
    model.enable_lora(config.model.lora)
    with torch.no_grad():
        if lora_b_std is not None:
            for name, p in model.llm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, lora_b_std)
        if signal_rows_std is not None:
            for rows in model.signal_rows():
                rows.rows.normal_(0, signal_rows_std)
    return model.save_pretrained(outdir, config)
