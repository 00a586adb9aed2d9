"""The service layer: every verb once, typed, with its policy; the adapters only parse, call and render.

``verb(ctx, Request) -> Result``: ``ctx`` (:class:`Context`) is the workspace seen from the caller's
project, the caller (:class:`Actor`: the local person, or a project token with scopes) and an event
sink; requests and results are pydantic models, so the REST API's OpenAPI schema, the MCP server's
tool schemas and the SDK's return types all come from the same definitions. Errors are typed
(:mod:`weightsmith.errors`): ``UserError`` (bad input), ``NotFound``, ``Unauthorized``, ``Forbidden``,
``Conflict``, ``GateRefused``; each adapter maps them to its own codes.

Modules, one per resource: :mod:`.datasets`, :mod:`.pipelines`, :mod:`.jobs`, :mod:`.models`,
:mod:`.evals` (evals and gates), :mod:`.projects` (tokens and the audit log), :mod:`.traffic` (the
request log of served models, feedback, export to datasets), :mod:`.gc` (``workspace.gc``: the checkpoints
of jobs that ended, freed). Importing this package registers every verb in :data:`VERBS`.
"""

from weightsmith.service.context import SCOPES, Actor, Context
from weightsmith.service.verbs import VERBS, Verb, verb

from weightsmith.service import datasets, evals, gc, jobs, models, pipelines, projects, traffic  # noqa: E402,F401  (registers the verbs)

__all__ = ["SCOPES", "VERBS", "Actor", "Context", "Verb", "verb"]
