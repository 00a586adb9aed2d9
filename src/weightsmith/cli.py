"""The command line: each verb is a thin call into the service layer.

``--json`` on any verb prints exactly one JSON document on stdout and nothing else. Exit
codes: 0 ok, 2 bad input from the user, 3 a gate that refused, 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

from weightsmith import cli_evals, cli_export, cli_reference, cli_serve, cli_service
from weightsmith.cli_render import dump, emit, local_context, open_workspace, table, terminal_width
from weightsmith.errors import GateRefused, UserError, describe_unexpected


class _Parser(argparse.ArgumentParser):
    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        """Options anywhere among a verb's positionals: `run p.yaml --detach sft.max_steps=8` is
        `run p.yaml sft.max_steps=8 --detach` (plain argparse stops the overrides at the option).

        A verb's own parser reads its line intermixed; a parser of sub-verbs cannot (argparse refuses
        it there), and needs not: what follows the sub-verb is its parser's to read.
        """
        has_subverbs = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._get_positional_actions())
        if self._intermixing or has_subverbs:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into this method
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> None:  # argparse's own usage errors are bad input too: exit 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return int(text)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    common.add_argument("--workspace", "-w", default=argparse.SUPPRESS, help="workspace folder (default: found from cwd)")
    common.add_argument("--project", default=argparse.SUPPRESS, help="project inside the workspace")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="weightsmith", description=__doc__.splitlines()[0], parents=[common])
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    p = verbs.add_parser("init", parents=[common], help="create a workspace (database + artifact store)")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--database-url", help="SQLAlchemy URL instead of the workspace's SQLite file")

    data = verbs.add_parser("data", help="datasets: add, list, show").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    p = data.add_parser("add", parents=[common], help="validate a file or folder and version it")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--format", "-f", required=True, help="text | chat | preference | prompt")
    p.add_argument("--max-chars", type=_positive_int, metavar="N",
                   help="the most characters one chat/preference/prompt row may hold (default 200,000); "
                        "text documents are never capped")
    data.add_parser("list", parents=[common], help="every dataset version")
    p = data.add_parser("show", parents=[common], help="one dataset version (NAME or NAME@vN)")
    p.add_argument("ref")

    p = verbs.add_parser("run", parents=[common], help="run a pipeline YAML as a DAG of jobs")
    p.add_argument("pipeline")
    p.add_argument("overrides", nargs="*", default=[], help="key=value, e.g. stages.sft.max_steps=50 or sft.lr=1e-4")
    p.add_argument("--detach", action="store_true", help="only queue the jobs; a 'weightsmith worker' runs them")
    p.add_argument("--idempotency-key", help="submitting twice with the same key returns the same jobs")

    jobs = verbs.add_parser("jobs", help="jobs: list, show, logs, metrics, page, cancel, retry").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    p = jobs.add_parser("list", parents=[common])
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--pipeline", type=int)
    for action in ("show", "logs", "metrics", "cancel", "retry"):
        p = jobs.add_parser(action, parents=[common])
        p.add_argument("id", type=int)
    cli_evals.add_job_parsers(jobs, common)

    p = verbs.add_parser("worker", parents=[common], help="run queued jobs")
    p.add_argument("--until-idle", action="store_true", help="exit when nothing is queued or running")
    p.add_argument("--max-jobs", type=int)
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks for work")
    p.add_argument("--all-projects", action="store_true",
                   help="run every project's jobs, not only --project's (one worker for an API or MCP server)")
    p.add_argument("--concurrency", type=_positive_int, default=1, metavar="N",
                   help="run up to N jobs at once; each stage gets cores // N threads unless it sets 'threads'")
    p.add_argument("--progress-every", type=float, default=5.0, metavar="S",
                   help="seconds between a running stage's progress lines (step, loss, lr; default 5)")
    p.add_argument("--logs", action="store_true", help="also copy the stages' logs to stderr as they are written")
    p.add_argument("--quiet", "-q", action="store_true", help="print only when a job starts and ends")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where stage processes run: 'local' (this machine, the default) or 'ray' (a Ray task per "
                        "stage, holding its CPUs/GPUs, on the cluster at --address; the workspace folder must be "
                        "visible at the same path on every Ray node: one machine or a shared filesystem; "
                        "pip install 'weightsmith[ray]')")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="with --executor ray: the Ray head's address as 'ray start --head' prints it "
                        "(or ray://HOST:PORT, or auto)")

    p = verbs.add_parser("quickstart", parents=[common], help="the whole lifecycle on the shipped Quill domain")
    p.add_argument("--dir", default="quickstart-workspace", help="a new folder for the quickstart's workspace")
    p.add_argument("--preset", default="laptop", help="laptop (the real run, ≤15 min on 2 CPU cores) | smoke (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="auto | cpu | cuda (default: the pipeline's)")
    p.add_argument("--ablation", action="store_true", help="also run the same SFT from a random init (+~10 min)")
    p.add_argument("--rl", action="store_true",
                   help="also run verifier-ranked pairs -> DPO -> GRPO after SFT (+~4 min; the gate then judges GRPO's model)")
    p.add_argument("overrides", nargs="*", default=[], help="key=value for the pipeline, e.g. sft.max_steps=800")

    models = verbs.add_parser("models", help="model registry: list, show, promote, rollback, aliases, export").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    models.add_parser("list", parents=[common])
    p = models.add_parser("show", parents=[common])
    p.add_argument("ref", help="NAME, NAME@vN, NAME@ALIAS")
    cli_evals.add_model_parsers(models, common)
    cli_export.add_model_parsers(models, common)
    cli_evals.add_parsers(verbs, common)
    cli_service.add_parsers(verbs, common, _Parser)
    cli_serve.add_parsers(verbs, common, _Parser)
    cli_reference.add_parsers(verbs, common)
    return parser


# -- output ------------------------------------------------------------------------------
_table = table
_emit = emit


# -- verbs -------------------------------------------------------------------------------
_open = open_workspace


def cmd_init(args) -> int:
    from weightsmith.workspace import Workspace

    root = Path(getattr(args, "workspace", None) or args.dir)
    ws = Workspace.init(root, database_url=args.database_url)
    doc = {"workspace": str(ws.root), "database": ws.engine.url.render_as_string(hide_password=True), "project": ws.project_name}
    _emit(args, doc, lambda d: print(f"Initialized weightsmith workspace in {d['workspace']}"))
    return 0


def cmd_data(args) -> int:
    from weightsmith.service import datasets

    ctx = local_context(args)
    if args.action == "add":
        doc = dump(datasets.add_dataset(ctx, {"name": args.name, "format": args.format, "path": args.path,
                                              "max_chars": args.max_chars}))
        _emit(
            args,
            doc,
            lambda d: print(
                f"{'Added' if d['created'] else 'Unchanged:'} {d['ref']}: {d['rows']} rows, "
                f"~{d['tokens_estimate']} tokens (estimated without a tokenizer), "
                f"{d['duplicates']} duplicates, sha256 {d['hash'][:12]}"
            ),
        )
    elif args.action == "list":
        doc = dump(datasets.list_datasets(ctx, {}))["versions"]
        _emit(args, doc, lambda d: _table("datasets", ["ref", "format", "rows", "tokens (est.)", "dups", "hash", "created"],
              [[r["ref"], r["format"], r["rows"], r["tokens_estimate"], r["duplicates"], r["hash"][:12], r["created_at"]] for r in d]))
    else:
        doc = dump(datasets.show_dataset(ctx, {"ref": args.ref}))
        _emit(args, doc, lambda d: _print_dataset(d, ctx.workspace.root))
    return 0


def _print_dataset(d: dict, root: Path) -> None:
    """One dataset version for people: what it holds, where it is kept and where it came from."""
    print(f"{d['ref']}  ({d['format']})")
    print(f"  rows:       {d['rows']:,} ({d['duplicates']:,} duplicates)")
    print(f"  tokens:     ~{d['tokens_estimate']:,} (estimated without a tokenizer)")
    print(f"  sha256:     {d['hash']}")
    print(f"  created:    {d['created_at']}")
    if d.get("path"):
        print(f"  stored at:  {_relative_to(d['path'], root)}")
    for key, value in (d.get("provenance") or {}).items():  # where it came from: source, files, the stage
        if isinstance(value, list):
            shown = [Path(str(v)).name if key == "files" else str(v) for v in value[:5]]
            text = f"{len(value)}: " + ", ".join(shown) + (f" and {len(value) - 5} more" if len(value) > 5 else "")
        else:
            text = json.dumps(value) if isinstance(value, dict) else str(value)
        lines = textwrap.wrap(text, width=max(terminal_width(), 40) - 14, break_on_hyphens=False) or [""]
        print(f"  {key + ':':<11} {lines[0]}")
        for line in lines[1:]:
            print(f"{'':14}{line}")


def _relative_to(path: str, root: Path) -> str:
    """A workspace path as people read it: relative to the workspace folder when inside it."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def cmd_run(args) -> int:
    from weightsmith.service import pipelines

    ctx = local_context(args)
    request = {"path": args.pipeline, "overrides": args.overrides, "idempotency_key": args.idempotency_key}
    submitted = dump(_submit_waiting_for_the_first(ctx, pipelines.submit, request))
    if args.detach:
        _emit(args, submitted, lambda d: print(
            f"{'Already queued as' if d['replayed'] else 'Queued'} pipeline {d['pipeline']} ({len(d['jobs'])} jobs); "
            "run 'weightsmith worker'."))
        return 0
    return _run_inline(args, ctx.workspace, submitted)


