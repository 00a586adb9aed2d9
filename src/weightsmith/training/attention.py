"""Attention for padding-free batches that computes only inside each conversation.

A padding-free batch is one row holding many conversations, told apart by position ids that
restart at each one. transformers turns that into a block-diagonal mask and SDPA still computes
every query against every key of the row, masked or not: for 16 Quill chats of ~60 tokens that is
~16x the attention work of the chats alone, and a third of an SFT step on CPU. Here each
conversation's queries, keys and values are gathered into a padded ``[conversations, heads,
longest, dim]`` batch, attended causally (padding sits after each conversation, so no real query
ever sees it), and scattered back to the row. The same numbers as the masked row (tested), for
attention proportional to the conversations' own lengths.

Any other call (batches with padding, generation with a cache, a single sequence) goes to
transformers' own SDPA attention unchanged. The implementation is set on a model only while it
trains (``use_packed_attention``); it is not written into the saved config.
"""

from __future__ import annotations

from typing import Any

PACKED_SDPA = "weightsmith_packed_sdpa"
_registered = False


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """An ``AttentionInterface`` function: ``query``/``key``/``value`` are ``[batch, heads, length, dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    segments = _segments(kwargs.get("position_ids"), query, key)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gather, valid = segments
    n, longest = gather.shape

    def to_segments(x):  # [1, h, L, d] -> [n, h, longest, d]
        h, d = x.shape[1], x.shape[3]
        flat = x[0].transpose(0, 1).reshape(x.shape[2], h * d)
        return flat.index_select(0, gather.reshape(-1)).view(n, longest, h, d).transpose(1, 2)

    groups = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        to_segments(query),
        repeat_kv(to_segments(key), groups),
        repeat_kv(to_segments(value), groups),
        dropout_p=dropout if module.training else 0.0,
        scale=scaling,
        is_causal=True,
    )
    heads, dim = out.shape[1], out.shape[3]
    out = out.transpose(1, 2).reshape(n * longest, heads, dim).index_select(0, valid)
    return out.unsqueeze(0), None  # [1, L, heads, dim], as transformers' attention functions return


def _segments(position_ids, query, key) -> tuple[Any, Any] | None:
    """For one packed row: ``gather[i, t]`` = row index of token t of conversation i (padded with 0),
    and ``valid`` = the flat indices of the real tokens in that padded layout, in row order.
    None when this is not a packed row of two or more conversations attending to itself."""
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
    longest = int(lengths.max())
    offsets = torch.arange(longest, device=positions.device)
    inside = offsets[None, :] < lengths[:, None]
    gather = torch.where(inside, starts[:, None] + offsets[None, :], 0)
    valid = torch.nonzero(inside.reshape(-1)).flatten()
    return gather, valid


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
