"""The reference a user reads, generated from the code so it cannot be written twice or drift.

Every stage kind's keys come from its recipe's pydantic ``Config`` (type, default, bounds and the
field's description), found the way :mod:`weightsmith.config` finds it; the model sizes and their
parameter counts from :data:`weightsmith.training.models.MODEL_SIZES` (counted from the shapes, no
weights allocated); every metric and the columns it reads from the shared registry's function
signatures (:mod:`weightsmith.rewards.contract`); the pipeline and KPI-suite schemas from their
models. Two renderings of the same documents:

- Markdown for ``docs/reference/`` (``weightsmith reference --output docs/reference``, ``make reference``;
  a test keeps the committed files equal to :func:`render_markdown`);
- text for the terminal (``weightsmith stages [KIND] | sizes | metrics``; ``--json`` prints the documents).
"""

from __future__ import annotations

import inspect
import json
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from weightsmith.errors import UserError, closest

GENERATED_BY = "weightsmith reference --output docs/reference"
# The vocabulary the sizes table counts embeddings at: the tokenizer stage's default vocab_size.
SIZES_AT_VOCAB = 4096

# Stages that act on the registry; their Configs have no module docstring to take a summary from.
_REGISTRY_SUMMARIES = {
    "eval": "Run a KPI suite on the stage's model and store every example's prediction and score.",
    "gate": "Gate the stage's model against the alias holder on a KPI suite; a refusal fails the job "
            "and cancels its dependants.",
    "promote": "Move an alias to the stage's model, refused unless a passing gate allows it.",
}
_PRODUCES = {
    "tokenizer": "a tokenizer folder", "pairs": "a preference dataset (NAME@vN, named after the stage)",
    "eval": "an eval run", "gate": "a gate verdict", "promote": "an alias move",
}
# Metrics computed from the model rather than from completions (weightsmith.evals.suite.MODEL_METRICS).
_MODEL_METRIC_DOCS = {
    "perplexity": ("text", ["text"], "Perplexity of the model on text documents, scored in windows of the KPI's "
                   "seq_len; aggregate 'perplexity' (exp of the mean token loss)."),
    "latency": ("prompt", ["prompt"], "Seconds the model takes to generate each completion."),
}
SUITE_KEY_HELP = {
    "name": "The suite's name (default: the file's name).",
    "description": "Free text shown in reports.",
    "device": "auto, cpu or cuda (default auto); an eval or gate stage's device overrides it.",
    "dtype": "auto, float32, bfloat16 or float16 (default auto: bfloat16 on a CUDA GPU that supports it, float32 on "
             "the CPU): the precision the model is loaded and evaluated in.",
    "prompt": "Defaults for every KPI's prompt block (see prompt.* below).",
    "generation": "Defaults for every KPI's generation block (see generation.* below).",
    "gate": "Defaults for every KPI's gate block (see gate.* below).",
    "kpis": "The KPIs by name (letters, digits, '_', '-', '.'), each a mapping of the kpis.* keys below.",
    "retention_suite": "Another suite file whose KPIs are added as retention KPIs, named SUITE/KPI.",
}


# ------------------------------------------------------------------------------------------------
# The documents (plain, JSON-able)
# ------------------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    """A type as a person reads it in YAML terms: ``int``, ``one of: cosine, linear``, ``float or null``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if annotation is Any:
        return "any"
    return {str: "string", int: "int", float: "float", bool: "bool", Path: "path"}.get(annotation, str(annotation))


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _bounds(metadata: list) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    out = []
    for item in metadata:
        for attr, sign in words.items():
            if getattr(item, attr, None) is not None:
                out.append(f"{sign} {_yaml_value(getattr(item, attr))}")
    return ", ".join(out)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def config_keys(config: type[BaseModel], prefix: str = "") -> list[dict[str, Any]]:
    """Every key of a pydantic config, nested blocks flattened (``lora.r``), in declaration order.

    Each is ``{"key", "type", "required", "default", "bounds", "description"}``; ``default`` is the
    value as YAML writes it (None when the key is required).
    """
    keys = []
    for name, field in config.model_fields.items():
        default = None
        if not field.is_required():
            value = field.default_factory() if field.default_factory is not None else field.default
            default = _yaml_value(value if value is not PydanticUndefined else None)
        keys.append({
            "key": prefix + name,
            "type": _type_name(field.annotation),
            "required": field.is_required(),
            "default": default,
            "bounds": _bounds(field.metadata),
            "description": " ".join((field.description or "").split()),
        })
        nested = _nested_model(field.annotation)
        if nested is not None:
            keys.extend(config_keys(nested, prefix=f"{prefix}{name}."))
    return keys


