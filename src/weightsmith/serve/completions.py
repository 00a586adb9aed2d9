"""The two generating endpoints, ``/v1/chat/completions`` and ``/v1/completions``, over an engine.

A request is resolved to a concrete version (per request: aliases move), its engine leased from the
pool, its prompt rendered (chat: the version's own chat template, as training and evals render it) and
checked against the model's context, and then handed to the engine, which batches it with whatever
else is running. The answer comes back whole or as server-sent events (``data: {chunk}`` ... ``data:
[DONE]``). Whatever happens, the request ends in the request log and the metrics, and its lease is
released.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from weightsmith.errors import UserError
from weightsmith.serve import protocol as p
from weightsmith.serve._handle import EngineError
from weightsmith.serve.log import LoggedRequest
from weightsmith.serve.pool import Lease, LoadFailed, Resolved
from weightsmith.serve.types import GenerationResult, QueueFull, RequestHandle, SamplingParams, TokenEvent
from weightsmith.serve.types import TokenLogprob as EngineLogprob

CHAT, COMPLETIONS = "chat.completions", "completions"
log = logging.getLogger("weightsmith.serve")


@dataclass
class Flight:
    """One request in flight: who asked, which version answers, its prompts and handles, its clock."""

    serving: Any  # weightsmith.serve.app.Serving
    caller: Any  # weightsmith.serve.app.Caller
    endpoint: str
    body: p.ChatCompletionRequest | p.CompletionRequest
    request_id: str
    arrived: float = field(default_factory=time.monotonic)
    arrived_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(tzinfo=None))
    created: int = field(default_factory=lambda: int(time.time()))
    resolved: Resolved | None = None
    lease: Lease | None = None
    prompts: list[list[int]] = field(default_factory=list)
    params: SamplingParams | None = None
    handles: list[RequestHandle] = field(default_factory=list)
    submitted: float | None = None
    first_token: float | None = None
    finished: bool = False

    @property
    def version(self) -> str:
        return self.resolved.ref if self.resolved else ""


# -- preparing: resolve, lease, render, check ------------------------------------------------------
def prepare(flight: Flight) -> None:
    """Resolve the model, lease its engine and build the prompts and sampling parameters (blocking: run in a thread).

    Raises:
        OpenAIError: 400 for a request the model cannot take (too long, a field its template cannot show);
            503 when the server is draining or the version cannot be loaded (a failed load is remembered for
            the pool's back-off, so a broken version is not read again on every request).
        NotFound: no such model for the caller (404).
    """
    body = flight.body
    if flight.serving.draining:
        raise _shutting_down(body.model)
    unsupported = body.unsupported()
    if unsupported:
        raise p.OpenAIError(400, unsupported[1], param=unsupported[0], code="unsupported_parameter")
    flight.resolved = flight.serving.resolve(flight.caller, body.model)
    ref = flight.resolved.ref
    try:
        flight.lease = flight.serving.pool.lease(flight.resolved)
    except LoadFailed as exc:  # never the caller's fault; and the loader's words would name server folders
        retry = max(1, math.ceil(exc.retry_after))
        raise p.OpenAIError(
            503, f"{ref} cannot be loaded by this server: its model files are missing or unreadable (the server log "
            f"says why); use another version, or promote a repaired one in its place ('weightsmith models promote "
            f"NAME@vN --alias ALIAS'); this server tries {ref} again in {retry} s.", type="server_error",
            code="model_unavailable", headers={"Retry-After": str(retry)}) from None
    except Exception as exc:
        if isinstance(exc, UserError) and "shutting down" in str(exc):
            raise _shutting_down(ref) from None
        log.exception("cannot lease %s", ref)
        raise p.OpenAIError(503, f"{ref} is not available now (the server log says why); retry in a moment.",
                            type="server_error", code="model_unavailable", headers={"Retry-After": "5"}) from None
    engine = flight.lease.engine
    if flight.endpoint == CHAT:
        flight.prompts = [chat_prompt_ids(engine, body.messages, flight.resolved.ref, flight.lease.cache)]
        logprobs, top = body.logprobs, (body.top_logprobs or 0)
        wanted = body.new_tokens()
    else:
        flight.prompts = [completion_prompt_ids(engine, prompt, i, flight.lease.cache)
                          for i, prompt in enumerate(body.prompts())]
        logprobs, top = body.logprobs is not None, (body.logprobs or 0)
        wanted = body.max_tokens
    longest = max(len(ids) for ids in flight.prompts)
    flight.params = SamplingParams(
        max_tokens=max_new_tokens(wanted, longest, engine.context_length, flight.endpoint),
        temperature=float(body.temperature), top_p=float(body.top_p), seed=body.seed, stop=body.stops(), n=body.n,
        logprobs=logprobs, top_logprobs=top,
    )


def _shutting_down(model: str) -> p.OpenAIError:
    return p.OpenAIError(503, f"{model} is not available here: this server is shutting down; send the request to "
                         "another server, or retry once this one is back.", type="server_error",
                         code="model_unavailable", headers={"Retry-After": "5"})


def chat_prompt_ids(engine, messages: list[p.ChatMessage], ref: str, cache: dict | None = None) -> list[int]:
    """The version's chat template over ``messages`` with the generation prompt, as token ids.

    ``developer`` is OpenAI's new name for ``system`` and is rendered as one; text parts are joined.
    ``cache`` (the engine's lease cache) keeps one renderer per version, so which fields the template
    shows is probed once.

    Raises:
        OpenAIError: 400 for a model without a chat template, a field the template does not show, or a
            conversation the template refuses.
    """
    from weightsmith.data.chat import ChatRenderer, TemplateRefused, check_fields_shown, template_refusal

    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise p.OpenAIError(400, f"{ref} has no chat template; send plain text to /v1/completions instead.",
                            param="messages", code="no_chat_template")
    cache = {} if cache is None else cache
    conversation = []
    for i, m in enumerate(messages):
        message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.name:
            message["name"] = m.name
        for key, text in message.items():
            _check_unicode(text, f"messages.{i}.{key}", f"messages.{i}.{key}")
        conversation.append(message)
    _check_length(engine, cache, sum(len(m["content"]) + len(m.get("name", "")) for m in conversation), "messages")
    renderer = cache.get(("renderer", ref))
    if renderer is None:  # named by the version asked for: an engine may serve identical versions of two projects
        renderer = cache[("renderer", ref)] = ChatRenderer(tokenizer, ref)
    try:
        check_fields_shown(renderer, [("request", "messages", conversation, None)], consequence="answer")
        return renderer.tokens(conversation, None, add_generation_prompt=True)
    except TemplateRefused as exc:
        raise p.OpenAIError(400, template_refusal("request", renderer, exc), param="messages") from None
    except UserError as exc:
        raise p.OpenAIError(400, str(exc), param="messages") from None


def completion_prompt_ids(engine, prompt: str | list[int], index: int, cache: dict | None = None) -> list[int]:
    """A completions prompt as token ids: text tokenized as the tokenizer does (its BOS included), ids as given.

    Raises:
        OpenAIError: 400 for text that is not Unicode, too long for the context, or a token id outside the vocabulary.
    """
    where = "prompt" if index == 0 else f"prompt[{index}]"
    if isinstance(prompt, str):
        _check_unicode(prompt, where, "prompt")
        _check_length(engine, {} if cache is None else cache, len(prompt), "prompt")
        ids = list(engine.tokenizer(prompt, add_special_tokens=True)["input_ids"])
    else:
        vocab = len(engine.tokenizer)
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise p.OpenAIError(400, f"{where}: token id {bad} is not in the vocabulary (0..{vocab - 1}).", param="prompt")
        ids = list(prompt)
    if not ids:
        raise p.OpenAIError(400, f"{where} is empty (and the tokenizer adds no BOS token); give some text.", param="prompt")
    return ids


def _check_unicode(text: str, where: str, param: str) -> None:
    """JSON's ``\\ud800`` escapes decode to unpaired surrogates, which no tokenizer takes: a 400, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise p.OpenAIError(400, f"{where} holds an unpaired surrogate (\\u{ord(text[exc.start]):04x} at character "
                            f"{exc.start}), which is not Unicode text; send valid UTF-8.", param=param,
                            code="invalid_value") from None


def _check_length(engine, cache: dict, chars: int, param: str) -> None:
    """Refuse text that cannot fit the context before tokenizing it: a tokenizer takes seconds and gigabytes for
    megabytes of text (BPE over one long word is quadratic), which one request must not cost the server.

    No token stands for more characters than the vocabulary's longest entry (a byte-level entry has a character
    per byte), so text longer than ``context x longest entry`` is more tokens than the context holds; a factor
    of 4 leaves room for normalizers that shorten text (NFKC composes accents) before it is split.
    """
    budget = cache.get("max_prompt_chars")
    if budget is None:
        longest = max(map(len, engine.tokenizer.get_vocab()), default=1)
        budget = cache["max_prompt_chars"] = engine.context_length * max(longest, 1) * 4
    if chars > budget:
        raise p.OpenAIError(
            400, f"This model's maximum context length is {engine.context_length} tokens, and the {param} "
            f"{'hold' if param == 'messages' else 'holds'} {chars:,} characters, far more tokens than that; shorten "
            f"the {param}.", param=param,
            code="context_length_exceeded")


def max_new_tokens(wanted: int | None, prompt_tokens: int, context: int, endpoint: str) -> int:
    """The new-token budget: what was asked (default: what fits), refused when it cannot fit the context.

    Raises:
        OpenAIError: 400 ``context_length_exceeded`` when the prompt leaves no room, or ``max_tokens``
            asks for more than the room left.
    """
    room = context - prompt_tokens
    param = "messages" if endpoint == CHAT else "prompt"
    if room < 1:
        raise p.OpenAIError(
            400, f"This model's maximum context length is {context} tokens, and the prompt is {prompt_tokens} tokens, "
            "which leaves no room for an answer; shorten the prompt.", param=param, code="context_length_exceeded")
    if wanted is None:
        return room
    if wanted > room:
        name = "max_tokens" if endpoint == COMPLETIONS else "max_completion_tokens (or max_tokens)"
        raise p.OpenAIError(
            400, f"{name} is {wanted}, but this model's maximum context length is {context} tokens and the prompt is "
            f"{prompt_tokens}: at most {room} new tokens fit; lower it or shorten the prompt.",
            param="max_tokens", code="context_length_exceeded")
    return wanted


# -- running ---------------------------------------------------------------------------------------
def submit(flight: Flight) -> None:
    """Hand every prompt to the engine; a full queue cancels what was already submitted and answers 503."""
    engine = flight.lease.engine
    flight.submitted = time.monotonic()
    try:
        for ids in flight.prompts:
            flight.handles.append(engine.submit(ids, flight.params))
    except QueueFull as exc:
        for handle in flight.handles:
            handle.cancel()
        flight.handles = []
        retry = max(1, round(getattr(exc, "retry_after", 1.0)))
        raise p.OpenAIError(503, f"{flight.version} is busy: its queue is full; retry in {retry} s.",
                            type="overloaded_error", code="queue_full", headers={"Retry-After": str(retry)}) from None


CLIENT_GONE = 499
"""The status logged in the metrics for a request whose client went away before its answer (as nginx's)."""


async def answer(flight: Flight, client_gone: Callable[[], Awaitable[None]] | None = None):
    """The response: JSON, or an SSE stream when the request asked for one.

    Args:
        client_gone: returns when the client disconnects; a whole (non-streamed) answer's generation is then
            cancelled, freeing its batch rows, and the request logged as ``cancelled`` (a stream notices by
            itself: its next write fails).

    Raises:
        OpenAIError: 503 when the queue is full; 500 ``engine_error`` when the engine failed (the request is
            logged with finish reason ``error``).
    """
    submit(flight)
    if flight.body.stream:
        return StreamingResponse(_stream(flight), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    waiting = asyncio.ensure_future(asyncio.gather(*(handle.aresult() for handle in flight.handles)))
    gone = asyncio.ensure_future(client_gone()) if client_gone is not None else None
    try:
        await asyncio.wait([waiting] if gone is None else [waiting, gone], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():  # the client went away: stop generating for nobody
            waiting.cancel()
            abandon(flight)
            return Response(status_code=CLIENT_GONE)
        results = waiting.result()
    except EngineError as exc:
        finish(flight, await _settled(flight), status="error")
        raise _engine_failed(flight, exc) from None
    except BaseException:  # this task was cancelled: nothing more is wanted
        waiting.cancel()
        for handle in flight.handles:
            handle.cancel()
        finish(flight, None)
        raise
    finally:
        if gone is not None:
            gone.cancel()
    firsts = [r.time_to_first_token for r in results if r.completion_tokens]
    if firsts:
        flight.first_token = flight.submitted + min(firsts)
    response = _chat_response(flight, results[0]) if flight.endpoint == CHAT else _completion_response(flight, results)
    finish(flight, results)
    return JSONResponse(response.model_dump(mode="json"))


def finish(flight: Flight, results: list[GenerationResult] | None, *, status: str = "ok") -> None:
    """Log the request (``status``: ok, cancelled when the client went away, error when the engine failed), count
    it in the metrics and release its engine (once)."""
    if flight.finished:
        return
    flight.finished = True
    try:
        if results is not None:
            _record(flight, results, status)
    finally:
        if flight.lease is not None:
            flight.lease.release()


_abandoned: set[threading.Thread] = set()  # threads logging requests whose clients went away
_abandoned_lock = threading.Lock()


def abandon(flight: Flight) -> None:
    """The client went away mid-stream: stop generating, then log what was produced (in a thread, which
    :func:`wait_for_abandoned` waits for at shutdown)."""
    if flight.finished:
        return
    for handle in flight.handles:
        handle.cancel()

    def wait_and_log() -> None:
        try:
            try:
                results = [handle.result() for handle in flight.handles]
            except Exception:
                results = None
            finish(flight, results, status="cancelled")
        finally:
            with _abandoned_lock:
                _abandoned.discard(threading.current_thread())

    thread = threading.Thread(target=wait_and_log, name="weightsmith-abandoned-request", daemon=True)
    with _abandoned_lock:
        _abandoned.add(thread)
    thread.start()


def wait_for_abandoned(timeout: float = 30.0) -> None:
    """Wait (up to ``timeout`` seconds) until every abandoned request is in the request log's queue: the server's
    shutdown calls it after the engines stopped and before the log's last write, so those rows are not lost."""
    deadline = time.monotonic() + timeout
    with _abandoned_lock:
        threads = list(_abandoned)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _record(flight: Flight, results: list[GenerationResult], status: str) -> None:
    serving, body, resolved = flight.serving, flight.body, flight.resolved
    end = time.monotonic()
    ttft = flight.first_token - flight.arrived if flight.first_token is not None else None
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    n = body.n
    choices = [{"index": i * n + c.index, "text": c.text, "finish_reason": c.finish_reason, "token_ids": list(c.token_ids)}
               for i, r in enumerate(results) for c in r.choices]
    params = {k: v for k, v in vars(flight.params).items() if k != "stop"} | {"stop": list(flight.params.stop)}
    entry = LoggedRequest(
        request_id=flight.request_id, project_id=resolved.project_id, created_at=flight.arrived_at,
        token_name=flight.caller.actor.name, endpoint=flight.endpoint, model=body.model, model_name=resolved.name,
        model_version_id=resolved.version_id, version=resolved.ref,
        messages=[m.model_dump(mode="json", exclude_none=True) for m in body.messages] if flight.endpoint == CHAT else None,
        prompt=body.prompt if flight.endpoint == COMPLETIONS else None,
        params=params, choices=choices, status=status,
        finish_reason="error" if status == "error" else choices[0]["finish_reason"] if choices else None,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        prompt_token_ids=flight.prompts[0] if len(flight.prompts) == 1 else flight.prompts,
        time_to_first_token=ttft, total_seconds=end - flight.arrived,
    )
    serving.request_log.record(entry)
    serving.metrics.observe(resolved.project, flight.endpoint, resolved.ref, prompt_tokens=prompt_tokens,
                            completion_tokens=completion_tokens, seconds=end - flight.arrived, ttft=ttft,
                            batch_sizes=[b for r in results for b in r.batch_sizes])


# -- whole responses -------------------------------------------------------------------------------
def _usage(results: list[GenerationResult]) -> p.Usage:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return p.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))


def chat_logprobs(items: list[EngineLogprob] | None, top: int) -> p.ChoiceLogprobs | None:
    if items is None:
        return None
    return p.ChoiceLogprobs(content=[
        p.TokenLogprob(token=lp.token, logprob=lp.logprob, bytes=_token_bytes(lp.token),
                       top_logprobs=[p.TopLogprob(token=t, logprob=v, bytes=_token_bytes(t)) for t, _, v in lp.top[:top]])
        for lp in items
    ])


def completion_logprobs(items: list[EngineLogprob] | None, top: int, offset: int) -> p.CompletionLogprobs | None:
    if items is None:
        return None
    offsets, at = [], offset
    for lp in items:
        offsets.append(at)
        at += len(lp.token)
    return p.CompletionLogprobs(
        tokens=[lp.token for lp in items], token_logprobs=[lp.logprob for lp in items],
        top_logprobs=[{t: v for t, _, v in lp.top[:top]} for lp in items], text_offset=offsets)


def _chat_response(flight: Flight, result: GenerationResult) -> p.ChatCompletion:
    top = flight.params.top_logprobs
    return p.ChatCompletion(
        id=flight.request_id, created=flight.created, model=flight.version, usage=_usage([result]),
        choices=[p.ChatChoice(index=c.index, message=p.AssistantMessage(content=c.text),
                              logprobs=chat_logprobs(c.logprobs, top), finish_reason=c.finish_reason)
                 for c in sorted(result.choices, key=lambda c: c.index)],
    )


def _prompt_text(flight: Flight, i: int) -> str:
    prompt = flight.body.prompts()[i]
    return prompt if isinstance(prompt, str) else flight.lease.engine.tokenizer.decode(prompt)


def _completion_response(flight: Flight, results: list[GenerationResult]) -> p.Completion:
    body, n, top = flight.body, flight.body.n, flight.params.top_logprobs
    choices = []
    for i, result in enumerate(results):
        echo = _prompt_text(flight, i) if body.echo else ""
        for c in sorted(result.choices, key=lambda c: c.index):
            choices.append(p.CompletionChoice(index=i * n + c.index, text=echo + c.text, finish_reason=c.finish_reason,
                                              logprobs=completion_logprobs(c.logprobs, top, len(echo))))
    return p.Completion(id=flight.request_id, created=flight.created, model=flight.version, choices=choices,
                        usage=_usage(results))


# -- streams ---------------------------------------------------------------------------------------
def _sse(chunk) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


DONE = "data: [DONE]\n\n"


async def _merged(handles: list[RequestHandle]) -> AsyncIterator[tuple[int, TokenEvent]]:
    """Every handle's events as they come, tagged with the handle's position."""
    if len(handles) == 1:
        async for event in handles[0].aevents():
            yield 0, event
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(i: int, handle: RequestHandle) -> None:
        try:
            async for event in handle.aevents():
                await queue.put((i, event))
        finally:
            await queue.put((i, end))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        running = len(tasks)
        while running:
            i, event = await queue.get()
            if event is end:
                running -= 1
            else:
                yield i, event
        for task in tasks:
            task.result()  # an engine error surfaces here
    finally:
        for task in tasks:
            task.cancel()


async def _settled(flight: Flight) -> list[GenerationResult]:
    """After an engine failure: every prompt's result as far as it got (the others are cancelled; a failed one
    gives what it had produced, its unfinished choices ending with finish reason ``error``)."""
    for handle in flight.handles:
        handle.cancel()
    results = []
    for handle, ids in zip(flight.handles, flight.prompts, strict=True):
        try:
            results.append(await handle.aresult())
        except EngineError as exc:
            results.append(exc.partial or GenerationResult(choices=[], prompt_tokens=len(ids), completion_tokens=0,
                                                           time_to_first_token=0.0, total_seconds=0.0))
    return results


def _engine_failed(flight: Flight, exc: EngineError) -> p.OpenAIError:
    """The error a client gets when the engine failed: a server error, which names no server internals."""
    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "an error"
    return p.OpenAIError(500, f"{flight.version} failed while generating this answer ({cause}; the server log has the "
                         "details); retry, and tell the server's operator if it happens again.", type="server_error",
                         code="engine_error")


def _sse_error(error: p.OpenAIError) -> str:
    """The server-sent event that ends a failed stream: ``data: {"error": {...}}``, which the ``openai`` client
    raises as an ``APIError`` (no ``[DONE]`` follows: the stream did not complete)."""
    return f"data: {json.dumps(error.body())}\n\n"


def _include_usage(flight: Flight) -> bool:
    options = flight.body.stream_options
    return bool(options and options.include_usage)


async def _stream(flight: Flight) -> AsyncIterator[str]:
    """A streamed answer: its chunks, then the usage chunk when asked and ``[DONE]``; on an engine failure the
    error event instead; logged (or abandoned, when the client left first) however it ends."""
    chat = flight.endpoint == CHAT
    results, status = None, "ok"
    try:
        async for chunk in (_chat_chunks(flight) if chat else _completion_chunks(flight)):
            yield chunk
        results = [await handle.aresult() for handle in flight.handles]
        if _include_usage(flight):
            base = {"id": flight.request_id, "created": flight.created, "model": flight.version}
            chunk_type = p.ChatCompletionChunk if chat else p.Completion
            yield _sse(chunk_type(**base, choices=[], usage=_usage(results)))
        yield DONE
    except EngineError as exc:
        results, status = await _settled(flight), "error"
        yield _sse_error(_engine_failed(flight, exc))
    finally:
        if results is not None:
            finish(flight, results, status=status)
        else:
            abandon(flight)


async def _chat_chunks(flight: Flight) -> AsyncIterator[str]:
    top = flight.params.top_logprobs
    base = {"id": flight.request_id, "created": flight.created, "model": flight.version}
    # OpenAI opens every choice with the assistant role and empty content.
    yield _sse(p.ChatCompletionChunk(**base, choices=[
        p.ChunkChoice(index=j, delta=p.ChunkDelta(role="assistant", content="")) for j in range(flight.params.n)]))
    async for _, event in _merged(flight.handles):
        if flight.first_token is None and event.token_ids:
            flight.first_token = time.monotonic()
        if not (event.text or event.finish_reason or event.logprobs):
            continue
        yield _sse(p.ChatCompletionChunk(**base, choices=[p.ChunkChoice(
            index=event.index, delta=p.ChunkDelta(content=event.text),
            logprobs=chat_logprobs(event.logprobs, top), finish_reason=event.finish_reason)]))


async def _completion_chunks(flight: Flight) -> AsyncIterator[str]:
    body, n, top = flight.body, flight.body.n, flight.params.top_logprobs
    base = {"id": flight.request_id, "created": flight.created, "model": flight.version}
    offsets = {}
    if body.echo:
        for i in range(len(flight.handles)):
            text = _prompt_text(flight, i)
            for j in range(n):
                offsets[i * n + j] = len(text)
                yield _sse(p.Completion(**base, choices=[p.CompletionChoice(index=i * n + j, text=text)]))
    async for i, event in _merged(flight.handles):
        if flight.first_token is None and event.token_ids:
            flight.first_token = time.monotonic()
        if not (event.text or event.finish_reason or event.logprobs):
            continue
        index = i * n + event.index
        logprobs = completion_logprobs(event.logprobs, top, offsets.get(index, 0))
        offsets[index] = offsets.get(index, 0) + len(event.text)
        yield _sse(p.Completion(**base, choices=[p.CompletionChoice(
            index=index, text=event.text, logprobs=logprobs, finish_reason=event.finish_reason)]))


def new_request_id(endpoint: str) -> str:
    return ("chatcmpl-" if endpoint == CHAT else "cmpl-") + uuid.uuid4().hex


__all__ = ["CHAT", "COMPLETIONS", "Flight", "answer", "finish", "new_request_id", "prepare", "wait_for_abandoned"]