def _submit_waiting_for_the_first(ctx, submit, request, wait_s: float = 120.0):
    """A person at the terminal waits while an earlier request with the same idempotency key is still being
    submitted, then gets its answer (the REST API answers 409 instead and lets the client retry)."""
    from weightsmith.errors import Conflict

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return submit(ctx, request)
        except Conflict:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stage_printer(enabled: bool, progress_every_s: float | None = None):
    """Prints a line when each stage starts and ends (for people; silent under --json).

    With ``progress_every_s``, also a line of the stage's latest step, loss and lr, at most that often per
    job (and at its last step): progress for people watching a worker, a few lines a minute, not a flood.
    """
    started: dict[int, float] = {}
    last_said: dict[int, float] = {}

    def on_event(event: str, job: dict) -> None:
        if not enabled:
            return
        if event == "progress":
            row, now = job.get("metrics") or {}, time.monotonic()
            final = row.get("step") is not None and row.get("step") == job.get("max_steps")
            if progress_every_s is not None and (final or now - last_said.get(job["id"], 0.0) >= progress_every_s):
                last_said[job["id"]] = now
                print(f"  {job['stage']} (job {job['id']}): {_progress_text(row, job.get('max_steps'))}", flush=True)
            return
        if event == "started":
            started[job["id"]] = time.monotonic()
            print(f"\n▶ {job['stage']} ({job['kind']}, job {job['id']})", flush=True)
            return
        took = time.monotonic() - started.get(job["id"], time.monotonic())
        result = job.get("result") or {}
        what = result.get("model_version") or (result.get("dataset") or {}).get("ref") or job.get("output") or ""
        mark, detail = ("✓", what) if event == "succeeded" else ("✗", job.get("error"))
        print(f"{mark} {job['stage']} (job {job['id']}) {event} in {took:.1f}s: {detail}", flush=True)
        for warning in result.get("warnings") or []:  # e.g. a tokenizer smaller than its vocab_size
            print(f"  note: {warning}", flush=True)

    return on_event


