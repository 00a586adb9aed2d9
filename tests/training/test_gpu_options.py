"""The two CUDA-only options: QLoRA (``lora.quantize``) and GRPO rollouts through vLLM (``rollouts``).

This machine has no GPU, bitsandbytes or vllm, so what runs here is what can: the keys validate and
refuse bad values; each maps onto the library's own config object (``BitsAndBytesConfig``,
``GRPOConfig``), built and read back, not trained; the merge that turns a QLoRA run into a plain
folder (adapters out, base rebuilt, adapters merged) on a full-precision base; and the refusals on a
machine without CUDA, one sentence and exit 2, through the stage runner and the CLI. Loading in
4-bit and generating with vLLM run only in ``bench/device_check.sh`` on a GPU machine.
"""

from __future__ import annotations

import copy

import pytest
import torch
from training.training_helpers import refusal

from helpers import EXAMPLES
from weightsmith.errors import UserError
from weightsmith.training import validate_stage_config

FAST = {"logging_steps": 1, "save_steps": 1000, "batch_size": 4, "max_steps": 2}
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: nothing is refused")


def test_quantize_is_a_lora_setting_of_every_fine_tuning_stage():
    for kind in ("sft", "dpo", "grpo"):
        assert validate_stage_config(kind, {}).lora is None
        assert validate_stage_config(kind, {"lora": {"r": 8}}).lora.quantize is None
        for value in ("4bit", "8bit"):
            assert validate_stage_config(kind, {"lora": {"r": 16, "quantize": value}}).lora.quantize == value
    with pytest.raises(UserError, match=r"^sft config: 'lora.quantize': Input should be '4bit' or '8bit' \(got '4'\)"):
        validate_stage_config("sft", {"lora": {"quantize": "4"}})
    # Named with device: cpu, the YAML is refused when it is validated (device: auto is refused at stage start).
    with pytest.raises(UserError) as refused:
        validate_stage_config("dpo", {"device": "cpu", "lora": {"quantize": "8bit"}})
    assert str(refused.value) == (
        "dpo config: lora.quantize loads the base model through bitsandbytes, which needs a CUDA GPU; on the CPU "
        "remove lora.quantize (LoRA then trains on full-precision base weights)."
    )


def test_quantize_maps_onto_bitsandbytes_config():
    from transformers import BitsAndBytesConfig

    from weightsmith.training.lora import LoraSettings, quantization_config

    assert quantization_config(None) is None and quantization_config(LoraSettings()) is None
    four = quantization_config(LoraSettings(quantize="4bit"), "bfloat16")
    assert isinstance(four, BitsAndBytesConfig)
    assert four.load_in_4bit and not four.load_in_8bit
    assert four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant is True
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config(LoraSettings(quantize="4bit"), "float16").bnb_4bit_compute_dtype == torch.float16
    eight = quantization_config(LoraSettings(quantize="8bit"), "bfloat16")
    assert eight.load_in_8bit and not eight.load_in_4bit and eight.quantization_method() == "llm_int8"


def _lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    torch.manual_seed(0)  # the same adapters every call
    adapters = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(base, adapters)
    with torch.no_grad():  # trained-looking adapters: B is zero at init, so merging would change nothing
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    return model


def test_the_adapters_merge_into_a_rebuilt_base(tiny_model_dir):
    """QLoRA's save: the adapters are taken off, the base rebuilt (dequantized on a GPU; as is here), and
    the same adapters merged into it: the same weights as peft's own merge, in a plain model."""
    from weightsmith.training.lora import _merge_into_rebuilt_base, merge_adapters

    model = _lora_model(tiny_model_dir)
    expected = {name: t.clone() for name, t in copy.deepcopy(model).merge_and_unload().state_dict().items()}
    seen = []

    def rebuild(base):
        seen.append(base)
        return base

    merged = _merge_into_rebuilt_base(model, rebuild)
    assert not any("lora" in name for name, _ in seen[0].named_modules())  # rebuilt without the adapters
    assert not hasattr(merged, "peft_config") and type(merged).__name__ == "LlamaForCausalLM"
    weights = merged.state_dict()
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    base = _lora_model(tiny_model_dir).get_base_model().state_dict()
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.base_layer.weight"],
                           weights["model.layers.0.self_attn.q_proj.weight"])  # the adapters did merge
    # A full-precision base (no quantizer) takes peft's merge_and_unload as before.
    plain = merge_adapters(_lora_model(tiny_model_dir))
    for name, tensor in expected.items():
        torch.testing.assert_close(plain.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)


