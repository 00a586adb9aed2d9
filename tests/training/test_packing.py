"""Packing: documents joined by EOS and cut into blocks; every position, EOS included, is a target."""

from __future__ import annotations

import numpy as np

from weightsmith.data.packing import collate_packed_blocks, pack_token_ids

EOS = 2


def test_documents_are_joined_by_eos_and_cut_into_blocks():
    blocks = pack_token_ids([[10, 11, 12], [20], [30, 31, 32, 33]], seq_len=4, eos_id=EOS)
    # stream: 10 11 12 E 20 E 30 31 32 33 E  -> two full blocks, the 3-token tail is dropped
    assert blocks.tolist() == [[10, 11, 12, EOS], [20, EOS, 30, 31]]
    assert blocks.dtype == np.int64


def test_a_corpus_shorter_than_a_block_packs_to_nothing():
    assert pack_token_ids([[1, 2]], seq_len=8, eos_id=EOS).shape == (0, 8)
    assert pack_token_ids([], seq_len=8, eos_id=EOS).shape == (0, 8)


def test_labels_are_the_inputs_with_nothing_masked():
    # The pad id of many tokenizers is EOS; a pad-masking collator would hide every EOS from the loss.
    batch = collate_packed_blocks([{"input_ids": [5, EOS, 6, 7]}, {"input_ids": [EOS, 8, 9, EOS]}])
    assert batch["input_ids"].tolist() == [[5, EOS, 6, 7], [EOS, 8, 9, EOS]]
    assert batch["labels"].tolist() == batch["input_ids"].tolist()
    assert batch["labels"].data_ptr() != batch["input_ids"].data_ptr()
