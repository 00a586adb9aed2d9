"""LoRA and QLoRA: the adapter settings every fine-tuning stage takes, and what peft and bitsandbytes make of them.

Imported when a pipeline YAML is validated: no torch / transformers / peft at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from weightsmith.errors import UserError, closest

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedModel

QUANTIZE_HELP = (
    "QLoRA (Dettmers et al. 2023): load the frozen base weights quantized through bitsandbytes, '4bit' (NF4 with "
    "double quantization, computing in the stage's dtype) or '8bit' (LLM.int8()), prepared with peft's "
    "prepare_model_for_kbit_training; the adapters train in higher precision. On save the base is dequantized "
    "(transformers' dequantize) and the adapters merged into it: the output is a normal folder in the stage's dtype. "
    "Needs a CUDA GPU and the qlora extra (pip install 'weightsmith[qlora]'); null loads the base in full precision."
)

QUANTIZE_ON_CPU = (
    "lora.quantize loads the base model through bitsandbytes, which needs a CUDA GPU; on the CPU remove "
    "lora.quantize (LoRA then trains on full-precision base weights)"
)


class LoraSettings(BaseModel):
    """Low-rank adapters (peft). Merged into the base weights on save."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer except the output head. A name "
        "matches every module it ends (peft's rule): [q_proj, v_proj] adapts the attention's query and value "
        "projections of every layer (the LoRA paper's choice), [gate_proj, up_proj, down_proj] the MLPs; a name "
        "no module of the model has is refused before training, with the names it has.",
    )

    quantize: Literal["4bit", "8bit"] | None = Field(None, description=QUANTIZE_HELP)

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, value: str | list[str]) -> str | list[str]:
        # peft reads a string other than 'all-linear' as a regular expression over full module paths,
        # so `target_modules: q_proj` would match nothing; one name means a list of one.
        names = [value] if isinstance(value, str) and value != "all-linear" else value
        if isinstance(names, list) and (not names or not all(name.strip() for name in names)):
            raise ValueError("name at least one module (e.g. [q_proj, v_proj]), or 'all-linear'")
        return names


def lora_config(settings: LoraSettings | None, model: PreTrainedModel | None = None):
    """A ``peft.LoraConfig`` for causal LM training, or None for full fine-tuning.

    Given the ``model``, every name of ``target_modules`` is checked against it first: peft would
    refuse an unknown one only as the trainer is built, with a traceback.

    Raises:
        UserError: a target module name that no linear or embedding layer of ``model`` ends with.
    """
    if settings is None:
        return None
    if model is not None and isinstance(settings.target_modules, list):
        _check_lora_targets(settings.target_modules, model)
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )


def check_lora_targets(settings: LoraSettings | None, model_dir: Path | None) -> None:
    """Before any compute: every name of ``target_modules`` against the layers of the model in ``model_dir``.

    The layers come from the model's config, built on PyTorch's meta device (no weights are read
    or allocated). A random initialization (no ``model_dir`` yet) is checked by :func:`lora_config`.

    Raises:
        UserError: a name that no linear or embedding layer of the model ends with, naming those it has.
    """
    if settings is None or model_dir is None or not isinstance(settings.target_modules, list):
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)))
    except (ValueError, OSError, KeyError):
        return  # loading the model says what is wrong with it
    _check_lora_targets(settings.target_modules, skeleton)


def _check_lora_targets(targets: list[str], model: PreTrainedModel) -> None:
    import torch

    kinds = (torch.nn.Linear, torch.nn.Embedding)
    layers = [name for name, module in model.named_modules() if isinstance(module, kinds)]
    for target in targets:
        if not any(name == target or name.endswith(f".{target}") for name in layers):
            known = list(dict.fromkeys(name.rpartition(".")[2] for name in layers))
            raise UserError(
                f"lora.target_modules: no layer of the model is named {target!r}{closest(target, known)}; its linear "
                f"and embedding layers are {', '.join(known)} (or write 'all-linear')."
            )


def quantization_config(settings: LoraSettings | None, compute_dtype: str = "bfloat16"):
    """The ``transformers.BitsAndBytesConfig`` that ``lora.quantize`` asks for, or None (no quantization).

    '4bit': NF4 weights with double quantization (the quantization constants quantized too), matmuls in
    ``compute_dtype`` (the stage's :attr:`Precision.dtype`) — the QLoRA paper's settings (Dettmers et al.
    2023, sec. 3). '8bit': LLM.int8() (Dettmers et al. 2022). Building it needs no GPU or bitsandbytes;
    loading a model with it needs both.
    """
    if settings is None or settings.quantize is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if settings.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def merge_adapters(model: Any, dtype: str = "float32") -> PreTrainedModel:
    """A peft model's LoRA adapters merged into its base weights: a plain model, in ``dtype`` when quantized.

    A full-precision base: peft's ``merge_and_unload``. A quantized (QLoRA) base: peft would merge into
    the 4-bit weights and quantize them again, so the adapters are taken out (``unload``), the base
    is dequantized (transformers' ``dequantize``, meant for this: it is what the adapters trained
    against) into ``dtype``, the adapters put back and merged there.
    """
    base = model.get_base_model()
    if getattr(base, "hf_quantizer", None) is None:
        return model.merge_and_unload()
    import torch

    return _merge_into_rebuilt_base(model, lambda plain: plain.dequantize(dtype=getattr(torch, dtype)))


def _merge_into_rebuilt_base(model: Any, rebuild: Any) -> PreTrainedModel:
    """Unload ``model``'s adapters, ``rebuild(base)`` (e.g. dequantize it), and merge the same adapters into it."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    name = model.active_adapter
    config, adapter = model.peft_config[name], get_peft_model_state_dict(model, adapter_name=name)
    base = rebuild(model.unload())
    restored = get_peft_model(base, config, adapter_name=name)
    set_peft_model_state_dict(restored, adapter, adapter_name=name)
    return restored.merge_and_unload()
