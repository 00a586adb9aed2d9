"""KPI suites: a YAML file of named KPIs, validated key by key before any model is loaded.

A KPI is a dataset, how to prompt the model with it, a metric, how to aggregate the
per-example scores, and the target a person cares about::

    name: dispatch-kpis
    prompt:     {system: You are the dispatch desk assistant.}   # defaults for every KPI
    generation: {max_new_tokens: 16}
    gate:       {max_regression: 0.05, alpha: 0.05}
    retention_suite: general.yaml        # its KPIs are gated too, as retention KPIs
    kpis:
      answers:
        path: data/held.jsonl            # a file next to the suite (versioned as a dataset) ...
        format: prompt
        metric: normalized_match         # any registered metric, or mypkg.metrics:my_metric
        target: 0.8                      # the floor a gate checks (a ceiling when direction: lower)
      manual_ppl:
        data: docs@v1                    # ... or a workspace dataset version
        metric: perplexity               # lower is better: its direction defaults to lower
        retention: true
        gate: {max_regression: "5%"}     # relative to the baseline's value

Prompt-format rows are generation KPIs (the row's other columns reach the metric as
``**row``); so are chat-format rows (``format: chat``, or a chat dataset): the prompt is every
message before the last assistant turn, rendered with the model's chat template, and the
reference is that turn's content, as the column ``answer``. Text-format rows feed
``perplexity``. ``slice_by: COLUMN`` also reports a KPI per value of a column of its rows
(e.g. a question type), each with its interval. ``lm_eval: {task: ...}`` instead of a
dataset runs an lm-evaluation-harness task (with the optional ``lm-eval`` package).
``dtype: auto | float32 | bfloat16 | float16`` is the precision the model is loaded and run in
(auto: bf16 on a CUDA GPU that supports it, fp32 on the CPU — even one with native bf16, where the training
stages' ``auto`` picks bf16: generation there is only 1.15-1.25x faster in bf16, and fp32 keeps greedy answers
the same on every CPU).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weightsmith.errors import UserError, closest, shorten
from weightsmith.names import check_name
from weightsmith.training.common import EVAL_DTYPES
from weightsmith.yamlfile import load_yaml_mapping

# Metrics that need the model itself or the generation's timing, not just the completions;
# every other metric comes from the shared reward registry (weightsmith.rewards).
MODEL_METRICS = ("perplexity", "latency")
LOWER_IS_BETTER = {"perplexity", "latency"}
AGGREGATES = ("mean", "pass_rate", "median", "p90", "p95", "perplexity")
KPI_FORMATS = ("prompt", "chat", "text")
_KPI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class PromptSpec(BaseModel):
    """How a dataset row becomes what the model sees."""

    model_config = ConfigDict(extra="forbid")
    system: str | None = Field(None, description="a system message put before the conversation")
    template: str | None = Field(
        None,
        description="a Python format string over the row's columns, e.g. 'Q: {question}\\nA:'; for chat "
        "prompts it rewrites the last user message, with {prompt} standing for its text",
    )
    chat: bool = Field(False, description="send plain-text prompts as a user message through the chat template")


class GenerationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = []
    batch_size: int = Field(16, ge=1)
    seed: int = 0


class GateSpec(BaseModel):
    """The rules a gate applies to this KPI, besides its target (the floor)."""

    model_config = ConfigDict(extra="forbid")
    max_regression: float | str | None = Field(
        None, description="how much worse than the baseline it may be: a number in the KPI's units, or 'N%' of the baseline"
    )
    paired_test: bool = Field(True, description="refuse when the candidate is significantly worse on the same examples")
    alpha: float = Field(0.05, gt=0, lt=1)


class LmEvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    metric: str = "acc"
    filter: str = "none"
    num_fewshot: int | None = None
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)


class KpiSpec(BaseModel):
    """One KPI as written in the YAML (the nested blocks are validated on their own)."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    data: str | None = Field(None, description="a workspace dataset: NAME (newest version) or NAME@vN")
    path: str | None = Field(None, description="a file or folder, relative to the suite file")
    format: str | None = Field(None, description="the format of 'path': prompt | chat | text")
    dataset_name: str | None = Field(None, description="the dataset 'path' is versioned as (default: the file's stem)")
    metric: str | None = None
    options: dict[str, Any] = Field({}, description="keyword arguments given to the metric as they are")
    columns: dict[str, Any] = Field({}, description="a constant column added to every row (e.g. a regex 'pattern')")
    aggregate: Literal["mean", "pass_rate", "median", "p90", "p95", "perplexity"] | None = None
    pass_threshold: float = Field(0.5, description="pass_rate counts the examples scoring at least this")
    direction: Literal["higher", "lower"] | None = None
    target: float | None = None
    retention: bool = False
    limit: int | None = Field(None, ge=1, description="use only the first N rows")
    seq_len: int = Field(256, ge=2, description="perplexity: the longest window scored at once")
    slice_by: str | None = Field(
        None, description="also report the KPI per value of this column of its rows (e.g. a question type)"
    )
    prompt: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    lm_eval: dict[str, Any] | None = None