def _stage_config(kind: str) -> type[BaseModel]:
    from weightsmith.evals.stages import CONFIGS as REGISTRY_CONFIGS
    from weightsmith.training import stage_config_class

    return REGISTRY_CONFIGS[kind] if kind in REGISTRY_CONFIGS else stage_config_class(kind)


def stage_kinds() -> tuple[str, ...]:
    """Every stage kind a pipeline may use, in pipeline order."""
    from weightsmith.config import REGISTRY_KINDS
    from weightsmith.training import STAGE_KINDS

    return (*STAGE_KINDS, *REGISTRY_KINDS)


def _summary(kind: str) -> str:
    from weightsmith.training import STAGE_KINDS, recipe_module

    if kind not in STAGE_KINDS:
        return _REGISTRY_SUMMARIES.get(kind, "")
    first = (recipe_module(kind).__doc__ or "").strip().split("\n\n")[0]
    first = " ".join(first.split())
    first = first.split(": ", 1)[1] if first.startswith("Stage `") and ": " in first else first
    return first[:1].upper() + first[1:]


def stage_reference(kind: str, config: type[BaseModel] | None = None) -> dict[str, Any]:
    """One stage kind: what it reads, starts from and produces, its reference keys and its settings.

    Args:
        kind: a stage kind (:func:`stage_kinds`).
        config: the settings' model (default: the kind's recipe Config) — a test passes a subclass.

    Raises:
        UserError: an unknown kind, naming the closest one.
    """
    from weightsmith.config import (
        NEEDS_MODEL, NEEDS_TOKENIZER, REFERENCE_KEY_HELP, REFERENCE_KEYS, STAGE_DATA_FORMAT)

    kinds = stage_kinds()
    if kind not in kinds:
        raise UserError(f"unknown stage kind '{kind}'{closest(kind, kinds)}; kinds are {', '.join(kinds)}.")
    config = config or _stage_config(kind)
    takes = {"kind": True, "after": True, "data": kind in STAGE_DATA_FORMAT, "model": kind in NEEDS_MODEL,
             "tokenizer": kind in NEEDS_TOKENIZER}
    references = []
    for key in REFERENCE_KEYS:
        if not takes.get(key, True):
            continue
        help_text = REFERENCE_KEY_HELP.get(key, "")
        if key == "data":
            help_text = f"A {STAGE_DATA_FORMAT[kind]} dataset. " + help_text
        references.append({"key": key, "required": key in ("data", "model", "tokenizer"), "description": help_text})
    return {
        "kind": kind,
        "summary": _summary(kind),
        "reads": STAGE_DATA_FORMAT.get(kind),
        "starts_from": "model" if kind in NEEDS_MODEL else ("tokenizer" if kind in NEEDS_TOKENIZER else None),
        "produces": _PRODUCES.get(kind, "a model version (NAME@vN)"),
        "references": references,
        "settings": config_keys(config),
    }


def count_parameters(size: Any, vocab_size: int, active: bool = False) -> int:
    """Parameters of the model :func:`weightsmith.training.models.build_model` builds.

    Llama, per layer: q and o projections h×h, k and v h×(kv_heads·head_dim), the SwiGLU MLP 3·h×ffn, two
    RMSNorm weights; plus the final norm, the input embedding V×h and, untied, an output head V×h.
    No biases (LlamaConfig's default). A Mixtral MoE has ``num_experts`` such MLPs per layer and a router
    E×h; ``active`` counts what one token is computed with, ``experts_per_token`` of them (the router and
    everything else included, as Mixtral's "active parameters" do). A test checks the totals against the
    models built on the meta device.
    """
    h, layers = size.hidden_size, size.num_layers
    head_dim = h // size.num_heads
    kv = size.num_kv_heads * head_dim
    mlp = 3 * h * size.intermediate_size
    if size.num_experts:
        mlp = (size.experts_per_token if active else size.num_experts) * mlp + size.num_experts * h
    per_layer = 2 * h * h + 2 * h * kv + mlp + 2 * h
    embeddings = vocab_size * h * (1 if size.tie_embeddings else 2)
    return layers * per_layer + h + embeddings