def _progress_text(row: dict, max_steps: int | None) -> str:
    """``step 20/60  loss 2.31  lr 0.001  4,210 tok/s`` from one metrics row."""
    parts = [f"step {row.get('step')}" + (f"/{max_steps}" if max_steps else "")]
    for name, label in (("loss", "loss"), ("lr", "lr"), ("grad_norm", "grad norm"), ("reward", "reward")):
        if isinstance(row.get(name), (int, float)):
            parts.append(f"{label} {row[name]:.4g}")
    if isinstance(row.get("tokens_per_sec"), (int, float)):
        parts.append(f"{row['tokens_per_sec']:,.0f} tok/s")
    return "  ".join(parts)


def _run_inline(args, ws, submitted: dict) -> int:
    from weightsmith.jobs.pipeline import run_inline

    people = not getattr(args, "json", False)
    doc = run_inline(ws, submitted, echo=sys.stderr if people else None, on_event=_stage_printer(people))
    _emit(args, doc, lambda d: _table(
        f"pipeline {d['pipeline']} ({d['name']})", ["job", "stage", "state", "model", "error"],
        [[j["id"], j["stage"], j["state"], next((v["ref"] for v in d["models"] if v["job"] == j["id"]), ""), j["error"] or ""]
         for j in d["jobs"]]))
    failed = [j for j in doc["jobs"] if j["state"] != "succeeded"]
    if failed and people:
        first = failed[0]
        print(f"error: stage '{first['stage']}' {first['state']}: {first['error']} "
              f"(see 'weightsmith jobs logs {first['id']}').", file=sys.stderr)
    return 0 if not failed else 1


