"""Generation engines for serving: one loaded model version answering many concurrent requests.

:class:`BatchedEngine` does continuous (iteration-level) batching, as Orca (Yu et al., OSDI 2022)
introduced and vLLM and TGI serve: one background thread runs decoding steps over every running
choice at once; between two steps, newly arrived requests are prefilled together and join the
batch, and finished ones leave. A request never waits for another to finish, and 32 concurrent
requests cost little more per step than one (a step reads the weights once for all its rows).

:class:`NaiveEngine` answers one request at a time with one ``model.generate()`` each: the
baseline ``bench/serving.py`` measures the batched engine against.

Why not transformers' own continuous batching (``ContinuousBatchingManager`` / ``generate_batch``,
5.24)? It runs on the CPU with our fp32 Llama models (SDPA over its paged cache; ``paged|eager`` is
slower and its greedy output differs from ``generate``'s), and a manager kept running is no faster
than this engine: 32 Quill prompts x 32 new tokens at once, ``small`` model, one thread, five
alternating rounds on a busy two-core machine, median 2.35 s for both (one request: 0.66 s against
0.54 s here); ``generate_batch`` adds ~1.4 s of start and stop per call. And it cannot serve the
OpenAI contract: ``do_sample`` and ``n`` are fixed per manager, every request draws from one global
RNG (no per-request seed), its log-probabilities are of the processed distribution, without top
alternatives, and it has no stop strings. So we batch ourselves, with the model's ordinary forward
pass, a left-padded KV cache whose rows join and leave (:mod:`weightsmith.serve._kv`) and per-row
sampling (:mod:`weightsmith.serve._sampling`).
"""

from __future__ import annotations

import abc
import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import DynamicCache, DynamicLayer, GenerationConfig, StoppingCriteria, StopStringCriteria

from weightsmith.errors import UserError
from weightsmith.evals.generate import _eos_token_ids, _no_progress_bar, resolve_device, resolve_dtype
from weightsmith.serve._handle import ChoiceText, EngineError, Handle
from weightsmith.serve._kv import RunningCache
from weightsmith.serve._sampling import next_tokens, token_logprobs
from weightsmith.serve.types import Engine, GenerationResult, QueueFull, SamplingParams, TokenLogprob

log = logging.getLogger(__name__)

PREFILL_TOKENS = 4096
"""The most prompt tokens (rows x padded width) prefilled between two decoding steps, so that a burst of
long prompts delays the running requests' next token by one bounded prefill, not by all of them."""

__all__ = ["BatchedEngine", "EngineError", "NaiveEngine", "kv_cache_bytes", "load_engine"]


@dataclass(eq=False)
class _Request:
    handle: Handle
    prompt: list[int]
    params: SamplingParams
    limit: int  # new tokens allowed per choice: max_tokens, capped by the context
    choices: list[ChoiceText]
    submitted: float
    first_token: float | None = None
    unfinished: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    generators: list[torch.Generator | None] = field(default_factory=list)  # per choice, made at submit


@dataclass(eq=False)
class _Row:
    """One running choice: the row of the batch it occupies."""

    request: _Request
    choice: ChoiceText
    generator: torch.Generator | None  # None for greedy rows
    next_token: int = -1  # sampled, not yet in the cache
    generated: int = 0

    @property
    def position(self) -> int:
        """The position id ``next_token`` takes when it is fed back (the prompt holds 0..len-1)."""
        return len(self.request.prompt) + self.generated - 1


