"""The evaluation verbs of the command line: eval (run, report, history, compare, export), gate,
models promote/rollback/aliases, and the training-curves page (jobs page).

``cli.py`` wires these in with :func:`add_parsers` / :data:`COMMANDS` (top-level verbs),
:func:`add_model_parsers` / :data:`MODEL_COMMANDS` (subverbs of ``models``) and
:func:`add_job_parsers` / :data:`JOB_COMMANDS` (subverbs of ``jobs``). Each handler is a thin
call of a :mod:`weightsmith.service` verb (``evals``, ``gates``, ``models``, ``jobs``), rendered by
:mod:`weightsmith.cli_render` (the page by :mod:`weightsmith.runs_page`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weightsmith.cli_render import dump, emit, local_context, table
from weightsmith.errors import GateRefused, UserError, shorten

EVAL_USAGE = (
    "weightsmith eval SUITE --model NAME@vN [--device D]\n"
    "       weightsmith eval report RUN_ID [--html FILE] [--gate GATE_ID]\n"
    "       weightsmith eval history NAME [--suite SUITE]\n"
    "       weightsmith eval compare A B --suite SUITE [--device D] [--rerun]   (or: eval compare RUN_A RUN_B)\n"
    "       weightsmith eval export RUN_ID [--format jsonl|csv] [--output FILE] [--kpi KPI]"
)


def add_parsers(verbs, common: argparse.ArgumentParser) -> None:
    """Add ``eval`` and ``gate`` to the top-level verbs."""
    p = verbs.add_parser(
        "eval", parents=[common], usage=EVAL_USAGE,
        help="run a KPI suite on a model (eval SUITE --model REF), or: eval report RUN_ID, eval history NAME, "
             "eval compare A B --suite SUITE, eval export RUN_ID",
    )
    p.add_argument("target", nargs="+", metavar="SUITE | report RUN_ID | history NAME | compare A B | export RUN_ID")
    p.add_argument("--model", "-m", help="the model to evaluate: NAME@vN, NAME@ALIAS or a model folder")
    p.add_argument("--device", help="auto | cpu | cuda (default: the suite's device)")
    p.add_argument("--html", metavar="FILE", help="report: also write a self-contained HTML page here")
    p.add_argument("--gate", type=int, metavar="GATE_ID", help="report: the gate to show (default: the newest that judged the run)")
    p.add_argument("--suite", help="compare: the KPI suite YAML; history: only this suite's runs")
    p.add_argument("--rerun", action="store_true", help="compare: evaluate again even if a run of the suite is stored")
    p.add_argument("--format", choices=["jsonl", "csv"], help="export: jsonl or csv (default: from --output's suffix, "
                                                                "else jsonl)")
    p.add_argument("--output", "-o", metavar="FILE", help="export: write here (default: standard output)")
    p.add_argument("--kpi", help="export: only this KPI's examples")

    p = verbs.add_parser("gate", parents=[common], help="may a candidate replace its baseline? (exit 0 pass, 3 refused)")
    p.add_argument("suite", help="the KPI suite YAML")
    p.add_argument("--candidate", required=True, help="NAME@vN")
    p.add_argument("--baseline", help="NAME@ALIAS (e.g. quill@champion) or NAME@vN; omit for floors only")
    p.add_argument("--device", help="auto | cpu | cuda (default: the suite's device)")
    p.add_argument("--rerun", action="store_true", help="evaluate again even if a run of this suite on the version is stored")


def add_model_parsers(models, common: argparse.ArgumentParser) -> None:
    """Add ``promote``, ``rollback`` and ``aliases`` under ``models``."""
    p = models.add_parser("promote", parents=[common], help="move an alias to a version that passed its gate")
    p.add_argument("ref", help="NAME@vN")
    p.add_argument("--alias", required=True, help="e.g. champion")
    p.add_argument("--force", action="store_true", help="promote without a passing gate (recorded with --reason)")
    p.add_argument("--reason", help="why (required with --force)")
    p.add_argument("--actor", help="who (default: WEIGHTSMITH_ACTOR or your login name)")
    p = models.add_parser("rollback", parents=[common], help="move an alias back to its previous holder")
    p.add_argument("name", help="the model's name")
    p.add_argument("--alias", required=True)
    p.add_argument("--reason")
    p.add_argument("--actor")
    p = models.add_parser("aliases", parents=[common], help="a model's aliases and every move of them")
    p.add_argument("name")


# -- handlers -----------------------------------------------------------------------------------


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _kpi_rows(kpis: dict) -> list[list]:
    rows = []
    for name, k in kpis.items():
        low, high = k["ci"]
        met = {True: "yes", False: "NO", None: ""}[k["met_target"]]
        rows.append([name + (" (retention)" if k["retention"] else ""), f"{k['metric']} ({k['aggregate']})",
                     _fmt(k["value"]), f"[{_fmt(low)}, {_fmt(high)}]", k["n"], _fmt(k["target"]), met])
        for label, piece in (k.get("slices") or {}).items():  # a sliced KPI: one row per value of its column
            low, high = piece["ci"]
            rows.append([f"  {k['slice_by']}={label}", "", _fmt(piece["value"]), f"[{_fmt(low)}, {_fmt(high)}]",
                         piece["n"], "", ""])
    return rows


def cmd_eval(args) -> int:
    first, rest = args.target[0], args.target[1:]
    if first == "report" and len(rest) == 1:
        return _eval_report(args, rest[0])
    if first == "history" and len(rest) == 1:
        return _eval_history(args, rest[0])
    if first == "compare":
        if len(rest) != 2:
            raise UserError(f"'eval compare' takes two models (A B) and --suite SUITE, or two run ids; usage: {EVAL_USAGE}")
        return _eval_compare(args, *rest)
    if first == "export" and len(rest) == 1:
        return _eval_export(args, rest[0])
    if rest:
        raise UserError(f"unexpected arguments {shorten(' '.join(rest))}; usage: {EVAL_USAGE}")
    if not args.model:
        raise UserError("'weightsmith eval SUITE' needs --model NAME@vN (the version to evaluate).")
    from weightsmith.service import evals

    ctx = local_context(args)
    html = _html_path(args.html) if args.html else None
    if not getattr(args, "json", False):
        ctx.events = lambda event, _data: print(f"Evaluating {args.model} on {first} ...", file=sys.stderr, flush=True)
    doc = dump(evals.run_eval(ctx, {"suite_path": first, "model": args.model, "device": args.device}))
    if html is not None:
        page = evals.eval_report(ctx, {"run": doc["run"], "html": True}).html
        html.write_text(page, encoding="utf-8")
        doc["html"] = str(html)

    def human(d: dict) -> None:
        table(f"eval run {d['run']}: {d['suite']} on {d['model']} ({d['seconds']:.1f}s)",
              ["KPI", "metric", "value", "95% CI", "n", "target", "met"], _kpi_rows(d["kpis"]))
        print(f"Wrote {d['html']}" if d.get("html") else f"Report: weightsmith eval report {d['run']} --html report.html")

    emit(args, doc, human)
    return 0


def _run_id(text: str) -> int:
    if not text.isdigit():
        raise UserError(f"'{shorten(text)}' is not a run id; 'weightsmith eval history MODEL' lists runs.")
    return int(text)


def _eval_report(args, run_text: str) -> int:
    from weightsmith.service import evals

    html = _html_path(args.html) if args.html else None
    doc = dump(evals.eval_report(local_context(args), {"run": _run_id(run_text), "gate": args.gate, "html": html is not None}))
    if html is not None:
        html.write_text(doc["html"], encoding="utf-8")
        doc["html"] = str(html)

    def human(d: dict) -> None:
        run = d["run"]
        table(f"eval run {run['run']}: {run['suite']} on {run['model']}",
              ["KPI", "metric", "value", "95% CI", "n", "target", "met"], _kpi_rows(run["kpis"]))
        if d["gate"]:
            g = d["gate"]
            print(f"gate {g['gate']}: {'PASSED' if g['passed'] else 'REFUSED'} against {g['baseline'] or 'floors only'}")
        if d.get("html"):
            print(f"Wrote {d['html']}")

    emit(args, doc, human)
    return 0


def _html_path(text: str) -> Path:
    out = Path(text).expanduser().resolve()
    if not out.parent.is_dir():
        raise UserError(f"--html: folder '{out.parent}' does not exist.")
    return out


def _eval_history(args, name: str) -> int:
    from weightsmith.service import evals

    doc = dump(evals.eval_history(local_context(args), {"model": name, "suite": args.suite}))

    def human(d: dict) -> None:
        names = list(dict.fromkeys(k for v in d["versions"] for k in v["kpis"]))
        table(f"{d['model']}: KPIs across versions", ["version", "suite", "run", "aliases", *names],
              [[v["version"], v["suite"], v["run"], ", ".join(v["aliases"]),
                *[_fmt(v["kpis"][n]["value"]) if n in v["kpis"] else "" for n in names]] for v in d["versions"]])

    emit(args, doc, human)
    return 0


def _g3(x) -> str:
    return "–" if x is None else f"{x:.3g}"


def _diff_cell(entry: dict) -> str:
    low, high = entry["ci"]
    return "–" if entry["diff"] is None else f"{entry['diff']:+.3g} [{_g3(low)}, {_g3(high)}]"


def _compare_rows(kpis: dict) -> list[list]:
    """One row per KPI, then one per slice of a sliced KPI (indented): short cells, so 80 columns hold them."""
    ahead = {"a": "A", "b": "B", None: ""}
    rows = []
    for name, k in kpis.items():
        rows.append([name, k["n"], _g3(k["a"]["value"]), _g3(k["b"]["value"]), _diff_cell(k), _g3(k["p_value"]),
                     ahead[k["better"]]])
        for label, piece in (k.get("slices") or {}).items():
            rows.append([f"  {k['slice_by']}={label}", piece["n"], _g3((piece["a"] or {}).get("value")),
                         _g3((piece["b"] or {}).get("value")), _diff_cell(piece), _g3(piece["p_value"]),
                         ahead[piece["better"]]])
    return rows


def _eval_compare(args, a: str, b: str) -> int:
    from weightsmith.service import evals

    ctx = local_context(args)
    if args.suite is None:
        if not (a.isdigit() and b.isdigit()):
            raise UserError("'eval compare A B' needs --suite SUITE (the KPI suite to evaluate both on); "
                            "without it, give two eval run ids.")
        doc = dump(evals.compare_runs(ctx, {"a": int(a), "b": int(b)}))
    else:
        if not getattr(args, "json", False):
            ctx.events = lambda event, _data: print(f"Comparing {b} with {a} on {args.suite} ...", file=sys.stderr, flush=True)
        doc = dump(evals.compare_models(ctx, {"suite_path": args.suite, "a": a, "b": b, "device": args.device,
                                              "rerun": args.rerun}))

    def human(d: dict) -> None:
        def side(m: dict) -> str:
            return f"{m['model']} (run {m['run']}{', stored' if m['reused'] else ''})"

        print(f"A = {side(d['a'])}\nB = {side(d['b'])}")
        table(f"{d['suite']}: B − A on the same examples", ["KPI", "n", "A", "B", "B − A [95% CI]", "p", "ahead"],
              _compare_rows(d["kpis"]), no_wrap=("B − A [95% CI]",))
        exact = [name for name, k in d["kpis"].items() if k["test"] == "mcnemar"]
        print(f"p: McNemar's exact test{' (' + ', '.join(exact) + ')' if exact else ''} for pass/fail scores, a paired "
              f"bootstrap for the others; ahead: the better model where p < {d['alpha']:g}.")

    emit(args, doc, human)
    return 0


def _eval_export(args, run_text: str) -> int:
    from weightsmith.evals.export import render
    from weightsmith.service import evals

    ctx = local_context(args)
    out = Path(args.output).expanduser().resolve() if args.output else None
    if out is not None and not out.parent.is_dir():
        raise UserError(f"--output: folder '{out.parent}' does not exist.")
    fmt = args.format or ("csv" if out is not None and out.suffix.lower() == ".csv" else "jsonl")
    request = {"run": _run_id(run_text), "kpi": args.kpi, "offset": 0, "limit": evals.MAX_EXPORT_ROWS}
    page = dump(evals.export_eval(ctx, request))
    rows = list(page["rows"])
    while not page["done"] and page["rows"]:
        page = dump(evals.export_eval(ctx, {**request, "offset": page["next_offset"]}))
        rows.extend(page["rows"])
    if out is None and getattr(args, "json", False):
        emit(args, {"run": page["run"], "model": page["model"], "suite": page["suite"], "rows": rows}, print)
        return 0
    text = render(rows, fmt, run=page["run"], model=page["model"])
    if out is None:
        sys.stdout.write(text)
        return 0
    out.write_text(text, encoding="utf-8", newline="")
    doc = {"run": page["run"], "rows": len(rows), "format": fmt, "output": str(out)}
    emit(args, doc, lambda d: print(f"Wrote {d['rows']} rows of eval run {d['run']} to {d['output']} ({d['format']})"))
    return 0


def cmd_gate(args) -> int:
    from weightsmith.service import evals

    ctx = local_context(args)
    if not getattr(args, "json", False):
        print(f"Gating {args.candidate} against {args.baseline or 'floors only'} on {args.suite} ...", file=sys.stderr, flush=True)
    doc = dump(evals.run_gate(ctx, {"suite_path": args.suite, "candidate": args.candidate, "baseline": args.baseline,
                                     "device": args.device, "rerun": args.rerun}))

    def human(d: dict) -> None:
        table(f"gate {d['gate']}: {d['candidate']} against {d['baseline'] or 'floors only'} ({d['suite']})",
              ["KPI", "rule", "value", "baseline", "threshold", "p", ""],
              [[r["kpi"] + (" (retention)" if r["retention"] else ""), r["rule"], _fmt(r["value"]), _fmt(r["baseline"]),
                _fmt(r["threshold"]), _fmt(r["p_value"]), "✓" if r["passed"] else "✗"] for r in d["rules"]])
        if d["note"]:
            print(d["note"])
        failed = [r for r in d["rules"] if not r["passed"]]
        for r in failed:
            print(f"  ✗ {r['kpi']} {r['rule']}: {r['detail']}")
        if d["passed"]:
            print(f"PASSED: all {len(d['rules'])} rules. Promote with: weightsmith models promote {d['candidate']} --alias "
                  f"{d['alias'] or 'champion'}")
        else:
            print(f"REFUSED: {len(failed)} of {len(d['rules'])} rules failed: "
                  + "; ".join(f"{r['kpi']} {r['rule']}" for r in failed), file=sys.stderr)

    emit(args, doc, human)
    if not doc["passed"]:
        raise GateRefused(f"gate {doc['gate']} refused {doc['candidate']}")
    return 0


def cmd_promote(args) -> int:
    from weightsmith.service import models

    doc = dump(models.promote(local_context(args), {"ref": args.ref, "alias": args.alias, "force": args.force,
                                                    "reason": args.reason}))

    def human(d: dict) -> None:
        if not d["moved"]:
            print(f"{d['model']}@{d['alias']} is already {d['version']}; nothing moved.")
            return
        how = f"FORCED by {d['actor']} ({d['reason']})" if d["forced"] else f"on gate {d['gate']}, by {d['actor']}"
        print(f"{d['model']}@{d['alias']}: {d['previous'] or '(new)'} → {d['version']} {how}")

    emit(args, doc, human)
    return 0


def cmd_rollback(args) -> int:
    from weightsmith.service import models

    doc = dump(models.rollback(local_context(args), {"name": args.name, "alias": args.alias, "reason": args.reason}))
    emit(args, doc, lambda d: print(f"{d['model']}@{d['alias']}: {d['previous']} → {d['version']} (rolled back by {d['actor']})"))
    return 0


def cmd_aliases(args) -> int:
    from weightsmith.service import models

    doc = dump(models.list_aliases(local_context(args), {"name": args.name}))

    def human(d: dict) -> None:
        rows = []
        for a in d["aliases"]:
            for m in a["moves"]:
                how = "forced" if m["forced"] else (f"gate {m['gate']}" if m["gate"] else "")
                rows.append([a["alias"], m["at"], m["action"], m["from"] or "", m["to"], how, m["actor"], m["reason"] or ""])
        table(f"{d['model']}: aliases (now: " + ", ".join(f"{a['alias']}={a['version']}" for a in d["aliases"]) + ")",
              ["alias", "at", "action", "from", "to", "how", "who", "why"], rows)

    emit(args, doc, human)
    return 0


def add_job_parsers(jobs, common: argparse.ArgumentParser) -> None:
    """Add ``page`` under ``jobs``."""
    p = jobs.add_parser("page", parents=[common],
                        help="an HTML page of jobs' loss, lr, grad-norm and reward curves, overlaid (offline, one file)")
    p.add_argument("ids", nargs="+", type=int, metavar="JOB", help="the jobs to draw (jobs list shows their ids)")
    p.add_argument("--output", "-o", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="also plot this metric (repeatable), e.g. tokens_per_sec")


def cmd_jobs_page(args) -> int:
    from weightsmith.runs_page import render_page
    from weightsmith.service import jobs

    ctx = local_context(args)
    out = Path(args.output).expanduser().resolve()
    if not out.parent.is_dir():
        raise UserError(f"--output: folder '{out.parent}' does not exist.")
    ids = list(dict.fromkeys(args.ids))
    shown = [dump(jobs.show_job(ctx, {"id": job_id})) for job_id in ids]
    points = {job_id: dump(jobs.read_metrics(ctx, {"id": job_id}))["points"] for job_id in ids}
    out.write_text(render_page(shown, points, extra=args.metric), encoding="utf-8")
    logged = sorted({p["name"] for rows in points.values() for p in rows})
    doc = {"output": str(out), "jobs": ids, "points": sum(len(rows) for rows in points.values()), "metrics": logged}
    emit(args, doc, lambda d: print(f"Wrote {d['output']}: jobs {', '.join(map(str, d['jobs']))}, {d['points']} metric points"))
    return 0


COMMANDS = {"eval": cmd_eval, "gate": cmd_gate}
MODEL_COMMANDS = {"promote": cmd_promote, "rollback": cmd_rollback, "aliases": cmd_aliases}
JOB_COMMANDS = {"page": cmd_jobs_page}
