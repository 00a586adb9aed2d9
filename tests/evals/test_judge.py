"""The LLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from weightsmith.errors import UserError
from weightsmith.evals.judge import chat_completions_url, llm_judge, make_judge, parse_score
from weightsmith.rewards import get_reward


class JudgeStub(ThreadingHTTPServer):
    """A tiny /v1/chat/completions server: scripted replies, and N failures (HTTP 503) first."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _JudgeHandler)
        self.requests: list[dict] = []
        self.headers_seen: list[dict] = []
        self.fail_next = 0
        self.fail_status = 503
        self.lock = threading.Lock()
        # Grades the response section of the judge's prompt: "Paris" passes.
        self.reply_for: Callable[[str], str] = lambda response: (
            'Correct capital.\n{"score": 1}' if "Paris" in response else 'Wrong city.\n{"score": 0.0}'
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _JudgeHandler(BaseHTTPRequestHandler):
    server: JudgeStub

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(request)
            self.server.headers_seen.append(dict(self.headers))
            failing = self.server.fail_next > 0
            self.server.fail_next -= failing
        if failing:
            self._send(self.server.fail_status, {"error": {"message": "overloaded"}})
            return
        response = request["messages"][-1]["content"].split("## Response\n", 1)[1]
        content = self.server.reply_for(response)
        self._send(
            200,
            {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            },
        )


@pytest.fixture
def judge_server() -> Iterator[JudgeStub]:
    server = JudgeStub()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_grades_each_completion_in_order_with_the_rubric_and_prompt(judge_server):
    completions = ["Paris.", "Lyon, I think.", [{"role": "assistant", "content": "It is Paris"}]]
    prompts = ["Capital of France?"] * 3

    scores = llm_judge(
        completions, prompt=prompts, rubric="Names Paris.", endpoint=judge_server.url, model="judge-1", api_key="k-123"
    )

    assert scores == [1.0, 0.0, 1.0]
    assert len(judge_server.requests) == 3
    request = judge_server.requests[0]
    assert request["model"] == "judge-1" and request["temperature"] == 0
    user_message = request["messages"][-1]["content"]
    assert "## Rubric\nNames Paris." in user_message and "## Prompt\nCapital of France?" in user_message
    assert all(h["Authorization"] == "Bearer k-123" for h in judge_server.headers_seen)


def test_retries_5xx_with_backoff_then_succeeds(judge_server):
    judge_server.fail_next = 2
    scores = llm_judge(
        ["Paris"], rubric="Names Paris.", endpoint=judge_server.url + "/v1", model="j", max_retries=3, backoff_s=0.01
    )
    assert scores == [1.0]
    assert len(judge_server.requests) == 3  # two 503s, then the answer


def test_gives_up_after_max_retries_with_a_user_error(judge_server):
    judge_server.fail_next = 100
    expected = r"LLM judge endpoint http://127\.0\.0\.1:\d+/v1/chat/completions failed after 3 attempts: HTTP 503"
    with pytest.raises(UserError, match=expected):
        llm_judge(
            ["Paris"] * 4,
            rubric="r",
            endpoint=judge_server.url,
            model="j",
            max_retries=2,
            backoff_s=0.01,
            max_concurrency=1,
        )
    # Once one request fails for good, the rest are not sent (not 4 x 3 attempts).
    assert len(judge_server.requests) == 3


def test_client_errors_are_not_retried(judge_server):
    with pytest.raises(UserError, match="refused the request: HTTP 404"):
        llm_judge(
            ["Paris"], rubric="r", endpoint=judge_server.url + "/wrong/chat/completions", model="j", backoff_s=0.01
        )
    assert judge_server.requests == []
    judge_server.fail_next, judge_server.fail_status = 1, 401
    with pytest.raises(UserError, match="HTTP 401"):
        llm_judge(["Paris"], rubric="r", endpoint=judge_server.url, model="j", backoff_s=0.01)
    assert len(judge_server.requests) == 1


def test_down_endpoint_is_a_user_error():
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=r"failed after 2 attempts: .*refused"):
        llm_judge(["x"], rubric="r", endpoint=endpoint, model="j", max_retries=1, backoff_s=0.01, timeout=2)


def test_unparseable_replies_score_the_configured_fallback(judge_server):
    judge_server.reply_for = lambda response: "I would rather not say." if "?" in response else "Score: 4/5"
    scores = llm_judge(["fine", "hmm?"], rubric="r", endpoint=judge_server.url, model="j")
    assert scores == [0.8, 0.0]
    nan_scores = llm_judge(["hmm?"], rubric="r", endpoint=judge_server.url, model="j", unparseable_score=float("nan"))
    assert nan_scores[0] != nan_scores[0]


def test_factory_and_registered_metric_work_as_rewards(judge_server):
    judge = make_judge(judge_server.url, "j", "Names Paris.", backoff_s=0.01)
    # TRL passes prompts as `prompts`, plus the dataset's other columns.
    assert judge(["Paris", "Rome"], prompts=["Capital?", "Capital?"], answer=["Paris", "Paris"]) == [1.0, 0.0]
    assert "## Prompt\nCapital?" in judge_server.requests[-1]["messages"][-1]["content"]

    metric = get_reward("llm_judge")
    scores = metric(["Rome", "Paris"], prompt=["Q1", "Q2"], endpoint=judge_server.url, model="j", rubric="Names Paris.")
    assert scores == [0.0, 1.0]


@pytest.mark.parametrize(
    "reply, score",
    [
        ('{"score": 0.7}', 0.7),
        ('Reasoning... {"score": 0.2} wait, re-reading: {"score": 0.9}', 0.9),
        ('```json\n{"score": "1"}\n```', 1.0),
        ("The response is good.\n0.75", 0.75),
        ("Score = 80%", 0.8),
        ("score: 3/4", 0.75),
        ("I rate it 1", 1.0),
        ('{"score": 7}', None),  # a judge on its own 1-10 scale is not silently rescaled
        ("no number at all", None),
        ("score: 1/0", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == (pytest.approx(score) if score is not None else None)


def test_endpoint_forms():
    expected = "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000") == expected
    assert chat_completions_url("http://h:8000/v1/") == expected
    assert chat_completions_url(expected) == expected
    with pytest.raises(UserError, match="not an http:// or https:// URL"):
        chat_completions_url("localhost:8000")


def test_an_empty_completion_scores_zero_without_asking_a_lenient_judge(judge_server):
    # A judge shown an empty response may grade the rubric itself; this one passes everything.
    judge_server.reply_for = lambda response: '{"score": 1}'
    completions = ["", "   \n", [{"role": "assistant", "content": ""}], "Paris"]
    scores = llm_judge(completions, rubric="Names Paris.", endpoint=judge_server.url, model="j")
    assert scores == [0.0, 0.0, 0.0, 1.0]
    assert len(judge_server.requests) == 1  # only the non-empty response was sent
    assert llm_judge(["", " "], rubric="r", endpoint=judge_server.url, model="j") == [0.0, 0.0]


@pytest.mark.parametrize("rubric", ["", "   ", ["Names Paris.", ""]])
def test_an_empty_rubric_is_a_user_error(judge_server, rubric):
    with pytest.raises(UserError, match="llm_judge: the rubric is empty"):
        llm_judge(["Paris", "Lyon"], rubric=rubric, endpoint=judge_server.url, model="j")
    assert judge_server.requests == []
