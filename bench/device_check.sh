#!/usr/bin/env bash
# bench/device_check.sh — the GPU paths of weightsmith in one command, on a machine with a CUDA GPU.
#
#   bench/device_check.sh [SECONDS]        # default 540: the whole check stops at this limit (timeout)
#
# From a config (no hub download): a BPE tokenizer and a `medium` Llama (examples/tiny's data), then bf16
# pretrain -> SFT -> DPO -> GRPO as one pipeline (`weightsmith run`, device cuda, dtype bfloat16), an eval
# of examples/tiny's suite with `dtype: bfloat16`, and `weightsmith serve --dtype bfloat16` under 32
# concurrent chat requests. Then SFT with `distributed: fsdp` on every GPU (one rank on a one-GPU machine),
# stopped after a checkpoint and resumed from it, its output checked to be a normal bf16 HF folder.
# GRPO's rollouts use vLLM (`rollouts: {engine: vllm, vllm_mode: colocate}`) when vllm imports and the grpo
# stage accepts that setting, else TRL's own generation; the output says which.
#
# Prints one line per step (throughput, MFU = model FLOPs / peak bf16 FLOPs: 6·N per trained token at the
# median logged training rate after the first interval, 2·N per generated token while serving, N the
# parameter count; attention FLOPs are left out, so MFU is a lower bound) and writes every number to
# $OUT/device_check.json ($OUT when set, else the work folder). Exit: 0 every step passed, 1 a step failed
# (its log is named), 2 no CUDA device or a bad argument, 124 the time limit.
#
# Settings (environment): DEVICE_CHECK_SIZE (medium), DEVICE_CHECK_DIR (work folder; default a new temp
# folder), PEAK_TFLOPS (the GPU's dense bf16 peak, when its name is not in the table below), PYTHON
# (default .venv/bin/python). DEVICE_CHECK_ON_CPU=1 rehearses the plumbing on the CPU (tiny model, fp32,
# a few steps): its numbers are not a device check.
set -uo pipefail

case "${1:-}" in
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
esac
LIMIT_S="${1:-${DEVICE_CHECK_LIMIT_S:-540}}"
if ! [[ "$LIMIT_S" =~ ^[0-9]+$ ]] || [ "$LIMIT_S" -lt 1 ]; then
  echo "device_check: the time limit is a whole number of seconds, got '$LIMIT_S'." >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3 || true)"
if [ -z "$PY" ]; then
  echo "device_check: no Python found; set PYTHON to the interpreter weightsmith is installed in." >&2
  exit 2
fi
ON_CPU="${DEVICE_CHECK_ON_CPU:-0}"

if [ -z "${_DEVICE_CHECK_INNER:-}" ]; then
  if [ "$ON_CPU" != 1 ]; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null
    probe=$?
    if [ "$probe" -eq 3 ]; then
      echo "device_check: no CUDA device is present (torch.cuda.is_available() is False); this check runs bf16" \
           "training, eval and serving on a CUDA GPU, so run it on a machine that has one." >&2
      exit 2
    elif [ "$probe" -ne 0 ]; then
      echo "device_check: $PY cannot import torch; set PYTHON to the interpreter weightsmith is installed in." >&2
      exit 2
    fi
  fi
  _DEVICE_CHECK_INNER=1 timeout --kill-after=20 "$LIMIT_S" bash "$0" "$@"
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "device_check: stopped at the time limit of ${LIMIT_S} s; the steps printed above finished." >&2
    exit 124
  fi
  exit "$rc"
fi

# ---------------------------------------------------------------------------------------------------------
# The check itself (under the time limit)
# ---------------------------------------------------------------------------------------------------------
WORK="${DEVICE_CHECK_DIR:-$(mktemp -d -t device_check.XXXXXX)}"
mkdir -p "$WORK"
REPORT="${OUT:-$WORK}/device_check.json"
WSM=("$PY" -m weightsmith)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1

if [ "$ON_CPU" = 1 ]; then
  DEVICE=cpu DTYPE=float32 SIZE="${DEVICE_CHECK_SIZE:-tiny}" SEQ=64 BATCH=4 GEN=4
  PRETRAIN_STEPS=4 SFT_STEPS=4 DPO_STEPS=2 GRPO_STEPS=2 CONCURRENCY=4 SERVE_TOKENS=8 LOG_STEPS=1
  echo "device_check: DEVICE_CHECK_ON_CPU=1: rehearsing the plumbing on the CPU (fp32, $SIZE model);" \
       "these are not GPU numbers"
