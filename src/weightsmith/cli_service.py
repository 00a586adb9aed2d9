"""CLI verbs of the control plane: ``api`` (the REST server), ``mcp`` (the MCP server), ``tokens``, ``audit``,
``pipelines``, ``gc``.

Each handler parses its arguments, calls one :mod:`weightsmith.service` verb and renders the result.
"""

from __future__ import annotations

import argparse

from weightsmith.cli_render import emit, local_context, open_workspace, table


def add_parsers(verbs, common: argparse.ArgumentParser, parser_class) -> None:
    """Add ``api``, ``tokens``, ``audit`` and ``pipelines`` to the top-level verbs."""
    p = verbs.add_parser("api", parents=[common], help="serve the REST API (FastAPI + uvicorn) for this workspace")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8100, help="port (0: any free one; the line printed says which)")
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="a folder remote clients may name as a model (repeatable; default: WEIGHTSMITH_MODEL_DIRS)")

    p = verbs.add_parser("mcp", parents=[common], help="serve the MCP server for agents (stdio, or --http)")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="with --http: address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8200, help="with --http: port (0: any free one)")
    p.add_argument("--token", help="stdio: the project token to act with (default: WEIGHTSMITH_TOKEN)")
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="a folder the agent may name as a model (repeatable; default: WEIGHTSMITH_MODEL_DIRS)")

    tokens = verbs.add_parser("tokens", help="project tokens for the REST API and MCP: create, list, revoke").add_subparsers(
        dest="action", required=True, parser_class=parser_class)
    p = tokens.add_parser("create", parents=[common], help="create a token (printed once; stored hashed)")
    p.add_argument("--name", required=True, help="what the token is for, e.g. ci or planner-agent")
    p.add_argument("--scope", required=True, help="comma-separated: read,train,promote,serve,admin")
    p.add_argument("--token-project", "--for-project", dest="token_project", metavar="PROJECT",
                   help="the token's project (default: --project, else the workspace's)")
    tokens.add_parser("list", parents=[common], help="every token (never the secrets)")
    p = tokens.add_parser("revoke", parents=[common], help="revoke a token by id")
    p.add_argument("id", type=int)

    p = verbs.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True, parser_class=parser_class)
    q = p.add_parser("list", parents=[common], help="the newest entries: who did what, to what, and how it ended")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--verb", dest="only_verb", metavar="VERB", help="only this verb, e.g. models.promote")

    pipes = verbs.add_parser("pipelines", help="pipelines: list, show, cancel").add_subparsers(
        dest="action", required=True, parser_class=parser_class)
    p = pipes.add_parser("list", parents=[common])
    p.add_argument("--limit", type=int, default=20)
    for action, what in (("show", "a pipeline's jobs and their states"),
                         ("cancel", "cancel every queued or running job of a pipeline, independent branches included")):
        p = pipes.add_parser(action, parents=[common], help=what)
        p.add_argument("id", type=int)

    p = verbs.add_parser("gc", parents=[common],
                         help="free the checkpoints of jobs that have ended (registered versions are kept)")
    p.add_argument("--dry-run", action="store_true", help="say what would be freed; delete nothing")


def cmd_api(args) -> int:
    from pathlib import Path

    from weightsmith.api.app import create_app
    from weightsmith.api.server import serve

    ws = open_workspace(args)
    dirs = [Path(d).expanduser().resolve() for d in args.model_dir] or None
    serve(create_app(ws, model_dirs=dirs), host=args.host, port=args.port, what=f"weightsmith API for {ws.root}")
    return 0


def cmd_mcp(args) -> int:
    import os
    from pathlib import Path

    ws = open_workspace(args)
    dirs = [Path(d).expanduser().resolve() for d in args.model_dir] or None
    if args.http:
        from weightsmith.api.server import serve
        from weightsmith.mcp.server import http_app

        serve(http_app(ws, host=args.host, model_dirs=dirs), host=args.host, port=args.port,
              what=f"weightsmith MCP server (streamable HTTP at /mcp) for {ws.root}")
        return 0
    from weightsmith.mcp.server import build_server
    from weightsmith.service.projects import authenticate

    actor = authenticate(ws, args.token or os.environ.get("WEIGHTSMITH_TOKEN"))  # refused before stdio starts
    build_server(ws, actor=actor, model_dirs=dirs).run("stdio")
    return 0


