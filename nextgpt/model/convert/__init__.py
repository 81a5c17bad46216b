"""Import reference NExT-GPT (and MiniGPT-4) checkpoints into our checkpoint directory format.

    nextgpt convert --format new|legacy|minigpt4 --src PATH [--src PATH ...] --config CONFIG.yaml \
        --output OUT_DIR [--allow-unmatched] [--dtype keep|float32|bfloat16|float16] [--source-tokenizer DIR] \
        [--overwrite] [--verify] [section.key=value ...]

The output is what `NextGPTModel.save_pretrained` writes and `NextGPTModel.from_pretrained` / `predict.py` load:
`config.yaml` (the given config, resolved, with `model.lora` set from the imported adapter), `model.safetensors`
(`input_projector.*`, `output_projectors.{image,video,audio}.*`, and `embeddings.embed` / `embeddings.lm_head`
or `signal_rows.embed` / `signal_rows.lm_head`, see below),
`adapter/` (peft LoRA adapter) when the source has LoRA weights, the tokenizer with the signal tokens registered,
and `conversion.json` (what was mapped, dropped, left over, initialised).

Sources (the files the reference's training writes):
* NEW (`--format new`): directories or files of the reference's training outputs, in the order given (a later
  tensor replaces an earlier one; inside a directory: the peft adapter `adapter_config.json` +
  `adapter_model.safetensors|.bin`, then `mm_input_projector.bin`, `mm_output_projector.bin`,
  `non_lora_trainables.bin`).
  Keys `model.mm_input_projector.*`, `model.mm_output_{img,vid,aud}_projector.*`, `model.embed_tokens.weight`,
  `lm_head.weight`, optionally under the peft prefix `base_model.model.` (non_lora_trainables.bin).
* LEGACY (`--format legacy`): `7b_tiva_v0/pytorch_model.pt` (or its directory): `llama_proj.*` -> the linear input
  projector, `gen_text_hidden_fcs{,_video,_audio}.0.*` -> the output projectors (`legacy_textfc_key_map`), LoRA
  `llama_model.base_model.model.….lora_{A,B}.default.weight` -> the peft adapter (r from the tensor shapes, alpha /
  dropout / bias from the config, targets from the keys), embedding / LM-head matrices if present.

* MiniGPT-4 (`--format minigpt4`): a released `pretrained_minigpt4*.pth` (or a MiniGPT-4 training's
  `checkpoint_N.pth`): its `model` dict holds `llama_proj.{weight,bias}` -> the linear input projector; its other
  top-level keys (optimizer, config, scaler, epoch) are training state and reported as dropped. Needs a MiniGPT-4
  config (configs/minigpt4_stage_2.yaml: encoder kind blip2, linear projector, recipe minigpt4).

Embedding and LM head: both references train the WHOLE input embedding and LM-head matrices (NEW when an adapter
is tuned; LEGACY in every stage, as a side effect of resizing the vocabulary after freezing the LLM) and save them.
With `model.train_full_embeddings` (on in the LEGACY configs) and both matrices in the source, the whole matrices
are imported (`embeddings.*`): the converted model uses every row the reference trained against. Otherwise only
the rows of the registered tokens are imported (`signal_rows.*`; NEW configs, whose training keeps the original
rows frozen). Row ids are looked up by token string in the source's tokenizer when one is found next to the source
(or given with --source-tokenizer), else the ids of our registration are used and the matrix must have exactly
len(tokenizer) rows. `conversion.json` records, per matrix, how many rows came from the source and how far its
original-vocabulary rows are from the base LLM's (rows changed, max and mean absolute difference). Rows the source
does not have start at the mean of the base LLM's rows (the NEW reference's rule) and are reported; a config asking
for the whole matrices is then written with `model.train_full_embeddings: false`.

What a conversion needs: the base LLM directory `model.llm` (its tokenizer and config.json; its weight files too
when signal rows must be mean-initialised — only the two matrices are read). The encoder and decoders are not read.

Strictness: every source key is mapped, dropped for a stated reason (a buffer with no counterpart), or reported
as left over. Missing tensors of the groups trained up to the config's stage (input projector from stage 1, output
projectors from stage 2, LoRA in stage 3), unexpected / left-over keys and mis-shaped tensors raise
CheckpointError naming them, unless `allow_unmatched` (CLI `--allow-unmatched`), which still reports them and fills
the holes with a fresh initialisation. Groups not trained by the stage and absent from the source are freshly
initialised (as our own training would have left them) and reported.
"""
from .importer import FORMATS, REPORT_NAME, convert_checkpoint, verify_conversion
from .keys import map_legacy_key, map_new_key, reference_name
from .report import ConversionReport
from .sources import read_llm_tensors, read_tensor_file

__all__ = ["FORMATS", "REPORT_NAME", "ConversionReport", "convert_checkpoint", "map_legacy_key", "map_new_key",
           "read_llm_tensors", "read_tensor_file", "reference_name", "verify_conversion"]
