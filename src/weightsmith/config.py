"""Pipeline YAML: load, apply ``key=value`` overrides, validate every key before any compute.

A pipeline names the model it produces, the datasets it needs (optionally added from files
next to the YAML) and its stages. A stage's keys are either references — ``kind``, ``data``,
``model``, ``tokenizer``, ``after`` — or hyperparameters of its recipe, validated by the
recipe's own typed ``Config`` so an unknown key is caught with the closest known one::

    name: tiny
    seed: 0
    datasets:
      docs: {path: data/docs, format: text}
    defaults: {device: cpu}          # applied to every stage whose recipe has the key
    stages:
      tokenizer: {data: docs, vocab_size: 512}
      pretrain:  {data: docs, tokenizer: tokenizer, size: tiny, max_steps: 20}
      sft:       {model: pretrain, data: tasks, lora: {r: 8}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weightsmith.errors import UserError, clip, closest, shorten
from weightsmith.names import check_name
from weightsmith.yamlfile import StrictYamlError, describe_yaml_error, load_yaml_mapping, load_yaml_text

# Which dataset format each stage kind reads.
STAGE_DATA_FORMAT = {
    "tokenizer": "text",
    "pretrain": "text",
    "cpt": "text",
    "sft": "chat",
    "dpo": "preference",
    "grpo": "prompt",
    "pairs": "prompt",
}
# Stage kinds whose output is a dataset (of this format) rather than a model or tokenizer.
DATASET_OUTPUT = {"pairs": "preference"}
# Which stage kinds start from an existing model / need a tokenizer.
NEEDS_MODEL = {"cpt", "sft", "dpo", "grpo", "pairs", "eval", "gate", "promote"}
# Stage kinds that act on the registry rather than train (run inside the worker).
REGISTRY_KINDS = ("eval", "gate", "promote")
NEEDS_TOKENIZER = {"pretrain"}
REFERENCE_KEYS = ("kind", "data", "model", "tokenizer", "after")


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="file or folder, relative to the pipeline YAML")
    format: str = Field(description="text | chat | preference | prompt")
    max_chars: int | None = Field(
        None, ge=1, description="the most characters one chat/preference/prompt row may hold (default 200,000)"
    )


class StageSpec(BaseModel):
    """A validated stage: its references, and its recipe's hyperparameters."""

    name: str
    kind: str
    data: str | None = None
    model: str | None = None
    tokenizer: str | None = None
    after: list[str] = []
    config: dict[str, Any] = {}

    def upstream(self, stage_names: set[str]) -> list[str]:
        """Stages this one waits for: the ones it names as model/tokenizer/data, plus ``after``."""
        refs = [r for r in (self.model, self.tokenizer, self.data) if r in stage_names]
        return list(dict.fromkeys(refs + self.after))


class PipelineSpec(BaseModel):
    name: str
    model: str
    seed: int = 0
    datasets: dict[str, DatasetSpec] = {}
    stages: list[StageSpec]
    base_dir: str = "."


TOP_KEYS = {"name", "model", "seed", "datasets", "defaults", "stages"}


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    """``key.path=value`` strings → (key path, value parsed as YAML, or the text when it is not YAML).

    Raises UserError for an item without '=' and for YAML the strict loader refuses (a repeated
    key, aliases that expand too far: :mod:`weightsmith.yamlfile`).
    """
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {shorten(item)} must look like key=value (e.g. stages.sft.max_steps=50).")
        try:
            parsed = load_yaml_text(value) if value else ""
        except StrictYamlError as exc:
            raise UserError(f"override {shorten(item)}: {exc.problem}.") from exc
        except yaml.YAMLError:  # not YAML: the text itself
            parsed = value
        out.append((key.split("."), parsed))
    return out


def _join_dotted_keys(node: Any, parts: list[str]) -> list[str]:
    """Names may hold '.' (a stage ``sft.v2``, a dataset ``docs.2024``): at each level of ``node``,
    the longest run of ``parts`` that names an existing key is one key."""
    out: list[str] = []
    i = 0
    while i < len(parts):
        j = i + 1
        if isinstance(node, dict):
            j = next((k for k in range(len(parts), i, -1) if ".".join(parts[i:k]) in node), i + 1)
        out.append(".".join(parts[i:j]))
        node = node.get(out[-1]) if isinstance(node, dict) else None
        i = j
    return out