@no_cuda
def test_quantize_without_cuda_is_refused_when_the_stage_starts(tmp_path, capsys, data_dir, tiny_model_dir):
    inputs = {"data_path": data_dir / "chat.jsonl", "data_format": "chat", "model_path": tiny_model_dir}
    message = refusal(tmp_path, capsys, "sft", {**FAST, "lora": {"r": 16, "quantize": "4bit"}}, inputs)
    assert message == (
        "lora.quantize: 4bit loads the base model through bitsandbytes, which needs a CUDA GPU and the bitsandbytes "
        "package (pip install 'weightsmith[qlora]'), but this stage runs on the CPU; remove lora.quantize to train "
        "LoRA adapters on full-precision base weights."
    )


def test_rollouts_validate_and_refuse_bad_values():
    assert validate_stage_config("grpo", {}).rollouts is None  # TRL's own generation
    assert validate_stage_config("grpo", {"rollouts": {}}).rollouts.trainer_arguments() == {}
    cfg = validate_stage_config("grpo", {"rollouts": {"engine": "vllm", "gpu_memory_utilization": 0.5}})
    rollouts = cfg.rollouts
    assert (rollouts.engine, rollouts.vllm_mode, rollouts.gpu_memory_utilization) == ("vllm", "colocate", 0.5)
    refusals = {
        "grpo config: 'rollouts.engine': Input should be 'trl' or 'vllm' (got 'sglang').": {"engine": "sglang"},
        "grpo config: 'rollouts.vllm_mode': Input should be 'colocate' or 'server' (got 'remote').":
            {"engine": "vllm", "vllm_mode": "remote"},
        "grpo config: 'rollouts.gpu_memory_utilization': Input should be less than or equal to 1 (got 1.5).":
            {"engine": "vllm", "gpu_memory_utilization": 1.5},
        "grpo config: 'rollouts': vllm_mode, gpu_memory_utilization and server_url are vLLM settings: set engine: "
        "vllm (got {'vllm_mode': 'server'}).": {"vllm_mode": "server"},
        "grpo config: 'rollouts': server_url is for vllm_mode: server (colocate runs vLLM inside the stage) "
        "(got {'engine': 'vllm', 'server_url': 'http://gpu-2:8000'}).":
            {"engine": "vllm", "server_url": "http://gpu-2:8000"},
    }
    for expected, rollouts in refusals.items():
        with pytest.raises(UserError) as refused:
            validate_stage_config("grpo", {"rollouts": rollouts})
        assert str(refused.value) == expected
    with pytest.raises(UserError, match=r"^grpo config: 'rollouts.use_vllm' is not a setting of the grpo stage"):
        validate_stage_config("grpo", {"rollouts": {"use_vllm": True}})
    with pytest.raises(UserError, match=r"^grpo config: rollouts.engine: vllm needs a CUDA GPU; on the CPU use "):
        validate_stage_config("grpo", {"device": "cpu", "rollouts": {"engine": "vllm"}})
    with pytest.raises(UserError, match=r"^grpo config: rollouts.engine: vllm cannot generate from an 8-bit base "):
        validate_stage_config("grpo", {"rollouts": {"engine": "vllm"}, "lora": {"quantize": "8bit"}})
    # A 4-bit base TRL hands to vLLM as bitsandbytes weights.
    assert validate_stage_config("grpo", {"rollouts": {"engine": "vllm"}, "lora": {"quantize": "4bit"}}).uses_vllm
    with pytest.raises(UserError, match=r"'rollouts' is not a setting of the sft stage"):
        validate_stage_config("sft", {"rollouts": {"engine": "vllm"}})


