"""One HTML page of training curves: loss, learning rate, gradient norm and rewards, several jobs overlaid.

``weightsmith jobs page 3 5 --output page.html`` reads each job's metric history
(``jobs.show`` and ``jobs.metrics``) and renders it here through the template
``runs_page.html``: a panel per metric, one polyline per job, a legend naming each job, and a
table of the jobs. The page is self-contained — inline CSS and SVG, no script, font or
stylesheet fetched from anywhere — so it opens offline and can be attached to a ticket.

A job that was resumed logs its steps over several runs; a step logged twice (the rerun of the
steps after the last checkpoint) keeps its latest value. Values that are not finite (a diverged
loss) cannot be drawn: they are left out of the curve and counted under the panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

# Always shown (a note says when no job logged one); reward curves when any job logged them.
CORE_METRICS = ("loss", "lr", "grad_norm")
TITLES = {"loss": "training loss", "lr": "learning rate", "grad_norm": "gradient norm (before clipping)"}
# Okabe & Ito's colour-blind-safe palette (yellow left out: it vanishes on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 12, 40


def reward_metrics(names: set[str]) -> list[str]:
    """The reward curves among ``names``: TRL's ``reward``, ``reward_std`` and ``rewards/...`` (GRPO and DPO)."""
    return sorted(n for n in names if n == "reward" or n.startswith(("reward_", "rewards/")))


@dataclass
class Series:
    job: int
    label: str
    color: str
    points: list[tuple[int, float]]  # (step, value), finite, step ascending
    skipped: int = 0  # values that were not finite
    svg_points: str = ""


@dataclass
class Panel:
    metric: str
    title: str
    series: list[Series] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # (pixel, label)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    skipped: int = 0


def job_label(job: dict[str, Any]) -> str:
    """``job 3: sft → quill@v2``: the job, its stage and the model version it registered (if any)."""
    runs = job.get("runs") or []
    version = ((runs[-1].get("result") or {}).get("model_version") if runs else None)
    return f"job {job['id']}: {job['stage']}" + (f" → {version}" if version else "")


def _series_values(points: list[dict], metric: str) -> tuple[list[tuple[int, float]], int]:
    by_step: dict[int, float] = {}
    for p in points:  # in run order: a later run's value for a step replaces the earlier one
        if p["name"] == metric:
            by_step[int(p["step"])] = float(p["value"])
    finite = [(step, value) for step, value in sorted(by_step.items()) if math.isfinite(value)]
    return finite, len(by_step) - len(finite)


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """At most about ``count`` round numbers (1, 2, 2.5 or 5 times a power of ten apart) within [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    # i * step, not a running sum: no drift (0.1 + 0.2 ...), and rounded so labels stay short.
    return [float(f"{i * step:.12g}") for i in range(first, last + 1)]


def _short_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.1e}"
    return f"{value:.4g}"


def tick_labels(ticks: list[float]) -> list[str]:
    """One notation for an axis: scientific for every tick when any needs it (learning rates), else plain."""
    scientific = any(t != 0 and (abs(t) < 1e-3 or abs(t) >= 1e5) for t in ticks)
    return ["0" if t == 0 else f"{t:.1e}" if scientific else f"{t:.4g}" for t in ticks]


def _layout(panel: Panel) -> None:
    """Pixel coordinates of every series and the axes' ticks (the plot area is the same for every panel)."""
    drawn = [s for s in panel.series if s.points]
    if not drawn:
        return
    steps = [step for s in drawn for step, _ in s.points]
    values = [value for s in drawn for _, value in s.points]
    x_low, x_high = min(steps), max(steps)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    y_low, y_high = min(values), max(values)
    if y_high == y_low:
        pad = abs(y_low) * 0.1 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    else:
        pad = (y_high - y_low) * 0.05
        y_low, y_high = y_low - pad, y_high + pad
        if min(values) >= 0 > y_low:  # losses, rates and norms never go below zero: no negative axis
            y_low = 0.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(step: float) -> float:
        return LEFT + (step - x_low) / (x_high - x_low) * inner_w

    def y(value: float) -> float:
        return TOP + (y_high - value) / (y_high - y_low) * inner_h

    for s in drawn:
        s.svg_points = " ".join(f"{x(step):.1f},{y(value):.1f}" for step, value in s.points)
    x_ticks = [t for t in nice_ticks(x_low, x_high) if x_low <= t <= x_high]
    y_ticks = [t for t in nice_ticks(y_low, y_high) if y_low <= t <= y_high]
    panel.x_ticks = [(x(t), label) for t, label in zip(x_ticks, tick_labels(x_ticks), strict=True)]
    panel.y_ticks = [(y(t), label) for t, label in zip(y_ticks, tick_labels(y_ticks), strict=True)]


