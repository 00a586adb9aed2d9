"""The tokenizer stage's chat template: plain chats exactly as before; tools, calls, results and names shown."""

from __future__ import annotations

import json

import pytest

from weightsmith.data.chat import ChatRenderer, encode_conversation
from weightsmith.data.tokenizer import train_tokenizer

# The template of every earlier version, verbatim: plain chats must render byte for byte as it did
# (the quickstart's measured numbers, and every tokenizer already trained, depend on it).
OLD_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

PLAIN_CHATS = [
    [{"role": "user", "content": "Where does truck 7 go?"}, {"role": "assistant", "content": "North depot."}],
    [
        {"role": "system", "content": "You are the dispatch desk.\n"},
        {"role": "user", "content": "  spaces, {braces}, 'quotes' and \"double\" quotes\n\n"},
        {"role": "assistant", "content": "ok\n"},
        {"role": "user", "content": "again"},
        {"role": "user", "content": "twice in a row"},
        {"role": "assistant", "content": "配送センター 🚚 <tool_call> looks like text here"},
    ],
]

# The tool-use conversation: a tool list, an assistant turn that only calls (content null),
# the tool's result, then the answer; names on the user and the tool message.
GATE_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_gate_code",
        "description": "The code of a gate.",
        "parameters": {"type": "object", "properties": {"gate": {"type": "string"}}, "required": ["gate"]},
    },
}
TOOL_ROW = {
    "tools": [GATE_TOOL],
    "messages": [
        {"role": "system", "content": "You are the site desk."},
        {"role": "user", "name": "guard_ana", "content": "Gate code for east?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup_gate_code", "arguments": "{\"gate\": \"east\"}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "lookup_gate_code", "content": "{\"code\": \"4471\"}"},
        {"role": "assistant", "content": "East gate is 4471."},
    ],
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["the dispatcher sends truck seven to the north depot"] * 20, vocab_size=300)


@pytest.mark.parametrize("messages", PLAIN_CHATS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_a_plain_chat_renders_byte_for_byte_as_before(tokenizer, messages, add_generation_prompt):
    kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt)
    assert tokenizer.apply_chat_template(messages, **kwargs) == tokenizer.apply_chat_template(
        messages, chat_template=OLD_TEMPLATE, **kwargs
    )
    masks = [
        tokenizer.apply_chat_template(messages, chat_template=template, return_dict=True,
                                      return_assistant_tokens_mask=True)["assistant_masks"]
        for template in (None, OLD_TEMPLATE)
    ]
    assert masks[0] == masks[1]


def test_tools_calls_results_and_names_are_rendered_in_hermes_style(tokenizer):
    text = tokenizer.apply_chat_template(TOOL_ROW["messages"], tools=TOOL_ROW["tools"], tokenize=False)
    # Tool definitions: in the system turn, after the system message, one JSON object a line inside <tools>.
    assert text.startswith("<|im_start|>system\nYou are the site desk.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(GATE_TOOL)}\n</tools>" in text
    assert text.count("You are the site desk.") == 1  # the system message is not rendered twice
    # The call, as a Hermes/Qwen <tool_call> a server parses back into name and arguments.
    call = text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    assert call == '<tool_call>\n{"name": "lookup_gate_code", "arguments": {"gate": "east"}}\n</tool_call>'
    parsed = json.loads(call.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>"))
    assert parsed == {"name": "lookup_gate_code", "arguments": {"gate": "east"}}
    # The result and the names.
    assert '<|im_start|>tool name=lookup_gate_code\n<tool_response>\n{"code": "4471"}\n</tool_response><|im_end|>' in text
    assert "<|im_start|>user name=guard_ana\nGate code for east?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\nEast gate is 4471.<|im_end|>\n")


def test_arguments_given_as_an_object_render_as_json(tokenizer):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Checking.",
                 "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}},
                                {"function": {"name": "g", "arguments": {}}}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert ('Checking.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call><|im_end|>') in text


def test_a_tool_calling_answer_with_content_null_is_not_an_empty_answer(tokenizer):
    renderer = ChatRenderer.for_training(tokenizer, "ours", assistant_only_loss=True)
    encoded = encode_conversation(renderer, TOOL_ROW["messages"], TOOL_ROW["tools"], assistant_only_loss=True)
    learned = tokenizer.decode([label for label in encoded.labels if label != -100])
    assert learned == (
        '<tool_call>\n{"name": "lookup_gate_code", "arguments": {"gate": "east"}}\n</tool_call><|im_end|>'
        "East gate is 4471.<|im_end|>"
    )


def test_trl_finds_the_template_can_call_tools_and_needs_no_patching(tokenizer):
    from trl.chat_template_utils import get_training_chat_template, supports_tool_calling

    assert supports_tool_calling(tokenizer)
    assert get_training_chat_template(tokenizer) is None  # markers present and prefix-preserving
    renderer = ChatRenderer(tokenizer, "ours")
    assert all(renderer.shows(f) for f in ("tools", "tool_calls", "tool", "name:system", "name:user", "name:assistant"))


def test_a_tokenizer_saved_with_the_old_template_still_loads_and_shows_no_tools(tmp_path):
    from transformers import AutoTokenizer

    saved = train_tokenizer(["the dispatcher sends truck seven"] * 20, vocab_size=300)
    saved.chat_template = OLD_TEMPLATE  # a tokenizer trained by an earlier version
    saved.save_pretrained(tmp_path)
    old = AutoTokenizer.from_pretrained(tmp_path)
    assert old.apply_chat_template(PLAIN_CHATS[0], tokenize=False).startswith("<|im_start|>user\n")
    renderer = ChatRenderer(old, str(tmp_path))
    assert not renderer.shows("tools") and not renderer.shows("tool_calls") and not renderer.shows("name:user")


def test_json_string_arguments_reach_any_template_as_an_object():
    """OpenAI writes arguments as a JSON string; Hugging Face templates (Llama 3's) take an object and would
    quote a string a second time, so the renderer every stage uses passes the object."""
    tokenizer = train_tokenizer(["the gate code"] * 20, vocab_size=300)
    tokenizer.chat_template = (
        "{% for m in messages %}{% for c in m['tool_calls'] or [] %}"
        "{{ c['function']['arguments'] | tojson }}{% endfor %}{% endfor %}"
    )
    text, _ = ChatRenderer(tokenizer, "llama-like").render(TOOL_ROW["messages"])
    assert text == '{"gate": "east"}'
