"""What every training stage shares: the stage contract, common hyperparameters, input checks.

This module is imported when a pipeline YAML is validated, long before any compute, so it must
stay cheap: no torch / transformers / trl at module level (heavy imports live inside functions).

The correctness-critical pieces that the recipes must not each re-invent live here once:
the hyperparameter names (:class:`TrainStageConfig`), the mapping onto HF ``TrainingArguments``
(:func:`trainer_arguments`), how a run resumes and what it reports (:func:`train_with_resume`),
and how a model becomes an output directory (:func:`save_model_dir`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from weightsmith.errors import UserError
from weightsmith.training.lora import QUANTIZE_ON_CPU, LoraSettings, merge_adapters, quantization_config
from weightsmith.training.models import MODEL_SIZES

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

DataFormat = Literal["text", "chat", "preference", "prompt"]

# The keys a normalized row of each dataset format must carry.
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "chat": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt": ("prompt",),
}


# ---------------------------------------------------------------------------------------------
# The stage contract: what the runner hands a recipe
# ---------------------------------------------------------------------------------------------


class DataSource(BaseModel):
    """One dataset of a stage's data mix (:mod:`weightsmith.training.mixing` says what the weights mean)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The dataset as the pipeline names it: a key of the stage's data mapping.")
    ref: str | None = Field(None, description="The dataset version it resolved to (NAME@vN), for the report.")
    path: Path = Field(description="Normalized JSONL dataset, one object per line.")
    format: DataFormat = Field(description="Format of path: text, chat, preference or prompt.")
    weight: float = Field(gt=0.0, description="Sampling weight: the dataset's share of the examples is weight / sum.")


class ModelInit(BaseModel):
    """Start from fresh weights (of a named size, with tokenizer_path's vocabulary) instead of a model directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    init: Literal["random"] = Field(
        description="'random': initialized as the pretrain stage initializes, seeded by the stage seed."
    )
    size: Literal[tuple(MODEL_SIZES)] = Field(  # type: ignore[valid-type]
        description=f"Named model size: {', '.join(MODEL_SIZES)}."
    )

    def describe(self) -> str:
        """How lineage names this start: ``init: random (size small)``."""
        return f"init: {self.init} (size {self.size})"


class StageInputs(BaseModel):
    """The artifacts a stage reads; which ones are required depends on the stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_path: Path | None = Field(None, description="Normalized JSONL dataset, one object per line.")
    data_format: DataFormat | None = Field(None, description="Format of data_path: text, chat, preference or prompt.")
    data_mix: list[DataSource] | None = Field(
        None, min_length=1, description="Several datasets with sampling weights, instead of data_path."
    )
    model_path: Path | None = Field(None, description="A local Hugging Face model directory to start from.")
    model_init: ModelInit | None = Field(None, description="Start from a fresh model instead of model_path.")
    tokenizer_path: Path | None = Field(None, description="A local Hugging Face tokenizer directory.")

    @model_validator(mode="after")
    def _one_of_each(self) -> StageInputs:
        if self.data_path is not None and self.data_mix is not None:
            raise ValueError("give data_path or data_mix, not both")
        if self.model_path is not None and self.model_init is not None:
            raise ValueError("give model_path or model_init, not both")
        return self


