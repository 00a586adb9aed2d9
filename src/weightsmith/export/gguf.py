"""GGUF export: a Llama model folder (a registered version) as one ``.gguf`` file for llama.cpp and Ollama.

The file is written with llama.cpp's own Python package, ``gguf`` (gguf-py, maintained in the
llama.cpp repository): its ``GGUFWriter`` writes the format, its tensor-name map
(``get_tensor_name_map(MODEL_ARCH.LLAMA, n)``) names the tensors, its ``SpecialVocab`` reads the
merges, the special-token ids and the chat template, and its ``quants`` module does Q8_0. What this
module adds is what llama.cpp's converter (``convert_hf_to_gguf.py``; ``conversion/llama.py``
``LlamaModel`` over ``conversion/base.py`` ``TextModel``) does for a Llama folder, step for step:
the ``llama.*`` hyperparameters, the Q/K row permutation (``LlamaModel.permute``: llama.cpp applies
rotary embeddings to interleaved pairs, Hugging Face to the two halves of each head), the choice of
tensor types (1-D tensors and norms stay F32; Q8_0 rows not a multiple of 32 fall back to F16), and
the vocabulary (``TextModel.get_vocab_base`` + ``_set_vocab_gpt2``).

Why not run ``convert_hf_to_gguf.py`` itself: no registry package installs it (llama-cpp-python's
source archive carries it under ``vendor/`` but its wheel does not), and it refuses every tokenizer
a tokenizer stage trains. It names the pre-tokenizer by hashing the token ids of a fixed text and
looking the hash up in a table of published models; a BPE trained on the user's corpus has its own
merges, so its hash is in no table (``NotImplementedError: BPE pre-tokenizer was not recognized``).
The *pre-tokenizer* (how text is split before the merges) is what llama.cpp needs to know, and ours
is byte-level with GPT-2's split rule, which llama.cpp knows as ``gpt-2``; this module checks that
structurally in ``tokenizer.json`` and refuses, naming the setting, any tokenizer that differs.

The chat template goes in ``tokenizer.chat_template`` without the ``{% generation %}`` markers of
Hugging Face's Jinja extension (they only mark the assistant's tokens for training and render
nothing; llama.cpp's template engine and plain Jinja do not know the tag). EOS is also written as
the end-of-turn token, so llama.cpp and Ollama stop where ``generate`` stops. Lineage goes in the
``general.*`` keys (name, version, base model, datasets) and in a ``weightsmith.*`` namespace.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightsmith.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

OUTTYPES = ("f32", "f16", "q8_0")
"""What the weight matrices are stored as: ``f32`` (exact), ``f16`` (half the size; llama.cpp's
default), ``q8_0`` (8-bit blocks of 32 with one f16 scale: ~0.53 of f16's size). 1-D tensors
(norms) are F32 in every case, as llama.cpp's converter writes them."""

PRE_TOKENIZER = "gpt-2"
"""llama.cpp's name (``tokenizer.ggml.pre``) for byte-level BPE split by GPT-2's regular expression."""

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")
_SKIPPED = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")  # the converter drops these too


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from, as the registry records it (all optional for a bare folder)."""

    ref: str | None = None  # NAME@vN
    name: str | None = None
    version: int | None = None
    hash: str | None = None  # the registry's content hash of the model folder
    parent: str | None = None  # NAME@vN it was trained from
    datasets: list[str] = field(default_factory=list)  # dataset versions, NAME@vN
    stage: str | None = None  # the recipe that made it (pretrain, sft, ...)
    source: str | None = None  # what it started from when no registered parent says it
    run: int | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class GGUFExport:
    """What :func:`export_gguf` wrote."""

    path: Path
    outtype: str
    bytes: int
    sha256: str
    tensors: int
    parameters: int
    context_length: int
    eos_token_id: int | None
    chat_template: bool  # whether a chat template is embedded
    metadata: dict[str, Any]  # the general.* and weightsmith.* keys written, and tokenizer.ggml.pre


def export_gguf(model_dir: Path, output: Path, *, outtype: str = "f16", lineage: Lineage | None = None,
                overwrite: bool = False) -> GGUFExport:
    """Write the Llama model in ``model_dir`` as one GGUF file at ``output``.

    The tensors stream through one at a time (the file is planned first, then each tensor is read,
    converted and written), so memory stays at about the largest tensor, not the model. The file
    appears at ``output`` only when complete (written beside it, then renamed).

    Args:
        model_dir: a folder ``from_pretrained`` opens: config.json (model_type llama), safetensors
            weights (one file or an index of shards), and a byte-level BPE ``tokenizer.json``.
        output: the ``.gguf`` file to write; its folder must exist.
        outtype: one of :data:`OUTTYPES`.
        lineage: written as ``general.*`` and ``weightsmith.*`` metadata when given.
        overwrite: replace an existing file at ``output``.

    Returns:
        A :class:`GGUFExport` (path, size in bytes, sha256 of the file, tensor and parameter counts, ...).

    Raises:
        UserError: not a Llama folder, a tokenizer llama.cpp would split differently, an unknown
            ``outtype``, a chat template plain Jinja cannot parse, or an output path that exists
            (without ``overwrite``) or whose folder does not.
    """
    import gguf

    model_dir, output = Path(model_dir), Path(output)
    if outtype not in OUTTYPES:
        raise UserError(f"outtype '{outtype}' is not one of {', '.join(OUTTYPES)}.")
    if output.suffix != ".gguf":
        raise UserError(f"output {output} should end in .gguf (llama.cpp and Ollama look for it).")
    if not output.parent.is_dir():
        raise UserError(f"output folder {output.parent} does not exist; create it or name another --output.")
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists; name another --output, or pass --force to replace it.")
    hparams = _llama_hparams(model_dir)
    tokenizer = _checked_tokenizer(model_dir)
    tokens, token_types = _vocabulary(tokenizer, model_dir, hparams["vocab_size"])

    # Merges, special-token ids, add_bos/add_eos and the chat template: read as the converter reads them.
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise UserError(f"{model_dir / 'tokenizer.json'} has no BPE merges; llama.cpp cannot tokenize without them.")
    special.chat_template = _llama_cpp_template(special.chat_template, model_dir)
    eos = special.special_token_ids.get("eos")
    if eos is not None:
        special.special_token_ids.setdefault("eot", eos)  # the end of a turn is EOS: generation stops there
    # llama.cpp adds BOS (EOS) to a text only if the HF tokenizer does (ours adds neither).
    ids, bos = tokenizer("a")["input_ids"], special.special_token_ids.get("bos")
    special.add_special_token.setdefault("bos", bos is not None and ids[:1] == [bos])
    special.add_special_token.setdefault("eos", eos is not None and ids[-1:] == [eos])

    plan = list(_plan_tensors(model_dir, hparams, outtype))
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        for item in plan:
            writer.add_tensor_info(item.gguf_name, item.stored_shape, item.stored_dtype, item.nbytes,
                                   raw_dtype=item.qtype)
        parameters = writer.get_total_parameter_count()[0]
        metadata = _add_general(writer, model_dir, lineage, parameters)
        _add_llama_hparams(writer, hparams, ftype)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(PRE_TOKENIZER)
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        special.add_to_gguf(writer, quiet=True)
        metadata["tokenizer.ggml.pre"] = PRE_TOKENIZER

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for data in _converted_tensors(model_dir, plan):
            writer.write_tensor_data(data)
        writer.close()
        os.replace(partial, output)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return GGUFExport(
        path=output, outtype=outtype, bytes=output.stat().st_size, sha256=_sha256(output), tensors=len(plan),
        parameters=parameters, context_length=hparams["max_position_embeddings"], eos_token_id=eos,
        chat_template=special.chat_template is not None, metadata=metadata,
    )


def default_filename(name: str, version: int, outtype: str) -> str:
    """``NAME-vN-OUTTYPE.gguf``, e.g. ``quill-v3-q8_0.gguf``."""
    return f"{name}-v{version}-{outtype}.gguf"


# -- the model: hyperparameters and tensors ----------------------------------------------------------


def _llama_hparams(model_dir: Path) -> dict[str, Any]:
    """config.json, checked to be a Llama that llama.cpp's LLAMA architecture runs as is."""
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as JSON ({exc}); is {model_dir} a model folder?") from None
    kind = config.get("model_type")
    if kind != "llama":
        raise UserError(f"{path}: model_type is '{kind}'; GGUF export supports Llama-architecture models (what the "
                        "pretrain stage builds). For others, use llama.cpp's convert_hf_to_gguf.py.")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise UserError(f"{path}: rope type '{rope_type}' is not exported (only the default RoPE); use llama.cpp's "
                        "convert_hf_to_gguf.py for scaled RoPE.")
    config["rope_theta"] = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "rms_norm_eps"):
        if config.get(key) is None:
            raise UserError(f"{path} has no '{key}'; it is not a complete Llama config.")
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    return config


