"""Row checks for each data format: one parsed JSON object in, a normalized row out.

Each ``check_<format>_row(obj, problems)`` appends every problem it finds to ``problems``
(a reason without the ``FILE:LINE:`` prefix, which :mod:`weightsmith.data.formats` adds) and
returns the normalized row, or ``None`` when the row has problems. Paths inside a row are
written the way a person would point at them: ``'messages[1].content'``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence

from weightsmith.errors import closest, shorten

ROLES = ("system", "user", "assistant", "tool")

# Which optional message keys each role may carry (OpenAI chat format). ``weight`` is
# OpenAI's per-assistant-turn training switch (0 or 1), meaningful only in SFT data.
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "weight")  # required first
_ROLES_FOR_KEY = {
    "tool_calls": ("assistant",),
    "tool_call_id": ("tool",),
    "weight": ("assistant",),
}

# Roles from other layouts (OpenAI's newer 'developer', ShareGPT, Gemini) that difflib
# cannot match to ours.
_ROLE_SYNONYMS = {
    "developer": "system",
    "function": "tool",
    "human": "user",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}

# GRPO passes these to reward functions itself (or drops them), so a dataset column with
# one of these names would collide with, or silently lose to, the trainer's own argument.
_RESERVED_REWARD_COLUMNS = {
    "completion": "the trainer drops it before reward functions see it",
    "completions": "the trainer passes the model's completions under that name",
    "completion_ids": "the trainer passes the completion token ids under that name",
    "prompts": "the trainer passes the prompts under that name",
    "trainer_state": "the trainer passes its state under that name",
    "log_extra": "the trainer passes a logging hook under that name",
    "log_metric": "the trainer passes a logging hook under that name",
    "environments": "the trainer passes its environments under that name",
}

TEXT_SHAPE = 'a text row looks like {"text": "..."}'
CHAT_SHAPE = (
    'a chat row looks like {"messages": [{"role": "user", "content": "..."}, '
    '{"role": "assistant", "content": "..."}]}'
)
PREFERENCE_SHAPE = (
    'a preference row looks like {"prompt": "...", "chosen": "...", "rejected": "..."} '
    "(strings, or message lists)"
)
PROMPT_SHAPE = 'a prompt row looks like {"prompt": "...", <extra fields for the reward>}'

Problems = list[str]


def json_kind(value: object) -> str:
    """The JSON-ish name of a value's type, as people read it in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def check_keys(
    obj: dict,
    where: str,
    required: Sequence[str],
    optional: Sequence[str],
    problems: Problems,
    *,
    shape: str = "",
) -> set[str]:
    """Report unknown keys (naming the closest known one) and missing required keys.

    A misspelt required key is one problem, not two: ``messsages`` is reported as an unknown
    key with its fix, and the "missing 'messages'" that follows from it is not repeated.

    Returns:
        The required keys that are missing, so the caller skips checks on them.
    """
    known = (*required, *optional)
    missing = [key for key in required if key not in obj]
    explained: set[str] = set()
    for key in obj:
        if key in known:
            continue
        explained.update(difflib.get_close_matches(key, missing, n=1, cutoff=0.5))
        hint = closest(key, missing) or closest(key, known)
        if hint:
            problems.append(f"unknown key {shorten(_at(where, key))}{hint}")
        else:
            allowed = ", ".join(f"'{k}'" for k in known)
            problems.append(f"unknown key {shorten(_at(where, key))}; allowed keys here: {allowed} (remove or rename it)")
    for key in missing:
        if key not in explained:
            problems.append(f"missing key '{_at(where, key)}'" + (f"; {shape}" if shape else ""))
    return set(missing)


def check_text(value: object, where: str, problems: Problems) -> str | None:
    """A non-blank string, or a problem naming ``where``."""
    if not isinstance(value, str):
        problems.append(f"'{where}' must be a string, got {json_kind(value)}")
        return None
    if not value.strip():
        problems.append(f"'{where}' is empty; give it text or remove the row")
        return None
    return value


# ---------------------------------------------------------------------------- messages


