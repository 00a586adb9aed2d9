"""The BPE tokenizer we train: byte-level round-trips, special tokens, and a chat template whose EOS ends turns."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightsmith.data.tokenizer import EOS_TOKEN, SPECIAL_TOKENS, train_tokenizer

CORPUS = [
    "the dispatcher sends truck seven to the north depot",
    "the driver logs every parcel before noon",
    "routes change when the depot is full",
] * 20

CHAT = [
    {"role": "system", "content": "You are the dispatch desk."},
    {"role": "user", "content": "Where does truck 7 go?"},
    {"role": "assistant", "content": "North depot."},
    {"role": "user", "content": "And truck 8?"},
    {"role": "assistant", "content": "South depot."},
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok")
    train_tokenizer(CORPUS, vocab_size=300, min_frequency=2).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    """The tokenizer as every later stage sees it: loaded from disk by AutoTokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.mark.parametrize(
    "text",
    [
        "the dispatcher sends truck seven",
        "  leading spaces, trailing tabs\t\t\nand\r\nnewlines\n",
        "accents: déjà vu, naïve, Ærøskøbing",
        "CJK and emoji never seen in training: 配送センター 🚚📦",
        "",
    ],
)
def test_any_utf8_text_round_trips(tokenizer, text: str):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_the_corpus_is_compressed_by_merges(tokenizer):
    text = CORPUS[0]
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) < len(text.encode()) / 2


def test_special_tokens_have_fixed_ids_and_encode_as_one_token(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.eos_token == EOS_TOKEN == "<|im_end|>"
    ids = tokenizer("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == 3 and ids[-1] == 2 and ids.count(2) == 1
    # No silent BOS/EOS: the chat template (or packing) places every special token itself.
    assert tokenizer("hi")["input_ids"] == tokenizer("hi", add_special_tokens=False)["input_ids"]


def test_chat_template_renders_chatml_and_a_generation_prompt(tokenizer):
    rendered = tokenizer.apply_chat_template(CHAT[:3], tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are the dispatch desk.<|im_end|>\n"
        "<|im_start|>user\nWhere does truck 7 go?<|im_end|>\n"
        "<|im_start|>assistant\nNorth depot.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_assistant_mask_is_each_answer_plus_its_eos(tokenizer):
    out = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    spans, current = [], []
    for token_id, masked in zip(ids, mask):
        if masked:
            current.append(token_id)
        elif current:
            spans.append(current)
            current = []
    assert [tokenizer.decode(span) for span in spans] == ["North depot.<|im_end|>", "South depot.<|im_end|>"]
    assert all(span[-1] == tokenizer.eos_token_id for span in spans)


def test_trl_accepts_the_template_for_assistant_only_loss(tokenizer):
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        is_chat_template_stop_token_trained,
    )

    assert has_generation_markers(tokenizer.chat_template)
    assert get_training_chat_template(tokenizer) is None  # no patching needed
    assert is_chat_template_stop_token_trained(tokenizer)


def test_a_vocabulary_smaller_than_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_tokenizer(CORPUS, vocab_size=100)