def _choice_generator(params: SamplingParams, index: int) -> torch.Generator | None:
    """The CPU generator a sampled choice draws from: seeded from (seed, choice) when the request has a seed.

    numpy's ``SeedSequence`` spawns independent streams from one seed, so choice 0 of ``n=1`` and of ``n=4``
    with the same seed agree, and the choices of one request differ. It takes non-negative entropy only, so
    a negative seed (OpenAI allows any 64-bit integer) is taken modulo 2**64 (two's complement).
    """
    if params.greedy:
        return None
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    state = np.random.SeedSequence(seed % 2**64, spawn_key=(index,)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class _EngineBase(abc.ABC):
    """Loading, validation, the request queue and the worker thread the two engines share."""

    kind: str = ""

    def __init__(self, model_dir: str | Path, *, device: str = "auto", dtype: str = "auto", max_batch_size: int = 32,
                 max_queue: int = 256):
        if max_batch_size < 1:
            raise UserError(f"max_batch_size is {max_batch_size}; it must be at least 1.")
        if max_queue < 1:
            raise UserError(f"max_queue is {max_queue}; it must be at least 1.")
        self.model_dir = Path(model_dir).expanduser().resolve()
        self.device = resolve_device(device)
        self.model, self.tokenizer = _load(self.model_dir, self.device, dtype)
        self.device = self.model.device.type
        config = self.model.config.get_text_config(decoder=True)
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.weight_bytes = sum(t.numel() * t.element_size()
                                for t in [*self.model.parameters(), *self.model.buffers()])
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.kv_cache_bytes = kv_cache_bytes(self.model, self._kv_rows(), self.context_length)
        self.memory_bytes = self.weight_bytes + self.kv_cache_bytes
        self._eos = set(_eos_token_ids(self.model, self.tokenizer))
        self._backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if self._backend is None:
            raise UserError(f"the tokenizer in '{self.model_dir}' is not a fast (tokenizers-library) tokenizer, which "
                            "serving needs for streaming; save the model with a tokenizer.json.")
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else (min(self._eos) if self._eos else 0)
        self._token_texts: dict[int, str] = {}
        self._threads = torch.get_num_threads()
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._closing = False
        self._drain = True
        self._stats = {"running": 0.0, "last_batch_size": 0.0, "decode_steps": 0.0, "generated_tokens": 0.0}
        self._prepare()
        self._warm_up()
        self._thread = threading.Thread(target=self._serve_forever, name=f"weightsmith-{self.kind}-engine", daemon=True)
        self._thread.start()

    # --- the Engine protocol -------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Handle:
        """Queue a request (thread-safe, returns at once).

        Raises:
            QueueFull: ``max_queue`` requests are already waiting, or the engine is closing.
            UserError: an empty prompt, a token id outside the vocabulary, a prompt that fills the context,
                or sampling parameters out of range (the server checks these first).
        """
        prompt = [int(t) for t in prompt_ids]
        limit = self._check(prompt, params)
        handle = Handle(self._wake)
        # Everything one request needs is made here, on the caller's thread: what it cannot make fails this
        # request alone, never the engine's step that every running request shares.
        request = _Request(handle=handle, prompt=prompt, params=params, limit=limit, submitted=time.perf_counter(),
                           choices=[ChoiceText(i, self._backend, tuple(params.stop)) for i in range(params.n)],
                           unfinished=params.n, generators=[_choice_generator(params, i) for i in range(params.n)])
        with self._cond:
            if self._closing:
                raise QueueFull(f"the engine serving '{self.model_dir.name}' is shutting down; retry on another server.")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"the engine serving '{self.model_dir.name}' has {len(self._waiting)} requests waiting "
                                f"(its limit); retry in a moment.")
            self._waiting.append(request)
            self._cond.notify_all()
        return handle

    def close(self, drain: bool = True) -> None:
        """Stop the engine; with ``drain`` finish queued and in-flight requests first, else cut them short
        (their results hold what was produced, ``finish_reason`` ``"length"``). Later submits raise QueueFull."""
        with self._cond:
            self._closing = True
            self._drain = self._drain and drain
            if not drain:
                for request in [*self._waiting, *self._running_requests()]:
                    request.handle.cancel_requested = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def stats(self) -> dict[str, float]:
        """``queue_depth`` (requests waiting), ``running`` (requests in the batch), ``last_batch_size`` (rows of the
        last decoding step), plus ``decode_steps`` and ``generated_tokens`` since the engine started."""
        return {"queue_depth": float(len(self._waiting)), **self._stats}

    # --- shared pieces -------------------------------------------------------------------------

    def _check(self, prompt: list[int], params: SamplingParams) -> int:
        vocab = self.model.get_input_embeddings().num_embeddings
        if not prompt:
            raise UserError("the prompt has no tokens; give at least one.")
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise UserError(f"token id {bad} is not in the vocabulary (0..{vocab - 1}).")
        room = self.context_length - len(prompt)
        if room < 1:
            raise UserError(f"the prompt has {len(prompt)} tokens and the model's context is {self.context_length}: "
                            "no room for an answer; shorten the prompt.")
        if params.max_tokens < 1:
            raise UserError(f"max_tokens is {params.max_tokens}; it must be at least 1.")
        if params.n < 1:
            raise UserError(f"n is {params.n}; it must be at least 1.")
        if not params.temperature >= 0:  # NaN included
            raise UserError(f"temperature is {params.temperature}; use 0 for greedy decoding or a positive value.")
        if not 0 < params.top_p <= 1:
            raise UserError(f"top_p is {params.top_p}; it must be in (0, 1].")
        if not 0 <= params.top_logprobs <= 20:
            raise UserError(f"top_logprobs is {params.top_logprobs}; it must be between 0 and 20.")
        if any(not s for s in params.stop):
            raise UserError("a stop string is empty; remove it or give a non-empty string.")
        return min(params.max_tokens, room)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _token_text(self, token_id: int) -> str:
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def _logprob(self, token_id: int, chosen: float, top: list[tuple[int, float]]) -> TokenLogprob:
        return TokenLogprob(token=self._token_text(token_id), token_id=token_id, logprob=chosen,
                            top=[(self._token_text(i), i, v) for i, v in top])

    def _kv_rows(self) -> int:
        return self.max_batch_size

    def _result(self, request: _Request) -> GenerationResult:
        now = time.perf_counter()
        choices = [c.choice(request.params.logprobs) for c in request.choices]
        return GenerationResult(
            choices=choices,
            prompt_tokens=len(request.prompt),
            completion_tokens=sum(len(c.token_ids) for c in choices),
            time_to_first_token=(request.first_token or now) - request.submitted,
            total_seconds=now - request.submitted,
            batch_sizes=list(request.batch_sizes),
        )

    def _finish(self, request: _Request) -> None:
        request.handle.finish(self._result(request))

    def _fail(self, request: _Request, error: BaseException) -> None:
        """Fail a request the model could not finish; its handle keeps what was produced (the choices cut short
        end with finish_reason ``"error"``), which the server logs."""
        for choice in request.choices:
            if choice.finish_reason is None:
                choice.finish_reason = "error"
        request.handle.fail(error, partial=self._result(request))

    def _cut_short(self, request: _Request) -> None:
        """Finish a cancelled request with what it has."""
        events = [c.cut_short() for c in request.choices if c.finish_reason is None]
        if events:
            request.handle.publish(events)
        request.unfinished = 0
        self._finish(request)

    def _serve_forever(self) -> None:
        torch.set_num_threads(self._threads)  # OpenMP's thread count is per calling thread
        try:
            with torch.inference_mode():
                self._serve()
        except BaseException as exc:  # a bug in the loop itself: no request may wait forever
            log.exception("the %s engine for %s stopped", self.kind, self.model_dir)
            with self._cond:
                self._closing = True
                waiting, self._waiting = list(self._waiting), collections.deque()
            for request in waiting + self._running_requests():
                self._fail(request, exc)

    def _prepare(self) -> None:
        """The engine's own state, once the model is loaded and before its thread starts."""

    def _running_requests(self) -> list[_Request]:
        return []

    @abc.abstractmethod
    def _serve(self) -> None:
        """The engine thread's loop: take requests from the queue and generate until the engine closes."""

    def _warm_up(self) -> None:
        # The first forward pass pays for lazy initialisation (allocator, kernels); not the first request's.
        with torch.inference_mode():
            ids = torch.full((1, 2), self._pad, dtype=torch.long, device=self.model.device)
            self.model(input_ids=ids, use_cache=False)


