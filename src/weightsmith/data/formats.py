"""The data formats users bring, checked line by line before any compute.

``validate(path, fmt)`` reads a file or folder in one of :data:`FORMATS`, normalizes every
good row and collects every bad one as ``"FILE:LINE: reason"``. It never raises for bad
content: a person fixes all the lines in one pass instead of one per run. Only a path that
does not exist or cannot be read, or an unknown format, raises :class:`UserError`.

``canonical_jsonl(rows)`` is the one serialization a dataset version is hashed and stored as.
The per-format row checks live in :mod:`weightsmith.data.formats_rows`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from weightsmith.data.formats_rows import ROW_CHECKS, ROW_SHAPES, json_kind, looks_like
from weightsmith.errors import UserError, closest

FORMATS = ("text", "chat", "preference", "prompt")

MAX_LISTED_ERRORS = 1000
# The most characters one chat, preference or prompt row may hold unless the user says otherwise
# (`data add --max-chars N`, `datasets.NAME.max_chars`). Text documents have no limit: training
# splits them into blocks, and an organization's manuals are exactly what pre-training should read.
DEFAULT_MAX_CHARS = 200_000
# For rows no person can split: a stage's output, generated from rows already accepted.
NO_LIMIT = sys.maxsize
MAX_CHARS_SETTING = "`weightsmith data add --max-chars N` (in a pipeline: datasets.NAME.max_chars: N)"
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".json")

# Names people reach for that are not our format names; difflib cannot guess these.
_FORMAT_SYNONYMS = {
    "sft": "chat",
    "messages": "chat",
    "conversation": "chat",
    "dpo": "preference",
    "pairs": "preference",
    "grpo": "prompt",
    "rl": "prompt",
    "prompts": "prompt",
    "pretrain": "text",
    "corpus": "text",
    "cpt": "text",
}

# Which columns are tokenized for training, per format (the rest of a prompt row only feeds
# the reward function).
_TOKENIZED_COLUMNS = {
    "text": ("text",),
    "chat": ("messages", "tools"),
    "preference": ("prompt", "chosen", "rejected", "tools"),
    "prompt": ("prompt",),
}

_UTF8_BOM = b"\xef\xbb\xbf"

# Columns that are either plain text or a message list; a dataset must pick one style.
_STYLE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class Validated:
    """What :func:`validate` found.

    Attributes:
        format: one of :data:`FORMATS`.
        rows: the normalized good rows, in input order (duplicates kept).
        errors: every problem as ``"FILE:LINE: reason"`` (``"FILE: reason"`` for a whole file).
        duplicates: rows identical, after normalization, to an earlier row.
        sources: the files read, named relative to the path as given.
    """

    format: str
    rows: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    duplicates: int = 0
    sources: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        """True when there is no error (a file with errors must create no dataset version)."""
        return not self.errors


_LINE_ERROR = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<reason>.*)$", re.DOTALL)


def summarize_errors(errors: list[str], shown_lines: int = 5) -> list[str]:
    """The errors for people: one sentence per reason and file, with the count and the first line numbers.

    ``["a.jsonl:1: missing key 'prompt'", "a.jsonl:2: missing key 'prompt'", ...]`` (fifty of them)
    becomes ``["a.jsonl: lines 1, 2, 3, 4, 5 and 45 more (50 rows): missing key 'prompt'"]``. A reason
    seen once keeps its ``FILE:LINE:`` form; errors not about a line pass through. Order: first seen.
    The full list stays in ``--json`` and the API's error body.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    order: list[tuple[str, str] | str] = []
    for error in errors:
        match = _LINE_ERROR.match(error)
        if match is None:
            order.append(error)
            continue
        key = (match["file"], match["reason"])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(match["line"])
    out = []
    for item in order:
        if isinstance(item, str):
            out.append(item)
            continue
        lines = groups[item]
        if len(lines) == 1:
            out.append(f"{item[0]}:{lines[0]}: {item[1]}")
            continue
        more = f" and {len(lines) - shown_lines:,} more" if len(lines) > shown_lines else ""
        out.append(f"{item[0]}: lines {', '.join(lines[:shown_lines])}{more} ({len(lines):,} rows): {item[1]}")
    return out


def canonical_jsonl(rows: Iterable[dict]) -> bytes:
    """One JSON object per line with sorted keys, UTF-8, ``\\n`` endings.

    The content hash of a dataset version is the sha256 of these bytes, so the same rows hash
    the same whatever key order or whitespace the user's file had.
    """
    return b"".join(_canonical_line(row) for row in rows)


def _canonical_line(row: dict) -> bytes:
    text = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text + "\n").encode("utf-8")


