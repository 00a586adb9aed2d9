"""CLI verbs of serving: ``serve`` (the OpenAI-compatible server), ``chat`` (a version in the terminal) and
``traffic`` (the request log: list, show, export, feedback, logging).

``serve`` and ``chat`` drive the engine directly (they are the serving process); ``traffic`` calls the
:mod:`weightsmith.service.traffic` verbs and renders their results.
"""

from __future__ import annotations

import argparse
import sys

from weightsmith.cli_render import emit, local_context, open_workspace, table
from weightsmith.errors import UserError
from weightsmith.training.common import EVAL_DTYPES

ENGINES = ("batched", "naive")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def add_parsers(verbs, common: argparse.ArgumentParser, parser_class) -> None:
    """Add ``serve``, ``chat`` and ``traffic`` to the top-level verbs."""
    p = verbs.add_parser("serve", parents=[common], help="serve model versions on an OpenAI-compatible endpoint")
    p.add_argument("refs", nargs="+", metavar="REF",
                   help="versions to load at start: NAME (its champion), NAME@ALIAS or NAME@vN; other versions of the "
                        "project load on their first request")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free one; the line printed says which)")
    p.add_argument("--api-key", help="single-tenant: accept this key (and no project tokens); default "
                                     "WEIGHTSMITH_SERVE_API_KEY, else project tokens with the serve scope")
    p.add_argument("--engine", choices=ENGINES, default="batched",
                   help="batched: continuous batching (default); naive: one request at a time (a baseline)")
    p.add_argument("--max-batch-size", type=_positive, default=32, help="rows decoded together at most (default 32)")
    p.add_argument("--max-queue", type=_positive, default=256,
                   help="requests waiting per version before 503 + Retry-After (default 256)")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="bytes of loaded versions kept before the least recently used is evicted, e.g. 8GiB "
                        "(default: half of this machine's memory)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one) | cpu | cuda")
    p.add_argument("--dtype", choices=EVAL_DTYPES, default="auto",
                   help="precision the weights are loaded and run in; auto: bfloat16 on a CUDA GPU that supports it, "
                        "float32 on the CPU")

    p = verbs.add_parser("chat", parents=[common], help="talk to a model version in the terminal (the serving engine)")
    p.add_argument("ref", metavar="REF", help="NAME (its champion), NAME@ALIAS or NAME@vN")
    p.add_argument("--prompt", help="ask this once, print the answer and exit (default: a conversation, line by line)")
    p.add_argument("--system", help="a system message to start the conversation with")
    p.add_argument("--max-tokens", type=_positive, help="new tokens per answer at most (default: what the context allows)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; higher: more varied")
    p.add_argument("--seed", type=int, help="for sampling at temperature > 0: the same seed, the same answer")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--dtype", choices=EVAL_DTYPES, default="auto", help="auto (bfloat16 on a GPU, float32 on the CPU) "
                   "| float32 | bfloat16 | float16")

    traffic = verbs.add_parser("traffic", help="the request log of served models: list, show, export, feedback, logging"
                               ).add_subparsers(dest="action", required=True, parser_class=parser_class)

    def window(q, *, model_required: bool = False) -> None:
        q.add_argument("--model", required=model_required, help="the model's name, e.g. quill")
        q.add_argument("--version", help="only requests this version answered, NAME@vN")
        q.add_argument("--since", help="from this time on, UTC (2026-11-01 or 2026-11-01T12:00)")
        q.add_argument("--until", help="before this time, UTC")

    p = traffic.add_parser("list", parents=[common], help="the newest served requests")
    window(p)
    p.add_argument("--limit", type=_positive, default=50)
    p = traffic.add_parser("show", parents=[common], help="one request whole: messages, output, token ids, timings, feedback")
    p.add_argument("request_id", metavar="REQUEST_ID", help="the response's id (chatcmpl-... or cmpl-...)")
    p = traffic.add_parser("export", parents=[common], help="a window of requests → a chat or prompt dataset version")
    window(p, model_required=True)
    p.add_argument("--to-dataset", required=True, metavar="NAME", help="the dataset to add the version to")
    p.add_argument("--format", choices=("chat", "prompt"), default="chat",
                   help="chat: messages + the served answer (SFT); prompt: the messages alone (RL, evals)")
    p.add_argument("--endpoint", choices=("chat.completions", "completions"), default="chat.completions",
                   help="whose requests: chat (default) or completions (plain-text prompts; with --format prompt)")
    p.add_argument("--min-score", type=float, help="only requests whose mean feedback score is at least this")
    p.add_argument("--include-length", action="store_true", help="chat: also answers cut off by max_tokens")
    p = traffic.add_parser("feedback", parents=[common], help="record a score (and comment) on a served response")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--score", type=float, required=True, help="your scale, e.g. 1 good / 0 bad")
    p.add_argument("--comment")
    p = traffic.add_parser("logging", parents=[common], help="show or set what the log keeps: full | redacted | off")
    p.add_argument("mode", nargs="?", choices=("full", "redacted", "off"), help="set it (default: show it)")


