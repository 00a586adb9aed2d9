"""Eval generation renders a prompt row's tools as training does, and refuses what the template cannot show."""

from __future__ import annotations

import json

import pytest

from weightsmith.data.tokenizer import train_tokenizer
from weightsmith.errors import UserError
from weightsmith.evals.generate import encode_prompts

TOOL = {"type": "function", "function": {"name": "lookup_gate_code", "parameters": {"type": "object"}}}
PROMPT = [{"role": "user", "content": "Gate code for east?"}]
# Renders role and content only, and refuses two user turns in a row (Mistral-7B-Instruct-v0.1's template).
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["the gate code for the east gate"] * 20, vocab_size=300)


def test_each_prompt_is_rendered_with_its_own_tools(tokenizer):
    ids = encode_prompts(tokenizer, [PROMPT, PROMPT], [[TOOL], None], "model")
    with_tools, without = (tokenizer.decode(i) for i in ids)
    assert f"<tools>\n{json.dumps(TOOL)}\n</tools>" in with_tools and with_tools.endswith("<|im_start|>assistant\n")
    assert without == "<|im_start|>user\nGate code for east?<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == tokenizer.apply_chat_template(PROMPT, tools=[TOOL], add_generation_prompt=True)["input_ids"]


def test_what_the_template_cannot_show_or_refuses_is_named():
    tokenizer = train_tokenizer(["the gate code for the east gate"] * 20, vocab_size=300)
    tokenizer.chat_template = MISTRAL_TEMPLATE
    with pytest.raises(UserError) as cannot_show:
        encode_prompts(tokenizer, [PROMPT, PROMPT], [None, [TOOL]], "mistral-folder")
    assert str(cannot_show.value) == (
        "prompt #1: tools is used, but the chat template of mistral-folder does not show tool definitions, so the "
        "model would answer these conversations without them; use a model whose chat template renders tool "
        "definitions (the tokenizer stage's does) or remove them from the data."
    )
    with pytest.raises(UserError, match=r"^prompt #0: the chat template of mistral-folder refused this conversation: "
                                        r"Conversation roles must alternate user/assistant/user/assistant/\.\.\.; "):
        encode_prompts(tokenizer, [PROMPT + PROMPT], None, "mistral-folder")
    with pytest.raises(UserError, match=r"^prompt #0 has tools but is plain text"):
        encode_prompts(tokenizer, ["Gate code for east?"], [[TOOL]], "mistral-folder")