def approx_tokens(rows: Iterable[dict], fmt: str) -> int:
    """An estimate of the tokens in the columns that get tokenized, for the dataset summary.

    No tokenizer is used: none may exist yet when a dataset is added. Latin-script characters
    (U+0000-U+024F) count a quarter token each (about right for English with a BPE tokenizer);
    every other character counts one token. Characters / 4 for everything understated other
    scripts four- to twelvefold: a byte-level BPE tokenizer that was not trained on a script
    spends one token per UTF-8 byte of it (measured: 1.8 per Cyrillic, 2.4 per Korean, 3 per
    Japanese character), and large tokenizers trained on Chinese or Japanese commonly spend about
    one per character. For those scripts the estimate is the low end of that range.
    """
    columns = _TOKENIZED_COLUMNS[_check_format(fmt)]
    tokens = sum(_string_tokens(row.get(column)) for row in rows for column in columns)
    return math.ceil(tokens)


_NON_LATIN = re.compile(r"[^\x00-\u024f]")


def _string_tokens(value: object) -> float:
    if isinstance(value, str):
        others = 0 if value.isascii() else len(_NON_LATIN.findall(value))
        return (len(value) - others) / 4 + others
    if isinstance(value, list):
        return sum(_string_tokens(v) for v in value)
    if isinstance(value, dict):
        return sum(_string_tokens(v) for v in value.values())
    return 0


def _string_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_string_chars(v) for v in value)
    if isinstance(value, dict):
        return sum(_string_chars(v) for v in value.values())
    return 0


def _check_format(fmt: str) -> str:
    name = str(fmt).strip().lower()
    if name in FORMATS:
        return name
    hint = closest(name, FORMATS)
    if not hint and name in _FORMAT_SYNONYMS:
        hint = f" (did you mean '{_FORMAT_SYNONYMS[name]}'?)"
    raise UserError(f"unknown data format '{fmt}'{hint}; use one of {', '.join(FORMATS)}.")


# ---------------------------------------------------------------------------- collecting


class _Collector:
    """Rows and errors across all files of one dataset.

    Lists at most :data:`MAX_LISTED_ERRORS` errors and counts the rest; counts duplicates by
    the hash of each row's canonical line; and checks that each column keeps one JSON type
    across rows, because the dataset is stored as typed columns (Arrow) downstream.
    """

    def __init__(self, fmt: str, max_chars: int | None) -> None:
        self.result = Validated(format=fmt)
        self.max_chars = max_chars
        self.unlisted = 0
        self._seen: set[bytes] = set()
        self._column_kinds: dict[str, tuple[str, str]] = {}

    def error(self, where: str, reason: str) -> None:
        if len(self.result.errors) < MAX_LISTED_ERRORS:
            self.result.errors.append(f"{where}: {reason}")
        else:
            self.unlisted += 1

    def add_row(self, where: str, row: dict, *, what: str = "row") -> None:
        """Check a normalized row's size, encoding and column types, then keep it."""
        if self.max_chars is not None and (chars := _string_chars(row)) > self.max_chars:
            self.error(
                where,
                f"the {what} is over the length limit: {chars:,} characters, max_chars is "
                f"{self.max_chars:,}; split it into smaller {what}s or raise the limit with {MAX_CHARS_SETTING}",
            )
            return
        try:
            line = _canonical_line(row)
        except UnicodeEncodeError as exc:
            # json.loads accepts "\ud800" escapes that are not characters; they cannot be stored.
            bad = exc.object[exc.start]
            self.error(
                where,
                f"contains the escape \\u{ord(bad):04x}, half of a UTF-16 surrogate pair with no "
                "other half; fix or remove it",
            )
            return
        if not self._column_types_agree(where, row):
            return
        digest = hashlib.sha256(line).digest()
        if digest in self._seen:
            self.result.duplicates += 1
        self._seen.add(digest)
        self.result.rows.append(row)

    def _column_types_agree(self, where: str, row: dict) -> bool:
        conflicts = []
        new_columns = {}
        for column, value in row.items():
            kind = _column_kind(value)
            if kind is None:
                continue  # null fits any column
            if column not in self._column_kinds:
                new_columns[column] = (kind, where)
            elif self._column_kinds[column][0] != kind:
                conflicts.append((column, kind, *self._column_kinds[column]))
        if not conflicts:
            self._column_kinds.update(new_columns)  # a rejected row sets no column's type
        style_reported = False
        for column, kind, first_kind, first_where in conflicts:
            reason = f"'{column}' is {kind} here but {first_kind} at {first_where}"
            if column in _STYLE_COLUMNS:
                # prompt/chosen/rejected switch style together; one line says it.
                if style_reported:
                    continue
                style_reported = True
                self.error(where, f"{reason}; use plain strings or message lists for the whole dataset, not both")
            else:
                self.error(where, f"{reason}; every row must give a column the same type")
        return not conflicts

    def finish(self, shown: str) -> Validated:
        if self.unlisted:
            self.result.errors.append(
                f"{shown}: ... and {self.unlisted:,} more errors not listed "
                f"(listing stops after the first {MAX_LISTED_ERRORS:,})"
            )
        return self.result


