"""Reading reference checkpoints: tensor files (safetensors or weights-only pickles), LLM weight subsets, and the
source folders of a conversion."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import CheckpointError

NEW_WEIGHT_FILES = ("mm_input_projector.bin", "mm_output_projector.bin", "non_lora_trainables.bin")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
LEGACY_FILE = "pytorch_model.pt"
MINIGPT4_PATTERN = "*minigpt4*.pth"  # pretrained_minigpt4.pth (13B), prerained_minigpt4_7b.pth (7B), checkpoint_*.pth


def read_tensor_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a safetensors file or a pickle read with `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, truncated files, foreign formats
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a flat state dict {{name: tensor}}, got {type(state).__name__}")
    return {k: v.detach() for k, v in state.items()}


def read_llm_tensors(llm_dir: str | Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Read only `names` from a transformers checkpoint directory (single or sharded, safetensors or .bin)."""
    llm_dir = Path(llm_dir)
    where: dict[str, Path] = {}
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = llm_dir / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            where = {n: llm_dir / weight_map[n] for n in names if n in weight_map}
            break
    else:
        for single in ("model.safetensors", "pytorch_model.bin"):
            if (llm_dir / single).is_file():
                where = {n: llm_dir / single for n in names}
                break
    if not where:
        raise CheckpointError(f"{llm_dir}: no LLM weight files (model.safetensors, pytorch_model.bin or a sharded "
                              f"index) to read {', '.join(names)} from")
    out: dict[str, torch.Tensor] = {}
    for path in sorted(set(where.values())):
        wanted = [n for n, p in where.items() if p == path]
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                present = set(f.keys())
                out.update({n: f.get_tensor(n) for n in wanted if n in present})
        else:
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            out.update({n: state[n] for n in wanted if n in state})
    absent = [n for n in names if n not in out]
    if absent:
        raise CheckpointError(f"{llm_dir}: the LLM weights have no {', '.join(absent)}")
    return out


@dataclass
class SourceTensor:
    key: str
    tensor: torch.Tensor
    origin: str  # "file:key"
    adapter: bool = False


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tokenizer_config.json", "tokenizer.model", "tokenizer.json"))


def collect_sources(fmt: str, sources: list[Path]) -> tuple[list[SourceTensor], dict | None, list[Path], list[str]]:
    """Read every source: (entries in precedence order, NEW adapter config, tokenizer folders, files read)."""
    entries: list[SourceTensor] = []
    adapter_cfg: dict | None = None
    tokenizer_dirs: list[Path] = []
    files_read: list[str] = []

    def add_file(path: Path, adapter: bool = False) -> None:
        files_read.append(str(path))
        for k, v in read_tensor_file(path).items():
            entries.append(SourceTensor(k, v, f"{path.name}:{k}", adapter))

    def read_adapter_config(folder: Path) -> dict:
        cfg_path = folder / ADAPTER_CONFIG
        if not cfg_path.is_file():
            raise CheckpointError(f"{folder}: adapter weights without {ADAPTER_CONFIG}")
        try:
            return json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg_path}: not valid JSON: {exc}") from None

    for src in sources:
        src = Path(src)
        if not src.exists():
            raise CheckpointError(f"{src}: no such file or directory")
        folder = src if src.is_dir() else src.parent
        if _has_tokenizer(folder) and folder not in tokenizer_dirs:
            tokenizer_dirs.append(folder)
        if fmt == "legacy":
            path = src / LEGACY_FILE if src.is_dir() else src
            if not path.is_file():
                raise CheckpointError(f"{src}: no {LEGACY_FILE} (the LEGACY release's delta checkpoint)")
            add_file(path)
            continue
        if src.is_file():
            is_adapter = src.name in ADAPTER_WEIGHTS
            if is_adapter:
                adapter_cfg = read_adapter_config(folder)
            add_file(src, adapter=is_adapter)
            continue
        found = [src / n for n in NEW_WEIGHT_FILES if (src / n).is_file()]
        adapter_file = next((src / n for n in ADAPTER_WEIGHTS if (src / n).is_file()), None)
        if not found and adapter_file is None:
            raise CheckpointError(f"{src}: none of the NEW reference checkpoint files "
                                  f"({', '.join(NEW_WEIGHT_FILES + ADAPTER_WEIGHTS)})")
        if adapter_file is not None:  # first: the explicitly saved trainables below take precedence
            adapter_cfg = read_adapter_config(src)
            add_file(adapter_file, adapter=True)
        for path in found:
            add_file(path)
    return entries, adapter_cfg, tokenizer_dirs, files_read


def read_minigpt4_sources(sources: list[Path]) -> tuple[list[SourceTensor], list[str], list[str]]:
    """MiniGPT-4 checkpoints (`pretrained_minigpt4*.pth`, or its own training's `checkpoint_N.pth`): the tensors of
    their `model` dict as entries, the files read, and the other top-level keys (optimizer, config, scaler,
    epoch: training state, not weights) as `file:key` strings."""
    entries: list[SourceTensor] = []
    files_read: list[str] = []
    other: list[str] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            found = sorted(src.glob(MINIGPT4_PATTERN)) or sorted(src.glob("checkpoint_*.pth"))
            if len(found) != 1:
                raise CheckpointError(f"{src}: expected one MiniGPT-4 checkpoint ({MINIGPT4_PATTERN}), found "
                                      f"{[p.name for p in found]}; pass the file")
            src = found[0]
        if not src.is_file():
            raise CheckpointError(f"{src}: no such file")
        try:
            raw = torch.load(str(src), map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling refusals, truncated files, foreign formats
            raise CheckpointError(f"{src}: cannot read checkpoint: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            raise CheckpointError(f"{src}: not a MiniGPT-4 checkpoint (expected a dict with a 'model' state dict, "
                                  f"found {sorted(raw) if isinstance(raw, dict) else type(raw).__name__})")
        files_read.append(str(src))
        for key, value in raw["model"].items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{src}: model[{key!r}] is a {type(value).__name__}, not a tensor")
            entries.append(SourceTensor(key, value.detach(), f"{src.name}:{key}"))
        other += [f"{src.name}:{key}" for key in raw if key != "model"]
    return entries, files_read, other
