"""``weightsmith serve`` answers the official ``openai`` client unchanged: sync, async and streaming.

One real server (a subprocess on 127.0.0.1) serves the session's tiny versions; ``tiny`` means its
champion, and every response names the concrete version that answered.
"""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving_helpers import V1_CHATS, V2_CHATS


def chat(client, content: str, model: str = "tiny@v1", **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          **{"temperature": 0, "max_tokens": 24, **kw})


def test_chat_answers_with_the_champion_and_names_the_version(served):
    response = chat(served.client(), "hi", model="tiny")
    assert response.model == "tiny@v1"
    assert response.object == "chat.completion" and response.id.startswith("chatcmpl-")
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == V1_CHATS["hi"]
    assert choice.finish_reason == "stop"  # the version's own EOS ended it
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # the other spellings of the same version
    assert chat(served.client(), "hi", model="tiny@champion").model == "tiny@v1"
    assert chat(served.client(), "pet", model="tiny@v1").choices[0].message.content == V1_CHATS["pet"]


def test_a_version_not_preloaded_loads_on_its_first_request(served):
    response = chat(served.client(), "hi", model="tiny@v2")
    assert (response.model, response.choices[0].message.content) == ("tiny@v2", V2_CHATS["hi"])


def test_completions_continue_plain_text(served):
    client = served.client()
    response = client.completions.create(model="tiny@v1", prompt="a dog", max_tokens=5, temperature=0)
    assert response.object == "text_completion" and response.model == "tiny@v1"
    assert response.choices[0].text == " ran in the park"[: len(response.choices[0].text)]
    assert response.choices[0].text.startswith(" ran")
    assert response.usage.completion_tokens == 5 and response.choices[0].finish_reason == "length"
    # a list of prompts: one choice each, in order; token ids work as a prompt too
    many = client.completions.create(model="tiny@v1", prompt=["a dog", "a dog"], max_tokens=3, temperature=0)
    assert [c.index for c in many.choices] == [0, 1] and many.choices[0].text == many.choices[1].text
    echoed = client.completions.create(model="tiny@v1", prompt="a dog", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("a dog ran")


def test_streaming_chat_ends_with_usage_when_asked(served):
    chunks = list(served.client().chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "count"}], temperature=0, max_tokens=30, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.model for c in chunks} == {"tiny@v1"} and len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == V1_CHATS["count"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    # without include_usage no chunk carries usage
    plain = list(served.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                         temperature=0, max_tokens=10, stream=True))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_the_stream_is_server_sent_events_ending_in_done(served):
    with served.http().stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True, "temperature": 0}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_a_body_sent_as_curl_sends_it_is_read_as_json(served):
    # curl -H "Authorization: Bearer $TOKEN" localhost:8000/v1/chat/completions -d '{"model": "tiny", ...}'
    response = served.http().post("/v1/chat/completions", content=b'{"model": "tiny", "messages": [{"role": "user", '
                                  b'"content": "hi"}], "temperature": 0}',
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == V1_CHATS["hi"]


def test_streaming_completions(served):
    chunks = list(served.client().completions.create(model="tiny@v1", prompt="a dog", max_tokens=4, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith(" ran") and chunks[-1].usage.completion_tokens == 4


def test_n_gives_independent_choices(served):
    sampled = chat(served.client(), "how are you today?", n=4, temperature=1.5, seed=5)
    assert [c.index for c in sampled.choices] == [0, 1, 2, 3]
    assert sampled.usage.completion_tokens >= 4  # counted over every choice
    assert len({c.message.content for c in sampled.choices}) > 1  # each choice draws its own tokens
    greedy = chat(served.client(), "count", n=2)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content == V1_CHATS["count"]


def test_stop_strings_end_the_answer_before_them(served):
    response = chat(served.client(), "count", stop=[" four", "zzz"])
    assert response.choices[0].message.content == "one two three"
    assert response.choices[0].finish_reason == "stop"
    cut = chat(served.client(), "count", max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2


def test_a_seed_reproduces_a_sampled_answer(served):
    client = served.client()
    kwargs = {"temperature": 1.5, "seed": 1234, "max_tokens": 20}
    first = chat(client, "how are you today?", **kwargs)
    second = chat(client, "how are you today?", **kwargs)
    assert first.choices[0].message.content == second.choices[0].message.content
    others = {chat(client, "how are you today?", **{**kwargs, "seed": s}).choices[0].message.content for s in range(5)}
    assert len(others) > 1  # the seed, not greedy decoding, made them equal


def test_logprobs_come_per_token_with_the_top_alternatives(served):
    response = chat(served.client(), "hi", logprobs=True, top_logprobs=2)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in content)
    # greedy: the chosen token is the most likely one
    assert all(abs(item.logprob - item.top_logprobs[0].logprob) < 1e-4 for item in content)
    assert "".join(item.token for item in content).startswith(V1_CHATS["hi"])
    legacy = served.client().completions.create(model="tiny@v1", prompt="a dog", max_tokens=3, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 3
    assert lp.text_offset[0] == 0 and all(len(top) == 2 for top in lp.top_logprobs)


def test_the_async_client_works_unchanged(served):
    async def run():
        async with served.async_client() as client:
            response = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "pet"}], temperature=0, max_tokens=20)
            stream = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=20, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return response.choices[0].message.content, streamed

    assert asyncio.run(run()) == (V1_CHATS["pet"], V1_CHATS["hi"])


def test_sixteen_concurrent_requests_give_the_one_at_a_time_greedy_answers(served):
    prompts = [*V1_CHATS, "how are you today?", "hi hi", "count to ten", "the cat", "pet pet", "a", "b c", "dog",
               "moon", "hello", "seven eight", "sat on", "park"]
    assert len(prompts) == 16
    client = served.client()
    one_at_a_time = [chat(client, q, max_tokens=16).choices[0].message.content for q in prompts]

    async def together():
        async with served.async_client() as aclient:
            responses = await asyncio.gather(*[
                aclient.chat.completions.create(model="tiny@v1", messages=[{"role": "user", "content": q}],
                                                temperature=0, max_tokens=16) for q in prompts])
        return [r.choices[0].message.content for r in responses]

    assert asyncio.run(together()) == one_at_a_time
    assert one_at_a_time[:3] == list(V1_CHATS.values())


def test_models_lists_the_projects_names_and_what_each_names_now(served):
    cards = {m.id: m for m in served.client().models.list()}
    assert {"tiny", "tiny@champion", "tiny@v1", "tiny@v2"} <= set(cards)
    assert cards["tiny"].root == "tiny@v1" and cards["tiny"].owned_by == "acme"
    assert not any(card.startswith("secret") for card in cards)  # project rival's model
    assert served.client().models.retrieve("tiny@champion").root == "tiny@v1"


def test_promoting_moves_the_next_request_to_the_new_version_without_a_restart(served):
    from weightsmith.service import models

    ctx = served.context()
    client = served.client()
    assert chat(client, "hi", model="tiny").model == "tiny@v1"
    models.promote(ctx, {"ref": "tiny@v2", "alias": "champion", "force": True, "reason": "serving test"})
    try:
        moved = chat(client, "hi", model="tiny")
        assert (moved.model, moved.choices[0].message.content) == ("tiny@v2", V2_CHATS["hi"])
        assert chat(client, "hi", model="tiny@champion").model == "tiny@v2"
        assert chat(client, "hi", model="tiny@v1").model == "tiny@v1"  # a version stays itself
    finally:
        models.rollback(ctx, {"name": "tiny", "alias": "champion", "reason": "serving test done"})
    assert chat(client, "hi", model="tiny").model == "tiny@v1"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_requests_tokens_and_latency_per_project(served):
    http = served.http()
    key = ("weightsmith_serve_requests_total",
           (("endpoint", "chat.completions"), ("status", "200"), ("version", "tiny@v1")))

    def count() -> float:
        return _samples(http.get("/metrics").text).get(key, 0.0)

    before = count()
    response = chat(served.client(), "pet")
    deadline = time.monotonic() + 10
    while count() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    samples = _samples(http.get("/metrics").text)
    assert samples[key] == before + 1
    assert samples[("weightsmith_serve_completion_tokens_total", (("version", "tiny@v1"),))] >= response.usage.completion_tokens
    assert samples[("weightsmith_serve_time_to_first_token_seconds_count", (("version", "tiny@v1"),))] >= 1
    assert ("weightsmith_serve_queue_depth", (("version", "tiny@v1"),)) in samples
    assert samples[("weightsmith_serve_loaded_versions", ())] >= 1
    assert samples[("weightsmith_serve_batch_size_count", (("version", "tiny@v1"),))] >= 1
    # errors are counted by status too
    with pytest.raises(openai.NotFoundError):
        chat(served.client(), "hi", model="nosuch")
    # another project's scrape shows none of acme's versions
    assert "tiny@v1" not in served.http("rival").get("/metrics").text


def test_a_token_sees_only_its_projects_models(served):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(served.client("rival"), "hi", model="tiny@v1")
    assert caught.value.body["code"] == "model_not_found"
    # the remote client is told whose models it looked in and how it lists them, not a CLI it has not got
    message = caught.value.body["message"]
    assert "in project 'rival'" in message and "GET /v1/models" in message and "weightsmith" not in message
    with pytest.raises(openai.NotFoundError):
        chat(served.client(), "hi", model="secret@v1")  # rival's model, named by acme
    assert [m.id for m in served.client("rival").models.list()] == ["secret@v1"]


def test_credentials_without_the_serve_scope_or_unknown_are_refused(served):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat(served.client("reader"), "hi")
    assert "serve" in caught.value.body["message"]
    served.tokens["bogus"] = "wsk_not-a-token"
    with pytest.raises(openai.AuthenticationError):
        chat(served.client("bogus"), "hi")
    assert served.http(None).post("/v1/chat/completions", json={"model": "tiny", "messages": []}).status_code == 401
    assert served.http(None).get("/health").json() == {"status": "ok"}
