"""An LLM judge: grade completions against a rubric through any OpenAI-compatible endpoint.

Some KPIs ("answers politely", "cites the right policy") have no program that checks them;
a stronger model with a written rubric does. We speak plain HTTP to ``/v1/chat/completions``
(the standard library's ``urllib``, no SDK), so the judge can be a hosted API, a vLLM server,
or weightsmith's own server — whatever the organization trusts with its data.

Two ways in:

- ``make_judge(endpoint, model, rubric)`` returns a reward function ``f(completions, **row)``;
- the registered metric ``"llm_judge"`` takes the same settings as keyword arguments, so a
  suite can name it and pass ``endpoint``, ``model`` and ``rubric`` as the metric's options.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from http.client import HTTPException

from weightsmith.errors import UserError
from weightsmith.rewards import RewardFn, completion_text, reward

log = logging.getLogger(__name__)

JUDGE_INSTRUCTIONS = (
    "You are a strict, impartial grader. You are given a rubric, possibly the prompt a model "
    "was asked, and the model's response. Judge only whether the response meets the rubric. "
    "You may reason briefly first, but end your reply with a JSON object on its own line, "
    'exactly {"score": s}, where s is a number from 0 (does not meet the rubric at all) '
    "to 1 (fully meets it)."
)

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# `"score": 0.8`, `score = 0.8`, `Score: 4/5`, `score: 80%`, the JSON key quoted or not.
_KEYED_SCORE = re.compile(rf'"?score"?\s*[:=]\s*"?({_NUMBER})\s*(%|/\s*({_NUMBER}))?', re.IGNORECASE)
_BARE_SCORE = re.compile(rf"({_NUMBER})\s*(%|/\s*({_NUMBER}))?")


def parse_score(reply: str) -> float | None:
    """The score in a judge's reply, in [0, 1], or ``None`` when there is none.

    The last ``score`` key wins (a judge that reasons first states its verdict last); without
    one, the last number in the reply. ``4/5`` and ``80%`` are read as 0.8. A number outside
    [0, 1] (a judge grading on its own 1-10 scale) is not silently rescaled: it gives ``None``.
    """
    for pattern in (_KEYED_SCORE, _BARE_SCORE):
        matches = list(pattern.finditer(reply))
        if not matches:
            continue
        number, suffix, denominator = matches[-1].groups()
        value = float(number)
        if suffix == "%":
            value /= 100
        elif denominator is not None:
            value = value / float(denominator) if float(denominator) else math.nan
        return value if 0 <= value <= 1 else None
    return None


def chat_completions_url(endpoint: str) -> str:
    """Accept ``http://host:port``, ``.../v1`` or the full ``.../v1/chat/completions`` URL."""
    url = str(endpoint).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(
            f"LLM judge endpoint '{endpoint}' is not an http:// or https:// URL; give e.g. http://host:8000/v1."
        )
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def _prompt_text(prompt: object) -> str:
    if isinstance(prompt, list):  # chat messages: keep who said what
        return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt if isinstance(m, dict))
    return completion_text(prompt)


def judge_messages(completion: object, rubric: str, prompt: object = None) -> list[dict]:
    """The chat messages sent to the judge for one completion."""
    sections = [f"## Rubric\n{rubric}"]
    if prompt is not None:
        sections.append(f"## Prompt\n{_prompt_text(prompt)}")
    sections.append(f"## Response\n{completion_text(completion)}")
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS}, {"role": "user", "content": "\n\n".join(sections)}]


class _Aborted(Exception):
    """Another request already failed for good; this one stops without trying again."""


class _JudgeClient:
    """Posts chat requests with retries; shared by the worker threads of one ``llm_judge`` call."""

    def __init__(self, url: str, model: str, api_key: str | None, timeout: float, max_retries: int, backoff_s: float):
        self.url, self.model, self.api_key = url, model, api_key
        self.timeout, self.max_retries, self.backoff_s = timeout, max_retries, backoff_s
        # Set when one request has failed for good: the others stop instead of each
        # retrying against an endpoint that is down, and sleeping ones wake at once.
        self.abort = threading.Event()

    def reply(self, messages: list[dict]) -> str:
        attempts = 1 + self.max_retries
        for attempt in range(attempts):
            if self.abort.is_set():
                raise _Aborted()
            try:
                return self._post(messages)
            except urllib.error.HTTPError as exc:
                if exc.code < 500 and exc.code != 429:
                    self.abort.set()
                    raise UserError(
                        f"LLM judge endpoint {self.url} refused the request: HTTP {exc.code} {exc.reason} "
                        f"({_body_excerpt(exc)}); check the endpoint, the model name '{self.model}' and the API key."
                    ) from exc
                reason = f"HTTP {exc.code} {exc.reason}"
            except urllib.error.URLError as exc:
                reason = str(exc.reason)
            except (TimeoutError, ConnectionError, HTTPException) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt + 1 < attempts:
                log.info("LLM judge %s: attempt %d failed (%s); retrying", self.url, attempt + 1, reason)
                self.abort.wait(self.backoff_s * 2**attempt)  # exponential backoff
        self.abort.set()
        raise UserError(f"LLM judge endpoint {self.url} failed after {attempts} attempts: {reason}")

    def _post(self, messages: list[dict]) -> str:
        payload = {"model": self.model, "messages": messages, "temperature": 0}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            raw = response.read()
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.abort.set()
            raise UserError(
                f"LLM judge endpoint {self.url} answered without choices[0].message.content "
                f"({raw[:200]!r}); is it an OpenAI-compatible chat completions endpoint?"
            ) from exc
        return content or ""


