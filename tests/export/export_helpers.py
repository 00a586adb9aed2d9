"""Helpers of the export tests (tests/export)."""

from __future__ import annotations



def chat_text(tokenizer, question: str, answer: str | None = None) -> str:
    """A one-question chat rendered by the tokenizer's template: the generation prompt, or with its answer."""
    messages = [{"role": "user", "content": question}]
    if answer is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