class BatchedEngine(_EngineBase):
    """Continuous batching over one model version (see the module docstring).

    Args:
        model_dir: a saved model version (a Hugging Face causal LM with full attention, and its tokenizer).
        device: ``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:1"``; fp32 on the CPU, bf16 on CUDA.
        max_batch_size: the most rows (choices) decoded together; more wait in the queue.
        max_queue: the most requests waiting to join; one more raises :class:`QueueFull`.

    Raises:
        UserError: the folder holds no loadable model, or one with sliding-window or linear-attention layers,
            which the left-padded batch cannot hold (serve those with ``NaiveEngine``).
    """

    kind = "batched"

    def _prepare(self) -> None:
        layers = DynamicCache(config=self.model.config).layers
        if any(type(layer) is not DynamicLayer for layer in layers):
            raise UserError(f"'{self.model_dir}' has sliding-window or linear-attention layers, which the batched "
                            "engine does not support; serve it with the naive engine (--engine naive).")
        self._rows: list[_Row] = []
        self._running = RunningCache(self.model.device)

    def _running_requests(self) -> list[_Request]:
        return list({id(r.request): r.request for r in self._rows}.values())

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._rows or self._closing):
                    self._cond.wait()
                if self._closing and not self._waiting and not self._rows:
                    return
                joining = self._admit()
            try:
                self._drop_cancelled()
                if joining:
                    self._prefill(joining)
                if self._rows:
                    self._decode()
            except Exception as exc:  # the model failed: fail what it was running, keep serving the queue
                log.exception("the batched engine for %s failed a step", self.model_dir)
                for request in [*self._running_requests(), *joining]:
                    self._fail(request, exc)
                self._rows, self._running = [], RunningCache(self.model.device)
            self._stats["running"] = float(len(self._running_requests()))

    def _admit(self) -> list[_Request]:
        """Take waiting requests while their choices fit the batch and their prompts the prefill budget."""
        joining: list[_Request] = []
        rows = len(self._rows)
        width = 0
        while self._waiting:
            request = self._waiting[0]
            if request.handle.cancel_requested:
                self._waiting.popleft()
                self._cut_short(request)
                continue
            n, new_width = request.params.n, max(width, len(request.prompt))
            alone = not joining and not self._rows  # a request larger than the limits still runs, alone
            if not alone and (rows + n > self.max_batch_size or new_width * (len(joining) + 1) > PREFILL_TOKENS):
                break
            joining.append(self._waiting.popleft())
            rows, width = rows + n, new_width
        return joining

    def _drop_cancelled(self) -> None:
        cancelled = {id(r.request): r.request for r in self._rows if r.request.handle.cancel_requested}
        if not cancelled:
            return
        for request in cancelled.values():
            self._cut_short(request)
        keep = [i for i, row in enumerate(self._rows) if id(row.request) not in cancelled]
        self._running.keep(keep)
        self._rows = [self._rows[i] for i in keep]

    def _prefill(self, requests: list[_Request]) -> None:
        """Prefill the joining prompts in groups of similar length (see :func:`_length_groups`)."""
        for group in _length_groups(requests):
            self._prefill_group(group)

    def _prefill_group(self, requests: list[_Request]) -> None:
        """Run these prompts together (left-padded), choose each choice's first token, and add the
        unfinished choices to the running batch, each with a copy of its prompt's cache."""
        device = self.model.device
        width = max(len(r.prompt) for r in requests)
        input_ids = torch.full((len(requests), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.bool)
        for i, request in enumerate(requests):
            input_ids[i, width - len(request.prompt) :] = torch.tensor(request.prompt)
            mask[i, width - len(request.prompt) :] = True
        positions = (mask.long().cumsum(dim=1) - 1).clamp_(min=0)
        cache = DynamicCache(config=self.model.config)
        padded = len({len(r.prompt) for r in requests}) > 1
        logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device) if padded else None,
                            position_ids=positions.to(device), cache=cache, use_cache=True, logits_to_keep=1).logits
        # One row per choice: the n choices of a prompt share its prefill.
        owner = [i for i, r in enumerate(requests) for _ in range(r.params.n)]
        rows = [_Row(request=r, choice=c, generator=r.generators[c.index]) for r in requests for c in r.choices]
        owner_index = torch.tensor(owner, device=device)
        finished = self._advance(logits[:, -1].float().index_select(0, owner_index), rows)
        kept = [i for i in range(len(rows)) if i not in finished]
        if not kept:
            return
        kept_owner = owner_index[torch.tensor(kept, device=device)]
        self._running.join(
            [(layer.keys.index_select(0, kept_owner), layer.values.index_select(0, kept_owner)) for layer in cache.layers],
            mask.to(device).index_select(0, kept_owner),
        )
        self._rows.extend(rows[i] for i in kept)

    def _decode(self) -> None:
        """One decoding step over every running row."""
        device = self.model.device
        input_ids = torch.tensor([[row.next_token] for row in self._rows], device=device)
        positions = torch.tensor([[row.position] for row in self._rows], device=device)
        mask = self._running.step_mask()
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            cache=self._running.cache, use_cache=True, logits_to_keep=1).logits
        self._stats["decode_steps"] += 1
        self._stats["last_batch_size"] = float(len(self._rows))
        finished = self._advance(logits[:, -1].float(), self._rows)
        if finished:
            keep = [i for i in range(len(self._rows)) if i not in finished]
            self._running.keep(keep)
            self._rows = [self._rows[i] for i in keep]

    def _advance(self, logits: torch.Tensor, rows: list[_Row]) -> set[int]:
        """Choose every row's next token, send each request its events; return the rows that finished."""
        tokens_tensor = next_tokens(logits, [r.request.params.temperature for r in rows],
                                    [r.request.params.top_p for r in rows], [r.generator for r in rows])
        tokens = tokens_tensor.tolist()
        wanted = [i for i, r in enumerate(rows) if r.request.params.logprobs]
        logprobs = dict(zip(wanted, token_logprobs(logits, tokens_tensor, wanted,
                                                   [rows[i].request.params.top_logprobs for i in wanted]),
                            strict=True)) if wanted else {}
        now = time.perf_counter()
        events: dict[int, tuple[_Request, list]] = {}
        finished: set[int] = set()
        for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            row.generated += 1
            lp = self._logprob(token, *logprobs[i]) if i in logprobs else None
            event = row.choice.add(token, lp, eos=token in self._eos, at_limit=row.generated >= row.request.limit)
            events.setdefault(id(row.request), (row.request, []))[1].append(event)
            if event.finish_reason is not None:
                finished.add(i)
                row.request.unfinished -= 1
            else:
                row.next_token = token
        self._stats["generated_tokens"] += len(rows)
        for request, request_events in events.values():
            if request.first_token is None:
                request.first_token = now
            request.batch_sizes.append(len(rows))
            request.handle.publish(request_events)
            if request.unfinished == 0:
                self._finish(request)
        return finished


