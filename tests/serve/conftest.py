"""A workspace with two tiny chat-model versions, project tokens, and one real ``weightsmith serve`` for the session.

``tiny@v1`` says "hello world" to "hi", ``tiny@v2`` "goodbye moon"; ``tiny@champion`` starts on v1.
Project ``acme`` holds them; project ``rival`` holds its own model, which acme's tokens must not see.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving_helpers import V1_CHATS, V2_CHATS, ServeEnv, running, train_tiny_chat_model


@pytest.fixture(scope="session")
def serve_workspace(tmp_path_factory) -> ServeEnv:
    """acme: tiny@v1 (champion), tiny@v2, broken@v1 (not loadable); rival: secret@v1. Tokens: acme (serve), reader (read), admin, rival (serve)."""
    from weightsmith.service import Context, projects
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.aliases import promote
    from weightsmith.workspace.registry import register_version

    base = tmp_path_factory.mktemp("serve")
    v1 = train_tiny_chat_model(base / "v1", V1_CHATS, seed=0)
    v2 = train_tiny_chat_model(base / "v2", V2_CHATS, seed=1)
    ws_dir = base / "ws"
    Workspace.init(ws_dir)
    acme = Workspace.open(ws_dir, project="acme")
    register_version(acme, "tiny", v1, stage="sft")
    register_version(acme, "tiny", v2, stage="sft")
    promote(acme, "tiny@v1", "champion", force=True, reason="the tests' first champion", actor="tests")
    broken = base / "broken"  # registered, but its weights are not loadable
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    register_version(acme, "broken", broken, stage="sft")
    rival = Workspace.open(ws_dir, project="rival")
    register_version(rival, "secret", v1, stage="sft")
    ctx = Context.local(acme)
    tokens = {}
    for name, project, scopes in [("acme", "acme", ["serve"]), ("reader", "acme", ["read"]),
                                  ("admin", "acme", ["admin"]), ("rival", "rival", ["serve"])]:
        tokens[name] = projects.create_token(ctx, {"project": project, "name": name, "scopes": scopes}).token
    return ServeEnv(ws_dir=ws_dir, tokens=tokens)


@pytest.fixture(scope="session")
def served(serve_workspace: ServeEnv) -> Iterator[ServeEnv]:
    """One ``weightsmith serve tiny@champion`` for the session (tokens of project acme; other versions load on demand)."""
    with running(serve_workspace.ws_dir, "tiny@champion") as (proc, url):
        serve_workspace.url, serve_workspace.proc = url, proc
        yield serve_workspace