def _apply_override(raw: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    stages = raw.get("stages") or {}
    path = _join_dotted_keys(raw, path)
    # `sft.max_steps=5` is short for `stages.sft.max_steps=5`.
    if path[0] not in TOP_KEYS and _join_dotted_keys(stages, path)[0] in stages:
        path = ["stages", *_join_dotted_keys(stages, path)]
    text = shorten(text)
    if path[0] not in TOP_KEYS:
        raise UserError(f"override {text}: no top-level key {shorten(path[0])}{closest(path[0], [*TOP_KEYS, *stages])}.")
    if path[0] == "stages" and len(path) > 2 and path[1] not in stages:
        raise UserError(f"override {text}: no stage {shorten(path[1])}{closest(path[1], stages)}.")
    node = raw
    for i, key in enumerate(path[:-1]):
        if node.get(key) is None and i > 0:
            node[key] = {}  # e.g. sft.lora.r=8 on a stage without a lora block
        if not isinstance(node.get(key), dict):
            raise UserError(f"override {text}: {shorten('.'.join(path[: i + 1]))} is not a mapping.")
        node = node[key]
    node[path[-1]] = value


def load_pipeline(path: str | Path, overrides: list[str] = ()) -> PipelineSpec:
    """Read, override and validate a pipeline YAML; every problem is one UserError naming the key."""
    path = Path(path)
    raw = load_yaml_mapping(path, "pipeline", "'name' and 'stages'")
    return pipeline_from_mapping(raw, overrides, path)


def pipeline_from_mapping(raw: dict[str, Any], overrides: list[str], path: Path) -> PipelineSpec:
    """Override and validate a pipeline given as a mapping; ``path`` is where relative paths start.

    Used for a pipeline YAML file and for one sent as text or as a mapping (the service layer).
    """
    if not isinstance(raw, dict):
        raise UserError(f"{path.name}: a pipeline is a mapping with 'name' and 'stages'.")
    for item, (keys, value) in zip(overrides, parse_overrides(list(overrides))):
        _apply_override(raw, keys, value, item)  # the text as given: str(value) may be huge
    return validate_pipeline(raw, path)


def parse_pipeline_text(text: str, shown: str) -> dict[str, Any]:
    """Parse a pipeline sent as YAML text; a syntax error names the line, like a file's would."""
    try:
        raw = load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise UserError(describe_yaml_error(exc, shown)) from None
    if not isinstance(raw, dict):
        raise UserError(f"{shown}: a pipeline is a mapping with 'name' and 'stages'.")
    return raw


def validate_pipeline(raw: dict[str, Any], path: Path) -> PipelineSpec:
    from weightsmith.evals.stages import CONFIGS as REGISTRY_CONFIGS
    from weightsmith.training import STAGE_KINDS as TRAINING_KINDS
    from weightsmith.training import stage_config_class as training_config_class

    STAGE_KINDS = (*TRAINING_KINDS, *REGISTRY_KINDS)

    def stage_config_class(kind: str):
        return REGISTRY_CONFIGS[kind] if kind in REGISTRY_CONFIGS else training_config_class(kind)

    where = str(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise UserError(f"{where}: unknown key {shorten(key)}{closest(str(key), TOP_KEYS)}.")
    name = raw.get("name") or path.stem
    if not isinstance(name, str):
        raise UserError(f"{where}: 'name' must be a string.")
    # The model's name is a registry name (NAME@vN): the one name rule, as for `data add`.
    model_name = raw.get("model") or name
    named_by = "model" if raw.get("model") else "name (the model's name when there is no 'model:')"
    check_name(model_name, "model", f"{where}: {named_by}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        raise UserError(f"{where}: 'seed' must be an integer, got {shorten(seed)}.")

    datasets: dict[str, DatasetSpec] = {}
    raw_datasets = raw.get("datasets") or {}
    if not isinstance(raw_datasets, dict):
        raise UserError(f"{where}: 'datasets' must be a mapping of dataset name to its path and format.")
    for ds_name, ds in raw_datasets.items():
        check_name(ds_name, "dataset", f"{where}: datasets")  # the rule `data add` enforces
        try:
            datasets[ds_name] = DatasetSpec.model_validate(ds)
        except ValidationError as exc:
            raise UserError(f"{where}: datasets.{ds_name}: {_first_error(exc, DatasetSpec)}") from exc
        if datasets[ds_name].max_chars is not None and datasets[ds_name].format.strip().lower() == "text":
            raise UserError(
                f"{where}: datasets.{ds_name}.max_chars: text documents are never capped (training splits them "
                "into blocks); max_chars limits chat, preference and prompt rows, so remove it here."
            )

    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UserError(f"{where}: 'defaults' must be a mapping of hyperparameters.")
    raw_stages = raw.get("stages")
    if not isinstance(raw_stages, dict) or not raw_stages:
        raise UserError(f"{where}: 'stages' must be a non-empty mapping of stage name to settings.")

    stages: list[StageSpec] = []
    names = set(raw_stages)
    for stage_name, body in raw_stages.items():
        # A stage's name names its job, and a pairs stage's output dataset: the one name rule.
        check_name(stage_name, "stage", f"{where}: stages")
        key = f"stages.{stage_name}"
        if body is not None and not isinstance(body, dict):
            raise UserError(f"{where}: {key}: must be a mapping of settings, got {shorten(body)}.")
        body = dict(body or {})
        kind = body.pop("kind", stage_name)
        if kind not in STAGE_KINDS:
            raise UserError(
                f"{where}: {key}: unknown stage kind {shorten(kind)}{closest(str(kind), STAGE_KINDS)}; "
                f"kinds are {', '.join(STAGE_KINDS)} (set 'kind:' when the stage name is not one)."
            )
        refs = {k: body.pop(k) for k in REFERENCE_KEYS[1:] if k in body}
        after = refs.get("after") or []
        if isinstance(after, str):
            after = [after]
        for dep in after:
            if not isinstance(dep, str) or dep not in names:
                raise UserError(f"{where}: {key}.after: no stage {shorten(dep)}{closest(str(dep), names)}.")
        if refs.get("data") is None and kind in STAGE_DATA_FORMAT:
            raise UserError(f"{where}: {key}: a {kind} stage needs 'data:' (a {STAGE_DATA_FORMAT[kind]} dataset).")
        if kind in NEEDS_MODEL and refs.get("model") is None:
            raise UserError(f"{where}: {key}: a {kind} stage needs 'model:' (a stage name, NAME@vN or a model folder).")
        if kind in NEEDS_TOKENIZER and refs.get("tokenizer") is None:
            raise UserError(f"{where}: {key}: a {kind} stage needs 'tokenizer:' (a tokenizer stage or folder).")
        config_cls = stage_config_class(kind)
        merged = {k: v for k, v in defaults.items() if k in config_cls.model_fields}
        merged.update(body)
        try:
            config = config_cls.model_validate(merged).model_dump(mode="json")
        except ValidationError as exc:
            raise UserError(f"{where}: {key}.{_first_error(exc, config_cls, extra=REFERENCE_KEYS)}") from exc
        stages.append(
            StageSpec(
                name=stage_name,
                kind=kind,
                data=_str_ref(refs.get("data"), where, key, "data"),
                model=_str_ref(refs.get("model"), where, key, "model"),
                tokenizer=_str_ref(refs.get("tokenizer"), where, key, "tokenizer"),
                after=after,
                config=config,
            )
        )
    _check_names_used_once(stages, datasets, where)
    _check_acyclic(stages, where)
    return PipelineSpec(
        name=name, model=model_name, seed=seed, datasets=datasets, stages=stages, base_dir=str(path.parent.resolve())
    )


def _str_ref(value: Any, where: str, key: str, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: {key}.{field} must be a name or path, got {shorten(value)}.")
    return value


def _first_error(exc: ValidationError, cls: type[BaseModel], extra: tuple[str, ...] = ()) -> str:
    err = exc.errors()[0]
    loc = clip(".".join(str(p) for p in err["loc"]))
    if err["type"] == "extra_forbidden":
        field = str(err["loc"][-1])
        known = [*cls.model_fields, *extra]
        return f"{loc}: unknown key{closest(field, known)}; known keys: {', '.join(sorted(known))}."
    if err["type"] == "missing":
        return f"{loc}: required key is missing."
    return f"{loc}: {err['msg']} (got {shorten(err.get('input'))})."


def _check_names_used_once(stages: list[StageSpec], datasets: dict[str, DatasetSpec], where: str) -> None:
    """A stage named like a dataset, or naming itself, would read as a dependency cycle; say what it is."""
    for stage in stages:
        other = f"{stage.name}_{stage.kind}" if stage.kind != stage.name else f"{stage.name}_stage"
        if stage.name in datasets:
            raise UserError(
                f"{where}: the name '{stage.name}' is used twice, by datasets.{stage.name} and by "
                f"stages.{stage.name}; rename the stage (e.g. to '{other}'): a 'data: {stage.name}' cannot say which "
                "one it means."
            )
        for field, what in (("data", "dataset"), ("model", "model"), ("tokenizer", "tokenizer")):
            if getattr(stage, field) == stage.name:
                raise UserError(
                    f"{where}: stages.{stage.name}.{field}: '{stage.name}' is also this stage's own name, so it reads "
                    f"as the stage itself, not the {what} '{stage.name}'; rename the stage (e.g. to '{other}')."
                )


def _check_acyclic(stages: list[StageSpec], where: str) -> None:
    names = {s.name for s in stages}
    deps = {s.name: s.upstream(names) for s in stages}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise UserError(f"{where}: stages form a cycle: {' -> '.join(trail + [node])}.")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in deps[node]:
            visit(dep, trail + [node])
        state[node] = 2

    for s in stages:
        visit(s.name, [])