# -- serve --------------------------------------------------------------------------------------
def engine_loader(kind: str, *, device: str, dtype: str = "auto", max_batch_size: int = 32, max_queue: int = 256):
    """``load(model_dir) -> Engine`` with these options (the pool calls it for each version it loads)."""
    import functools

    from weightsmith.serve.engine import load_engine

    return functools.partial(load_engine, kind=kind, device=device, dtype=dtype, max_batch_size=max_batch_size,
                             max_queue=max_queue)


def cmd_serve(args) -> int:
    import os

    from weightsmith.api.server import bind
    from weightsmith.serve.app import Serving, create_serve_app
    from weightsmith.serve.pool import EnginePool, parse_size, resolve

    ws = open_workspace(args)
    api_key = args.api_key or os.environ.get("WEIGHTSMITH_SERVE_API_KEY") or None
    if api_key is not None and len(api_key) < 8:
        raise UserError("--api-key must be at least 8 characters; use a long random one (e.g. 'openssl rand -hex 24').")
    limit = parse_size(args.memory_limit) if args.memory_limit else None
    resolved = [resolve(ws, ref) for ref in args.refs]  # a bad REF: one sentence, before anything loads
    sock = bind(args.host, args.port)  # a taken port: one sentence, before the minutes of loading
    pool = EnginePool(engine_loader(args.engine, device=args.device, dtype=args.dtype,
                                    max_batch_size=args.max_batch_size, max_queue=args.max_queue), memory_limit=limit)
    serving = Serving(ws, pool, api_key=api_key)
    try:
        for version in resolved:
            pool.lease(version).release()
            print(f"loaded {version.ref} (from {version.requested})", file=sys.stderr, flush=True)
        _run(create_serve_app(serving), sock, what=f"weightsmith serve ({', '.join(v.ref for v in resolved)})",
             serving=serving)
    finally:
        serving.close()
    return 0


def _run(app, sock, *, what: str, serving) -> None:
    """uvicorn on an already bound socket; one ``... listening on http://HOST:PORT`` line first (as ``weightsmith api``).
    A shutdown signal drains first (:class:`~weightsmith.serve.app.DrainingServer`)."""
    import uvicorn

    from weightsmith.serve.app import DrainingServer

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    server = DrainingServer(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=60, access_log=False),
                            serving)
    print(f"{what} listening on http://{shown}:{port}", flush=True)
    server.run(sockets=[sock])


# -- chat ---------------------------------------------------------------------------------------
def cmd_chat(args) -> int:
    from pathlib import Path

    from weightsmith.serve import protocol as p
    from weightsmith.serve.completions import CHAT, chat_prompt_ids, max_new_tokens
    from weightsmith.serve.engine import load_engine
    from weightsmith.serve.pool import resolve
    from weightsmith.serve.types import SamplingParams

    if not 0 <= args.temperature <= 2:
        raise UserError(f"--temperature {args.temperature} is outside 0..2.")
    ws = open_workspace(args)
    version = resolve(ws, args.ref)
    engine = load_engine(Path(version.path), kind="batched", device=args.device, dtype=args.dtype, max_batch_size=1,
                         max_queue=4)
    messages = [p.ChatMessage(role="system", content=args.system)] if args.system else []
    cache: dict = {}  # the chat renderer, made once
    want_json = getattr(args, "json", False) and args.prompt is not None  # a conversation is for people

    def answer(text: str) -> tuple[str, object]:
        messages.append(p.ChatMessage(role="user", content=text))
        ids = chat_prompt_ids(engine, messages, version.ref, cache)
        params = SamplingParams(max_tokens=max_new_tokens(args.max_tokens, len(ids), engine.context_length, CHAT),
                                temperature=args.temperature, seed=args.seed)
        handle = engine.submit(ids, params)
        for event in handle.events():
            if not want_json:
                print(event.text, end="", flush=True)
        result = handle.result()
        messages.append(p.ChatMessage(role="assistant", content=result.choices[0].text))
        return result.choices[0].text, result

    try:
        if args.prompt is not None:
            text, result = answer(args.prompt)
            if want_json:
                import json

                print(json.dumps({"model": version.ref, "text": text, "finish_reason": result.choices[0].finish_reason,
                                  "usage": {"prompt_tokens": result.prompt_tokens,
                                            "completion_tokens": result.completion_tokens}}))
            else:
                print()
            return 0
        print(f"{version.ref} on {engine.device}: type a message; /reset starts over, an empty line or Ctrl-D ends.",
              file=sys.stderr)
        while True:
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return 0
            if not line.strip():
                return 0
            if line.strip() == "/reset":
                del messages[1 if args.system else 0:]
                continue
            try:
                answer(line)
            except UserError as exc:  # e.g. the conversation outgrew the context: say so, keep going
                messages.pop()
                print(f"error: {exc}", file=sys.stderr)
                continue
            print()
    finally:
        engine.close(drain=False)


