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

A training stage's ``data:`` may also be a mix, ``{dataset: weight, ...}``: the weights are
sampling proportions (:mod:`weightsmith.training.mixing` says exactly how), e.g. SFT with replay
of the pre-training text ``data: {tasks: 1.0, docs: 0.3}``. A model-consuming training stage may
start from a fresh model instead of a trained one: ``model: {init: random, size: small,
tokenizer: tokenizer}`` (the named sizes of the pretrain stage, seeded by the pipeline seed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from weightsmith.errors import UserError, clip, closest, shorten
from weightsmith.names import check_name
from weightsmith.training.models import MODEL_SIZES
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
# Stage kinds whose data may be a mix of datasets with weights, and the formats each mixes: sft
# replays text datasets as plain language-model loss next to its chat data.
MIX_FORMATS = {
    "tokenizer": ("text",),
    "pretrain": ("text",),
    "cpt": ("text",),
    "sft": ("chat", "text"),
    "dpo": ("preference",),
    "grpo": ("prompt",),
}
# Stage kinds that may start from a random initialization (model: {init: random, ...}).
RANDOM_INIT_KINDS = ("cpt", "sft", "dpo", "grpo")
# What each key means, for the generated reference (weightsmith.reference, `weightsmith stages`).
REFERENCE_KEY_HELP = {
    "kind": "The stage's recipe; defaults to the stage's name, so a stage named sft needs no kind. "
            "Set it to run a recipe twice (e.g. sft_lora: {kind: sft}).",
    "data": "The dataset it reads: a dataset of the pipeline's datasets:, a workspace dataset NAME or "
            "NAME@vN, or a stage of this pipeline that produces one (pairs). A training stage may mix several "
            "with weights, {qa: 1.0, docs: 0.3}: each training example comes from a dataset with probability "
            "weight / sum of weights (sft replays text datasets as plain-text loss).",
    "model": "The model it starts from: a stage of this pipeline, NAME@vN, NAME@ALIAS or a local "
             "Hugging Face model folder; or, for cpt, sft, dpo and grpo, a fresh model: "
             "{init: random, size: small, tokenizer: TOKENIZER}, seeded by the pipeline seed.",
    "tokenizer": "The tokenizer a model trained from scratch uses: a tokenizer stage of this pipeline "
                 "or a tokenizer folder.",
    "after": "Stages (a name or a list) it waits for besides the ones it names as data, model or tokenizer.",
}


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="file or folder, relative to the pipeline YAML")
    format: str = Field(description="text | chat | preference | prompt")
    max_chars: int | None = Field(
        None, ge=1, description="the most characters one chat/preference/prompt row may hold (default 200,000)"
    )


class RandomInit(BaseModel):
    """``model: {init: random, size: ..., tokenizer: ...}``: a stage that starts from fresh weights."""

    model_config = ConfigDict(extra="forbid")
    init: Literal["random"] = Field(description="'random': a freshly initialized model, seeded by the pipeline seed")
    size: Literal[tuple(MODEL_SIZES)] = Field(  # type: ignore[valid-type]
        description=f"a named model size of the pretrain stage: {', '.join(MODEL_SIZES)}"
    )
    tokenizer: str = Field(description="a tokenizer stage, NAME@vN (that model's tokenizer) or a tokenizer folder")


class StageSpec(BaseModel):
    """A validated stage: its references, and its recipe's hyperparameters.

    ``data`` is one dataset (or producing stage) name, or a mix ``{name: weight}``; ``model_init``
    is set instead of ``model`` when the stage starts from a random initialization (its tokenizer
    is then ``tokenizer``).
    """

    name: str
    kind: str
    data: str | dict[str, float] | None = None
    model: str | None = None
    model_init: dict[str, str] | None = None
    tokenizer: str | None = None
    after: list[str] = []
    config: dict[str, Any] = {}

    @property
    def data_names(self) -> list[str]:
        """The datasets (or producing stages) this stage reads: one, or every name of its mix."""
        if self.data is None:
            return []
        return [self.data] if isinstance(self.data, str) else list(self.data)

    def upstream(self, stage_names: set[str]) -> list[str]:
        """Stages this one waits for: the ones it names as model/tokenizer/data, plus ``after``."""
        refs = [r for r in (self.model, self.tokenizer, *self.data_names) if r in stage_names]
        return list(dict.fromkeys(refs + self.after))


class PipelineSpec(BaseModel):
    name: str
    model: str
    seed: int = 0
    datasets: dict[str, DatasetSpec] = {}
    stages: list[StageSpec]
    base_dir: str = "."

    def up_to(self, targets: list[str]) -> PipelineSpec:
        """The pipeline cut to the ``targets`` stages and every stage they wait for, transitively (in the
        file's order), like ``make TARGET``: the stages after them are left out, their datasets kept.

        Raises:
            UserError: a target that is no stage of the pipeline, with the closest name.
        """
        names = {stage.name for stage in self.stages}
        by_name = {stage.name: stage for stage in self.stages}
        needed: set[str] = set()
        todo = list(targets)
        while todo:
            name = todo.pop()
            if name not in names:
                raise UserError(f"pipeline {self.name}: no stage {shorten(name)}{closest(str(name), sorted(names))}.")
            if name not in needed:
                needed.add(name)
                todo.extend(by_name[name].upstream(names))
        return self.model_copy(update={"stages": [stage for stage in self.stages if stage.name in needed]})


