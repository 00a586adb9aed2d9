"""The SDK's traffic, eval-comparison/export and workspace-gc methods against a real server (no training).

Served requests are written to the request log the way a server writes them (:class:`RequestLog`), so the
traffic verbs read real rows; the gc test gives a cancelled job a checkpoint folder to free.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from weightsmith import Client
from weightsmith.errors import Forbidden, NotFound, UserError
from weightsmith.service.evals import EvalComparison, ExportedRows
from weightsmith.service.gc import GarbageCollected
from weightsmith.service.traffic import FeedbackInfo, TrafficDetail, TrafficExported, TrafficList
from service_helpers import docs_jsonl, make_token, tiny_spec


def _log_requests(ws_dir, project: str, rows: list[dict]) -> None:
    """Write served requests to ``project``'s request log through the server's own writer."""
    from weightsmith.serve.log import LoggedRequest, RequestLog
    from weightsmith.workspace import Workspace

    ws = Workspace.open(ws_dir, project=project)
    writer = RequestLog(ws, flush_interval=0.05)
    try:
        for row in rows:
            question, answer, finish = row["q"], row["a"], row.get("finish", "stop")
            writer.record(LoggedRequest(
                request_id=row["id"], project_id=ws.project_id, created_at=row["at"], token_name="app",
                endpoint="chat.completions", model="tiny@champion", model_name="tiny", model_version_id=None,
                version=row.get("version", "tiny@v1"), messages=[{"role": "user", "content": question}],
                params={"temperature": 0.0}, choices=[{"index": 0, "text": answer, "finish_reason": finish,
                                                       "token_ids": [5, 6, 7]}],
                finish_reason=finish, prompt_tokens=4, completion_tokens=3, prompt_token_ids=[1, 2, 3, 4],
                time_to_first_token=0.01, total_seconds=0.05))
        assert writer.flush(timeout=30)
    finally:
        writer.close()


def test_sdk_reads_scores_and_exports_served_traffic(api):
    now = datetime.utcnow().replace(microsecond=0)
    _log_requests(api.ws_dir, "acme", [
        {"id": "chatcmpl-old", "q": "hi", "a": "hello world", "at": now - timedelta(hours=2)},
        {"id": "chatcmpl-cut", "q": "count", "a": "one two", "finish": "length", "at": now - timedelta(minutes=30)},
        {"id": "chatcmpl-new", "q": "pet", "a": "the cat sat on the mat", "version": "tiny@v2",
         "at": now - timedelta(minutes=5)},
    ])
    _log_requests(api.ws_dir, "rival", [{"id": "chatcmpl-rival", "q": "hi", "a": "secret", "at": now}])
    app = make_token(api.ws_dir, "acme", "app", ["read", "serve"])
    with Client(api.url, api.tokens["trainer"]) as ws, Client(api.url, app) as served, \
            Client(api.url, api.tokens["rival"]) as rival:
        listed = ws.traffic.list()
        assert isinstance(listed, TrafficList)
        assert [r.request_id for r in listed.requests] == ["chatcmpl-new", "chatcmpl-cut", "chatcmpl-old"]
        assert listed.requests[0].version == "tiny@v2" and listed.requests[0].preview == "the cat sat on the mat"
        assert [r.request_id for r in ws.traffic.list(version="tiny@v1", limit=1).requests] == ["chatcmpl-cut"]
        assert [r.request_id for r in ws.traffic.list(since=now - timedelta(hours=1)).requests] == [
            "chatcmpl-new", "chatcmpl-cut"]
        assert [r.request_id for r in ws.traffic.list(until=(now - timedelta(hours=1)).isoformat()).requests] == [
            "chatcmpl-old"]
        with pytest.raises(UserError, match="must be after since"):
            ws.traffic.list(since=now, until=now - timedelta(hours=1))

        detail = ws.traffic.show("chatcmpl-old")
        assert isinstance(detail, TrafficDetail) and detail.messages == [{"role": "user", "content": "hi"}]
        assert detail.choices[0]["token_ids"] == [5, 6, 7] and detail.feedback_rows == []
        with pytest.raises(NotFound):
            ws.traffic.show("chatcmpl-rival")  # another project's request does not exist here
        with pytest.raises(NotFound):
            rival.traffic.show("chatcmpl-old")

        with pytest.raises(Forbidden, match="'traffic.feedback' needs the 'serve' scope"):
            ws.traffic.feedback("chatcmpl-old", 1.0)
        good = served.traffic.feedback("chatcmpl-old", 1.0, comment="right", idempotency_key="fb-1")
        assert isinstance(good, FeedbackInfo) and good.actor == "app" and good.comment == "right"
        assert served.traffic.feedback("chatcmpl-old", 1.0, comment="right", idempotency_key="fb-1").id == good.id
        served.traffic.feedback("chatcmpl-new", 0.0)
        with pytest.raises(NotFound):
            served.traffic.feedback("chatcmpl-rival", 1.0)
        assert [(f.score, f.comment) for f in ws.traffic.show("chatcmpl-old").feedback_rows] == [(1.0, "right")]
        assert {r.request_id: r.mean_score for r in ws.traffic.list().requests} == {
            "chatcmpl-new": 0.0, "chatcmpl-cut": None, "chatcmpl-old": 1.0}

        exported = ws.traffic.export("tiny", "served", min_score=0.5)
        assert isinstance(exported, TrafficExported)
        assert (exported.requests, exported.exported, exported.skipped) == (3, 1, {"below min_score": 2})
        assert exported.dataset.ref == "served@v1" and exported.dataset.format == "chat" and exported.dataset.rows == 1
        every = ws.traffic.export("tiny", "prompts", format="prompt", idempotency_key="exp-1")
        assert every.dataset.ref == "prompts@v1" and every.dataset.format == "prompt" and every.exported == 3
        assert ws.traffic.export("tiny", "prompts", format="prompt", idempotency_key="exp-1").exported == 3
        with_cut = ws.traffic.export("tiny", "served", include_length=True, version="tiny@v1")
        assert with_cut.dataset.ref == "served@v2" and with_cut.exported == 2 and with_cut.skipped == {}
        with pytest.raises(UserError, match="no served request of model 'quill'"):
            ws.traffic.export("quill", "served")
        with pytest.raises(UserError, match="format chat needs chat requests"):
            ws.traffic.export("tiny", "served", endpoint="completions")
        with Client(api.url, api.tokens["reader"]) as reader, pytest.raises(Forbidden):
            reader.traffic.export("tiny", "served")
        assert rival.traffic.list().requests[0].request_id == "chatcmpl-rival" and len(rival.traffic.list().requests) == 1


def _store_runs(ws_dir, project: str, dataset: str, passes: list[list[bool]]) -> list[int]:
    """Store one eval run per list of pass/fail scores, as ``evals.run`` stores a finished run (its module's
    :func:`store_run`), on a prompt dataset already uploaded: no model is run."""
    from weightsmith.evals.run import KpiOutcome, prepare_suite, store_run, utcnow
    from weightsmith.evals.suite import load_suite
    from weightsmith.workspace import Workspace

    ws = Workspace.open(ws_dir, project=project)
    prepared = prepare_suite(ws, load_suite({"name": "qa", "kpis": {"exact": {"data": dataset, "metric": "exact_match"}}}))
    rows = prepared.data["exact"].rows
    ids = []
    for n, scores in enumerate(passes):
        examples = [{"position": i, "prompt": row["prompt"], "prediction": row["answer"] if ok else "no",
                     "reference": {"answer": row["answer"]}, "score": float(ok), "tokens": 2, "seconds": 0.01,
                     "finish_reason": "stop"} for i, (row, ok) in enumerate(zip(rows, scores, strict=True))]
        outcome = KpiOutcome(kpi=prepared.suite.kpis["exact"], value=sum(scores) / len(scores), ci=(0.0, 1.0),
                             n=len(scores), examples=examples)
        with ws.write() as s:
            ids.append(store_run(s, ws, prepared, [outcome], {"ref": f"tiny@v{n + 1}"}, started_at=utcnow(),
                                 seconds=0.1, device="cpu").id)
    return ids


def test_sdk_compares_and_exports_stored_eval_runs(api):
    sums = [("1+1", "2"), ("2+2", "4"), ("3+3", "6"), ("4+4", "8")]
    qa = "".join(json.dumps({"prompt": q, "answer": a}) + "\n" for q, a in sums)
    with Client(api.url, api.tokens["trainer"]) as ws, Client(api.url, api.tokens["rival"]) as rival:
        assert ws.datasets.add("qa", "prompt", content=qa).ref == "qa@v1"
        a, b = _store_runs(api.ws_dir, "acme", "qa@v1", [[False, False, True, False], [True, True, True, False]])
        compared = ws.evals.compare_runs(a, b)
        assert isinstance(compared, EvalComparison) and (compared.a.run, compared.b.run) == (a, b)
        exact = compared.kpis["exact"]
        assert (exact.a["value"], exact.b["value"], exact.n) == (0.25, 0.75, 4)
        assert (exact.diff, exact.b_better_on, exact.a_better_on, exact.test) == (0.5, 2, 0, "mcnemar")
        assert exact.p_value == pytest.approx(0.5)  # McNemar's exact: 2 discordant pairs, both for B
        assert list(ws.evals.compare_runs(a, b, kpis=["exact"]).kpis) == ["exact"]
        with pytest.raises(UserError, match="KPI 'chrf' is not in both runs; they have: exact"):
            ws.evals.compare_runs(a, b, kpis=["exact", "chrf"])

        page = ws.evals.export(b, limit=3)
        assert isinstance(page, ExportedRows) and (page.total, page.next_offset, page.done) == (4, 3, False)
        assert [(r.position, r.output, r.score) for r in page.rows] == [(0, "2", 1.0), (1, "4", 1.0), (2, "6", 1.0)]
        rest = ws.evals.export(b, kpi="exact", offset=page.next_offset)
        assert [(r.position, r.output, r.score) for r in rest.rows] == [(3, "no", 0.0)] and rest.done
        with pytest.raises(UserError, match="has no KPI 'exactt'"):
            ws.evals.export(b, kpi="exactt")
        with pytest.raises(UserError, match="limit"):
            ws.evals.export(b, limit=0)
        with pytest.raises(NotFound):
            rival.evals.export(b)
        with pytest.raises(NotFound):
            rival.evals.compare_runs(a, b)
        with pytest.raises(NotFound):
            ws.evals.compare_runs(a, 10_000)


def test_sdk_workspace_gc_frees_ended_jobs_for_admins_only(api):
    from weightsmith.workspace import Workspace

    with Client(api.url, api.tokens["admin"]) as admin, Client(api.url, api.tokens["trainer"]) as ws:
        ws.datasets.add("docs", "text", content=docs_jsonl())
        run = ws.pipelines.submit(spec=tiny_spec())
        assert ws.pipelines.cancel(run.pipeline).state == "cancelled"  # ended, never trained: no worker here
        job = run.jobs[1].id
        checkpoint = Workspace.open(api.ws_dir).dir / "jobs" / str(job) / "work" / "checkpoints" / "checkpoint-2"
        checkpoint.mkdir(parents=True)
        (checkpoint / "optimizer.pt").write_bytes(b"\0" * 4096)

        with pytest.raises(Forbidden, match="'workspace.gc' needs the 'admin' scope"):
            ws.workspace.gc(dry_run=True)
        dry = admin.workspace.gc(dry_run=True)
        assert isinstance(dry, GarbageCollected) and dry.dry_run and dry.bytes_freed >= 4096
        assert [(j.job, j.state, j.checkpoints, j.path) for j in dry.jobs] == [(job, "cancelled", 1, None)]
        assert checkpoint.is_dir()  # a dry run deletes nothing
        done = admin.workspace.gc(idempotency_key="gc-1")
        assert not done.dry_run and done.bytes_freed == dry.bytes_freed and not checkpoint.exists()
        assert admin.workspace.gc(idempotency_key="gc-1").bytes_freed == dry.bytes_freed  # replayed, not rerun
        assert admin.workspace.gc().jobs == []
        audit = [(e.adapter, e.actor, e.outcome, e.target) for e in reversed(admin.audit(verb="workspace.gc").entries)]
        assert audit[:3] == [("api", "trainer", "forbidden", None),
                             ("api", "admin", "ok", f"dry run: {dry.bytes_freed} bytes"),
                             ("api", "admin", "ok", f"{dry.bytes_freed} bytes")]
    with Client(api.url, api.tokens["rival"]) as rival:
        assert rival.workspace.gc(dry_run=True).jobs == []  # another project's jobs are not its to collect
