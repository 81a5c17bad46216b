"""Which parameters train in each stage: the one table per recipe (`train.recipe`), with the reference's fixes.

NExT-GPT:

| stage | input projector | output projectors | signal-token rows | LoRA | whole embedding + LM head |
|-------|-----------------|-------------------|-------------------|------|---------------------------|
| 1     | yes             | no                | no                | no   | if `model.train_full_embeddings` |
| 2     | no              | all three         | yes               | no   | if `model.train_full_embeddings` |
| 3     | yes             | all three         | yes               | yes  | if `model.train_full_embeddings` |

`model.train_full_embeddings` is on in the LEGACY configs: the 2023 release resized the embedding after freezing
the LLM, and transformers 4.29's resize built new, trainable modules, so the whole input embedding and LM head
(all 32 038 rows, signal rows included) trained in every stage. With it on, the signal-token rows train in every
stage too (they are rows of those matrices). NEW configs leave it off. What the NEW reference trains instead:
stages 1 and 2 also train the whole embedding and LM-head matrices (original rows drift, docs/deviations.md);
stage 2 trains only the audio output projector; stage 3 trains nothing at all.

MiniGPT-4 (Zhu et al. 2023): both stages train only the projection (`llama_proj`, our linear input projector);
stage 1 pretrains on image-caption pairs, stage 2 fine-tunes on its conversation-format image descriptions.

The ImageBind encoder, the LLM's other weights and the decoders never train.
"""
from __future__ import annotations

from dataclasses import dataclass

from .constants import MODALITIES
from .errors import ConfigError


@dataclass(frozen=True)
class StagePreset:
    input_projector: bool
    output_projectors: bool
    signal_rows: bool
    lora: bool

    def groups(self, full_embeddings: bool = False) -> list[str]:
        """The parameter-group names (NextGPTModel.parameter_groups) that train; `full_embeddings`: the config's
        `model.train_full_embeddings` (adds the whole embedding and LM head, signal rows included)."""
        names = ["input_projector"] if self.input_projector else []
        names += [f"output_projector.{m}" for m in MODALITIES] if self.output_projectors else []
        names += ["signal_rows"] if self.signal_rows or full_embeddings else []
        names += ["lora"] if self.lora else []
        names += ["embeddings"] if full_embeddings else []
        return names


STAGE_PRESETS: dict[int, StagePreset] = {
    1: StagePreset(input_projector=True, output_projectors=False, signal_rows=False, lora=False),
    2: StagePreset(input_projector=False, output_projectors=True, signal_rows=True, lora=False),
    3: StagePreset(input_projector=True, output_projectors=True, signal_rows=True, lora=True),
}
_PROJECTION_ONLY = StagePreset(input_projector=True, output_projectors=False, signal_rows=False, lora=False)
RECIPES: dict[str, dict[int, StagePreset]] = {
    "nextgpt": STAGE_PRESETS,
    "minigpt4": {1: _PROJECTION_ONLY, 2: _PROJECTION_ONLY},
}


def stage_preset(stage: int, recipe: str = "nextgpt") -> StagePreset:
    if recipe not in RECIPES:
        raise ConfigError(f"train.recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    table = RECIPES[recipe]
    if stage not in table:
        raise ConfigError(f"train.stage must be one of {sorted(table)} for recipe {recipe}, got {stage}")
    return table[stage]


def apply_stage_preset(model, stage: int, recipe: str = "nextgpt") -> dict[str, list]:
    """Freeze everything, then unfreeze the stage's groups. Returns the trainable groups {name: params}.

    LoRA must already be attached (`model.enable_lora`) when the stage trains it.
    """
    preset = stage_preset(stage, recipe)
    groups = model.parameter_groups()
    if preset.lora and not groups["lora"]:
        raise ConfigError(f"stage {stage} trains LoRA, but the model has no LoRA adapter attached")
    model.requires_grad_(False)
    wanted = preset.groups(model.config.train_full_embeddings)
    trainable = {name: groups[name] for name in wanted if groups[name]}
    for params in trainable.values():
        for p in params:
            p.requires_grad_(True)
    return trainable
