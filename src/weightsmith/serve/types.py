"""The contract between the serving engine (batched generation) and the OpenAI-compatible server.

An :class:`Engine` owns one loaded model version and a background thread that batches every
request it is given (continuous batching: requests join and leave the running batch between
decoding steps). The server only builds :class:`SamplingParams` from a request body, calls
:meth:`Engine.submit` and reads the handle's events; it never calls ``generate()`` itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from weightsmith.errors import UserError

FinishReason = Literal["stop", "length", "error"]  # "error": cut short by an engine failure (never in a response)

GREEDY_BELOW = 1e-5
"""A temperature below this decodes greedily, as vLLM's ``SamplingParams`` does (its ``_SAMPLING_EPS``): dividing
the logits by a temperature such as 1e-30 overflows float32 and would sample from NaNs, not from the argmax."""


class QueueFull(UserError):
    """The engine's bounded queue is full: the server answers 503 with ``Retry-After``."""

    retry_after: float = 1.0


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI's sampling knobs, already validated by the server.

    Attributes:
        max_tokens: the most new tokens per choice (>= 1; the server caps it at context - prompt).
        temperature: 0 (or below :data:`GREEDY_BELOW`) means greedy (argmax); otherwise logits / temperature
            before sampling.
        top_p: nucleus sampling mass in (0, 1].
        seed: a request with a seed samples from its own ``torch.Generator`` seeded with it, so the
            same request with the same seed gives the same output whatever else is in the batch.
        stop: up to 4 strings; the choice ends before the first occurrence (not included in text).
        n: number of choices, each sampled independently from the same prompt.
        logprobs: return the chosen token's log-probability for each generated token.
        top_logprobs: also the k most likely tokens at each position (0..20).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        """Decode by argmax: temperature 0, or so close to it (< :data:`GREEDY_BELOW`) that sampling equals it."""
        return self.temperature < GREEDY_BELOW


@dataclass
class TokenLogprob:
    """One position's log-probabilities (natural log), as OpenAI's ``logprobs.content`` items."""

    token: str
    token_id: int
    logprob: float
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (token text, id, logprob), most likely first


@dataclass
class TokenEvent:
    """A streamed delta of one choice.

    ``text`` is the new text since the previous event of this choice (possibly ``""`` while a
    partial UTF-8 character or a possible stop-string prefix is held back). ``finish_reason`` is
    set on the choice's last event only.
    """

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None


@dataclass
class Choice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    logprobs: list[TokenLogprob] | None = None


@dataclass
class GenerationResult:
    """A finished request: every choice, token counts and latency (seconds)."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int  # summed over choices
    time_to_first_token: float  # from submit to the first token of any choice
    total_seconds: float  # from submit to the last choice's end
    batch_sizes: list[int] = field(default_factory=list)  # size of each decoding step's batch this request joined


class RequestHandle(Protocol):
    """What :meth:`Engine.submit` returns: events as they are produced, then the result."""

    def events(self) -> Iterator[TokenEvent]:
        """Block and yield each choice's deltas as produced; ends when every choice finished."""

    def aevents(self) -> AsyncIterator[TokenEvent]:
        """The same, for asyncio callers (does not block the event loop)."""

    def result(self) -> GenerationResult:
        """Block until done and return the whole result (works after events() was consumed too)."""

    async def aresult(self) -> GenerationResult:
        """The same, for asyncio callers."""

    def cancel(self) -> None:
        """Stop generating (the client went away); the handle's result then has what was produced."""


class Engine(Protocol):
    """One loaded model version serving many concurrent requests.

    Attributes:
        model_dir: the version's folder (``from_pretrained`` opens it).
        tokenizer: its tokenizer; chat template and EOS come from the version's own files.
        context_length: the model's maximum positions (prompt + new tokens must fit).
        device: ``"cpu"`` or ``"cuda"``; fp32 on CPU, bf16 on CUDA.
        memory_bytes: what the server's LRU of loaded versions counts: ``weight_bytes`` (parameters and buffers)
            plus ``kv_cache_bytes`` (the KV cache of a full batch at full context, see
            :func:`weightsmith.serve.engine.kv_cache_bytes`).
    """

    model_dir: Path
    tokenizer: object
    context_length: int
    device: str
    memory_bytes: int

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestHandle:
        """Queue a request (thread-safe, returns at once). Raises :class:`QueueFull` when the queue is full."""

    def close(self, drain: bool = True) -> None:
        """Stop the engine; with ``drain`` finish queued and in-flight requests first."""

    def stats(self) -> dict[str, float]:
        """``{"queue_depth", "running", "last_batch_size"}`` for the metrics endpoint."""
