"""Which stages the quickstart runs: tokenizer -> pretrain -> SFT by default, the RL stages with ``--rl``.

The shipped pipeline file keeps every stage (``weightsmith run pipeline.yaml`` runs them all); the
quickstart cuts it with :meth:`PipelineSpec.up_to`, which keeps the named stages and every stage
they wait for, like ``make TARGET``.
"""

from __future__ import annotations

from importlib import resources

import pytest

from weightsmith.config import load_pipeline
from weightsmith.errors import UserError
from weightsmith.quickstart import RL_STAGES


@pytest.fixture()
def shipped(tmp_path):
    text = resources.files("weightsmith.domains.quill").joinpath("quickstart", "pipeline.yaml").read_text()
    (tmp_path / "pipeline.yaml").write_text(text)
    return load_pipeline(tmp_path / "pipeline.yaml")


def names(spec) -> list[str]:
    return [stage.name for stage in spec.stages]


def test_the_default_quickstart_is_the_stages_up_to_sft(shipped):
    assert names(shipped) == ["tokenizer", "pretrain", "sft", "prefs", "dpo", "grpo"]
    default = shipped.up_to([name for name in names(shipped) if name not in RL_STAGES])
    assert names(default) == ["tokenizer", "pretrain", "sft"]
    assert default.datasets == shipped.datasets and default.seed == shipped.seed


def test_a_target_brings_every_stage_it_waits_for(shipped):
    assert names(shipped.up_to(["dpo"])) == ["tokenizer", "pretrain", "sft", "prefs", "dpo"]
    assert names(shipped.up_to(["pretrain"])) == ["tokenizer", "pretrain"]
    assert names(shipped.up_to(["grpo"])) == names(shipped)


def test_an_unknown_target_names_the_closest_stage(shipped):
    with pytest.raises(UserError, match=r"^pipeline quill: no stage 'stf'.*'sft'"):
        shipped.up_to(["stf"])


def test_sft_fits_the_budget_on_either_kind_of_cpu(shipped, tmp_path, monkeypatch):
    # The file's SFT steps are for bf16 training; a CPU without native bf16 trains in fp32 (1.5x slower a step)
    # and the laptop preset runs fewer steps there. Both kinds of CPU, whichever this one is:
    from weightsmith.quickstart import FP32_CPU_SFT_STEPS, machine_overrides
    from weightsmith.training import common

    if common.resolve_precision("auto").use_cpu is False:
        pytest.skip("a CUDA machine runs the file as shipped")
    sft = next(stage for stage in shipped.stages if stage.name == "sft")
    assert sft.config["max_steps"] > FP32_CPU_SFT_STEPS
    for native in (True, False):
        monkeypatch.setattr(common, "cpu_has_fast_bf16", lambda native=native: native)
        expected = [] if native else [f"sft.max_steps={FP32_CPU_SFT_STEPS}"]
        assert machine_overrides("laptop", None) == expected
        assert machine_overrides("laptop", "cpu") == expected
        assert machine_overrides("smoke", None) == []
        spec = load_pipeline(tmp_path / "pipeline.yaml", machine_overrides("laptop", None))
        steps = next(stage for stage in spec.stages if stage.name == "sft").config["max_steps"]
        assert steps == (sft.config["max_steps"] if native else FP32_CPU_SFT_STEPS)