def _column_kind(value: object) -> str | None:
    kind = json_kind(value)
    if kind == "null":
        return None
    return {
        "int": "a number",
        "float": "a number",
        "string": "a string",
        "bool": "true/false",
        "list": "a list",
        "object": "an object",
    }[kind]


# ---------------------------------------------------------------------------- reading


def validate(path: str | Path, fmt: str, *, max_chars: int | None = None) -> Validated:
    """Check a dataset file or folder and return its normalized rows and every problem.

    Args:
        path: text: a folder of .txt/.md files (recursive), one .txt/.md file, or a JSONL
            file of ``{"text": ...}``. Other formats: a JSONL file, or a folder of .jsonl
            files read in sorted order.
        fmt: one of :data:`FORMATS`.
        max_chars: the most characters one chat, preference or prompt row may hold, counting
            all its strings together (message contents, role names, reward columns); None:
            :data:`DEFAULT_MAX_CHARS`. Text documents are never capped.

    Raises:
        UserError: the path does not exist or cannot be read, ``fmt`` is unknown, or
            ``max_chars`` is given for text data or is not a positive number.
    """
    fmt = _check_format(fmt)
    if max_chars is not None and fmt == "text":
        raise UserError(
            "max_chars (--max-chars) limits chat, preference and prompt rows; text documents are never capped "
            "(training splits them into blocks), so leave it out for text data."
        )
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
        raise UserError(f"max_chars must be a positive whole number of characters, got {max_chars!r}.")
    if fmt != "text" and max_chars is None:
        max_chars = DEFAULT_MAX_CHARS
    root = Path(path)
    shown = str(path)
    if not root.exists():
        raise UserError(f"{shown}: no such file or folder; check the path.")
    collector = _Collector(fmt, max_chars)  # None for text: no limit
    if root.is_dir():
        files = _list_folder(root, shown, fmt, collector)
    else:
        files = [(root, shown)]
    for file, name in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            if file is root:
                raise UserError(f"{shown}: cannot read it ({exc.strerror}); check its permissions.") from exc
            collector.error(name, f"cannot read the file ({exc.strerror}); check its permissions")
            continue
        collector.result.sources.append(name)
        if fmt == "text" and file.suffix.lower() in TEXT_SUFFIXES:
            _read_text_document(data, name, collector)
        elif fmt == "text" and file.suffix.lower() not in JSONL_SUFFIXES:
            collector.error(
                name,
                "a text corpus is a .txt/.md file, a folder of them, or a .jsonl file of "
                '{"text": ...}; rename the file or convert it',
            )
        else:
            _read_jsonl(data, name, fmt, collector)
    return collector.finish(shown)


def _list_folder(root: Path, shown: str, fmt: str, collector: _Collector) -> list[tuple[Path, str]]:
    """The data files under ``root``, sorted by relative path; hidden files and folders skipped."""
    suffixes = TEXT_SUFFIXES if fmt == "text" else (".jsonl",)

    def unreadable(exc: OSError) -> None:
        if Path(exc.filename) == root:
            raise UserError(f"{shown}: cannot read the folder ({exc.strerror}); check its permissions.")
        name = str(Path(shown) / Path(exc.filename).relative_to(root))
        collector.error(name, f"cannot read the folder ({exc.strerror}); check its permissions")

    found: list[tuple[str, Path]] = []
    others: set[str] = set()
    # os.walk, not rglob: it does not follow symlinked folders (no loops) and reports errors.
    for folder, subfolders, names in os.walk(root, onerror=unreadable):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            file = Path(folder) / name
            if file.suffix.lower() in suffixes:
                found.append((file.relative_to(root).as_posix(), file))
            elif file.suffix:
                others.add(file.suffix.lower())
    if not found:
        wanted = " or ".join(suffixes)
        seen = f" (found only {', '.join(sorted(others))})" if others else ""
        what = "a text corpus folder holds .txt/.md files" if fmt == "text" else f"{fmt} data is JSONL"
        collector.error(shown, f"no {wanted} files in this folder{seen}; {what}")
    return [(file, str(Path(shown) / relative)) for relative, file in sorted(found)]


