"""Helpers of the export tests (tests/export)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_torch_thread() -> Iterator[None]:
    # Models this small gain nothing from two threads, and on a busy two-core machine OpenMP's spinning
    # threads wait on each other.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def chat_text(tokenizer, question: str, answer: str | None = None) -> str:
    """A one-question chat rendered by the tokenizer's template: the generation prompt, or with its answer."""
    messages = [{"role": "user", "content": question}]
    if answer is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
