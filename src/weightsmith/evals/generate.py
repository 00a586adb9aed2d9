"""Fast batched generation and perplexity over a local model directory.

Evals spend most of their time here, so prompts are sorted by length and generated in
left-padded batches with the KV cache (Hugging Face ``generate``), then handed back in the
caller's order. A model directory is loaded once per process and device (:func:`load_model`),
so scoring several KPIs on one model pays for the load once.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

from weightsmith.data.chat import ChatRenderer, TemplateRefused, check_fields_shown, template_refusal
from weightsmith.errors import UserError
from weightsmith.training.common import EVAL_DTYPES

Prompt = str | list[dict]
"""A plain-text prompt, or chat messages ``[{"role": ..., "content": ...}]`` rendered with the chat template."""


@dataclass
class Generation:
    """One prompt's output.

    Attributes:
        text: the completion (the first sample), without the prompt, special tokens or stop string.
        tokens: new tokens generated for this prompt, all samples together, up to and including
            the token that ended each sample.
        seconds: this prompt's share of its batch's wall time.
        finish_reason: ``"stop"`` when an EOS token or a stop string ended ``text``,
            ``"length"`` when it ran into ``max_new_tokens``.
        samples: every sample's text (``samples[0] == text``); one entry when ``num_samples == 1``.
    """

    text: str
    tokens: int
    seconds: float
    finish_reason: Literal["stop", "length"]
    samples: list[str] = field(default_factory=list)


def resolve_device(device: str) -> str:
    """``"auto"`` means the GPU when there is one, else the CPU; anything else is a torch device string."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(
    model_path: str | Path, device: str = "auto", dtype: str = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (once per process) a causal LM and its tokenizer from a local directory, in eval mode.

    ``dtype`` (auto | float32 | bfloat16 | float16) is the precision the weights are loaded and run in;
    ``auto`` is bf16 on a CUDA GPU that supports it (``torch.cuda.is_bf16_supported()``) and fp32 otherwise,
    including always on the CPU (no fast bf16 there), whatever dtype the directory was saved in. The two most
    recent (path, device, dtype) triples stay cached: enough to compare a candidate with its champion
    without holding every model.

    Raises:
        UserError: no such directory, not a causal LM, or a dtype name not among the four.
    """
    path = Path(model_path).expanduser().resolve()
    device = resolve_device(device)
    return _load_model_cached(str(path), device, resolve_dtype(dtype, device))




def resolve_dtype(dtype: str, device: str) -> str:
    """The torch dtype name ``dtype`` means on ``device`` (a resolved torch device string)."""
    if dtype not in EVAL_DTYPES:
        raise UserError(f"dtype is {dtype!r}; use one of {', '.join(EVAL_DTYPES)}.")
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"


@functools.lru_cache(maxsize=2)
def _load_model_cached(
    path: str, device: str, dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not Path(path).is_dir():
        raise UserError(f"model directory '{path}' does not exist; give the directory of a saved model version.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with _no_progress_bar():  # a "Loading weights" bar per model would break up the eval's own output
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a causal language model and tokenizer from '{path}' ({exc}).") from exc
    model.to(device).eval()
    return model, tokenizer


@contextlib.contextmanager
def _no_progress_bar():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def clear_model_cache() -> None:
    """Forget every model :func:`load_model` holds (frees their memory once nothing else refers to them)."""
    _load_model_cached.cache_clear()


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], tools: Sequence[list | None] | None, source: str
) -> list[list[int]]:
    """The token ids :func:`generate` starts each prompt from.

    A string is tokenized as is; chat messages are rendered with the chat template and a generation
    prompt, with that prompt's ``tools``, as training renders them (:mod:`weightsmith.data.chat`).

    Raises:
        UserError: naming the prompt (``prompt #i``, counted from 0): a chat prompt without a chat
            template, a field the template does not show, a conversation it refuses, tools on a string.
    """
    if tools is not None and len(tools) != len(prompts):
        raise ValueError(f"tools has {len(tools)} entries for {len(prompts)} prompts")
    renderer = ChatRenderer(tokenizer, source)
    return [
        _encode_prompt(tokenizer, prompt, i, tools[i] if tools is not None else None, renderer)
        for i, prompt in enumerate(prompts)
    ]


def _encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: object, index: int, tools: list | None, renderer: ChatRenderer
) -> list[int]:
    if isinstance(prompt, str):
        if tools:
            raise UserError(
                f"prompt #{index} has tools but is plain text, which no chat template renders; give it as chat "
                "messages (in a KPI suite: prompt: {chat: true})."
            )
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(
                f"prompt #{index} is a list of chat messages but the model's tokenizer has no chat template; "
                "give plain-text prompts or a model whose tokenizer has one."
            )
        # Rendered as in training (weightsmith.data.chat), tools included; the template writes its own BOS
        # and turn markers, so no special tokens are added on top.
        check_fields_shown(renderer, [(f"prompt #{index}", "prompt", prompt, tools)], consequence="answer")
        try:
            ids = renderer.tokens(prompt, tools, add_generation_prompt=True)
        except TemplateRefused as exc:
            raise UserError(template_refusal(f"prompt #{index}", renderer, exc)) from exc
    else:
        raise UserError(
            f"prompt #{index} is a {type(prompt).__name__}; give a string or a list of chat messages "
            '[{"role": ..., "content": ...}].'
        )
    if not ids:
        raise UserError(f"prompt #{index} is empty and the tokenizer adds no BOS token; give a non-empty prompt.")
    return list(ids)


def _eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # Chat models often end a turn with a token (e.g. <|im_end|>) that only the model's
    # generation config lists, so we stop at the union of both.
    ids: list[int] = []
    configured = model.generation_config.eos_token_id
    for token_id in [tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]:
        if token_id is not None and token_id not in ids:
            ids.append(int(token_id))
    return ids


class _StopStringRecorder(StoppingCriteria):
    """The library's stop-string matcher, remembering how many new tokens each row had when it stopped.

    ``generate`` pads a finished row from then on, so the output alone cannot say where a
    stop-string row ended (the pad may be any token); this records it without a host sync.
    """

    def __init__(self, matcher: StopStringCriteria, prompt_width: int, rows: int, device: torch.device):
        self.matcher = matcher
        self.prompt_width = prompt_width
        self.stopped_at = torch.full((rows,), -1, dtype=torch.long, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = self.matcher(input_ids, scores)
        new_tokens = input_ids.shape[1] - self.prompt_width
        first_time = done & (self.stopped_at < 0)
        self.stopped_at = torch.where(first_time, torch.full_like(self.stopped_at, new_tokens), self.stopped_at)
        return done


def _left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Decoder-only models continue from the last position, so every prompt must end at the
    # right edge; the attention mask hides the padding (and generate derives positions from it).
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def _first_stop_in_text(text: str, stop: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else None


def generate(
    model_path: str | Path,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    stop: str | Sequence[str] | None = None,
    num_samples: int = 1,
    device: str = "auto",
    tools: Sequence[list | None] | None = None,
    dtype: str = "auto",
) -> list[Generation]:
    """Generate a completion for every prompt, in batches, and return them in the prompts' order.

    Args:
        model_path: a local model directory (``from_pretrained`` opens it as is; nothing is downloaded).
        prompts: strings, or chat-message lists rendered with the tokenizer's chat template
            (``add_generation_prompt=True``).
        max_new_tokens: the most tokens generated per sample.
        batch_size: prompts per forward batch (each brings ``num_samples`` rows).
        temperature: 0 decodes greedily; above 0 samples, reproducibly for a given ``seed``.
        top_p: nucleus sampling when sampling. Any top-k in the model's generation config is
            switched off, so that ``temperature`` and ``top_p`` alone define the sampler.
        seed: seeds the sampler (the caller's global RNG state is restored afterwards).
        stop: strings that end a completion; the first one found, and all after it, is cut from the text.
        num_samples: samples per prompt (needs ``temperature > 0``); all of them land in ``samples``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        tools: per prompt, the OpenAI tool definitions to render it with (as the row's ``tools`` column
            is in training), or None; a field the chat template cannot show is refused.
        dtype: the precision to run in: auto | float32 | bfloat16 | float16 (:func:`load_model`).
    """
    stop_strings = [stop] if isinstance(stop, str) else list(stop or [])
    _check_generate_args(max_new_tokens, batch_size, temperature, top_p, num_samples, stop_strings)
    model, tokenizer = load_model(model_path, device, dtype)
    encoded = encode_prompts(tokenizer, prompts, tools, str(model_path))
    eos_ids = _eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)

    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else {}
    generation_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_samples,
        eos_token_id=eos_ids or None,
        pad_token_id=pad_id,
        **(sampling or dict(do_sample=False)),
    )
    # Built once per call: it preprocesses the whole vocabulary against the stop strings.
    stop_matcher = StopStringCriteria(tokenizer, stop_strings) if stop_strings else None
    # Longest first: similar lengths share a batch (little padding), and an out-of-memory
    # batch shows up at once rather than at the end of a long run.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[Generation | None] = [None] * len(encoded)
    on_cuda = model.device.type == "cuda"
    rng_devices = [model.device.index or 0] if on_cuda else []
    with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
        torch.manual_seed(seed)
        for start in range(0, len(order), batch_size):
            batch_indices = order[start : start + batch_size]
            input_ids, attention_mask = _left_pad([encoded[i] for i in batch_indices], pad_id)
            width = input_ids.shape[1]
            recorder = (
                _StopStringRecorder(stop_matcher, width, len(batch_indices) * num_samples, model.device)
                if stop_matcher
                else None
            )
            started = time.perf_counter()
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                generation_config=generation_config,
                stopping_criteria=StoppingCriteriaList([recorder] if recorder else []),
            )
            if on_cuda:
                torch.cuda.synchronize(model.device)
            seconds = (time.perf_counter() - started) / len(batch_indices)
            new_ids = output[:, width:].cpu()
            stopped_at = recorder.stopped_at.cpu().tolist() if recorder else [-1] * new_ids.shape[0]
            rows = [
                _finish_row(new_ids[row], stopped_at[row], eos_ids, tokenizer, stop_strings)
                for row in range(new_ids.shape[0])
            ]
            for position, prompt_index in enumerate(batch_indices):
                own = rows[position * num_samples : (position + 1) * num_samples]
                results[prompt_index] = Generation(
                    text=own[0][0],
                    tokens=sum(tokens for _, tokens, _ in own),
                    seconds=seconds,
                    finish_reason=own[0][2],
                    samples=[text for text, _, _ in own],
                )
    return cast(list[Generation], results)


def _finish_row(
    new_ids: torch.Tensor, stopped_at: int, eos_ids: list[int], tokenizer: PreTrainedTokenizerBase, stop: list[str]
) -> tuple[str, int, Literal["stop", "length"]]:
    """Cut one generated row where it really ended: ``(text, tokens, finish_reason)``."""
    length = new_ids.shape[0]
    ends = [length]
    if eos_ids:
        eos_positions = torch.isin(new_ids, torch.tensor(eos_ids)).nonzero()
        if len(eos_positions):
            ends.append(int(eos_positions[0, 0]) + 1)
    if stopped_at >= 0:
        ends.append(stopped_at)
    tokens = min(ends)
    stopped = len(ends) > 1
    text = tokenizer.decode(new_ids[:tokens], skip_special_tokens=True)
    cut = _first_stop_in_text(text, stop) if stop else None
    if cut is not None:
        text, stopped = text[:cut], True
    return text, tokens, "stop" if stopped else "length"


def _check_generate_args(
    max_new_tokens: int, batch_size: int, temperature: float, top_p: float, num_samples: int, stop: list[str]
) -> None:
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens is {max_new_tokens}; it must be at least 1.")
    if batch_size < 1:
        raise UserError(f"batch_size is {batch_size}; it must be at least 1.")
    if temperature < 0:
        raise UserError(f"temperature is {temperature}; use 0 for greedy decoding or a positive value to sample.")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p is {top_p}; it must be in (0, 1].")
    if num_samples < 1:
        raise UserError(f"num_samples is {num_samples}; it must be at least 1.")
    if num_samples > 1 and temperature == 0:
        raise UserError(
            f"num_samples is {num_samples} with temperature 0: greedy decoding gives the same text every time; "
            "set a temperature above 0 to draw several samples."
        )
    if any(not s for s in stop):
        raise UserError("a stop string is empty; remove it or give a non-empty string.")


def perplexity(
    model_path: str | Path,
    texts: Sequence[str],
    *,
    seq_len: int = 256,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """Perplexity of the model on ``texts``, and the mean negative log-likelihood of each text.

    A text longer than ``seq_len`` tokens is cut into windows that overlap by one token, so
    every token after the first is predicted exactly once (the context restarts at each window).
    ``dtype`` is the precision the model runs in (:func:`load_model`); the loss is summed in fp32.

    Returns:
        ``{"value": exp(total NLL / total tokens), "nll_per_token": [mean NLL of each text],
        "tokens": tokens predicted}``. A text too short to predict anything (fewer than two
        tokens) gets ``nan`` and adds nothing to ``value``.
    """
    if seq_len < 2:
        raise UserError(f"seq_len is {seq_len}; it must be at least 2 to predict anything.")
    if batch_size < 1:
        raise UserError(f"batch_size is {batch_size}; it must be at least 1.")
    model, tokenizer = load_model(model_path, device, dtype)
    windows: list[tuple[int, list[int]]] = []
    for text_index, text in enumerate(texts):
        # verbose=False: a text longer than the model is expected here (it is windowed), not worth a warning.
        ids = list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
        for start in range(0, len(ids) - 1, seq_len - 1):
            windows.append((text_index, ids[start : start + seq_len]))

    nll_sum = [0.0] * len(texts)
    predicted = [0] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            width = max(len(ids) for _, ids in chunk)
            input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (_, ids) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, : len(ids)] = 1
            input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            # Position t predicts token t+1; padded targets are masked out.
            token_nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")
            target_mask = attention_mask[:, 1:].float()
            row_nll = (token_nll * target_mask).sum(dim=1).cpu().tolist()
            row_count = target_mask.sum(dim=1).cpu().tolist()
            for (text_index, _), nll, count in zip(chunk, row_nll, row_count, strict=True):
                nll_sum[text_index] += nll
                predicted[text_index] += int(count)

    total_tokens = sum(predicted)
    return {
        "value": math.exp(sum(nll_sum) / total_tokens) if total_tokens else float("nan"),
        "nll_per_token": [s / n if n else float("nan") for s, n in zip(nll_sum, predicted, strict=True)],
        "tokens": total_tokens,
    }