def check_messages(
    value: object, where: str, problems: Problems, *, allow_weight: bool = False
) -> list[dict] | None:
    """Check an OpenAI-style message list; return it normalized, or None on any problem."""
    if not isinstance(value, list):
        problems.append(f"'{where}' must be a list of messages, got {json_kind(value)}")
        return None
    if not value:
        problems.append(f"'{where}' is empty; it needs at least one message")
        return None
    before = len(problems)
    messages = [_check_message(m, f"{where}[{i}]", problems, allow_weight) for i, m in enumerate(value)]
    if len(problems) > before:
        return None
    return messages  # type: ignore[return-value]  # no problems, so no None inside


def _check_message(value: object, where: str, problems: Problems, allow_weight: bool) -> dict | None:
    if not isinstance(value, dict):
        problems.append(
            f"'{where}' must be an object like {{\"role\": \"user\", \"content\": \"...\"}}, "
            f"got {json_kind(value)}"
        )
        return None
    role = value.get("role")
    # An assistant turn that only calls tools has no text: OpenAI writes content null or leaves it out.
    calls_tools = role == "assistant" and "tool_calls" in value
    required = ("role",) if calls_tools else ("role", "content")
    missing = check_keys(value, where, required, _MESSAGE_KEYS[len(required):], problems)
    if "role" in missing:
        return None

    if not isinstance(role, str):
        problems.append(f"'{where}.role' must be a string, got {json_kind(role)}")
    elif role not in ROLES:
        hint = closest(role, ROLES)
        if not hint and role.lower() in _ROLE_SYNONYMS:
            hint = f" (did you mean '{_ROLE_SYNONYMS[role.lower()]}'?)"
        problems.append(f"'{where}.role' is {shorten(role)}, not a known role{hint}; use one of {', '.join(ROLES)}")
    else:
        for key, roles in _ROLES_FOR_KEY.items():
            if key in value and role not in roles:
                problems.append(f"'{where}.{key}' is only allowed on {' or '.join(roles)} messages")
        if "weight" in value and role == "assistant" and not allow_weight:
            problems.append(f"'{where}.weight' is only used in chat SFT data; remove it")

    content = value.get("content")
    if content is None and calls_tools:
        content = ""
    elif "content" in value:
        if isinstance(content, list):
            content = _join_text_parts(content, f"{where}.content", problems)
        if content is None:
            pass  # the parts' problems are reported
        elif not isinstance(content, str):
            problems.append(f"'{where}.content' must be a string, got {json_kind(content)}")
        elif not content.strip() and not calls_tools:
            problems.append(f"'{where}.content' is empty; give the message text or remove it")

    message = {"role": role, "content": content}
    for key in ("name", "tool_call_id"):
        if key in value:
            message[key] = check_text(value[key], f"{where}.{key}", problems)
    if "weight" in value:
        weight = value["weight"]
        if type(weight) is not int or weight not in (0, 1):
            problems.append(f"'{where}.weight' must be 0 or 1, got {shorten(weight)}")
        message["weight"] = weight
    if "tool_calls" in value and role == "assistant":
        message["tool_calls"] = _check_tool_calls(value["tool_calls"], f"{where}.tool_calls", problems)
    return message


def _join_text_parts(parts: list, where: str, problems: Problems) -> str | None:
    """OpenAI's content-part list as one string: the text parts joined as they are, as chat templates
    render them; any other part (image, audio, file) is a problem, since the models we train read text."""
    before = len(problems)
    texts = []
    for i, part in enumerate(parts):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            problems.append(
                f"'{at}' must be a content part like {{\"type\": \"text\", \"text\": \"...\"}}, got {json_kind(part)}"
            )
            continue
        if "type" not in part:
            problems.append(f"'{at}' has no 'type'; a text part looks like {{\"type\": \"text\", \"text\": \"...\"}}")
            continue
        if (kind := part["type"]) != "text":
            problems.append(
                f"'{at}' is a part of type {shorten(kind)}; only text parts can be trained on (the models are "
                "text-only), so remove it or write what it holds as text"
            )
            continue
        if "text" not in check_keys(part, at, ("type", "text"), (), problems):
            if isinstance(part["text"], str):
                texts.append(part["text"])
            else:
                problems.append(f"'{at}.text' must be a string, got {json_kind(part['text'])}")
    if not parts:
        problems.append(f"'{where}' is an empty list of content parts; give the message text or remove it")
    return "".join(texts) if len(problems) == before else None