def _binary_problem(data: bytes) -> str | None:
    """Say what a file that is not UTF-8 text is, instead of one error per line."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "the file is UTF-16 encoded; save it as UTF-8"
    if data.startswith(b"\x1f\x8b"):
        return "the file is gzip-compressed; decompress it first"
    if b"\x00" in data[:8192]:
        return "the file looks binary (it contains NUL bytes), not UTF-8 text"
    return None


def _read_text_document(data: bytes, name: str, collector: _Collector) -> None:
    """One .txt/.md file is one row; its problems are reported as ``FILE: reason``."""
    data = data.removeprefix(_UTF8_BOM)
    problem = _binary_problem(data)
    if problem:
        collector.error(name, problem)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        collector.error(
            name, f"not valid UTF-8 at line {line} (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        )
        return
    if not text.strip():
        collector.error(name, "the file is empty; add text or remove it")
        return
    # Line endings are an artifact of the editor, not content: the same text saved on
    # Windows and on Linux is the same row (and the same hash).
    collector.add_row(name, {"text": text.replace("\r\n", "\n")}, what="file")


def _read_jsonl(data: bytes, name: str, fmt: str, collector: _Collector) -> None:
    data = data.removeprefix(_UTF8_BOM)
    problem = _binary_problem(data)
    if problem:
        collector.error(name, problem)
        return
    if not data.strip():
        collector.error(name, f"the file is empty; {ROW_SHAPES[fmt]}, one per line")
        return
    check_row = ROW_CHECKS[fmt]
    first_line = True
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{name}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            collector.error(
                where,
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
                "save the file as UTF-8",
            )
            first_line = False
            continue
        if not line.strip():
            continue  # blank lines separate nothing in JSONL; skipping them is harmless
        value, reason = _parse_json_line(line)
        if reason and first_line and _is_one_json_document(data):
            # Pretty-printed JSON fails on every line; one error says it better than a thousand.
            collector.error(
                name,
                "the file is one JSON document spread over many lines (pretty-printed, or an "
                f"array); JSONL needs each object whole on its own line{_jq_hint(name)}",
            )
            return
        first_line = False
        if reason:
            collector.error(where, reason)
            continue
        if not isinstance(value, dict):
            kind = json_kind(value)
            hint = _jq_hint(name) if kind == "list" else ""
            collector.error(where, f"the line is a JSON {kind}, not an object; {ROW_SHAPES[fmt]}{hint}")
            continue
        problems: list[str] = []
        row = check_row(value, problems)
        guess = looks_like(value) if problems else None
        if guess not in (None, fmt) and any(p.startswith("missing key") for p in problems):
            # The rows are another format's: one sentence with the fix, not one per missing key.
            keys = ", ".join(f"'{k}'" for k in list(value)[:4])
            problems = [f"the row has {keys}, like a {guess} row, not a {fmt} row ({ROW_SHAPES[fmt]}); "
                        f"add the file with --format {guess} (in a pipeline or suite: format: {guess})"]
        for problem in problems:
            collector.error(where, problem)
        if row is not None and not problems:
            collector.add_row(where, row)


def _jq_hint(name: str) -> str:
    return f" (`jq -c '.[]' {name} > rows.jsonl` turns a JSON array into JSONL)"


def _is_one_json_document(data: bytes) -> bool:
    if b"\n" not in data.strip():
        return False  # one line: its own error says more
    try:
        json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError alike
        return False
    return True


class _JsonProblem(ValueError):
    pass


def _reject_constant(name: str) -> None:
    raise _JsonProblem(f"{name} is not valid JSON; use null or a number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    row = dict(pairs)
    if len(row) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                # json.loads would silently keep the last value; the user meant one of them.
                raise _JsonProblem(f"key '{key}' appears twice in one object; keep one")
            seen.add(key)
    return row


def _parse_json_line(line: str) -> tuple[object, str | None]:
    """Parse one JSONL line; return (value, None) or (None, a reason that says where)."""
    if line.startswith("\ufeff"):
        return None, "the line starts with a byte-order mark (were files concatenated?); remove it"
    try:
        return json.loads(line, object_pairs_hook=_unique_keys, parse_constant=_reject_constant), None
    except _JsonProblem as exc:
        return None, str(exc)
    except RecursionError:
        return None, "the JSON is nested too deeply to read"
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON at column {exc.colno}: {exc.msg}"
        if exc.msg.startswith("Expecting property name enclosed in double quotes") and "'" in line:
            reason += " (JSON needs double quotes, not single quotes)"
        elif exc.msg == "Extra data":
            reason += " (more than one JSON value on the line; put each object on its own line)"
        elif exc.pos >= len(line.rstrip()):
            reason += " (the line ends before the JSON does; each object must be whole on one line)"
        return None, reason
