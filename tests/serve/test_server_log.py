"""Every served request lands in the request log; feedback attaches to it; a window of it becomes a dataset
version a pipeline trains on; each project chooses full, redacted or no logging."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
import yaml

from helpers import CLI
from serving_helpers import V1_CHATS, cli_main


def _chat(served, content: str, model: str = "tiny@v1", token: str = "acme", **kw):
    return served.client(token).chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **{"temperature": 0, "max_tokens": 24, **kw})


def _logged(served, request_id: str, timeout: float = 10.0):
    """The request's log row, as ``traffic.show`` gives it, once the background writer has written it."""
    from weightsmith.errors import NotFound
    from weightsmith.service import traffic

    deadline = time.monotonic() + timeout
    while True:
        try:
            return traffic.show_traffic(served.context(), {"request_id": request_id})
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _feedback(served, request_id: str, score: float, token: str = "acme", comment: str | None = None):
    return served.http(token).post("/v1/feedback", json={"request_id": request_id, "score": score, "comment": comment})


def _set_logging(served, mode: str) -> None:
    from weightsmith.service import traffic

    traffic.set_logging(served.context(), {"mode": mode})


def test_a_request_is_logged_whole_with_its_version_tokens_and_timings(served):
    response = _chat(served, "count", model="tiny", stop=[" five"])
    row = _logged(served, response.id)
    assert (row.model, row.version, row.endpoint, row.token, row.status) == ("tiny", "tiny@v1", "chat.completions", "acme", "ok")
    assert row.messages == [{"role": "user", "content": "count"}]
    assert row.choices[0]["text"] == "one two three four" and row.finish_reason == "stop"
    assert (row.prompt_tokens, row.completion_tokens) == (response.usage.prompt_tokens, response.usage.completion_tokens)
    assert len(row.prompt_token_ids) == row.prompt_tokens and len(row.choices[0]["token_ids"]) == row.completion_tokens
    assert 0 < row.time_to_first_token <= row.total_seconds
    assert row.params["stop"] == [" five"] and row.params["temperature"] == 0
    # a completions request keeps its prompt, a stream its streamed answer
    legacy = served.client().completions.create(model="tiny@v1", prompt="a dog", max_tokens=3, temperature=0)
    assert _logged(served, legacy.id).prompt == "a dog"
    chunks = list(served.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "pet"}],
                                                          temperature=0, max_tokens=20, stream=True))
    assert _logged(served, chunks[0].id).choices[0]["text"] == V1_CHATS["pet"]


def test_a_client_that_goes_away_mid_stream_stops_the_generation(served):
    body = {"model": "tiny@v1", "prompt": "a", "max_tokens": 250, "n": 4, "temperature": 1.0, "seed": 2, "stream": True}
    with served.http().stream("POST", "/v1/completions", json=body) as response:
        first = next(line for line in response.iter_lines() if line)
    request_id = json.loads(first[len("data: "):])["id"]  # the connection is closed after the first event
    row = _logged(served, request_id)
    assert row.status == "cancelled" and row.completion_tokens < 4 * 250
    assert {c["finish_reason"] for c in row.choices} <= {"length", "stop"}


