"""The demo's tiny "Vicuna": before the three stages, the random tiny LLM learns the language of the synthetic
training conversations (all of its weights, about 45 s on one CPU thread).

NExT-GPT starts from Vicuna, an LLM that already follows instructions; its stages teach alignment and the signal
tokens, not language. A random 2-layer LLM tuned only through LoRA learns neither in the demo's minutes (its
stage-3 text loss stayed near 4.6 nats per token and it answered every request with the same sentence), so the
demo first gives it what Vicuna's own training gives the real model: the requests and answers of the synthetic
TRAINING sets, in the chat template. The model has no signal tokens yet, so each media placeholder is written as
a plain-text marker (`<audio>` → `[audio]`): the LLM learns where an answer hands over to a medium, and stage 3
only has to map that moment onto the signal tokens (with the markers left out, it learnt that those answers end
there, and stage 3 had to unlearn it: 6 to 8 of 8 audio answers carried their sound, depending on the epochs).
The held-out split is never read here.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PRETRAINED_MARKER = "pretrained.json"  # in the LLM folder: the settings and losses of the pretraining
_PLACEHOLDER = re.compile(r"<(image|video|audio)>")


def text_markers(turns: list[dict]) -> list[dict]:
    """The turns with every media placeholder written as a plain-text marker (`<image>` → `[image]`)."""
    return [dict(turn, value=_PLACEHOLDER.sub(r"[\1]", turn["value"])) for turn in turns]


def pretrain_tiny_llm(llm_dir: str | Path, conversations: list[list[dict]], template: str = "v1", steps: int = 300,
                      batch_size: int = 16, lr: float = 3e-3, seed: int = 0) -> dict:
    """Train every weight of the LLM in `llm_dir` on `conversations` (reference-format turns; answers supervised,
    as in stage 3) with AdamW and a linear decay, and write it back in place (atomically, with a
    `pretrained.json` marker). Returns the marker's content."""
    from transformers import LlamaForCausalLM

    from nextgpt.constants import IGNORE_INDEX
    from nextgpt.conversation import tokenize_conversation
    from nextgpt.model.language_model import load_tokenizer

    llm_dir = Path(llm_dir)
    tokenizer = load_tokenizer(llm_dir)
    examples = [tokenize_conversation(template, text_markers(turns), tokenizer, None, where=f"conversation {i}")
                for i, turns in enumerate(conversations)]
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    # batches of similar lengths (a few long multi-turn dialogues would otherwise pad most batches 3x), drawn at
    # random at each step
    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    batches = [by_length[k:k + batch_size] for k in range(0, len(by_length), batch_size)]
    order = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        batch = [examples[i] for i in batches[int(torch.randint(len(batches), (1,), generator=order))]]
        width = max(len(ex) for ex in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ex in enumerate(batch):
            ids[row, :len(ex)] = torch.tensor(ex.input_ids)
            labels[row, :len(ex)] = torch.tensor(ex.labels)
            mask[row, :len(ex)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            logger.info("tiny LLM pretraining step %d/%d: loss %.4f", step + 1, steps, losses[-1])
    k = max(1, steps // 10)
    marker = {"conversations": len(examples), "template": template, "steps": steps, "batch_size": batch_size,
              "lr": lr, "seed": seed, "loss_first_tenth": sum(losses[:k]) / k, "loss_last_tenth": sum(losses[-k:]) / k}
    with tempfile.TemporaryDirectory(dir=llm_dir, prefix=".tmp-pretrain-") as tmp:
        model.save_pretrained(tmp)
        os.replace(Path(tmp) / "model.safetensors", llm_dir / "model.safetensors")
    (llm_dir / PRETRAINED_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    return marker