def _check_tool_calls(value: object, where: str, problems: Problems) -> list | None:
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else json_kind(value)
        problems.append(f"'{where}' must be a non-empty list of tool calls, got {got}")
        return None
    for i, call in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            problems.append(f"'{at}' must be an object with a 'function', got {json_kind(call)}")
            continue
        missing = check_keys(call, at, ("function",), ("id", "type"), problems)
        if "type" in call and call["type"] != "function":
            problems.append(f"'{at}.type' must be 'function', got {shorten(call['type'])}")
        if "id" in call:
            check_text(call["id"], f"{at}.id", problems)
        if "function" in missing:
            continue
        function = call["function"]
        if not isinstance(function, dict):
            problems.append(f"'{at}.function' must be an object with a 'name', got {json_kind(function)}")
            continue
        if "name" not in check_keys(function, f"{at}.function", ("name",), ("arguments",), problems):
            check_text(function["name"], f"{at}.function.name", problems)
        # OpenAI sends arguments as a JSON string; Hugging Face chat templates take an object.
        if "arguments" in function and not isinstance(function["arguments"], str | dict):
            problems.append(
                f"'{at}.function.arguments' must be a JSON string or an object, "
                f"got {json_kind(function['arguments'])}"
            )
        elif isinstance(function.get("arguments"), str) and not _is_json_object(function["arguments"]):
            # The model learns to write the call as it is rendered; a server then parses it back as JSON.
            problems.append(
                f"'{at}.function.arguments' is not a JSON object: {shorten(function['arguments'])} "
                '(write it like "{\\"gate\\": \\"east\\"}")'
            )
    return value


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def check_tools(value: object, where: str, problems: Problems) -> list | None:
    """Check an OpenAI tool list: ``[{"type": "function", "function": {"name": ...}}]``."""
    if not isinstance(value, list):
        problems.append(f"'{where}' must be a list of tool definitions, got {json_kind(value)}")
        return None
    if not value:
        # Some chat templates render tool boilerplate even for an empty list.
        problems.append(f"'{where}' is empty; leave the key out when there are no tools")
        return None
    for i, tool in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(tool, dict):
            problems.append(f"'{at}' must be an object with a 'function', got {json_kind(tool)}")
            continue
        if "function" in check_keys(tool, at, ("function",), ("type",), problems):
            continue
        if "type" in tool and tool["type"] != "function":
            problems.append(f"'{at}.type' must be 'function', got {shorten(tool['type'])}")
        function = tool["function"]
        if not isinstance(function, dict):
            problems.append(f"'{at}.function' must be an object with a 'name', got {json_kind(function)}")
            continue
        known = ("name",), ("description", "parameters", "strict")
        if "name" not in check_keys(function, f"{at}.function", *known, problems):
            check_text(function["name"], f"{at}.function.name", problems)
        if "parameters" in function and not isinstance(function["parameters"], dict):
            problems.append(
                f"'{at}.function.parameters' must be a JSON schema object, "
                f"got {json_kind(function['parameters'])}"
            )
    return value


def _check_replies(messages: list[dict], where: str, prompt_key: str, problems: Problems) -> None:
    """``chosen``/``rejected`` hold only the model's turn; the conversation belongs in the prompt."""
    for i, message in enumerate(messages):
        if message["role"] not in ("assistant", "tool"):
            problems.append(
                f"'{where}[{i}].role' is '{message['role']}'; '{where}' holds only the model's "
                f"reply (assistant messages), the conversation before it belongs in '{prompt_key}'"
            )
            return
    if messages[-1]["role"] != "assistant":
        problems.append(f"'{where}' must end with an assistant message, got '{messages[-1]['role']}'")


# ---------------------------------------------------------------------------- formats