# -- traffic ------------------------------------------------------------------------------------
def _window(args) -> dict:
    return {"model": args.model, "version": args.version, "since": args.since, "until": args.until}


def cmd_traffic(args) -> int:
    from weightsmith.service import traffic

    ctx = local_context(args)
    if args.action == "list":
        doc = traffic.list_traffic(ctx, {**_window(args), "limit": args.limit})
        emit(args, doc, lambda d: table(
            "served requests (newest first)", ["at (UTC)", "request", "version", "token", "finish", "tokens in/out",
                                               "ttft s", "total s", "feedback", "answer"],
            [[r.at.replace("T", " ").rstrip("Z"), r.request_id, r.version, r.token, r.finish_reason or r.status,
              f"{r.prompt_tokens}/{r.completion_tokens}", _secs(r.time_to_first_token), _secs(r.total_seconds),
              f"{r.mean_score:g} ({r.feedback})" if r.feedback else "", "[redacted]" if r.redacted else _one_line(r.preview)]
             for r in d.requests], no_wrap=("request", "version")))
    elif args.action == "show":
        emit(args, traffic.show_traffic(ctx, {"request_id": args.request_id}), _print_request)
    elif args.action == "export":
        doc = traffic.export_traffic(ctx, {
            **_window(args), "to_dataset": args.to_dataset, "format": args.format, "endpoint": args.endpoint,
            "min_score": args.min_score, "include_length": args.include_length})
        emit(args, doc, _print_export)
    elif args.action == "feedback":
        doc = traffic.add_feedback(ctx, {"request_id": args.request_id, "score": args.score, "comment": args.comment})
        emit(args, doc, lambda d: print(f"feedback {d.id} on {d.request_id}: score {d.score:g}"))
    else:
        doc = (traffic.set_logging(ctx, {"mode": args.mode}) if args.mode else traffic.show_logging(ctx, {}))
        emit(args, doc, lambda d: print(f"request logging for project '{d.project}': {d.mode}"
                                        + (f" (set by {d.updated_by} at {d.updated_at})" if d.updated_by else "")))
    return 0


def _one_line(text: str | None) -> str | None:
    """A served answer as one table cell: newlines and other unprintable characters shown escaped (a model's
    answer of twenty newlines would otherwise take twenty lines of the table)."""
    if text is None:
        return None
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _print_request(d) -> None:
    print(f"{d.request_id}  {d.endpoint}  {d.model} → {d.version}  ({d.status}, token {d.token})\n"
          f"  at {d.at}; tokens {d.prompt_tokens} in, {d.completion_tokens} out; ttft {_secs(d.time_to_first_token)} s, "
          f"total {_secs(d.total_seconds)} s{'; redacted' if d.redacted else ''}")
    print(f"  params: {d.params}")
    for m in d.messages or []:
        print(f"  [{m.get('role')}] {m.get('content', '')}")
    if d.prompt is not None:
        print(f"  prompt: {d.prompt!r}")
    for c in d.choices:
        print(f"  → choice {c.get('index')} ({c.get('finish_reason')}): {c.get('text', '')!r}")
    for f in d.feedback_rows:
        print(f"  feedback {f.score:g} by {f.actor} at {f.created_at}{': ' + f.comment if f.comment else ''}")


def _print_export(d) -> None:
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(d.skipped.items()))
    state = "Added" if d.dataset.created is not False else "Unchanged:"
    print(f"{state} {d.dataset.ref} ({d.dataset.format}, {d.exported} rows from {d.requests} requests"
          f"{'; skipped ' + skipped if skipped else ''})")


COMMANDS = {"serve": cmd_serve, "chat": cmd_chat, "traffic": cmd_traffic}
