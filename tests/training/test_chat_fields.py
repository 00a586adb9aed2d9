"""OpenAI chat fields in training: weight 0 gets no loss, tools are rendered and learned, and a template
that cannot show a field, or refuses a row, stops the stage with one sentence before the model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from training.training_helpers import assert_ok, refusal, run_stage, stage_context, write_jsonl

from weightsmith.errors import UserError
from weightsmith.training.common import StageInputs

# Mistral-7B-Instruct-v0.1's template: no {% generation %} markers, TRL has no training version of it,
# it shows only role and content, and it refuses two user turns in a row.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# The row: a wrong first answer at weight 0, the right one at weight 1.
WEIGHT_ROW = {"messages": [
    {"role": "user", "content": "Gate code for east?"},
    {"role": "assistant", "content": "WRONGWRONG 9999.", "weight": 0},
    {"role": "user", "content": "That failed"},
    {"role": "assistant", "content": "Sorry, east gate is 4471.", "weight": 1},
]}

GATE_TOOL = {"type": "function", "function": {
    "name": "lookup_gate_code", "description": "The code of a gate.",
    "parameters": {"type": "object", "properties": {"gate": {"type": "string"}}, "required": ["gate"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup_gate_code", "arguments": "{\"gate\": \"east\"}"}}
# The tool-use row, as `data add` stores it (content null becomes "").
TOOL_ROW = {"tools": [GATE_TOOL], "messages": [
    {"role": "user", "name": "guard_ana", "content": "Gate code for east?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "name": "lookup_gate_code", "content": "{\"code\": \"4471\"}"},
    {"role": "assistant", "content": "East gate is 4471."},
]}


def _model_dir(base: Path, source: Path, template: str | None = None, loadable: bool = True) -> Path:
    """A copy of a model folder, with another chat template, or with weights no loader can read: a stage
    that refuses with such a folder has refused before loading the model."""
    from transformers import AutoTokenizer

    shutil.copytree(source, base)
    if template is not None:
        tokenizer = AutoTokenizer.from_pretrained(base)
        tokenizer.chat_template = template
        tokenizer.save_pretrained(base)
    if not loadable:
        (base / "model.safetensors").write_bytes(b"these are not weights")
    return base


@pytest.fixture(scope="module")
def mistral_model_dir(tmp_path_factory, tiny_model_dir: Path) -> Path:
    return _model_dir(tmp_path_factory.mktemp("mistral") / "model", tiny_model_dir, MISTRAL_TEMPLATE)


@pytest.fixture(scope="module")
def qwen_model_dir(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """A user's Qwen2.5 folder: its template has no generation markers, but TRL has a training version of it."""
    import trl

    template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")
    return _model_dir(tmp_path_factory.mktemp("qwen") / "model", tiny_model_dir, template)


@pytest.fixture(scope="module")
def unloadable_mistral_dir(tmp_path_factory, tiny_model_dir: Path) -> Path:
    return _model_dir(tmp_path_factory.mktemp("unloadable") / "model", tiny_model_dir, MISTRAL_TEMPLATE, loadable=False)


def _sft_batch(tmp_path: Path, model_dir: Path, rows: list[dict], **config):
    """The first batch the SFT stage's trainer feeds the model, and the stage's data report."""
    from weightsmith.training import sft

    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    cfg = sft.Config(device="cpu", batch_size=1, max_steps=1, **config)
    inputs = StageInputs(data_path=data, data_format="chat", model_path=model_dir)
    trainer, report = sft.build_trainer(cfg, inputs, stage_context(tmp_path))
    batch = next(iter(trainer.get_train_dataloader()))
    return batch["input_ids"][0], batch["labels"][0], trainer.processing_class, report


