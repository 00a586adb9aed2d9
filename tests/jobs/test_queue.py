"""The queue's state machine, DAG ordering, cancel/retry, stale reaping, concurrent claims."""

from __future__ import annotations

import multiprocessing as mp
import time
from datetime import timedelta

import pytest

from helpers import claim_until_empty
from weightsmith.errors import UserError
from weightsmith.jobs import queue
from weightsmith.workspace import Workspace
from weightsmith.workspace.models import Job, utcnow


def _submit(ws, stage, deps=(), key=None):
    job, _ = queue.submit_job(ws, kind="sft", stage=stage, payload={"x": stage}, depends_on=list(deps), idempotency_key=key)
    return job["id"]


def test_claim_runs_through_states(ws):
    jid = _submit(ws, "a")
    job = queue.claim_next(ws, "w1")
    assert job["id"] == jid and job["state"] == "running" and job["attempts"] == 1
    assert queue.claim_next(ws, "w2") is None  # nothing else to take
    token = _token(ws, jid)
    queue.finish_job(ws, jid, token, "succeeded")
    assert queue.show_job(ws, jid)["state"] == "succeeded"


def test_dag_order_and_failure_cancels_dependants(ws):
    a = _submit(ws, "a")
    b = _submit(ws, "b", [a])
    c = _submit(ws, "c", [b])
    d = _submit(ws, "d")  # independent
    first = queue.claim_next(ws, "w")
    assert first["id"] == a
    second = queue.claim_next(ws, "w")
    assert second["id"] == d  # b waits for a
    queue.finish_job(ws, d, _token(ws, d), "succeeded")
    assert queue.claim_next(ws, "w") is None
    queue.finish_job(ws, a, _token(ws, a), "failed", "boom")
    states = {j["stage"]: (j["state"], j["error"]) for j in queue.list_jobs(ws)}
    assert states["b"][0] == "cancelled" and "upstream stage 'a'" in states["b"][1]
    assert states["c"][0] == "cancelled"
    # Retrying the failed job re-queues what it took down, in order.
    queue.retry_job(ws, a)
    states = {j["stage"]: j["state"] for j in queue.list_jobs(ws)}
    assert states == {"a": "queued", "b": "queued", "c": "queued", "d": "succeeded"}
    assert queue.claim_next(ws, "w")["id"] == a
    queue.finish_job(ws, a, _token(ws, a), "succeeded")
    assert queue.claim_next(ws, "w")["id"] == b


def test_idempotency_key_returns_existing_job(ws):
    first, created = queue.submit_job(ws, kind="sft", stage="a", payload={}, idempotency_key="k1")
    again, created_again = queue.submit_job(ws, kind="sft", stage="a", payload={}, idempotency_key="k1")
    assert created and not created_again and again["id"] == first["id"]
    assert len(queue.list_jobs(ws)) == 1


def test_cancel_queued_and_running(ws):
    a = _submit(ws, "a")
    b = _submit(ws, "b", [a])
    queue.claim_next(ws, "w")
    running = queue.cancel_job(ws, a)
    assert running["state"] == "running"  # the worker stops it
    assert queue.heartbeat(ws, a, _token(ws, a)) is True
    queued = queue.cancel_job(ws, b)
    assert queued["state"] == "cancelled"
    with pytest.raises(UserError, match="already cancelled"):
        queue.cancel_job(ws, b)
    with pytest.raises(UserError, match=f"^job {a} is running on worker w, which was asked to cancel it; retry it once"):
        queue.retry_job(ws, a)
    with pytest.raises(UserError, match="no job 99"):
        queue.show_job(ws, 99)


def test_stale_running_job_is_requeued(ws):
    a = _submit(ws, "a")
    queue.claim_next(ws, "dead-worker")
    assert queue.reap_stale(ws, timeout_s=3600) == []
    time.sleep(1.1)
    assert queue.reap_stale(ws, timeout_s=1) == [a]
    job = queue.claim_next(ws, "w2")
    assert job["id"] == a and job["attempts"] == 2 and job["worker"] == "w2"


def _token(ws, job_id):
    with ws.session() as s:
        return s.get(Job, job_id).claim_token