else
  DEVICE=cuda DTYPE=bfloat16 SIZE="${DEVICE_CHECK_SIZE:-medium}" SEQ=256 BATCH=16 GEN=8
  PRETRAIN_STEPS=100 SFT_STEPS=60 DPO_STEPS=30 GRPO_STEPS=10 CONCURRENCY=32 SERVE_TOKENS=64 LOG_STEPS=5
fi
GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
echo "device_check: work folder $WORK; report $REPORT"

fail() {  # STEP LOG
  echo "device_check: FAILED: $1 (log: $2)" >&2
  tail -n 30 "$2" >&2
  exit 1
}

# The environment, and the peak the MFU is measured against.
"$PY" - "$REPORT" "$DEVICE" <<'EOF' || exit 1
import json, os, sys
import torch, transformers, trl, accelerate
report, device = sys.argv[1], sys.argv[2]
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; the SXM parts unless the name says PCIe.
PEAKS = {"H200": 989.5, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.5, "GH200": 989.5, "A100": 312.0,
         "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "B200": 2250.0}
name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
peak = float(os.environ["PEAK_TFLOPS"]) if os.environ.get("PEAK_TFLOPS") else next(
    (value for key, value in PEAKS.items() if key in name), None)
try:
    import vllm  # noqa: F401
    vllm_version = vllm.__version__
except Exception:  # noqa: BLE001 - not installed, or broken: TRL's own generation then
    vllm_version = None
env = {"device": name, "gpus": torch.cuda.device_count(), "peak_tflops": peak,
       "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
       "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
       "accelerate": accelerate.__version__, "vllm": vllm_version}
os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
json.dump({"environment": env, "steps": {}}, open(report, "w"), indent=2)
print(f"environment: {name} x{env['gpus']}, peak bf16 {peak or 'unknown (set PEAK_TFLOPS)'} TFLOP/s, "
      f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, vllm {vllm_version}")
EOF

# GRPO's rollouts: vLLM when it imports and the stage offers it, else TRL's own generation.
GRPO_EXTRA=""
ROLLOUTS="TRL's own generation (transformers generate)"
VLLM_ROLLOUTS='{engine: vllm, vllm_mode: colocate, gpu_memory_utilization: 0.3}'
if [ "$DEVICE" = cuda ] && "$PY" -c 'import vllm' 2>/dev/null; then
  if "$PY" -c 'from weightsmith.training import validate_stage_config as v
v("grpo", {"device": "cuda", "rollouts": {"engine": "vllm", "vllm_mode": "colocate", "gpu_memory_utilization": 0.3}})' \
      2>/dev/null; then
    GRPO_EXTRA="    rollouts: $VLLM_ROLLOUTS"
    ROLLOUTS="vLLM (rollouts: $VLLM_ROLLOUTS)"
  else
    ROLLOUTS="TRL's own generation (vllm is installed, but the grpo stage refuses rollouts: $VLLM_ROLLOUTS)"
  fi
fi
echo "grpo rollouts: $ROLLOUTS"

# The data and the suite: examples/tiny's, copied, the suite evaluated in bf16 on the GPU.
rm -rf "$WORK/data" "$WORK/ws"
cp -r "$ROOT/examples/tiny/data" "$WORK/data"
sed -e "s/^device: auto$/device: $DEVICE\ndtype: $DTYPE/" "$ROOT/examples/tiny/suite.yaml" > "$WORK/suite.yaml"
grep -q "^dtype: $DTYPE$" "$WORK/suite.yaml" || { echo "device_check: could not set the suite's dtype" >&2; exit 1; }

cat > "$WORK/pipeline.yaml" <<EOF
name: device-check
model: check
seed: 0
datasets:
  docs:    {path: $WORK/data/docs,          format: text}
  tasks:   {path: $WORK/data/tasks.jsonl,   format: chat}
  prefs:   {path: $WORK/data/prefs.jsonl,   format: preference}
  prompts: {path: $WORK/data/prompts.jsonl, format: prompt}
defaults:
  device: $DEVICE
  dtype: $DTYPE
  batch_size: $BATCH
  logging_steps: $LOG_STEPS
  save_steps: 1000
stages:
  tokenizer: {data: docs, vocab_size: 512, min_frequency: 1}
  pretrain:  {data: docs, tokenizer: tokenizer, size: $SIZE, seq_len: $SEQ, max_steps: $PRETRAIN_STEPS, lr: 1.0e-3}
  sft:       {model: pretrain, data: tasks, max_steps: $SFT_STEPS, lr: 1.0e-4}
  dpo:       {model: sft, data: prefs, max_steps: $DPO_STEPS}
  grpo:
    model: dpo
    data: prompts
    reward: chrf
    max_steps: $GRPO_STEPS
    batch_size: $GEN
    num_generations: $GEN
    max_completion_length: 32
$GRPO_EXTRA
EOF

mkdir -p "$WORK/ws"
( cd "$WORK/ws" && "${WSM[@]}" init >/dev/null ) || fail "weightsmith init" /dev/null
echo "pipeline: tokenizer -> pretrain ($SIZE) -> sft -> dpo -> grpo, $DTYPE on $DEVICE ..."
( cd "$WORK/ws" && "${WSM[@]}" run "$WORK/pipeline.yaml" --json > "$WORK/run.json" 2> "$WORK/run.log" ) \
  || fail "the pipeline (weightsmith run)" "$WORK/run.log"

# Throughput and MFU of each training stage, from its job's result (train_tokens, wall_seconds).
"$PY" - "$WORK" "$REPORT" "$ROLLOUTS" <<'EOF' || exit 1
import json, math, subprocess, sys
from pathlib import Path
from safetensors import safe_open
work, report_path, rollouts = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
report = json.loads(report_path.read_text())
peak = report["environment"]["peak_tflops"]
run = json.loads((work / "run.json").read_text())
models = {m["job"]: m for m in run["models"]}

def params(folder):
    """Parameters in a model folder, from the safetensors headers (tied weights are stored once)."""
    total = 0
    for file in Path(folder).glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total

for job in run["jobs"]:
    if job["state"] != "succeeded":
        sys.exit(f"device_check: FAILED: stage {job['stage']} is {job['state']}: {job.get('error')}")
    if job["stage"] == "tokenizer":
        continue
    shown = json.loads(subprocess.run([sys.executable, "-m", "weightsmith", "jobs", "show", str(job["id"]), "--json"],
                                      cwd=work / "ws", check=True, capture_output=True, text=True).stdout)
    result = shown["runs"][-1]["result"]
    rates = [m["value"] for m in json.loads(subprocess.run(
        [sys.executable, "-m", "weightsmith", "jobs", "metrics", str(job["id"]), "--json"], cwd=work / "ws", check=True,
        capture_output=True, text=True).stdout) if m["name"] == "tokens_per_sec"]
    model = models[job["id"]]
    config = json.loads((Path(model["path"]) / "config.json").read_text())
    n = params(model["path"])
    tokens, seconds = result.get("train_tokens") or 0, result["wall_seconds"]
    # Steady state: the median rate of the logging intervals after the first (which holds the warm-up);
    # else the whole stage's (loading and saving included).
    steady = sorted(rates[1:])[len(rates[1:]) // 2] if len(rates) > 1 else tokens / seconds
    mfu = 6 * n * steady / (peak * 1e12) if peak else None
    row = {"ref": model["ref"], "params": n, "steps": result["steps"], "final_loss": result["final_loss"],
           "train_tokens": tokens, "wall_seconds": seconds, "stage_tokens_per_s": tokens / seconds,
           "tokens_per_s": steady, "mfu": mfu, "saved_dtype": config.get("dtype")}
    if job["stage"] == "grpo":
        row["rollouts"] = rollouts
    report["steps"][job["stage"]] = row
    loss = "n/a" if result["final_loss"] is None else f"{result['final_loss']:.4g}"
    print(f"{job['stage']:>9}: {model['ref']}, {n / 1e6:.1f}M params, {result['steps']} steps, loss {loss}, "
          f"{steady:,.0f} tokens/s training ({tokens / seconds:,.0f} over the stage's "
          f"{seconds:.1f} s), MFU {'n/a' if mfu is None else f'{mfu:.1%}'}, saved as {config.get('dtype')}")
report["last_model"] = run["models"][-1]["ref"]
report_path.write_text(json.dumps(report, indent=2))
EOF
LAST="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_model"])' "$REPORT")"

# Eval: examples/tiny's suite, dtype bfloat16.
start_ns=$(date +%s%N)
( cd "$WORK/ws" && "${WSM[@]}" eval "$WORK/suite.yaml" --model "$LAST" --json > "$WORK/eval.json" 2> "$WORK/eval.log" ) \
  || fail "eval ($LAST, dtype $DTYPE)" "$WORK/eval.log"
"$PY" - "$WORK/eval.json" "$REPORT" "$(( ($(date +%s%N) - start_ns) / 1000000 ))e-3" "$DTYPE" <<'EOF' || exit 1
import json, sys
doc, report = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
values = {name: kpi["value"] for name, kpi in doc["kpis"].items()}
report["steps"]["eval"] = {"model": doc["model"], "dtype": sys.argv[4], "seconds": float(sys.argv[3]), "kpis": values}
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"     eval: {doc['model']} in {sys.argv[4]}, {float(sys.argv[3]):.1f} s: "
      + ", ".join(f"{k} {v:.3g}" for k, v in values.items()))