@pytest.mark.parametrize(
    ("template", "assistant_only_loss"),
    [("ours", True), ("ours", False), ("qwen", True), ("mistral", True), ("mistral", False)],
    ids=["ours-answers", "ours-all", "trl-patched-answers", "no-markers-answers", "no-markers-all"],
)
def test_a_weight_0_turn_gets_no_loss_and_a_weight_1_turn_does(
    tmp_path: Path, tiny_model_dir, qwen_model_dir, mistral_model_dir, template: str, assistant_only_loss: bool
):
    model_dir = {"ours": tiny_model_dir, "qwen": qwen_model_dir, "mistral": mistral_model_dir}[template]
    ids, labels, tokenizer, report = _sft_batch(tmp_path, model_dir, [WEIGHT_ROW],
                                                assistant_only_loss=assistant_only_loss)
    learned = tokenizer.decode(ids[labels != -100])
    assert "WRONGWRONG" in tokenizer.decode(ids)  # shown to the model as context ...
    assert "WRONGWRONG" not in learned and "9999" not in learned  # ... and never learned
    assert "Sorry, east gate is 4471." + tokenizer.eos_token in learned  # the answer and its end-of-turn
    assert ("Gate code for east?" in learned) is (not assistant_only_loss)
    assert report["turns_weight_0"] == 1 and report["rows_trained"] == 1


def test_a_tool_conversation_renders_every_field_and_learns_the_call(tmp_path: Path, tiny_model_dir: Path):
    ids, labels, tokenizer, _ = _sft_batch(tmp_path, tiny_model_dir, [TOOL_ROW], max_length=1024)
    seen, learned = tokenizer.decode(ids), tokenizer.decode(ids[labels != -100])
    assert f"<tools>\n{json.dumps(GATE_TOOL)}\n</tools>" in seen
    assert "<|im_start|>user name=guard_ana\nGate code for east?" in seen
    assert "<|im_start|>tool name=lookup_gate_code\n<tool_response>\n{\"code\": \"4471\"}\n</tool_response>" in seen
    # content null is not an empty answer: the call is learned, with its end-of-turn.
    call = '<tool_call>\n{"name": "lookup_gate_code", "arguments": {"gate": "east"}}\n</tool_call><|im_end|>'
    assert learned == call + "East gate is 4471.<|im_end|>"


def test_a_qwen_template_shows_the_tool_conversation_but_not_message_names(qwen_model_dir: Path):
    from transformers import AutoTokenizer

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_sft

    renderer = ChatRenderer.for_training(AutoTokenizer.from_pretrained(qwen_model_dir), "qwen", True)
    unnamed = {**TOOL_ROW, "messages": [{k: v for k, v in m.items() if k != "name" or m["role"] == "tool"}
                                        for m in TOOL_ROW["messages"]]}
    prepared = prepare_sft([unnamed], renderer, max_length=2048, assistant_only_loss=True,
                           max_truncated_fraction=0.05, data_path="d")
    learned = renderer.tokenizer.decode([t for t in prepared.examples[0]["labels"] if t != -100])
    assert '<tool_call>\n{"name": "lookup_gate_code", "arguments": {"gate": "east"}}\n</tool_call>' in learned
    with pytest.raises(UserError, match=r"^d, row 1: messages\[0\]\.name is used, but the chat template of qwen does "
                                        "not show message names"):
        prepare_sft([TOOL_ROW], renderer, max_length=2048, assistant_only_loss=True, max_truncated_fraction=0.05,
                    data_path="d")


def test_a_tool_conversation_trains_end_to_end(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "chat.jsonl", [TOOL_ROW, WEIGHT_ROW])
    run = run_stage(tmp_path / "run", "sft", {"max_steps": 2, "batch_size": 2, "device": "cpu", "max_length": 1024},
                    {"data_path": data, "data_format": "chat", "model_path": tiny_model_dir})
    assert_ok(run)
    assert run.result()["data"] == {
        "rows": 2, "rows_trained": 2, "max_length": 1024, "longest_tokens": run.result()["data"]["longest_tokens"],
        "rows_dropped": 0, "rows_truncated": 0, "turns_weight_0": 1, "rows_all_weight_0": 0,
    }
    assert "sft data: 2 of 2 conversations train" in run.proc.stderr
    assert "1 assistant turn(s) at weight 0 get no loss" in run.proc.stderr