@dataclass(frozen=True)
class _Tensor:
    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]  # logical (numpy order, as in safetensors)
    qtype: Any  # gguf.GGMLQuantizationType
    permute_heads: int | None  # Q/K: the head count of the permutation

    @property
    def stored_dtype(self):
        import numpy as np

        from gguf import GGMLQuantizationType as Q

        return {Q.F32: np.float32, Q.F16: np.float16}.get(self.qtype, np.uint8)

    @property
    def stored_shape(self) -> tuple[int, ...]:
        import gguf

        if self.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            return self.shape
        return gguf.quant_shape_to_byte_shape(self.shape, self.qtype)

    @property
    def nbytes(self) -> int:
        import numpy as np

        return int(np.prod(self.stored_shape)) * np.dtype(self.stored_dtype).itemsize


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or the shards an index names)."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: model_dir / file for name, file in weight_map.items()}
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir} has no *.safetensors weights (safetensors only; pickles are never loaded).")
    out: dict[str, Path] = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            out.update(dict.fromkeys(f.keys(), file))
    return out


def _plan_tensors(model_dir: Path, hparams: dict[str, Any], outtype: str) -> Iterator[_Tensor]:
    """Every tensor's GGUF name, shape and type, in file order — before any weight is read."""
    import gguf
    from safetensors import safe_open

    Q = gguf.GGMLQuantizationType
    wanted = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[outtype]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hparams["num_hidden_layers"])
    files = _weight_files(model_dir)
    for hf_name, file in sorted(files.items(), key=_tensor_order):
        if hf_name.endswith(_SKIPPED):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"{file.name}: tensor '{hf_name}' has no place in llama.cpp's Llama architecture; "
                            "the folder is not a plain LlamaForCausalLM.")
        with safe_open(file, framework="pt") as f:
            shape = tuple(f.get_slice(hf_name).get_shape())
        # Norms and every 1-D tensor stay F32 (llama.cpp's kernels expect it); a Q8_0 row that is not a
        # whole number of 32-blocks falls back to F16, as the converter's QuantError path does.
        if len(shape) <= 1 or gguf_name.endswith("_norm.weight"):
            qtype = Q.F32
        elif wanted == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] != 0:
            qtype = Q.F16
        else:
            qtype = wanted
        heads = None
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = hparams["num_attention_heads"]
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = hparams["num_key_value_heads"]
        yield _Tensor(hf_name, gguf_name, shape, qtype, heads)