EOF

# Serve: weightsmith serve --dtype, CONCURRENCY chat requests at once, SERVE_TOKENS new tokens at most each.
KEY="device-check-$RANDOM$RANDOM"
( cd "$WORK/ws" && exec "${WSM[@]}" serve "$LAST" --dtype "$DTYPE" --device "$DEVICE" --port 0 --api-key "$KEY" \
    > "$WORK/serve.out" 2> "$WORK/serve.log" ) &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null' EXIT
for _ in $(seq 1 240); do
  grep -q "listening on http://" "$WORK/serve.out" 2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || fail "weightsmith serve did not start" "$WORK/serve.log"
  sleep 0.5
done
URL="$(grep -o 'http://[^ ]*' "$WORK/serve.out" | head -n 1)"
[ -n "$URL" ] || fail "weightsmith serve did not start in 120 s" "$WORK/serve.log"
"$PY" - "$URL" "$KEY" "$LAST" "$CONCURRENCY" "$SERVE_TOKENS" "$REPORT" "$DTYPE" <<'EOF' || fail "serving" "$WORK/serve.log"
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx
url, key, model, concurrency, max_tokens, report_path, dtype = sys.argv[1:8]
concurrency, max_tokens = int(concurrency), int(max_tokens)
report = json.load(open(report_path))
questions = ["What is the routing code for Northgate?", "When does the loading window open at Northgate?"]