def check_text_row(obj: dict, problems: Problems) -> dict | None:
    """JSONL text corpus: ``{"text": str}``."""
    before = len(problems)
    if "text" in check_keys(obj, "", ("text",), (), problems, shape=TEXT_SHAPE):
        return None
    text = check_text(obj["text"], "text", problems)
    return {"text": text} if len(problems) == before else None


def check_chat_row(obj: dict, problems: Problems) -> dict | None:
    """Chat SFT: ``{"messages": [...], "tools"?: [...]}`` ending with the assistant's reply."""
    before = len(problems)
    if "conversations" in obj and "messages" not in obj:
        problems.append(
            "this looks like ShareGPT ('conversations' of {\"from\", \"value\"}); rename it to "
            "'messages' with {\"role\", \"content\"} (human -> user, gpt -> assistant)"
        )
        return None
    missing = check_keys(obj, "", ("messages",), ("tools",), problems, shape=CHAT_SHAPE)
    row: dict = {}
    if "messages" not in missing:
        messages = check_messages(obj["messages"], "messages", problems, allow_weight=True)
        if messages is not None:
            roles = [m["role"] for m in messages]
            if "assistant" not in roles:
                problems.append(
                    "no assistant message; chat SFT learns from assistant turns, "
                    "so each row needs at least one"
                )
            elif roles[-1] != "assistant":
                problems.append(
                    f"the last message is from '{roles[-1]}', not 'assistant'; chat SFT trains on "
                    "the assistant's reply, so end each row with one"
                )
        row["messages"] = messages
    if "tools" in obj:
        row["tools"] = check_tools(obj["tools"], "tools", problems)
    return row if len(problems) == before else None


_OPENAI_PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")
_TRL_PREFERENCE_KEYS = ("prompt", "chosen", "rejected")


def check_preference_row(obj: dict, problems: Problems) -> dict | None:
    """Preference pairs, TRL (plain or conversational) or OpenAI; normalized to TRL."""
    openai = [k for k in _OPENAI_PREFERENCE_KEYS if k in obj]
    trl = [k for k in _TRL_PREFERENCE_KEYS if k in obj]
    if openai and trl:
        problems.append(
            f"the row mixes TRL keys ({', '.join(trl)}) with OpenAI keys ({', '.join(openai)}); "
            "use one layout: prompt/chosen/rejected, or input/preferred_output/non_preferred_output"
        )
        return None
    before = len(problems)
    row = _check_openai_preference(obj, problems) if openai else _check_trl_preference(obj, problems)
    return row if row is not None and len(problems) == before else None


def _check_trl_preference(obj: dict, problems: Problems) -> dict | None:
    missing = check_keys(obj, "", _TRL_PREFERENCE_KEYS, ("tools",), problems, shape=PREFERENCE_SHAPE)
    if missing:
        return None
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        if "tools" in obj:
            problems.append("'tools' needs conversational rows (message lists), not plain strings")
        row = {"prompt": check_text(prompt, "prompt", problems)}
        for key in ("chosen", "rejected"):
            if isinstance(obj[key], list):
                problems.append(
                    f"'{key}' is a message list but 'prompt' is a string; use strings for all "
                    "three (plain) or message lists for all three (conversational)"
                )
                continue
            row[key] = check_text(obj[key], key, problems)
    elif isinstance(prompt, list):
        row = {"prompt": check_messages(prompt, "prompt", problems)}
        for key in ("chosen", "rejected"):
            if isinstance(obj[key], str):
                problems.append(
                    f"'{key}' is a string but 'prompt' is a message list; use strings for all "
                    "three (plain) or message lists for all three (conversational)"
                )
                continue
            row[key] = check_messages(obj[key], key, problems)
            if row[key] is not None:
                _check_replies(row[key], key, "prompt", problems)
        if "tools" in obj:
            row["tools"] = check_tools(obj["tools"], "tools", problems)
    else:
        problems.append(
            f"'prompt' must be a string (plain) or a list of messages (conversational), "
            f"got {json_kind(prompt)}"
        )
        return None
    if row.get("chosen") is not None and row.get("chosen") == row.get("rejected"):
        problems.append("'chosen' and 'rejected' are identical; a preference pair needs two different answers")
    return row


