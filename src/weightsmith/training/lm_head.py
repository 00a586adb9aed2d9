"""SFT's loss through the model's own LM head, where TRL's fused LM head costs more than it saves.

TRL 1.x's SFTTrainer patches the model with a *fused LM head* (``trl.trainer.utils.add_fused_lm_head``):
the per-token log-probabilities, entropy and top-1 hits are computed in tiles without materializing
the ``(tokens, vocab)`` logits. On a GPU with a large vocabulary that saves gigabytes. On a CPU with a
small model it only adds work: measured on the Quill quickstart's SFT (4.7 M parameters, vocabulary
2,048, ~900 tokens a step, two cores) a step took 251 ms with the fused head against 197 ms with the
plain logits and cross-entropy, in a hand loop of the same batches; the stage ran 3.53 -> 4.29 steps/s.

:class:`LogitsLossSFTTrainer` computes the same loss the model's own way (``model(..., labels=...)``:
transformers' ``ForCausalLMLoss``, summed over the target tokens and divided by the step's target
count, as TRL's is) and the same ``entropy`` and ``mean_token_accuracy`` metrics from the logits it
already has. It falls back to TRL's path for everything that path handles specially (a custom
``compute_loss_func``, label smoothing, DFT loss, a router's auxiliary loss, sequence parallelism).

``fused_lm_head`` on the sft stage chooses: null (the default) fuses on CUDA and uses the logits on the
CPU; true or false forces one.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer


def wants_fused_lm_head(setting: bool | None, device_type: str) -> bool:
    """Whether the stage computes its loss through TRL's fused LM head: ``setting`` if given, else only on CUDA."""
    return setting if setting is not None else device_type == "cuda"


class LogitsLossSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the loss and metrics computed from the model's logits, not its fused LM head.

    Same objective (sum of the target tokens' negative log-likelihoods over the step's target tokens,
    ``num_items_in_batch`` across gradient accumulation and processes) and the same logged metrics
    (``entropy``: mean over target positions of the predictive distribution's entropy, nats;
    ``mean_token_accuracy``: the fraction of target tokens that are the argmax; ``num_tokens``).
    """

    def _plain_path(self) -> bool:
        return (
            self.compute_loss_func is None
            and self.label_smoother is None
            and self.args.loss_type == "nll"
            and not self.aux_loss_enabled
            and self.accelerator.parallelism_config is None
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._plain_path():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        labels = inputs["labels"]
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # As TRL and Trainer do: num_items_in_batch counts every rank's targets, and DDP averages the gradients.
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        with torch.no_grad():
            targets = labels[:, 1:]
            mask = targets != -100
            logits = outputs.logits[:, :-1][mask].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            entropy_sum = -(log_probs.exp() * log_probs).sum()
            correct = (logits.argmax(dim=-1) == targets[mask]).sum()
            valid = self.accelerator.gather_for_metrics(mask.sum()).sum()
            entropy_sum = self.accelerator.gather_for_metrics(entropy_sum).sum()
            correct = self.accelerator.gather_for_metrics(correct).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / valid).item() if valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            else:
                local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
                tokens = self.accelerator.gather_for_metrics(local).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss


def sft_trainer_class(setting: bool | None, device_type: str) -> type:
    """SFTTrainer (fused LM head) or :class:`LogitsLossSFTTrainer`, by :func:`wants_fused_lm_head`."""
    return SFTTrainer if wants_fused_lm_head(setting, device_type) else LogitsLossSFTTrainer