def cmd_jobs(args) -> int:
    from weightsmith.jobs.queue import stale_after_s
    from weightsmith.service import jobs

    if args.action in cli_evals.JOB_COMMANDS:
        return cli_evals.JOB_COMMANDS[args.action](args)
    ctx = local_context(args)
    if args.action == "list":
        doc = dump(jobs.list_jobs(ctx, {"state": args.state, "pipeline": args.pipeline}))["jobs"]
        _emit(args, doc, lambda d: _table("jobs", ["id", "pipeline", "stage", "kind", "state", "attempts", "error"],
              [[j["id"], j["pipeline"], j["stage"], j["kind"], j["state"], j["attempts"], _clip(j["error"], 300)] for j in d]))
    elif args.action == "show":
        doc = dump(jobs.show_job(ctx, {"id": args.id}))
        _emit(args, doc, lambda d: print(json.dumps(d, indent=2, default=str)))
    elif args.action == "metrics":
        doc = dump(jobs.read_metrics(ctx, {"id": args.id}))["points"]
        _emit(args, doc, _print_metrics)
    elif args.action == "logs":
        doc = dump(jobs.read_logs(ctx, {"id": args.id}))
        while doc["text"] and not doc["done"]:  # more than one chunk: read on to the end
            more = dump(jobs.read_logs(ctx, {"id": args.id, "offset": doc["next_offset"]}))
            if not more["text"]:
                break
            doc = {**more, "text": doc["text"] + more["text"], "offset": doc["offset"]}
        _emit(args, doc, lambda d: sys.stdout.write(d["text"]))
    elif args.action == "cancel":
        doc = dump(jobs.cancel_job(ctx, {"id": args.id}))
        window = stale_after_s(ctx.workspace)

        def said(d: dict) -> None:
            print(f"job {d['id']}: {d['error']}" if d["state"] == "cancelled" else
                  f"job {d['id']}: cancel requested; its worker stops the stage within seconds (if that worker is gone, "
                  f"the job is cancelled once its heartbeat is {window:g} s old: by any worker, or by cancelling it "
                  "again)")
            _say_pipeline_goes_on(ctx, d)

        _emit(args, doc, said)
    elif args.action == "retry":
        doc = dump(jobs.retry_job(ctx, {"id": args.id}))
        _emit(args, doc, lambda d: print(
            f"job {d['id']} re-queued" + (": its worker had stopped heart-beating" if d.get("requeued_from") == "running"
                                          else "") + " (its checkpoints are kept; run a worker)"))
    return 0


def _say_pipeline_goes_on(ctx, cancelled: dict) -> None:
    """After ``jobs cancel``: the pipeline's other branches still run; say so (on stderr, a hint), and how to stop
    them all."""
    from weightsmith.service import jobs

    if cancelled.get("pipeline") is None:
        return
    others = [j for j in dump(jobs.list_jobs(ctx, {"pipeline": cancelled["pipeline"]}))["jobs"]
              if j["id"] != cancelled["id"] and j["state"] in ("queued", "running")]
    if others:
        listed = ", ".join(f"{j['id']} {j['stage']} ({j['state']})" for j in others[:5])
        more = f" and {len(others) - 5} more" if len(others) > 5 else ""
        print(f"pipeline {cancelled['pipeline']} goes on: jobs {listed}{more} do not depend on it; "
              f"'weightsmith pipelines cancel {cancelled['pipeline']}' stops them all.", file=sys.stderr)