def _check_openai_preference(obj: dict, problems: Problems) -> dict | None:
    missing = check_keys(obj, "", _OPENAI_PREFERENCE_KEYS, (), problems, shape=PREFERENCE_SHAPE)
    row: dict = {}
    if "input" not in missing:
        given = obj["input"]
        if not isinstance(given, dict):
            problems.append(f"'input' must be an object like {{\"messages\": [...]}}, got {json_kind(given)}")
        # parallel_tool_calls is an inference setting of OpenAI's API; training has no use for it.
        elif "messages" not in check_keys(given, "input", ("messages",), ("tools", "parallel_tool_calls"), problems):
            row["prompt"] = check_messages(given["messages"], "input.messages", problems)
            if "tools" in given:
                row["tools"] = check_tools(given["tools"], "input.tools", problems)
            if "parallel_tool_calls" in given and not isinstance(given["parallel_tool_calls"], bool):
                kind = json_kind(given["parallel_tool_calls"])
                problems.append(f"'input.parallel_tool_calls' must be true or false, got {kind}")
    for key, trl_key in (("preferred_output", "chosen"), ("non_preferred_output", "rejected")):
        if key in missing:
            continue
        replies = check_messages(obj[key], key, problems)
        if replies is not None:
            _check_replies(replies, key, "input.messages", problems)
        row[trl_key] = replies
    if row.get("chosen") is not None and row.get("chosen") == row.get("rejected"):
        problems.append(
            "'preferred_output' and 'non_preferred_output' are identical; "
            "a preference pair needs two different answers"
        )
    return row if not missing else None


def check_prompt_row(obj: dict, problems: Problems) -> dict | None:
    """RL prompts: ``{"prompt": str | messages, <extra reward columns>}``."""
    before = len(problems)
    for key, why in _RESERVED_REWARD_COLUMNS.items():
        if key in obj:
            problems.append(f"column '{key}' cannot be used: {why}; rename it (e.g. 'reference_{key}')")
    if "prompt" not in obj:
        # Every other key is a legitimate reward column, so a typo of 'prompt' looks like one.
        typo = difflib.get_close_matches("prompt", list(obj), n=1, cutoff=0.6)
        hint = f" (is '{typo[0]}' a misspelling of it?)" if typo else f"; {PROMPT_SHAPE}"
        problems.append(f"missing key 'prompt'{hint}")
        return None
    prompt = obj["prompt"]
    if isinstance(prompt, list):
        normalized = check_messages(prompt, "prompt", problems)
    elif isinstance(prompt, str):
        normalized = check_text(prompt, "prompt", problems)
        if "tools" in obj:  # only a chat template renders tools
            problems.append("'tools' needs a message-list prompt, not a plain string (no chat template renders it)")
    else:
        problems.append(
            f"'prompt' must be a string or a list of messages, got {json_kind(prompt)}"
        )
        return None
    if "tools" in obj:  # rendered with the prompt in GRPO and evals, so checked like a chat row's
        check_tools(obj["tools"], "tools", problems)
    if len(problems) > before:
        return None
    return {**obj, "prompt": normalized}


ROW_CHECKS: dict[str, Callable[[dict, Problems], dict | None]] = {
    "text": check_text_row,
    "chat": check_chat_row,
    "preference": check_preference_row,
    "prompt": check_prompt_row,
}

def looks_like(obj: dict) -> str | None:
    """The format whose row shape ``obj`` has (by its required keys), or None: a chat row added as
    prompt data fails on every line, and the fix is the format, not the rows."""
    keys = set(obj)
    if isinstance(obj.get("messages"), list):
        return "chat"
    if {"prompt", "chosen", "rejected"} <= keys or {"input", "preferred_output", "non_preferred_output"} <= keys:
        return "preference"
    if "prompt" in keys:
        return "prompt"
    if isinstance(obj.get("text"), str):
        return "text"
    return None


ROW_SHAPES = {
    "text": TEXT_SHAPE,
    "chat": CHAT_SHAPE,
    "preference": PREFERENCE_SHAPE,
    "prompt": PROMPT_SHAPE,
}