def test_rollouts_map_onto_grpo_config(tmp_path):
    from trl import GRPOConfig

    def built(rollouts: dict) -> GRPOConfig:
        cfg = validate_stage_config("grpo", {"rollouts": rollouts})
        return GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **cfg.rollouts.trainer_arguments())

    assert built({}).use_vllm is False and built({"engine": "trl"}).use_vllm is False
    colocate = built({"engine": "vllm", "gpu_memory_utilization": 0.45})
    assert (colocate.use_vllm, colocate.vllm_mode, colocate.vllm_gpu_memory_utilization) == (True, "colocate", 0.45)
    server = built({"engine": "vllm", "vllm_mode": "server", "server_url": "http://gpu-2:8000"})
    assert (server.use_vllm, server.vllm_mode, server.vllm_server_base_url) == (True, "server", "http://gpu-2:8000")
    assert built({"engine": "vllm", "vllm_mode": "server"}).vllm_server_base_url is None  # TRL's host and port


@no_cuda
def test_vllm_rollouts_without_cuda_are_refused_when_the_stage_starts(tmp_path, capsys, data_dir, tiny_model_dir):
    inputs = {"data_path": data_dir / "prompt.jsonl", "data_format": "prompt", "model_path": tiny_model_dir}
    config = {**FAST, "num_generations": 2, "rollouts": {"engine": "vllm", "vllm_mode": "server"}}
    assert refusal(tmp_path, capsys, "grpo", config, inputs) == (
        "rollouts.engine: vllm generates GRPO's completions with vLLM, which needs a CUDA GPU and the vllm package "
        "(pip install 'weightsmith[vllm]'), but this stage runs on the CPU; use rollouts.engine: trl (TRL's own "
        "generation) or leave rollouts out."
    )


def test_the_cli_refuses_both_on_a_cpu_pipeline_before_any_job(cli, tmp_path):
    import shutil

    shutil.copytree(EXAMPLES / "tiny", tmp_path / "tiny")
    pipeline = str(tmp_path / "tiny" / "pipeline.yaml")  # its defaults say device: cpu
    proc = cli("run", pipeline, "stages.sft.lora.quantize=4bit", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "lora.quantize loads the base model through bitsandbytes, which needs a CUDA GPU" in proc.stderr
    proc = cli("run", pipeline, "stages.grpo.rollouts.engine=vllm", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "rollouts.engine: vllm needs a CUDA GPU; on the CPU use rollouts.engine: trl" in proc.stderr
    assert cli.json("jobs", "list") == []


def test_on_a_gpu_without_the_package_the_sentence_names_the_package():
    """The other half of each refusal (CUDA present, package absent), from the precision a GPU would resolve to."""
    import importlib.util

    from weightsmith.training.common import Precision, missing_cuda_or

    gpu = Precision(use_cpu=False, bf16=True, fp16=False)
    assert missing_cuda_or(Precision(use_cpu=True, bf16=False, fp16=False), "torch") == "this stage runs on the CPU"
    assert missing_cuda_or(gpu, "torch") is None
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg = validate_stage_config("grpo", {"rollouts": {"engine": "vllm"}})
    with pytest.raises(UserError, match=r"needs a CUDA GPU and the vllm package \(pip install 'weightsmith\[vllm\]'\), "
                                        r"but vllm is not installed; use rollouts.engine: trl"):
        cfg.check_engines(gpu)
    validate_stage_config("grpo", {}).check_engines(gpu)  # TRL's own generation needs nothing