def ask(i):
    started = time.perf_counter()
    reply = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=300, json={
        "model": model, "max_tokens": max_tokens, "temperature": 0,
        "messages": [{"role": "user", "content": questions[i % len(questions)]}]})
    reply.raise_for_status()
    body = reply.json()
    return body["usage"]["completion_tokens"], time.perf_counter() - started, body["choices"][0]["message"]["content"]

ask(0)  # warm-up
started = time.perf_counter()
with ThreadPoolExecutor(concurrency) as pool:
    answers = list(pool.map(ask, range(concurrency)))
seconds = time.perf_counter() - started
tokens = sum(a[0] for a in answers)
latencies = sorted(a[1] for a in answers)
steps = report["steps"]
n = next(iter(v["params"] for v in steps.values() if "params" in v), None)
peak = report["environment"]["peak_tflops"]
mfu = 2 * n * tokens / seconds / (peak * 1e12) if n and peak else None
report["steps"]["serve"] = {"model": model, "dtype": dtype, "concurrency": concurrency, "completion_tokens": tokens,
                            "seconds": seconds, "tokens_per_s": tokens / seconds, "p50_s": latencies[len(latencies) // 2],
                            "max_s": latencies[-1], "mfu": mfu, "sample": answers[0][2]}
json.dump(report, open(report_path, "w"), indent=2)
print(f"    serve: {model} in {dtype}, {concurrency} concurrent requests: {tokens} tokens in {seconds:.2f} s = "
      f"{tokens / seconds:,.0f} tokens/s, p50 {latencies[len(latencies) // 2]:.2f} s, "
      f"MFU {'n/a' if mfu is None else f'{mfu:.2%}'}; first answer {answers[0][2]!r}")
EOF
kill "$SERVER" 2>/dev/null
wait "$SERVER" 2>/dev/null
trap - EXIT

# FSDP: SFT sharded over every GPU, stopped at a checkpoint, resumed from it, saved as a normal folder. On one GPU
# it runs one rank (launched as the worker launches a stage, with the spec's processes: 2 only to pass validation):
# FSDP2's wrapping, mixed precision, checkpoint files, resume and the gathered save run; sharding does not.
# The CPU rehearsal runs the same steps as DDP on two ranks (fsdp is refused on the CPU).
if [ "$DEVICE" = cuda ]; then
  DIST=fsdp RANKS=$GPUS
else
  DIST=ddp RANKS=2
fi
"$PY" - "$WORK" "$REPORT" "$RANKS" "$SFT_STEPS" "$DIST" "$DEVICE" "$DTYPE" <<'EOF' || fail "$DIST SFT" "$WORK/fsdp.log"
import json, subprocess, sys
from pathlib import Path
work, report_path = Path(sys.argv[1]), Path(sys.argv[2])
ranks, steps, dist, device, dtype = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
half = steps // 2
run = json.loads((work / "run.json").read_text())
pretrain_job = next(job["id"] for job in run["jobs"] if job["stage"] == "pretrain")
start = next(m["path"] for m in run["models"] if m["job"] == pretrain_job)
log = open(work / "fsdp.log", "w")
results = []
for part, max_steps in enumerate([half, steps]):
    config = {"device": device, "dtype": dtype, "processes": max(ranks, 2), "distributed": dist, "batch_size": 4,
              "max_steps": max_steps, "save_steps": half, "logging_steps": 1, "lr": 1e-4}
    spec = {"kind": "sft", "config": config, "work_dir": str(work / "fsdp"), "output_dir": str(work / f"fsdp-out-{part}"),
            "inputs": {"data_path": str(work / "data" / "tasks.jsonl"), "data_format": "chat", "model_path": start},
            "seed": 0, "metrics_path": str(work / "fsdp-metrics.jsonl"), "result_path": str(work / f"fsdp-{part}.json")}
    spec_path = work / f"fsdp-{part}.spec.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "weightsmith.training.launch", str(ranks), str(spec_path)], check=True,
                   stdout=log, stderr=subprocess.STDOUT)
    results.append(json.loads((work / f"fsdp-{part}.json").read_text()))
