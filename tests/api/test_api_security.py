"""What a remote caller with a project token must not be able to do (found by reviewing the service layer)."""

from __future__ import annotations

import sqlite3

from helpers import query_db
from service_helpers import docs_jsonl, tiny_spec

PROMPTS = '{"prompt": "Gate code?", "answer": "4471"}\n'


def _upload(client, name, body, fmt):
    return client.post("/v1/datasets", params={"name": name, "format": fmt}, content=body.encode(),
                       headers={"Content-Type": "application/x-ndjson"})


def test_a_remote_suite_or_pipeline_cannot_import_code_or_aim_a_judge(api, tmp_path):
    trainer = api.client("trainer")
    assert _upload(trainer, "prompts", PROMPTS, "prompt").status_code == 201
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for metric, options in [("this:nothing", {}), ("logging:basicConfig", {"filename": str(victim), "filemode": "w"}),
                            ("llm_judge", {"endpoint": "http://127.0.0.1:9/", "api_key_env": "HOME", "rubric": "x"})]:
        suite = {"name": "s", "kpis": {"k": {"data": "prompts@v1", "metric": metric, "options": options}}}
        r = trainer.post("/v1/evals", json={"suite": suite, "model": "tiny@v1"})
        assert r.status_code == 403, (metric, r.text)
    assert victim.read_text() == "precious"
    spec = tiny_spec()
    spec["stages"]["grpo"] = {"model": "pretrain", "data": "prompts", "reward": "os:system"}
    r = trainer.post("/v1/pipelines", json={"spec": spec})
    assert r.status_code == 403 and "not code to import" in r.json()["error"]["message"]
    assert query_db(api.ws_dir / ".weightsmith" / "weightsmith.db", "SELECT count(*) FROM jobs") == [(0,)]


def test_a_promote_stage_needs_the_promote_scope(api):
    trainer = api.client("trainer")
    assert _upload(trainer, "docs", docs_jsonl(), "text").status_code == 201
    spec = tiny_spec()
    spec["stages"]["promote"] = {"kind": "promote", "model": "pretrain", "alias": "champion"}
    r = trainer.post("/v1/pipelines", json={"spec": spec})
    assert r.status_code == 403 and "'promote' scope" in r.json()["error"]["message"]


def test_a_bare_model_name_is_a_registry_ref_never_a_folder_in_the_servers_cwd(api):
    trainer = api.client("trainer")
    assert _upload(trainer, "prompts", PROMPTS, "prompt").status_code == 201
    folder = api.ws_dir / "fakemodel"  # the server's working directory
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"x")
    spec = {"name": "s", "model": "s", "stages": {"grpo": {"kind": "grpo", "model": "fakemodel", "data": "prompts",
                                                             "reward": "exact_match"}}}
    r = trainer.post("/v1/pipelines", json={"spec": spec})
    assert r.status_code == 422 and "stages.grpo.model: no model named 'fakemodel'" in r.json()["error"]["message"], r.text


def test_token_secrets_are_never_stored_by_an_idempotency_key(api):
    admin = api.client("admin")
    r = admin.post("/v1/tokens", json={"project": "acme", "name": "ci", "scopes": ["read"]}, headers={"Idempotency-Key": "t1"})
    assert r.status_code == 422 and "cannot be replayed" in r.json()["error"]["message"]
    created = admin.post("/v1/tokens", json={"project": "acme", "name": "ci", "scopes": ["read"]}).json()
    con = sqlite3.connect(api.ws_dir / ".weightsmith" / "weightsmith.db")
    dump = "\n".join(con.iterdump())
    con.close()
    assert created["token"] not in dump


def test_huge_ids_and_bodies_are_4xx_and_failed_calls_are_audited(api):
    trainer = api.client("trainer")
    for method, path in [("GET", "/v1/jobs/99999999999999999999"), ("POST", "/v1/jobs/99999999999999999999/cancel"),
                         ("GET", "/v1/pipelines/99999999999999999999"), ("GET", "/v1/evals/99999999999999999999"),
                         ("GET", "/v1/gates/99999999999999999999")]:
        r = trainer.request(method, path)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    r = api.client("reader").post("/v1/datasets", params={"name": "big", "format": "text"}, content=b"x" * 1000,
                                  headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 403
    r = trainer.post("/v1/models/tiny@v1/promote", json={"alias": "champion"})
    assert r.status_code == 403
    entries = api.client("admin").get("/v1/audit").json()["entries"]
    assert ("trainer", "jobs.cancel", "bad_request") in [(e["actor"], e["verb"], e["outcome"]) for e in entries]
