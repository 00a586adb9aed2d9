"""Nothing cut or dropped in silence: what max_length drops or cuts is counted before the model loads, reported in
the log and result.json, refused above max_truncated_fraction, and is exactly what TRL's own preparation does."""

from __future__ import annotations

import pytest
from training.training_helpers import refusal, run_in_process, write_jsonl

WORDS = "the dispatcher sends a truck to the north depot while the driver checks the route".split()


def _words(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


# The case at a small scale: conversations whose answers start past max_length (rows 3-5), one
# whose answer is cut short (row 2), one that fits (row 1).
LIMIT = 48
CHATS = [
    _chat("Which depot?", "North depot."),
    _chat("Which route?", _words(60)),
    *(_chat(_words(60 + i), "South depot.") for i in range(3)),
]
MULTI_TURN = {"messages": [
    {"role": "system", "content": "You are the dispatch desk."},
    {"role": "user", "content": "Which depot?"}, {"role": "assistant", "content": "North depot."},
    {"role": "user", "content": "And the route?"}, {"role": "assistant", "content": "The north route."},
]}


def _pair(prompt: str, chosen: str, rejected: str, conversational: bool) -> dict:
    if not conversational:
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def _pairs(conversational: bool) -> list[dict]:
    """Fits; a chosen answer cut short; a prompt that fills max_length alone (dropped)."""
    return [_pair("Which depot?", "North depot.", "No idea.", conversational),
            _pair("Which route?", _words(60), "No idea.", conversational),
            _pair(_words(70), "North.", "South.", conversational)]


def test_sft_counts_drops_and_cuts_reports_them_and_refuses_above_the_threshold(tmp_path, capsys, tiny_model_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", CHATS)
    inputs = {"data_path": data, "data_format": "chat", "model_path": tiny_model_dir}
    config = {"max_length": LIMIT, "device": "cpu", "max_steps": 1, "batch_size": 2}
    message = refusal(tmp_path / "refused", capsys, "sft", config, inputs)
    assert message.startswith(
        f"stage 'sft': max_length {LIMIT} would drop 3 (rows 3, 4, 5: nothing left to learn) and cut the answer short "
        f"(losing its end-of-turn label) in 1 (row 2) of the 5 conversations of {data}, 80% where "
        "max_truncated_fraction allows 5%; raise max_length (the longest conversation is "
    ), message
    assert message.endswith(" tokens), or max_truncated_fraction to accept the cut.")

    result, log = run_in_process(tmp_path / "accepted", capsys, "sft", {**config, "max_truncated_fraction": 1.0}, inputs)
    longest = result["data"]["longest_tokens"]
    assert longest > LIMIT
    assert result["data"] == {"rows": 5, "rows_trained": 2, "max_length": LIMIT, "longest_tokens": longest,
                              "rows_dropped": 3, "rows_truncated": 1, "turns_weight_0": 0, "rows_all_weight_0": 0}
    assert f"sft data: 2 of 5 conversations train; max_length {LIMIT} drops 3 and cuts 1 short" in log
    assert 0 < result["train_tokens"] <= 2 * LIMIT  # the one step saw the two kept rows, cut to max_length


@pytest.mark.parametrize("assistant_only_loss", [True, False])
def test_sft_tokens_labels_and_drops_are_what_trl_prepares_itself(tmp_path, tiny_model_dir, assistant_only_loss):
    """Parity with SFTTrainer's own tokenization, masking, truncation and filter on plain chats (the rows TRL
    tokenized before this change), so the counts are TRL's and the Quill numbers cannot move."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_sft

    rows = [*CHATS, MULTI_TURN]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trl = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=SFTConfig(output_dir=str(tmp_path), max_length=LIMIT, assistant_only_loss=assistant_only_loss,
                       use_cpu=True, report_to="none"),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
    ).train_dataset
    ours = prepare_sft(rows, ChatRenderer.for_training(tokenizer, "ours", assistant_only_loss), max_length=LIMIT,
                       assistant_only_loss=assistant_only_loss, max_truncated_fraction=1.0, data_path="d")
    assert [(e["input_ids"], e["labels"]) for e in ours.examples] == list(zip(trl["input_ids"], trl["labels"]))
    # TRL's filter drops conversations cut before their first answer (only with assistant_only_loss: otherwise
    # every token is labelled); ours are the same ones, and counted.
    assert ours.report["rows_dropped"] == len(rows) - len(trl)
    assert (len(trl) < len(rows)) is assistant_only_loss


@pytest.mark.parametrize("conversational", [True, False], ids=["conversational", "plain"])
def test_dpo_pairs_are_what_trl_prepares_itself_and_the_cuts_are_counted(tmp_path, tiny_model_dir, conversational):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from weightsmith.data.chat import ChatRenderer
    from weightsmith.data.chat_prepare import prepare_preferences

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trl = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=DPOConfig(output_dir=str(tmp_path), max_length=LIMIT, use_cpu=True, report_to="none"),
        train_dataset=Dataset.from_list(_pairs(conversational)), processing_class=tokenizer,
    ).train_dataset
    ours = prepare_preferences(_pairs(conversational), ChatRenderer(tokenizer, "ours"), conversational=conversational,
                               max_length=LIMIT, max_truncated_fraction=1.0, data_path="d")
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    assert [tuple(e[k] for k in keys) for e in ours.examples] == list(zip(*(trl[k] for k in keys)))
    assert (ours.report["rows_dropped"], ours.report["rows_truncated"], len(trl)) == (1, 1, 2)


def test_dpo_reports_and_refuses_its_cuts(tmp_path, capsys, tiny_model_dir):
    data = write_jsonl(tmp_path / "prefs.jsonl", _pairs(True))
    inputs = {"data_path": data, "data_format": "preference", "model_path": tiny_model_dir}
    config = {"max_length": LIMIT, "device": "cpu", "max_steps": 1, "batch_size": 2}
    assert refusal(tmp_path / "refused", capsys, "dpo", config, inputs).startswith(
        f"stage 'dpo': max_length {LIMIT} would drop 1 (row 3: nothing left to learn) and cut an answer short in 1 "
        f"(row 2) of the 3 pairs of {data}, 67% where max_truncated_fraction allows 5%; raise max_length "
    )
    result, log = run_in_process(tmp_path / "accepted", capsys, "dpo", {**config, "max_truncated_fraction": 0.7}, inputs)
    assert result["data"] == {"rows": 3, "rows_trained": 2, "max_length": LIMIT,
                              "longest_tokens": result["data"]["longest_tokens"], "rows_dropped": 1, "rows_truncated": 1}
    assert f"dpo data: 2 of 3 pairs train; max_length {LIMIT} drops 1 and cuts 1 short" in log


def test_a_grpo_prompt_too_long_for_the_model_is_refused(tmp_path, capsys, tiny_model_dir):
    # The tiny model is built for 256 positions; TRL would generate from this prompt past them.
    rows = [{"prompt": [{"role": "user", "content": "Which depot?"}], "answer": "north"},
            {"prompt": [{"role": "user", "content": _words(300)}], "answer": "north"}]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    message = refusal(tmp_path / "run", capsys, "grpo", {"device": "cpu", "max_completion_length": 16},
                      {"data_path": data, "data_format": "prompt", "model_path": tiny_model_dir})
    assert message.startswith(
        f"stage 'grpo': 1 of the 2 prompts of {data} (row 2) are too long for the model: its context is 256 tokens, so "
        "with max_completion_length 16 a prompt may have 240, and the longest has "
    ), message
    assert message.endswith("; shorten those prompts or lower max_completion_length (TRL would generate past the "
                            "model's positions).")
