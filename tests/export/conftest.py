"""Model folders to export: our tokenizer (``train_tokenizer``: byte-level BPE, ChatML template, EOS ``<|im_end|>``)
with the pretrain stage's ``tiny`` Llama, trained for a few seconds until it answers a few chats by heart, and a
grouped-query variant (4 query heads, 2 key/value heads) whose K projection the GGUF permutes differently from Q.

A randomly initialised model has near-tied logits, so greedy tokens could flip on rounding alone; the trained one
has sharp answers, which is what a greedy-parity check needs. Both are saved as the stages save them
(``save_pretrained`` of the model and the tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from export.export_helpers import chat_text
from helpers import memorise, one_torch_thread

CHATS = {
    "Which depot gets truck 7?": "Truck 7 goes to the north depot.",
    "Who checks the route?": "The driver checks the route before noon.",
    "hi": "hello world",
}
DOCS = [
    "the dispatcher sends a truck to the north depot while the driver checks the route",
    "Parcels: 12, 345 and 6789 — logged at 09:30; the van's door isn't locked!",
    "  indented   text\twith tabs\nand newlines, émigré café ☕ 🚚",
]


@dataclass(frozen=True)
class ExportModels:
    chat: Path  # the stage's tiny Llama (4 heads, 4 KV heads), trained on CHATS and DOCS
    gqa: Path  # 4 heads, 2 KV heads, random weights, same tokenizer
    chats: dict[str, str]
    docs: list[str]


@pytest.fixture(scope="session")
def export_models(tmp_path_factory) -> ExportModels:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from weightsmith.data.tokenizer import train_tokenizer
    from weightsmith.training.models import build_model

    words = [*CHATS, *CHATS.values(), *DOCS, "user assistant system"]
    tokenizer = train_tokenizer(words * 4, vocab_size=400, min_frequency=1, model_max_length=256)
    train_texts = [chat_text(tokenizer, q, a) for q, a in CHATS.items()] + [d + tokenizer.eos_token for d in DOCS]
    with one_torch_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("tiny", tokenizer, max_positions=256)
        memorise(model, tokenizer, train_texts, steps=100, add_special_tokens=True)
        chat = tmp_path_factory.mktemp("chat_model")
        model.eval().save_pretrained(chat)
        tokenizer.save_pretrained(chat)

        torch.manual_seed(1)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        gqa = tmp_path_factory.mktemp("gqa_model")
        LlamaForCausalLM(config).save_pretrained(gqa)
        tokenizer.save_pretrained(gqa)
    return ExportModels(chat=chat, gqa=gqa, chats=dict(CHATS), docs=list(DOCS))
