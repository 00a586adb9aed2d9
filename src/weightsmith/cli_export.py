"""``weightsmith models export``: a model version as a file other runtimes load (GGUF for llama.cpp and Ollama)."""

from __future__ import annotations

import argparse

from weightsmith.cli_render import dump, emit, local_context


def add_model_parsers(models, common: argparse.ArgumentParser) -> None:
    """Add ``export`` under ``models``."""
    p = models.add_parser("export", parents=[common], help="write a version as a GGUF file for llama.cpp / Ollama")
    p.add_argument("ref", help="NAME, NAME@vN or NAME@ALIAS")
    p.add_argument("--format", default="gguf", choices=["gguf"], help="gguf (the only format so far)")
    p.add_argument("--outtype", default="f16", choices=["f16", "q8_0", "f32"],
                   help="weight storage: f16 (default), q8_0 (8-bit, ~half of f16), f32 (exact); norms stay f32")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="the .gguf file to write (default: NAME-vN-OUTTYPE.gguf in the current folder)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--actor", help="who (kept in the audit log; default: WEIGHTSMITH_ACTOR or your login name)")


def cmd_export(args) -> int:
    from weightsmith.service import models

    ctx = local_context(args)
    doc = dump(models.export_model(ctx, {"ref": args.ref, "format": args.format, "outtype": args.outtype,
                                         "output": args.output, "force": args.force}))

    def human(d: dict) -> None:
        meta = d["metadata"]
        print(f"Wrote {d['path']}\n  {d['ref']} as {d['format']} {d['outtype']}: {_size(d['bytes'])}, "
              f"{d['tensors']} tensors, {d['parameters']:,} parameters, context {d['context_length']}")
        lineage = [f"parent {meta['weightsmith.parent']}" if meta.get("weightsmith.parent") else None,
                   f"data {', '.join(meta['weightsmith.datasets'])}" if meta.get("weightsmith.datasets") else None]
        print(f"  lineage: {meta.get('weightsmith.stage', '?')}; {'; '.join(x for x in lineage if x) or 'no parent'}")
        print(f"  chat template: {'embedded' if d['chat_template'] else 'none'}; stops at token {d['eos_token_id']}")
        print(f"  sha256: {d['sha256']}")
        print(f"Run it: llama-cli -m {d['path']} -cnv   (Ollama: a Modelfile with 'FROM {d['path']}')")

    emit(args, doc, human)
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