def build_panels(jobs: list[dict[str, Any]], points: dict[int, list[dict]], extra: list[str] = ()) -> list[Panel]:
    """A panel per metric: the core ones, every reward metric any job logged, and ``extra``.

    Args:
        jobs: ``jobs.show`` documents, in the order to draw them (each gets the next colour).
        points: each job's ``jobs.metrics`` points (``{"run", "step", "name", "value"}``), by job id.
        extra: more metric names to plot (e.g. ``tokens_per_sec``).
    """
    logged = {p["name"] for rows in points.values() for p in rows}
    metrics = list(dict.fromkeys([*CORE_METRICS, *reward_metrics(logged), *extra]))
    panels = []
    for metric in metrics:
        panel = Panel(metric=metric, title=TITLES.get(metric, metric))
        for index, job in enumerate(jobs):
            values, skipped = _series_values(points.get(job["id"], []), metric)
            panel.skipped += skipped
            if values:
                panel.series.append(Series(job=job["id"], label=job_label(job), color=PALETTE[index % len(PALETTE)],
                                           points=values, skipped=skipped))
        _layout(panel)
        panels.append(panel)
    return panels


def _job_rows(jobs: list[dict[str, Any]], points: dict[int, list[dict]]) -> list[dict[str, Any]]:
    rows = []
    for index, job in enumerate(jobs):
        own = points.get(job["id"], [])
        losses = [p for p in own if p["name"] == "loss"]  # the last one logged, even a diverged one (nan)
        runs = job.get("runs") or []
        rows.append({
            "id": job["id"], "label": job_label(job), "color": PALETTE[index % len(PALETTE)], "stage": job["stage"],
            "kind": job["kind"], "state": job["state"], "pipeline": job.get("pipeline"),
            "version": ((runs[-1].get("result") or {}).get("model_version") if runs else None) or "",
            "steps": max((int(p["step"]) for p in own), default=None),
            "last_loss": _short_number(float(losses[-1]["value"])) if losses else "",
        })
    return rows


def render_page(jobs: list[dict[str, Any]], points: dict[int, list[dict]], *, extra: list[str] = (),
                title: str | None = None) -> str:
    """The page as one HTML document (see the module's docstring); pure: no I/O but reading the template.

    Args:
        jobs: ``jobs.show`` documents (``id``, ``stage``, ``kind``, ``state``, ``runs``...).
        points: each job's metric points by job id (``jobs.metrics``).
        extra: more metrics to plot besides loss, lr, grad_norm and rewards.
        title: the page's heading (default: the jobs' ids).
    """
    from jinja2 import Environment, StrictUndefined

    template_text = resources.files("weightsmith").joinpath("runs_page.html").read_text(encoding="utf-8")
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template_text).render(
        title=title or "Training curves: " + ", ".join(f"job {j['id']}" for j in jobs),
        jobs=_job_rows(jobs, points),
        panels=build_panels(jobs, points, list(extra)),
        width=WIDTH, height=HEIGHT, left=LEFT, right=RIGHT, top=TOP, bottom=BOTTOM,
    )