def _length_groups(requests: list[_Request], waste: float = 1.25) -> list[list[_Request]]:
    """The requests sorted by prompt length and cut into groups padded to at most ``waste`` x their tokens.

    A prefill is compute-bound: one padded batch of 32 Quill prompts (20 to 73 tokens) computes twice the
    tokens it needs; groups of similar length waste at most a quarter, for one more forward pass each.
    """
    groups: list[list[_Request]] = []
    tokens = 0
    for request in sorted(requests, key=lambda r: len(r.prompt)):
        length = len(request.prompt)  # the longest so far: the group's padded width
        if groups and (len(groups[-1]) + 1) * length <= waste * (tokens + length):
            groups[-1].append(request)
            tokens += length
        else:
            groups.append([request])
            tokens = length
    return groups


class NaiveEngine(_EngineBase):
    """One request at a time, one ``model.generate()`` each: the baseline the batched engine is measured against.

    Same arguments and protocol as :class:`BatchedEngine` (``max_batch_size`` is unused). Events arrive when the
    request's ``generate()`` returns, all at once. A seeded request seeds torch's global generator around its
    ``generate()``, so its samples differ from the batched engine's for the same seed.
    """

    kind = "naive"

    def _prepare(self) -> None:
        self._current: _Request | None = None
        self._stop_matchers: dict[tuple[str, ...], StopStringCriteria] = {}

    def _running_requests(self) -> list[_Request]:
        return [self._current] if self._current is not None else []

    def _kv_rows(self) -> int:
        return 1  # one request at a time (its n choices are rows too, but n is per request: not counted here)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._closing):
                    self._cond.wait()
                if not self._waiting:
                    return
                request = self._current = self._waiting.popleft()
            self._stats["running"] = 1.0
            try:
                if request.handle.cancel_requested:
                    self._cut_short(request)
                else:
                    self._generate(request)
            except Exception as exc:
                log.exception("the naive engine for %s failed a request", self.model_dir)
                self._fail(request, exc)
            self._current = None
            self._stats["running"] = 0.0

    def _generate(self, request: _Request) -> None:
        params, device = request.params, self.model.device
        sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0} \
            if not params.greedy else {"do_sample": False}
        # Greedy choices are all the same sequence (and generate() refuses several greedy return sequences).
        sequences = params.n if not params.greedy else 1
        config = GenerationConfig(max_new_tokens=request.limit, num_return_sequences=sequences,
                                  eos_token_id=sorted(self._eos) or None, pad_token_id=self._pad,
                                  output_logits=params.logprobs, return_dict_in_generate=True, **sampling)
        stopping = [_StopWhenCancelled(request.handle),
                    *([self._stop_matcher(tuple(params.stop))] if params.stop else [])]
        input_ids = torch.tensor([request.prompt], device=device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      generation_config=config, stopping_criteria=stopping)
        request.first_token = time.perf_counter()
        new = out.sequences[:, len(request.prompt) :].tolist()
        steps = len(out.logits) if params.logprobs else 0
        logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1) if steps else None
        events = []
        for choice in request.choices:
            sequence = choice.index if sequences > 1 else 0
            for step, token in enumerate(new[sequence]):
                lp = None
                if logprobs is not None:
                    row = logprobs[sequence, step]
                    top = row.topk(params.top_logprobs) if params.top_logprobs else None
                    lp = self._logprob(token, float(row[token]),
                                       list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top else [])
                events.append(choice.add(token, lp, eos=token in self._eos, at_limit=step + 1 >= request.limit))
                if choice.finish_reason is not None:
                    break
            if choice.finish_reason is None:  # generate() stopped before this choice ended (it was cancelled)
                events.append(choice.cut_short())
        self._stats["decode_steps"] += len(new[0])
        self._stats["last_batch_size"] = float(params.n)
        self._stats["generated_tokens"] += sum(len(c.token_ids) for c in request.choices)
        request.batch_sizes.append(params.n)
        request.handle.publish(events)
        self._finish(request)

    def _stop_matcher(self, stop: tuple[str, ...]) -> StopStringCriteria:
        # Built once per set of stop strings: it preprocesses the whole vocabulary.
        matcher = self._stop_matchers.get(stop)
        if matcher is None:
            matcher = self._stop_matchers[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return matcher


class _StopWhenCancelled(StoppingCriteria):
    """Ends a naive engine's ``generate()`` at the next step once its request is cancelled."""

    def __init__(self, handle: Handle):
        self.handle = handle

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.handle.cancel_requested, dtype=torch.bool, device=input_ids.device)


