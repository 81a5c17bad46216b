"""The splice: put projected media features where the placeholder ids are.

This is the only place where token sequences and media features are merged; training and generation both use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..constants import IGNORE_INDEX, PLACEHOLDER_MODALITY
from ..errors import DataError

# Marks media positions in `SplicedBatch.token_ids` (never a real token id, never a placeholder id).
MEDIA_POSITION = -1


@dataclass
class SplicedBatch:
    inputs_embeds: torch.Tensor  # (B, L, H)
    attention_mask: torch.Tensor  # (B, L) long, 1 on real positions
    position_ids: torch.Tensor  # (B, L), restarting at 0 in every row
    token_ids: torch.Tensor  # (B, L): the text ids, MEDIA_POSITION on media features, pad id on padding
    labels: torch.Tensor | None  # (B, L), IGNORE_INDEX on media, padding and masked text


def splice_multimodal(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None,
                      features: dict[str, torch.Tensor], embed_tokens: Callable[[torch.Tensor], torch.Tensor],
                      max_length: int | None = None, pad_id: int = 0) -> SplicedBatch:
    """Replace every placeholder id (−200 / −300 / −400) by the next feature block of its modality.

    `features[m]` is (N_m, T, H): the projected encoder output of the batch's m-items in order of appearance
    (row by row, left to right). Padding (attention mask 0) is removed before splicing and the rows are re-padded
    on the right. Rows longer than `max_length` are cut, but never through or before a media block (that is a
    `DataError`: the dataset is responsible for keeping samples short enough).
    """
    batch = input_ids.shape[0]
    mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    text_embeds = embed_tokens(input_ids.clamp(min=0))  # placeholders embed as id 0, then get replaced
    used = {m: 0 for m in features}
    rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for b in range(batch):
        keep = mask[b]
        ids, embeds = input_ids[b][keep], text_embeds[b][keep]
        labs = labels[b][keep] if labels is not None else None
        pieces_e, pieces_i, pieces_l = [], [], []
        start = 0
        media_spans = []  # (start, end) of every feature block in the spliced row
        length = 0
        for p in torch.nonzero(ids < 0).flatten().tolist():
            pieces_e.append(embeds[start:p])
            pieces_i.append(ids[start:p])
            if labs is not None:
                pieces_l.append(labs[start:p])
            length += p - start
            modality = PLACEHOLDER_MODALITY.get(int(ids[p]))
            if modality is None:
                raise DataError(f"batch row {b}: unknown negative token id {int(ids[p])} at position {p}")
            block_list = features.get(modality)
            k = used.get(modality, 0)
            if block_list is None or k >= len(block_list):
                have = 0 if block_list is None else len(block_list)
                raise DataError(f"batch row {b}: more <{modality}> placeholders than the {have} {modality} "
                                f"input(s) of the batch")
            block = block_list[k].to(embeds.dtype)
            used[modality] = k + 1
            pieces_e.append(block)
            pieces_i.append(torch.full((len(block),), MEDIA_POSITION, dtype=ids.dtype, device=ids.device))
            if labs is not None:
                pieces_l.append(torch.full((len(block),), IGNORE_INDEX, dtype=labs.dtype, device=labs.device))
            media_spans.append((length, length + len(block)))
            length += len(block)
            start = p + 1
        pieces_e.append(embeds[start:])
        pieces_i.append(ids[start:])
        if labs is not None:
            pieces_l.append(labs[start:])
        row_e, row_i = torch.cat(pieces_e), torch.cat(pieces_i)
        row_l = torch.cat(pieces_l) if labs is not None else None
        if max_length is not None and len(row_i) > max_length:
            if media_spans and media_spans[-1][1] > max_length:
                raise DataError(f"batch row {b}: {len(row_i)} tokens after splicing, and cutting to "
                                f"max_length={max_length} would cut a media block")
            row_e, row_i = row_e[:max_length], row_i[:max_length]
            row_l = row_l[:max_length] if row_l is not None else None
        rows.append((row_e, row_i, row_l))
    for modality, block_list in features.items():
        if block_list is not None and used.get(modality, 0) != len(block_list):
            raise DataError(f"the batch has {len(block_list)} {modality} input(s) but "
                            f"{used.get(modality, 0)} <{modality}> placeholder(s)")

    longest = max(len(r[1]) for r in rows)
    hidden = text_embeds.shape[-1]
    out_e = text_embeds.new_zeros(batch, longest, hidden)
    out_i = input_ids.new_full((batch, longest), pad_id)
    out_l = input_ids.new_full((batch, longest), IGNORE_INDEX) if labels is not None else None
    out_m = input_ids.new_zeros(batch, longest)
    out_p = input_ids.new_zeros(batch, longest)
    for b, (row_e, row_i, row_l) in enumerate(rows):
        n = len(row_i)
        out_e[b, :n] = row_e
        out_i[b, :n] = row_i
        if out_l is not None:
            out_l[b, :n] = row_l
        out_m[b, :n] = 1
        out_p[b, :n] = torch.arange(n, device=input_ids.device)
    return SplicedBatch(out_e, out_m, out_p, out_i, out_l)
