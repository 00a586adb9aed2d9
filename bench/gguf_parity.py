"""GGUF parity by hand: does llama.cpp run our export as transformers runs the model, and does our export equal
llama.cpp's own converter's? Not a speed bench: a check with a table, for a machine where llama.cpp is installed.

    .venv/bin/pip install -e '.[gguf]'            # llama-cpp-python: compiles llama.cpp (minutes)
    .venv/bin/python bench/gguf_parity.py         # a tiny chat model trained here, f32 / f16 / q8_0
    .venv/bin/python bench/gguf_parity.py --model path/to/model-folder --outtypes q8_0
    .venv/bin/python bench/gguf_parity.py --reference-converter llama.cpp/convert_hf_to_gguf.py
    .venv/bin/python bench/gguf_parity.py --kv-cache f32 --outtypes f32   # weights alone: |Δ logit| ~1e-5

Per outtype it prints: prompts whose tokenization differs, greedy agreement (leading tokens that agree, over HF's
greedy tokens), identical greedy continuations, max |Δ logit| over the prompt positions, mean |Δ log-prob| of HF's
greedy tokens (weightsmith.export.parity). With ``--reference-converter`` (a llama.cpp checkout's, or the one
under ``vendor/llama.cpp`` of llama-cpp-python's source archive) it also converts the folder with llama.cpp's
converter — told the pre-tokenizer is 'gpt-2', since its hash table cannot know a tokenizer trained here — and
compares the two files tensor by tensor (bytes) and key by key. Exits 1 when parity fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

QUESTIONS = {
    "Which depot gets truck 7?": "Truck 7 goes to the north depot.",
    "Who checks the route?": "The driver checks the route before noon.",
    "hi": "hello world",
}
DOCS = [
    "the dispatcher sends a truck to the north depot while the driver checks the route",
    "Parcels: 12, 345 and 6789 — logged at 09:30; the van's door isn't locked!",
    "  indented   text\twith tabs\nand newlines, émigré café ☕ 🚚",
]

# Run llama.cpp's converter on a folder whose tokenizer its hash table cannot know: our pre-tokenizer is gpt-2's
# (weightsmith.export.gguf.check_tokenizer), and sentencepiece (which it tries first for Llama) is not needed.
_REFERENCE_RUNNER = """
import runpy, sys
from pathlib import Path
converter = sys.argv[1]
sys.argv = [converter] + sys.argv[2:]
sys.path.insert(0, str(Path(converter).parent))
sys.path.insert(1, str(Path(converter).parent / "gguf-py"))
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
def no_sentencepiece(self, *args, **kwargs):
    raise FileNotFoundError("no tokenizer.model")
base.TextModel._set_vocab_sentencepiece = no_sentencepiece
runpy.run_path(converter, run_name="__main__")
"""


def build_tiny_chat_model(directory: Path) -> Path:
    """Our tokenizer and the pretrain stage's ``tiny`` Llama, trained until it answers QUESTIONS by heart."""
    import torch

    from weightsmith.data.tokenizer import train_tokenizer
    from weightsmith.training.models import build_model

    words = [*QUESTIONS, *QUESTIONS.values(), *DOCS, "user assistant system"]
    tokenizer = train_tokenizer(words * 4, vocab_size=400, min_frequency=1, model_max_length=256)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                           tokenize=False) for q, a in QUESTIONS.items()]
    texts += [d + tokenizer.eos_token for d in DOCS]
    torch.manual_seed(0)
    model = build_model("tiny", tokenizer, max_positions=256)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def prompts_for(model_dir: Path) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in QUESTIONS] if tokenizer.chat_template else []
    return chats + [d[:24] for d in DOCS]


def compare_with_reference(ours: Path, model_dir: Path, converter: Path, outtype: str, work: Path) -> dict:
    """Our file against llama.cpp's converter's, for the same folder and outtype."""
    from gguf import GGUFReader

    ref = work / f"reference-{outtype}.gguf"
    proc = subprocess.run([sys.executable, "-c", _REFERENCE_RUNNER, str(converter), str(model_dir), "--outtype",
                           outtype, "--outfile", str(ref)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"reference": f"the converter failed: {proc.stderr.strip().splitlines()[-1:]}"}

    def load(path: Path):
        reader = GGUFReader(path)
        keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), bytes(t.data.tobytes()))
                   for t in reader.tensors}
        return keys, tensors

    (our_keys, our_tensors), (ref_keys, ref_tensors) = load(ours), load(ref)
    differing = sorted(k for k in set(our_keys) | set(ref_keys) if our_keys.get(k) != ref_keys.get(k))
    # Where we differ by design: lineage (general.* and weightsmith.*), the template without {% generation %},
    # and EOS written as the end-of-turn token too.
    by_design = [k for k in differing if k.startswith(("general.", "weightsmith."))
                 or k in ("tokenizer.chat_template", "tokenizer.ggml.eot_token_id")]
    return {"reference_tensors_identical": set(our_tensors) == set(ref_tensors)
            and all(our_tensors[n] == ref_tensors[n] for n in our_tensors),
            "reference_tensors": len(ref_tensors),
            "reference_keys_differing": [k for k in differing if k not in by_design],
            "reference_keys_differing_by_design": by_design}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a Llama model folder (default: a tiny chat model trained here)")
    parser.add_argument("--outtypes", default="f32,f16,q8_0")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--reference-converter", type=Path, metavar="convert_hf_to_gguf.py")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kv-cache", default="f16", choices=["f16", "f32"],
                        help="llama.cpp's KV cache type: f16 (its default) or f32 (isolates the weights)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from weightsmith.export.gguf import export_gguf

    torch.set_num_threads(args.threads)
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
        print("note: llama-cpp-python is not installed (pip install -e '.[gguf]'); only the converter comparison runs",
              file=sys.stderr)
    if not have_llama and not args.reference_converter:
        return 2
    with tempfile.TemporaryDirectory(prefix="gguf-parity-") as tmp:
        work = Path(tmp)
        model_dir = args.model or build_tiny_chat_model(work / "model")
        prompts = prompts_for(model_dir)
        rows, failed = [], False
        for outtype in args.outtypes.split(","):
            path = export_gguf(model_dir, work / f"model-{outtype}.gguf", outtype=outtype).path
            row: dict = {"outtype": outtype, "bytes": path.stat().st_size}
            if have_llama:
                from weightsmith.export.parity import compare_with_llama_cpp

                parity = compare_with_llama_cpp(model_dir, path, prompts, max_new_tokens=args.max_new_tokens,
                                                n_threads=args.threads, kv_cache=args.kv_cache)
                row.update(parity.summary())
                row.pop("gguf")
                exact = outtype in ("f32", "f16")
                failed |= parity.tokenization_mismatches > 0 or (
                    parity.identical_continuations < len(prompts) if exact else parity.greedy_agreement < 0.9)
            if args.reference_converter:
                row.update(compare_with_reference(path, model_dir, args.reference_converter.resolve(), outtype, work))
                failed |= not row.get("reference_tensors_identical") or bool(row.get("reference_keys_differing"))
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    print("parity: FAILED" if failed else "parity: ok", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
