"""A KPI's rows as the metric and the report see them: chat conversations as prompts, and slices.

A chat dataset (``{"messages": [...], "tools"?: [...]}``, the SFT format) evaluates as the model
would meet it in use: the prompt is every message before the last assistant turn — rendered
later with the model's chat template and a generation prompt, as training renders it
(:mod:`weightsmith.data.chat`) — and the reference is that turn's content, the column
``answer`` that ``exact_match``, ``normalized_match``, ``chrf`` ... score against.

A KPI with ``slice_by: COLUMN`` is also reported per value of that column of its rows (a
question type, a customer segment): each slice gets its own value and interval, computed from
the run's stored examples, so slicing never needs a new run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from weightsmith.errors import UserError, shorten

if TYPE_CHECKING:
    from weightsmith.evals.run import KpiOutcome
    from weightsmith.evals.suite import Kpi

ANSWER = "answer"  # the column a chat row's last assistant turn becomes


def chat_as_prompt_rows(rows: list[dict], shown: str, key: str) -> list[dict]:
    """Chat rows as prompt rows: ``{"prompt": [messages before the last assistant turn], "answer": its content}``.

    The row's ``tools`` stay (they are rendered with the prompt), as do the answer turn's
    ``tool_calls`` (a column a metric may read). A message's training ``weight`` is dropped: it
    says what to learn from, not what the model sees.

    Args:
        rows: validated chat rows (:func:`weightsmith.data.formats.validate` with ``"chat"``).
        shown: the dataset, for messages (``qa@v2`` or the file).
        key: the suite and KPI, e.g. ``suite.yaml: kpis.acc``, that each message starts with.

    Raises:
        UserError: a row whose last assistant turn has nothing before it to prompt with.
    """
    out = []
    for number, row in enumerate(rows, start=1):
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        prompt = [{k: v for k, v in m.items() if k != "weight"} for m in messages[:last]]
        if not any(m.get("role") != "system" for m in prompt):
            raise UserError(
                f"{key}: row {number} of {shown} has no user turn before its last assistant turn, so there is "
                "nothing to prompt the model with; start each conversation with the question."
            )
        answer_turn = messages[last]
        converted: dict[str, Any] = {"prompt": prompt, ANSWER: answer_turn.get("content") or ""}
        if answer_turn.get("tool_calls") is not None:
            converted["tool_calls"] = answer_turn["tool_calls"]
        if row.get("tools") is not None:
            converted["tools"] = row["tools"]
        out.append(converted)
    return out


def _sliceable(value: object) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def check_slice_column(kpi: Kpi, rows: list[dict], shown: str, key: str, *, chat: bool = False) -> None:
    """Every row has the KPI's ``slice_by`` column, with a text, number or true/false value.

    Raises:
        UserError: naming the column, the first row without it (or with a list or object in it)
            and the columns that row has.
    """
    column = kpi.slice_by
    if column is None:
        return
    where = f"{key}.slice_by"
    for number, row in enumerate(rows, start=1):
        if column not in row and column not in kpi.columns:
            hint = (" (a chat row has only its messages: give the data as prompt rows {\"prompt\": [...], "
                    "\"answer\": ..., \"" + column + "\": ...} to slice it)") if chat else ""
            raise UserError(
                f"{where}: row {number} of {shown} has no column {shorten(column)}; its columns are "
                f"{', '.join(sorted(row))}{hint}."
            )
        value = row.get(column, kpi.columns.get(column))
        if not _sliceable(value):
            raise UserError(
                f"{where}: column {shorten(column)} holds {type(value).__name__} {shorten(value)} in row {number} of "
                f"{shown}; slice by a column of text, numbers or true/false."
            )


def slice_label(value: object) -> str:
    """A slice's name: the column's value as text (JSON keys are strings; true/false as in JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def example_slice(kpi: Kpi, example: dict) -> str | None:
    """The slice an example falls in (None when the KPI is not sliced)."""
    if kpi.slice_by is None:
        return None
    reference = example.get("reference") or {}
    return slice_label(reference.get(kpi.slice_by, kpi.columns.get(kpi.slice_by)))


def examples_by_slice(kpi: Kpi, examples: list[dict]) -> dict[str, list[dict]]:
    """The examples grouped by slice, slices in sorted order (numbers numerically)."""
    groups: dict[str, list[dict]] = {}
    for example in examples:
        groups.setdefault(example_slice(kpi, example), []).append(example)

    def order(label: str) -> tuple:
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return {label: groups[label] for label in sorted(groups, key=order)}


def slice_values(outcome: KpiOutcome) -> dict[str, dict[str, Any]] | None:
    """``{slice: {"value", "ci": [low, high], "n"}}`` for a sliced KPI (None otherwise).

    Each slice's value and 95% interval is the KPI's own aggregate over that slice's examples
    (:func:`weightsmith.evals.run.aggregate`: Wilson for pass/fail means, a bootstrap otherwise;
    perplexity weighted by each text's tokens).
    """
    import numpy as np

    from weightsmith.evals.run import aggregate

    kpi = outcome.kpi
    if kpi.slice_by is None or not outcome.examples:
        return None
    out = {}
    for label, examples in examples_by_slice(kpi, outcome.examples).items():
        scored = [e for e in examples if e["score"] is not None]
        if not scored:
            out[label] = {"value": None, "ci": [None, None], "n": 0}
            continue
        scores = np.asarray([e["score"] for e in scored], dtype=float)
        weights = np.asarray([e["tokens"] or 0 for e in scored], dtype=float) if kpi.aggregate == "perplexity" else None
        value, (low, high) = aggregate(kpi, scores, weights=weights)
        out[label] = {"value": _finite(value), "ci": [_finite(low), _finite(high)], "n": len(scored)}
    return out


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