first, second = results
assert first["steps"] == half and second["resumed_from_step"] == half and second["steps"] == steps, results
args = json.loads((work / "trainer_args.json").read_text())
checkpoint = work / "fsdp" / "checkpoints" / f"checkpoint-{half}"
if dist == "fsdp":  # the trainer ran FSDP, not DDP: its arguments say so, and the checkpoint has FSDP's files
    assert args["fsdp"] and args["fsdp_config"]["version"] == 2, args.get("fsdp_config")
    assert (checkpoint / "optimizer.bin").is_file() and (checkpoint / "pytorch_model_fsdp.bin").is_file(), \
        sorted(p.name for p in checkpoint.iterdir())
out = work / "fsdp-out-1"
saved = json.loads((out / "config.json").read_text()).get("dtype")
assert saved == dtype, f"config.json says {saved}, not {dtype}"
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging
hf_logging.disable_progress_bar()
model = AutoModelForCausalLM.from_pretrained(str(out))  # the whole model from one plain folder
report = json.loads(report_path.read_text())
report["steps"][f"{dist}_sft"] = {"processes": ranks, "resumed_from_step": second["resumed_from_step"],
                                  "steps": second["steps"], "final_loss": second["final_loss"],
                                  "stage_tokens_per_s": second["train_tokens"] / second["wall_seconds"]}
report_path.write_text(json.dumps(report, indent=2))
where = f"{ranks} {'GPU' if device == 'cuda' else 'CPU process'}(s){' (one rank: no sharding)' if ranks == 1 else ''}"
print(f"{dist:>9}: sft on {where}, stopped at step {first['steps']}, resumed from step {second['resumed_from_step']} "
      f"to {second['steps']}, loss {second['final_loss']:.4g}, saved as a plain {saved} folder "
      f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params loaded)")
EOF

echo "device_check: every step passed; numbers in $REPORT"