class StageContext(BaseModel):
    """Where a stage keeps its state and writes its results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    work_dir: Path = Field(description="Persists across retries of one job; checkpoints live here.")
    output_dir: Path = Field(description="Where the final artifact goes (empty or absent at start).")
    seed: int = Field(0, description="Seed for model init, data order and sampling.")
    metrics_path: Path = Field(description="JSONL file that receives one row per logging step.")
    result_path: Path = Field(description="JSON file written once at the end.")

    @property
    def checkpoints_dir(self) -> Path:
        return self.work_dir / "checkpoints"


# ---------------------------------------------------------------------------------------------
# Hyperparameters shared by every recipe that trains weights
# ---------------------------------------------------------------------------------------------


THREADS_HELP = (
    "CPU threads the stage computes with (torch.set_num_threads), shared by its processes. Default: the worker's "
    "share of the machine's cores, cores // the stages running on it at once."
)


def apply_threads(threads: int | None, kind: str) -> int | None:
    """Limit the CPU threads of this stage process; returns the number set, or None (the libraries' default).

    The worker gives each stage process its share of the cores in ``WEIGHTSMITH_THREADS`` (already
    divided among the stage's processes), which wins; a stage run by hand uses its ``threads`` setting,
    divided among its ``LOCAL_WORLD_SIZE`` processes. Two processes that each take every core slow each
    other down tens of times on a small machine (OpenMP threads spin waiting for each other).
    """
    given = os.environ.get("WEIGHTSMITH_THREADS", "")
    world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    count = int(given) if given.isdigit() and int(given) > 0 else (max(1, threads // world) if threads else None)
    if count is None:
        return None
    os.environ["RAYON_NUM_THREADS"] = str(count)  # the tokenizers library's pool, read when it first starts
    if kind != "tokenizer":  # the tokenizer stage never loads torch
        import torch

        torch.set_num_threads(count)
    return count


Dtype = Literal["auto", "float32", "bfloat16", "float16"]
EVAL_DTYPES: tuple[str, ...] = get_args(Dtype)  # the same names for evaluating and serving

DTYPE_HELP = (
    "Training precision. 'auto': bfloat16 on a CUDA GPU that supports it and on a CPU with native bfloat16 "
    "matrix instructions (AVX512-BF16 or AMX), else float32. bfloat16 / float16 are mixed precision through the "
    "trainer's own bf16 / fp16 settings (fp32 master weights, half-precision compute; float16 adds loss scaling "
    "and needs CUDA). The saved model's weights are in this dtype and its config.json's dtype says so."
)

FLOAT16_ON_CPU = (
    "float16 needs a CUDA GPU (fp16 mixed precision relies on CUDA loss scaling, and the CPU has no fast "
    "float16 arithmetic); on the CPU use dtype: bfloat16, float32, or auto (bfloat16 where the CPU has it natively)"
)


Distributed = Literal["ddp", "fsdp"]

DISTRIBUTED_HELP = (
    "How processes > 1 split the work. 'ddp': each process holds the whole model and optimizer "
    "(DistributedDataParallel). 'fsdp': the parameters, gradients and optimizer state are sharded across the processes (PyTorch FSDP2 through "
    "the trainer's own fsdp settings, one decoder layer a unit; Zhao et al. 2023, PyTorch FSDP), for a model that does "
    "not fit one GPU. Checkpoints hold the full (gathered) state and resume; the saved model is a normal folder. "
    "fsdp needs CUDA GPUs and cannot be combined with lora."
)

FSDP_ON_CPU = (
    "distributed: fsdp needs CUDA GPUs (accelerate shards a model only across GPUs, and would silently run CPU "
    "processes as DDP); on the CPU use distributed: ddp, or leave distributed out"
)


# The optimizers of transformers' OptimizerNames a stage offers: those that need no other package, then
# bitsandbytes' 8-bit and paged ones (CUDA only). The others need packages we neither ship nor test.
TORCH_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")
BNB_OPTIMIZERS = (
    "adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "lion_8bit", "paged_lion_8bit",
)
Optimizer = Literal[TORCH_OPTIMIZERS + BNB_OPTIMIZERS]  # type: ignore[valid-type]

OPTIM_HELP = (
    "The optimizer, by transformers' name (TrainingArguments.optim); null: the library's default AdamW "
    "(adamw_torch, fused on recent PyTorch). adamw_8bit, paged_adamw_8bit and the other bitsandbytes optimizers "
    "keep the optimizer state in 8 bits or page it to CPU memory (Dettmers et al. 2022, 8-bit Optimizers via "
    "Block-wise Quantization); they need a CUDA GPU and the bitsandbytes package."
)


class TrainStageConfig(BaseModel):
    """Hyperparameters that mean the same thing in every training recipe.

    Recipes subclass this and may change a default (e.g. a smaller ``lr`` for DPO), never a meaning.
    """

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(60, ge=1, description="Optimizer steps to train for; the data is repeated as needed.")
    batch_size: int = Field(8, ge=1, description="Sequences per device per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(1e-4, gt=0.0, description="Peak learning rate (AdamW).")
    lr_schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate decay after warmup."
    )
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warmup from 0 to lr.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    adam_beta2: float = Field(
        0.999, gt=0.0, lt=1.0,
        description="AdamW's second-moment decay; 0.95 (shorter memory) is the usual choice for pre-training.",
    )
    max_grad_norm: float = Field(1.0, ge=0.0, description="Clip the global gradient norm to this (0 disables).")
    logging_steps: int = Field(5, ge=1, description="Write a metrics row every this many steps.")
    save_steps: int = Field(50, ge=1, description="Write a resumable checkpoint every this many steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Complete checkpoints kept in work_dir (older are deleted).")
    activation_checkpointing: bool = Field(
        False,
        description="Recompute activations in backward to save memory (transformers' activation_checkpointing, "
        "formerly gradient_checkpointing; the model's KV cache is off while it trains). Same loss, more compute.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for training (the Trainer's torch_compile, inductor backend): elementwise "
        "work fused into a few kernels, after a one-off compile (~40 s on two CPU cores). Same loss to float tolerance; "
        "the saved model is the plain one. Meant for GPUs and larger models: on two CPU cores the 4.7M-parameter "
        "`small` model's SFT step measured the same compiled or not.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto': CUDA when available, else the CPU."
    )
    dtype: Dtype = Field("auto", description=DTYPE_HELP)
    optim: Optimizer | None = Field(None, description=OPTIM_HELP)
    processes: int = Field(
        1,
        ge=1,
        description="Data-parallel processes, launched with torchrun (one per GPU; on a CPU each gets an equal "
        "share of the cores). batch_size is per process: the global batch is processes x batch_size x grad_accum.",
    )
    distributed: Distributed = Field("ddp", description=DISTRIBUTED_HELP)
    threads: int | None = Field(None, ge=1, description=THREADS_HELP)

    @model_validator(mode="after")
    def _fsdp_fits(self) -> TrainStageConfig:
        if self.distributed == "fsdp" and self.processes < 2:
            raise ValueError(
                "distributed: fsdp shards the model across processes: set processes to the number of GPUs "
                "(2 or more), or leave distributed out"
            )
        if self.distributed == "fsdp" and getattr(self, "lora", None) is not None:
            raise ValueError(
                "lora with distributed: fsdp is not supported: train LoRA adapters with distributed: ddp (the base "
                "weights are frozen, so each GPU holds them once), or train all weights with fsdp"
            )
        return self

    @field_validator("dtype")
    @classmethod
    def _dtype_fits_device(cls, value: str, info: ValidationInfo) -> str:
        if value == "float16" and info.data.get("device") == "cpu":
            raise ValueError(FLOAT16_ON_CPU)
        return value


class FineTuneConfig(TrainStageConfig):
    """Stages that start from an existing model and may train adapters instead of all weights."""

    lora: LoraSettings | None = Field(None, description="Train LoRA adapters (merged on save); null trains all weights.")

    @model_validator(mode="after")
    def _quantize_fits_device(self) -> FineTuneConfig:
        if self.lora is not None and self.lora.quantize is not None and self.device == "cpu":
            raise ValueError(QUANTIZE_ON_CPU)
        return self


# ---------------------------------------------------------------------------------------------
# Input checks: cheap, before any heavy import, so a user mistake costs no compute
# ---------------------------------------------------------------------------------------------


def read_rows(inputs: StageInputs, kind: str, expected: DataFormat) -> list[dict[str, Any]]:
    """Read the stage's JSONL dataset, refusing one of the wrong format.

    Args:
        inputs: the stage inputs; ``data_path`` must be set.
        kind: the stage name, used in messages.
        expected: the dataset format the stage trains on.
    """
    if inputs.data_path is None:
        raise UserError(f"stage '{kind}' needs a {expected} dataset: set inputs.data_path.")
    if inputs.data_format is not None and inputs.data_format != expected:
        raise UserError(
            f"stage '{kind}' trains on a {expected} dataset but got a {inputs.data_format} dataset "
            f"({inputs.data_path}); give it a dataset of format '{expected}'."
        )
    path = Path(inputs.data_path)
    if not path.is_file():
        raise UserError(f"dataset file {path} does not exist.")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}, line {line_number}: not valid JSON ({exc.msg}).") from exc
            missing = [key for key in FORMAT_KEYS[expected] if not isinstance(row, dict) or key not in row]
            if missing:
                raise UserError(
                    f"{path}, line {line_number}: a {expected} row needs the key(s) {', '.join(missing)}; "
                    f"stage '{kind}' trains on {expected} data."
                )
            rows.append(row)
    if not rows:
        raise UserError(f"dataset {path} has no rows; stage '{kind}' needs at least one.")
    return rows


def require_model_dir(inputs: StageInputs, kind: str) -> Path:
    """Return ``inputs.model_path`` after checking it looks like a HF model directory."""
    if inputs.model_path is None:
        raise UserError(f"stage '{kind}' starts from a model: set inputs.model_path to a model directory.")
    path = Path(inputs.model_path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"model_path {path} is not a model directory (no config.json); point it at a saved model.")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"model_path {path}: config.json is not a valid model config.") from exc
    if not model_type:
        raise UserError(f"model_path {path}: config.json names no model_type, so it is not a model directory.")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.safetensors.index.json")):
        raise UserError(f"model_path {path} has no safetensors weights; save the model with safetensors.")
    return path


def check_start_model(inputs: StageInputs, kind: str) -> Path | None:
    """The model directory the stage starts from (checked), or None when it starts from a random init.

    A random init (``inputs.model_init``) is built later, once the tokenizer is loaded
    (:func:`weightsmith.training.models.random_init_dir`); it needs ``tokenizer_path``.
    """
    if inputs.model_init is None:
        return require_model_dir(inputs, kind)
    if inputs.tokenizer_path is None:
        raise UserError(
            f"stage '{kind}' starts from a random initialization ({inputs.model_init.describe()}), which takes its "
            "vocabulary from a tokenizer: set inputs.tokenizer_path."
        )
    return None


def tokenizer_dir(inputs: StageInputs, kind: str, model_dir: Path | None) -> Path:
    """The tokenizer to use: ``inputs.tokenizer_path`` when given, else the model directory."""
    path = Path(inputs.tokenizer_path) if inputs.tokenizer_path is not None else model_dir
    if path is None:
        raise UserError(f"stage '{kind}' needs a tokenizer: set inputs.tokenizer_path.")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise UserError(f"{path} holds no tokenizer (no tokenizer.json or tokenizer_config.json).")
    return path


def is_main_process() -> bool:
    """True in the only process of a stage, or in rank 0 of a torchrun launch: the one that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def log_line(line: str) -> None:
    """Write one line to the stage log (stderr), from rank 0 only: the ranks of a launch share the log."""
    if is_main_process():
        sys.stderr.write(f"{line}\n")  # one write, so a line is never split by another process's output
        sys.stderr.flush()


def _process_group():
    """``torch.distributed`` when a process group is up (under torchrun), else None."""
    if "torch" not in sys.modules:  # never imported (the tokenizer stage): no process group either
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def wait_for_all_ranks() -> None:
    """Under torchrun, a barrier across the ranks; nothing in a single process."""
    if (dist := _process_group()) is not None:
        dist.barrier()


def leave_process_group() -> None:
    """Under torchrun: wait for every rank (rank 0 may still be saving), then close the process group.

    A rank that exits with the group open aborts in gloo's thread teardown ("terminate called without
    an active exception"), and torchrun then fails the stage that had succeeded.
    """
    if (dist := _process_group()) is not None:
        dist.barrier()
        dist.destroy_process_group()


def prepare_output_dir(ctx: StageContext) -> None:
    """Refuse to overwrite a non-empty output directory before any compute is spent."""
    out = Path(ctx.output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output_dir {out} is not empty; give the stage an empty or new directory.")


# ---------------------------------------------------------------------------------------------
# Heavy helpers (import torch / transformers inside)
# ---------------------------------------------------------------------------------------------


class Precision(NamedTuple):
    """How a stage trains: where, and with which of the trainer's mixed-precision settings."""

    use_cpu: bool
    bf16: bool
    fp16: bool

    @property
    def dtype(self) -> str:
        """The torch dtype name the trained model is saved in: bfloat16, float16 or float32."""
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16, as on AMD Zen 4 and Intel Cooper
    Lake, or AMX, as on Intel Sapphire Rapids and later), so that bf16 mixed precision beats fp32.

    Measured on the quickstart's SFT step (a 4.7M-parameter Llama, ~900 tokens, two threads of an AMD EPYC
    Zen 4): fp32 matmuls 124-174 GFLOP/s, bf16 377-412; the step 216 ms in fp32, 143 ms under bf16 autocast.
    On an Intel Xeon without either, bf16 is emulated and ~300x slower than fp32.
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_precision(device: str, dtype: str = "auto") -> Precision:
    """Resolve a config's ``device`` and ``dtype`` settings into the trainer's ``use_cpu`` / ``bf16`` / ``fp16``.

    ``dtype: auto`` is bf16 on a CUDA GPU that supports it (``torch.cuda.is_bf16_supported()``), bf16 on a
    CPU with native bf16 matrix instructions (:func:`cpu_has_fast_bf16`) and fp32 otherwise; bf16 on any
    CPU is allowed when asked for (where it is emulated, a matmul is ~300x slower than fp32).

    Raises:
        UserError: device cuda without CUDA; more processes than GPUs; float16 on the CPU; bfloat16 on a
            GPU without bf16 support.
    """
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("config device is 'cuda' but no CUDA device is available; use device: auto or cpu.")
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if on_cuda and processes > torch.cuda.device_count():
        raise UserError(
            f"processes is {processes} but this machine has {torch.cuda.device_count()} GPU(s); "
            "use at most one process per GPU."
        )
    if not on_cuda:
        if dtype == "float16":
            raise UserError(f"dtype: {FLOAT16_ON_CPU}.")
        bf16 = dtype == "bfloat16" or (dtype == "auto" and cpu_has_fast_bf16())
        return Precision(use_cpu=True, bf16=bf16, fp16=False)
    bf16_ok = torch.cuda.is_bf16_supported()
    if dtype == "bfloat16" and not bf16_ok:
        raise UserError(
            f"dtype is bfloat16 but the GPU ({torch.cuda.get_device_name()}) does not support it; "
            "use dtype: float16 (or auto, which picks float32 here)."
        )
    return Precision(
        use_cpu=False, bf16=dtype == "bfloat16" or (dtype == "auto" and bf16_ok), fp16=dtype == "float16"
    )


def check_device_settings(cfg: TrainStageConfig) -> Precision:
    """Resolve ``device`` / ``dtype`` (:func:`resolve_precision`) and check ``optim`` against this machine.

    Cheap (no model, no data): the runner calls it before a stage reads anything.

    Raises:
        UserError: as :func:`resolve_precision`; a bitsandbytes optimizer on the CPU or without bitsandbytes;
            distributed: fsdp on the CPU; ``lora.quantize`` on the CPU or without bitsandbytes; a recipe's
            ``check_engines`` refusal (grpo's ``rollouts.engine: vllm``).
    """
    precision = resolve_precision(cfg.device, cfg.dtype)
    if cfg.distributed == "fsdp" and precision.use_cpu:
        raise UserError(f"{FSDP_ON_CPU}.")
    if cfg.optim in BNB_OPTIMIZERS and (where := missing_cuda_or(precision, "bitsandbytes")):
        raise UserError(
            f"optim: {cfg.optim} is a bitsandbytes optimizer, which needs a CUDA GPU and the bitsandbytes package "
            f"(pip install bitsandbytes), but {where}; use one of {', '.join(TORCH_OPTIMIZERS)} or leave optim out."
        )
    lora = getattr(cfg, "lora", None)
    if lora is not None and lora.quantize is not None and (where := missing_cuda_or(precision, "bitsandbytes")):
        raise UserError(
            f"lora.quantize: {lora.quantize} loads the base model through bitsandbytes, which needs a CUDA GPU and "
            f"the bitsandbytes package (pip install 'weightsmith[qlora]'), but {where}; remove lora.quantize to train "
            "LoRA adapters on full-precision base weights."
        )
    if (check := getattr(cfg, "check_engines", None)) is not None:  # a recipe's own engines (grpo's vLLM)
        check(precision)
    return precision


def missing_cuda_or(precision: Precision, package: str) -> str | None:
    """Why a CUDA-only optional ``package`` cannot run this stage ("this stage runs on the CPU", "... is not
    installed"), or None when it can. Checks that the package is installed without importing it."""
    import importlib.util

    if precision.use_cpu:
        return "this stage runs on the CPU"
    return f"{package} is not installed" if importlib.util.find_spec(package) is None else None


def trainer_arguments(cfg: TrainStageConfig, ctx: StageContext, count_tokens: str = "non_padding") -> dict[str, Any]:
    """Keyword arguments for ``TrainingArguments`` (or a TRL config) from our shared hyperparameters.

    Args:
        cfg: the recipe's config.
        ctx: the stage context (checkpoints go to ``ctx.checkpoints_dir``).
        count_tokens: how the Trainer counts ``num_input_tokens_seen``: "all", "non_padding", or "no" for
            trainers that count on their own (GRPO counts prompt + completion tokens itself).
    """
    precision = check_device_settings(cfg)
    optim = {"optim": cfg.optim} if cfg.optim is not None else {}  # else the library's default for this torch
    return dict(
        **optim,
        **fsdp_arguments(cfg),
        output_dir=str(ctx.checkpoints_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_schedule,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        # Rotation is ours (checkpoint.prune_checkpoints): the Trainer's own rotation runs before our
        # completion marker exists and could delete the last complete checkpoint.
        save_total_limit=None,
        seed=ctx.seed,
        data_seed=ctx.seed,
        use_cpu=precision.use_cpu,
        bf16=precision.bf16,
        fp16=precision.fp16,
        # Under FSDP the wrapper checkpoints activations itself (fsdp_arguments): the trainer's own would gather twice.
        activation_checkpointing=cfg.activation_checkpointing and cfg.distributed != "fsdp",
        torch_compile=cfg.compile,
        include_num_input_tokens_seen=count_tokens,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
        save_only_model=False,
    )


def fsdp_arguments(cfg: TrainStageConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` keys that turn on FSDP for ``distributed: fsdp`` ({} for ddp).

    FSDP2 (``fully_shard``, through accelerate's FSDP plugin), each decoder layer of the model's
    ``_no_split_modules`` a unit (transformers' default wrap policy), parameters resharded after each
    forward (ZeRO-3-like). ``FULL_STATE_DICT``: a checkpoint holds the gathered weights
    (``model.safetensors`` and ``pytorch_model_fsdp.bin``) and optimizer state (``optimizer.bin``),
    written by rank 0 and resumable on any number of processes. Activation checkpointing, when on,
    is FSDP's own (``fsdp_config['activation_checkpointing']``).
    """
    if cfg.distributed != "fsdp":
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "state_dict_type": "FULL_STATE_DICT",
            "reshard_after_forward": True,
            "activation_checkpointing": cfg.activation_checkpointing,
        },
    }


def train_with_resume(trainer: Trainer, cfg: TrainStageConfig, ctx: StageContext) -> dict[str, Any]:
    """Train, resuming from the newest whole checkpoint in ``ctx.checkpoints_dir``; report the run.

    The recipe builds its trainer; this function attaches the metrics and checkpoint callbacks,
    picks the checkpoint to resume from, runs the loop and returns the common result fields.
    A checkpoint that is torn or damaged is passed over for the one before it, with one line on
    stderr (the job log) naming it and why (:func:`weightsmith.training.checkpoint.plan_resume`).

    Raises:
        NoUsableCheckpoint: checkpoints were committed but none is whole (a UserError: the stage
            exits 2 with that sentence, and trains nothing).
    """
    from weightsmith.training.callbacks import CheckpointCommitCallback, MetricsCallback
    from weightsmith.training.checkpoint import latest_complete_checkpoint, plan_resume

    trainer.add_callback(MetricsCallback(ctx.metrics_path))
    trainer.add_callback(CheckpointCommitCallback(keep=cfg.keep_checkpoints))

    if is_main_process():
        plan = plan_resume(ctx.checkpoints_dir)
        if (note := plan.message()) is not None:
            log_line(note)
        write_trainer_args(trainer, ctx.result_path.with_name(TRAINER_ARGS_FILE))
    # The other ranks take the newest marked checkpoint once rank 0 has deleted the unusable ones.
    wait_for_all_ranks()
    resume = plan.checkpoint if is_main_process() else latest_complete_checkpoint(ctx.checkpoints_dir)
    if resume is not None:
        from weightsmith.training.moe import restore_renamed_weights

        # An MoE's experts and router, which the Trainer's own resume skips (transformers 5.24).
        restore_renamed_weights(trainer.model, resume.path)
    if resume is not None and resume.step >= trainer.args.max_steps:
        # The run had finished training and died saving the model. Trainer.train() would take one more
        # step before it checks max_steps (transformers 5.24), so we only restore weights and state,
        # the way train() itself loads a checkpoint (safetensors, LoRA adapters, shards).
        from transformers import TrainerState

        if getattr(trainer, "is_fsdp_enabled", False):  # the model is not wrapped yet: its full weights, as saved
            _load_full_weights(trainer.model, resume.path)
        else:
            trainer._load_from_checkpoint(str(resume.path))
        trainer.state = TrainerState.load_from_json(str(resume.path / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)

    state = trainer.state
    # From the restored log history, not this process's logs: a rerun that resumes from a checkpoint
    # at max_steps trains no step and logs nothing, yet its final loss is the one logged before.
    losses = [entry["loss"] for entry in state.log_history if isinstance(entry.get("loss"), (int, float))]
    return {
        "steps": int(state.global_step),
        "final_loss": float(losses[-1]) if losses else None,
        "train_tokens": int(state.num_input_tokens_seen),
        "resumed_from_step": resume.step if resume else None,
    }


def _load_full_weights(model: PreTrainedModel, checkpoint: Path) -> None:
    """Load an FSDP checkpoint's gathered ``model.safetensors`` into the (unwrapped) model, as the Trainer
    loads a non-FSDP one (non-strict: tied weights are saved once)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(checkpoint / "model.safetensors"), device="cpu"), strict=False)


TRAINER_ARGS_FILE = "trainer_args.json"


def write_trainer_args(trainer: Trainer, path: Path) -> None:
    """Write every argument the library's trainer runs with, defaults included, next to the result.

    Our config is a curated subset; this file is what each key became in TRL/transformers (and what
    they filled in), so a run can be read and reproduced without knowing the library's defaults.
    """
    args = trainer.args.to_dict()
    # to_dict() masks every key ending in _token; only hub_token is a secret (pad_token, eos_token are settings).
    args.update({key: getattr(trainer.args, key) for key in args if key.endswith("_token") and key != "hub_token"})
    write_json_atomically(path, args, default=str)


def write_json_atomically(path: Path, payload: dict[str, Any], default: Any = None) -> None:
    """Write ``payload`` as JSON so a reader sees the old file or the new one, never half of one.

    ``default`` is json.dumps's: how to write a value JSON has no type for (None: refuse it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_causal_lm(model_dir: Path, kind: str, cfg: TrainStageConfig | None = None) -> PreTrainedModel:
    """Load a causal LM from a local directory in fp32 (bf16 autocast is the Trainer's job on GPU).

    With ``cfg.lora.quantize`` (QLoRA) the base weights load quantized through bitsandbytes
    (:func:`quantization_config`) onto this process's GPU, and peft's ``prepare_model_for_kbit_training``
    freezes them, casts the remaining (norm, embedding) weights to fp32 and, with
    ``activation_checkpointing``, turns it on with input gradients enabled, as the QLoRA recipe needs.
    """
    import torch
    from transformers import AutoModelForCausalLM

    lora = getattr(cfg, "lora", None)
    quantized = lora is not None and lora.quantize is not None
    options: dict[str, Any] = {"dtype": torch.float32}
    if quantized:
        compute = check_device_settings(cfg).dtype
        options = {
            "dtype": getattr(torch, compute),
            "quantization_config": quantization_config(lora, compute),
            "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))},  # each rank's whole model on its own GPU
        }
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **options)
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"stage '{kind}': cannot load a causal language model from {model_dir} ({exc}).") from exc
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.activation_checkpointing)
    return model


def load_tokenizer(path: Path, kind: str, need_chat_template: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer; chat stages also need its chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (ValueError, OSError) as exc:
        raise UserError(f"stage '{kind}': cannot load a tokenizer from {path} ({exc}).") from exc
    if tokenizer.eos_token is None:
        raise UserError(f"stage '{kind}': the tokenizer in {path} has no eos_token; train one with the tokenizer stage.")
    if need_chat_template and not tokenizer.chat_template:
        raise UserError(
            f"stage '{kind}' trains on chat data but the tokenizer in {path} has no chat template; "
            "use a tokenizer from the tokenizer stage or one that ships a chat template."
        )
    return tokenizer


def trained_dtype(trainer: Trainer) -> str:
    """The dtype name a trainer's mixed-precision settings train in: what :func:`save_model_dir` saves."""
    return "bfloat16" if trainer.args.bf16 else "float16" if trainer.args.fp16 else "float32"


def save_model_dir(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, output_dir: Path, dtype: str = "float32"
) -> None:
    """Write a plain HF model directory: merged weights (safetensors), tokenizer, generation config.

    The weights are cast to ``dtype`` (a torch dtype name: the stage's :attr:`Precision.dtype`), which
    ``config.json`` records under ``dtype`` (transformers 5's key) for whoever loads it.

    LoRA adapters are merged into the base so the directory opens with ``from_pretrained`` as is.
    The directory is built next to ``output_dir`` and renamed into place, so a crash never leaves
    a half-written model where the platform expects a finished one.
    """
    import torch

    full = _gather_fsdp_weights(model)  # every rank takes part; rank 0 receives the weights
    if not is_main_process():  # every rank holds the same weights (or its shard of them); one writes them
        return
    if hasattr(model, "merge_and_unload"):  # a peft model
        model = merge_adapters(model, dtype)
    target = getattr(torch, dtype)
    if full is not None:  # an FSDP-sharded model: write the gathered weights, not the shards
        # The gathered copies share no storage, so save_pretrained would store a tied weight (the output head
        # tied to the embeddings) twice: keep the names named_parameters() keeps, one per shared parameter. Those
        # of a layer wrapped for activation checkpointing (accelerate's fsdp2_apply_ac) carry the wrapper's prefix,
        # which the gathered state dict's names do not (torch's get_model_state_dict strips it).
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import _CHECKPOINT_PREFIX

        kept = {name.replace(_CHECKPOINT_PREFIX, "")
                for name, _ in (*model.named_parameters(), *model.named_buffers())}
        full = {name: tensor.to(target) for name, tensor in full.items() if name in kept}
    else:
        model = model.to(target) if any(p.dtype != target for p in model.parameters()) else model

    align_special_token_ids(model, tokenizer)
    # TRL's SFTTrainer turns on an MoE config's output_router_logits to train; a served model must not
    # compute the router's loss (with a KV cache its attention mask no longer matches the new tokens).
    if getattr(model.config, "output_router_logits", False):
        model.config.output_router_logits = False

    def write(tmp: str) -> None:
        model.save_pretrained(tmp, state_dict=full)
        if full is not None:  # save_pretrained names the sharded (fp32 master) parameters' dtype
            model.config.dtype = dtype
            model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_dir_atomically(output_dir, write)


def _gather_fsdp_weights(model: PreTrainedModel) -> dict[str, Any] | None:
    """The full state dict of a model sharded by FSDP2 (on rank 0, in CPU memory; {} on the other ranks),
    as accelerate's ``get_state_dict`` gathers it; None for a model that is not sharded."""
    if _process_group() is None:
        return None
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def align_special_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make the model's configs agree with the tokenizer on EOS / pad / BOS.

    Generation stops on the generation config's EOS ids; if the tokenizer's EOS (the token that
    ends an assistant turn) is not among them, a served model runs past the end of its answer.
    Other stop ids a model already has (e.g. a base model's end-of-text) are kept.
    """
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad_id = eos_id if pad_id is None else pad_id
    generation = model.generation_config
    existing = generation.eos_token_id
    existing = [] if existing is None else [existing] if isinstance(existing, int) else list(existing)
    stop_ids = [eos_id, *(i for i in existing if i != eos_id)]
    generation.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else stop_ids
    generation.pad_token_id = pad_id
    generation.bos_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = pad_id
    if model.config.eos_token_id is None:
        model.config.eos_token_id = eos_id


def write_dir_atomically(output_dir: Path, write) -> None:
    """Call ``write(tmp_dir)`` then rename the finished ``tmp_dir`` onto ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(str(tmp))
        if output_dir.exists():
            output_dir.rmdir()  # empty (checked before training); rename cannot replace a non-empty dir
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
