"""Validation of OpenAI chat fields the stages render: content-part lists (text parts joined, any other part
refused by line) and the tools of a prompt row (rendered with its prompt in GRPO and evals)."""

from __future__ import annotations

import json
from pathlib import Path

from weightsmith.data.formats import validate


def _write(folder: Path, rows: list[dict]) -> Path:
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _parts(*texts: str) -> list[dict]:
    return [{"type": "text", "text": text} for text in texts]


def test_text_parts_are_joined_as_chat_templates_render_them(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "system", "content": _parts("You are ", "the site desk.")},
                      {"role": "user", "content": _parts("Gate code for east?")},
                      {"role": "assistant", "content": _parts("East gate ", "is 4471.")}]},
    ]
    result = validate(_write(tmp_path, rows), "chat")
    assert result.ok(), result.errors
    assert [m["content"] for m in result.rows[0]["messages"]] == [
        "You are the site desk.", "Gate code for east?", "East gate is 4471."
    ]


def test_content_parts_in_preference_and_prompt_rows(tmp_path: Path) -> None:
    pair = {"prompt": [{"role": "user", "content": _parts("Route for ", "parcel 7?")}],
            "chosen": [{"role": "assistant", "content": _parts("North.")}],
            "rejected": [{"role": "assistant", "content": "No idea."}]}
    result = validate(_write(tmp_path, [pair]), "preference")
    assert result.ok(), result.errors
    assert result.rows[0]["prompt"][0]["content"] == "Route for parcel 7?"
    assert result.rows[0]["chosen"][0]["content"] == "North."
    prompt = {"prompt": [{"role": "user", "content": _parts("2+", "2=")}], "answer": "4"}
    result = validate(_write(tmp_path, [prompt]), "prompt")
    assert result.ok(), result.errors
    assert result.rows[0] == {"prompt": [{"role": "user", "content": "2+2="}], "answer": "4"}


def test_image_audio_and_file_parts_are_refused_naming_line_and_part(tmp_path: Path) -> None:
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    image = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is on the gate sign?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/gate.png"}}]},
        {"role": "assistant", "content": "Gate 4."}]}
    audio = {"messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]},
        {"role": "assistant", "content": "Heard."}]}
    file = {"messages": [{"role": "user", "content": "Summarize."},
                         {"role": "assistant", "content": [{"type": "file", "file": {"file_id": "f1"}}]}]}
    result = validate(_write(tmp_path, [ok, image, audio, file]), "chat")
    assert not result.ok()  # a file with any error creates no version
    source = result.sources[0]
    assert [e.split(": ", 1)[0] for e in result.errors] == [f"{source}:2", f"{source}:3", f"{source}:4"]
    assert "'messages[0].content[1]' is a part of type 'image_url'; only text parts can be trained on" in result.errors[0]
    assert "'messages[0].content[0]' is a part of type 'input_audio'" in result.errors[1]
    assert "'messages[1].content[0]' is a part of type 'file'" in result.errors[2]
    assert all("remove it or write what it holds as text" in e for e in result.errors)


def test_malformed_parts_are_named(tmp_path: Path) -> None:
    def row(content):
        return {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]}

    result = validate(_write(tmp_path, [row([]), row(["hi"]), row([{"text": "hi"}]), row([{"type": "text", "text": 3}]),
                                        row(_parts(" ", ""))]), "chat")
    reasons = [e.split(": ", 1)[1] for e in result.errors]
    assert reasons == [
        "'messages[0].content' is an empty list of content parts; give the message text or remove it",
        '\'messages[0].content[0]\' must be a content part like {"type": "text", "text": "..."}, got string',
        '\'messages[0].content[0]\' has no \'type\'; a text part looks like {"type": "text", "text": "..."}',
        "'messages[0].content[0].text' must be a string, got int",
        "'messages[0].content' is empty; give the message text or remove it",
    ]


def test_a_prompt_rows_tools_are_checked_and_need_a_message_prompt(tmp_path: Path) -> None:
    tool = {"type": "function", "function": {"name": "lookup_gate_code", "parameters": {"type": "object"}}}
    chat_prompt = [{"role": "user", "content": "Gate code for east?"}]
    rows = [{"prompt": chat_prompt, "tools": [tool], "answer": "4471"},
            {"prompt": chat_prompt, "tools": "lookup_gate_code", "answer": "4471"},
            {"prompt": "Gate code for east?", "tools": [tool], "answer": "4471"}]
    result = validate(_write(tmp_path, rows), "prompt")
    source = result.sources[0]
    assert result.errors == [
        f"{source}:2: 'tools' must be a list of tool definitions, got string",
        f"{source}:3: 'tools' needs a message-list prompt, not a plain string (no chat template renders it)",
    ]
    valid = validate(_write(tmp_path, rows[:1]), "prompt")
    assert valid.ok() and valid.rows[0]["tools"] == [tool]


def test_tool_call_arguments_must_be_a_json_object(tmp_path: Path) -> None:
    def row(arguments):
        call = {"type": "function", "function": {"name": "lookup_gate_code", "arguments": arguments}}
        return {"messages": [{"role": "user", "content": "Gate code for east?"},
                             {"role": "assistant", "content": None, "tool_calls": [call]},
                             {"role": "tool", "content": "4471"}, {"role": "assistant", "content": "4471"}]}

    result = validate(_write(tmp_path, [row('{"gate": "east"}'), row({"gate": "east"}), row("gate=east")]), "chat")
    assert [e.split(": ", 1)[1] for e in result.errors] == [
        "'messages[1].tool_calls[0].function.arguments' is not a JSON object: 'gate=east' "
        '(write it like "{\\"gate\\": \\"east\\"}")'
    ]
    assert result.errors[0].startswith(f"{result.sources[0]}:3: ")
