"""A Llama that misbehaves on purpose, for the serving tests: slow steps, no end of sequence, a failure at a position.

:func:`register` adds it to transformers' Auto classes as ``model_type: faulty_llama``, so a version folder made by
:func:`faulty_copy` loads through the engine's ordinary ``AutoModelForCausalLM.from_pretrained``: the engine, the
pool and the server run as they do for any model, and only the model's forward pass misbehaves. The knobs live in
the folder's ``config.json``:

- ``fail_at_position``: a forward pass that reaches this position raises ``RuntimeError`` (the prompt's prefill
  stays below it, so a request fails after ``fail_at_position - prompt length`` new tokens);
- ``step_seconds``: every forward pass first sleeps this long (a slow model, so a request stays in flight);
- ``no_eos``: the end-of-sequence token is never chosen (a request runs to ``max_tokens``).

A server in another process registers it with :data:`PRELUDE` (``python -c PRELUDE serve ...``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

PRELUDE = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import faulty_llama; "
           "faulty_llama.register(); from weightsmith.cli import main; sys.exit(main(sys.argv[1:]))")


class FaultyLlamaConfig(LlamaConfig):
    model_type = "faulty_llama"


class FaultyLlama(LlamaForCausalLM):
    config_class = FaultyLlamaConfig

    def forward(self, *args, position_ids=None, **kwargs):
        config = self.config
        time.sleep(getattr(config, "step_seconds", 0.0))
        fail_at = getattr(config, "fail_at_position", None)
        if fail_at is not None and position_ids is not None and int(position_ids.max()) >= fail_at:
            raise RuntimeError(f"injected fault at position {int(position_ids.max())}")
        out = super().forward(*args, position_ids=position_ids, **kwargs)
        if getattr(config, "no_eos", False):
            out.logits[..., config.eos_token_id] = float("-inf")
        return out


def register() -> None:
    AutoConfig.register("faulty_llama", FaultyLlamaConfig, exist_ok=True)
    AutoModelForCausalLM.register(FaultyLlamaConfig, FaultyLlama, exist_ok=True)


def faulty_copy(src: Path, dst: Path, **knobs) -> Path:
    """A copy of the Llama version folder ``src`` at ``dst`` that loads as a :class:`FaultyLlama` with ``knobs``."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(model_type="faulty_llama", architectures=["FaultyLlama"], **knobs)
    (dst / "config.json").write_text(json.dumps(config))
    return dst
