"""Which parameters train in each stage: the one table per recipe (`train.recipe`).

NExT-GPT (spec §5, with its fixes):

| stage | input projector | output projectors | signal-token rows | LoRA |
|-------|-----------------|-------------------|-------------------|------|
| 1     | yes             | no                | no                | no   |
| 2     | no              | all three         | yes               | no   |
| 3     | yes             | all three         | yes               | yes  |

MiniGPT-4 (Zhu et al. 2023): both stages train only the projection (`llama_proj`, our linear input projector);
stage 1 pretrains on image-caption pairs, stage 2 fine-tunes on its conversation-format image descriptions.

The table holds for both layouts. What the reference trains instead:
- NEW stage 1 and 2 also train the *whole* embedding and LM-head matrices (§12.34); stage 2 trains only the audio
  output projector (§12.4); stage 3 trains nothing at all (§12.5).
- LEGACY matches the table except that its signal-token rows are never trained (§12.47).
The ImageBind encoder, the LLM base weights and the decoders never train.
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

    def groups(self) -> list[str]:
        """The parameter-group names (NextGPTModel.parameter_groups) that train."""
        names = ["input_projector"] if self.input_projector else []
        names += [f"output_projector.{m}" for m in MODALITIES] if self.output_projectors else []
        names += ["signal_rows"] if self.signal_rows else []
        names += ["lora"] if self.lora else []
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
    trainable = {name: groups[name] for name in preset.groups() if groups[name]}
    for params in trainable.values():
        for p in params:
            p.requires_grad_(True)
    return trainable