def _tensor_order(item: tuple[str, Path]) -> tuple:
    """Embeddings, then the blocks in order (each block's tensors by name), then the final norm and head."""
    name = item[0]
    match = re.search(r"\.layers\.(\d+)\.", name)
    if match:
        return (1, int(match.group(1)), name)
    return (0 if "embed_tokens" in name else 2, 0, name)


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder a Q or K projection's rows from Hugging Face's RoPE layout to llama.cpp's.

    Hugging Face rotates the two halves of each head (dims i and i + d/2); llama.cpp (like Meta's
    original Llama) rotates adjacent pairs (2i, 2i + 1). llama.cpp's converter
    (``LlamaModel.permute``) reorders each head's rows so the two agree; this is the same reshape.

    Args:
        weights: ``[n_head * head_dim, ...]`` (a weight matrix or a bias).
        n_head: the heads of this projection (``num_key_value_heads`` for K).
    """
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def _converted_tensors(model_dir: Path, plan: list[_Tensor]) -> Iterator[np.ndarray]:
    """Each planned tensor read, permuted and converted to its stored type, one at a time."""
    import gguf
    from safetensors import safe_open

    files = _weight_files(model_dir)
    for item in plan:
        with safe_open(files[item.hf_name], framework="pt") as f:
            # bf16 has no numpy type; f16 -> f32 -> f16 is exact, so going through f32 loses nothing.
            data = f.get_tensor(item.hf_name).float().numpy()
        if item.permute_heads is not None:
            data = permute_qk(data, item.permute_heads)
        yield gguf.quants.quantize(data, item.qtype)


def _add_llama_hparams(writer, hparams: dict[str, Any], ftype) -> None:
    """The ``llama.*`` keys, as ``TextModel.set_gguf_parameters`` + ``LlamaModel.set_gguf_parameters`` write them."""
    import gguf

    writer.add_block_count(hparams["num_hidden_layers"])
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_head_count_kv(hparams["num_key_value_heads"])
    writer.add_rope_freq_base(float(hparams["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(hparams["rms_norm_eps"]))
    if hparams.get("head_dim") is not None:
        writer.add_key_length(hparams["head_dim"])
        writer.add_value_length(hparams["head_dim"])
    writer.add_file_type(ftype)
    writer.add_vocab_size(hparams["vocab_size"])
    head_dim = hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]
    writer.add_rope_dimension_count(head_dim)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_general(writer, model_dir: Path, lineage: Lineage | None, parameters: int) -> dict[str, Any]:
    """``general.*`` (name, version, base model, datasets) and ``weightsmith.*`` lineage; returns what it wrote."""
    import gguf

    from weightsmith import __version__

    lin = lineage or Lineage()
    written: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, str(value))
        written[key] = value

    writer.add_type(gguf.GGUFType.MODEL)
    put(gguf.Keys.General.NAME, lin.ref or model_dir.name)
    put(gguf.Keys.General.BASENAME, lin.name)
    put(gguf.Keys.General.VERSION, f"v{lin.version}" if lin.version is not None else None)
    put(gguf.Keys.General.SIZE_LABEL, gguf.size_label(parameters, parameters, 0, 0))
    put(gguf.Keys.General.DESCRIPTION, f"{lin.ref} ({lin.stage}), exported by weightsmith" if lin.ref else None)
    if lin.parent:
        parent_name, _, parent_version = lin.parent.partition("@")
        put(gguf.Keys.General.BASE_MODEL_COUNT, 1)
        put(gguf.Keys.General.BASE_MODEL_NAME.format(id=0), parent_name)
        put(gguf.Keys.General.BASE_MODEL_VERSION.format(id=0), parent_version or None)
    if lin.datasets:
        put(gguf.Keys.General.DATASET_COUNT, len(lin.datasets))
        for i, ref in enumerate(lin.datasets):
            data_name, _, data_version = ref.partition("@")
            put(gguf.Keys.General.DATASET_NAME.format(id=i), data_name)
            put(gguf.Keys.General.DATASET_VERSION.format(id=i), data_version or None)
    put("weightsmith.ref", lin.ref)
    put("weightsmith.hash", lin.hash)
    put("weightsmith.parent", lin.parent)
    put("weightsmith.datasets", list(lin.datasets) or None)
    put("weightsmith.stage", lin.stage)
    put("weightsmith.source", lin.source)
    put("weightsmith.run", lin.run)
    put("weightsmith.created_at", lin.created_at)
    put("weightsmith.exporter", f"weightsmith {__version__}, gguf {_gguf_version()}")
    return written


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:  # pragma: no cover - a source checkout of gguf-py
        return "unknown"


# -- the tokenizer ---------------------------------------------------------------------------------


def check_tokenizer(model_dir: Path) -> None:
    """Refuse a tokenizer llama.cpp's ``gpt2`` model with the ``gpt-2`` pre-tokenizer would split differently.

    llama.cpp re-implements the tokenizer from the GGUF: BPE merges over bytes, after splitting the
    text by the regular expression its ``tokenizer.ggml.pre`` names. Ours (``train_tokenizer``) is
    a BPE with no normalizer and a ``ByteLevel`` pre-tokenizer without a prefix space, using GPT-2's
    regex: exactly llama.cpp's ``gpt-2``. Anything else would export a file that tokenizes some
    text differently from the model's training, so it is refused with the setting that differs.

    Raises:
        UserError: naming the ``tokenizer.json`` key that differs.
    """
    path = model_dir / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{model_dir} has no tokenizer.json; GGUF export needs a fast (tokenizers) BPE tokenizer "
                        "saved with the model.") from None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}).") from None
    model = spec.get("model") or {}

    def refuse(key: str, value: Any, need: str) -> UserError:
        return UserError(f"{path}: {key} is {json.dumps(value)}; GGUF export needs {need} (the byte-level BPE the "
                         "tokenizer stage trains, which llama.cpp knows as pre-tokenizer 'gpt-2').")

    if model.get("type") != "BPE":
        raise refuse("model.type", model.get("type"), "BPE")
    for key in ("byte_fallback", "ignore_merges"):
        if model.get(key):
            raise refuse(f"model.{key}", model.get(key), "false")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise refuse(f"model.{key}", model.get(key), "null")
    if spec.get("normalizer") is not None:
        raise refuse("normalizer", spec["normalizer"].get("type"), "none")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not (len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True)
            and not steps[0].get("add_prefix_space", False)):
        raise refuse("pre_tokenizer", pre, "one ByteLevel step with use_regex true and add_prefix_space false")
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise refuse("decoder.type", (spec.get("decoder") or {}).get("type"), "ByteLevel")


def _checked_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    check_tokenizer(model_dir)
    return AutoTokenizer.from_pretrained(model_dir)


def _vocabulary(tokenizer, model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types by id, as llama.cpp's ``TextModel.get_vocab_base`` makes them."""
    import gguf

    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(f"{model_dir}: the tokenizer has ids up to {max(vocab.values())} but config.json's vocab_size "
                        f"is {vocab_size}; the model and tokenizer do not belong together.")
    by_id = {i: token for token, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    added_decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # the embedding has rows past the tokenizer (padded for speed)
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            # llama.cpp matches added tokens in the raw text, so they are stored as the text they stand for.
            if not added_decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = added_decoder[i].special or (token.startswith("<|") and token.endswith("|>"))
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _llama_cpp_template(template: Any, model_dir: Path) -> Any:
    """The chat template without ``{% generation %}`` markers, checked to parse as plain Jinja.

    A list of named templates (``[{"name", "template"}]``) is cleaned template by template.
    """
    if template is None:
        return None
    if isinstance(template, list):
        return [{**t, "template": _llama_cpp_template(t.get("template"), model_dir)} for t in template]
    cleaned = _GENERATION_TAG.sub("", template)
    import jinja2

    try:
        jinja2.Environment().parse(cleaned)
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{model_dir}: the chat template does not parse as plain Jinja ({exc.message}, line "
                        f"{exc.lineno}); llama.cpp could not render it. Fix the template in tokenizer_config.json "
                        "or chat_template.jinja.") from None
    return cleaned


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