def kv_cache_bytes(model, rows: int, context: int) -> int:
    """An upper bound on the bytes of the KV cache ``rows`` sequences of ``context`` tokens hold in ``model``.

    ``2 (keys and values) x layers x key_value_heads x head_dim x rows x context x bytes per element``, with
    ``key_value_heads`` the grouped-query heads (``num_key_value_heads``, else ``num_attention_heads``),
    ``head_dim`` the config's (else ``hidden_size / num_attention_heads``), and the element size of the model's
    dtype (4 for fp32, 2 for bf16): the size of transformers' ``DynamicCache`` when every row reaches the
    context, as the batched engine's running batch (``rows`` = ``max_batch_size``) can. It leaves out the
    transient copies a join or a prefill makes and the activations of a forward pass. 0 for a config without
    ``num_attention_heads`` or ``num_hidden_layers``.

    Args:
        model: a loaded causal LM (its text config and dtype are read).
        rows: sequences held at once (the engine's ``max_batch_size``).
        context: tokens per sequence (the model's ``max_position_embeddings``).
    """
    config = model.config.get_text_config(decoder=True)
    heads, layers = getattr(config, "num_attention_heads", None), getattr(config, "num_hidden_layers", None)
    if not heads or not layers:  # a config that does not say: the pool counts the weights alone
        return 0
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    element = torch.empty((), dtype=model.dtype).element_size()
    return 2 * int(layers) * kv_heads * head_dim * rows * context * element


