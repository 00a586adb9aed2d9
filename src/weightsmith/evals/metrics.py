"""KPI metrics beyond plain answer matching, registered in the shared reward registry.

Each is a plain ``f(completions, **row) -> list[float]`` (see :mod:`weightsmith.rewards`), so
the same check can gate a model in an eval and shape it as a GRPO reward. Columns a metric
reads from the row (``pattern``, ``schema``) are lists aligned with ``completions``.
"""

from __future__ import annotations

import functools
import json
import re

from weightsmith.errors import UserError, shorten
from weightsmith.rewards import completion_text, reward

# Words and single punctuation marks: a tokenizer-free stand-in for a token count. BPE
# tokenizers average about one token per English word or mark; no tokenizer is loaded here
# because a length KPI must not change when the model's tokenizer does.
_APPROX_TOKEN = re.compile(r"\w+|[^\w\s]")


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern:
    """The compiled pattern, or a ``UserError``: it is not a regular expression, or it matches an
    empty text (``""``, ``\\d*``, ``(yes)?``) and so would match every completion."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UserError(f"regex_match: the pattern {shorten(pattern)} is not a valid regular expression ({exc}).") from exc
    if compiled.search("") is not None:
        raise UserError(
            f"regex_match: the pattern {pattern!r} matches an empty text, so it would match every completion; "
            "make it require what the answer must contain (e.g. \\d+ rather than \\d*)."
        )
    return compiled


@reward("regex_match")
def regex_match(completions: list, pattern: list[str], **_: object) -> list[float]:
    """1.0 when the row's regular expression ``pattern`` matches anywhere in the completion.

    Python ``re`` syntax, searched (not anchored): write ``^...$`` to demand the whole text. A
    pattern that matches an empty text is refused (:func:`compile_pattern`): it cannot tell
    completions apart.
    """
    return [
        float(compile_pattern(str(p)).search(completion_text(c)) is not None)
        for c, p in zip(completions, pattern, strict=True)
    ]


def _reject_constant(name: str) -> object:
    # Python's json module accepts NaN and Infinity; JSON does not, and neither would the consumer.
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str) -> tuple[bool, object]:
    try:
        return True, json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return False, None


@reward("json_valid")
def json_valid(completions: list, **_: object) -> list[float]:
    """1.0 when the whole completion (surrounding whitespace aside) parses as JSON.

    Strict on purpose: text around the JSON, or a Markdown code fence, fails — a program
    that consumes the output would fail on it too.
    """
    return [float(_parse_json(completion_text(c).strip())[0]) for c in completions]


def schema_validator(schema: object):
    """A JSON Schema validator for ``schema`` (a dict, ``true``/``false``, or JSON text), or a ``UserError``."""
    return _validator_for(_schema_key(schema))


@functools.lru_cache(maxsize=64)
def _validator_for(schema_json: str):
    # Imported here: jsonschema costs a noticeable import, and only this metric needs it.
    import jsonschema

    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UserError(f"json_schema_valid: the schema is not a valid JSON Schema ({exc.message}).") from exc
    return validator_class(schema)


def _schema_key(schema: object) -> str:
    """A cache key for a schema given as a dict or as JSON text (suites store either)."""
    if isinstance(schema, str):
        ok, parsed = _parse_json(schema)
        if not ok:
            raise UserError(f"json_schema_valid: the schema {schema[:80]!r} is not valid JSON.")
        schema = parsed
    if not isinstance(schema, (dict, bool)):
        raise UserError(f"json_schema_valid: a schema must be a JSON object, got {type(schema).__name__}.")
    return json.dumps(schema, sort_keys=True)


@reward("json_schema_valid")
def json_schema_valid(completions: list, schema: list, **_: object) -> list[float]:
    """1.0 when the completion parses as JSON and validates against the row's JSON Schema ``schema``.

    The schema's ``$schema`` keyword picks the draft (the latest one when absent). A broken
    schema is the suite's fault, not the model's, so it raises a ``UserError`` instead of scoring 0.
    """
    scores = []
    for completion, row_schema in zip(completions, schema, strict=True):
        validator = schema_validator(row_schema)
        ok, document = _parse_json(completion_text(completion).strip())
        scores.append(float(ok and validator.is_valid(document)))
    return scores


@reward("length_chars")
def length_chars(completions: list, **_: object) -> list[float]:
    """The completion's length in characters."""
    return [float(len(completion_text(c))) for c in completions]


@reward("length_tokens_approx")
def length_tokens_approx(completions: list, **_: object) -> list[float]:
    """The completion's approximate length in tokens: its words plus its punctuation marks."""
    return [float(len(_APPROX_TOKEN.findall(completion_text(c)))) for c in completions]
