"""What the engines share on the way out: a request's handle and the text of each of its choices.

A :class:`Handle` is written by the engine's thread and read by any number of consumers, sync
(``events``/``result``) or asyncio (``aevents``/``aresult``): events go into one append-only list
under a condition variable, and an asyncio waiter is woken with ``loop.call_soon_threadsafe``, so
the event loop never blocks on the engine.

A :class:`ChoiceText` turns one choice's tokens into text deltas: incremental detokenization with
the tokenizers library's ``DecodeStream`` (it holds back a token that ends inside a UTF-8
character), stop strings cut where they start, and a possible stop-string prefix held back until
the next tokens show whether it is one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from tokenizers.decoders import DecodeStream

from weightsmith.serve.types import Choice, FinishReason, GenerationResult, TokenEvent, TokenLogprob


class EngineError(RuntimeError):
    """The engine failed while generating this request (the model raised): a server error, not the client's.

    ``partial`` is what the request had produced when it failed (its unfinished choices end with finish_reason
    ``"error"``), for the request log; None when the engine had none to give.
    """

    def __init__(self, message: str, partial: GenerationResult | None = None):
        super().__init__(message)
        self.partial = partial


class Handle:
    """A submitted request: its events as the engine produces them, then its result (see ``RequestHandle``)."""

    def __init__(self, on_cancel: Callable[[], None]):
        self._cond = threading.Condition()
        self._events: list[TokenEvent] = []
        self._done = False
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._partial: GenerationResult | None = None
        # Who waits: a step's events wake only the consumers of events, not those waiting for the result
        # (waking a thread or an event loop for nothing each step costs the engine's thread the GIL).
        self._event_readers = 0
        self._event_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._result_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._on_cancel = on_cancel
        self.cancel_requested = False  # read by the engine's thread between steps

    # --- the engine's side ---------------------------------------------------------------------

    def publish(self, events: list[TokenEvent]) -> None:
        with self._cond:
            self._events.extend(events)
            if self._event_readers:
                self._cond.notify_all()
            self._wake_async(self._event_waiters)
            self._event_waiters = []

    def finish(self, result: GenerationResult) -> None:
        with self._cond:
            if self._done:
                return
            self._result, self._done = result, True
            self._wake_all()

    def fail(self, error: BaseException, partial: GenerationResult | None = None) -> None:
        """End the request with ``error``; ``partial`` (what it produced) rides on the :class:`EngineError` raised."""
        with self._cond:
            if self._done:
                return
            self._error, self._partial, self._done = error, partial, True
            self._wake_all()

    @property
    def done(self) -> bool:
        return self._done

    def _wake_all(self) -> None:
        self._cond.notify_all()
        self._wake_async(self._event_waiters + self._result_waiters)
        self._event_waiters, self._result_waiters = [], []

    @staticmethod
    def _wake_async(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]) -> None:
        # Called with the lock held: a consumer registers its waiter under the same lock, so no wake-up is lost.
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that event loop is closed: its consumer is gone
                pass

    # --- the consumers' side -------------------------------------------------------------------

    def events(self) -> Iterator[TokenEvent]:
        """Block and yield each choice's deltas as produced; ends when every choice finished.

        Raises:
            EngineError: the engine failed while generating (after the events produced before).
        """
        seen = 0
        while True:
            with self._cond:
                self._event_readers += 1
                try:
                    self._cond.wait_for(lambda: seen < len(self._events) or self._done)
                finally:
                    self._event_readers -= 1
                batch, done = self._events[seen:], self._done
            seen += len(batch)
            yield from batch
            if done:
                self._raise_error()
                return

    async def aevents(self) -> AsyncIterator[TokenEvent]:
        """The same as :meth:`events`, for asyncio callers (waits without blocking the event loop)."""
        loop = asyncio.get_running_loop()
        seen = 0
        while True:
            with self._cond:
                batch, done = self._events[seen:], self._done
                future = None
                if not batch and not done:
                    future = loop.create_future()
                    self._event_waiters.append((loop, future))
            if future is not None:
                await future
                continue
            seen += len(batch)
            for event in batch:
                yield event
            if done:
                self._raise_error()
                return

    def result(self) -> GenerationResult:
        """Block until done and return the whole result (works after :meth:`events` was consumed too)."""
        with self._cond:
            self._cond.wait_for(lambda: self._done)
        self._raise_error()
        assert self._result is not None
        return self._result

    async def aresult(self) -> GenerationResult:
        """The same as :meth:`result`, for asyncio callers."""
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                if self._done:
                    break
                future = loop.create_future()
                self._result_waiters.append((loop, future))
            await future
        self._raise_error()
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Stop generating (the client went away): the result then has what was produced, ``finish_reason``
        ``"length"`` on the choices cut short. A no-op once the request finished."""
        if not self._done and not self.cancel_requested:
            self.cancel_requested = True
            self._on_cancel()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise EngineError(f"generation failed: {self._error}", self._partial) from self._error


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class ChoiceText:
    """One choice's tokens, text and finish reason, fed one token at a time.

    Args:
        index: the choice's index in the request.
        backend: the tokenizers-library ``Tokenizer`` behind the model's tokenizer (for ``DecodeStream``).
        stop: the stop strings; the text ends before the first one found.
    """

    def __init__(self, index: int, backend, stop: tuple[str, ...]):
        self.index = index
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: FinishReason | None = None
        self._backend = backend
        self._stream = DecodeStream(skip_special_tokens=True)
        self._stop = stop
        self._longest_stop = max((len(s) for s in stop), default=0)
        self._text = ""
        self._sent = 0  # characters of _text already sent in events

    def add(self, token_id: int, logprob: TokenLogprob | None, *, eos: bool, at_limit: bool) -> TokenEvent:
        """Take the next token and return this choice's event for it.

        Args:
            token_id: the generated token (an end-of-sequence token included: it is kept in ``token_ids``).
            logprob: its log-probabilities when the request asked for them.
            eos: the token ends the sequence (its text is not shown).
            at_limit: this was the last token allowed (``max_tokens`` or the context).
        """
        self.token_ids.append(token_id)
        if logprob is not None:
            self.logprobs.append(logprob)
        if not eos:
            chunk = self._stream.step(self._backend, token_id)
            if chunk:
                self._append(chunk)
        if self.finish_reason is None and (eos or at_limit):
            self.finish_reason = "stop" if eos else "length"
        return TokenEvent(
            index=self.index,
            text=self._take_delta(),
            token_ids=[token_id],
            logprobs=[logprob] if logprob is not None else None,
            finish_reason=self.finish_reason,
        )

    def cut_short(self) -> TokenEvent:
        """End the choice now (the request was cancelled): the held-back text goes out, reason ``"length"``."""
        self.finish_reason = "length"
        return TokenEvent(index=self.index, text=self._take_delta(), token_ids=[], logprobs=None,
                          finish_reason="length")

    def choice(self, with_logprobs: bool) -> Choice:
        assert self.finish_reason is not None
        return Choice(index=self.index, text=self._text, token_ids=list(self.token_ids),
                      finish_reason=self.finish_reason, logprobs=list(self.logprobs) if with_logprobs else None)

    def _append(self, chunk: str) -> None:
        before = len(self._text)
        self._text += chunk
        if not self._stop:
            return
        # Only a match that ends in the new chunk is new; it may start in the text before it.
        start = max(0, before - self._longest_stop + 1)
        hits = [i for i in (self._text.find(s, start) for s in self._stop) if i >= 0]
        if hits:
            self._text = self._text[: min(hits)]
            self.finish_reason = "stop"

    def _take_delta(self) -> str:
        end = len(self._text) if self.finish_reason else len(self._text) - self._possible_stop_start()
        delta = self._text[self._sent : end]
        self._sent = max(self._sent, end)
        return delta

    def _possible_stop_start(self) -> int:
        """Length of the longest end of the text that begins some stop string (held back until decided)."""
        for k in range(min(self._longest_stop - 1, len(self._text)), 0, -1):
            tail = self._text[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0
