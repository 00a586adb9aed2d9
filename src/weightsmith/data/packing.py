"""Packing for causal-LM pre-training: documents joined by EOS, cut into fixed-length blocks.

Every token of every block is a training target (no padding, so no masking), and a document's
EOS teaches the model where text ends. Attention spans document boundaries inside a block, as in
GPT-style pre-training. The trailing tokens that do not fill a whole block are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def pack_token_ids(documents: Iterable[Sequence[int]], seq_len: int, eos_id: int) -> np.ndarray:
    """Concatenate ``documents`` (token ids), each followed by ``eos_id``, into ``[n_blocks, seq_len]``.

    Args:
        documents: tokenized documents, without EOS.
        seq_len: tokens per block.
        eos_id: the id appended after every document.

    Returns:
        An int64 array of shape ``(n_blocks, seq_len)``; ``n_blocks`` is 0 when the corpus is
        shorter than one block.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    pieces = []
    for ids in documents:
        pieces.append(np.asarray(ids, dtype=np.int64))
        pieces.append(np.asarray([eos_id], dtype=np.int64))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n_blocks = len(stream) // seq_len
    return stream[: n_blocks * seq_len].reshape(n_blocks, seq_len)


def pack_token_chunks(documents: Iterable[Sequence[int]], max_len: int, eos_id: int) -> list[np.ndarray]:
    """Like :func:`pack_token_ids`, but the last, shorter chunk is kept: ``[n, <= max_len]`` as a list.

    For text replayed inside SFT (:func:`weightsmith.data.chat_prepare.prepare_replay`), whose
    batches take rows of any length: a corpus shorter than one block still trains.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    pieces = []
    for ids in documents:
        pieces.append(np.asarray(ids, dtype=np.int64))
        pieces.append(np.asarray([eos_id], dtype=np.int64))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return [stream[start : start + max_len] for start in range(0, len(stream), max_len)]


def collate_packed_blocks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch packed blocks for a causal LM: the labels are the inputs (the model shifts them).

    We do not use ``DataCollatorForLanguageModeling`` because it masks every position whose id
    equals the pad id, and many tokenizers pad with EOS — the model would never learn to end a text.
    """
    import torch

    input_ids = torch.as_tensor(np.stack([np.asarray(row["input_ids"], dtype=np.int64) for row in rows]))
    return {"input_ids": input_ids, "labels": input_ids.clone()}
