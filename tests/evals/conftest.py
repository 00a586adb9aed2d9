"""A tiny chat model that has memorised a few answers, saved as a real model directory.

A randomly initialised model almost never emits EOS and has near-tied logits, so it could
neither show that generation stops where it should nor that batching leaves greedy output
unchanged. A few seconds of training on four conversations gives it sharp, known answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from helpers import memorise
from helpers import one_torch_thread as one_torch_thread_
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)

# (prompt, answer) pairs the model learns; plain-text ones have no chat markers.
CHATS = {
    "hi": "hello world",
    "count": "one two three four five six seven eight nine ten",
    "pet": "the cat sat on the mat",
}
PLAIN = {"a dog": " ran in the park"}


def _training_texts() -> list[str]:
    chats = [f"<user>{q}<eos><assistant>{a}<eos>" for q, a in CHATS.items()]
    plain = [f"{q}{a}<eos>" for q, a in PLAIN.items()]
    return chats + plain


def _build_tokenizer() -> PreTrainedTokenizerFast:
    words = [*CHATS, *CHATS.values(), *PLAIN, *PLAIN.values(), "how are you today?"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<eos>", "<user>", "<assistant>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(words, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _train(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, steps: int = 120) -> None:
    memorise(model, tokenizer, _training_texts(), steps)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    with one_torch_thread_():
        yield


@dataclass(frozen=True)
class TinyChatModel:
    path: str
    chats: dict[str, str]  # user message -> the assistant answer it learned
    plain: dict[str, str]  # plain-text prompt -> the continuation it learned


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> TinyChatModel:
    """A 2-layer Llama (width 64) and its tokenizer, saved in a directory, that answer CHATS and PLAIN."""
    tokenizer = _build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    # Session fixtures are set up before the module-scoped one_torch_thread, hence our own.
    with one_torch_thread_(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        _train(model, tokenizer)
    directory = tmp_path_factory.mktemp("tiny_chat_model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return TinyChatModel(path=str(directory), chats=dict(CHATS), plain=dict(PLAIN))


@pytest.fixture(scope="session")
def untrained_chat_model(tmp_path_factory, tiny_chat_model) -> str:
    """The tiny chat model's architecture and tokenizer with fresh random weights: it answers nothing right."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_chat_model.path)
    with one_torch_thread_(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(config)
    directory = tmp_path_factory.mktemp("untrained_chat_model")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_chat_model.path).save_pretrained(directory)
    return str(directory)