def _load(model_dir: Path, device: str, dtype: str = "auto"):
    """A causal LM and its tokenizer from a version folder, in eval mode, in ``dtype`` (auto | float32 | bfloat16 |
    float16; auto: bf16 on a CUDA GPU that supports it, fp32 on the CPU; :func:`weightsmith.evals.generate.load_model`).

    Raises:
        UserError: no such folder, no loadable model in it, or a dtype name not among the four.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not model_dir.is_dir():
        raise UserError(f"model directory '{model_dir}' does not exist; give the folder of a saved model version.")
    dtype = getattr(torch, resolve_dtype(dtype, device))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        with _no_progress_bar():
            model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a causal language model and tokenizer from '{model_dir}' ({exc}).") from exc
    # A mixture of experts' router loss is for training; over a KV cache its mask no longer fits the new tokens.
    if getattr(model.config, "output_router_logits", False):
        model.config.output_router_logits = False
    return model.to(device).eval(), tokenizer


def load_engine(model_dir: str | Path, kind: Literal["batched", "naive"] = "batched", **kwargs) -> Engine:
    """Load a model version into an engine: ``"batched"`` (continuous batching) or ``"naive"`` (one
    ``generate()`` per request). ``kwargs`` go to the engine (``device``, ``dtype``, ``max_batch_size``, ``max_queue``).

    Raises:
        UserError: an unknown kind, or a folder that holds no loadable model.
    """
    engines = {"batched": BatchedEngine, "naive": NaiveEngine}
    if kind not in engines:
        raise UserError(f"unknown engine '{kind}'; choose 'batched' or 'naive'.")
    return engines[kind](model_dir, **kwargs)
