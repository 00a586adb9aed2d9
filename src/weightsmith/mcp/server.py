"""The MCP server: one tool per service verb, for agents (the official ``mcp`` 2.x SDK, ``MCPServer``).

``weightsmith mcp`` serves over stdio (the agent's MCP client starts it; the project token comes from
``WEIGHTSMITH_TOKEN`` or ``--token``); ``weightsmith mcp --http --port 8200`` serves streamable HTTP,
where every request carries ``Authorization: Bearer TOKEN`` and the Host/Origin headers are checked
against DNS rebinding. Each tool's input schema is its verb's request model and its description the
verb's docstring, so an agent that knows nothing else can read what to do. Errors come back as tool
errors whose text starts with their kind (``not_found:``, ``forbidden:``, ``bad_request:`` ...).
"""

from __future__ import annotations

import contextvars
import inspect
from typing import Annotated, Any

import anyio
from pydantic import Field

from weightsmith.errors import UserError
from weightsmith.service import VERBS, Actor, Context, Verb
from weightsmith.service.context import model_dirs_from_env
from weightsmith.service.projects import authenticate
from weightsmith.service.verbs import error_kind
from weightsmith.workspace import Workspace

INSTRUCTIONS = """\
weightsmith trains and evaluates your organization's own language models. You act inside one project,
with the scopes of your token (read, train, promote, admin).

How work flows:
1. Add data with datasets_add (content = the JSONL text; format chat | preference | prompt | text).
   Every bad line is reported by number and nothing is created.
2. Submit a pipeline with pipelines_submit (spec = {name, model, defaults, stages}; stages name datasets
   by NAME or NAME@vN and models by stage name or NAME@vN / NAME@ALIAS). It returns at once with job ids:
   training is asynchronous and runs in a worker.
3. Poll jobs_show (or pipelines_show) every few seconds until state is succeeded, failed or cancelled.
   Read progress with jobs_logs and jobs_metrics, passing back next_offset to read only what is new
   (jobs_metrics gives loss, lr and GRPO rewards per step). A failed job's error is one sentence.
4. Evaluate with evals_start (suite = the KPI suite as a mapping whose KPIs read datasets: 'data: NAME@vN')
   and judge with gates_start against the alias holder (baseline = NAME@champion); both return a job to
   poll with jobs_show, whose last run's result names the eval run (evals_show) or the gate (gates_show).
   Move the alias with models_promote when the gate passed. Compare two stored runs of one suite with
   evals_compare_runs (paired differences B - A, intervals, p-values); read every example of a run with
   evals_export, passing back next_offset until done.
5. Served traffic: traffic_list and traffic_show read what served models answered; traffic_feedback
   scores a response; traffic_export turns a window of one model's requests into a dataset version
   (chat for SFT, prompt for RL and evals) to train or evaluate on.
An admin frees ended jobs' checkpoints with workspace_gc (dry_run = true reports only).
Another project's things do not exist for you. You cannot name files on the server.
"""

_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("weightsmith_mcp_actor", default=None)


def tool_name(verb: Verb) -> str:
    return verb.name.replace(".", "_")


def tool_description(verb: Verb) -> str:
    """The verb's docstring, naming other verbs by their tool names (``jobs.show`` → ``jobs_show``)."""
    text = verb.doc
    for name in VERBS:
        text = text.replace(f"``{name}``", f"``{name.replace('.', '_')}``")
    return text


def _parameters(verb: Verb) -> list[inspect.Parameter]:
    params = []
    for name, field in verb.request.model_fields.items():
        annotation = Annotated[field.annotation, Field(description=field.description)] if field.description else field.annotation
        default = inspect.Parameter.empty if field.is_required() else field.get_default(call_default_factory=True)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def make_tool(verb: Verb, context_for):
    """An async function with the verb's request fields as keyword parameters, calling the verb in a thread."""

    async def tool(**arguments: Any):
        from mcp.server.mcpserver.exceptions import ToolError

        ctx = context_for()
        try:
            return await anyio.to_thread.run_sync(lambda: verb.call(ctx, arguments))
        except UserError as exc:
            details = list(getattr(exc, "errors", []) or [])
            text = f"{error_kind(exc)}: {exc}" + "".join(f"\n{d}" for d in details[:50])
            raise ToolError(text) from None

    tool.__name__ = tool_name(verb)
    tool.__doc__ = tool_description(verb)
    tool.__signature__ = inspect.Signature(_parameters(verb), return_annotation=verb.result)
    return tool


def build_server(workspace: Workspace, *, actor: Actor | None = None, model_dirs=None):
    """The MCPServer over ``workspace``.

    Args:
        actor: the caller for stdio (one token for the whole session); None over HTTP, where each
            request's bearer token decides.
        model_dirs: folders the caller may name as models (default: WEIGHTSMITH_MODEL_DIRS).
    """
    from mcp.server.mcpserver import MCPServer

    from weightsmith import __version__

    dirs = tuple(model_dirs) if model_dirs is not None else model_dirs_from_env()

    def context_for() -> Context:
        who = actor or _ACTOR.get()
        if who is None:  # the HTTP middleware lets no request through without one; stdio always has one
            raise UserError("no project token for this MCP session.")
        return Context.for_actor(workspace, who, adapter="mcp", model_dirs=dirs)

    server = MCPServer(name="weightsmith", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    for verb in VERBS.values():
        if verb.local_only:  # an agent gets the job-starting twin (evals_start, gates_start): nothing blocks
            continue
        server.add_tool(make_tool(verb, context_for), name=tool_name(verb), description=tool_description(verb))
    return server


class BearerAuth:
    """ASGI middleware: every request needs a valid project token; its actor is what the tools act as."""

    def __init__(self, app, workspace: Workspace):
        self.app = app
        self.workspace = workspace

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        try:
            actor = await anyio.to_thread.run_sync(
                authenticate, self.workspace, token.strip() if scheme.lower() == "bearer" else None)
        except UserError as exc:
            from starlette.responses import JSONResponse

            response = JSONResponse({"error": {"type": "unauthorized", "message": str(exc)}}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        reset = _ACTOR.set(actor)
        try:
            await self.app(scope, receive, send)
        finally:
            _ACTOR.reset(reset)


def http_app(workspace: Workspace, *, host: str, model_dirs=None):
    """The streamable-HTTP app at ``/mcp`` behind bearer auth, with DNS-rebinding checks for ``host``."""
    from mcp.server.transport_security import TransportSecuritySettings

    server = build_server(workspace, model_dirs=model_dirs)
    security = None
    if host not in ("127.0.0.1", "localhost", "::1"):  # the SDK protects loopback by itself
        security = TransportSecuritySettings(allowed_hosts=[f"{host}:*"], allowed_origins=[f"http://{host}:*"])
    app = server.streamable_http_app(host=host, transport_security=security)
    return BearerAuth(app, workspace)