TOP_KEYS = {"name", "model", "seed", "datasets", "defaults", "stages"}
TOP_KEY_HELP = {
    "name": "The pipeline's name (default: the file's name).",
    "model": "The registry name every stage's model is versioned under, NAME@v1, NAME@v2, ... (default: name).",
    "seed": "Seed of every stage: model init, data order, sampling (default 0).",
    "datasets": "Datasets the pipeline brings from files next to it: NAME: {path, format, max_chars}; "
                "validated and versioned before any job is queued.",
    "defaults": "Settings applied to every stage whose recipe has the key (e.g. {device: cpu, threads: 1}); "
                "a stage's own value wins.",
    "stages": "The stages by name, each a mapping of its references and its recipe's settings; each stage is a job.",
}

# The names users type from transformers/TRL/peft, and ours: the first key of each tuple that the
# stage has is suggested (before any spelling match: 'learning_rate' is closer in spelling to
# 'padding_free' than to 'lr'), with a note when the meaning differs. 'lora.r' means the key r of
# the stage's lora block.
LIBRARY_NAMES: dict[str, tuple[tuple[str, ...], str]] = {
    "learning_rate": (("lr",), ""),
    "num_train_epochs": (("max_steps",), "stages count optimizer steps, not epochs; the data repeats as needed"),
    "epochs": (("max_steps",), "stages count optimizer steps, not epochs; the data repeats as needed"),
    "per_device_train_batch_size": (("batch_size",), ""),
    "train_batch_size": (("batch_size",), ""),
    "gradient_accumulation_steps": (("grad_accum",), ""),
    "warmup_ratio": (("warmup_steps",), "a number of steps, not a fraction of the run"),
    "lr_scheduler_type": (("lr_schedule",), ""),
    "gradient_checkpointing": (("activation_checkpointing",), ""),
    "save_total_limit": (("keep_checkpoints",), ""),
    "max_seq_length": (("max_length", "seq_len"), ""),
    "max_length": (("seq_len",), ""),
    "block_size": (("seq_len", "max_length"), ""),
    "max_new_tokens": (("max_completion_length",), ""),
    "peft_config": (("lora",), "a block such as lora: {r: 8}"),
    "use_peft": (("lora",), "a block such as lora: {r: 8}; leave it out to train every weight"),
    "lora_r": (("r", "lora.r"), ""),
    "rank": (("r", "lora.r"), ""),
    "lora_alpha": (("alpha", "lora.alpha"), ""),
    "lora_dropout": (("dropout", "lora.dropout"), ""),
    "lora_target_modules": (("target_modules", "lora.target_modules"), ""),
    "target_modules": (("lora.target_modules",), ""),
    "reward_funcs": (("reward",), ""),
    "use_cpu": (("device",), "device: cpu"),
    "bf16": (("dtype",), "dtype: bfloat16"),
    "fp16": (("dtype",), "dtype: float16"),
    "optimizer": (("optim",), ""),
    "no_cuda": (("device",), "device: cpu"),
    "num_threads": (("threads",), ""),
    "torch_num_threads": (("threads",), ""),
    "omp_num_threads": (("threads",), ""),
    "nproc_per_node": (("processes",), ""),
    "fsdp": (("distributed",), "distributed: fsdp"),
    "fsdp_config": (("distributed",), "distributed: fsdp"),
    "min_freq": (("min_frequency",), ""),
    "model_name_or_path": (("model",), ""),
    "dataset": (("data",), ""),
    "dataset_name": (("data",), ""),
    "train_dataset": (("data",), ""),
}


def suggest_key(name: str, known) -> str:
    """The hint for an unknown key: ``" (did you mean 'lr'?)"``, or ``""`` when nothing fits.

    The transformers/TRL/peft names people type (:data:`LIBRARY_NAMES`: ``learning_rate`` → ``lr``,
    ``num_train_epochs`` → ``max_steps``, ``lora_r`` → ``lora.r``) come first, then the closest spelling
    among ``known`` (the keys valid where ``name`` was written).
    """
    known = list(known)
    targets, note = LIBRARY_NAMES.get(str(name).strip().lower(), ((), ""))
    for target in targets:
        head = target.split(".")[0]
        if target in known or ("." in target and head in known):
            block = f", written {head}: {{{target.split('.', 1)[1]}: ...}}" if "." in target else ""
            return f" (did you mean '{target}'{block}?{' ' + note if note else ''})"
    if targets:  # a library name whose setting this place does not have: a spelling match would mislead
        return f" (the transformers/TRL name of '{targets[-1]}', which is not a setting here)"
    return closest(str(name), known)


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
        hint = _stage_setting_hint(path, stages, text) or f"{closest(path[0], [*TOP_KEYS, *stages])}."
        raise UserError(f"override {text}: no top-level key {shorten(path[0])}{hint}")
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


