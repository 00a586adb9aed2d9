"""Batched generation and perplexity on a real (tiny, trained) model directory."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from weightsmith.errors import UserError
from weightsmith.evals.generate import generate, load_model, perplexity


def chat(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


# Deliberately mixed lengths and kinds, not sorted by length, so batching must pad and reorder.
PROMPTS = [chat("hi"), "a dog", chat("how are you today?"), chat("pet"), "how are", chat("count")]


def test_chat_and_plain_prompts_get_their_answers_and_stop_at_eos(tiny_chat_model):
    results = generate(tiny_chat_model.path, [chat("hi"), chat("pet"), "a dog"], max_new_tokens=32)

    assert [r.text for r in results] == [
        tiny_chat_model.chats["hi"],
        tiny_chat_model.chats["pet"],
        tiny_chat_model.plain["a dog"],
    ]
    assert all(r.finish_reason == "stop" for r in results)
    # EOS ends the text, is counted as generated, and is not shown.
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model.path)
    assert results[0].tokens == len(tokenizer(tiny_chat_model.chats["hi"], add_special_tokens=False)["input_ids"]) + 1
    assert all(r.samples == [r.text] for r in results)
    assert all(r.seconds > 0 for r in results)


def test_batched_greedy_equals_one_prompt_at_a_time_in_input_order(tiny_chat_model):
    one_by_one = [generate(tiny_chat_model.path, [p], max_new_tokens=24)[0] for p in PROMPTS]
    batched = generate(tiny_chat_model.path, PROMPTS, max_new_tokens=24, batch_size=4)
    all_at_once = generate(tiny_chat_model.path, PROMPTS, max_new_tokens=24, batch_size=len(PROMPTS))

    # Left padding and the attention mask must leave each prompt's greedy continuation unchanged,
    # and results must come back in the caller's order although batches are sorted by length.
    expected = [(r.text, r.tokens, r.finish_reason) for r in one_by_one]
    assert [(r.text, r.tokens, r.finish_reason) for r in batched] == expected
    assert [(r.text, r.tokens, r.finish_reason) for r in all_at_once] == expected
    assert batched[0].text == tiny_chat_model.chats["hi"] and batched[3].text == tiny_chat_model.chats["pet"]


def test_greedy_matches_transformers_generate_on_a_single_prompt(tiny_chat_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model.path)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model.path)
    text = tokenizer.apply_chat_template(chat("how are you today?"), add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    reference = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    expected = tokenizer.decode(reference[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    assert generate(tiny_chat_model.path, [chat("how are you today?")], max_new_tokens=10)[0].text == expected


def test_max_new_tokens_is_respected_and_reported_as_length(tiny_chat_model):
    results = generate(tiny_chat_model.path, [chat("count"), chat("pet")], max_new_tokens=3)

    assert [r.tokens for r in results] == [3, 3]
    assert [r.finish_reason for r in results] == ["length", "length"]
    full_answer = tiny_chat_model.chats["count"]
    assert full_answer.startswith(results[0].text) and len(results[0].text) < len(full_answer)


def test_stop_strings_end_the_text_and_are_trimmed(tiny_chat_model):
    full = generate(tiny_chat_model.path, [chat("pet")], max_new_tokens=32)[0]
    results = generate(
        tiny_chat_model.path, [chat("pet"), chat("count"), chat("hi")], max_new_tokens=32, stop=["cat", " four"]
    )

    assert results[0].text == "the " and results[0].finish_reason == "stop"
    assert results[0].tokens < full.tokens  # generation stopped early, not just trimmed afterwards
    assert results[1].text == "one two three" and results[1].finish_reason == "stop"
    assert results[2].text == tiny_chat_model.chats["hi"]  # no stop string in it: ends at EOS as usual


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(tiny_chat_model):
    prompts = [chat("how are you today?"), "how are"]
    torch.manual_seed(123)
    state_before = torch.get_rng_state()
    first = generate(tiny_chat_model.path, prompts, max_new_tokens=12, temperature=1.5, seed=7, num_samples=3)
    assert torch.equal(torch.get_rng_state(), state_before)

    again = generate(tiny_chat_model.path, prompts, max_new_tokens=12, temperature=1.5, seed=7, num_samples=3)
    other_seed = generate(tiny_chat_model.path, prompts, max_new_tokens=12, temperature=1.5, seed=8, num_samples=3)

    assert [r.samples for r in first] == [r.samples for r in again]
    assert [r.samples for r in first] != [r.samples for r in other_seed]
    assert all(len(r.samples) == 3 and r.text == r.samples[0] for r in first)
    # Three samples of at most 12 tokens each; at high temperature they are not all alike.
    assert all(3 <= r.tokens <= 36 for r in first)
    assert any(len(set(r.samples)) > 1 for r in first)


def test_bad_arguments_and_inputs_are_user_errors(tiny_chat_model, tmp_path):
    with pytest.raises(UserError, match="temperature above 0"):
        generate(tiny_chat_model.path, ["a dog"], num_samples=2)
    with pytest.raises(UserError, match="prompt #1 is a int"):
        generate(tiny_chat_model.path, ["a dog", 5])
    with pytest.raises(UserError, match="does not exist"):
        generate(tmp_path / "nowhere", ["a dog"])
    with pytest.raises(UserError, match="cannot load"):
        generate(tmp_path, ["a dog"])  # exists, but holds no model


def test_load_model_loads_a_directory_once(tiny_chat_model):
    model, tokenizer = load_model(tiny_chat_model.path, "cpu")
    assert load_model(tiny_chat_model.path, "cpu")[0] is model
    assert model.dtype == torch.float32 and not model.training


def test_perplexity_matches_the_model_loss_and_counts_every_token(tiny_chat_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model.path)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model.path)
    texts = ["<user>hi<eos><assistant>hello world<eos>", "zebras quietly juggle", "x", "a dog ran in the park<eos>"]
    ids = [tokenizer(t)["input_ids"] for t in texts]

    result = perplexity(tiny_chat_model.path, texts, seq_len=256, batch_size=3)

    with torch.no_grad():
        first = torch.tensor([ids[0]])
        reference = model(input_ids=first, labels=first).loss.item()
    assert result["nll_per_token"][0] == pytest.approx(reference, rel=1e-4)
    assert math.isnan(result["nll_per_token"][2])  # one token: nothing to predict
    assert result["tokens"] == sum(len(i) - 1 for i in ids if len(i) > 1)
    # The memorised text is far more likely than the nonsense one.
    assert result["nll_per_token"][0] < 0.5 < result["nll_per_token"][1]
    total_nll = sum(n * (len(i) - 1) for n, i in zip(result["nll_per_token"], ids, strict=True) if len(i) > 1)
    assert result["value"] == pytest.approx(math.exp(total_nll / result["tokens"]), rel=1e-6)

    # Short windows still predict every token once (only their context is shorter), and
    # padding inside a batch changes nothing.
    windowed = perplexity(tiny_chat_model.path, texts, seq_len=5, batch_size=4)
    assert windowed["tokens"] == result["tokens"]
    one_by_one = perplexity(tiny_chat_model.path, texts, seq_len=5, batch_size=1)
    assert one_by_one["nll_per_token"][:2] == pytest.approx(windowed["nll_per_token"][:2], rel=1e-5)