class Kpi(BaseModel):
    """A KPI with every default filled in: what :mod:`weightsmith.evals.run` executes."""

    name: str
    description: str = ""
    kind: Literal["generate", "perplexity", "lm_eval"]
    metric: str
    options: dict[str, Any] = {}
    columns: dict[str, Any] = {}
    data: str | None = None
    path: str | None = None  # absolute, resolved against the suite file's folder
    format: str | None = None
    dataset_name: str | None = None
    aggregate: str
    pass_threshold: float = 0.5
    direction: Literal["higher", "lower"]
    target: float | None = None
    retention: bool = False
    limit: int | None = None
    seq_len: int = 256
    slice_by: str | None = None
    prompt: PromptSpec = PromptSpec()
    generation: GenerationSpec = GenerationSpec()
    gate: GateSpec = GateSpec()
    lm_eval: LmEvalSpec | None = None

    def max_regression(self, baseline: float) -> float | None:
        """The allowed regression in the KPI's units against ``baseline`` (None: no such rule)."""
        allowed = self.gate.max_regression
        if allowed is None:
            return None
        if isinstance(allowed, str):
            return float(allowed.rstrip("%")) / 100 * abs(baseline)
        return float(allowed)


class Suite(BaseModel):
    name: str
    description: str = ""
    device: str = "auto"
    dtype: str = "auto"
    kpis: dict[str, Kpi]
    source: str | None = None  # the YAML file, when loaded from one


SUITE_KEYS = {"name", "description", "device", "dtype", "prompt", "generation", "gate", "kpis", "retention_suite"}


def load_suite(source: str | Path | dict | Suite, *, base_dir: str | Path | None = None) -> Suite:
    """A suite from a YAML path, a mapping already parsed (e.g. inline in a pipeline), or a Suite.

    Args:
        source: the suite.
        base_dir: where a mapping's relative ``path:`` entries live (default: the current folder).

    Raises:
        UserError: naming the file and the key, for anything wrong in the suite.
    """
    if isinstance(source, Suite):
        return source
    if isinstance(source, dict):
        return _validate(source, Path(base_dir or ".").resolve(), "suite", seen=set())
    path = Path(source)
    return _load_file(path, seen=set())


def _load_file(path: Path, *, seen: set[Path]) -> Suite:
    resolved = path.resolve()
    if resolved in seen:
        raise UserError(f"{path}: the suites name each other as retention_suite in a loop; break the loop.")
    raw = load_yaml_mapping(path, "suite", "'name' and 'kpis'")
    raw.setdefault("name", path.stem)
    suite = _validate(raw, resolved.parent, str(path), seen={*seen, resolved})
    return suite.model_copy(update={"source": str(resolved)})


