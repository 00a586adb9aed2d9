"""Mixture-of-experts training: the router's load-balancing loss under the plain Trainer, and resuming.

TRL's SFT, DPO and GRPO trainers already add an MoE model's auxiliary loss (its config's
``router_aux_loss_coef`` times the load-balancing loss of Fedus et al. 2022, Switch Transformers,
eqs. 4-6) and log it as ``aux_loss``. The ``pretrain`` and ``cpt`` stages train with transformers'
``Trainer``, which does neither: :class:`RouterLossTrainer` does both, the way TRL's SFTTrainer
does (trl 1.16, ``SFTTrainer.compute_loss``), so every stage's metrics carry the same ``aux_loss``.

A checkpoint of an MoE model is also restored here (:func:`restore_renamed_weights`): transformers
keeps some models' weights in memory under other names and shapes than in their files, and its
Trainer resumes them without that conversion.

Imported lazily (transformers is heavy); :func:`has_router_loss` is what decides to use the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import Trainer


def has_router_loss(config: Any) -> bool:
    """Whether a model with this config returns a router load-balancing loss to train: TRL's rule
    (trl 1.16 ``aux_loss_enabled``): the config knows ``output_router_logits`` and weights the loss by
    a non-zero ``router_aux_loss_coef``."""
    return hasattr(config, "output_router_logits") and bool(getattr(config, "router_aux_loss_coef", 0.0))


class RouterLossTrainer(Trainer):
    """A Trainer whose objective is the LM loss plus ``router_aux_loss_coef`` x the router's load-balancing loss.

    Each micro-batch asks the model for its router logits (``output_router_logits=True``), so the
    model returns ``aux_loss`` (a scalar: num_experts x sum over experts of the fraction of top-k
    assignments times the mean router probability, averaged over the layers' tokens; ``k`` when the
    routing is perfectly balanced) and adds ``coef x aux_loss`` to its token-mean loss. The training
    metrics get ``aux_loss``, the unweighted mean over the micro-batches since the last log, beside
    ``loss`` (which includes the weighted term, as TRL's do).

    transformers leaves gradient accumulation (and the DDP token average) to a loss that is
    normalized by the tokens of the whole accumulated batch, so the model's per-micro-batch aux term
    would count ``grad_accum x processes`` times; it is rescaled here to count once per optimizer step,
    as in TRL's SFTTrainer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.router_aux_loss_coef = float(self.accelerator.unwrap_model(self.model).config.router_aux_loss_coef)
        self._aux_losses: list[float] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, {**inputs, "output_router_logits": True}, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        aux_loss = outputs.aux_loss
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            # Trainer.compute_loss multiplied the whole loss by the processes that share the token count
            # (transformers 5.24); the aux term should be 1/grad_accum of a step's on every rank.
            scale = self.accelerator.num_processes // self.get_tp_size() if self.args.average_tokens_across_devices else 1
            loss = loss + self.router_aux_loss_coef * aux_loss * (1.0 / self.current_gradient_accumulation_steps - scale)
        if model.training:
            self._aux_losses.append(self.accelerator.gather_for_metrics(aux_loss.detach()).mean().item())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._aux_losses:
            logs["aux_loss"] = sum(self._aux_losses) / len(self._aux_losses)
            self._aux_losses.clear()
        super().log(logs, start_time)


def restore_renamed_weights(model: Any, checkpoint: Path) -> bool:
    """Load a Trainer checkpoint's weights into ``model`` when the file names them otherwise than the model.

    transformers 5.24 converts some models' weights as it loads them and back as it saves them
    (Mixtral's experts: per-expert ``block_sparse_moe.experts.N.w1/w2/w3`` in the file, one 3-D
    ``mlp.experts.gate_up_proj`` / ``down_proj`` per layer in memory). Its Trainer saves checkpoints
    with ``save_pretrained`` but resumes with a non-strict ``load_state_dict``, which skips every
    converted name without an error: a resumed MoE would go on from its initial experts and router.
    Here the checkpoint is loaded with ``from_pretrained`` (which converts) and copied in strictly;
    the Trainer's own load that follows then finds the same values. A model whose names match (any
    dense model) and a checkpoint without ``model.safetensors`` (LoRA adapters only) are left to the Trainer.

    Args:
        model: the trainer's model, before ``train()`` wraps it.
        checkpoint: a ``checkpoint-N`` folder of the run.

    Returns:
        Whether the weights were loaded here.
    """
    index = checkpoint / "model.safetensors.index.json"
    single = checkpoint / "model.safetensors"
    if index.is_file():
        saved = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    elif single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            saved = set(handle.keys())
    else:
        return False
    if saved <= set(model.state_dict()):
        return False
    dtype = next(model.parameters()).dtype
    loaded = type(model).from_pretrained(str(checkpoint), config=model.config, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    return True
