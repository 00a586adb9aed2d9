"""Conversations as a model sees them: rendered by its chat template, masked for the loss, checked.

Every stage that renders chat data goes through :class:`ChatRenderer` — SFT, DPO, GRPO and eval
generation — so what is checked before compute is the text that trains:

- a field the data uses (``tools``, ``tool_calls``, a message ``name``, the ``tool`` role) that the
  template does not show is refused, naming the first row that uses it (:func:`check_fields_shown`),
  the way TRL's ``supports_tool_calling`` probes a template: render a probe, look for its values;
- a template that refuses a row (a Mistral/Gemma-style ``raise_exception('roles must alternate')``)
  becomes one sentence naming the row (:func:`template_refusal`);
- the SFT loss mask honours OpenAI's per-turn ``weight``: a weight-0 assistant turn gets no loss
  (:func:`encode_conversation`). The answer spans come from the template's ``{% generation %}``
  markers (ours has them; TRL patches the templates it knows), else from rendering the
  conversation up to each answer.

Per-stage preparation (tokens for the trainer, what ``max_length`` drops or cuts) is in
:mod:`weightsmith.data.chat_prepare`. Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100  # the label of a token that gets no loss (PyTorch's cross-entropy ignore_index)


class TemplateRefused(Exception):
    """The chat template raised on a conversation (its message is the template's own)."""


class AnswersNotLocated(Exception):
    """The assistant turns of a conversation cannot be told apart in its rendering (the message
    completes "the chat template of MODEL ...")."""


@dataclass
class ChatRenderer:
    """A tokenizer's chat template, as the stages render with it.

    Attributes:
        tokenizer: a Hugging Face (fast) tokenizer with a chat template.
        source: who owns the template, for messages (the tokenizer's folder).
        template: the template to render with instead of the tokenizer's own (TRL's training
            version of a known template, with generation markers), or None for its own.
        marked: the template has ``{% generation %}`` markers around each assistant answer.
    """

    tokenizer: Any
    source: str
    template: str | None = None
    marked: bool = False
    _shown: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def for_training(cls, tokenizer: Any, source: object, assistant_only_loss: bool) -> ChatRenderer:
        """The renderer SFT trains with: generation markers where the template has (or TRL can add) them.

        TRL's ``get_training_chat_template`` renders the same text as the model's own template, plus
        the markers, for the templates it knows (Qwen, Llama, ...). For any other template without
        markers the answers are located by rendering the conversation up to each of them.
        """
        from trl.chat_template_utils import get_training_chat_template, has_generation_markers

        if has_generation_markers(tokenizer.chat_template):
            return cls(tokenizer, str(source), None, marked=True)
        if assistant_only_loss:
            try:
                return cls(tokenizer, str(source), get_training_chat_template(tokenizer), marked=True)
            except ValueError:  # a template TRL does not know
                pass
        return cls(tokenizer, str(source), None, marked=False)

    def render(
        self, messages: list[dict], tools: list | None = None, *, add_generation_prompt: bool = False
    ) -> tuple[str, list[tuple[int, int]]]:
        """Render one conversation as ``apply_chat_template(tokenize=False)`` does.

        Returns:
            The text, and the character spans ``[start, end)`` of each ``{% generation %}`` block
            in rendering order (empty for a template without markers).

        Raises:
            TemplateRefused: the template raised (``raise_exception``, a type error, ...).
        """
        from jinja2 import TemplateError
        from transformers.utils.chat_template_utils import render_jinja_template

        conversation = [_for_template(m) for m in messages]
        try:
            template = self.tokenizer.get_chat_template(self.template, tools or None)
            texts, spans = render_jinja_template(
                conversations=[conversation],
                tools=tools or None,  # some templates render tool boilerplate for an empty list
                chat_template=template,
                return_assistant_tokens_mask=self.marked,
                add_generation_prompt=add_generation_prompt,
                **self.tokenizer.special_tokens_map,
            )
        except (TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise TemplateRefused(str(exc) or type(exc).__name__) from exc
        return texts[0], (spans[0] if spans else [])

    def tokens(
        self, messages: list[dict], tools: list | None = None, *, add_generation_prompt: bool = False
    ) -> list[int]:
        """The token ids ``apply_chat_template(tokenize=True)`` gives: the rendering, tokenized as is."""
        text, _ = self.render(messages, tools, add_generation_prompt=add_generation_prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of rendered text (the template writes its own special tokens), with character offsets."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]

    def shows(self, field_name: str) -> bool:
        """Whether the template shows a chat field: ``tools``, ``tool_calls``, ``tool`` (the role's
        content) or ``name:ROLE`` (a message's name on that role). Probed once per renderer."""
        if field_name not in self._shown:
            self._shown[field_name] = _probe(self, field_name)
        return self._shown[field_name]


def _for_template(message: dict) -> dict:
    """A message as chat templates expect it.

    Keys whose value is None are dropped (OpenAI's ``content: null``), as ``apply_chat_template``
    does. A tool call's ``arguments`` that OpenAI writes as a JSON string is passed as the object
    it encodes: Hugging Face templates take an object, and some (Llama 3's) would quote a string
    again. Ours shows both the same way.
    """
    out = {key: value for key, value in message.items() if value is not None}
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [_with_object_arguments(call) for call in out["tool_calls"]]
    return out


def _with_object_arguments(call: object) -> object:
    function = call.get("function") if isinstance(call, dict) else None
    if not (isinstance(function, dict) and isinstance(function.get("arguments"), str)):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return call  # not JSON: shown as written
    return {**call, "function": {**function, "arguments": arguments}} if isinstance(arguments, dict) else call


# ----------------------------------------------------------------------------------------- probes

_TOOL = "zqtool4471"
_ARG_KEY, _ARG_VALUE = "zqkey7f3a", "zqvalue9c2e"
_RESULT = "zqresult5b81"
_NAME = "zqname3d6f"


def _probe(renderer: ChatRenderer, field_name: str) -> bool:
    """Render a small conversation that uses the field and look for the field's values in the text."""
    user = {"role": "user", "content": "hi"}
    if field_name == "tools":
        tool = {"type": "function", "function": {"name": _TOOL, "description": "d", "parameters": {"type": "object"}}}
        return _rendered_with(renderer, [user], [_TOOL], tools=[tool], add_generation_prompt=True)
    if field_name in ("tool_calls", "tool"):
        wanted = [_TOOL, _ARG_KEY, _ARG_VALUE] if field_name == "tool_calls" else [_RESULT]
        # Templates take the arguments as an object (Hugging Face) or a JSON string (OpenAI); either is enough.
        for arguments in ({_ARG_KEY: _ARG_VALUE}, f'{{"{_ARG_KEY}": "{_ARG_VALUE}"}}'):
            call = {"type": "function", "function": {"name": _TOOL, "arguments": arguments}}
            conversation = [
                user,
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "name": _TOOL, "content": _RESULT},
            ]
            if _rendered_with(renderer, conversation, wanted, add_generation_prompt=True):
                return True
        return False
    if field_name.startswith("name:"):
        role = field_name.partition(":")[2]
        conversation = [user, {"role": "assistant", "content": "ok"}]
        if role == "system":
            conversation.insert(0, {"role": "system", "content": "s", "name": _NAME})
        else:
            index = 0 if role == "user" else 1
            conversation[index] = {**conversation[index], "name": _NAME}
        return _rendered_with(renderer, conversation, [_NAME])
    raise ValueError(f"unknown chat field {field_name!r}")


def _rendered_with(renderer: ChatRenderer, messages: list[dict], wanted: list[str], **kwargs) -> bool:
    try:
        text, _ = renderer.render(messages, **kwargs)
    except TemplateRefused:
        return False
    return all(value in text for value in wanted)


_FIELD_WORDS = {
    "tools": ("tool definitions", "them"),
    "tool_calls": ("tool calls", "them"),
    "tool": ("tool results (the 'tool' role)", "those messages"),
    "name": ("message names", "the names"),
}


def fields_used(messages: list[dict], tools: object) -> Iterator[tuple[str, str]]:
    """The chat fields a conversation uses that a template must show: ``(field, where)`` pairs.

    ``where`` points into the conversation (``messages[2].tool_calls``). A tool message's ``name``
    and ``tool_call_id`` are not among them: they repeat what the call already says, and the
    common tool-calling templates (Qwen, Hermes) link results to calls by order.
    """
    if tools:
        yield "tools", "tools"
    for i, message in enumerate(messages):
        role = message.get("role")
        if message.get("tool_calls"):
            yield "tool_calls", f"messages[{i}].tool_calls"
        if role == "tool":
            yield "tool", f"messages[{i}] (role 'tool')"
        elif message.get("name"):
            yield f"name:{role}", f"messages[{i}].name"


def check_fields_shown(renderer: ChatRenderer, conversations: Iterable[tuple[str, str, list[dict], object]],
                       consequence: str = "train on") -> None:
    """Refuse data whose fields the chat template would silently leave out of the rendered text.

    Args:
        renderer: the template the stage renders with.
        conversations: ``(row, part, messages, tools)`` for every conversation of the data: ``row``
            names it for a message (``"data.jsonl, row 3"``), ``part`` is the row's column holding
            ``messages`` (``messages``, ``prompt``, ``chosen``, ...).
        consequence: what the model would do with the conversation ("train on", "answer").

    Raises:
        UserError: naming the first row and field the template does not show.
    """
    from weightsmith.errors import UserError

    for row, part, messages, tools in conversations:
        for field_name, where in fields_used(messages, tools):
            if renderer.shows(field_name):
                continue
            what, it = _FIELD_WORDS[field_name.partition(":")[0]]
            where = where if part == "messages" or where == "tools" else where.replace("messages", part, 1)
            raise UserError(
                f"{row}: {where} is used, but the chat template of {renderer.source} does "
                f"not show {what}, so the model would {consequence} these conversations without {it}; use a model "
                f"whose chat template renders {what} (the tokenizer stage's does) or remove {it} from the data."
            )


def template_refusal(row: str, renderer: ChatRenderer, exc: Exception) -> str:
    """The sentence for a conversation the chat template refused; ``row`` names it (``"data.jsonl, row 3"``)."""
    reason = str(exc).strip()
    reason = reason[:-1] if reason.endswith(".") and not reason.endswith("..") else reason  # one full stop, ours
    return (
        f"{row}: the chat template of {renderer.source} refused this conversation: "
        f"{reason}; change the row to what the template accepts (e.g. merge consecutive messages "
        "of one role) or use a model whose chat template accepts it (the tokenizer stage's accepts any order)."
    )


# ------------------------------------------------------------------------------------ loss masks


@dataclass
class EncodedChat:
    """One conversation as SFT trains on it.

    Attributes:
        input_ids: the rendered conversation's tokens.
        labels: ``input_ids`` where the token gets loss, :data:`IGNORE_INDEX` where it does not.
        skipped_turns: assistant turns left out of the loss because their ``weight`` is 0.
    """

    input_ids: list[int]
    labels: list[int]
    skipped_turns: int = 0


def encode_conversation(
    renderer: ChatRenderer, messages: list[dict], tools: list | None, *, assistant_only_loss: bool
) -> EncodedChat:
    """Tokens and labels of one conversation: what SFT trains on.

    With ``assistant_only_loss`` only the assistant answers (each with its end-of-turn token) get
    loss, as TRL's ``assistant_only_loss`` does; without it every token does. Either way an
    assistant turn with ``weight: 0`` gets none (OpenAI's meaning: shown as context, not learned).

    Raises:
        TemplateRefused: the template raised on the conversation.
        AnswersNotLocated: a weight-0 turn (or, with ``assistant_only_loss``, any answer) cannot be
            located in the rendering; the message says why.
    """
    text, generation_spans = renderer.render(messages, tools)
    input_ids, offsets = renderer.encode(text)
    weights = [m.get("weight", 1) for m in messages if m.get("role") == "assistant"]
    skips = 0 in weights
    if not (assistant_only_loss or skips):
        return EncodedChat(input_ids, list(input_ids))

    spans = _answer_spans(renderer, messages, tools, text, generation_spans, weights)
    if spans is None:  # unattributed generation spans: every answer trains (no weight 0 here)
        trained, skipped = generation_spans, []
    else:
        trained = [span for span, weight in zip(spans, weights, strict=True) if weight != 0]
        skipped = [span for span, weight in zip(spans, weights, strict=True) if weight == 0]
    if assistant_only_loss:
        labels = [t if _overlaps(o, trained) else IGNORE_INDEX for t, o in zip(input_ids, offsets, strict=True)]
    else:
        labels = [IGNORE_INDEX if _overlaps(o, skipped) else t for t, o in zip(input_ids, offsets, strict=True)]
    return EncodedChat(input_ids, labels, skipped_turns=len(skipped))


def _answer_spans(
    renderer: ChatRenderer, messages: list[dict], tools: list | None, text: str,
    generation_spans: list[tuple[int, int]], weights: list[int],
) -> list[tuple[int, int]] | None:
    """The character span of each assistant answer, in order; None when only their union is known
    and no answer needs to be told from the others."""
    if renderer.marked:
        if len(generation_spans) == len(weights):
            return generation_spans
        if 0 not in weights:
            return None
        raise AnswersNotLocated(
            f"marks {len(generation_spans)} answer span(s) for {len(weights)} assistant turns, so a weight-0 "
            "turn cannot be told from the others"
        )
    # No markers: an answer runs from the end of the generation prompt before it to the end of its turn.
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        head = _prompt_text(renderer, messages[:i], tools)
        upto, _ = renderer.render(messages[: i + 1], tools)
        if not (text.startswith(upto) and upto.startswith(head)):
            raise AnswersNotLocated(
                "has no {% generation %} markers and renders the start of this conversation differently once "
                "later turns follow, so its assistant turns cannot be located"
            )
        spans.append((len(head), len(upto)))
    return spans


def _prompt_text(renderer: ChatRenderer, messages: list[dict], tools: list | None) -> str:
    try:
        return renderer.render(messages, tools, add_generation_prompt=True)[0]
    except TemplateRefused:
        if messages:
            raise
        return ""  # a conversation that opens with the answer: many templates cannot render no messages


def _overlaps(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    # The rule transformers applies for return_assistant_tokens_mask: a token is in a span if any of
    # its characters is.
    start, end = offset
    return any(end > span_start and start < span_end for span_start, span_end in spans)