def _validate(raw: dict, base: Path, where: str, *, seen: set[Path]) -> Suite:
    for key in raw:
        if key not in SUITE_KEYS:
            raise UserError(f"{where}: unknown key {shorten(key)}{closest(str(key), SUITE_KEYS)}; known keys: {', '.join(sorted(SUITE_KEYS))}.")
    name = raw.get("name", "suite")
    if not isinstance(name, str) or not _KPI_NAME.fullmatch(name):
        raise UserError(f"{where}: name: give the suite a name of letters, digits, '_', '-' or '.', got {shorten(name)}.")
    device = raw.get("device", "auto")
    if not isinstance(device, str):
        raise UserError(f"{where}: device: give a device such as auto, cpu or cuda, got {shorten(device)}.")
    dtype = raw.get("dtype", "auto")
    if dtype not in EVAL_DTYPES:
        raise UserError(f"{where}: dtype: give one of {', '.join(EVAL_DTYPES)}, got {shorten(dtype)}.")
    defaults = {}
    for block in ("prompt", "generation", "gate"):
        value = raw.get(block) or {}
        if not isinstance(value, dict):
            raise UserError(f"{where}: {block}: must be a mapping of settings, got {shorten(value)}.")
        defaults[block] = value
    raw_kpis = raw.get("kpis")
    if not isinstance(raw_kpis, dict) or not raw_kpis:
        raise UserError(f"{where}: kpis: give a non-empty mapping of KPI name to its settings.")

    kpis: dict[str, Kpi] = {}
    for kpi_name, body in raw_kpis.items():
        kpis[str(kpi_name)] = _validate_kpi(str(kpi_name), body, defaults, base, where)

    retention = raw.get("retention_suite")
    if retention is not None:
        if not isinstance(retention, str):
            raise UserError(f"{where}: retention_suite: give the path of another suite file, got {shorten(retention)}.")
        other_path = Path(retention) if Path(retention).is_absolute() else base / retention
        if not other_path.is_file():
            raise UserError(f"{where}: retention_suite: '{other_path}' does not exist.")
        other = _load_file(other_path, seen=seen)
        for other_name, kpi in other.kpis.items():
            # Prefixed, because a retention suite often reuses KPI names ("exact", "ppl").
            merged_name = f"{other.name}/{other_name}"
            if merged_name in kpis:
                raise UserError(f"{where}: retention_suite: KPI '{merged_name}' is defined twice; rename one.")
            kpis[merged_name] = kpi.model_copy(update={"name": merged_name, "retention": True})
    return Suite(name=name, description=str(raw.get("description") or ""), device=device, dtype=dtype, kpis=kpis)