def test_two_concurrent_workers_never_claim_the_same_job(ws, ws_dir):
    ids = {_submit(ws, f"s{i}") for i in range(40)}
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=claim_until_empty, args=(str(ws_dir), f"w{i}", out)) for i in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = results[0] + results[1]
    assert sorted(claimed) == sorted(ids)  # every job exactly once
    assert len(set(results[0]) & set(results[1])) == 0


def _age_heartbeat(ws, job_id: int, seconds: float) -> None:
    """As if the job's worker had last heart-beaten ``seconds`` ago (it died, or is paused)."""
    with ws.session() as s:
        job = s.get(Job, job_id)
        job.heartbeat_at = utcnow() - timedelta(seconds=seconds)


def test_a_stale_job_with_a_cancel_request_is_cancelled_not_requeued(ws):
    a = _submit(ws, "a")
    b = _submit(ws, "b", [a])
    queue.claim_next(ws, "dead-worker")
    token = _token(ws, a)
    assert queue.cancel_job(ws, a)["state"] == "running"  # the worker looked alive: only a request
    _age_heartbeat(ws, a, 120)
    assert queue.reap_stale(ws, timeout_s=60) == [a]
    states = {j["stage"]: (j["state"], j["error"]) for j in queue.list_jobs(ws)}
    assert states["a"] == ("cancelled", "cancelled by user; its worker had stopped heart-beating, so it did not run again")
    assert states["b"][0] == "cancelled"
    assert queue.claim_next(ws, "w2") is None  # nothing to run: no worker starts a stage for it
    assert queue.claim_state(ws, a, token) == "lost"  # the old worker, should it wake, writes nothing


def test_cancel_of_a_stale_running_job_finalises_it_at_once(ws):
    a = _submit(ws, "a")
    queue.claim_next(ws, "dead-worker")
    _age_heartbeat(ws, a, 120)
    job = queue.cancel_job(ws, a)
    assert job["state"] == "cancelled" and job["finished_at"] is not None
    assert job["error"] == "cancelled by user; its worker had stopped heart-beating, so nothing was running"
    assert queue.claim_next(ws, "w2") is None


def test_retry_of_a_running_job_reaps_it_when_its_worker_is_gone_and_says_what_to_do_otherwise(ws, monkeypatch):
    monkeypatch.setenv("WEIGHTSMITH_STALE_AFTER_S", "30")
    a = _submit(ws, "a")
    queue.claim_next(ws, "w1")
    token = _token(ws, a)
    _age_heartbeat(ws, a, 10)
    with pytest.raises(UserError) as refused:
        queue.retry_job(ws, a)
    assert str(refused.value) == (
        f"job {a} is running on worker w1 (last heartbeat 10 s ago); to run it again, stop it with "
        f"'weightsmith jobs cancel {a}' and then retry it, or, if that worker has died, retry it once its heartbeat "
        "is 30 s old (in 20 s)."
    )
    _age_heartbeat(ws, a, 31)
    job = queue.retry_job(ws, a)
    assert job["state"] == "queued" and job["requeued_from"] == "running" and job["error"] is None
    assert queue.claim_state(ws, a, token) == "lost"
    again = queue.claim_next(ws, "w2")
    assert again["id"] == a and again["attempts"] == 2
    queue.finish_job(ws, a, _token(ws, a), "succeeded")
    with pytest.raises(UserError, match=f"^job {a} succeeded; nothing to retry"):
        queue.retry_job(ws, a)


def test_claim_state_is_the_fence(ws):
    a = _submit(ws, "a")
    queue.claim_next(ws, "w1")
    token = _token(ws, a)
    assert queue.claim_state(ws, a, token, beat=True) == "ours"
    queue.cancel_job(ws, a)
    assert queue.claim_state(ws, a, token) == "cancel"
    assert queue.claim_state(ws, a, "someone-else") == "lost"


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_stale_window_is_one_sentence(ws, monkeypatch, raw):
    monkeypatch.setenv("WEIGHTSMITH_STALE_AFTER_S", raw)
    with pytest.raises(UserError, match=f"^WEIGHTSMITH_STALE_AFTER_S must be a positive number of seconds, got '{raw}'.$"):
        queue.stale_after_s(ws)