def cmd_tokens(args) -> int:
    from weightsmith.service import projects

    ctx = local_context(args)
    if args.action == "create":
        project = args.token_project or ctx.workspace.project_name
        scopes = [s.strip() for s in args.scope.split(",") if s.strip()]
        doc = projects.create_token(ctx, {"project": project, "name": args.name, "scopes": scopes})
        emit(args, doc, lambda d: print(
            f"Token '{d.name}' for project '{d.project}' ({', '.join(d.scopes)}):\n{d.token}\n"
            "Store it now: it is not shown again (only its hash is kept)."))
    elif args.action == "list":
        doc = projects.list_tokens(ctx, {})
        emit(args, doc, lambda d: table("tokens", ["id", "project", "name", "prefix", "scopes", "created", "last used", "revoked"],
             [[t.id, t.project, t.name, t.prefix + "…", ",".join(t.scopes), t.created_at, t.last_used_at, t.revoked_at]
              for t in d.tokens]))
    else:
        doc = projects.revoke_token(ctx, {"id": args.id})
        emit(args, doc, lambda d: print(f"token {d.id} ('{d.name}', project {d.project}) revoked at {d.revoked_at}"))
    return 0


def cmd_audit(args) -> int:
    from weightsmith.service import projects

    doc = projects.list_audit(local_context(args), {"limit": args.limit, "verb": args.only_verb})
    emit(args, doc, lambda d: table("audit log (newest first)", ["at (UTC)", "actor", "via", "verb", "target", "outcome"],
         [[e.at.replace("T", " ").rstrip("Z"), e.actor, e.adapter, e.verb, e.target, e.outcome] for e in d.entries],
         no_wrap=("verb", "outcome")))
    return 0


def _print_pipeline(p) -> None:
    table(f"pipeline {p.id} ({p.name} → {p.model}): {p.state}", ["job", "stage", "kind", "state", "error"],
          [[j.id, j.stage, j.kind, j.state, j.error] for j in p.jobs])  # long errors: notes under the table


def cmd_pipelines(args) -> int:
    from weightsmith.service import pipelines

    ctx = local_context(args)
    if args.action == "list":
        doc = pipelines.list_pipelines(ctx, {"limit": args.limit})
        emit(args, doc, lambda d: table("pipelines (newest first)", ["id", "name", "model", "state", "jobs", "created"],
             [[p.id, p.name, p.model, p.state, len(p.jobs), p.created_at] for p in d.pipelines]))
    elif args.action == "show":
        emit(args, pipelines.show_pipeline(ctx, {"id": args.id}), _print_pipeline)
    else:
        emit(args, pipelines.cancel_pipeline(ctx, {"id": args.id}), _print_pipeline)
    return 0


def _size(n: int) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def cmd_gc(args) -> int:
    from weightsmith.service import gc

    doc = gc.collect_garbage(local_context(args), {"dry_run": args.dry_run})

    def human(d) -> None:
        if d.jobs:
            table("intermediate files of jobs that have ended", ["job", "stage", "state", "checkpoints",
                  "size"], [[j.job, j.stage, j.state, j.checkpoints, _size(j.bytes)] for j in d.jobs])
        for s in d.skipped:
            print(f"job {s.job} ({s.stage}) left alone: {s.reason}")
        verb = "Would free" if d.dry_run else "Freed"
        print(f"{verb} {_size(d.bytes_freed)} from {len(d.jobs)} job(s); {d.kept_versions} registered model "
              f"version(s) kept{' (run without --dry-run to delete)' if d.dry_run and d.jobs else ''}.")

    emit(args, doc, human)
    return 0


COMMANDS = {"api": cmd_api, "mcp": cmd_mcp, "tokens": cmd_tokens, "audit": cmd_audit, "pipelines": cmd_pipelines,
            "gc": cmd_gc}