def _validate_kpi(name: str, body: Any, defaults: dict[str, dict], base: Path, where: str) -> Kpi:
    key = f"kpis.{name}"
    if not _KPI_NAME.fullmatch(name):
        raise UserError(f"{where}: {key}: a KPI name uses letters, digits, '_', '-' or '.'.")
    if not isinstance(body, dict):
        raise UserError(f"{where}: {key}: must be a mapping with a metric and its data, got {shorten(body)}.")
    spec = _model(KpiSpec, body, where, key)
    prompt = _model(PromptSpec, {**defaults["prompt"], **(spec.prompt or {})}, where, f"{key}.prompt")
    generation = _model(GenerationSpec, {**defaults["generation"], **(spec.generation or {})}, where, f"{key}.generation")
    gate = _model(GateSpec, {**defaults["gate"], **(spec.gate or {})}, where, f"{key}.gate")
    _check_max_regression(gate.max_regression, where, key)
    if prompt.template is not None:
        _check_template(prompt.template, where, key)

    if spec.lm_eval is not None:
        lm = _model(LmEvalSpec, spec.lm_eval, where, f"{key}.lm_eval")
        for clash in ("data", "path", "metric", "slice_by"):
            if getattr(spec, clash) is not None:
                raise UserError(f"{where}: {key}: an lm_eval KPI takes its data and metric from the task; remove '{clash}'.")
        return Kpi(
            name=name, description=spec.description, kind="lm_eval", metric=f"lm_eval:{lm.task}/{lm.metric}",
            aggregate="mean", direction=spec.direction or "higher", target=spec.target, retention=spec.retention,
            gate=gate, lm_eval=lm,
        )

    if spec.metric is None:
        raise UserError(f"{where}: {key}.metric: required key is missing (e.g. exact_match, chrf, perplexity).")
    _check_metric(spec.metric, where, key)
    kind = "perplexity" if spec.metric == "perplexity" else "generate"
    needed_format = "text" if kind == "perplexity" else "prompt"
    accepted = ("text",) if kind == "perplexity" else ("prompt", "chat")

    if (spec.data is None) == (spec.path is None):
        raise UserError(
            f"{where}: {key}: name its data either as 'data: NAME@vN' (a workspace dataset) or as "
            "'path: FILE' with 'format:' (a file next to the suite), not both or neither."
        )
    path = None
    if spec.path is not None:
        if spec.format is None:
            raise UserError(f"{where}: {key}.format: required with 'path' ({' or '.join(accepted)} for metric '{spec.metric}').")
        path = str(Path(spec.path) if Path(spec.path).is_absolute() else (base / spec.path).resolve())
        if not Path(path).exists():
            raise UserError(f"{where}: {key}.path: '{path}' does not exist.")
        if spec.format not in accepted:
            raise UserError(
                f"{where}: {key}.format: metric '{spec.metric}' reads {' or '.join(accepted)} rows, not {shorten(spec.format)} "
                f"({'text documents' if needed_format == 'text' else 'prompt rows with the columns it scores against, or chat rows whose last assistant turn is the answer'})."
            )
    elif spec.format is not None:
        raise UserError(f"{where}: {key}.format: only with 'path'; a workspace dataset already has its format.")

    aggregate = spec.aggregate or ("perplexity" if kind == "perplexity" else "mean")
    if (aggregate == "perplexity") != (kind == "perplexity"):
        raise UserError(
            f"{where}: {key}.aggregate: 'perplexity' is the aggregate of the perplexity metric and only of it; "
            f"use one of {', '.join(a for a in AGGREGATES if a != 'perplexity')}."
        )
    return Kpi(
        name=name,
        description=spec.description,
        kind=kind,
        metric=spec.metric,
        options=spec.options,
        columns=spec.columns,
        data=spec.data,
        path=path,
        format=spec.format,
        dataset_name=_dataset_name(spec, path, where, key),
        aggregate=aggregate,
        pass_threshold=spec.pass_threshold,
        direction=spec.direction or ("lower" if spec.metric in LOWER_IS_BETTER else "higher"),
        target=spec.target,
        retention=spec.retention,
        limit=spec.limit,
        seq_len=spec.seq_len,
        slice_by=spec.slice_by,
        prompt=prompt,
        generation=generation,
        gate=gate,
    )


def _dataset_name(spec: KpiSpec, path: str | None, where: str, key: str) -> str | None:
    """The name a KPI's file is versioned under: the one name rule, as for `data add`."""
    if spec.dataset_name is not None:
        return check_name(spec.dataset_name, "dataset", f"{where}: {key}.dataset_name")
    if path is None:
        return None
    return check_name(Path(path).stem, "dataset", f"{where}: {key}.path (the file's name names its dataset; "
                      "set dataset_name: to another)")


def _model(cls: type[BaseModel], data: dict, where: str, key: str):
    if not isinstance(data, dict):
        raise UserError(f"{where}: {key}: must be a mapping, got {shorten(data)}.")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            field = str(err["loc"][-1])
            known = sorted(cls.model_fields)
            raise UserError(f"{where}: {key}.{loc}: unknown key{closest(field, known)}; known keys: {', '.join(known)}.") from exc
        if err["type"] == "missing":
            raise UserError(f"{where}: {key}.{loc}: required key is missing.") from exc
        raise UserError(f"{where}: {key}.{loc}: {err['msg']} (got {shorten(err.get('input'))}).") from exc