def _stage_setting_hint(path: list[str], stages: dict[str, Any], text: str) -> str:
    """For ``learning_rate=1e-3`` (a stage setting written without its stage): which key, and where it goes."""
    if len(path) != 1:
        return ""
    from weightsmith.evals.stages import CONFIGS as REGISTRY_CONFIGS
    from weightsmith.training import STAGE_KINDS, stage_config_class

    having: list[str] = []
    ours = None
    note = LIBRARY_NAMES.get(path[0].lower(), ((), ""))[1]
    for stage_name, body in stages.items():
        kind = (body or {}).get("kind", stage_name) if isinstance(body, dict) or body is None else None
        if kind not in (*STAGE_KINDS, *REGISTRY_CONFIGS):
            continue
        fields = (REGISTRY_CONFIGS.get(kind) or stage_config_class(kind)).model_fields
        targets = (path[0], *LIBRARY_NAMES.get(path[0].lower(), ((), ""))[0])
        key = next((t for t in targets if t.split(".")[0] in fields), None)
        if key is not None:
            ours = ours or key
            having.append(stage_name)
    if not having:
        return ""
    value = "..." if note else text.strip("'\"").partition("=")[2]
    note = f" ({note})" if note else ""
    return (f"; '{ours}' is a stage setting: write {having[0]}.{ours}={value} for one stage, or "
            f"defaults.{ours}={value} for every stage that has it ({', '.join(having)}){note}.")


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
        model_init = None
        if isinstance(refs.get("model"), dict):
            model_init = _random_init(refs["model"], kind, refs.get("tokenizer"), where, key)
            refs["model"], refs["tokenizer"] = None, model_init.pop("tokenizer")
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
                data=_data_ref(refs.get("data"), kind, where, key),
                model=_str_ref(refs.get("model"), where, key, "model"),
                model_init=model_init,
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


def _data_ref(value: Any, kind: str, where: str, key: str) -> str | dict[str, float] | None:
    """``data:``: one name, or a mix of names with weights (sampling proportions, each > 0)."""
    if not isinstance(value, dict):
        return _str_ref(value, where, key, "data")
    if kind not in MIX_FORMATS:
        raise UserError(
            f"{where}: {key}.data: a {kind} stage reads one dataset; a mix (name: weight) is for the training stages "
            f"({', '.join(MIX_FORMATS)})."
        )
    if not value:
        raise UserError(
            f"{where}: {key}.data: a mix needs at least one dataset, written name: weight (e.g. {{qa: 1.0}})."
        )
    mix: dict[str, float] = {}
    for name, weight in value.items():
        if not isinstance(name, str) or not name:
            raise UserError(f"{where}: {key}.data: a mix's keys are dataset or stage names, got {shorten(name)}.")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise UserError(
                f"{where}: {key}.data.{clip(name)}: the weight must be a number > 0 (its share of the training "
                f"examples is weight / sum of the weights), got {shorten(weight)}."
            )
        mix[name] = float(weight)
    return mix


def _random_init(value: dict, kind: str, tokenizer: Any, where: str, key: str) -> dict[str, str]:
    """``model: {init: random, size, tokenizer}`` → {init, size, tokenizer}; every mistake names the key."""
    if kind not in RANDOM_INIT_KINDS:
        what = "starts from a random initialization already" if kind == "pretrain" else "needs a trained model"
        raise UserError(
            f"{where}: {key}.model: a {kind} stage {what}; model: {{init: random, ...}} starts a training stage "
            f"({', '.join(RANDOM_INIT_KINDS)})."
        )
    try:
        spec = RandomInit.model_validate(value)
    except ValidationError as exc:
        raise UserError(f"{where}: {key}.model.{_first_error(exc, RandomInit)}") from exc
    if tokenizer is not None and tokenizer != spec.tokenizer:
        raise UserError(
            f"{where}: {key}.tokenizer: a random initialization takes its tokenizer from model.tokenizer "
            f"({shorten(spec.tokenizer)}); remove 'tokenizer:' here or make the two the same."
        )
    return spec.model_dump()


def _first_error(exc: ValidationError, cls: type[BaseModel], extra: tuple[str, ...] = ()) -> str:
    err = exc.errors()[0]
    loc = clip(".".join(str(p) for p in err["loc"]))
    if err["type"] == "extra_forbidden":
        field = str(err["loc"][-1])
        known = [*cls.model_fields, *extra]
        return f"{loc}: unknown key{suggest_key(field, known)}; known keys: {', '.join(sorted(known))}."
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
            if stage.name in (stage.data_names if field == "data" else [getattr(stage, field)]):
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