def _print_metrics(rows: list[dict]) -> None:
    by_step: dict[tuple[int, int], dict[str, float]] = {}
    names: list[str] = []
    for r in rows:
        by_step.setdefault((r["run"], r["step"]), {})[r["name"]] = r["value"]
        if r["name"] not in names:
            names.append(r["name"])
    _table("metrics", ["run", "step", *names],
           [[run, step, *[f"{v[n]:.4g}" if n in v else "" for n in names]] for (run, step), v in by_step.items()],
           repeat=2)  # too many metrics for the width: several tables, each with run and step


def _clip(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_worker(args) -> int:
    import signal

    from weightsmith.jobs.executors import make_executor
    from weightsmith.jobs.worker import Worker

    ws = _open(args)
    executor = make_executor(args.executor, args.address)
    people = not getattr(args, "json", False)
    # For people watching: a line when each job starts and ends, and its step, loss and lr every few seconds
    # (--logs: the stages' whole logs on stderr too, as inline `run` shows them).
    worker = Worker(ws, poll_s=args.poll, all_projects=args.all_projects, concurrency=args.concurrency, executor=executor,
                    echo=sys.stderr if people and args.logs else None,
                    on_event=_stage_printer(people, progress_every_s=None if args.quiet else args.progress_every))
    signal.signal(signal.SIGTERM, worker.stop)
    if people:
        whose = "every project" if args.all_projects else f"project '{ws.project_name}'"
        until = "until nothing is left" if args.until_idle else "until stopped (Ctrl-C)"
        where = f", on the Ray cluster at {args.address}" if args.executor == "ray" else ""
        print(f"worker {worker.name}: running the jobs of {whose}, {args.concurrency} at a time{where}, {until}", flush=True)
    try:
        ran = worker.run(until_idle=args.until_idle, max_jobs=args.max_jobs)
    finally:
        executor.close()
    _emit(args, {"worker": worker.name, "jobs_run": ran}, lambda d: print(f"worker {d['worker']} ran {d['jobs_run']} job(s)"))
    return 0


def cmd_quickstart(args) -> int:
    from weightsmith.quickstart import TABLE_HEADERS, TABLE_KPIS, format_elapsed, run_quickstart

    people = not getattr(args, "json", False)
    doc = run_quickstart(
        Path(args.dir),
        preset=args.preset,
        seed=args.seed,
        device=args.device,
        overrides=args.overrides,
        with_ablation=args.ablation,
        with_rl=args.rl,
        echo=sys.stderr if people else None,
        on_event=_stage_printer(people),
        say=(lambda msg: print(msg, flush=True)) if people else (lambda _msg: None),
    )

    def human(d: dict) -> None:
        def cell(kpi: dict | None) -> str:
            if not kpi or kpi.get("value") is None:
                return "-"
            lo, hi = kpi.get("ci") or (None, None)
            return f"{kpi['value']:.1%} [{lo:.1%}, {hi:.1%}]" if lo is not None else f"{kpi['value']:.1%}"

        def perplexity(kpi: dict | None) -> str:
            return f"{kpi['value']:,.1f}" if kpi and kpi.get("value") is not None else "-"

        headers = [TABLE_HEADERS[k] for k in TABLE_KPIS]
        _table("Quill quickstart (95% confidence intervals)", ["stage", "model", *headers, "manual perplexity"],
               [[st["stage"], st["model"], *[cell(st["kpis"].get(k)) for k in TABLE_KPIS],
                 perplexity(st["kpis"].get("manual_perplexity"))] for st in d["stages"]])
        def delta(entry: dict | None) -> str:
            if not entry:
                return "-"
            lo, hi = entry["ci"]
            sign = "+" if (lo > 0) else ("-" if hi < 0 else "~")
            return f"{entry['diff']:+.1%} [{lo:+.1%}, {hi:+.1%}] {sign}"

        compared = [st for st in d["stages"] if "vs_parent" in st]
        if compared:  # with --rl: DPO against SFT, GRPO against DPO
            _table("Does each stage help? Paired difference vs the stage before (95% CI; + / - when it excludes 0)",
                   ["stage", "vs", *headers],
                   [[st["stage"], st["vs_parent"]["parent"], *[delta(st["vs_parent"].get(k)) for k in TABLE_KPIS]]
                    for st in compared])
        if "ablation" in d:
            ab = d["ablation"]
            _table("Ablation: SFT from the pretrained model vs from a random init, same SFT budget",
                   ["model", *headers],
                   [[f"{ab['model']} (random init)", *[cell(ab["kpis"].get(k)) for k in TABLE_KPIS]],
                    ["pretrained − random", *[delta(ab["pretrained_vs_random"].get(k)) for k in TABLE_KPIS]]])
        verdict = "passed" if d["gate"]["passed"] else "refused"
        print(f"Gate {verdict} for {d['gate']['candidate']}; champion: {d['champion'] or 'unchanged'}")
        print(f"Workspace: {d['workspace']}  (pipeline: {d['pipeline']}, suite: {d['suite']})")
        print(f"Elapsed: {format_elapsed(d['elapsed_s'])}")

    _emit(args, doc, human)
    return 0


def cmd_models(args) -> int:
    from weightsmith.service import models

    if args.action in cli_evals.MODEL_COMMANDS:
        return cli_evals.MODEL_COMMANDS[args.action](args)
    if args.action == "export":
        return cli_export.cmd_export(args)
    ctx = local_context(args)
    if args.action == "list":
        doc = dump(models.list_models(ctx, {}))["versions"]
        root = ctx.workspace.root
        # The pipeline stage's name tells variants of one recipe apart (sft_lora, sft_full); the recipe is its kind.
        _emit(args, doc, lambda d: _table("models", ["ref", "stage", "kind", "parent", "data", "path"],
              [[v["ref"], v.get("pipeline_stage") or v["stage"], v["stage"], v["parent"], ", ".join(v["data"]),
                _relative_to(v["path"], root)] for v in d], optional=("path",)))
    else:
        doc = dump(models.show_model(ctx, {"ref": args.ref}))
        _emit(args, doc, _print_model)
    return 0


def _weighted(data: list[str], weights: dict[str, float] | None) -> str:
    """Dataset versions, each with its weight when they were a data mix: ``qa@v1 (weight 1), docs@v2 (weight 0.3)``."""
    return ", ".join(f"{ref} (weight {weights[ref]:g})" if weights and ref in weights else ref for ref in data)


def _print_model(d: dict) -> None:
    stage = f"{d['pipeline_stage']}, {d['stage']}" if d.get("pipeline_stage") not in (None, d["stage"]) else d["stage"]
    parent = d["parent"] or d.get("source")  # a model folder, or "init: random (size S)"
    print(f"{d['ref']}  ({stage})\n  path:   {d['path']}\n  parent: {parent}\n  run:    {d['run']} (job {d['job']})")
    print(f"  data:   {_weighted(d['data'], d.get('data_weights')) or '-'}\n  lineage:")
    for i, node in enumerate(d["lineage"]):
        data = _weighted(node["data"], node.get("data_weights")) or (node["source"] or "-")
        print(f"    {'  ' * i}{'└─ ' if i else ''}{node['ref']} [{node['stage']}] run {node['run']} on {data}")


COMMANDS = {
    "init": cmd_init,
    "data": cmd_data,
    "run": cmd_run,
    "jobs": cmd_jobs,
    "worker": cmd_worker,
    "models": cmd_models,
    "quickstart": cmd_quickstart,
}
COMMANDS.update(cli_evals.COMMANDS)
COMMANDS.update(cli_service.COMMANDS)
COMMANDS.update(cli_serve.COMMANDS)
COMMANDS.update(cli_reference.COMMANDS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    want_json = getattr(args, "json", False)
    try:
        return COMMANDS[args.verb](args)
    except UserError as exc:
        details = getattr(exc, "errors", [])
        if want_json:
            sys.stdout.write(json.dumps({"error": str(exc), "details": details}) + "\n")
        else:
            from weightsmith.data.formats import summarize_errors

            shown = summarize_errors(details)  # fifty rows with one problem: one line with the count
            for line in shown[:50]:
                print(line, file=sys.stderr)
            if len(shown) > 50:
                print(f"... and {len(shown) - 50} more (use --json for all of them)", file=sys.stderr)
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except GateRefused as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything else: one line, the traceback only when asked for
        if os.environ.get("WEIGHTSMITH_DEBUG"):
            traceback.print_exc()
        message = describe_unexpected(exc)  # never SQL text, never unbounded
        if want_json:
            sys.stdout.write(json.dumps({"error": message}) + "\n")
        else:
            print(f"error: {message} (set WEIGHTSMITH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
