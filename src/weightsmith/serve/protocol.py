"""OpenAI's wire format for the served endpoints: request and response shapes, and the error object.

The shapes follow OpenAI's API reference (the ``openai`` package's ``types.chat.ChatCompletion``,
``ChatCompletionChunk``, ``types.Completion``, ``types.Model``) field for field, so the official client
parses every answer unchanged; vLLM's ``entrypoints/openai/protocol.py`` keeps them the same way, in one
module apart from the engine. Our one addition is visible in every response: ``model`` is the concrete
version that answered (``quill@v4``), whatever the request named (``quill``, ``quill@champion``).

Request fields that change what is generated and that we do not implement (tools, response formats,
penalties, logit biases) are refused with a 400 naming the field, never silently ignored; fields that
do not (``user``, ``metadata``, ``store``) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from weightsmith.errors import UserError

MAX_N = 16
"""The most choices one request may ask for (OpenAI allows 128; each choice is a row of the batch)."""
MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_PROMPTS = 64
Number = StrictFloat | StrictInt

ChatRole = Literal["system", "developer", "user", "assistant", "tool"]


# -- errors --------------------------------------------------------------------------------------
class OpenAIError(UserError):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "param", "code"}}`` with ``status``.

    A :class:`~weightsmith.errors.UserError`, so ``weightsmith chat`` prints its sentence and exits 2.
    """

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: ErrorDetail


# -- requests ------------------------------------------------------------------------------------
class _Request(BaseModel):
    # Unknown fields are tolerated (clients send new ones first); the ones that would change the output
    # are declared below and refused when set.
    model_config = ConfigDict(extra="allow")


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    """One message: ``content`` is a string or a list of text parts (joined), as OpenAI's."""

    model_config = ConfigDict(extra="allow")
    role: ChatRole
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = Field(None, max_length=200)
    tool_call_id: StrictStr | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: StrictBool = Field(False, description="send a last chunk with usage (and no choices)")


class _Sampling(_Request):
    model: StrictStr = Field(min_length=1, max_length=300,
                             description="NAME (its champion), NAME@ALIAS or NAME@vN; the response names the concrete version")
    temperature: Number = Field(1.0, ge=0, le=2, description="0: greedy")
    top_p: Number = Field(1.0, gt=0, le=1)
    n: StrictInt = Field(1, ge=1, le=MAX_N, description=f"choices per prompt (at most {MAX_N})")
    seed: StrictInt | None = Field(None, ge=-(2**63), le=2**63 - 1,
                                   description="same seed, same request: same output, whatever else is batched with it")
    stop: StrictStr | list[StrictStr] | None = Field(None, description=f"up to {MAX_STOP} strings; not included in the text")
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Number] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(s == "" for s in stops):
            raise ValueError("a stop string cannot be empty")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def unsupported(self) -> tuple[str, str] | None:
        """(param, why) for a set field we do not implement."""
        if self.presence_penalty or self.frequency_penalty:
            return ("presence_penalty" if self.presence_penalty else "frequency_penalty",
                    "presence and frequency penalties are not supported; leave them at 0.")
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported."
        return None


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=4096)
    max_tokens: StrictInt | None = Field(None, ge=1, description="deprecated by OpenAI for max_completion_tokens; either works")
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Any] | None = None
    tool_choice: Any | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.tools:
            return "tools", "tools (function calling) are not supported by this server."
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format", "only response_format {'type': 'text'} is supported."
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true."
        return super().unsupported()

    def new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (the legacy text endpoint): one prompt or a list, as text or token ids."""

    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = Field(
        description="a string, a list of strings, a list of token ids, or a list of those")
    max_tokens: StrictInt | None = Field(16, ge=1, description="OpenAI's default: 16")
    logprobs: StrictInt | None = Field(None, ge=0, le=5, description="the k most likely tokens at each position (0..5)")
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = Field(None, ge=1, le=MAX_N)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value):
        if isinstance(value, list):
            if not value or (isinstance(value[0], list) and not all(value)):
                raise ValueError("give at least one prompt, and no empty list of token ids")
            if not isinstance(value[0], int) and len(value) > MAX_COMPLETION_PROMPTS:
                raise ValueError(f"at most {MAX_COMPLETION_PROMPTS} prompts per request")
        return value

    def prompts(self) -> list[str | list[int]]:
        """Each prompt of the request: a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]
        return list(p)

    def unsupported(self) -> tuple[str, str] | None:
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported."
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of is not supported (leave it unset or equal to n)."
        if self.echo and self.logprobs is not None:
            return "echo", "echo with logprobs is not supported."
        return super().unsupported()


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a user's verdict on one response."""

    model_config = ConfigDict(extra="forbid")
    request_id: StrictStr = Field(min_length=1, max_length=64, description="the response's id (chatcmpl-... or cmpl-...)")
    score: Number = Field(ge=-1e9, le=1e9, description="your scale, e.g. 1 good / 0 bad, or 1..5 stars")
    comment: StrictStr | None = Field(None, max_length=10_000)


# -- responses -----------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str = Field(description="the request id: POST /v1/feedback names it")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="the concrete version that answered, NAME@vN")
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str = Field(description="a name a request may use: NAME@vN, NAME@ALIAS, or NAME (its champion)")
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(description="the project")
    root: str = Field(description="the concrete version it names now, NAME@vN")


class ModelCardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackRecorded(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    request_id: str
    score: float
    comment: str | None
    created: int
