"""Markdown rendering of panel values for the manual: numbers, NaN, conditions."""

from __future__ import annotations

import numpy as np


def fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    value = float(value)
    if np.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    if abs(value) >= 1e5:
        return f"{value:.4g}".replace("e+0", "e").replace("e+", "e")
    if abs(value) >= 100:
        return f"{value:.2f}"
    return f"{value:.4g}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell if isinstance(cell, str) else fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def code(source: str, language: str = "quill") -> str:
    return f"```{language}\n{source.rstrip()}\n```"
