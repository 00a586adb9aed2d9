"""The REST API against a real uvicorn server: tenancy, scopes, uploads, idempotency, remote paths."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from helpers import query_db
from service_helpers import docs_jsonl, tiny_spec

CHAT_OK = '{"messages": [{"role": "user", "content": "Gate code?"}, {"role": "assistant", "content": "4471."}]}\n'


def upload(client, name: str, body: str, fmt: str = "chat"):
    return client.post("/v1/datasets", params={"name": name, "format": fmt}, content=body.encode(),
                       headers={"Content-Type": "application/x-ndjson"})


def test_every_route_needs_a_valid_token(api):
    anonymous = api.client(None)
    for method, path in [("GET", "/v1/datasets"), ("GET", "/v1/jobs"), ("GET", "/v1/models"), ("POST", "/v1/pipelines")]:
        r = anonymous.request(method, path)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    forged = api.client(None)
    forged.headers["Authorization"] = "Bearer wsk_not-a-real-token"
    assert forged.get("/v1/datasets").status_code == 401
    assert anonymous.get("/health").json() == {"status": "ok"}

    admin = api.client("admin")
    reader_id = next(t["id"] for t in admin.get("/v1/tokens").json()["tokens"] if t["name"] == "reader")
    assert api.client("reader").get("/v1/datasets").status_code == 200
    assert admin.post(f"/v1/tokens/{reader_id}/revoke").json()["revoked_at"]
    r = api.client("reader").get("/v1/datasets")
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_tokens_are_stored_hashed(api):
    rows = query_db(api.ws_dir / ".weightsmith" / "weightsmith.db", "SELECT token_hash, prefix FROM api_tokens")
    assert len(rows) == 4
    stored = {value for row in rows for value in row}
    for secret in api.tokens.values():
        assert secret not in stored
        assert not any(secret in value for value in stored if len(value) > 12)


def test_a_scope_the_token_lacks_is_403_and_audited(api):
    r = upload(api.client("reader"), "docs", CHAT_OK)
    assert r.status_code == 403
    assert "'train' scope" in r.json()["error"]["message"]
    entries = api.client("admin").get("/v1/audit").json()["entries"]
    assert [(e["actor"], e["verb"], e["outcome"], e["adapter"]) for e in entries[:1]] == [
        ("reader", "datasets.add", "forbidden", "api")]


def test_another_projects_resources_are_404(api):
    trainer, rival = api.client("trainer"), api.client("rival")
    assert upload(trainer, "secrets", CHAT_OK).status_code == 201
    assert upload(trainer, "docs", docs_jsonl(), fmt="text").status_code == 201
    submitted = trainer.post("/v1/pipelines", json={"spec": tiny_spec()})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["jobs"][0]["id"]
    pipeline_id = submitted.json()["pipeline"]

    assert rival.get("/v1/datasets").json() == {"versions": []}
    assert rival.get("/v1/jobs").json() == {"jobs": []}
    for method, path in [("GET", "/v1/datasets/secrets"), ("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/logs"),
                         ("GET", f"/v1/jobs/{job_id}/metrics"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                         ("GET", f"/v1/pipelines/{pipeline_id}"), ("POST", f"/v1/pipelines/{pipeline_id}/cancel")]:
        r = rival.request(method, path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "secrets" not in r.text or "no dataset named 'secrets'" in r.text
    # The rival's pipeline cannot read the other project's dataset either.
    r = rival.post("/v1/pipelines", json={"spec": tiny_spec()})
    assert r.status_code == 404 and "no dataset named 'docs'" in r.json()["error"]["message"]
    assert trainer.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"  # untouched by the rival's cancel


def test_upload_reports_every_bad_line_and_creates_nothing(api):
    trainer = api.client("trainer")
    body = CHAT_OK + '{"messages": []}\n' + "not json\n" + CHAT_OK.replace('"assistant"', '"robot"')
    r = upload(trainer, "chats", body)
    assert r.status_code == 422
    details = r.json()["error"]["details"]
    assert [d.split(":")[1] for d in details] == ["2", "3", "4"], details
    assert all(d.startswith("upload.jsonl:") for d in details)
    assert trainer.get("/v1/datasets").json() == {"versions": []}
    # multipart with a file name: the same validation, named by the file
    r = trainer.post("/v1/datasets", data={"name": "chats", "format": "chat"},
                     files={"file": ("mine.jsonl", body.encode(), "application/octet-stream")})
    assert r.status_code == 422 and r.json()["error"]["details"][0].startswith("mine.jsonl:2:")
    r = trainer.post("/v1/datasets", data={"name": "chats", "format": "chat"},
                     files={"file": ("mine.jsonl", CHAT_OK.encode(), "application/octet-stream")})
    assert r.status_code == 201 and r.json()["ref"] == "chats@v1" and "path" not in r.json()
    assert r.json()["provenance"] == {"source": "upload:mine.jsonl", "files": ["mine.jsonl"]}
    again = upload(trainer, "chats", CHAT_OK)
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["ref"] == "chats@v1"
    bad_json = trainer.post("/v1/datasets", content=b"{nope", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422 and "not JSON" in bad_json.json()["error"]["message"]


def test_remote_clients_never_name_server_paths(api):
    trainer = api.client("trainer")
    r = trainer.post("/v1/datasets", json={"name": "pw", "format": "text", "path": "/etc/passwd"})
    assert r.status_code == 422 and "cannot name a path on the server" in r.json()["error"]["message"]
    spec = tiny_spec()
    spec["datasets"] = {"docs": {"path": "/etc/passwd", "format": "text"}}
    r = trainer.post("/v1/pipelines", json={"spec": spec})
    assert r.status_code == 422 and "datasets.docs" in r.json()["error"]["message"]
    assert upload(trainer, "chat", CHAT_OK).status_code == 201
    for model in ("/etc", "../../../../etc", "~/models/x"):
        spec = {"name": "s", "model": "s", "stages": {"sft": {"kind": "sft", "model": model, "data": "chat"}}}
        r = trainer.post("/v1/pipelines", json={"spec": spec})
        assert r.status_code == 422, (model, r.text)
        assert "cannot name a path on the server" in r.json()["error"]["message"], r.text
    assert query_db(api.ws_dir / ".weightsmith" / "weightsmith.db", "SELECT count(*) FROM jobs") == [(0,)]


def test_idempotency_replay_mismatch_and_in_flight(api):
    trainer = api.client("trainer")
    assert upload(trainer, "docs", docs_jsonl(), fmt="text").status_code == 201
    db = api.ws_dir / ".weightsmith" / "weightsmith.db"
    headers = {"Idempotency-Key": "nightly-42"}
    first = trainer.post("/v1/pipelines", json={"spec": tiny_spec()}, headers=headers)
    assert first.status_code == 202 and first.json()["replayed"] is False
    again = trainer.post("/v1/pipelines", json={"yaml": json.dumps(tiny_spec())}, headers=headers)  # same pipeline, sent as YAML
    assert again.status_code == 202 and again.json()["replayed"] is True
    assert again.json()["pipeline"] == first.json()["pipeline"]
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in first.json()["jobs"]]
    assert query_db(db, "SELECT count(*) FROM pipelines") == [(1,)]

    bigger = tiny_spec(max_steps=7)
    r = trainer.post("/v1/pipelines", json={"spec": bigger}, headers=headers)
    assert r.status_code == 422 and "already used for a different" in r.json()["error"]["message"]
    assert query_db(db, "SELECT count(*) FROM pipelines") == [(1,)]

    # The first request with a key still running: 409 for the second.
    job = first.json()["jobs"][0]["id"]
    from weightsmith.service.jobs import JobRef
    from weightsmith.service.verbs import request_digest

    project = query_db(db, "SELECT id FROM projects WHERE name = 'acme'")[0][0]
    import sqlite3

    from weightsmith.workspace.models import utcnow

    con = sqlite3.connect(db)
    for key, began in (("k-busy", utcnow()), ("k-abandoned", utcnow() - timedelta(hours=1))):
        con.execute("INSERT INTO idempotency_keys (project_id, verb, key, request_digest, state, response, created_at) "
                    "VALUES (?, 'jobs.cancel', ?, ?, 'in_flight', '{}', ?)",
                    (project, key, request_digest(JobRef(id=job)), began.isoformat(sep=" ")))
    con.commit()
    con.close()
    r = trainer.post(f"/v1/jobs/{job}/cancel", headers={"Idempotency-Key": "k-busy"})
    assert r.status_code == 409 and "still in progress" in r.json()["error"]["message"]
    assert trainer.get(f"/v1/jobs/{job}").json()["state"] == "queued"
    # A key whose first request died an hour ago (its process with it) is taken over by the next request.
    r = trainer.post(f"/v1/jobs/{job}/cancel", headers={"Idempotency-Key": "k-abandoned"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_concurrent_requests_with_one_key_get_one_pipeline(api):
    trainer = api.client("trainer")
    assert upload(trainer, "docs", docs_jsonl(), fmt="text").status_code == 201
    barrier = threading.Barrier(4)
    answers = []

    def send():
        with api.client("trainer") as client:
            barrier.wait()
            answers.append(client.post("/v1/pipelines", json={"spec": tiny_spec()}, headers={"Idempotency-Key": "once"}))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in answers} <= {202, 409}, [r.text for r in answers]
    assert {r.json()["pipeline"] for r in answers if r.status_code == 202} == {1}
    assert query_db(api.ws_dir / ".weightsmith" / "weightsmith.db", "SELECT count(*) FROM pipelines") == [(1,)]
