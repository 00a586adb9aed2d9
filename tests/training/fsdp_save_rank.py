"""One rank of test_fsdp's save check, run by torchrun on the CPU (gloo): ``fsdp_save_rank.py MODEL_DIR OUT_DIR``.

Shards the model with PyTorch's own FSDP2 (``fully_shard``, each decoder layer a unit, as accelerate wraps it)
and saves it with :func:`weightsmith.training.common.save_model_dir`, as a stage does after FSDP training.
accelerate never runs FSDP on the CPU, so this is the Trainer-free part of that path.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer

from weightsmith.training.common import leave_process_group, save_model_dir

model_dir, out_dir = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
mesh = init_device_mesh("cpu", (dist.get_world_size(),))
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
assert type(next(model.parameters())).__name__ == "DTensor"  # each rank holds a shard
save_model_dir(model, AutoTokenizer.from_pretrained(model_dir), out_dir, dtype="bfloat16")
leave_process_group()
