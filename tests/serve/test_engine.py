"""The serving engines on a real tiny model: batched outputs equal unbatched ones, and every sampling knob.

The model is a 2-layer Llama (width 64) trained for two seconds until it answers a few chat prompts
by heart, one of them with multi-byte characters split across byte-level tokens; its greedy answers
are sharp, so equality between a batch and a lone request is exact, not approximate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import memorise

from weightsmith.errors import UserError
from weightsmith.serve.engine import BatchedEngine, NaiveEngine, load_engine
from weightsmith.serve.types import GenerationResult, QueueFull, SamplingParams

CHATS = {
    "hi": "hello world",
    "count": "one two three four five six seven eight nine ten",
    "pet": "the cat sat on the mat",
    "café": "crème brûlée 日本 ✓",
}
PLAIN = {"a dog": " ran in the park",
         # A long answer learned by heart: requests that must still be running when they are cancelled or cut.
         "one": " two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
                " seventeen eighteen nineteen twenty and then the count starts over from one"}
TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _train_tiny_model(directory: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([*CHATS, *CHATS.values(), *PLAIN, *PLAIN.values()], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<user>", "<assistant>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = TEMPLATE
    texts = [f"<user>{q}<eos><assistant>{a}<eos>" for q, a in CHATS.items()] + [f"{q}{a}<eos>" for q, a in PLAIN.items()]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        memorise(model, tokenizer, texts, steps=150)
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Iterator[Path]:
    # One torch thread: on a busy two-core machine OpenMP threads of a model this small wait on each other.
    # The engines take the thread count of the thread that builds them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _train_tiny_model(tmp_path_factory.mktemp("serve_engine_model"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batched(model_dir) -> Iterator[BatchedEngine]:
    engine = load_engine(model_dir, "batched", device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def naive(model_dir) -> Iterator[NaiveEngine]:
    engine = load_engine(model_dir, "naive", device="cpu")
    yield engine
    engine.close()


def chat(engine, question: str) -> list[int]:
    return list(engine.tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                     add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"])


def plain(engine, text: str) -> list[int]:
    return list(engine.tokenizer(text)["input_ids"])


GREEDY = SamplingParams(max_tokens=64, temperature=0)


def _mixed_requests(engine) -> list[tuple[list[int], SamplingParams]]:
    """16 prompts of 2 to 30 tokens, each with its own max_tokens (some cut short, most ending at EOS)."""
    prompts = [chat(engine, q) for q in CHATS] + [plain(engine, t) for t in
               ["a dog", "one", "mat mat", "xq", "zzz", "hello", "the the the", "a dog ran in the park a dog",
                "crème brûlée", "one two three four five six seven eight nine ten one two three", "pet", "café"]]
    assert len(prompts) == 16 and len({len(p) for p in prompts}) >= 8
    return [(p, SamplingParams(max_tokens=[64, 5, 17, 1, 40, 9, 64, 2][i % 8], temperature=0))
            for i, p in enumerate(prompts)]


def test_16_concurrent_greedy_requests_equal_each_alone_and_generate(batched, naive):
    requests = _mixed_requests(batched)
    alone = [batched.submit(p, s).result() for p, s in requests]
    generated = [naive.submit(p, s).result() for p, s in requests]

    # The first 8 start together; the other 8 (longer prompts among them) join the running batch between
    # two of its steps: holding the engine's lock keeps it from starting a step while they arrive.
    first = [batched.submit(p, s) for p, s in requests[:8]]
    next(iter(first[0].events()))
    with batched._cond:
        second = [batched.submit(p, s) for p, s in requests[8:]]
    together = [h.result() for h in first + second]

    for i, (a, g, t) in enumerate(zip(alone, generated, together, strict=True)):
        assert t.choices[0].token_ids == a.choices[0].token_ids == g.choices[0].token_ids, f"request {i}"
        assert t.choices[0].text == a.choices[0].text == g.choices[0].text
        assert t.choices[0].finish_reason == a.choices[0].finish_reason == g.choices[0].finish_reason
    assert max(max(r.batch_sizes) for r in together) > 8, "the second wave never shared a step with the first"
    assert {r.choices[0].finish_reason for r in together} == {"stop", "length"}


def test_learned_answers_end_at_eos_with_finish_reason_stop(batched, naive):
    eos = batched.tokenizer.eos_token_id
    for engine in (batched, naive):
        for question, answer in CHATS.items():
            result = engine.submit(chat(engine, question), GREEDY).result()
            (choice,) = result.choices
            assert (choice.text, choice.finish_reason) == (answer, "stop")
            assert choice.token_ids[-1] == eos and eos not in choice.token_ids[:-1]
            assert result.completion_tokens == len(choice.token_ids)
            assert result.prompt_tokens == len(chat(engine, question))
            assert 0 < result.time_to_first_token <= result.total_seconds


def test_max_tokens_is_respected_with_finish_reason_length(batched, naive):
    for engine in (batched, naive):
        (choice,) = engine.submit(chat(engine, "count"), SamplingParams(max_tokens=3, temperature=0)).result().choices
        assert len(choice.token_ids) == 3 and choice.finish_reason == "length"
        assert "one two three".startswith(choice.text) and choice.text


def test_streamed_deltas_hold_back_partial_utf8_and_add_up_to_the_text(batched):
    handle = batched.submit(chat(batched, "café"), GREEDY)
    events = list(handle.events())
    result = handle.result()
    assert result.choices[0].text == CHATS["café"]
    assert "".join(e.text for e in events) == CHATS["café"]
    assert not any("\ufffd" in e.text for e in events)
    # Some tokens are bytes in the middle of a character: their events carry no text yet.
    assert any(e.text == "" for e in events[:-1])
    assert [t for e in events for t in e.token_ids] == result.choices[0].token_ids
    assert [e.finish_reason for e in events] == [None] * (len(events) - 1) + ["stop"]


def test_stop_strings_end_the_text_before_them_and_are_never_streamed(batched, naive):
    for engine in (batched, naive):
        params = SamplingParams(max_tokens=64, temperature=0, stop=("four", "nine"))
        handle = engine.submit(chat(engine, "count"), params)
        events = list(handle.events())
        (choice,) = handle.result().choices
        assert (choice.text, choice.finish_reason) == ("one two three ", "stop")
        assert "".join(e.text for e in events) == "one two three "
        # The stop string spans tokens (" f", "our"...): what might begin it was held back, not sent.
        assert not any("f" in e.text for e in events)
        assert len(choice.token_ids) < len(engine.submit(chat(engine, "count"), GREEDY).result().choices[0].token_ids)
    # A stop string that never appears changes nothing.
    (choice,) = batched.submit(chat(batched, "pet"), SamplingParams(max_tokens=64, temperature=0,
                                                                     stop=("dog",))).result().choices
    assert (choice.text, choice.finish_reason) == (CHATS["pet"], "stop")


def test_a_seeded_request_gives_the_same_sample_alone_and_in_any_batch(batched):
    prompt = plain(batched, "zzz")
    params = SamplingParams(max_tokens=40, temperature=1.3, top_p=0.95, seed=1234)
    alone = batched.submit(prompt, params).result().choices[0].token_ids
    others = [batched.submit(plain(batched, t), SamplingParams(max_tokens=40, temperature=1.0, seed=s))
              for s, t in enumerate(["one", "a dog", "mat mat"])]
    greedy = batched.submit(chat(batched, "count"), GREEDY)
    in_batch = batched.submit(prompt, params)
    unseeded = [batched.submit(prompt, SamplingParams(max_tokens=40, temperature=1.3)) for _ in range(3)]
    assert in_batch.result().choices[0].token_ids == alone
    assert max(in_batch.result().batch_sizes) > 1
    assert greedy.result().choices[0].text == CHATS["count"]
    other_seed = batched.submit(prompt, SamplingParams(max_tokens=40, temperature=1.3, top_p=0.95, seed=99)).result()
    samples = {tuple(alone), tuple(other_seed.choices[0].token_ids)} | {tuple(h.result().choices[0].token_ids)
                                                                         for h in unseeded + others}
    assert len(samples) >= 5, "different seeds (or none) should give different samples"


def test_n_choices_are_independent_samples_and_choice_0_matches_n_1(batched):
    prompt = plain(batched, "zzz")
    result = batched.submit(prompt, SamplingParams(max_tokens=30, temperature=1.5, seed=7, n=4)).result()
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in result.choices}) > 1
    assert result.completion_tokens == sum(len(c.token_ids) for c in result.choices)
    single = batched.submit(prompt, SamplingParams(max_tokens=30, temperature=1.5, seed=7)).result()
    assert single.choices[0].token_ids == result.choices[0].token_ids
    greedy = batched.submit(chat(batched, "pet"), SamplingParams(max_tokens=30, temperature=0, n=2)).result()
    assert [c.text for c in greedy.choices] == [CHATS["pet"]] * 2


def test_naive_engine_has_n_and_seed_reproducibility(naive):
    params = SamplingParams(max_tokens=30, temperature=1.5, seed=7, n=3)
    first = naive.submit(plain(naive, "zzz"), params).result()
    again = naive.submit(plain(naive, "zzz"), params).result()
    assert len(first.choices) == 3
    assert [c.token_ids for c in first.choices] == [c.token_ids for c in again.choices]
    greedy = naive.submit(chat(naive, "pet"), SamplingParams(max_tokens=30, temperature=0, n=2)).result()
    assert [c.text for c in greedy.choices] == [CHATS["pet"]] * 2


def _forward_logprobs(model_dir: Path, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log-softmax of a plain forward pass over prompt + tokens, at the positions that predicted ``tokens``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0]
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)], dim=-1)


@pytest.mark.parametrize("kind", ["batched", "naive"])
def test_logprobs_are_the_raw_log_softmax_with_sorted_top_logprobs(kind, batched, naive, model_dir):
    engine = batched if kind == "batched" else naive
    prompt = plain(engine, "zzz")
    params = SamplingParams(max_tokens=12, temperature=0.8, seed=3, logprobs=True, top_logprobs=5)
    # In a batch with other rows (one without logprobs) to show rows do not mix.
    other = engine.submit(chat(engine, "count"), GREEDY)
    (choice,) = engine.submit(prompt, params).result().choices
    assert other.result().choices[0].logprobs is None
    reference = _forward_logprobs(model_dir, prompt, choice.token_ids)
    assert len(choice.logprobs) == len(choice.token_ids)
    for step, (lp, token) in enumerate(zip(choice.logprobs, choice.token_ids, strict=True)):
        assert lp.token_id == token and lp.token == engine.tokenizer.decode([token])
        assert abs(lp.logprob - float(reference[step, token])) < 1e-4
        values = [v for _, _, v in lp.top]
        assert len(lp.top) == 5 and values == sorted(values, reverse=True)
        assert [i for _, i, _ in lp.top] == reference[step].topk(5).indices.tolist()
        assert abs(values[0] - float(reference[step].max())) < 1e-4
        assert sum(torch.tensor(values).exp()) <= 1 + 1e-5
        assert lp.logprob <= values[0] + 1e-6


def test_a_full_queue_raises_queue_full_and_cancelled_requests_end_with_what_they_have(model_dir):
    engine = BatchedEngine(model_dir, device="cpu", max_batch_size=1, max_queue=2)
    try:
        whole = engine.submit(plain(engine, "one"), GREEDY).result().choices[0]
        assert whole.text == PLAIN["one"] and whole.finish_reason == "stop", whole
        expected = len(whole.token_ids)
        prompt = plain(engine, "one")
        handles = [engine.submit(prompt, GREEDY)]
        next(iter(handles[0].events()))
        with engine._cond:  # the engine cannot take a request from the queue meanwhile
            handles += [engine.submit(prompt, GREEDY) for _ in range(2)]
            with pytest.raises(QueueFull) as raised:
                engine.submit(prompt, GREEDY)
            assert raised.value.retry_after > 0
            assert engine.stats()["queue_depth"] == 2
            handles[0].cancel()  # running
            handles[2].cancel()  # still queued
        running, queued = handles[0].result(), handles[2].result()
        assert running.choices[0].finish_reason == "length" and 0 < len(running.choices[0].token_ids) < expected
        assert queued.choices[0].token_ids == [] and queued.choices[0].finish_reason == "length"
        # The one in between was neither cancelled nor disturbed.
        assert len(handles[1].result().choices[0].token_ids) == expected
        assert engine.submit(chat(engine, "hi"), GREEDY).result().choices[0].text == CHATS["hi"]
    finally:
        engine.close(drain=False)


def test_cancelling_stops_the_naive_engines_generate_midway(naive):
    import time

    # The request's generate() lasts tens of milliseconds (PLAIN["one"], then EOS): polling every 50 ms missed it
    # running in 3 runs of 8 and timed out. Poll every millisecond, and try again when it ended first anyway.
    for _ in range(5):
        handle = naive.submit(plain(naive, "one"), SamplingParams(max_tokens=200, temperature=0))
        deadline = time.monotonic() + 30
        while naive.stats()["running"] != 1 and not handle.done and time.monotonic() < deadline:
            time.sleep(0.001)
        handle.cancel()
        (choice,) = handle.result().choices
        if choice.finish_reason == "stop" or not choice.token_ids:
            continue  # it ended before the cancel reached it, or was cut before generate() began
        assert choice.finish_reason == "length" and choice.text == PLAIN["one"][:len(choice.text)]
        return
    pytest.fail("the request always ended before it could be cancelled")


@pytest.mark.parametrize("kind", ["batched", "naive"])
def test_close_with_drain_finishes_everything_and_then_refuses(kind, model_dir):
    engine = load_engine(model_dir, kind, device="cpu", max_batch_size=2)
    handles = [engine.submit(chat(engine, q), GREEDY) for q in CHATS]
    engine.close(drain=True)
    assert [h.result().choices[0].text for h in handles] == list(CHATS.values())
    with pytest.raises(QueueFull):
        engine.submit(chat(engine, "hi"), GREEDY)


def test_close_without_drain_cuts_requests_short(model_dir, batched):
    whole = batched.submit(plain(batched, "one"), GREEDY).result().choices[0]  # PLAIN["one"], then EOS
    engine = BatchedEngine(model_dir, device="cpu", max_batch_size=1)
    handles = [engine.submit(plain(engine, "one"), GREEDY) for _ in range(4)]
    engine.close(drain=False)
    results = [h.result().choices[0] for h in handles]
    # The first may have ended by itself before close() (its steps race the submits: a flaky 1 run in 8 when
    # this asserted "length" for all); any other end is a cut.
    assert all(c.finish_reason == "length" or (c.finish_reason, c.token_ids) == ("stop", whole.token_ids)
               for c in results)
    assert results[-1].token_ids == [] and results[-1].finish_reason == "length"


def test_async_consumers_share_the_batch_without_blocking_the_event_loop(batched):
    async def main() -> tuple[list[GenerationResult], list[list[str]], int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        async def stream(question: str) -> list[str]:
            handle = batched.submit(chat(batched, question), GREEDY)
            return [e.text async for e in handle.aevents()]

        tick = asyncio.create_task(ticker())
        handles = [batched.submit(chat(batched, q), GREEDY) for q in CHATS]
        results = await asyncio.gather(*(h.aresult() for h in handles))
        streams = await asyncio.gather(*(stream(q) for q in CHATS))
        stop.set()
        await tick
        return results, streams, ticks

    results, streams, ticks = asyncio.run(main())
    assert [r.choices[0].text for r in results] == list(CHATS.values())
    assert ["".join(s) for s in streams] == list(CHATS.values())
    assert ticks > 10  # the loop kept running while the engine worked


def test_sync_events_from_many_threads(batched):
    texts: dict[str, str] = {}

    def consume(question: str) -> None:
        handle = batched.submit(chat(batched, question), GREEDY)
        texts[question] = "".join(e.text for e in handle.events())

    threads = [threading.Thread(target=consume, args=(q,)) for q in CHATS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts == CHATS


def test_bad_requests_are_one_sentence(batched):
    for prompt, params, words in [
        ([], GREEDY, "no tokens"),
        ([10**6], GREEDY, "not in the vocabulary"),
        ([5] * 256, GREEDY, "no room"),
        ([5], SamplingParams(max_tokens=0), "max_tokens is 0"),
        ([5], SamplingParams(max_tokens=5, top_p=0), "top_p"),
        ([5], SamplingParams(max_tokens=5, stop=("",)), "stop string is empty"),
    ]:
        with pytest.raises(UserError, match=words):
            batched.submit(prompt, params)
    with pytest.raises(UserError, match="unknown engine 'fast'"):
        load_engine(Path("nowhere"), "fast")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="does not exist"):
        load_engine(Path("nowhere"))


def test_the_context_caps_max_tokens(batched):
    prompt = [batched.tokenizer.convert_tokens_to_ids("a")] * 250
    (choice,) = batched.submit(prompt, SamplingParams(max_tokens=100, temperature=1.0, seed=0)).result().choices
    assert len(choice.token_ids) <= 6
    stats = batched.stats()
    assert set(stats) >= {"queue_depth", "running", "last_batch_size"}
    assert batched.memory_bytes > 0 and batched.context_length == 256 and batched.device == "cpu"


def test_a_negative_seed_samples_reproducibly_and_never_fails_the_batch(batched):
    """OpenAI takes any 64-bit seed; numpy's SeedSequence refused a negative one inside the shared step, which
    failed every request running beside it (found by review: a 500 for the caller and its neighbours)."""
    prompt = plain(batched, "zzz")
    neighbour = batched.submit(chat(batched, "count"), GREEDY)
    negative = SamplingParams(max_tokens=20, temperature=1.3, seed=-1)
    first = batched.submit(prompt, negative)
    assert neighbour.result().choices[0].text == CHATS["count"]
    again = batched.submit(prompt, negative).result()
    assert first.result().choices[0].token_ids == again.choices[0].token_ids
    # -1 is 2**64 - 1 in two's complement: the same stream, not a different one
    assert batched.submit(prompt, SamplingParams(max_tokens=20, temperature=1.3, seed=2**64 - 1)).result() \
        .choices[0].token_ids == again.choices[0].token_ids


@pytest.mark.parametrize("kind", ["batched", "naive"])
def test_a_vanishing_temperature_decodes_greedily(kind, batched, naive):
    """temperature 1e-40 or 1e-300 overflowed logits / temperature in float32 and sampled from NaNs (garbage);
    below GREEDY_BELOW it is the argmax, as vLLM treats it."""
    engine = batched if kind == "batched" else naive
    for temperature in (1e-300, 1e-40, 1e-6):
        result = engine.submit(chat(engine, "pet"), SamplingParams(max_tokens=30, temperature=temperature, n=2)).result()
        assert [c.text for c in result.choices] == [CHATS["pet"]] * 2
    with pytest.raises(UserError, match="temperature is nan"):
        engine.submit([5], SamplingParams(max_tokens=5, temperature=float("nan")))