def sizes_reference(vocab_size: int = SIZES_AT_VOCAB) -> dict[str, Any]:
    """The named sizes a ``pretrain`` stage builds, with parameter counts at ``vocab_size``: in all, and used per token."""
    from weightsmith.training.models import MODEL_SIZES

    rows = []
    for name, size in MODEL_SIZES.items():
        total = count_parameters(size, vocab_size)
        rows.append({
            "size": name, "hidden_size": size.hidden_size, "layers": size.num_layers, "heads": size.num_heads,
            "kv_heads": size.num_kv_heads, "intermediate_size": size.intermediate_size,
            "tied_embeddings": size.tie_embeddings,
            "experts": size.num_experts or None, "experts_per_token": size.experts_per_token or None,
            "parameters": total,
            "active_parameters": count_parameters(size, vocab_size, active=True),
            "parameters_without_embeddings": count_parameters(size, 0),
        })
    return {"vocab_size": vocab_size, "sizes": rows}


def metrics_reference() -> list[dict[str, Any]]:
    """Every registered metric (the same functions are GRPO rewards) and what it reads.

    ``columns`` are the row columns the function requires (a required positional-or-keyword
    parameter: give it in the data or under the KPI's ``columns:``); ``options`` the settings it
    requires (keyword-only: the KPI's ``options:``); ``optional`` those with a default.
    """
    from weightsmith.evals.suite import KPI_FORMATS, LOWER_IS_BETTER, MODEL_METRICS
    from weightsmith.rewards import get_reward, reward_names
    from weightsmith.rewards.contract import COMPLETIONS, PROMPT, PROMPT_ALIAS, TRAINING_ONLY, reward_signature

    contract = {COMPLETIONS, PROMPT, PROMPT_ALIAS, *TRAINING_ONLY}
    generated_from = " or ".join(f for f in KPI_FORMATS if f != "text")  # what a generation KPI's rows may be
    out = []
    for name in reward_names():
        fn = get_reward(name)
        signature = reward_signature(fn)
        try:
            parameters = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            parameters = {}
        keyword_only = {n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        required = [n for n in signature.required if n not in contract]
        doc = inspect.getdoc(fn) or ""
        out.append({
            "name": name,
            "reads": generated_from,
            "columns": [n for n in required if n not in keyword_only],
            "options": [n for n in required if n in keyword_only],
            "optional": sorted(signature.names - set(signature.required) - contract),
            "direction": "lower" if name in LOWER_IS_BETTER else "higher",
            "description": " ".join(doc.split("\n\n")[0].split()),
        })
    for name in MODEL_METRICS:
        fmt, columns, text = _MODEL_METRIC_DOCS[name]
        out.append({"name": name, "reads": generated_from if fmt == "prompt" else fmt, "columns": columns, "options": [], "optional": [],
                    "direction": "lower" if name in LOWER_IS_BETTER else "higher", "description": text})
    return sorted(out, key=lambda m: m["name"])


def _kpi_formats() -> tuple[str, ...]:
    from weightsmith.evals.suite import KPI_FORMATS

    return tuple(KPI_FORMATS)


def pipeline_reference() -> dict[str, Any]:
    """The pipeline YAML: its top-level keys, a dataset entry's keys and a stage's reference keys."""
    from weightsmith.config import REFERENCE_KEY_HELP, REFERENCE_KEYS, TOP_KEY_HELP, TOP_KEYS, DatasetSpec

    order = ["name", "model", "seed", "datasets", "defaults", "stages"]
    top = [k for k in order if k in TOP_KEYS] + sorted(TOP_KEYS - set(order))
    return {
        "top": [{"key": k, "description": TOP_KEY_HELP.get(k, "")} for k in top],
        "dataset": config_keys(DatasetSpec),
        "stage": [{"key": k, "description": REFERENCE_KEY_HELP.get(k, "")} for k in REFERENCE_KEYS],
        "kinds": list(stage_kinds()),
    }


def suite_reference() -> dict[str, Any]:
    """The KPI suite YAML: its top-level keys and each block's keys."""
    from weightsmith.evals.suite import (
        AGGREGATES, SUITE_KEYS, GateSpec, GenerationSpec, KpiSpec, LmEvalSpec, PromptSpec)

    order = list(SUITE_KEY_HELP)
    top = [k for k in order if k in SUITE_KEYS] + sorted(SUITE_KEYS - set(order))
    return {
        "top": [{"key": k, "description": SUITE_KEY_HELP.get(k, "")} for k in top],
        "kpis": config_keys(KpiSpec),
        "prompt": config_keys(PromptSpec),
        "generation": config_keys(GenerationSpec),
        "gate": config_keys(GateSpec),
        "lm_eval": config_keys(LmEvalSpec),
        "aggregates": list(AGGREGATES),
    }


# ------------------------------------------------------------------------------------------------
# Markdown (docs/reference/)
# ------------------------------------------------------------------------------------------------


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _md(text: str) -> str:
    """Docstring text as Markdown table-cell text: Sphinx roles and ``literals`` as `code`, pipes escaped."""
    text = _ROLE.sub(r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|").replace("\n", " ")


def _plain(text: str) -> str:
    """Docstring text for the terminal: ``answer`` and :func:`f` as answer and f."""
    return _ROLE.sub(r"\1", text).replace("``", "")


def _key_table(keys: list[dict[str, Any]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for k in keys:
        default = "required" if k["required"] else f"`{k['default']}`"
        kind = k["type"] + (f" ({k['bounds']})" if k["bounds"] else "")
        lines.append(f"| `{k['key']}` | {_md(kind)} | {_md(default)} | {_md(k['description']) or '—'} |")
    return lines


def _header(title: str) -> list[str]:
    return [f"# {title}", "", f"<!-- Generated by `{GENERATED_BY}` from the code; do not edit. -->", ""]


def stage_markdown(doc: dict[str, Any]) -> list[str]:
    lines = [f"## `{doc['kind']}`", "", doc["summary"], ""]
    facts = []
    if doc["reads"]:
        facts.append(f"reads {doc['reads']} data")
    if doc["starts_from"]:
        facts.append(f"starts from a {doc['starts_from']}")
    facts.append(f"produces {doc['produces']}")
    lines += ["It " + ", ".join(facts) + ".", "", "| reference | required | description |", "|---|---|---|"]
    lines += [f"| `{r['key']}` | {'yes' if r['required'] else 'no'} | {_md(r['description'])} |" for r in doc["references"]]
    return lines + ["", *_key_table(doc["settings"]), ""]


def render_markdown() -> dict[str, str]:
    """The files of ``docs/reference/``: name → Markdown text."""
    stages = [stage_reference(k) for k in stage_kinds()]
    files: dict[str, str] = {}

    lines = _header("Stage kinds")
    lines += ["Each stage of a pipeline has a kind (its recipe). Its keys are the references below and its "
              "recipe's settings; an unknown key is refused with the closest known one. `defaults:` sets a "
              "setting for every stage whose recipe has it.", "",
              "| kind | reads | starts from | produces | what it does |", "|---|---|---|---|---|"]
    lines += [f"| [`{d['kind']}`](#{d['kind']}) | {d['reads'] or '—'} | {d['starts_from'] or '—'} | {_md(d['produces'])} "
              f"| {_md(d['summary'])} |" for d in stages]
    lines.append("")
    for doc in stages:
        lines += stage_markdown(doc)
    files["stages.md"] = "\n".join(lines)

    sizes = sizes_reference()
    lines = _header("Model sizes")
    lines += [f"`size:` of a `pretrain` stage (or of `model: {{init: random, size: ...}}`): a Llama architecture "
              f"built from this table, or for the `-moe` sizes a Mixtral-style mixture of experts (each layer's MLP "
              f"is several experts of the MLP width shown, and a router sends each token to some of them; the "
              f"router's load-balancing loss is trained and logged as `aux_loss`). The vocabulary comes "
              f"from the tokenizer, so the parameter count is given at {sizes['vocab_size']:,} tokens (the tokenizer "
              f"stage's default), per token (*active*: the experts a token is routed to, and everything else) and "
              f"without the embeddings (vocabulary × hidden size, twice when untied).", "",
              "| size | hidden | layers | heads | kv heads | MLP | experts | tied embeddings | parameters | active "
              "per token | without embeddings |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| `{s['size']}` | {s['hidden_size']} | {s['layers']} | {s['heads']} | {s['kv_heads']} | "
              f"{s['intermediate_size']} | {_experts(s)} | {'yes' if s['tied_embeddings'] else 'no'} | "
              f"{s['parameters']:,} | {s['active_parameters']:,} | {s['parameters_without_embeddings']:,} |"
              for s in sizes["sizes"]]
    files["sizes.md"] = "\n".join(lines + [""])

    lines = _header("Metrics")
    lines += ["A KPI's `metric:`; every metric that scores completions is also a GRPO `reward:` and a `pairs` "
              "ranker. *Columns* are what each row must carry (or the KPI gives under `columns:`), *options* "
              "the settings it needs under `options:`. Your own: `@weightsmith.rewards.reward(\"name\")` or "
              "`module:function`." + (" A chat row's last assistant turn is its reference (`answer`)."
                                      if "chat" in _kpi_formats() else ""), "",
              "| metric | reads | columns | options | better | what it scores |", "|---|---|---|---|---|---|"]
    for m in metrics_reference():
        columns = ", ".join(f"`{c}`" for c in m["columns"]) or "—"
        options = ", ".join(f"`{c}`" for c in m["options"]) or "—"
        lines.append(f"| `{m['name']}` | {m['reads']} rows | {columns} | {options} | {m['direction']} | {_md(m['description'])} |")
    files["metrics.md"] = "\n".join(lines + [""])

    pipeline = pipeline_reference()
    lines = _header("Pipeline YAML")
    lines += ["| key | description |", "|---|---|"]
    lines += [f"| `{k['key']}` | {_md(k['description'])} |" for k in pipeline["top"]]
    lines += ["", "## A dataset (`datasets: NAME: ...`)", "", *_key_table(pipeline["dataset"]),
              "", "## A stage (`stages: NAME: ...`)", "",
              "Besides its recipe's settings ([stages.md](stages.md)), a stage names:", "",
              "| key | description |", "|---|---|"]
    lines += [f"| `{k['key']}` | {_md(k['description'])} |" for k in pipeline["stage"]]
    lines += ["", "Kinds: " + ", ".join(f"`{k}`" for k in pipeline["kinds"]) + ".", "",
              "`key=value` on the command line overrides any key: `sft.lr=1e-4` (short for `stages.sft.lr`), "
              "`defaults.device=cpu`, `seed=1`."]
    files["pipeline.md"] = "\n".join(lines + [""])

    suite = suite_reference()
    lines = _header("KPI suite YAML")
    lines += ["| key | description |", "|---|---|"]
    lines += [f"| `{k['key']}` | {_md(k['description'])} |" for k in suite["top"]]
    for block, title in (("kpis", "A KPI (`kpis: NAME: ...`)"), ("prompt", "`prompt:`"),
                         ("generation", "`generation:`"), ("gate", "`gate:`"), ("lm_eval", "`lm_eval:`")):
        lines += ["", f"## {title}", "", *_key_table(suite[block])]
    lines += ["", "Aggregates: " + ", ".join(f"`{a}`" for a in suite["aggregates"]) + ". Metrics: [metrics.md](metrics.md)."]
    files["suite.md"] = "\n".join(lines + [""])

    lines = _header("Reference")
    lines += ["Generated from the code: the recipes' typed configs, the size table, the metric registry and the "
              "schemas. The same content on the command line: `weightsmith stages [KIND]`, `weightsmith sizes`, "
              "`weightsmith metrics` (each with `--json`).", "",
              "- [stages.md](stages.md): every stage kind, its keys, types, defaults and descriptions",
              "- [sizes.md](sizes.md): the model sizes and their parameter counts",
              "- [metrics.md](metrics.md): every metric and the columns it reads",
              "- [pipeline.md](pipeline.md): the pipeline YAML",
              "- [suite.md](suite.md): the KPI suite YAML"]
    files["README.md"] = "\n".join(lines + [""])
    return files


def write_reference(out_dir: Path) -> list[Path]:
    """Write :func:`render_markdown` into ``out_dir`` (created); returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_markdown().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: Path) -> list[str]:
    """The reference files in ``out_dir`` that differ from what the code generates now (or are missing)."""
    out_dir = Path(out_dir)
    return [name for name, text in render_markdown().items()
            if not (out_dir / name).is_file() or (out_dir / name).read_text(encoding="utf-8") != text]


# ------------------------------------------------------------------------------------------------
# Text for the terminal
# ------------------------------------------------------------------------------------------------


def _wrap(text: str, width: int, indent: str, hanging: str | None = None) -> list[str]:
    """``text`` wrapped to ``width`` (at least 40), first line at ``indent``, the rest at ``hanging``."""
    return textwrap.wrap(_plain(text), width=max(width, 40), initial_indent=indent,
                         subsequent_indent=indent if hanging is None else hanging, break_on_hyphens=False) or []


def _key_lines(keys: list[dict[str, Any]], width: int) -> list[str]:
    lines = []
    for k in keys:
        head = f"  {k['key']}: {k['type']}"
        head += ", required" if k["required"] else f" = {k['default']}"
        if k["bounds"]:
            head += f" ({k['bounds']})"
        lines += _wrap(head.strip(), width, "  ", "      ")
        lines += _wrap(k["description"], width, "      ")
    return lines


def stages_text(kind: str | None = None, width: int = 80) -> str:
    """``weightsmith stages``: every kind in a line or two; with ``kind``, its keys one by one."""
    if kind is None:
        lines = ["Stage kinds (weightsmith stages KIND lists one's keys):", ""]
        pad = max(map(len, stage_kinds())) + 2
        for k in stage_kinds():
            doc = stage_reference(k)
            facts = [f"reads {doc['reads']} data" if doc["reads"] else None,
                     f"starts from a {doc['starts_from']}" if doc["starts_from"] else None,
                     f"produces {doc['produces']}"]
            text = f"{doc['summary']} It " + ", ".join(f for f in facts if f) + "."
            lines += _wrap(f"{k.ljust(pad)}{text}", width, "", " " * pad)
        return "\n".join(lines)
    doc = stage_reference(kind)
    lines = _wrap(f"{kind}: {doc['summary']}", width, "", "    ")
    lines += ["", "References:"]
    for r in doc["references"]:
        lines += _wrap(f"{r['key']}{' (required)' if r['required'] else ''}: {r['description']}", width, "  ", "      ")
    lines += ["", "Settings (key: type = default):", *_key_lines(doc["settings"], width)]
    return "\n".join(lines)


def sizes_doc_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The sizes table as columns and rows for the terminal's table renderer."""
    columns = ["size", "hidden", "layers", "heads", "kv", "MLP", "experts", "tied", "params", "active", "w/o emb."]
    rows = [[s["size"], s["hidden_size"], s["layers"], s["heads"], s["kv_heads"], s["intermediate_size"], _experts(s),
             "yes" if s["tied_embeddings"] else "no", _short_count(s["parameters"]),
             _short_count(s["active_parameters"]), _short_count(s["parameters_without_embeddings"])]
            for s in doc["sizes"]]
    return columns, rows


def _experts(size_row: dict[str, Any]) -> str:
    """``2 of 4`` for an MoE size (experts per token of experts per layer), ``—`` for a dense one."""
    return f"{size_row['experts_per_token']} of {size_row['experts']}" if size_row["experts"] else "—"


def _short_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def metrics_text(width: int = 80) -> str:
    """``weightsmith metrics``: each metric, what it reads and what it scores."""
    lines = []
    for m in metrics_reference():
        needs = [f"columns: {', '.join(m['columns'])}" if m["columns"] else "",
                 f"options: {', '.join(m['options'])}" if m["options"] else ""]
        lines += _wrap(f"{m['name']} ({m['direction']} is better; {m['reads']} rows"
                       + "".join(f"; {n}" for n in needs if n) + ")", width, "", "    ")
        lines += _wrap(m["description"], width, "    ")
    return "\n".join(lines)
