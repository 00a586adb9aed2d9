"""What each chat stage trains on, tokenized once before the model loads, with what the limits cut.

TRL's trainers tokenize their datasets themselves and cut or drop what does not fit without a
word: SFTTrainer drops a conversation that truncation leaves without a labelled token (the
``Filter: 4/4`` bar), DPOTrainer drops a pair whose prompt alone fills ``max_length`` and its
collator cuts the rest, GRPOTrainer generates from any prompt however long. Here each stage
tokenizes every row once, as the trainer would (:mod:`weightsmith.data.chat` renders), counts
what its limits drop or cut, refuses above the user's ``max_truncated_fraction``, and hands the
trainer exactly these tokens — so the counts and the training cannot disagree
(tests/training/test_chat_fields.py checks the tokens against TRL's own preparation).

Each ``prepare_*`` returns the trainer's examples and a report that the stage logs and writes
into ``result.json`` under ``"data"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from weightsmith.data.chat import (
    IGNORE_INDEX,
    AnswersNotLocated,
    ChatRenderer,
    TemplateRefused,
    check_fields_shown,
    encode_conversation,
    template_refusal,
)
from weightsmith.errors import UserError

TRUNCATION_FRACTION_HELP = (
    "Refuse to train when the length limit would drop, or cut short, more than this fraction of the "
    "{what} (each count is in the log and in result.json under 'data'). The default 0.05 lets a long tail "
    "be cut while catching a limit set too low for the data; 1 accepts any cut, 0 none."
)


@dataclass
class Prepared:
    """A stage's data, ready for its trainer.

    Attributes:
        examples: one dict of token-id lists per row the trainer gets (rows it would drop are not here).
        report: the counts, for the log and ``result.json``.
    """

    examples: list[dict[str, Any]]
    report: dict[str, Any]


def _rows(numbers: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return f"row {shown}" if len(numbers) == 1 else f"rows {shown}" + (", ..." if len(numbers) > limit else "")


def _refuse_over_fraction(kind: str, max_length: int, what: str, total: int, dropped: list[int], cut: list[int],
                          cut_words: str, max_fraction: float, data_path: object, longest: str) -> None:
    lost = len(dropped) + len(cut)
    if lost <= max_fraction * total:
        return
    details = []
    if dropped:
        details.append(f"drop {len(dropped)} ({_rows(dropped)}: nothing left to learn)")
    if cut:
        details.append(f"{cut_words} in {len(cut)} ({_rows(cut)})")
    raise UserError(
        f"stage '{kind}': max_length {max_length} would {' and '.join(details)} of the {total} {what} of "
        f"{data_path}, {lost / total:.0%} where max_truncated_fraction allows {max_fraction:.0%}; raise max_length "
        f"({longest}), or max_truncated_fraction to accept the cut."
    )


# --------------------------------------------------------------------------------------------- SFT


def prepare_sft(
    rows: list[dict], renderer: ChatRenderer, *, max_length: int, assistant_only_loss: bool,
    max_truncated_fraction: float, data_path: object,
) -> Prepared:
    """Tokens and labels of every conversation, cut at ``max_length`` the way SFTTrainer cuts (keep the start).

    A conversation whose labelled tokens all lie past ``max_length`` is dropped; one that keeps
    some but loses others is truncated (its answer cut short, end-of-turn label included).

    Raises:
        UserError: a field the template does not show, a row the template refuses, nothing left to
            learn, or more cut than ``max_truncated_fraction`` allows.
    """
    check_fields_shown(renderer, (
        (f"{data_path}, row {n}", "messages", row["messages"], row.get("tools")) for n, row in enumerate(rows, start=1)
    ))
    examples: list[dict[str, Any]] = []
    dropped, truncated, all_weight_0 = [], [], []
    skipped_turns = longest = 0
    for number, row in enumerate(rows, start=1):
        try:
            encoded = encode_conversation(renderer, row["messages"], row.get("tools"),
                                          assistant_only_loss=assistant_only_loss)
        except TemplateRefused as exc:
            raise UserError(template_refusal(f"{data_path}, row {number}", renderer, exc)) from exc
        except AnswersNotLocated as exc:
            raise UserError(
                f"{data_path}, row {number}: the chat template of {renderer.source} {exc}; use a chat template "
                "with one {% generation %} block per assistant turn (the tokenizer stage's has), or set "
                "assistant_only_loss: false and leave weight 0 out of the data."
            ) from exc
        skipped_turns += encoded.skipped_turns
        longest = max(longest, len(encoded.input_ids))
        labels = encoded.labels
        if all(label == IGNORE_INDEX for label in labels):
            if encoded.skipped_turns < sum(m.get("role") == "assistant" for m in row["messages"]):
                raise UserError(
                    f"{data_path}, row {number}: the chat template of {renderer.source} marks no token of this "
                    "conversation's answers as generated, so it has nothing to learn; fix the template's "
                    "{% generation %} blocks or set assistant_only_loss: false."
                )
            all_weight_0.append(number)  # every answer has weight 0: context only, nothing to learn
            continue
        kept = labels[:max_length]
        if all(label == IGNORE_INDEX for label in kept):
            dropped.append(number)
            continue
        if any(label != IGNORE_INDEX for label in labels[max_length:]):
            truncated.append(number)
        examples.append({"input_ids": encoded.input_ids[:max_length], "labels": kept})

    learnable = len(rows) - len(all_weight_0)
    if learnable == 0:
        raise UserError(
            f"every assistant turn in {data_path} has weight 0, so there is nothing to learn; give the turns "
            "to train on weight 1 (or leave weight out)."
        )
    if not examples:
        raise UserError(
            f"stage 'sft': max_length {max_length} cuts every conversation of {data_path} before the assistant's "
            f"answer, so there is nothing to learn; raise max_length (the longest conversation is {longest} tokens)."
        )
    _refuse_over_fraction(
        "sft", max_length, "conversations", learnable, dropped, truncated,
        "cut the answer short (losing its end-of-turn label)", max_truncated_fraction, data_path,
        f"the longest conversation is {longest} tokens",
    )
    report = {
        "rows": len(rows),
        "rows_trained": len(examples),
        "max_length": max_length,
        "longest_tokens": longest,
        "rows_dropped": len(dropped),
        "rows_truncated": len(truncated),
        "turns_weight_0": skipped_turns,
        "rows_all_weight_0": len(all_weight_0),
    }
    return Prepared(examples, report)


def prepare_replay(rows: list[dict], tokenizer, *, max_length: int, data_path: object) -> Prepared:
    """A text dataset replayed inside SFT: trained as pre-training trains it, next to the chat rows.

    Replay — mixing a share of earlier data into fine-tuning — is the standard remedy for
    forgetting it (e.g. Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually
    Pre-train Large Language Models"). The documents are packed as the pretrain stage packs them
    (:mod:`weightsmith.data.packing`: tokens without special tokens, each document followed by EOS,
    cut into ``max_length`` blocks; the last, shorter block is kept), and every token of a block is
    a target (``labels == input_ids``), where a chat row's labels are its answers only. The two
    kinds of row are then the same to SFTTrainer: ``input_ids`` and ``labels``.

    Raises:
        UserError: a dataset with no token to train on.
    """
    from weightsmith.data.packing import pack_token_chunks

    texts = [str(row["text"]) for row in rows]
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    blocks = pack_token_chunks(ids, max_len=max_length, eos_id=tokenizer.eos_token_id)
    # A lone EOS (an empty document) predicts nothing once the collator masks each row's first token.
    examples = [{"input_ids": block.tolist(), "labels": block.tolist()} for block in blocks if len(block) > 1]
    if not examples:
        raise UserError(f"{data_path}: the text dataset holds no text to replay; give it documents with text.")
    report = {
        "rows": len(rows),
        "rows_trained": len(examples),
        "max_length": max_length,
        "tokens": int(sum(len(example["input_ids"]) for example in examples)),
        "replay": True,
    }
    return Prepared(examples, report)


# --------------------------------------------------------------------------------------------- DPO


def prepare_preferences(
    rows: list[dict], renderer: ChatRenderer, *, conversational: bool, max_length: int,
    max_truncated_fraction: float, data_path: object,
) -> Prepared:
    """Prompt, chosen and rejected token ids of every pair, as DPOTrainer tokenizes them (trl 1.16).

    The prompt is what the prompt and its continuations share (TRL's ``common_prefix_length``).
    DPOTrainer drops a pair whose prompt alone fills ``max_length`` and its collator cuts prompt +
    answer at ``max_length``: those pairs are counted dropped and truncated here, and the dropped
    ones are left out of the examples.

    Raises:
        UserError: a field the template does not show, a row the template refuses, no pair left, or
            more cut than ``max_truncated_fraction`` allows.
    """
    from trl.data_utils import common_prefix_length

    tokenizer = renderer.tokenizer
    if conversational:
        check_fields_shown(renderer, (
            (f"{data_path}, row {n}", part, row[part], row.get("tools"))
            for n, row in enumerate(rows, start=1) for part in ("prompt", "chosen", "rejected")
        ))
    examples, dropped, truncated = [], [], []
    longest = 0
    for number, row in enumerate(rows, start=1):
        if conversational:
            tools = row.get("tools")
            try:
                prompt = renderer.tokens(row["prompt"], tools, add_generation_prompt=True)
                with_chosen = renderer.tokens(row["prompt"] + row["chosen"], tools)
                with_rejected = renderer.tokens(row["prompt"] + row["rejected"], tools)
            except TemplateRefused as exc:
                raise UserError(template_refusal(f"{data_path}, row {number}", renderer, exc)) from exc
        else:
            # Plain pairs: TRL appends EOS to each answer (so the model learns to stop), then tokenizes.
            eos = tokenizer.eos_token
            chosen, rejected = (a if a.endswith(eos) else a + eos for a in (row["chosen"], row["rejected"]))
            prompt = list(tokenizer(text=row["prompt"])["input_ids"])
            with_chosen = list(tokenizer(text=row["prompt"] + chosen)["input_ids"])
            with_rejected = list(tokenizer(text=row["prompt"] + rejected)["input_ids"])
        shared = min(common_prefix_length(prompt, with_chosen), common_prefix_length(prompt, with_rejected))
        longest = max(longest, len(with_chosen), len(with_rejected))
        if shared >= max_length:
            dropped.append(number)
            continue
        if max(len(with_chosen), len(with_rejected)) > max_length:
            truncated.append(number)
        examples.append(
            {"prompt_ids": prompt[:shared], "chosen_ids": with_chosen[shared:], "rejected_ids": with_rejected[shared:]}
        )
    if not examples:
        raise UserError(
            f"stage 'dpo': max_length {max_length} is filled by the prompt of every pair of {data_path}, so no "
            f"answer is left to compare; raise max_length (the longest pair is {longest} tokens)."
        )
    _refuse_over_fraction(
        "dpo", max_length, "pairs", len(rows), dropped, truncated,
        "cut an answer short", max_truncated_fraction, data_path, f"the longest prompt + answer is {longest} tokens",
    )
    report = {
        "rows": len(rows),
        "rows_trained": len(examples),
        "max_length": max_length,
        "longest_tokens": longest,
        "rows_dropped": len(dropped),
        "rows_truncated": len(truncated),
    }
    return Prepared(examples, report)


# -------------------------------------------------------------------------------------------- GRPO


def prepare_prompts(
    rows: list[dict], renderer: ChatRenderer, *, max_completion_length: int, context: int | None,
    data_path: object,
) -> Prepared:
    """The token ids GRPO generates from, one list per prompt row (``{"prompt_ids": [...]}``).

    GRPOTrainer (trl 1.16) neither cuts nor drops a prompt: one longer than the model's context
    minus ``max_completion_length`` would generate past the positions the model was built for, so
    every such prompt is refused here.

    Args:
        context: the model's ``max_position_embeddings``, or None when its config names none.

    Raises:
        UserError: a field the template does not show, a row the template refuses, tools on a
            plain-text prompt, or a prompt too long for the model.
    """
    conversational = [n for n, row in enumerate(rows, start=1) if isinstance(row["prompt"], list)]
    check_fields_shown(renderer, (
        (f"{data_path}, row {n}", "prompt", rows[n - 1]["prompt"], rows[n - 1].get("tools")) for n in conversational
    ))
    examples, too_long = [], []
    longest = 0
    room = None if context is None else context - max_completion_length
    for number, row in enumerate(rows, start=1):
        prompt, tools = row["prompt"], row.get("tools")
        if isinstance(prompt, list):
            try:
                ids = renderer.tokens(prompt, tools, add_generation_prompt=True)
            except TemplateRefused as exc:
                raise UserError(template_refusal(f"{data_path}, row {number}", renderer, exc)) from exc
        else:
            if tools:
                raise UserError(
                    f"{data_path}, row {number}: 'tools' needs a message-list prompt (a plain-text prompt is not "
                    'rendered with the chat template); write the prompt as [{"role": "user", "content": ...}].'
                )
            ids = list(renderer.tokenizer(text=prompt)["input_ids"])
        longest = max(longest, len(ids))
        if room is not None and len(ids) > room:
            too_long.append(number)
        examples.append({"prompt_ids": ids})
    if too_long:
        raise UserError(
            f"stage 'grpo': {len(too_long)} of the {len(rows)} prompts of {data_path} ({_rows(too_long)}) are too "
            f"long for the model: its context is {context} tokens, so with max_completion_length "
            f"{max_completion_length} a prompt may have {room}, and the longest has {longest}; shorten those "
            "prompts or lower max_completion_length (TRL would generate past the model's positions)."
        )
    report = {
        "rows": len(rows),
        "longest_prompt_tokens": longest,
        "max_completion_length": max_completion_length,
        "context": context,
    }
    return Prepared(examples, report)


def summary(kind: str, report: dict[str, Any]) -> str:
    """One line for the stage log: how many rows train, and what the limits dropped or cut."""
    if kind == "grpo":
        return (f"{kind} data: {report['rows']} prompts, the longest {report['longest_prompt_tokens']} tokens "
                f"(context {report['context']}, max_completion_length {report['max_completion_length']}).")
    if report.get("replay"):
        return (f"{kind} data: {report['rows']} text documents replayed as plain-text loss: {report['rows_trained']} "
                f"blocks of up to {report['max_length']} tokens ({report['tokens']} tokens, every one a target).")
    what = "conversations" if kind == "sft" else "pairs"
    line = (f"{kind} data: {report['rows_trained']} of {report['rows']} {what} train; max_length "
            f"{report['max_length']} drops {report['rows_dropped']} and cuts {report['rows_truncated']} short "
            f"(the longest is {report['longest_tokens']} tokens)")
    if report.get("turns_weight_0"):
        line += (f"; {report['turns_weight_0']} assistant turn(s) at weight 0 get no loss"
                 + (f" ({report['rows_all_weight_0']} row(s) have no other)" if report["rows_all_weight_0"] else ""))
    return line + "."
