"""Tables stay readable at 80 columns: nothing past the edge, no cell wrapped one word a line.

The shapes are the CLI's own: ``models aliases`` (long reasons), ``jobs metrics`` and ``eval history``
(many short columns), ``jobs list`` (a long error), ``models list`` (paths).
"""

from __future__ import annotations

import io

from rich.console import Console

from weightsmith.cli_render import format_table

REASON = ("the gate passed every KPI and the retention suite; promoted by the nightly job after a manual "
          "review of the worst examples by the desk")


def render(*args, width=80, **kwargs) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, highlight=False)
    for item in format_table(*args, width=width, **kwargs):
        console.print(item, markup=False, crop=False, soft_wrap=True) if isinstance(item, str) else console.print(item)
    return out.getvalue()


def cells_of(text: str) -> list[list[str]]:
    """The cell texts of each table line (between the box's vertical bars)."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def assert_readable(text: str, width: int = 80) -> None:
    assert max(len(line) for line in text.splitlines()) <= width, text
    for row in cells_of(text):
        # A wrapped cell shows as several table lines; none may hold a single word of a sentence.
        assert not any(" " not in c and c.isalpha() and c in REASON.split() and len(c) > 3 for c in row), text


def test_a_table_that_fits_is_printed_as_it_is():
    text = render("jobs", ["id", "stage", "state"], [[1, "pretrain", "succeeded"]])
    assert cells_of(text) == [["1", "pretrain", "succeeded"]]


def test_long_reasons_never_wrap_a_word_a_line():
    rows = [["champion", "2026-11-30T12:00:00Z", "promote", "", "dispatch@v5", "gate 3", "alice", REASON],
            ["champion", "2026-12-01T09:30:00Z", "rollback", "dispatch@v5", "dispatch@v4", "", "bob", "bad answers"]]
    text = render("dispatch: aliases", ["alias", "at", "action", "from", "to", "how", "who", "why"], rows)
    assert_readable(text)
    # Every value whole, the reason in full, no value cut.
    flat = " ".join(text.split())
    for value in ("2026-11-30T12:00:00Z", "dispatch@v5", "dispatch@v4", "gate 3", REASON, "bad answers"):
        assert value in flat
    assert "…" not in text


def test_a_long_error_becomes_a_note_under_the_table():
    error = "stage process exited with code 1: stage failed: ValueError: " + "something went wrong " * 6
    text = render("jobs", ["id", "pipeline", "stage", "kind", "state", "attempts", "error"],
                  [[7, 2, "sft_lora", "sft", "failed", 1, error.strip()], [8, 2, "dpo", "dpo", "cancelled", 0, ""]])
    assert_readable(text)
    assert cells_of(text)[0][-1] == "[1]" and cells_of(text)[1][-1] == ""
    assert "[1] stage process exited with code 1" in text and " ".join(text.split()).count("something went wrong") == 6


def test_many_metric_columns_split_into_tables_repeating_run_and_step():
    names = ["loss", "lr", "grad_norm", "tokens_per_sec", "epoch", "train_tokens", "rewards/chrf/mean",
             "rewards/chrf/std", "kl", "entropy", "completion_length"]
    rows = [[1, step, *[f"{0.001234 * (i + 1) * (step + 1):.4g}" for i in range(len(names))]] for step in range(3)]
    text = render("metrics", ["run", "step", *names], rows, repeat=2)
    assert_readable(text)
    assert "metrics (1/" in text and "…" not in text
    headers = " ".join(text.split())
    for name in names:
        assert name in headers.replace(" ", "") or name in headers
    for table_rows in [cells_of(part) for part in text.split("metrics (")[1:]]:
        assert [r[:2] for r in table_rows] == [["1", "0"], ["1", "1"], ["1", "2"]]  # run and step in each


def test_eval_history_with_many_kpis_splits_and_keeps_the_version():
    kpis = ["exact_in_distribution", "exact_held_out_phrasing", "exact_held_out_structure", "parse_rate",
            "manual_perplexity", "latency_p95"]
    rows = [[f"quill@v{v}", "quill-kpis", 10 + v, "champion" if v == 3 else "", *[f"{0.5 + v / 100:.3f}"] * len(kpis)]
            for v in range(1, 4)]
    text = render("quill: KPIs across versions", ["version", "suite", "run", "aliases", *kpis], rows)
    assert_readable(text)
    assert text.count("quill@v3") >= 2 and "…" not in text


def test_paths_are_left_out_at_80_columns_and_shown_when_there_is_room():
    path = ".weightsmith/artifacts/trees/" + "3f9a0c2d1e4b5a69" * 4
    rows = [["dispatch@v1", "pretrain_wide", "pretrain", "", "docs@v1, tasks@v2", path]]
    columns = ["ref", "stage", "kind", "parent", "data", "path"]
    narrow = render("models", columns, rows, optional=("path",))
    assert_readable(narrow)
    assert "pretrain_wide" in narrow and "path left out at 80 columns; --json shows every field" in narrow
    wide = render("models", columns, rows, optional=("path",), width=200)
    assert path in wide and max(len(line) for line in wide.splitlines()) <= 200
    cut = render("models", columns, rows, optional=("path",), width=120)  # room for some of it: cut at the end
    assert ".weightsmith/artifacts/trees/3f9a" in cut and "…" in cut and max(len(ln) for ln in cut.splitlines()) <= 120


def test_user_text_is_not_markup():
    text = render("x", ["a"], [["[bold]not bold[/bold] and [1]"]])
    assert "[bold]not bold[/bold] and [1]" in text