def test_feedback_attaches_to_the_callers_own_requests(served):
    response = _chat(served, "hi")
    recorded = _feedback(served, response.id, 1, comment="right")
    assert recorded.status_code == 200, recorded.text
    assert recorded.json()["request_id"] == response.id and recorded.json()["object"] == "feedback"
    assert _feedback(served, response.id, 0.5).status_code == 200
    row = _logged(served, response.id)
    assert [(f.score, f.comment) for f in row.feedback_rows] == [(1.0, "right"), (0.5, None)]
    assert row.feedback == 2 and row.mean_score == 0.75
    unknown = _feedback(served, "chatcmpl-nosuch", 1)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "request_id"
    assert _feedback(served, response.id, 1, token="rival").status_code == 404  # another project's request
    assert _feedback(served, response.id, 1, token="reader").status_code == 403
    bad = served.http().post("/v1/feedback", json={"request_id": response.id, "score": "great"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"


def test_a_project_may_log_redacted_or_not_at_all(served):
    try:
        _set_logging(served, "redacted")
        response = _chat(served, "pet", stop=["the mat", "secret"])
        assert _feedback(served, response.id, 1).status_code == 200  # flushes the log first, then finds the row
        row = _logged(served, response.id)
        assert row.redacted and row.messages == [{"role": "user"}] and row.prompt_token_ids is None
        assert row.params["stop"] == ["[redacted]"] * 2  # the caller's stop strings are text too (found by review)
        assert row.choices == [{"index": 0, "finish_reason": "stop", "completion_tokens": row.completion_tokens}]
        assert row.preview is None and row.completion_tokens > 0 and row.version == "tiny@v1"

        _set_logging(served, "off")
        response = _chat(served, "pet")
        missing = _feedback(served, response.id, 1)  # the log is flushed first: nothing was written
        assert missing.status_code == 404 and "logging off" in missing.json()["error"]["message"]
    finally:
        _set_logging(served, "full")
    assert _logged(served, _chat(served, "pet").id).messages[0]["content"] == "pet"


def test_traffic_export_makes_a_dataset_version_with_provenance(served, capsys):
    since = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")
    ids = [_chat(served, q, model="tiny").id for q in V1_CHATS]
    cut = _chat(served, "count", model="tiny", max_tokens=2).id  # cut off: not an SFT answer
    good = _feedback(served, ids[0], 1)
    assert good.status_code == 200  # (also flushes the log)
    for request_id in [*ids, cut]:
        _logged(served, request_id)

    where = ("--workspace", str(served.ws_dir), "--project", "acme")
    code, out, err = cli_main(capsys, "traffic", "list", "--model", "tiny", "--since", since, "--json", *where)
    assert code == 0, err
    listed = json.loads(out)
    assert {r["request_id"] for r in listed["requests"]} == {*ids, cut}

    code, out, err = cli_main(capsys, "traffic", "export", "--model", "tiny", "--since", since,
                              "--to-dataset", "tiny-traffic", "--json", *where)
    assert code == 0, err
    exported = json.loads(out)
    dataset = exported["dataset"]
    assert (dataset["ref"], dataset["format"], dataset["rows"]) == ("tiny-traffic@v1", "chat", 3)
    assert exported["skipped"] == {"cut off (length)": 1} and exported["requests"] == 4
    provenance = dataset["provenance"]
    assert provenance["source"] == "traffic:tiny" and provenance["traffic"]["versions"] == ["tiny@v1"]
    assert provenance["traffic"]["since"].startswith(since[:19]) and provenance["traffic"]["requests"] == 4

    from weightsmith.service import traffic

    window = {"model": "tiny", "since": since}
    only_liked = traffic.export_traffic(served.context(), {**window, "to_dataset": "tiny-liked", "min_score": 1})
    assert only_liked.exported == 1 and only_liked.skipped["below min_score"] == 3
    prompts = traffic.export_traffic(served.context(), {**window, "to_dataset": "tiny-prompts", "format": "prompt"})
    assert prompts.dataset.format == "prompt" and prompts.exported == 4  # prompts need no finished answer
    assert prompts.dataset.duplicates == 1  # "count" was asked twice
    again = traffic.export_traffic(served.context(), {**window, "to_dataset": "tiny-traffic"})
    assert again.dataset.ref == "tiny-traffic@v1" and again.dataset.created is False  # same window, same version


@pytest.mark.slow
def test_an_exported_dataset_trains_in_a_pipeline(served, tmp_path, capsys):
    """The issue's loop in one test: serve, log, export, and an SFT stage trains on what was served (~20-40 s)."""
    from weightsmith.service import traffic

    since = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")
    for request_id in [_chat(served, q, model="tiny").id for q in V1_CHATS]:
        _logged(served, request_id)
    exported = traffic.export_traffic(served.context(), {"model": "tiny", "since": since, "to_dataset": "tiny-sft"})
    assert exported.exported == 3
    pipeline = tmp_path / "from-traffic.yaml"
    pipeline.write_text(yaml.safe_dump({
        "name": "from-traffic", "model": "tiny-tuned", "seed": 0,
        "defaults": {"device": "cpu", "logging_steps": 1},
        "stages": {"sft": {"model": "tiny@v1", "data": exported.dataset.ref, "max_steps": 2, "batch_size": 2,
                           "max_length": 64}},
    }))
    run = CLI(served.ws_dir)("run", str(pipeline), "--project", "acme", env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr
    code, out, err = cli_main(capsys, "models", "show", "tiny-tuned@v1", "--json", "--workspace", str(served.ws_dir),
                              "--project", "acme")
    tuned = json.loads(out)
    assert tuned["data"] == [exported.dataset.ref] and tuned["parent"] == "tiny@v1"


def test_traffic_cli_refuses_bad_input_in_one_sentence(served, capsys):
    where = ("--workspace", str(served.ws_dir), "--project", "acme")
    code, _, err = cli_main(capsys, "traffic", "list", "--since", "last tuesday", *where)
    assert code == 2 and "since" in err and "Traceback" not in err
    code, _, err = cli_main(capsys, "traffic", "export", "--model", "nosuch", "--to-dataset", "x", *where)
    assert code == 2 and "no served request" in err
    code, _, err = cli_main(capsys, "traffic", "show", "chatcmpl-nosuch", *where)
    assert code == 2 and "no logged request" in err
    code, out, _ = cli_main(capsys, "traffic", "logging", *where)
    assert code == 0 and "request logging for project 'acme': full" in out


@pytest.mark.parametrize("mode", ["sideways"])
def test_the_logging_setting_takes_only_known_modes(served, mode):
    from weightsmith.errors import UserError
    from weightsmith.service import traffic

    with pytest.raises(UserError, match="mode"):
        traffic.set_logging(served.context(), {"mode": mode})


def test_the_rest_api_and_mcp_offer_the_traffic_verbs(served):
    import httpx

    from service_helpers import make_token, start_server
    from weightsmith.service import VERBS

    assert {"traffic.list", "traffic.show", "traffic.export", "traffic.feedback"} <= set(VERBS)  # MCP: one tool per verb
    rival_admin = make_token(served.ws_dir, "rival", "rival-admin", ["admin"])
    request_id = _chat(served, "hi").id
    _logged(served, request_id)
    proc, url = start_server(served.ws_dir)
    try:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {served.tokens['admin']}"}, timeout=60)
        listed = admin.get("/v1/traffic", params={"model": "tiny", "limit": 500})
        assert listed.status_code == 200 and request_id in {r["request_id"] for r in listed.json()["requests"]}
        shown = admin.get(f"/v1/traffic/{request_id}")
        assert shown.status_code == 200 and shown.json()["choices"][0]["text"] == V1_CHATS["hi"]
        scored = admin.post(f"/v1/traffic/{request_id}/feedback", json={"score": 1, "comment": "via REST"})
        assert scored.status_code == 201 and scored.json()["comment"] == "via REST"
        assert admin.get("/v1/traffic/logging").json()["mode"] == "full"
        rival = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {rival_admin}"}, timeout=60)
        assert rival.get(f"/v1/traffic/{request_id}").status_code == 404  # another project's request
        reader = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {served.tokens['reader']}"}, timeout=60)
        assert reader.put("/v1/traffic/logging", json={"mode": "off"}).status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)