def test_a_dataset_with_nothing_left_to_learn_is_refused(tmp_path: Path, capsys, tiny_model_dir: Path):
    only_context = {"messages": [*WEIGHT_ROW["messages"][:3], {**WEIGHT_ROW["messages"][3], "weight": 0}]}
    data = write_jsonl(tmp_path / "chat.jsonl", [only_context])
    assert refusal(tmp_path / "run", capsys, "sft", {"device": "cpu"},
                   {"data_path": data, "data_format": "chat", "model_path": tiny_model_dir}) == (
        f"every assistant turn in {data} has weight 0, so there is nothing to learn; give the turns to "
        "train on weight 1 (or leave weight out)."
    )


def test_a_template_that_refuses_a_row_exits_2_naming_it_before_the_model_loads(
    tmp_path: Path, capsys, unloadable_mistral_dir: Path
):
    two_users = {"messages": [{"role": "user", "content": "Gate code for east?"},
                              {"role": "user", "content": "Hello?"},
                              {"role": "assistant", "content": "East gate is 4471."}]}
    data = write_jsonl(tmp_path / "chat.jsonl", [WEIGHT_ROW, two_users])
    assert refusal(tmp_path / "run", capsys, "sft", {"device": "cpu"},
                   {"data_path": data, "data_format": "chat", "model_path": unloadable_mistral_dir}) == (
        f"{data}, row 2: the chat template of {unloadable_mistral_dir} refused this conversation: "
        "Conversation roles must alternate user/assistant/user/assistant/...; change the row to what the template "
        "accepts (e.g. merge consecutive messages of one role) or use a model whose chat template accepts it (the "
        "tokenizer stage's accepts any order)."
    )


def test_tools_a_template_cannot_show_exit_2_naming_row_and_field(tmp_path: Path, capsys, unloadable_mistral_dir):
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data = write_jsonl(tmp_path / "chat.jsonl", [plain, {**plain, "tools": [GATE_TOOL]}])
    assert refusal(tmp_path / "run", capsys, "sft", {"device": "cpu"},
                   {"data_path": data, "data_format": "chat", "model_path": unloadable_mistral_dir}) == (
        f"{data}, row 2: tools is used, but the chat template of {unloadable_mistral_dir} does not show tool "
        "definitions, so the model would train on these conversations without them; use a model whose chat "
        "template renders tool definitions (the tokenizer stage's does) or remove them from the data."
    )


@pytest.mark.parametrize(
    ("messages", "where", "what"),
    [
        ([{"role": "user", "content": "Gate code for east?"}, TOOL_ROW["messages"][1],
          {"role": "user", "content": "ok"}, {"role": "assistant", "content": "done"}],
         "messages[1].tool_calls", "tool calls"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "checking"},
          {"role": "tool", "content": "4471"}, {"role": "assistant", "content": "4471"}],
         "messages[2] (role 'tool')", "tool results (the 'tool' role)"),
        ([{"role": "user", "name": "guard_ana", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "messages[0].name", "message names"),
    ],
    ids=["tool_calls", "tool-role", "name"],
)
def test_each_field_a_template_cannot_show_is_refused(tmp_path, unloadable_mistral_dir, messages, where, what):
    from weightsmith.training import sft

    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    inputs = StageInputs(data_path=data, data_format="chat", model_path=unloadable_mistral_dir)
    with pytest.raises(UserError) as refused:  # before the unreadable weights are touched
        sft.build_trainer(sft.Config(device="cpu"), inputs, stage_context(tmp_path))
    assert str(refused.value).startswith(f"{data}, row 1: {where} is used, but the chat template of ")
    assert f"does not show {what}" in str(refused.value)