def _check_metric(metric: str, where: str, key: str) -> None:
    from weightsmith.rewards import get_reward, reward_names

    if ":" in metric:
        try:
            get_reward(metric)  # imports the user's module now, before any compute
        except UserError as exc:
            raise UserError(f"{where}: {key}.metric: {exc}") from exc
        return
    known = [*reward_names(), *MODEL_METRICS]
    if metric not in known:
        raise UserError(
            f"{where}: {key}.metric: unknown metric '{metric}'{closest(metric, known)}; known: {', '.join(sorted(known))} "
            "(or your own function as module:function)."
        )


def metric_columns(metric: str) -> tuple[list[str], list[str], list[str]]:
    """``(columns, optional, settings)``: what a metric reads from each row, by its signature.

    ``columns`` are the parameters it requires that a row's column (or the KPI's ``columns:``)
    gives; ``optional`` those with a default; ``settings`` its required keyword-only parameters,
    which a KPI gives under ``options:`` (an LLM judge's ``rubric``). The contract's own arguments
    (``completions``, ``prompt``/``prompts``, what only GRPO training passes) are none of these. A
    metric that takes only ``**kwargs`` reads whatever it finds: every list is empty.
    """
    import inspect

    from weightsmith.rewards import get_reward
    from weightsmith.rewards.contract import COMPLETIONS, PROMPT, PROMPT_ALIAS, TRAINING_ONLY, reward_signature

    if metric in MODEL_METRICS:
        return [], [], []
    fn = get_reward(metric)
    signature = reward_signature(fn)
    try:
        keyword_only = {n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}
    except (TypeError, ValueError):
        keyword_only = set()
    own = {COMPLETIONS, PROMPT, PROMPT_ALIAS, *TRAINING_ONLY}
    required = [name for name in signature.required if name not in own]
    optional = sorted(name for name in signature.names if name not in own and name not in required)
    return ([n for n in required if n not in keyword_only], optional, [n for n in required if n in keyword_only])


def _reads(metric: str) -> str:
    """"the columns 'answer' and 'category' (optional)" (and its settings), for a message."""
    columns, optional, settings = metric_columns(metric)
    names = [f"'{n}'" for n in columns] + [f"'{n}' (optional)" for n in optional]
    listed = "no column" if not names else names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    text = listed if not names else f"the column{'s' if len(names) > 1 else ''} {listed}"
    return text + (f" (and the settings {', '.join(settings)} under options:)" if settings else "")


def check_metric_inputs(kpi: Kpi, rows: list[dict], shown: str, key: str, *, chat: bool = False) -> None:
    """The KPI's metric against the reward contract (:mod:`weightsmith.rewards.contract`) on every row.

    Run before any model is loaded: a parameter the metric requires that neither a column of the
    row, the KPI's ``columns:`` nor its ``options:`` provides is a ``UserError`` naming the
    function, every column it reads, the columns the row has and the row (``shown`` names the
    dataset; ``chat``: the rows came from chat conversations), as is an option it does not take,
    or an ``api_key_env`` that is not set.
    """
    import os

    from weightsmith.rewards import get_reward
    from weightsmith.rewards.contract import describe, reward_signature, signature_problem, training_only, unprovided

    if kpi.metric == "latency":
        return
    fn = get_reward(kpi.metric)
    problem = signature_problem(fn, kpi.metric)
    if problem:
        raise UserError(f"{key}: {problem}")
    label = f"metric '{kpi.metric}' ({describe(fn)})"
    signature = reward_signature(fn)
    for option in kpi.options:
        if option != "api_key_env" and not signature.any_keyword and option not in signature.names:
            raise UserError(
                f"{key}.options.{option}: {label} takes no parameter '{option}'"
                f"{closest(option, signature.names)}; it takes: {', '.join(sorted(signature.names))}."
            )
    given = {*kpi.columns, *kpi.options}
    for index, row in enumerate(rows):
        for name in unprovided(fn, {*given, *row}, training=False):
            hint = training_only(name, training=False)
            if hint:
                raise UserError(f"{key}: {label} needs {hint}.")
            settings = metric_columns(kpi.metric)[2]
            if name in settings:
                raise UserError(f"{key}.options: {label} needs the setting '{name}' (its settings: {', '.join(settings)}).")
            origin = " (chat rows give 'prompt' and 'answer', the last assistant turn)" if chat else ""
            raise UserError(
                f"{key}: {label} reads {_reads(kpi.metric)}, but row {index + 1} of {shown} has the columns "
                f"{', '.join(sorted(row))}{origin}, without '{name}'; add '{name}' to the data, or give one value for "
                "every row under columns: (or options: for a setting)."
            )
    env = kpi.options.get("api_key_env")
    if env is not None and not os.environ.get(str(env)):
        raise UserError(f"{key}.options.api_key_env: the environment variable {env} is not set.")


