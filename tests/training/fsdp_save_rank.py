"""One rank of test_fsdp's save check, run by torchrun on the CPU (gloo): ``fsdp_save_rank.py MODEL_DIR OUT_DIR [ac]``.

Shards the model with PyTorch's own FSDP2 (``fully_shard``, each decoder layer a unit, as accelerate wraps it)
and saves it with :func:`weightsmith.training.common.save_model_dir`, as a stage does after FSDP training.
With ``ac``, each decoder layer is first wrapped for activation checkpointing as accelerate does under
``fsdp_config['activation_checkpointing']`` (1.15 ``fsdp2_apply_ac``: ``checkpoint_wrapper``, which renames the
layer's parameters). accelerate never runs FSDP on the CPU, so this is the Trainer-free part of that path.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer

from weightsmith.training.common import leave_process_group, save_model_dir

model_dir, out_dir = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
if sys.argv[3:] == ["ac"]:
    for index, layer in enumerate(model.model.layers):
        model.set_submodule(f"model.layers.{index}", checkpoint_wrapper(layer, preserve_rng_state=False))
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
assert type(next(model.parameters())).__name__ == "DTensor"  # each rank holds a shard
save_model_dir(model, AutoTokenizer.from_pretrained(model_dir), out_dir, dtype="bfloat16")
leave_process_group()
