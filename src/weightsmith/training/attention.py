"""Attention for padding-free batches that computes only inside each conversation.

A padding-free batch is one row holding many conversations, told apart by position ids that
restart at each one. transformers turns that into a block-diagonal mask and SDPA still computes
every query against every key of the row, masked or not: for 16 Quill chats of ~60 tokens that is
~16x the attention work of the chats alone, and a third of an SFT step on CPU. Here the
conversations are sorted by length and cut into up to four groups; each group's queries, keys and
values are gathered into a padded ``[conversations, heads, longest, dim]`` batch, attended causally
(padding sits after each conversation, so no real query ever sees it), and scattered back to the
row. The same numbers as the masked row (tested), for attention proportional to the conversations'
own lengths (one long chat no longer pads fifteen short ones to its length: on the quickstart's
batches the groups cut attention ~2.5x). On the CPU it attends in float32 even under bf16 autocast:
PyTorch's CPU flash attention is ~5x slower backwards in bf16.

Any other call (batches with padding, generation with a cache, a single sequence) goes to
transformers' own SDPA attention unchanged. The implementation is set on a model only while it
trains (``use_packed_attention``); it is not written into the saved config.
"""

from __future__ import annotations

import contextlib
from typing import Any

PACKED_SDPA = "weightsmith_packed_sdpa"
_registered = False


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """An ``AttentionInterface`` function: ``query``/``key``/``value`` are ``[batch, heads, length, dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    plan = _segments(kwargs.get("position_ids"), query, key)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gathers, placed = plan
    heads_kv, dtype = key.shape[1], query.dtype
    groups = query.shape[1] // heads_kv
    # PyTorch's CPU flash attention is several times slower backwards in bfloat16 than in float32 (3.8 vs
    # 0.7 ms a layer on the quickstart's batches): on the CPU, attend in float32 even under autocast (which
    # would cast to bfloat16) and hand back the dtype that came in.
    upcast = query.device.type == "cpu" and (dtype != torch.float32 or torch.is_autocast_enabled("cpu"))
    rows = [x[0].transpose(0, 1).reshape(x.shape[2], x.shape[1] * x.shape[3]) for x in (query, key, value)]
    if upcast:
        rows = [r.float() for r in rows]
    outs = []
    with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
        for gather in gathers:  # conversations of similar length, padded to the longest among them
            out = torch.nn.functional.scaled_dot_product_attention(
                _to_segments(rows[0], gather, query.shape[1]),
                repeat_kv(_to_segments(rows[1], gather, heads_kv), groups),
                repeat_kv(_to_segments(rows[2], gather, heads_kv), groups),
                dropout_p=dropout if module.training else 0.0,
                scale=scaling,
                is_causal=True,
            )
            outs.append(out.transpose(1, 2).reshape(gather.numel(), out.shape[1], out.shape[3]))
    out = torch.cat(outs).index_select(0, placed)
    return out.to(dtype).unsqueeze(0), None  # [1, L, heads, dim], as transformers' attention functions return


def _to_segments(flat, gather, heads: int):
    """``[L, heads * d]`` row tokens -> ``[n, heads, longest, d]``, conversation i's tokens in ``gather[i]``."""
    n, longest = gather.shape
    return flat.index_select(0, gather.reshape(-1)).view(n, longest, heads, -1).transpose(1, 2)


MAX_LENGTH_GROUPS = 4  # padded attention per group of similar lengths; more groups, more (small) calls


def _segments(position_ids, query, key) -> tuple[list, Any] | None:
    """For one packed row of conversations: the conversations sorted by length and cut into up to
    ``MAX_LENGTH_GROUPS`` groups; per group ``gather[i, t]`` = row index of token t of its conversation i
    (padded with 0, attention then costs each group's own longest², not the batch's); and ``placed[r]`` =
    where row token r sits among the groups' padded outputs, concatenated. None when this is not a packed
    row of two or more conversations attending to itself."""
    import torch

    if position_ids is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return None
    positions = position_ids.reshape(-1)
    length = query.shape[2]
    if positions.shape[0] != length:
        return None
    # A conversation starts wherever the position does not follow the one before (as transformers'
    # find_packed_sequence_indices reads it).
    starts = torch.nonzero(positions[1:] != positions[:-1] + 1).flatten() + 1
    if starts.numel() == 0:
        return None
    starts = torch.cat([starts.new_zeros(1), starts])
    lengths = torch.diff(starts, append=starts.new_tensor([length]))
    order = torch.argsort(lengths, stable=True)
    gathers, placed, offset = [], torch.empty(length, dtype=torch.long, device=positions.device), 0
    for chunk in torch.tensor_split(order, min(MAX_LENGTH_GROUPS, max(1, order.numel() // 4))):
        chunk_lengths, chunk_starts = lengths[chunk], starts[chunk]
        longest = int(chunk_lengths.max())
        offsets = torch.arange(longest, device=positions.device)
        inside = offsets[None, :] < chunk_lengths[:, None]
        gather = torch.where(inside, chunk_starts[:, None] + offsets[None, :], 0)
        placed[gather[inside]] = offset + torch.nonzero(inside.reshape(-1)).flatten()
        offset += gather.numel()
        gathers.append(gather)
    return gathers, placed


def use_packed_attention(model) -> bool:
    """Make ``model`` attend per conversation in padding-free batches (everything else keeps SDPA).

    Only a model that runs SDPA is switched: flash attention already reads packed rows from the
    position ids, and a model on eager attention may not support SDPA. Returns whether it switched.
    """
    global _registered
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
        # Padded batches and generation still need SDPA's masks.
        AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
        _registered = True
    model.set_attn_implementation(PACKED_SDPA)
    return model.config._attn_implementation == PACKED_SDPA