# Built-in metrics scored against a gold column: (the column, whether they normalize it first).
_GOLD_COLUMNS = {
    "exact_match": ("answer", False),
    "normalized_match": ("answer", True),
    "contains_answer": ("answer", True),
    "token_f1": ("answer", True),
    "chrf": ("answer", False),
    "regex_match": ("pattern", False),
    "json_schema_valid": ("schema", False),
}


def check_gold(kpi: Kpi, rows: list[dict], where: str) -> list[str]:
    """Check the gold values a built-in metric scores against, before any compute.

    A regex_match pattern that is not a regular expression or matches an empty text, and a
    json_schema_valid schema that is not a JSON Schema, are refused (``UserError``). Returned as
    warnings, one sentence each: empty answers (nothing can match them: those rows score 0),
    answers that normalize to nothing ("+", "-") under a normalizing metric (compared as written
    instead), and schemas that accept any JSON.

    Args:
        kpi: the KPI; its ``columns:`` constants count as the rows' values.
        rows: the KPI's dataset rows.
        where: the suite and KPI, e.g. ``"suite.yaml: kpis.acc"``, that each message starts with.
    """
    from weightsmith.evals.metrics import compile_pattern, schema_validator
    from weightsmith.rewards.builtin import normalizes_to_nothing

    if kpi.metric not in _GOLD_COLUMNS:
        return []
    column, normalized = _GOLD_COLUMNS[kpi.metric]
    values = [kpi.columns[column]] * len(rows) if column in kpi.columns else [row.get(column) for row in rows]
    found: dict[str, list[int]] = {}
    for number, value in enumerate(values, start=1):
        if value is None:
            continue  # a missing column is the metric-input check's to report
        try:
            if column == "pattern":
                compile_pattern(str(value))
            elif column == "schema":
                if schema_validator(value).schema in ({}, True):
                    found.setdefault("any_json", []).append(number)
        except UserError as exc:
            raise UserError(f"{where}: row {number}: {exc}") from exc
        if column == "answer" and not str(value).strip():
            found.setdefault("empty", []).append(number)
        elif column == "answer" and normalized and normalizes_to_nothing(value):
            found.setdefault("no_word", []).append(number)
    said = {
        "empty": f"'{column}' is empty, and {kpi.metric} matches nothing against an empty answer: such rows score 0",
        "no_word": f"'{column}' has no letter or digit (e.g. {{example!r}}), so {kpi.metric} compares it as written "
        "(whitespace folded), not normalized",
        "any_json": "the schema accepts any JSON, so json_schema_valid only checks that the completion parses",
    }
    return [
        f"{where}: {_rows(numbers)}: " + said[kind].format(example=values[numbers[0] - 1]) + "."
        for kind, numbers in found.items()
    ]


def _rows(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:5])
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return f"row{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _check_max_regression(value: float | str | None, where: str, key: str) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", value):
            raise UserError(f"{where}: {key}.gate.max_regression: write a number or a percentage like '5%', got {shorten(value)}.")
    elif value < 0:
        raise UserError(f"{where}: {key}.gate.max_regression: must be 0 or more, got {value}.")


def _check_template(template: str, where: str, key: str) -> None:
    import string

    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"{where}: {key}.prompt.template: not a valid format string ({exc}); write literal braces as {{{{ }}}}.") from exc