def _body_excerpt(error: urllib.error.HTTPError) -> str:
    try:
        return error.read()[:200].decode("utf-8", "replace") or "no body"
    except OSError:
        return "no body"


def _aligned(value: object, n: int, name: str) -> list:
    """A per-example column: a list aligned with the completions, or one value for all of them."""
    if isinstance(value, (list, tuple)) and not (value and isinstance(value[0], dict)):
        if len(value) != n:
            raise UserError(f"llm_judge: '{name}' has {len(value)} entries for {n} completions.")
        return list(value)
    return [value] * n


def llm_judge(
    completions: Sequence,
    *,
    prompt: object = None,
    rubric: str | Sequence[str],
    endpoint: str,
    model: str,
    api_key: str | None = None,
    max_retries: int = 3,
    timeout: float = 30,
    backoff_s: float = 0.5,
    max_concurrency: int = 8,
    unparseable_score: float = 0.0,
) -> list[float]:
    """Grade each completion against ``rubric`` with a judge model; one score in [0, 1] per completion.

    Args:
        completions: model outputs (strings or assistant messages).
        prompt: what each completion answered — a list aligned with ``completions``, or one
            prompt for all, or ``None`` to grade the response alone.
        rubric: what a good response does; one for all, or a list aligned with ``completions``.
        endpoint: the OpenAI-compatible server (``http://host:port``, ``.../v1`` or the full URL).
        model: the judge model's name on that server.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        max_retries: retries after the first attempt on connection errors, timeouts, HTTP 429
            and 5xx, waiting ``backoff_s * 2**k`` before retry ``k + 1``. Then a ``UserError``.
            Other HTTP errors (a wrong URL, key or model) fail at once: retrying cannot fix them.
        timeout: seconds per request.
        max_concurrency: requests in flight at once.
        unparseable_score: the score of a reply with no score in [0, 1] in it (logged as a
            warning). 0 by default; ``float("nan")`` makes those examples stand out instead.

    An empty or whitespace-only completion scores 0 without a request; an empty rubric is a
    ``UserError``.
    """
    n = len(completions)
    rubrics = _aligned(rubric, n, "rubric")
    prompts = _aligned(prompt, n, "prompt")
    if max_retries < 0 or max_concurrency < 1:
        raise UserError("llm_judge: max_retries must be at least 0 and max_concurrency at least 1.")
    if any(not str(r if r is not None else "").strip() for r in rubrics):
        raise UserError("llm_judge: the rubric is empty; write what a good response does.")
    client = _JudgeClient(chat_completions_url(endpoint), model, api_key, timeout, max_retries, backoff_s)
    # An empty response meets no rubric; shown nothing to grade, a judge may grade the rubric itself.
    asked = [i for i, c in enumerate(completions) if completion_text(c).strip()]
    requests = [judge_messages(completions[i], rubrics[i], prompts[i]) for i in asked]
    if not requests:
        return [0.0] * n
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(requests))) as pool:
        futures = [pool.submit(client.reply, messages) for messages in requests]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        if failed:
            client.abort.set()
            for future in futures:
                future.cancel()
    if failed:
        # Report the request that failed for good, not one that merely stopped because of it.
        raise next((f.exception() for f in failed if not isinstance(f.exception(), _Aborted)), failed[0].exception())
    scores = [0.0] * n
    for index, future in zip(asked, futures, strict=True):
        reply = future.result()
        score = parse_score(reply)
        if score is None:
            log.warning("LLM judge gave no score in [0, 1] for completion #%d: %r", index, reply[:200])
            score = unparseable_score
        scores[index] = score
    return scores


def make_judge(endpoint: str, model: str, rubric: str, **options) -> RewardFn:
    """A reward function that grades with :func:`llm_judge` under fixed settings.

    The returned ``f(completions, **row)`` reads the prompts from the row's ``prompts`` (as TRL
    passes them) or ``prompt`` column. ``options`` are :func:`llm_judge`'s other keywords.
    """

    def judge(completions: Sequence, **row: object) -> list[float]:
        prompt = row.get("prompts", row.get("prompt"))
        return llm_judge(completions, prompt=prompt, rubric=rubric, endpoint=endpoint, model=model, **options)

    judge.__name__ = f"llm_judge[{model}]"
    return judge


_JUDGE_OPTIONS = ("api_key", "max_retries", "timeout", "backoff_s", "max_concurrency", "unparseable_score")


@reward("llm_judge")
def llm_judge_metric(completions: Sequence, *, endpoint: str, model: str, rubric, **row: object) -> list[float]:
    """The registered metric: :func:`llm_judge` with its settings given as keyword arguments.

    Any other keyword (the dataset's columns) is ignored, except ``prompts``/``prompt``.
    """
    options = {key: row[key] for key in _JUDGE_OPTIONS if key in row}
    return make_judge(endpoint, model, rubric, **options)(completions, **row)