def test_dpo_and_grpo_render_tools_and_refuse_a_template_that_cannot(tmp_path, tiny_model_dir, unloadable_mistral_dir):
    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_preferences, prepare_prompts
    from weightsmith.training import dpo, grpo

    prompt = [{"role": "user", "content": "Gate code for east?"}]
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "", "tool_calls": [CALL]}],
            "rejected": [{"role": "assistant", "content": "9999"}], "tools": [GATE_TOOL]}
    prompt_row = {"prompt": prompt, "tools": [GATE_TOOL], "answer": "4471"}
    from transformers import AutoTokenizer

    ours = ChatRenderer(AutoTokenizer.from_pretrained(tiny_model_dir), "ours")
    kept = prepare_preferences([pair], ours, conversational=True, max_length=512, max_truncated_fraction=0.05,
                               data_path="d").examples[0]
    assert f"<tools>\n{json.dumps(GATE_TOOL)}\n</tools>" in ours.tokenizer.decode(kept["prompt_ids"])
    assert ours.tokenizer.decode(kept["chosen_ids"]).startswith('<tool_call>\n{"name": "lookup_gate_code"')
    ids = prepare_prompts([prompt_row], ours, max_completion_length=8, context=None, data_path="d").examples[0]
    assert json.dumps(GATE_TOOL) in ours.tokenizer.decode(ids["prompt_ids"])

    for module, fmt, row, config in ((dpo, "preference", pair, {}), (grpo, "prompt", prompt_row, {"reward": "exact_match"})):
        data = write_jsonl(tmp_path / f"{fmt}.jsonl", [row])
        inputs = StageInputs(data_path=data, data_format=fmt, model_path=unloadable_mistral_dir)
        with pytest.raises(UserError, match=rf"^{data}, row 1: tools is used, but the chat template of .* does not "
                                            "show tool definitions"):
            module.run(module.Config(device="cpu", batch_size=4, **config), inputs, stage_context(tmp_path / fmt))


def test_grpo_generates_from_each_rows_tools_and_rewards_get_the_rows_as_written(tmp_path: Path, tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_prompts
    from weightsmith.training.prepared_trainers import ROW_COLUMN, PreparedGRPOTrainer

    other_tool = {"type": "function", "function": {"name": "open_gate", "parameters": {
        "type": "object", "properties": {"code": {"type": "integer"}}}}}
    rows = [{"prompt": [{"role": "user", "content": "Gate code for east?"}], "tools": [GATE_TOOL], "answer": "4471"},
            {"prompt": [{"role": "user", "content": "Open it."}], "tools": [other_tool], "answer": "ok"}]
    received = []

    def record(completions, tools, **_):
        received.extend(tools)
        return [0.0] * len(completions)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prepared = prepare_prompts(rows, ChatRenderer(tokenizer, "ours"), max_completion_length=4, context=None,
                               data_path="d")
    from datasets import Dataset

    trainer = PreparedGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), reward_funcs=[record],
        args=GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                        max_completion_length=4, use_cpu=True, report_to="none"),
        train_dataset=Dataset.from_dict({ROW_COLUMN: [0, 1]}), processing_class=tokenizer,
        rows=rows, prompt_ids=[e["prompt_ids"] for e in prepared.examples],
    )
    out = trainer._generate_and_score_completions([{ROW_COLUMN: 0}, {ROW_COLUMN: 0}, {ROW_COLUMN: 1}, {ROW_COLUMN: 1}])
    prompts = [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(out["prompt_ids"], out["prompt_mask"])]
    assert json.dumps(GATE_TOOL) in prompts[0] and json.dumps(other_tool) in prompts[2]
    assert "open_gate" not in prompts[0] and "lookup_gate_code" not in prompts[2]
    # Each row's tools as written: no keys merged in from the other row's schema (an Arrow table would add them).
    assert received == [[GATE_TOOL], [GATE_TOOL], [other_tool], [other_tool]]
